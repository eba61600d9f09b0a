"""The decoded-image cache of the training loop (`data.cache_images`, training/data/image_cache.py
`DecodedImageCache`): every image decoded and resized once, and its whole-image view made once, into a memory-mapped
`datasets` cache, giving the same pixels and views, so the same batches and the same training as decoding every epoch;
its key changes with the image list, the resize settings and the view's size. And the collators' views against the
image processor's."""

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
    cache = DecodedImageCache.build(cache_root, paths, processor, log=lambda line: None)
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
            assert np.array_equal(a["image"], b["image"]) and a["orientation"] == b["orientation"]
            assert a["view"] is None and b["view"].shape == (3, 224, 224)  # the stored, unflipped whole-image view
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


def test_collated_views_follow_the_processor(tmp_path):
    """The collators make what `GLIAImageProcessor.preprocess` makes, from the uint8 pixels, cached or not: test
    batches and unflipped training batches bit for bit (inference scores are those of the processor and the
    pipeline); a flipped training image has the fragments of the flipped image, bit for bit, and the whole-image view
    flipped after the resize, which differs from the resize of the flipped image (the order before the decoded-image
    cache stored views) by rounding only, under 2e-5 after normalisation."""
    from glia_hf import GLIAImageProcessor
    from training.data import EvalCollator, TrainCollator

    paths = write_images(tmp_path)
    processor = GLIAImageProcessor(resize_short_side=192, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.25])
    plain, cached, _ = datasets_pair(paths, processor, tmp_path / "cache", hflip=0.5, vflip=0.5)
    images = [processor.resize_image(Image.open(path)) for path in paths]
    expected = processor(images, num_samples=2, seed=5)
    for dataset in (plain, cached):
        batch = EvalCollator(processor, num_views=2, seed=5)([dataset[i] for i in range(len(paths))])
        for key in ("pixel_values", "fragment_values"):
            assert torch.equal(batch[key], expected[key]), key
    flips = {1: [Image.Transpose.FLIP_LEFT_RIGHT], 2: [Image.Transpose.FLIP_TOP_BOTTOM],
             3: [Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM]}
    seen = set()
    for seed in range(12):
        for index in range(len(paths)):
            sample = cached[(index, seed)]
            orientation = sample["orientation"]
            seen.add(orientation)
            image = images[index]
            for flip in flips.get(orientation, []):
                image = image.transpose(flip)
            batch = TrainCollator(processor, random_offsets=True)([sample])
            reference = processor([image], random_offsets=True,
                                  generator=torch.Generator().manual_seed(seed % (2**63)))
            assert torch.equal(batch["fragment_values"], reference["fragment_values"])
            unflipped = processor([images[index]])["pixel_values"]
            dims = [dim for bit, dim in ((1, -1), (2, -2)) if orientation & bit]
            assert torch.equal(batch["pixel_values"], torch.flip(unflipped, dims) if dims else unflipped)
            torch.testing.assert_close(batch["pixel_values"], reference["pixel_values"], atol=2e-5, rtol=0)
    assert seen == {0, 1, 2, 3}


def test_a_batch_mixing_small_and_large_images_is_scaled_alike(tmp_path):
    """An image smaller than the fragment grid is upscaled in floats, a large one cut from its uint8 pixels: in one
    batch both come out on the processor's scale (x / 255, then normalised), as `preprocess` makes them."""
    from glia_hf import GLIAImageProcessor
    from training.data import EvalCollator, IQAImageDataset, TrainCollator

    rng = np.random.default_rng(1)
    paths = []
    for name, (height, width) in (("small.png", (120, 150)), ("large.png", (260, 300))):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    processor = GLIAImageProcessor()
    dataset = IQAImageDataset(paths, [1.0, 2.0])
    images = [Image.open(path).convert("RGB") for path in paths]
    batch = EvalCollator(processor, num_views=2, seed=3)([dataset[0], dataset[1]])
    expected = processor(images, num_samples=2, seed=3)
    for key in ("pixel_values", "fragment_values"):
        assert torch.equal(batch[key], expected[key]), key
    for small_first in (True, False):
        samples = [dataset[(0, 11)], dataset[(1, 11)]][:: 1 if small_first else -1]
        mixed = TrainCollator(processor, random_offsets=False)(samples)["fragment_values"]
        alone = [TrainCollator(processor, random_offsets=False)([sample])["fragment_values"][0] for sample in samples]
        assert torch.equal(mixed, torch.stack(alone))


def test_the_key_changes_with_images_and_resize_settings(tmp_path):
    """A different image list, order, short side, filter or a file rewritten under the same name gets a new cache
    folder, never the old arrays; the same inputs reuse the folder without decoding again."""
    from glia_hf import GLIAImageProcessor
    from training.data import DecodedImageCache, decoded_cache_key

    paths = write_images(tmp_path)
    key = decoded_cache_key(paths, 192, "bicubic", 224)
    assert decoded_cache_key(list(paths), 192, "bicubic", 224) == key
    others = {decoded_cache_key(paths[:-1], 192, "bicubic", 224), decoded_cache_key(paths[::-1], 192, "bicubic", 224),
              decoded_cache_key(paths, 224, "bicubic", 224), decoded_cache_key(paths, 192, "bilinear", 224),
              decoded_cache_key(paths, None, "bicubic", 224), decoded_cache_key(paths, 192, "bicubic", 384)}
    assert key not in others and len(others) == 6

    processor = GLIAImageProcessor(resize_short_side=192)
    build = lambda: DecodedImageCache.build(tmp_path / "cache", paths, processor, log=lambda line: None)  # noqa
    first = build()
    stamp = os.stat(first.folder).st_mtime_ns
    assert build().folder == first.folder and os.stat(first.folder).st_mtime_ns == stamp  # reused
    # The same file name with new content (and a new size): a new key, and the new pixels are served.
    Image.new("RGB", (300, 200), (255, 0, 0)).save(paths[0])
    second = build()
    assert second.folder != first.folder
    assert np.array_equal(second.array(paths[0]), np.asarray(processor.resize_image(Image.open(paths[0]))))
    from training.data import unit_float

    assert np.array_equal(second.view(paths[0]), processor.whole_image_view(unit_float(second.array(paths[0]))))
    with pytest.raises(ValueError, match="decoded-image cache with the collator's processor"):
        from training.data import IQAImageDataset, TrainCollator

        other = GLIAImageProcessor(resize_short_side=192, image_size=112)
        TrainCollator(other, True)([IQAImageDataset(paths, [1.0] * 5, decoded=second)[(0, 1)]])
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
    plain slice-by-slice loop cuts, for every dtype, a broadcast (grey) image, a tensor that needs gradients and a
    strided NumPy view."""
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
    # A NumPy view of any strides (a flipped (H, W, C) array seen channels-first, as the collators pass it).
    pixels = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    flipped = pixels[::-1, ::-1].transpose(2, 0, 1)
    tiled = tile_fragments(flipped, rows, cols, fragment)
    assert isinstance(tiled, torch.Tensor) and tiled.dtype == torch.uint8
    assert torch.equal(tiled, reference(torch.from_numpy(flipped.copy()), rows, cols, *fragment))
