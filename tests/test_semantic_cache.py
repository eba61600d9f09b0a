"""The semantic cache of the training loop (`data.cache_semantic`, training/data.py `SemanticCache`): the frozen
backbone's guidance tokens of each (image, orientation) are computed once and reused, with the same losses and scores
as a run without it; its key changes with everything the tokens depend on."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import BATCH_ATOL, tiny_vit_config
from tests.test_training import fresh_accelerate_state, iqa_csv, one_thread, write_config  # noqa: F401 (fixtures)


#: Tokens computed on a sub-batch differ from the full batch's in the last bits (see BATCH_ATOL in conftest.py).
TOKENS_ATOL = BATCH_ATOL


def tiny_glia(**options):
    from glia_hf import GLIAConfig, GLIAForImageQualityAssessment

    torch.manual_seed(0)
    options = {"latent_dim": 16, "cross_attention_heads": 2, **options}
    return GLIAForImageQualityAssessment(GLIAConfig(backbone_config=tiny_vit_config(), **options)).eval()


def step_losses(run_dir):
    with open(run_dir / "logs" / "metrics.csv", newline="") as handle:
        return [(int(r["step"]), float(r["value"])) for r in csv.DictReader(handle)
                if r["name"] == "split-0/train/loss"]


def predictions(run_dir):
    with open(run_dir / "split-0" / "predictions.csv", newline="") as handle:
        return [(r["image"], float(r["prediction"])) for r in csv.DictReader(handle)]


def test_training_with_the_cache_equals_training_without_it(tmp_path, iqa_csv, capsys):  # noqa: F811
    """Two epochs, two views per image, random flips both ways: every step's loss, the calibration and every test
    score agree within 1e-5 with the cache on and off, and the cache was really read (views, epochs, test)."""
    from training.train import main

    runs = {}
    for cached in (False, True):
        config = write_config(
            tmp_path, iqa_csv, data={"train_views": 2, "cache_semantic": cached},
            optim={"epochs": 2, "batch_size": 4}, augmentation={"hflip": 0.5, "vflip": 0.5},
            output={"dir": str(tmp_path / f"run-{cached}"), "log_every": 1, "trackers": ["csv"], "plots": False,
                    "save_model": False},
        )
        capsys.readouterr()
        payload = main(["--config", str(config)])
        runs[cached] = (payload, capsys.readouterr().out)
    (plain, plain_out), (cached, cached_out) = runs[False], runs[True]
    assert "semantic cache off (data.cache_semantic is false)" in plain_out
    assert "semantic cache on" in cached_out
    # 16 training images x 2 views x 2 epochs = 64 look-ups, at most 16 x 4 orientations computed, and the test and
    # calibration passes read orientation 0 of the training images again.
    line = next(line for line in cached_out.splitlines() if "semantic cache holds" in line)
    held = int(line.split("holds ")[1].split()[0])
    hits = int(line.split("; ")[1].split()[0])
    assert 16 < held <= 16 * 4 + 4  # training images in several orientations, plus the 4 test images
    assert hits >= 64 - held

    losses_plain, losses_cached = step_losses(tmp_path / "run-False"), step_losses(tmp_path / "run-True")
    assert [s for s, _ in losses_plain] == [s for s, _ in losses_cached] == list(range(1, 17))
    np.testing.assert_allclose([v for _, v in losses_cached], [v for _, v in losses_plain], atol=TOKENS_ATOL, rtol=0)
    scores_plain, scores_cached = predictions(tmp_path / "run-False"), predictions(tmp_path / "run-True")
    assert [n for n, _ in scores_plain] == [n for n, _ in scores_cached]
    np.testing.assert_allclose([v for _, v in scores_cached], [v for _, v in scores_plain], atol=TOKENS_ATOL, rtol=0)
    for key in ("srcc", "plcc", "plcc_raw", "krcc"):
        assert cached["splits"][0][key] == pytest.approx(plain["splits"][0][key], abs=TOKENS_ATOL)
    calibration_plain, calibration_cached = plain["splits"][0]["calibration"], cached["splits"][0]["calibration"]
    assert calibration_cached["scale"] == pytest.approx(calibration_plain["scale"], abs=1e-4)


def test_views_through_the_cache_equal_views_without_it():
    """Two views of each image in one batch and in later batches: the scores with cached tokens equal the model's
    own (each view's fragments differ; the guidance tokens are the image's)."""
    from training.data import SemanticCache

    model = tiny_glia()
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(3, 3, 224, 224, generator=generator)
    cache = SemanticCache("test")
    calls = []

    def encode(pixel_values):
        calls.append(len(pixel_values))
        return model.glia.encode_guidance(pixel_values)

    with torch.no_grad():
        for batch_ids in ([0, 0, 1], [1, 2, 0], [2, 2, 2]):
            pixels = images[batch_ids]
            fragments = torch.randn(3, 3, 224, 224, generator=generator)
            tokens = cache.lookup(batch_ids, [0, 0, 0], pixels, encode)
            with_cache = model(pixel_values=pixels, fragment_values=fragments, guidance_hidden_states=tokens).score
            without = model(pixel_values=pixels, fragment_values=fragments).score
            torch.testing.assert_close(with_cache, without, atol=TOKENS_ATOL, rtol=0)
    assert calls == [2, 1]  # images 0 and 1 once in the first batch (0 twice), image 2 in the second, none after
    assert (cache.misses, cache.hits, len(cache)) == (3, 6, 3)
    assert cache.nbytes == 3 * 197 * 32 * 4


def test_a_flipped_image_gets_its_own_tokens(tmp_path):
    """The dataset reports each sample's orientation; the cache keeps one entry per orientation, each equal to the
    backbone's tokens of that flipped image."""
    from glia_hf import GLIAImageProcessor
    from training.data import ORIENTATIONS, IQAImageDataset, SemanticCache

    rng = np.random.default_rng(0)
    path = tmp_path / "image.png"
    Image.fromarray(rng.integers(0, 256, (240, 300, 3), dtype=np.uint8)).save(path)
    dataset = IQAImageDataset([str(path)], [3.0], hflip=0.5, vflip=0.5, ids=[7])
    samples = {}
    for seed in range(64):
        sample = dataset[(0, seed)]
        samples.setdefault(sample["orientation"], sample)
    assert sorted(samples) == [0, 1, 2, 3] and len(ORIENTATIONS) == 4
    assert all(sample["image_id"] == 7 for sample in samples.values())
    original = np.asarray(samples[0]["image"])
    np.testing.assert_array_equal(np.asarray(samples[1]["image"]), original[:, ::-1])
    np.testing.assert_array_equal(np.asarray(samples[2]["image"]), original[::-1])
    np.testing.assert_array_equal(np.asarray(samples[3]["image"]), original[::-1, ::-1])
    assert dataset[0]["orientation"] == 0  # test items (no draw seed) are never flipped

    model = tiny_glia()
    processor = GLIAImageProcessor(grid_size=(2, 2), fragment_size=(32, 32))
    cache = SemanticCache("test")
    pixels = processor([samples[o]["image"] for o in range(4)])["pixel_values"]
    cache.lookup([7] * 4, [0, 1, 2, 3], pixels, model.glia.encode_guidance)
    assert len(cache) == 4
    with torch.no_grad():
        for orientation in range(4):
            expected = model.glia.encode_guidance(pixels[orientation:orientation + 1])[0]
            torch.testing.assert_close(cache.entries[(7, orientation)], expected, atol=TOKENS_ATOL, rtol=0)
    assert not torch.allclose(cache.entries[(7, 0)], cache.entries[(7, 1)], atol=1e-3)


def test_the_key_changes_with_backbone_processor_images_and_precision():
    from glia_hf import GLIAImageProcessor
    from training.data import semantic_cache_key

    model = tiny_glia()
    processor = GLIAImageProcessor()
    images = ["a.png", "b.png"]
    key = semantic_cache_key(model, processor, images, "no")
    assert key == semantic_cache_key(tiny_glia(), GLIAImageProcessor(), list(images), "no")  # same inputs, same key
    # GLIA options do not change the backbone's tokens; the backbone's weights and config do.
    assert key == semantic_cache_key(tiny_glia(latent_dim=8), processor, images, "no")
    changed = tiny_glia()
    with torch.no_grad():
        changed.glia.vit.layernorm.weight[0] += 1e-3
    others = [
        semantic_cache_key(changed, processor, images, "no"),
        semantic_cache_key(_other_backbone(), processor, images, "no"),
        semantic_cache_key(model, GLIAImageProcessor(image_mean=[0.485, 0.456, 0.406]), images, "no"),
        semantic_cache_key(model, GLIAImageProcessor(image_std=[0.229, 0.224, 0.225]), images, "no"),
        semantic_cache_key(model, GLIAImageProcessor(resize_short_side=384), images, "no"),
        semantic_cache_key(model, GLIAImageProcessor(resize_short_side=384, resize_resample="bilinear"), images, "no"),
        semantic_cache_key(model, GLIAImageProcessor(image_size=192), images, "no"),
        semantic_cache_key(model, processor, ["a.png", "c.png"], "no"),
        semantic_cache_key(model, processor, ["b.png", "a.png"], "no"),
        semantic_cache_key(model, processor, images, "bf16"),
    ]
    assert len({key, *others}) == len(others) + 1


def _other_backbone():
    from glia_hf import GLIAConfig, GLIAForImageQualityAssessment

    torch.manual_seed(0)
    config = GLIAConfig(backbone_config=tiny_vit_config(layer_norm_eps=1e-6), latent_dim=16, cross_attention_heads=2)
    return GLIAForImageQualityAssessment(config)


@pytest.mark.parametrize("method, glia, expected", [
    ("glia", {}, None),
    ("lora", {}, "lora baseline has no guidance stream"),
    ("linear_probe", {}, "linear_probe baseline has no guidance stream"),
    ("full_finetune", {}, "full_finetune baseline has no guidance stream"),
    ("glia", {"use_lgf": False}, "no GLIA block reads a prior"),
    ("glia", {"guidance_stream": "detail", "main_stream": "semantic"}, "guidance stream is the detail stream"),
])
def test_the_cache_applies_to_glianet_with_a_frozen_semantic_guidance_only(method, glia, expected):
    from glia_hf.methods import build_model
    from training.config import config_from_dict
    from training.data import semantic_cache_reason

    options = {"latent_dim": 16, "cross_attention_heads": 2, **glia} if method == "glia" else {}
    config = config_from_dict({"model": {"method": method, "glia": options}})
    model = build_model(method, tiny_vit_config(), None, **options)
    reason = semantic_cache_reason(config, model)
    assert reason is None if expected is None else expected in reason
    off = config_from_dict({"model": {"method": method, "glia": options}, "data": {"cache_semantic": False}})
    assert semantic_cache_reason(off, model) == "data.cache_semantic is false"
    dropout = build_model("glia", tiny_vit_config(hidden_dropout_prob=0.1), None, latent_dim=16,
                          cross_attention_heads=2)
    assert "dropout" in semantic_cache_reason(config_from_dict({}), dropout)


def test_the_cache_returns_the_encoders_dtype_and_rejects_mismatched_keys():
    from training.data import SemanticCache

    model = tiny_glia()
    pixels = torch.randn(2, 3, 224, 224)
    cache = SemanticCache("bf16", dtype=torch.bfloat16)
    tokens = cache.lookup([0, 1], [0, 0], pixels, model.glia.encode_guidance)
    assert tokens.dtype == torch.float32 and cache.entries[(0, 0)].dtype == torch.bfloat16
    torch.testing.assert_close(tokens, model.glia.encode_guidance(pixels), atol=0.05, rtol=0.01)
    with pytest.raises(ValueError, match="3 cache keys for a batch of 2"):
        cache.lookup([0, 1, 2], [0, 0, 0], pixels, model.glia.encode_guidance)


def test_cache_semantic_is_a_run_control_field():
    """The config field round-trips and may change between an interrupted run and its --resume."""
    from training.config import config_from_dict
    from training.train import RUN_CONTROL_FIELDS

    config = config_from_dict({"data": {"cache_semantic": "false"}})
    assert config.data.cache_semantic is False
    assert json.loads(json.dumps(config.to_dict()))["data"]["cache_semantic"] is False
    assert ("data", "cache_semantic") in RUN_CONTROL_FIELDS


def test_benchmark_smoke_writes_every_row(tmp_path, iqa_csv):  # noqa: F811
    """benchmarks/bench_train.py at the tiny size on 8 images: the JSON has the documented schema and every row name
    (its timings are not asserted)."""
    import importlib.util

    from tests.test_training import REPO_ROOT

    spec = importlib.util.spec_from_file_location("bench_train", REPO_ROOT / "benchmarks" / "bench_train.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    bench.main(["--size", "tiny", "--epoch-images", "8", "--repeats", "1", "--warmup", "0", "--workers", "0",
                "--threads", "1", "--data-csv", str(iqa_csv), "--json", str(out)])
    result = json.loads(out.read_text())
    assert {"device", "dtype", "batch", "rows"} <= set(result) and result["device"] == "cpu"
    assert result["dtype"] == "fp32" and result["batch"] == 4
    names = [row["what"] for row in result["rows"]]
    required = ["plain_forward", "glia_inference", "glia_inference_15_views", "glia_train", "glia_train_cached",
                "lora_train", "adapter_train", "vpt_train", "linear_probe_train", "full_finetune_train", "glia_epoch",
                "glia_epoch_cached", "glia_epoch_cached_3_views", "lora_epoch", "lora_epoch_3_views",
                "semantic_cache_fill", "data_jpeg_1024", "data_png_512", "data_cached"]
    assert set(required) <= set(names) and len(names) == len(set(names))
    by_name = {row["what"]: row for row in result["rows"]}
    for row in result["rows"]:
        assert {"what", "images_per_second", "gflop_per_image", "ratio", "fraction_of_limit",
                "peak_memory_gib"} <= set(row)
        assert row["images_per_second"] > 0 and row["peak_memory_gib"] is None  # no peak memory on the CPU
    for name in ("lora_train", "lora_epoch", "lora_epoch_3_views", "plain_forward"):
        assert by_name[name]["ratio"] == 1.0 and by_name[name]["fraction_of_limit"] == 1.0
    # The multiply-adds: passing the guidance tokens in removes the semantic pass from a GLIANet step.
    assert by_name["glia_train_cached"]["gflop_per_image"] < by_name["glia_train"]["gflop_per_image"]
    assert by_name["glia_epoch_cached"]["comparator"] == "lora_epoch"
    assert by_name["glia_epoch_cached_3_views"]["comparator"] == "lora_epoch_3_views"
    assert by_name["glia_inference"]["fraction_of_limit"] == pytest.approx(
        by_name["glia_inference"]["ratio"] / by_name["glia_inference"]["limit"])
