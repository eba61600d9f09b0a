"""The decoded-image cache of the training loop (`data.cache_images`, training/data.py `DecodedImageCache`): every
image decoded and resized once into a memory-mapped `datasets` cache, giving the same pixels, so the same batches
and the same training as decoding every epoch; its key changes with the image list and the resize settings."""

import csv
import os

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_training import fresh_accelerate_state, iqa_csv, one_thread, write_config  # noqa: F401 (fixtures)


def write_images(folder):
    """Photos of different shapes and kinds: landscape and portrait JPEG, a grayscale PNG, an RGBA PNG and a JPEG
    whose EXIF orientation turns it upright (the decode must apply it before the resize)."""
    rng = np.random.default_rng(0)
    paths = []

    def smooth(height, width, channels=3):
        shape = (6, 6, channels) if channels > 1 else (6, 6)
        return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).resize((width, height), Image.BICUBIC)

    for name, image in (("wide.jpg", smooth(150, 260)), ("tall.jpg", smooth(300, 180)),
                        ("gray.png", smooth(200, 240, 1)), ("alpha.png", smooth(210, 250, 4))):
        image.save(folder / name)
        paths.append(str(folder / name))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    smooth(160, 230).save(folder / "rotated.jpg", exif=exif)
    paths.append(str(folder / "rotated.jpg"))
    return paths


def datasets_pair(paths, processor, cache_root, **flips):
    from training.data import DecodedImageCache, IQAImageDataset

    mos = [float(i) for i in range(len(paths))]
    cache = DecodedImageCache.build(cache_root, paths, processor.resize_image, processor.resize_short_side,
                                    processor.resize_resample, log=lambda line: None)
    plain = IQAImageDataset(paths, mos, resize=processor.resize_image, **flips)
    cached = IQAImageDataset(paths, mos, resize=processor.resize_image, decoded=cache, **flips)
    return plain, cached, cache


@pytest.mark.parametrize("short_side", [None, 192])
def test_cached_batches_equal_decoded_batches(tmp_path, short_side):
    """Training batches (random flips both ways, random fragment offsets) and test batches (3 views) collated from
    the cache equal, bit for bit, the ones collated from images decoded on the spot, at native and resized size."""
    from glia_hf import GLIAImageProcessor
    from training.data import EvalCollator, TrainCollator

    paths = write_images(tmp_path)
    processor = GLIAImageProcessor(resize_short_side=short_side)
    plain, cached, cache = datasets_pair(paths, processor, tmp_path / "cache", hflip=0.5, vflip=0.5)
    assert len(cache) == len(paths)
    # The EXIF-rotated 230x160 JPEG is stored upright: 160 wide, 230 tall before the resize.
    upright = cache.array(paths[-1])
    assert upright.shape[0] > upright.shape[1] and upright.dtype == np.uint8
    orientations = set()
    train, evaluate = TrainCollator(processor, random_offsets=True), EvalCollator(processor, num_views=3, seed=7)
    for seed in range(6):
        items = [(index, seed * 100 + index) for index in range(len(paths))]
        samples_plain, samples_cached = [plain[i] for i in items], [cached[i] for i in items]
        orientations |= {s["orientation"] for s in samples_cached}
        for a, b in zip(samples_plain, samples_cached):
            assert np.array_equal(np.asarray(a["image"]), np.asarray(b["image"]))
        batch_plain, batch_cached = train(samples_plain), train(samples_cached)
        for key in ("pixel_values", "fragment_values", "labels", "index"):
            assert torch.equal(batch_plain[key], batch_cached[key]), key
        assert batch_plain["orientation"] == batch_cached["orientation"]
    assert orientations == {0, 1, 2, 3}  # every flip combination was compared
    test_plain = evaluate([plain[i] for i in range(len(paths))])
    test_cached = evaluate([cached[i] for i in range(len(paths))])
    assert test_cached["fragment_values"].shape[1] == 3
    for key in ("pixel_values", "fragment_values"):
        assert torch.equal(test_plain[key], test_cached[key]), key


def test_the_key_changes_with_images_and_resize_settings(tmp_path):
    """A different image list, order, short side, filter or a file rewritten under the same name gets a new cache
    folder, never the old arrays; the same inputs reuse the folder without decoding again."""
    from glia_hf import GLIAImageProcessor
    from training.data import DecodedImageCache, decoded_cache_key

    paths = write_images(tmp_path)
    key = decoded_cache_key(paths, 192, "bicubic")
    assert decoded_cache_key(list(paths), 192, "bicubic") == key
    others = {decoded_cache_key(paths[:-1], 192, "bicubic"), decoded_cache_key(paths[::-1], 192, "bicubic"),
              decoded_cache_key(paths, 224, "bicubic"), decoded_cache_key(paths, 192, "bilinear"),
              decoded_cache_key(paths, None, "bicubic")}
    assert key not in others and len(others) == 5

    processor = GLIAImageProcessor(resize_short_side=192)
    build = lambda: DecodedImageCache.build(tmp_path / "cache", paths, processor.resize_image, 192, "bicubic",  # noqa
                                            log=lambda line: None)
    first = build()
    stamp = os.stat(first.folder).st_mtime_ns
    assert build().folder == first.folder and os.stat(first.folder).st_mtime_ns == stamp  # reused
    # The same file name with new content (and a new size): a new key, and the new pixels are served.
    Image.new("RGB", (300, 200), (255, 0, 0)).save(paths[0])
    second = build()
    assert second.folder != first.folder
    assert np.array_equal(second.array(paths[0]), np.asarray(processor.resize_image(Image.open(paths[0]))))
    assert second.array(str(tmp_path / "elsewhere.jpg")) is None  # not held: the dataset decodes it itself


def test_workers_read_the_mapped_cache(tmp_path):
    """A DataLoader with two worker processes reads the same pixels from the cache as the main process."""
    from torch.utils.data import DataLoader

    from glia_hf import GLIAImageProcessor
    from training.data import TrainCollator, _worker_init

    paths = write_images(tmp_path)
    processor = GLIAImageProcessor(resize_short_side=192)
    plain, cached, _ = datasets_pair(paths, processor, tmp_path / "cache", hflip=0.5)
    items = [(i, 11 + i) for i in range(len(paths))]
    collate = TrainCollator(processor, random_offsets=True)
    loader = DataLoader(cached, batch_size=1, sampler=items, collate_fn=collate, num_workers=2,
                        worker_init_fn=_worker_init)
    for item, batch in zip(items, loader):
        expected = collate([plain[item]])
        assert torch.equal(batch["fragment_values"], expected["fragment_values"])
        assert torch.equal(batch["pixel_values"], expected["pixel_values"])


def step_losses(run_dir):
    with open(run_dir / "logs" / "metrics.csv", newline="") as handle:
        return [(int(r["step"]), float(r["value"])) for r in csv.DictReader(handle)
                if r["name"] == "split-0/train/loss"]


def test_training_with_the_image_cache_equals_training_without_it(tmp_path, iqa_csv, capsys):  # noqa: F811
    """Two epochs at a 192 px short side with random flips: every step's loss and every test score agree within
    1e-6 with `data.cache_images` on and off, and the cache is built once, under the run's folder."""
    from training.train import main

    payloads = {}
    for cached in (False, True):
        config = write_config(
            tmp_path, iqa_csv, data={"cache_images": cached, "resize_short_side": 192},
            optim={"epochs": 2, "batch_size": 4}, augmentation={"hflip": 0.5, "vflip": 0.5},
            output={"dir": str(tmp_path / f"run-{cached}"), "log_every": 1, "trackers": ["csv"], "plots": False,
                    "save_model": False},
        )
        capsys.readouterr()
        payloads[cached] = main(["--config", str(config)])
        out = capsys.readouterr().out
        assert ("decoded-image cache: 20 images decoded once" in out) == cached
    run = tmp_path / "run-True"
    assert len(list(run.rglob("image-cache/decoded-*"))) == 1
    losses_plain, losses_cached = step_losses(tmp_path / "run-False"), step_losses(run)
    assert len(losses_plain) == len(losses_cached) > 4
    np.testing.assert_allclose([v for _, v in losses_cached], [v for _, v in losses_plain], atol=1e-6, rtol=0)
    for key in ("srcc", "plcc", "krcc"):
        assert payloads[True]["splits"][0][key] == pytest.approx(payloads[False]["splits"][0][key], abs=1e-6)


def test_cache_images_is_a_run_control_field():
    """Caching decoded images changes how a run is carried out, not what it computes: `--resume` may switch it."""
    from training.config import EXECUTION_FIELDS

    assert ("data", "cache_images") in EXECUTION_FIELDS and ("data", "image_cache_dir") in EXECUTION_FIELDS


def test_tiled_fragments_are_the_slices_of_the_image():
    """tile_fragments (NumPy slices on the CPU, torch's elsewhere or with autograd) copies exactly the fragments a
    plain slice-by-slice loop cuts, for every dtype, a broadcast (grey) image and a tensor that needs gradients."""
    from glia_hf.fragment_sampling import fragment_offsets, tile_fragments

    def reference(image, rows, cols, fh, fw):
        return torch.cat([torch.cat([image[:, top:top + fh, left:left + fw] for top, left in zip(r, c)], dim=2)
                          for r, c in zip(rows.tolist(), cols.tolist())], dim=1)

    generator = torch.Generator().manual_seed(0)
    grey = torch.rand(1, 70, 90, generator=generator).expand(3, -1, -1)
    images = [torch.rand(3, 96, 128, generator=generator), torch.rand(3, 96, 128, dtype=torch.float64),
              torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8), torch.rand(3, 96, 128).bfloat16(), grey,
              torch.rand(3, 96, 128, requires_grad=True)]
    for image in images:
        for grid, fragment in (((3, 4), (16, 16)), ((2, 3), (20, 12))):
            rows, cols = fragment_offsets(*image.shape[-2:], grid, fragment, random=True, generator=generator)
            tiled = tile_fragments(image, rows, cols, fragment)
            assert tiled.dtype == image.dtype and tiled.shape == (3, grid[0] * fragment[0], grid[1] * fragment[1])
            assert torch.equal(tiled, reference(image, rows, cols, *fragment))
    assert tile_fragments(images[-1], rows, cols, fragment).requires_grad
