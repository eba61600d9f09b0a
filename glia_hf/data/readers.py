"""Readers for the benchmark data sets, each from the files of its official release as users unpack it.

Each reader returns a ``datasets.Dataset`` sorted by image path with the columns ``image`` (absolute path), ``mos``
(higher is better, on the set's own range), ``mos_original`` (the number in the file), ``ref`` (reference-scene
id; for authentic sets, which have no reference, the image's own name) and ``dataset`` (canonical name). The score
scale is in ``dataset.info.description`` (see :func:`glia_hf.data.get_score_scale`). The layout each reader expects
is in its docstring and in ``glia_hf/data/README.md``.

Bad input raises :class:`IQADataError` (a ``ValueError``) or :class:`IQAMissingFileError` (also a
``FileNotFoundError``), naming the file and row: a missing folder or file, a label file without the expected
columns, an empty, non-numeric or NaN score, a label naming an image that does not exist, a duplicated image.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

from .errors import IQADataError, PathLike
from .scales import ScoreScale, canonical_name, get_score_scale
from ._tables import (
    ImageIndex,
    LabelRow,
    cell_text,
    csv_records,
    first_existing,
    load_mat,
    mat_strings,
    parse_score,
    read_table,
    require_dir,
    require_file,
    to_dataset,
)

if TYPE_CHECKING:
    from datasets import Dataset

# --------------------------------------------------------------------------------------------------------------------
# Synthetic data sets (reference scenes)

#: LIVE release 2: the order of the entries of dmos.mat / refnames_all.mat is these folders, each img1..imgN.
LIVE_FOLDERS: Tuple[Tuple[str, int], ...] = (
    ("jp2k", 227),
    ("jpeg", 233),
    ("wn", 174),
    ("gblur", 174),
    ("fastfading", 174),
)


def _stem(name: str) -> str:
    return Path(name.replace("\\", "/")).stem


def _live_info_refs(folder: Path) -> Dict[str, str]:
    """Distorted image -> reference name from a LIVE ``info.txt`` ("<reference>.bmp img<N>.bmp <parameter>")."""
    info = folder / "info.txt"
    refs: Dict[str, str] = {}
    if not info.is_file():
        return refs
    for line in info.read_text(errors="replace").splitlines():
        tokens = line.split()
        images = [t for t in tokens if re.fullmatch(r"img\d+\.bmp", t, flags=re.IGNORECASE)]
        others = [t for t in tokens if t.lower().endswith(".bmp") and t not in images]
        if images and others:
            refs[images[0].lower()] = _stem(others[0]).lower()
    return refs


def read_live(data_dir: PathLike, dmos_file: str = "dmos.mat") -> "Dataset":
    """LIVE Image Quality Assessment Database, release 2 (779 distorted images of 29 scenes).

    Layout (as in ``databaserelease2.zip``)::

        data_dir/dmos.mat            variables ``dmos`` (1x982) and ``orgs`` (1x982, 1 = an undistorted copy)
        data_dir/refnames_all.mat    variable ``refnames_all`` (1x982 cell of reference file names)
        data_dir/jp2k/img1.bmp ... img227.bmp, jpeg/ (233), wn/ (174), gblur/ (174), fastfading/ (174), each with
        its info.txt; data_dir/refimgs/ holds the references (not read).

    Entry ``i`` of the .mat arrays is image ``img<k>.bmp`` of the folder whose block contains ``i``, in the order
    jp2k, jpeg, wn, gblur, fastfading. Entries with ``orgs == 1`` are undistorted copies of the references and are
    left out, as in the literature. ``dmos_file="dmos_realigned.mat"`` reads the realigned scores (variable
    ``dmos_new``) instead. Scores: DMOS, lower is better, flipped to ``mos = 100 - dmos``. ``ref`` is the
    reference's file name without extension (e.g. ``"bikes"``). When a folder's info.txt names a different
    reference for an image than ``refnames_all.mat``, a warning is issued (``refnames_all.mat`` wins).
    """
    root = require_dir(data_dir, "LIVE folder")
    dmos_path, [(dmos_key, dmos), (_, orgs)] = load_mat(root / dmos_file, [("dmos", "dmos_new"), ("orgs",)])
    refs_path, [(_, refnames)] = load_mat(root / "refnames_all.mat", [("refnames_all",)])
    dmos, orgs, refnames = dmos.ravel(), orgs.ravel(), mat_strings(refnames)
    expected = sum(count for _, count in LIVE_FOLDERS)
    for path, values in ((dmos_path, dmos), (dmos_path, orgs), (refs_path, refnames)):
        if len(values) != expected:
            raise IQADataError(f"expected {expected} entries (LIVE release 2), found {len(values)}", file=path)
    rows: List[LabelRow] = []
    entry = 0
    for folder_name, count in LIVE_FOLDERS:
        folder = require_dir(root / folder_name, "LIVE distortion folder")
        index, info_refs = ImageIndex(folder), _live_info_refs(folder)
        for k in range(1, count + 1):
            entry += 1
            original_flag = parse_score(orgs[entry - 1], dmos_path, entry, "orgs")
            if original_flag == 1:
                continue
            image_name = f"img{k}.bmp"
            ref = _stem(refnames[entry - 1])
            score = parse_score(dmos[entry - 1], dmos_path, entry, dmos_key)
            path = index.require(image_name, dmos_path, f"{entry} ({folder_name}/{image_name})")
            info_ref = info_refs.get(image_name)
            if info_ref is not None and info_ref != ref.lower():
                warnings.warn(
                    f"{folder / 'info.txt'}: {image_name} has reference {info_ref!r} but {refs_path} entry {entry} "
                    f"says {ref!r}; using {ref!r}"
                )
            rows.append(LabelRow(path, score, ref, entry))
    return to_dataset(rows, get_score_scale("live"), dmos_path)


#: CSIQ ``dst_type`` values of csiq.DMOS.xlsx -> (folder under dst_imgs/, tag in the file name).
CSIQ_TYPES: Dict[str, Tuple[str, str]] = {
    "noise": ("awgn", "AWGN"),
    "awgn": ("awgn", "AWGN"),
    "jpeg": ("jpeg", "JPEG"),
    "jpeg 2000": ("jpeg2000", "jpeg2000"),
    "jpeg2000": ("jpeg2000", "jpeg2000"),
    "fnoise": ("fnoise", "fnoise"),
    "blur": ("blur", "BLUR"),
    "contrast": ("contrast", "contrast"),
}
_CSIQ_COLUMNS = {"image": ("image",), "dst_type": ("dst_type",), "dst_lev": ("dst_lev",), "dmos": ("dmos",)}


def read_csiq(data_dir: PathLike, label_file: Optional[PathLike] = None) -> "Dataset":
    """CSIQ (866 distorted images of 30 scenes).

    Layout::

        data_dir/csiq.DMOS.xlsx      sheet ``all_by_image`` (else the first sheet), header row with the columns
                                     image, dst_idx, dst_type, dst_lev, dmos_std, dmos (the header may sit below a
                                     few title rows; it is searched in the first 10 rows)
        data_dir/dst_imgs/<type>/<image>.<TAG>.<level>.png   types awgn, jpeg, jpeg2000, fnoise, blur, contrast
                                     with tags AWGN, JPEG, jpeg2000, fnoise, BLUR, contrast (letter case ignored)
        data_dir/src_imgs/           references (not read)

    Instead of the spreadsheet, a CSV export of that sheet with the same header is read when it is the only label
    file present: ``csiq.DMOS.csv`` or ``csiq_dmos.csv`` (or pass ``label_file``). ``dst_type`` is one of noise,
    jpeg, jpeg 2000, fnoise, blur, contrast. An image is looked for in ``dst_imgs/<type>/`` and, failing that,
    anywhere under ``dst_imgs/`` by file name. Scores: DMOS 0-1, lower is better, flipped to ``mos = 1 - dmos``.
    ``ref`` is the ``image`` column (e.g. ``"1600"``).
    """
    root = require_dir(data_dir, "CSIQ folder")
    if label_file is None:
        label_path = first_existing(
            [root / "csiq.DMOS.xlsx", root / "csiq.DMOS.csv", root / "csiq_dmos.csv"], "CSIQ label file"
        )
    else:
        label_path = require_file(label_file)
    index = ImageIndex(require_dir(root / "dst_imgs", "CSIQ dst_imgs folder"))
    rows: List[LabelRow] = []
    for row, cells in read_table(label_path, _CSIQ_COLUMNS, sheet="all_by_image"):
        image, kind, level = cell_text(cells["image"]), cell_text(cells["dst_type"]).lower(), cell_text(cells["dst_lev"])
        if kind not in CSIQ_TYPES:
            raise IQADataError(
                f"unknown dst_type {kind!r}; expected one of {sorted(CSIQ_TYPES)}", file=label_path, row=row
            )
        if not image or not level:
            raise IQADataError("empty image or dst_lev cell", file=label_path, row=row)
        score = parse_score(cells["dmos"], label_path, row, "dmos")
        folder, tag = CSIQ_TYPES[kind]
        path = index.require(f"{folder}/{image}.{tag}.{level}.png", label_path, row, anywhere=True)
        rows.append(LabelRow(path, score, image, row))
    return to_dataset(rows, get_score_scale("csiq"), label_path)


def read_tid2013(data_dir: PathLike) -> "Dataset":
    """TID2013 (3,000 distorted images of 25 scenes).

    Layout::

        data_dir/mos_with_names.txt     one "<MOS> <image name>" per line, e.g. "5.51429 i01_01_1.bmp"
        data_dir/distorted_images/      i01_01_1.bmp ... (letter case of the names varies; ignored)
        data_dir/reference_images/      I01.BMP ... (not read)

    Scores: MOS 0-9, higher is better, kept. ``ref`` is ``"I"`` plus the two digits after the leading ``i``
    (``i01_01_1.bmp`` -> ``"I01"``; the 25th reference is named ``i25`` in the release, it becomes ``"I25"``).
    """
    root = require_dir(data_dir, "TID2013 folder")
    label_path = require_file(root / "mos_with_names.txt")
    index = ImageIndex(require_dir(root / "distorted_images", "TID2013 distorted_images folder"))
    rows: List[LabelRow] = []
    with open(label_path, encoding="utf-8-sig", errors="replace") as handle:
        for line_number, line in enumerate(handle, start=1):
            tokens = line.split()
            if not tokens:
                continue
            if len(tokens) != 2:
                raise IQADataError(
                    f"expected two fields '<MOS> <image name>', found {len(tokens)}: {line.strip()!r}",
                    file=label_path,
                    row=line_number,
                )
            score = parse_score(tokens[0], label_path, line_number, "MOS")
            name = tokens[1]
            match = re.match(r"^[iI](\d+)_", name)
            if match is None:
                raise IQADataError(f"image name {name!r} does not start with i<NN>_", file=label_path, row=line_number)
            path = index.require(name, label_path, line_number)
            rows.append(LabelRow(path, score, f"I{int(match.group(1)):02d}", line_number))
    return to_dataset(rows, get_score_scale("tid2013"), label_path)


_KADID_COLUMNS = {"dist_img": ("dist_img",), "ref_img": ("ref_img",), "dmos": ("dmos",)}


def read_kadid10k(data_dir: PathLike) -> "Dataset":
    """KADID-10k (10,125 distorted images of 81 scenes).

    Layout::

        data_dir/dmos.csv      header ``dist_img,ref_img,dmos,var``; e.g. ``I01_01_01.png,I01.png,4.57,0.496``
        data_dir/images/       distorted and reference PNGs

    Scores: the ``dmos`` column is on 1-5 with higher = better (despite its name) and is kept as is. ``ref`` is the
    reference's name without extension (``"I01"``).
    """
    root = require_dir(data_dir, "KADID-10k folder")
    label_path = require_file(root / "dmos.csv")
    index = ImageIndex(require_dir(root / "images", "KADID-10k images folder"))
    rows = [
        LabelRow(
            index.require(cells["dist_img"], label_path, row),
            parse_score(cells["dmos"], label_path, row, "dmos"),
            _stem(cells["ref_img"]),
            row,
        )
        for row, cells in read_table(label_path, _KADID_COLUMNS)
    ]
    return to_dataset(rows, get_score_scale("kadid10k"), label_path)


# --------------------------------------------------------------------------------------------------------------------
# Authentic data sets (no reference: ref = the image's own name)

#: LIVEC: the first entries of AllImages_release.mat are the images used to train the raters (t1.bmp ... t7.bmp in
#: Images/trainingImages/); the literature and pyiqa leave them out, which gives 1,162 images.
LIVEC_NUM_TRAINING_IMAGES = 7


def read_livec(data_dir: PathLike, include_training_images: bool = False) -> "Dataset":
    """LIVE In the Wild Image Quality Challenge (LIVEC), 1,162 images.

    Layout (as in ``ChallengeDB_release``)::

        data_dir/Data/AllImages_release.mat   variable ``AllImages_release`` (1169x1 cell of file names)
        data_dir/Data/AllMOS_release.mat      variable ``AllMOS_release`` (1x1169)
        data_dir/Images/                      1.bmp ...; Images/trainingImages/ holds t1.bmp ... t7.bmp

    The first 7 entries are the rater-training images; they are left out unless ``include_training_images=True``
    (then they are looked for in ``Images/trainingImages/`` and ``Images/``). Scores: MOS 0-100, kept.
    """
    root = require_dir(data_dir, "LIVEC folder")
    names_path, [(_, names)] = load_mat(root / "Data" / "AllImages_release.mat", [("AllImages_release",)])
    mos_path, [(mos_key, mos)] = load_mat(root / "Data" / "AllMOS_release.mat", [("AllMOS_release",)])
    names, mos = mat_strings(names), mos.ravel()
    if len(names) != len(mos):
        raise IQADataError(f"has {len(mos)} scores but {names_path} lists {len(names)} images", file=mos_path)
    images = require_dir(root / "Images", "LIVEC Images folder")
    index, training = ImageIndex(images), ImageIndex(images / "trainingImages")
    rows = []
    for entry, (name, value) in enumerate(zip(names, mos), start=1):
        is_training = entry <= LIVEC_NUM_TRAINING_IMAGES
        if is_training and not include_training_images:
            continue
        score = parse_score(value, mos_path, entry, mos_key)
        path = (training.resolve(name) if is_training else None) or index.require(name, names_path, entry)
        rows.append(LabelRow(path, score, _stem(name), entry))
    return to_dataset(rows, get_score_scale("livec"), mos_path)


_KONIQ_FOLDERS = ("1024x768", "512x384")


def read_koniq10k(data_dir: PathLike, score_column: str = "MOS", resolution: Optional[str] = None) -> "Dataset":
    """KonIQ-10k (10,073 images).

    Layout::

        data_dir/koniq10k_scores_and_distributions.csv   header image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore
        data_dir/1024x768/  or  data_dir/512x384/          the images (same names)

    ``score_column``: ``"MOS"`` (default; 1-5) or ``"MOS_zscore"`` (about 0-100; many papers report on this one).
    The configuration should say which (the :class:`ScoreScale` description does). ``resolution``: ``"1024x768"``
    or ``"512x384"``; by default the first of those folders that exists. Scores are kept (higher is better).
    """
    if score_column.lower() not in ("mos", "mos_zscore"):
        raise ValueError(f"score_column must be 'MOS' or 'MOS_zscore', not {score_column!r}")
    root = require_dir(data_dir, "KonIQ-10k folder")
    label_path = require_file(root / "koniq10k_scores_and_distributions.csv")
    if resolution is None:
        resolution = next((f for f in _KONIQ_FOLDERS if (root / f).is_dir()), _KONIQ_FOLDERS[0])
    index = ImageIndex(require_dir(root / resolution, "KonIQ-10k image folder"))
    spec = {"image": ("image_name",), "score": (score_column,)}
    rows = [
        LabelRow(
            index.require(cells["image"], label_path, row),
            parse_score(cells["score"], label_path, row, score_column),
            _stem(cells["image"]),
            row,
        )
        for row, cells in read_table(label_path, spec)
    ]
    return to_dataset(rows, get_score_scale("koniq10k", score_column=score_column), label_path)


_SPAQ_COLUMNS = {"image": ("Image name", "Image_name", "image", "img_name", "name"), "mos": ("MOS",)}


def read_spaq(data_dir: PathLike) -> "Dataset":
    """SPAQ (11,125 smartphone photos).

    Layout::

        data_dir/Annotations/MOS and Image attribute scores.xlsx   columns "Image name", "MOS", then the attribute
                                                                   scores (Brightness, Colorfulness, ...; not read)
        data_dir/TestImage/                                        00001.jpg ...

    Scores: MOS 0-100, kept. The photos are full-size and carry EXIF orientation, which :func:`load_image` applies.
    """
    root = require_dir(data_dir, "SPAQ folder")
    label_path = require_file(root / "Annotations" / "MOS and Image attribute scores.xlsx")
    index = ImageIndex(require_dir(root / "TestImage", "SPAQ TestImage folder"))
    rows = []
    for row, cells in read_table(label_path, _SPAQ_COLUMNS):
        name = cell_text(cells["image"])
        rows.append(
            LabelRow(index.require(name, label_path, row), parse_score(cells["mos"], label_path, row, "MOS"), _stem(name), row)
        )
    return to_dataset(rows, get_score_scale("spaq"), label_path)


def read_flive(data_dir: PathLike, label_file: Optional[PathLike] = None, image_dir: Optional[PathLike] = None) -> "Dataset":
    """FLIVE / PaQ-2-PiQ images (39,810 images; whole-image labels only, patches are not read).

    Layouts (both are found without options)::

        data_dir/labels_image.csv     header with at least ``name`` and ``mos``; ``name`` is the image's path
                                      relative to the image folder (e.g. ``voc_emotic_ava/xxx.jpg``)
        data_dir/<the folders named in it>

        data_dir/labels_image.csv     the FLIVE_Database layout: the labels beside ``database/``,
        data_dir/database/<the folders named in it>

    ``label_file`` defaults to ``labels_image.csv`` in ``data_dir`` or ``data_dir/database``. Each name is looked for,
    in this order: at its relative path under ``image_dir`` when given; otherwise under the label file's folder, then
    under ``database/`` beside it, then under ``data_dir/database``; only then by file name anywhere below the first of
    those folders, if that name is unique there (names such as ``a.jpg`` repeat across the source folders, so this
    last resort fails rather than guess). Scores: MOS about 0-100, kept. ``ref`` is the image's path without
    extension (the folder is kept, for the same reason).
    """
    root = require_dir(data_dir, "FLIVE folder")
    if label_file is None:
        label_path = first_existing([root / "labels_image.csv", root / "database" / "labels_image.csv"], "FLIVE labels")
    else:
        label_path = require_file(label_file)
    if image_dir is not None:
        folders = [require_dir(image_dir, "FLIVE image folder")]
    else:
        folders = [label_path.parent]
        for candidate in (label_path.parent / "database", root / "database"):
            if candidate.is_dir() and candidate.resolve() not in folders:
                folders.append(candidate.resolve())
    indexes = [ImageIndex(folder) for folder in folders]
    rows = []
    for row, cells in read_table(label_path, {"name": ("name",), "mos": ("mos",)}):
        name = cells["name"]
        path = next((found for found in (index.resolve(name) for index in indexes) if found is not None), None)
        if path is None:
            path = indexes[0].require(name, label_path, row, anywhere=True)
        rows.append(LabelRow(path, parse_score(cells["mos"], label_path, row, "mos"), str(Path(name).with_suffix("")), row))
    return to_dataset(rows, get_score_scale("flive"), label_path)


# --------------------------------------------------------------------------------------------------------------------
# Generic formats


def _scale_from_data(name: str, values: Sequence[float], score_range, higher_is_better: bool, what: str) -> ScoreScale:
    if score_range is None:
        if not higher_is_better:
            raise ValueError("higher_is_better=False needs score_range=(min, max) to flip the scores")
        low, high = float(min(values)), float(max(values))
    else:
        low, high = (float(v) for v in score_range)
    if not high > low:
        raise ValueError(f"score range must have max > min, got ({low}, {high})")
    flip = "" if higher_is_better else f", flipped as {low + high:g} - score"
    return ScoreScale(name, low, high, higher_is_better, f"{what} ({low:g}-{high:g}){flip}")


def read_csv_dataset(
    csv_file: PathLike,
    image_dir: Optional[PathLike] = None,
    higher_is_better: bool = True,
    score_range: Optional[Tuple[float, float]] = None,
    dataset_name: str = "csv",
    image_column: str = "image",
    mos_column: str = "mos",
    ref_column: str = "ref",
) -> "Dataset":
    """A data set described by one CSV file with a header: ``image``, ``mos`` and optionally ``ref``.

    ``image`` is a path relative to ``image_dir`` (default: the CSV's folder) or absolute. Without a ``ref`` column
    each image is its own scene. ``higher_is_better=False`` flips the scores as ``(min + max) - score`` and needs
    ``score_range``; otherwise the range is ``score_range`` or, if not given, the min and max found in the file.
    ``dataset_name`` becomes the ``dataset`` column and the scale's name (a benchmark name such as ``"live"`` also
    makes :func:`make_splits` split by scene by default).
    """
    label_path = require_file(csv_file)
    index = ImageIndex(require_dir(image_dir if image_dir is not None else label_path.parent, "image folder"))
    spec = {"image": (image_column,), "mos": (mos_column,), "ref": (ref_column,)}
    rows = []
    for row, cells in read_table(label_path, spec, optional=("ref",)):
        image = cells["image"]
        path = index.require(image, label_path, row) if not Path(image).is_absolute() else _absolute(image, label_path, row)
        ref = cells.get("ref") or str(Path(image).with_suffix(""))
        rows.append(LabelRow(path, parse_score(cells["mos"], label_path, row, mos_column), ref, row))
    if not rows:
        raise IQADataError("no labelled images found", file=label_path)
    scale = _scale_from_data(dataset_name, [r.original for r in rows], score_range, higher_is_better, f"{dataset_name} scores")
    return to_dataset(rows, scale, label_path)


def _absolute(image: str, label_path: Path, row) -> str:
    if not Path(image).is_file():
        raise IQADataError(f"image {image!r} named here does not exist", file=label_path, row=row)
    return str(Path(image).resolve())


_PYIQA_IMAGE_COLUMNS = ("img_name", "name", "image", "img", "image_name", "dist_name", "dis_name", "dist_img")


def read_pyiqa_meta(
    meta_info_file: PathLike,
    image_dir: PathLike,
    dmos_max: Optional[float] = None,
    score_range: Optional[Tuple[float, float]] = None,
    dataset_name: str = "pyiqa",
) -> "Dataset":
    """A pyiqa-style meta-info CSV (the format of pyiqa's ``meta_info_*.csv`` files).

    Two shapes, told apart by the header:

    - no-reference: first column the image name (``img_name``), second the score (``mos``), then anything;
    - full-reference: ``ref_name, dist_name, <score>, ...``: the image is the second column, the scene the first.

    Image names are relative to ``image_dir`` (pyiqa's ``dataroot_target``). As in pyiqa, the score column is read
    as is, whatever it is called, unless ``dmos_max`` is given: then ``mos = dmos_max - score`` (for LIVE and
    CSIQ-style difference scores). The scale is ``(0, dmos_max)`` with ``dmos_max``, else ``score_range`` or the
    range found in the file; ``dataset_name`` names the set. Only the CSV form is read (not pyiqa's older whitespace-separated ``.txt``).
    """
    label_path = require_file(meta_info_file)
    index = ImageIndex(require_dir(image_dir, "image folder"))
    (header_line, header), *records = csv_records(label_path)
    header = [h.strip().lower() for h in header]
    full_reference = len(header) > 2 and header[1] in ("dist_name", "dis_name", "dist_img")
    image_col, score_col = (1, 2) if full_reference else (0, 1)
    if len(header) <= score_col or header[image_col] not in _PYIQA_IMAGE_COLUMNS:
        raise IQADataError(
            f"not a pyiqa meta-info header (expected img_name,mos,... or ref_name,dist_name,mos,...): {header}",
            file=label_path,
            row=header_line,
        )
    rows = []
    for line, record in records:
        if len(record) <= score_col:
            raise IQADataError(f"expected at least {score_col + 1} fields, found {len(record)}", file=label_path, row=line)
        image = record[image_col].strip()
        score = parse_score(record[score_col], label_path, line, header[score_col])
        ref = _stem(record[0]) if full_reference else str(Path(image).with_suffix(""))
        rows.append(LabelRow(index.require(image, label_path, line), score, ref, line))
    if not rows:
        raise IQADataError("no labelled images found", file=label_path)
    if dmos_max is not None:
        scale = _scale_from_data(dataset_name, [], (0.0, dmos_max), False, f"{dataset_name} difference scores")
    else:
        scale = _scale_from_data(dataset_name, [r.original for r in rows], score_range, True, f"{dataset_name} scores")
    return to_dataset(rows, scale, label_path)


# --------------------------------------------------------------------------------------------------------------------
# One entry point

READERS: Dict[str, Callable[..., "Dataset"]] = {
    "live": read_live,
    "csiq": read_csiq,
    "tid2013": read_tid2013,
    "kadid10k": read_kadid10k,
    "livec": read_livec,
    "koniq10k": read_koniq10k,
    "spaq": read_spaq,
    "flive": read_flive,
}


def load_iqa_dataset(name: str, data_dir: Optional[PathLike] = None, **kwargs) -> "Dataset":
    """Load an IQA data set by name as a ``datasets.Dataset`` (columns: image, mos, mos_original, ref, dataset).

    Args:
        name: ``"live"``, ``"csiq"``, ``"tid2013"``, ``"kadid10k"``, ``"livec"``, ``"koniq10k"``, ``"spaq"``,
            ``"flive"`` (aliases such as ``"KADID-10k"`` or ``"LIVE_Challenge"`` work), ``"builtin"`` (the
            pseudo-labelled offline set, built on first use), ``"csv"`` or ``"pyiqa"``.
        data_dir: the unpacked release folder. For ``"csv"`` the CSV file; for ``"pyiqa"`` the image folder (give
            ``meta_info_file=``). For ``"builtin"``, where to build/cache it (default: see
            :func:`build_builtin_dataset`).
        **kwargs: reader options, e.g. ``score_column="MOS_zscore"`` for KonIQ-10k, ``include_training_images``
            for LIVEC, ``higher_is_better``/``score_range`` for CSV; see each ``read_*`` function.
    """
    key = canonical_name(name)
    if key == "builtin":
        from .builtin import load_builtin_dataset

        return load_builtin_dataset(root=data_dir, **kwargs)
    if key == "csv":
        csv_file = kwargs.pop("csv_file", None) or data_dir
        if csv_file is None:
            raise ValueError("load_iqa_dataset('csv', ...) needs the CSV file as data_dir (or csv_file=)")
        return read_csv_dataset(csv_file, **kwargs)
    if key == "pyiqa":
        image_dir = kwargs.pop("image_dir", None) or data_dir
        if image_dir is None or "meta_info_file" not in kwargs:
            raise ValueError("load_iqa_dataset('pyiqa', image_dir, meta_info_file=...) needs both")
        return read_pyiqa_meta(image_dir=image_dir, **kwargs)
    if key not in READERS:
        raise KeyError(f"unknown data set {name!r}; known: {sorted(READERS) + ['builtin', 'csv', 'pyiqa']}")
    if data_dir is None:
        raise ValueError(f"load_iqa_dataset({name!r}) needs data_dir, the folder of the unpacked release")
    return READERS[key](data_dir, **kwargs)
