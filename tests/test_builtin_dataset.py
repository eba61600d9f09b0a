"""Tests of the built-in pseudo-labelled data set (a reduced build: few scenes, few distortion types, 224 px)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from glia_hf.data import (
    DISTORTIONS,
    SOURCES,
    IQADataError,
    apply_distortion,
    build_builtin_dataset,
    get_score_scale,
    load_iqa_dataset,
    make_splits,
)
from glia_hf.data.builtin import prepare_reference, source_path

SMALL = dict(scenes=["astronaut", "camera", "kodim23"], distortions=["gaussian_blur", "white_noise", "jpeg", "desaturate"], size=224, num_workers=1, progress=False)


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    return build_builtin_dataset(tmp_path_factory.mktemp("builtin") / "small", **SMALL)


def test_sources_and_distortions_are_enough():
    available = [s for s in SOURCES if source_path(s) is not None]
    assert len({s.scene for s in available}) >= 20
    assert len(DISTORTIONS) >= 15 and all(len(values) == 5 for _, values, _ in DISTORTIONS.values())
    for source in available:
        assert source.licence and source.origin and source.package


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
def test_each_distortion(name):
    image = np.asarray(prepare_reference(source_path(SOURCES[0]), 224))[:96, :96].copy()
    outputs = [apply_distortion(image, name, level, np.random.default_rng(7)) for level in (1, 5)]
    for out in outputs:
        assert out.dtype == np.uint8 and out.shape == image.shape
    assert not np.array_equal(outputs[1], image)
    again = apply_distortion(image, name, 5, np.random.default_rng(7))
    assert np.array_equal(again, outputs[1])  # deterministic for a given generator


def test_build_layout_and_labels(small_build):
    root = small_build
    marker = json.loads((root / "COMPLETE.json").read_text())
    assert marker["num_images"] == 3 * 4 * 5
    assert len(list((root / "images").glob("*.png"))) == 60 and len(list((root / "reference").glob("*.png"))) == 3
    licences = (root / "LICENSES.md").read_text()
    assert all(scene in licences for scene in SMALL["scenes"]) and "sporco" in licences
    assert "pseudo-MOS" in (root / "README.md").read_text()
    ds = load_iqa_dataset("builtin", root, **SMALL)
    assert ds.column_names == ["image", "mos", "mos_original", "ref", "dataset", "distortion", "level"]
    assert len(ds) == 60 and set(ds["ref"]) == set(SMALL["scenes"]) and set(ds["dataset"]) == {"builtin"}
    assert all(1.0 <= m <= 5.0 for m in ds["mos"])
    scale = get_score_scale(ds)
    assert (scale.min, scale.max) == (1.0, 5.0) and "pseudo-labelled" in scale.description
    from PIL import Image

    with Image.open(ds[0]["image"]) as image:
        assert image.size == (224, 224) and image.mode == "RGB"  # grayscale "camera" too


def test_labels_fall_with_level(small_build):
    ds = load_iqa_dataset("builtin", small_build, **SMALL)
    falling, total = 0, 0
    for scene in SMALL["scenes"]:
        for distortion in SMALL["distortions"]:
            rows = sorted((r["level"], r["mos"]) for r in ds if r["ref"] == scene and r["distortion"] == distortion)
            scores = [m for _, m in rows]
            assert all(b <= a + 1e-9 for a, b in zip(scores, scores[1:])), (scene, distortion, scores)
            falling += scores[-1] < scores[0]
            total += 1
    assert falling >= total - 1  # only desaturating the grayscale scene changes nothing


def test_cached_and_deterministic(small_build, tmp_path):
    before = (small_build / "COMPLETE.json").stat().st_mtime_ns
    assert build_builtin_dataset(small_build, **SMALL) == small_build
    assert (small_build / "COMPLETE.json").stat().st_mtime_ns == before  # not rebuilt
    other = build_builtin_dataset(tmp_path / "again", **SMALL)
    assert (other / "labels.csv").read_bytes() == (small_build / "labels.csv").read_bytes()
    name = "images/kodim23__white_noise__3.png"
    assert (other / name).read_bytes() == (small_build / name).read_bytes()


def test_incomplete_build_is_redone(tmp_path):
    options = dict(SMALL, scenes=["astronaut", "chelsea"], distortions=["jpeg"])
    root = build_builtin_dataset(tmp_path / "b", **options)
    victim = next((root / "images").glob("*.png"))
    victim.unlink()  # an incomplete folder (COMPLETE.json says 10 images, 9 are left)
    assert build_builtin_dataset(root, **options) == root
    assert victim.is_file()
    stranger = tmp_path / "not_ours"
    (stranger / "images").mkdir(parents=True)
    with pytest.raises(IQADataError, match="not a built-in data set build"):
        build_builtin_dataset(stranger, **options)
    leftovers = list(tmp_path.glob(".*partial*"))
    assert leftovers == []


def test_default_root_uses_hf_home(tmp_path):
    options = dict(SMALL, scenes=["astronaut", "chelsea"], distortions=["pixelate"])
    root = build_builtin_dataset(**options)
    assert str(root).startswith(str(tmp_path / "hf_home" / "glia_hf" / "builtin-v1-"))


def test_builtin_splits_are_by_scene(small_build):
    ds = load_iqa_dataset("builtin", small_build, **SMALL)
    splits = make_splits(ds, num_splits=3)
    assert splits["by_reference"] is True
    for split in splits["splits"]:
        assert len(split["train_refs"]) == 2 and len(split["test_refs"]) == 1
        assert not {ds[i]["ref"] for i in split["train"]} & {ds[i]["ref"] for i in split["test"]}
