"""gMAD: group maximum differentiation competition between two IQA models (paper Sec. 3.4).

The idea (Ma et al., "Group MAD Competition", CVPR 2016): on a pool of unlabelled images, let one
model *defend* and the other *attack*. At a given quality level of the defender, take images the
defender scores (nearly) the same; among them, the pair the attacker scores most differently is
the attacker's strongest objection to the defender. A human looking at the pair sees which model
is right: if the two images look equally good, the attacker is wrong; if one is clearly better,
the defender missed it. Doing this both ways and at low and high quality shows each model's
weaknesses without any MOS.

This module is split so that everything but scoring is model-free and testable:

* :func:`select_gmad_pairs` - pure numpy selection from two score arrays;
* :func:`gmad_contact_sheet` - a PNG grid of the pairs with both models' scores;
* :func:`run_gmad` - score a pool with two ``score_fn(paths) -> np.ndarray`` callables, select,
  and write the sheet and a JSON of the pairs;
* :func:`load_scorer` - the one model-dependent piece: a ``score_fn`` for a saved GLIA model
  directory (imports ``glia_hf`` lazily);
* :func:`csv_scorer` - a ``score_fn`` that looks scores up in a CSV of (image, score) written by
  any other model, so that the opponent can be anything (the paper's is DEIQT; a pyiqa run of
  any of its metrics writes such a file);
* ``python -m eval.gmad --model-a DIR|CSV --model-b DIR|CSV --images FOLDER --out sheet.png``.

Scores CSV (:func:`read_score_csv`): one row per image, either with a header naming an image
column (one of :data:`IMAGE_COLUMNS`) and a score column (one of :data:`SCORE_COLUMNS`), or
without a header, as two columns ``image,score``. An image is a path, absolute or relative to the
``--images`` folder, or a bare file name when that name is unique in the CSV. Scores may be on
any scale (gMAD compares orders within each model), but higher must mean better: negate the
scores of a measure that rises as quality falls. Every pool image needs a score; extra rows are
ignored.
"""

import argparse
import json
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

__all__ = [
    "GMADPair",
    "select_gmad_pairs",
    "gmad_contact_sheet",
    "run_gmad",
    "list_images",
    "load_scorer",
    "read_score_csv",
    "csv_scorer",
    "main",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm")
#: Header names accepted for the image and the score column of a scores CSV (first match wins).
IMAGE_COLUMNS = ("image", "img_path", "path", "file", "filename", "name")
SCORE_COLUMNS = ("score", "prediction", "pred", "quality")


@dataclass(frozen=True)
class GMADPair:
    """One gMAD pair.

    Attributes:
        defender, attacker: model names (the ``names`` given to :func:`select_gmad_pairs`).
        level: the quantile of the defender's scores at which the level is centred (0.1 = low
            quality, 0.9 = high quality).
        level_score: the defender's score at that quantile.
        band: ``(low, high)``, the defender scores admitted at this level.
        n_candidates: how many images fell in the band.
        better, worse: image indices; the attacker scores ``better`` higher than ``worse``.
        scores_a, scores_b: ``(score of better, score of worse)`` under model A and model B.
        attacker_gap: attacker's score of ``better`` minus that of ``worse`` (>= 0).
        attacker_gap_relative: ``attacker_gap`` divided by the attacker's score range on the pool.
        defender_gap: absolute difference of the defender's two scores (small by construction).
    """

    defender: str
    attacker: str
    level: float
    level_score: float
    band: tuple
    n_candidates: int
    better: int
    worse: int
    scores_a: tuple
    scores_b: tuple
    attacker_gap: float
    attacker_gap_relative: float
    defender_gap: float

    def as_dict(self):
        return asdict(self)


def _as_scores(scores, name):
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"scores of model {name} must be one-dimensional, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(
            f"scores of model {name} contain {int(bad.sum())} NaN or infinite value(s) "
            f"(first at index {int(np.flatnonzero(bad)[0])})"
        )
    return arr


def _level_quantiles(levels):
    if isinstance(levels, (int, np.integer)) and not isinstance(levels, bool):
        if levels < 1:
            raise ValueError(f"levels must be at least 1, got {levels}")
        return [(k + 0.5) / levels for k in range(int(levels))]
    quantiles = [float(q) for q in levels]
    if not quantiles:
        raise ValueError("levels is empty")
    for q in quantiles:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"level quantiles must lie in [0, 1], got {q}")
    return quantiles


def select_gmad_pairs(scores_a, scores_b, levels=(0.1, 0.9), tolerance=0.025,
                      names=("A", "B"), min_candidates=2):
    """Select gMAD pairs from two models' scores on the same image pool.

    For each role (A defends and B attacks, then B defends and A attacks) and each level:

    1. the level's centre is the defender's score at quantile ``q`` of the pool (``levels``
       holds the quantiles; the default 0.1 and 0.9 are a low- and a high-quality level; an int
       ``K`` means ``K`` levels centred at quantiles ``(k + 0.5) / K``);
    2. the candidates are the images whose defender score lies within ``tolerance`` times the
       defender's score range (max - min over the pool) of that centre, so any two of them differ
       by at most ``2 * tolerance`` of the range for the defender;
    3. among the candidates, the pair is the attacker's highest- and lowest-scored image.

    A level with fewer than ``min_candidates`` (at least 2) images in its band gives no pair and
    a ``UserWarning`` (widen ``tolerance`` or use a larger pool).

    Args:
        scores_a, scores_b: the two models' scores, aligned with one list of images. Only the
            order within each model matters, so the two may be on different scales.
        levels: quantiles of the defender's scores, or a number of levels.
        tolerance: half-width of a level's band as a fraction of the defender's score range.
        names: display names of model A and model B, used in the records.
        min_candidates: fewest images a band must hold to give a pair.

    Returns:
        A list of :class:`GMADPair`: first every level with A defending, then with B defending.

    Raises ``ValueError`` for arrays of different lengths, fewer than 2 images, NaN/inf scores,
    or bad ``levels``/``tolerance``.
    """
    a = _as_scores(scores_a, names[0])
    b = _as_scores(scores_b, names[1])
    if a.shape != b.shape:
        raise ValueError(f"the two score arrays differ in length ({a.size} != {b.size})")
    if a.size < 2:
        raise ValueError(f"gMAD needs at least 2 images, got {a.size}")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be non-negative, got {tolerance}")
    min_candidates = max(2, int(min_candidates))
    quantiles = _level_quantiles(levels)

    pairs = []
    roles = [(a, b, names[0], names[1]), (b, a, names[1], names[0])]
    for defender, attacker, d_name, t_name in roles:
        d_range = float(np.ptp(defender))
        t_range = float(np.ptp(attacker))
        half = tolerance * d_range
        for q in quantiles:
            centre = float(np.quantile(defender, q))
            band = (centre - half, centre + half)
            # A tiny slack so that scores exactly on the band's edge are not lost to rounding.
            slack = 1e-12 * max(1.0, abs(centre))
            idx = np.flatnonzero(np.abs(defender - centre) <= half + slack)
            if idx.size < min_candidates:
                warnings.warn(
                    f"gMAD: {d_name} defending at level q={q:g} has {idx.size} image(s) within "
                    f"±{half:.4g} of {centre:.4g}; no pair (raise tolerance or use more images)",
                    UserWarning,
                    stacklevel=2,
                )
                continue
            better = int(idx[np.argmax(attacker[idx])])
            worse = int(idx[np.argmin(attacker[idx])])
            gap = float(attacker[better] - attacker[worse])
            pairs.append(
                GMADPair(
                    defender=d_name,
                    attacker=t_name,
                    level=q,
                    level_score=centre,
                    band=band,
                    n_candidates=int(idx.size),
                    better=better,
                    worse=worse,
                    scores_a=(float(a[better]), float(a[worse])),
                    scores_b=(float(b[better]), float(b[worse])),
                    attacker_gap=gap,
                    attacker_gap_relative=gap / t_range if t_range > 0 else 0.0,
                    defender_gap=float(abs(defender[better] - defender[worse])),
                )
            )
    return pairs


def _thumbnail(path, size):
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img = img.convert("RGB")
            img.thumbnail((size, size))
            return np.asarray(img), None
    except Exception as err:  # a sheet should still be written; the cell says what went wrong
        return np.full((size, size, 3), 200, dtype=np.uint8), f"{type(err).__name__}: {err}"


def gmad_contact_sheet(pairs: Sequence[GMADPair], image_paths, path, names=("A", "B"),
                       thumb_size=256, dpi=100):
    """Write a PNG contact sheet of gMAD pairs and return its path.

    One row per pair: a header naming the defender, the attacker and the level, then the two
    images side by side (the attacker's preferred image on the left), each with its file name and
    both models' scores underneath (``A: 0.812   B: 0.341``).

    Args:
        pairs: records from :func:`select_gmad_pairs`.
        image_paths: the image pool, in the order the scores were given.
        path: PNG file to write; parent folders are created.
        names: the names of model A and model B, as printed under each image.
        thumb_size: longest side of each image on the sheet, in pixels.
        dpi: resolution of the sheet.

    An image that cannot be opened is drawn as a grey square with the error, so that the sheet is
    always written. Raises ``ValueError`` when there are no pairs or an index is out of range.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pairs = list(pairs)
    image_paths = [Path(p) for p in image_paths]
    if not pairs:
        raise ValueError("no gMAD pairs to draw")
    for pair in pairs:
        for i in (pair.better, pair.worse):
            if not 0 <= i < len(image_paths):
                raise ValueError(f"pair refers to image {i}, but only {len(image_paths)} paths were given")

    cell_w = thumb_size / dpi
    cell_h = (thumb_size + 70) / dpi
    header_h = 40 / dpi
    fig = Figure(figsize=(2 * cell_w + 0.4, len(pairs) * (cell_h + header_h)), dpi=dpi,
                 layout="constrained")
    FigureCanvasAgg(fig)
    rows = fig.subfigures(len(pairs), 1, squeeze=False)[:, 0]
    for row, pair in zip(rows, pairs):
        row.suptitle(
            f"{pair.defender} defends at q={pair.level:g} ({pair.defender} ≈ {pair.level_score:.3g}), "
            f"{pair.attacker} attacks (gap {pair.attacker_gap:.3g})",
            fontsize=9,
        )
        axes = row.subplots(1, 2)
        for ax, idx, a_score, b_score in (
            (axes[0], pair.better, pair.scores_a[0], pair.scores_b[0]),
            (axes[1], pair.worse, pair.scores_a[1], pair.scores_b[1]),
        ):
            pixels, error = _thumbnail(image_paths[idx], thumb_size)
            ax.imshow(pixels)
            ax.set_xticks([])
            ax.set_yticks([])
            caption = f"{image_paths[idx].name}\n{names[0]}: {a_score:.3f}   {names[1]}: {b_score:.3f}"
            if error:
                caption += f"\n(unreadable: {error[:60]})"
            ax.set_xlabel(caption, fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def list_images(folder, recursive=False):
    """Sorted image files (by extension) in ``folder``; ``recursive`` descends into sub-folders."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"not a folder: {folder}")
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern)
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _call_scorer(score_fn, paths, name):
    scores = _as_scores(score_fn(paths), name)
    if scores.size != len(paths):
        raise ValueError(f"scorer of model {name} returned {scores.size} scores for {len(paths)} images")
    return scores


def run_gmad(image_paths, score_fn_a: Callable, score_fn_b: Callable, out, names=("A", "B"),
             levels=(0.1, 0.9), tolerance=0.025, pairs_json=None, thumb_size=256):
    """Score a pool with both models, select gMAD pairs, write the sheet and a JSON of the pairs.

    Args:
        image_paths: the pool.
        score_fn_a, score_fn_b: ``score_fn(list_of_paths) -> array of scores``, one per model.
        out: the contact sheet PNG.
        names, levels, tolerance: as in :func:`select_gmad_pairs`.
        pairs_json: where to write the pairs (default: ``out`` with a ``.json`` suffix); each
            record carries the image paths as well as the indices.
        thumb_size: as in :func:`gmad_contact_sheet`.

    Returns the list of :class:`GMADPair`.
    """
    image_paths = [Path(p) for p in image_paths]
    scores_a = _call_scorer(score_fn_a, image_paths, names[0])
    scores_b = _call_scorer(score_fn_b, image_paths, names[1])
    pairs = select_gmad_pairs(scores_a, scores_b, levels=levels, tolerance=tolerance, names=names)
    if not pairs:
        raise ValueError("no level had enough images in its band; raise --tolerance or add images")
    gmad_contact_sheet(pairs, image_paths, out, names=names, thumb_size=thumb_size)
    json_path = Path(pairs_json) if pairs_json else Path(out).with_suffix(".json")
    records = []
    for pair in pairs:
        record = pair.as_dict()
        record["better_path"] = str(image_paths[pair.better])
        record["worse_path"] = str(image_paths[pair.worse])
        records.append(record)
    payload = {
        "names": list(names),
        "levels": list(_level_quantiles(levels)),
        "tolerance": tolerance,
        "n_images": len(image_paths),
        "pairs": records,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return pairs


# ---------------------------------------------------------------- model-dependent part


def load_scorer(model_dir, batch_size=16, device=None):
    """MODEL-DEPENDENT: return ``score_fn(paths) -> np.ndarray`` for a saved GLIA model directory.

    This is the only function of this module that needs the model; it imports ``torch``, PIL and
    ``glia_hf`` when called. It uses the public model API: ``GLIAImageProcessor`` and
    ``GLIAForImageQualityAssessment.from_pretrained(model_dir)``; the model's ``score`` is on the
    data set's scale, higher is better. Images are opened with EXIF orientation applied and
    converted to RGB; they are scored in batches of ``batch_size`` without gradients, in eval
    mode. A file that cannot be read raises ``ValueError`` naming it.
    """
    import torch
    from PIL import Image, ImageOps

    from glia_hf import GLIAForImageQualityAssessment, GLIAImageProcessor

    processor = GLIAImageProcessor.from_pretrained(model_dir)
    model = GLIAForImageQualityAssessment.from_pretrained(model_dir).eval()
    if device is not None:
        model = model.to(device)
    model_device = next(model.parameters()).device

    def _open(path):
        try:
            with Image.open(path) as img:
                return ImageOps.exif_transpose(img).convert("RGB")
        except Exception as err:
            raise ValueError(f"cannot read image {path}: {type(err).__name__}: {err}") from err

    def score_fn(paths):
        out = []
        for start in range(0, len(paths), batch_size):
            images = [_open(p) for p in paths[start:start + batch_size]]
            inputs = processor(images=images, return_tensors="pt")
            inputs = {k: v.to(model_device) if hasattr(v, "to") else v for k, v in inputs.items()}
            with torch.no_grad():
                score = model(**inputs).score
            out.append(score.detach().float().cpu().numpy().reshape(-1))
        return np.concatenate(out) if out else np.zeros(0)

    return score_fn


def _is_number(text):
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def read_score_csv(path):
    """Read a scores CSV (format in the module docstring) into a list of ``(image, score)``.

    Raises ``ValueError`` naming the file and the row for a missing column, a score that is not
    a finite number, or an image listed twice.
    """
    import csv

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"scores CSV {path} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"scores CSV {path} is empty")
    header = [cell.strip().lower() for cell in rows[0]]
    if len(header) >= 2 and not _is_number(rows[0][1]):
        image_col = next((header.index(c) for c in IMAGE_COLUMNS if c in header), None)
        score_col = next((header.index(c) for c in SCORE_COLUMNS if c in header), None)
        if image_col is None or score_col is None:
            raise ValueError(
                f"{path}: the header {rows[0]} needs an image column (one of {list(IMAGE_COLUMNS)}) and a score "
                f"column (one of {list(SCORE_COLUMNS)})"
            )
        body, first_line = rows[1:], 2
    else:
        image_col, score_col, body, first_line = 0, 1, rows, 1
    entries, seen = [], {}
    for line, row in enumerate(body, first_line):
        if len(row) <= max(image_col, score_col):
            raise ValueError(f"{path}, row {line}: expected an image and a score, got {row}")
        image, text = row[image_col].strip(), row[score_col].strip()
        try:
            score = float(text)
        except ValueError:
            raise ValueError(f"{path}, row {line}: score {text!r} is not a number") from None
        if not np.isfinite(score):
            raise ValueError(f"{path}, row {line}: score {text!r} is not finite")
        if image in seen:
            raise ValueError(f"{path}, rows {seen[image]} and {line}: image {image!r} is listed twice")
        seen[image] = line
        entries.append((image, score))
    return entries


def csv_scorer(path, images_root=None):
    """Return ``score_fn(paths) -> np.ndarray`` that looks each path up in a scores CSV.

    An image of the CSV matches a pool path when it names the same file (an absolute path, or a
    path relative to ``images_root``, or to the CSV's folder), or else by bare file name when
    that name occurs once in the CSV. A pool image without a score raises ``ValueError`` naming
    how many are missing and the first one.
    """
    path = Path(path)
    entries = read_score_csv(path)
    by_file, by_name = {}, {}
    bases = [Path(images_root)] if images_root is not None else []
    bases.append(path.parent)
    for image, score in entries:
        candidate = Path(image)
        for base in ([None] if candidate.is_absolute() else bases):
            full = candidate if base is None else base / candidate
            by_file.setdefault(str(full.resolve()), score)
        by_name.setdefault(candidate.name, []).append(score)

    def score_fn(paths):
        scores, missing = [], []
        for p in paths:
            p = Path(p)
            score = by_file.get(str(p.resolve()))
            if score is None and len(by_name.get(p.name, [])) == 1:
                score = by_name[p.name][0]
            if score is None:
                missing.append(p)
                score = float("nan")
            scores.append(score)
        if missing:
            raise ValueError(
                f"scores CSV {path} has no score for {len(missing)} of {len(paths)} images (first: {missing[0]}); "
                "score every image of the pool, or point --images at the images it scored"
            )
        return np.asarray(scores, dtype=np.float64)

    return score_fn


def is_score_csv(spec):
    """Whether a ``--model-a/--model-b`` value names a scores CSV rather than a saved model folder."""
    return Path(spec).suffix.lower() == ".csv"


# ---------------------------------------------------------------- command line


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m eval.gmad",
        description="gMAD competition between two IQA models on an unlabelled image folder: "
                    "write a contact sheet PNG of the selected pairs and a JSON of them.",
    )
    p.add_argument("--model-a", required=True,
                   help="model A: a saved GLIA model directory, or a CSV of (image, score) from any model")
    p.add_argument("--model-b", required=True,
                   help="model B: a saved GLIA model directory, or a CSV of (image, score) from any model "
                        "(e.g. the paper's opponent DEIQT, or any pyiqa metric, scored beforehand)")
    p.add_argument("--images", required=True, help="folder of images (the unlabelled pool)")
    p.add_argument("--out", required=True, help="contact sheet PNG to write")
    p.add_argument("--names", nargs=2, default=None, metavar=("NAME_A", "NAME_B"),
                   help="display names (default: the model folders' names, or the CSV files' names without .csv)")
    p.add_argument("--levels", nargs="+", type=float, default=[0.1, 0.9],
                   help="defender quantiles at which levels are centred (default: 0.1 0.9)")
    p.add_argument("--tolerance", type=float, default=0.025,
                   help="half-width of a level as a fraction of the defender's score range")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default=None, help="torch device, e.g. cuda (default: CPU)")
    p.add_argument("--recursive", action="store_true", help="also take images in sub-folders")
    p.add_argument("--pairs-json", default=None, help="JSON of the pairs (default: OUT with .json)")
    return p


def main(argv=None, scorer_factory=None):
    """Command-line entry point; returns the exit status.

    ``scorer_factory(model_dir) -> score_fn`` defaults to :func:`load_scorer`; tests pass a fake.
    A ``--model-a/--model-b`` value ending in ``.csv`` is read with :func:`csv_scorer` instead.
    """
    args = _parser().parse_args(argv)
    if scorer_factory is None:
        def scorer_factory(model_dir):
            return load_scorer(model_dir, batch_size=args.batch_size, device=args.device)

    def scorer(spec):
        return csv_scorer(spec, images_root=args.images) if is_score_csv(spec) else scorer_factory(spec)

    def default_name(spec, fallback):
        spec = Path(spec)
        return (spec.stem if is_score_csv(spec) else spec.name) or fallback

    names = tuple(args.names) if args.names else (default_name(args.model_a, "A"), default_name(args.model_b, "B"))
    if names[0] == names[1]:
        names = (f"{names[0]} (A)", f"{names[1]} (B)")
    images = list_images(args.images, recursive=args.recursive)
    if len(images) < 2:
        print(f"error: found {len(images)} image(s) in {args.images}; gMAD needs at least 2",
              file=sys.stderr)
        return 2
    try:
        score_a, score_b = scorer(args.model_a), scorer(args.model_b)
        pairs = run_gmad(images, score_a, score_b, args.out, names=names, levels=args.levels,
                         tolerance=args.tolerance, pairs_json=args.pairs_json)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    json_path = args.pairs_json or str(Path(args.out).with_suffix(".json"))
    print(f"{len(pairs)} gMAD pair(s) from {len(images)} images -> {args.out} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
