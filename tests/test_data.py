"""Tests of glia_hf.data: readers on tiny copies of each official layout, bad input, images, splits."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image, ImageFile

from glia_hf.data import (
    IQADataError,
    IQAImageError,
    IQAMissingFileError,
    get_score_scale,
    load_image,
    load_images,
    load_iqa_dataset,
    load_splits,
    make_splits,
    save_splits,
    select_split,
    split_indices,
    whole_set_as_test,
)
from glia_hf.data.readers import LIVE_FOLDERS

COLUMNS = ["image", "mos", "mos_original", "ref", "dataset"]


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))


def _image_bytes(fmt="PNG", size=(8, 6), color=(120, 60, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


PNG, BMP = _image_bytes("PNG"), _image_bytes("BMP")


def _touch(path: Path, data: bytes = PNG) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _write_csv(path: Path, header, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _write_xlsx(path: Path, rows, sheet="Sheet1") -> Path:
    import openpyxl

    path.parent.mkdir(parents=True, exist_ok=True)
    workbook = openpyxl.Workbook()
    worksheet = workbook.active
    worksheet.title = sheet
    for row in rows:
        worksheet.append(row)
    workbook.save(path)
    return path


def _cell(names):
    cell = np.empty((1, len(names)), dtype=object)
    for i, name in enumerate(names):
        cell[0, i] = name
    return cell


def _assert_names(error, file, row=None):
    text = str(error.value)
    assert str(file) in text, text
    if row is not None:
        assert f"row {row}" in text, text


# ------------------------------------------------------------------------------------------------ layouts


@pytest.fixture
def live_dir(tmp_path):
    root = tmp_path / "databaserelease2"
    total = sum(count for _, count in LIVE_FOLDERS)
    dmos = np.linspace(5.0, 95.0, total)
    orgs = np.zeros(total)
    orgs[::40] = 1  # the undistorted copies
    refs = [f"{name}.bmp" for name in ("bikes", "buildings", "caps", "house", "parrots", "statue")]
    refnames = [refs[i % len(refs)] for i in range(total)]
    scipy.io.savemat(root / "dmos.mat" if root.mkdir() is None else None, {"dmos": dmos[None], "orgs": orgs[None]})
    scipy.io.savemat(root / "refnames_all.mat", {"refnames_all": _cell(refnames)})
    for folder, count in LIVE_FOLDERS:
        for k in range(1, count + 1):
            _touch(root / folder / f"img{k}.bmp", BMP)
    return root, dmos, orgs, refnames


def test_live(live_dir):
    root, dmos, orgs, refnames = live_dir
    ds = load_iqa_dataset("LIVE", root)
    assert ds.column_names == COLUMNS
    assert len(ds) == int((orgs == 0).sum())
    assert ds["image"] == sorted(ds["image"])
    row = ds.filter(lambda r: r["image"].endswith("/jp2k/img2.bmp"))[0]
    assert row["mos_original"] == pytest.approx(dmos[1])
    assert row["mos"] == pytest.approx(100 - dmos[1])
    assert row["ref"] == "buildings"
    gblur = ds.filter(lambda r: r["image"].endswith("/gblur/img1.bmp"))[0]
    entry = 227 + 233 + 174  # first gblur entry, 0-based
    assert gblur["mos_original"] == pytest.approx(dmos[entry]) and gblur["ref"] == refnames[entry][:-4]
    assert not any(r.endswith("/jp2k/img1.bmp") for r in ds["image"])  # orgs == 1 entry left out
    assert set(ds["dataset"]) == {"live"}
    assert get_score_scale(ds) == get_score_scale("live")


def test_live_info_txt_disagreement_warns(live_dir):
    root = live_dir[0]
    (root / "jp2k" / "info.txt").write_text("statue.bmp img2.bmp 0.5\n")
    with pytest.warns(UserWarning, match="img2.bmp"):
        load_iqa_dataset("live", root)


def test_live_bad_mat(live_dir):
    root = live_dir[0]
    scipy.io.savemat(root / "dmos.mat", {"dmos": np.ones((1, 10)), "orgs": np.zeros((1, 10))})
    with pytest.raises(IQADataError, match="expected 982 entries") as error:
        load_iqa_dataset("live", root)
    _assert_names(error, root / "dmos.mat")
    scipy.io.savemat(root / "dmos.mat", {"scores": np.ones((1, 982))})
    with pytest.raises(IQADataError, match="no variable named dmos") as error:
        load_iqa_dataset("live", root)


def test_live_nan_score_and_missing_image(live_dir):
    root, dmos, orgs, _ = live_dir
    bad = dmos.copy()
    bad[4] = np.nan
    scipy.io.savemat(root / "dmos.mat", {"dmos": bad[None], "orgs": orgs[None]})
    with pytest.raises(IQADataError, match="not a finite number") as error:
        load_iqa_dataset("live", root)
    _assert_names(error, root / "dmos.mat", row=5)
    scipy.io.savemat(root / "dmos.mat", {"dmos": dmos[None], "orgs": orgs[None]})
    (root / "wn" / "img3.bmp").unlink()
    with pytest.raises(IQAMissingFileError, match="img3.bmp") as error:
        load_iqa_dataset("live", root)
    _assert_names(error, root / "dmos.mat", row=227 + 233 + 3)


CSIQ_HEADER = ["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"]


@pytest.fixture
def csiq_rows():
    tags = {"noise": ("awgn", "AWGN"), "jpeg 2000": ("jpeg2000", "jpeg2000"), "blur": ("blur", "BLUR")}
    rows = []
    for image in (1600, "aerial_city", "boston", "bridge", "cactus"):
        for index, kind in enumerate(tags, start=1):
            for level in (1, 2):
                rows.append([image, index, kind, level, 0.05, round(0.1 * level + 0.01 * index, 4)])
    return rows, tags


def _csiq_images(root, rows, tags):
    for image, _, kind, level, _, _ in rows:
        folder, tag = tags[kind]
        _touch(root / "dst_imgs" / folder / f"{image}.{tag}.{level}.png")


def test_csiq_xlsx_with_title_rows(tmp_path, csiq_rows):
    rows, tags = csiq_rows
    root = tmp_path / "CSIQ"
    _write_xlsx(root / "csiq.DMOS.xlsx", [["CSIQ DMOS"], [], CSIQ_HEADER] + rows, sheet="all_by_image")
    _csiq_images(root, rows, tags)
    ds = load_iqa_dataset("csiq", root)
    assert len(ds) == len(rows) == 30
    assert sorted(set(ds["ref"])) == sorted(["1600", "aerial_city", "boston", "bridge", "cactus"])
    for row in ds:
        assert row["mos"] == pytest.approx(1.0 - row["mos_original"])
    assert any(p.endswith("dst_imgs/jpeg2000/1600.jpeg2000.2.png") for p in ds["image"])


def test_csiq_csv_and_errors(tmp_path, csiq_rows):
    rows, tags = csiq_rows
    root = tmp_path / "CSIQ"
    label = _write_csv(root / "csiq.DMOS.csv", CSIQ_HEADER, rows)
    _csiq_images(root, rows, tags)
    assert len(load_iqa_dataset("csiq", root)) == 30
    bad = [list(r) for r in rows]
    bad[3][2] = "ringing"
    _write_csv(label, CSIQ_HEADER, bad)
    with pytest.raises(IQADataError, match="unknown dst_type") as error:
        load_iqa_dataset("csiq", root)
    _assert_names(error, label, row=5)


# Runs in a fresh interpreter where the built-in set's builders are not installed, as after `pip install glia-hf`
# without the [train] extra: one finder wraps the original ones and finds nothing for them, so `find_spec` answers
# None (what transformers' availability probes expect of an absent package) and `import` fails.
WITHOUT_BUILDER_EXTRA = """
import json, sys

BLOCKED = ("skimage", "sklearn", "sporco")

class _WithoutBuilders:
    def __init__(self, finders):
        self.finders = finders

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        for finder in self.finders:
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                return spec
        return None

    def find_distributions(self, context=None):  # importlib.metadata: the packages' metadata is gone too
        import importlib.metadata as metadata

        context = context or metadata.DistributionFinder.Context()
        for finder in self.finders:
            for dist in getattr(finder, "find_distributions", lambda context: [])(context):
                if (dist.metadata["Name"] or "").lower() not in ("scikit-image", "scikit-learn", "sporco"):
                    yield dist

    def invalidate_caches(self):
        for finder in self.finders:
            getattr(finder, "invalidate_caches", lambda: None)()

sys.meta_path[:] = [_WithoutBuilders(list(sys.meta_path))]
try:
    import skimage  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("scikit-image must not be importable here")

def loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)

import glia_hf.data
from glia_hf.data import load_iqa_dataset

after_import = loaded()
ds = load_iqa_dataset("csiq", sys.argv[1])
result = {"after_import": after_import, "after_reading": loaded(), "rows": len(ds)}
try:
    load_iqa_dataset("builtin", sys.argv[2], progress=False)
except ImportError as error:
    result["builtin_error"] = str(error)
print(json.dumps(result))
"""


def test_release_readers_work_without_the_train_extra(tmp_path, csiq_rows):
    """`pip install glia-hf` (no extras) reads a CSIQ release layout; the built-in set asks for the [train] extra."""
    import os
    import subprocess
    import sys

    rows, tags = csiq_rows
    root = tmp_path / "CSIQ"
    _write_xlsx(root / "csiq.DMOS.xlsx", [CSIQ_HEADER] + rows, sheet="all_by_image")
    _csiq_images(root, rows, tags)
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run([sys.executable, "-c", WITHOUT_BUILDER_EXTRA, str(root), str(tmp_path / "builtin")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["rows"] == len(rows) == 30
    assert got["after_import"] == [] and got["after_reading"] == []  # `import glia_hf.data`, then the reader
    assert 'pip install "glia-hf[train]"' in got["builtin_error"]
    assert "\n" not in got["builtin_error"]
    assert not (tmp_path / "builtin").exists()  # nothing half-built left behind


def test_tid2013(tmp_path):
    root = tmp_path / "tid2013"
    lines = []
    for ref in (1, 2, 25):
        for dist in (1, 2):
            for level in (1, 2, 3):
                name = f"i{ref:02d}_{dist:02d}_{level}.bmp"
                stored = name.upper() if ref == 25 else name  # letter case differs in the release
                _touch(root / "distorted_images" / stored, BMP)
                lines.append(f"{7 - level - 0.1 * dist:.5f} {name}")
    (root / "reference_images").mkdir()
    (root / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    ds = load_iqa_dataset("tid2013", root)
    assert len(ds) == 18
    assert sorted(set(ds["ref"])) == ["I01", "I02", "I25"]
    assert ds["mos"] == ds["mos_original"]  # MOS kept as is
    assert get_score_scale("tid2013").max == 9.0


def test_tid2013_wrong_fields(tmp_path):
    root = tmp_path / "tid2013"
    _touch(root / "distorted_images" / "i01_01_1.bmp", BMP)
    (root / "mos_with_names.txt").write_text("5.1 i01_01_1.bmp\n4.2 i01_01_2.bmp extra\n")
    with pytest.raises(IQADataError, match="expected two fields") as error:
        load_iqa_dataset("tid2013", root)
    _assert_names(error, root / "mos_with_names.txt", row=2)


def _kadid(root: Path, refs=3, per_ref=4, extra_rows=()):
    rows = []
    for r in range(1, refs + 1):
        for d in range(1, per_ref + 1):
            name = f"I{r:02d}_{d:02d}_01.png"
            _touch(root / "images" / name)
            rows.append([name, f"I{r:02d}.png", round(1.0 + 4.0 * d / (per_ref + 1), 3), 0.1])
        _touch(root / "images" / f"I{r:02d}.png")
    rows += list(extra_rows)
    return _write_csv(root / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"], rows), rows


def test_kadid10k(tmp_path):
    root = tmp_path / "kadid10k"
    _kadid(root)
    ds = load_iqa_dataset("KADID-10k", root)
    assert len(ds) == 12 and set(ds["ref"]) == {"I01", "I02", "I03"}
    assert ds["mos"] == ds["mos_original"]  # the dmos column is higher-is-better: not flipped
    assert Path(ds[0]["image"]).is_absolute()


@pytest.mark.parametrize(
    "header, rows, match, row",
    [
        (["dist", "ref_img", "score"], [], "missing column", 1),
        (None, [["I01_01_01.png", "I01.png", "nan", 0.1]], "not a finite number", 14),
        (None, [["I01_01_01.png", "I01.png", "abc", 0.1]], "not a number", 14),
        (None, [["I01_01_01.png", "I01.png", "", 0.1]], "empty score", 14),
        (None, [["I09_01_01.png", "I09.png", 3.0, 0.1]], "does not exist", 14),
        (None, [["I01_02_01.png", "I01.png", 3.0, 0.1]], "duplicate entry", 14),
    ],
)
def test_kadid_bad_input(tmp_path, header, rows, match, row):
    root = tmp_path / "kadid10k"
    label, _ = _kadid(root, extra_rows=rows)
    if header is not None:
        _write_csv(label, header, [["a", "b", 1.0]])
    with pytest.raises(IQADataError, match=match) as error:
        load_iqa_dataset("kadid10k", root)
    _assert_names(error, label, row=row)


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(IQAMissingFileError) as error:
        load_iqa_dataset("kadid10k", tmp_path / "nowhere")
    _assert_names(error, tmp_path / "nowhere")
    (tmp_path / "kadid").mkdir()
    with pytest.raises(FileNotFoundError) as error:
        load_iqa_dataset("kadid10k", tmp_path / "kadid")
    _assert_names(error, tmp_path / "kadid" / "dmos.csv")
    with pytest.raises(KeyError):
        load_iqa_dataset("nosuchset", tmp_path)


def test_livec(tmp_path):
    root = tmp_path / "ChallengeDB_release"
    names = [f"t{i}.bmp" for i in range(1, 8)] + [f"{i}.bmp" for i in range(1, 6)]
    mos = np.linspace(10.0, 90.0, len(names))
    (root / "Data").mkdir(parents=True)
    scipy.io.savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": _cell(names).T})
    scipy.io.savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": mos[None]})
    for name in names:
        _touch(root / "Images" / ("trainingImages/" if name.startswith("t") else "") / name, BMP)
    ds = load_iqa_dataset("livec", root)
    assert len(ds) == 5 and ds["ref"] == sorted(["1", "2", "3", "4", "5"])
    assert sorted(ds["mos"]) == pytest.approx(sorted(mos[7:]))
    assert len(load_iqa_dataset("LIVE_Challenge", root, include_training_images=True)) == 12


def _koniq(root, scores=((4.1, 80.2), (2.0, 30.5), (3.3, 55.0))):
    rows = []
    for i, (mos, z) in enumerate(scores):
        name = f"{1000 + i}.jpg"
        _touch(root / "1024x768" / name, _image_bytes("JPEG"))
        rows.append([name, 0, 0, 1, 0, 0, 100, mos, 0.5, z])
    header = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"]
    return _write_csv(root / "koniq10k_scores_and_distributions.csv", header, rows)


def test_koniq10k_score_columns(tmp_path):
    root = tmp_path / "koniq10k"
    _koniq(root)
    ds = load_iqa_dataset("koniq10k", root)
    assert sorted(ds["mos"]) == [2.0, 3.3, 4.1] and get_score_scale(ds).max == 5.0
    zs = load_iqa_dataset("koniq10k", root, score_column="MOS_zscore")
    assert sorted(zs["mos"]) == [30.5, 55.0, 80.2] and get_score_scale(zs).max == 100.0
    assert "MOS_zscore" in get_score_scale(zs).description
    with pytest.raises(IQAMissingFileError):
        load_iqa_dataset("koniq10k", root, resolution="512x384")


def test_spaq_xlsx(tmp_path):
    root = tmp_path / "SPAQ"
    rows = [["Image name", "MOS", "Brightness"]]
    for i in range(1, 5):
        _touch(root / "TestImage" / f"{i:05d}.jpg", _image_bytes("JPEG"))
        rows.append([f"{i:05d}.jpg", 20.0 * i, 50])
    label = _write_xlsx(root / "Annotations" / "MOS and Image attribute scores.xlsx", rows)
    ds = load_iqa_dataset("spaq", root)
    assert ds["mos"] == [20.0, 40.0, 60.0, 80.0] and ds["ref"] == ["00001", "00002", "00003", "00004"]
    rows[3][1] = "n/a"
    _write_xlsx(label, rows)
    with pytest.raises(IQADataError, match="not a number") as error:
        load_iqa_dataset("spaq", root)
    _assert_names(error, label, row=4)


def test_flive(tmp_path):
    root = tmp_path / "FLIVE"
    names = ["voc_emotic_ava/a.jpg", "voc_emotic_ava/b.jpg", "blur_dataset/a.jpg", "EE371R/c.jpg"]
    for name in names:
        _touch(root / name, _image_bytes("JPEG"))
    _write_csv(root / "labels_image.csv", ["name", "mos", "is_valid"], [[n, 50 + i, True] for i, n in enumerate(names)])
    ds = load_iqa_dataset("flive", root)
    assert len(ds) == 4 and len(set(ds["ref"])) == 4  # same file name in two folders: two scenes


def test_flive_database_layout_with_a_file_name_in_two_folders(tmp_path):
    """FLIVE_Database: labels_image.csv beside database/; `a.jpg` exists in two source folders."""
    root = tmp_path / "FLIVE_Database"
    names = ["voc_emotic_ava/a.jpg", "blur_dataset/a.jpg", "EE371R/c.jpg"]
    for i, name in enumerate(names):
        _touch(root / "database" / name, _image_bytes("JPEG", color=(40 * i, 90, 200)))
    _write_csv(root / "labels_image.csv", ["name", "mos"], [[n, 60 + i] for i, n in enumerate(names)])
    ds = load_iqa_dataset("flive", root)
    found = dict(zip(ds["ref"], zip(ds["image"], ds["mos"])))
    for i, name in enumerate(names):  # each label went to its own folder's file, not to the other a.jpg
        image, mos = found[name[:-4]]
        assert Path(image) == (root / "database" / name).resolve() and mos == 60 + i

    # A name found nowhere at its relative path, whose file name is not unique, is an error naming the row.
    _write_csv(root / "labels_image.csv", ["name", "mos"], [["elsewhere/a.jpg", 50]])
    with pytest.raises(IQAMissingFileError) as error:
        load_iqa_dataset("flive", root)
    _assert_names(error, root / "labels_image.csv", row=2)


def test_generic_csv(tmp_path):
    for name in ("a.png", "b.png", "sub/c.png"):
        _touch(tmp_path / "imgs" / name)
    label = _write_csv(tmp_path / "imgs" / "labels.csv", ["image", "mos", "ref"], [["a.png", 0.2, "s1"], ["b.png", 0.7, "s1"], ["sub/c.png", 0.5, "s2"]])
    ds = load_iqa_dataset("csv", label)
    assert ds["ref"] == ["s1", "s1", "s2"] and ds["mos"] == [0.2, 0.7, 0.5]
    scale = get_score_scale(ds)
    assert (scale.min, scale.max, scale.original_higher_is_better) == (0.2, 0.7, True)
    flipped = load_iqa_dataset("csv", label, higher_is_better=False, score_range=(0, 1), dataset_name="mydmos")
    assert flipped["mos"] == pytest.approx([0.8, 0.3, 0.5]) and set(flipped["dataset"]) == {"mydmos"}
    with pytest.raises(ValueError, match="score_range"):
        load_iqa_dataset("csv", label, higher_is_better=False)
    no_ref = _write_csv(tmp_path / "imgs" / "noref.csv", ["image", "mos"], [["a.png", 1], ["b.png", 2]])
    assert load_iqa_dataset("csv", no_ref)["ref"] == ["a", "b"]


def test_pyiqa_meta(tmp_path):
    for name in ("I01.bmp", "I01_01_1.bmp", "I01_01_2.bmp", "I02_01_1.bmp", "100.bmp", "101.bmp"):
        _touch(tmp_path / "imgs" / name, BMP)
    fr = _write_csv(tmp_path / "fr.csv", ["ref_name", "dist_name", "dmos"], [["I01.bmp", "I01_01_1.bmp", 10], ["I01.bmp", "I01_01_2.bmp", 30], ["I02.bmp", "I02_01_1.bmp", 20]])
    ds = load_iqa_dataset("pyiqa", tmp_path / "imgs", meta_info_file=fr, dmos_max=100, dataset_name="live")
    assert ds["ref"] == ["I01", "I01", "I02"] and ds["mos"] == [90.0, 70.0, 80.0]
    nr = _write_csv(tmp_path / "nr.csv", ["img_name", "mos", "std"], [["100.bmp", 32.5, 19.1], ["101.bmp", 66.3, 20.2]])
    ds = load_iqa_dataset("pyiqa", tmp_path / "imgs", meta_info_file=nr)
    assert ds["mos"] == [32.5, 66.3] and ds["ref"] == ["100", "101"]
    bad = _write_csv(tmp_path / "bad.csv", ["path"], [["100.bmp"]])
    with pytest.raises(IQADataError, match="not a pyiqa meta-info header") as error:
        load_iqa_dataset("pyiqa", tmp_path / "imgs", meta_info_file=bad)
    _assert_names(error, bad, row=1)


# ------------------------------------------------------------------------------------------------ images


def test_load_image_conversions(tmp_path):
    gray = _touch(tmp_path / "gray.png", _image_bytes("PNG")).with_name("g.png")
    Image.new("L", (5, 4), 77).save(gray)
    assert load_image(gray).mode == "RGB" and load_image(gray).getpixel((0, 0)) == (77, 77, 77)

    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    rgba.save(tmp_path / "rgba.png")
    image = load_image(tmp_path / "rgba.png")
    assert image.getpixel((0, 0)) == (255, 255, 255) and image.getpixel((1, 1)) == (255, 0, 0)  # on white

    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    assert load_image(tmp_path / "cmyk.jpg").mode == "RGB"

    sixteen = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    sixteen.save(tmp_path / "sixteen.png")
    assert load_image(tmp_path / "sixteen.png").getpixel((0, 0)) == (255, 255, 255)

    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    assert load_image(tmp_path / "palette.png").getpixel((2, 2)) == (10, 200, 30)


def test_load_image_exif_orientation(tmp_path):
    image = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    image.save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    assert load_image(tmp_path / "rotated.jpg").size == (20, 40)


def test_load_image_errors(tmp_path, monkeypatch):
    with pytest.raises(IQAImageError) as error:
        load_image(tmp_path / "missing.png")
    _assert_names(error, tmp_path / "missing.png")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"this is not an image")
    with pytest.raises(IQAImageError) as error:
        load_image(corrupt)
    _assert_names(error, corrupt)
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # someone else's global setting
    with pytest.raises(IQAImageError) as error:
        load_image(truncated)
    _assert_names(error, truncated)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_load_images_skip(tmp_path):
    good = _touch(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(IQAImageError) as error:
        load_images([good, bad])
    _assert_names(error, bad)
    result = load_images([good, bad, good], skip_unreadable=True)
    assert len(result.images) == 2 and result.paths == [str(good), str(good)]
    assert result.num_skipped == 1 and result.skipped[0][0] == str(bad)


# ------------------------------------------------------------------------------------------------ splits


@pytest.fixture
def kadid_ds(tmp_path):
    root = tmp_path / "kadid10k"
    _kadid(root, refs=10, per_ref=3)
    return load_iqa_dataset("kadid10k", root)


def test_reference_splits(kadid_ds, tmp_path):
    splits = make_splits(kadid_ds)
    assert splits["by_reference"] is True and len(splits["splits"]) == 10 and splits["seed"] == 3407
    refs = kadid_ds["ref"]
    for split in splits["splits"]:
        train_refs = {refs[i] for i in split["train"]}
        test_refs = {refs[i] for i in split["test"]}
        assert not train_refs & test_refs
        assert len(train_refs) == 8 and len(test_refs) == 2  # 80/20 counted in scenes
        assert sorted(split["train"] + split["test"]) == list(range(len(kadid_ds)))
        subsets = split["train_subsets"]
        sizes = [len({refs[i] for i in subsets[k]}) for k in ("0.2", "0.4", "0.6")]
        assert sizes == [2, 3, 5]  # round half up of 1.6, 3.2, 4.8 scenes
        assert set(subsets["0.2"]) <= set(subsets["0.4"]) <= set(subsets["0.6"]) <= set(split["train"])
        for key in subsets:  # whole scenes only
            chosen = {refs[i] for i in subsets[key]}
            assert len(subsets[key]) == 3 * len(chosen)
    assert len({tuple(s["test"]) for s in splits["splits"]}) > 1  # the splits differ
    assert make_splits(kadid_ds) == splits  # identical on a second run
    assert make_splits(kadid_ds, seed=1) != splits
    assert make_splits(kadid_ds, num_splits=3)["splits"] == splits["splits"][:3]

    path = tmp_path / "splits" / "kadid10k.json"
    save_splits(splits, path)
    assert load_splits(path, kadid_ds) == json.loads(json.dumps(splits))
    assert load_splits(path)["images"][0] == "I01_01_01.png"
    assert len(select_split(kadid_ds, splits, 2, "test")) == 6
    assert split_indices(splits, 0, "train", fraction=0.4) == splits["splits"][0]["train_subsets"]["0.4"]


def test_load_splits_rejects_other_dataset(kadid_ds, tmp_path):
    path = tmp_path / "s.json"
    save_splits(make_splits(kadid_ds), path)
    with pytest.raises(IQADataError, match="rows") as error:
        load_splits(path, kadid_ds.select(range(20)))
    _assert_names(error, path)
    changed = kadid_ds.map(lambda r: {"mos_original": r["mos_original"] + 0.5})
    with pytest.raises(IQADataError, match="fingerprint"):
        load_splits(path, changed)
    renamed = kadid_ds.map(lambda r, i: {"image": r["image"].replace("I01_01", "X01_01")}, with_indices=True)
    with pytest.raises(IQADataError, match="image of row 0"):
        load_splits(path, renamed)
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(IQADataError, match="not a glia-hf-splits file"):
        load_splits(tmp_path / "other.json")


def test_image_splits_and_whole_set(tmp_path):
    root = tmp_path / "koniq10k"
    _koniq(root, scores=[(1 + i * 0.1, i) for i in range(20)])
    ds = load_iqa_dataset("koniq10k", root)
    splits = make_splits(ds)
    assert splits["by_reference"] is False
    for split in splits["splits"]:
        assert len(split["train"]) == 16 and len(split["test"]) == 4
        assert not set(split["train"]) & set(split["test"])
        assert [len(split["train_subsets"][k]) for k in ("0.2", "0.4", "0.6")] == [3, 6, 10]
        assert set(split["train_subsets"]["0.2"]) <= set(split["train_subsets"]["0.4"]) <= set(split["train_subsets"]["0.6"])
    whole = whole_set_as_test(ds)
    assert whole["splits"] == [{"train": [], "test": list(range(20)), "train_subsets": {}}]
    assert make_splits(ds, by_reference=True)["by_reference"] is True  # each image its own scene
