"""The semantic cache of the training loop (`data.cache_semantic`, training/data/semantic_cache.py `SemanticCache`): the frozen
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
    """The dataset reports each sample's orientation and the collator flips the views so; the cache keeps one entry
    per orientation, each equal to the backbone's tokens of that flipped view."""
    from glia_hf import GLIAImageProcessor
    from training.data import ORIENTATIONS, IQAImageDataset, SemanticCache, TrainCollator

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
    original = np.asarray(Image.open(path))
    assert all(np.array_equal(sample["image"], original) for sample in samples.values())  # flipped by the collator
    assert dataset[0]["orientation"] == 0  # test items (no draw seed) are never flipped

    model = tiny_glia()
    processor = GLIAImageProcessor(grid_size=(2, 2), fragment_size=(32, 32))
    cache = SemanticCache("test")
    pixels = TrainCollator(processor, random_offsets=True)([samples[o] for o in range(4)])["pixel_values"]
    torch.testing.assert_close(pixels[1], pixels[0].flip(-1), atol=0, rtol=0)
    torch.testing.assert_close(pixels[2], pixels[0].flip(-2), atol=0, rtol=0)
    torch.testing.assert_close(pixels[3], pixels[0].flip(-1, -2), atol=0, rtol=0)
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
    assert by_name["glia_epoch_cached_bf16_disk"]["comparator"] == "lora_epoch"
    assert by_name["glia_epoch_cached_3_views"]["comparator"] == "lora_epoch_3_views"
    assert by_name["glia_inference"]["fraction_of_limit"] == pytest.approx(
        by_name["glia_inference"]["ratio"] / by_name["glia_inference"]["limit"])


# ===================================================================== bf16 / on-disk cache (data.semantic_cache_*)

def test_a_disk_cache_holds_the_memory_caches_tokens_and_is_reused_by_a_later_run(tmp_path):
    """An fp32 cache on disk stores exactly what the in-memory cache stores; a new cache object on the same folder
    and key (a later run) reads every entry without encoding; a bf16 cache on disk stores the bf16-rounded tokens."""
    from training.data import DiskSemanticCache, SemanticCache

    model = tiny_glia()
    pixels = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    ids, orientations = [0, 1, 1, 3], [0, 0, 2, 1]
    memory = SemanticCache("k")
    expected = memory.lookup(ids, orientations, pixels, model.glia.encode_guidance)
    disk = DiskSemanticCache("k", tmp_path, num_images=4)
    assert len(disk) == 0 and (1, 2) not in disk
    torch.testing.assert_close(disk.lookup(ids, orientations, pixels, model.glia.encode_guidance), expected,
                               atol=0, rtol=0)
    assert (len(disk), disk.misses, disk.hits, disk.nbytes) == (4, 4, 0, 4 * 197 * 32 * 4)
    assert (1, 2) in disk and (1, 1) not in disk
    assert torch.equal(disk.tokens(1, 2), memory.tokens(1, 2))

    def refuse(pixel_values):
        raise AssertionError("a filled disk cache must not encode")

    later = DiskSemanticCache("k", tmp_path, num_images=4)
    assert later.folder == disk.folder and len(later) == 4
    torch.testing.assert_close(later.lookup(ids[::-1], orientations[::-1], pixels.flip(0), refuse), expected.flip(0),
                               atol=0, rtol=0)
    assert (later.misses, later.hits) == (0, 4)

    half = DiskSemanticCache("k", tmp_path, num_images=4, dtype=torch.bfloat16)
    assert half.folder != disk.folder and len(half) == 0  # the dtype names the folder
    tokens = half.lookup(ids, orientations, pixels, model.glia.encode_guidance)
    assert tokens.dtype == torch.float32 and half.tokens(0, 0).dtype == torch.bfloat16
    assert half.nbytes == 4 * 197 * 32 * 2
    torch.testing.assert_close(tokens, expected.to(torch.bfloat16).float(), atol=0, rtol=0)
    reread = DiskSemanticCache("k", tmp_path, num_images=4, dtype=torch.bfloat16).lookup(ids, orientations, pixels,
                                                                                         refuse)
    assert reread.dtype == torch.float32 and torch.equal(reread, tokens)  # the encoder's dtype, kept in meta.json
    with pytest.raises(ValueError, match=r"\(image 4, orientation 0\) outside the 4 images x 4 orientations"):
        disk.lookup([4], [0], pixels[:1], model.glia.encode_guidance)


def test_every_change_of_key_or_dtype_gets_its_own_disk_folder(tmp_path):
    """A different backbone, processor setting, image list, precision or storage dtype misses: it gets a new, empty
    folder, never the tokens of another (the key of each is tested above, in
    test_the_key_changes_with_backbone_processor_images_and_precision)."""
    from glia_hf import GLIAImageProcessor
    from training.data import DiskSemanticCache, semantic_cache_key

    model, processor, images = tiny_glia(), GLIAImageProcessor(), ["a.png", "b.png"]
    changed = tiny_glia()
    with torch.no_grad():
        changed.glia.vit.layernorm.weight[0] += 1e-3
    keys = [semantic_cache_key(model, processor, images, "no"), semantic_cache_key(changed, processor, images, "no"),
            semantic_cache_key(model, GLIAImageProcessor(resize_short_side=384), images, "no"),
            semantic_cache_key(model, processor, images[::-1], "no"),
            semantic_cache_key(model, processor, images, "bf16")]
    pixels = torch.randn(1, 3, 224, 224)
    folders = set()
    for key in keys:
        for dtype in (torch.float32, torch.bfloat16):
            cache = DiskSemanticCache(key, tmp_path, num_images=2, dtype=dtype)
            assert len(cache) == 0
            cache.lookup([0], [0], pixels, model.glia.encode_guidance)
            assert (cache.misses, len(cache)) == (1, 1)
            folders.add(cache.folder)
    assert len(folders) == len(keys) * 2
    # A folder whose meta.json names another image count is refused, not read.
    import json

    meta = json.loads((cache.folder / "meta.json").read_text())
    meta["rows"] = 4 * 3
    (cache.folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(RuntimeError, match="delete the folder and run again"):
        DiskSemanticCache(keys[-1], tmp_path, num_images=2, dtype=torch.bfloat16).lookup(
            [0], [0], pixels, model.glia.encode_guidance)


_FILL_SCRIPT = r"""
import sys, time, torch
from training.data import DiskSemanticCache

root, rank, dtype = sys.argv[1], int(sys.argv[2]), getattr(torch, sys.argv[3])
def tokens_of(pixel_values):  # deterministic per (image, orientation), slow enough for the two ranks to overlap
    time.sleep(0.02)
    return pixel_values[:, :1, :5, :8].reshape(len(pixel_values), 5, 8) * torch.arange(8.0)

cache = DiskSemanticCache("shared", root, num_images=12, dtype=dtype)
open(f"{root}.ready-{rank}", "w").close()  # start together: wait for the other rank
while not all(__import__("os").path.exists(f"{root}.ready-{r}") for r in (0, 1)):
    time.sleep(0.01)
keys = [(image, orientation) for image in range(12) for orientation in range(4)]
keys = keys if rank == 0 else keys[::-1]  # the ranks meet in the middle and overlap there
for start in range(0, len(keys), 6):
    batch = keys[start:start + 6]
    pixels = torch.stack([torch.full((3, 5, 8), 1.0 + image + orientation / 8) for image, orientation in batch])
    got = cache.lookup([k[0] for k in batch], [k[1] for k in batch], pixels, tokens_of)
    torch.testing.assert_close(got, tokens_of(pixels).to(dtype).float(), atol=0, rtol=0)
print(cache.misses, cache.hits, len(cache))
"""


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_two_processes_fill_and_read_one_disk_cache(tmp_path, dtype):
    """Two training processes (as Accelerate's two ranks, no DataLoader) fill the same folder at once, in opposite
    orders: each reads the right tokens for every entry, the files hold all 48 entries once, and a third process
    afterwards encodes nothing."""
    import os
    import subprocess
    import sys

    from tests.test_training import REPO_ROOT
    from training.data import DiskSemanticCache

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    script = tmp_path / "fill.py"
    script.write_text(_FILL_SCRIPT)
    ranks = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache"), str(rank), dtype], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [rank.communicate(timeout=120) for rank in ranks]
    for rank, (out, err) in zip(ranks, outputs):
        assert rank.returncode == 0, err
    counts = [tuple(map(int, out.split())) for out, _ in outputs]
    assert all(misses + hits == 48 and held == 48 for misses, hits, held in counts)
    assert sum(misses for misses, _, _ in counts) >= 48  # every entry computed by at least one rank

    cache = DiskSemanticCache("shared", tmp_path / "cache", num_images=12, dtype=getattr(torch, dtype))
    assert len(cache) == 48
    for image in (0, 5, 11):
        for orientation in range(4):
            value = 1.0 + image + orientation / 8
            expected = (torch.full((5, 8), value) * torch.arange(8.0)).to(cache.dtype)
            assert torch.equal(cache.tokens(image, orientation), expected)


def test_the_config_picks_the_cache(tmp_path):
    from training.config import ConfigError, config_from_dict
    from training.data import DiskSemanticCache, SemanticCache

    memory = SemanticCache.from_config("k", config_from_dict({}), 3)
    assert type(memory) is SemanticCache and memory.dtype == torch.float32
    assert memory.storage == "kept in host memory, float32"
    half = SemanticCache.from_config("k", config_from_dict({"data": {"semantic_cache_dtype": "bf16"}}), 3)
    assert type(half) is SemanticCache and half.dtype == torch.bfloat16
    disk = SemanticCache.from_config("k", config_from_dict({"data": {"semantic_cache_dtype": "bf16",
                                                                     "semantic_cache_dir": str(tmp_path)}}), 3)
    assert isinstance(disk, DiskSemanticCache) and disk.dtype == torch.bfloat16 and disk.num_images == 3
    assert disk.folder.parent == tmp_path and "memory-mapped" in disk.storage
    with pytest.raises(ConfigError, match=r"data.semantic_cache_dtype must be one of \['fp32', 'bf16'\], got 'fp16'"):
        config_from_dict({"data": {"semantic_cache_dtype": "fp16"}})


#: How far a bf16 cache may move the tiny model's per-step training loss from the fp32 cache's over two epochs
#: (bf16 keeps 8 bits of mantissa: a relative rounding of at most 2**-9 per token). Measured on this test's 16 steps:
#: at most 3.3e-7 (the tiny random model's loss barely depends on the guidance); 30x headroom.
BF16_LOSS_ATOL = 1e-5


def test_training_with_a_bf16_disk_cache_stays_near_fp32_and_a_later_run_reuses_it(tmp_path, iqa_csv, capsys):  # noqa: F811
    """Two epochs, flips both ways: every step's loss with a bf16 cache on disk is within BF16_LOSS_ATOL of the fp32
    in-memory cache's; a second run on the same folder computes no token and gives the same losses, bit for bit."""
    from training.train import main

    def run(name, **data):
        config = write_config(
            tmp_path, iqa_csv, data={"train_views": 2, **data}, optim={"epochs": 2, "batch_size": 4},
            augmentation={"hflip": 0.5, "vflip": 0.5},
            output={"dir": str(tmp_path / name), "log_every": 1, "trackers": ["csv"], "plots": False,
                    "save_model": False},
        )
        capsys.readouterr()
        payload = main(["--config", str(config)])
        out = capsys.readouterr().out
        line = next(line for line in out.splitlines() if "semantic cache holds" in line)
        return payload, [v for _, v in step_losses(tmp_path / name)], out, line

    folder = str(tmp_path / "tokens")
    _, fp32, _, _ = run("fp32")
    first, bf16, out, held = run("bf16", semantic_cache_dtype="bf16", semantic_cache_dir=folder)
    assert f"memory-mapped in {folder}/semantic-" in out and "bfloat16" in out
    assert len(bf16) == len(fp32) == 16
    difference = np.abs(np.asarray(bf16) - np.asarray(fp32))
    assert 0 < difference.max() <= BF16_LOSS_ATOL, difference.max()
    second, again, _, held_again = run("bf16-again", semantic_cache_dtype="bf16", semantic_cache_dir=folder)
    assert held_again.endswith(" 0 computed") and not held.endswith(" 0 computed")
    assert again == bf16
    assert second["splits"][0]["srcc"] == first["splits"][0]["srcc"]
