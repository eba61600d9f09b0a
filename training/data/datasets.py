"""The datasets, the epoch sampler, the collators and the workers' set-up of the training data path."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from glia_hf import GLIAImageProcessor
from glia_hf.data import load_image

if TYPE_CHECKING:
    from training.data.image_cache import DecodedImageCache

#: An image's orientation in training: 0 as stored, 1 flipped left-right, 2 flipped top-bottom, 3 both
#: (``hflip + 2 * vflip``). Test images are always 0.
ORIENTATIONS = ("none", "horizontal", "vertical", "both")


class EpochSampler(Sampler):
    """Shuffles the training samples with a generator seeded by ``(seed, split, epoch)`` and gives every sample its
    own augmentation seed.

    An epoch holds ``views`` samples of each of the ``num_rows`` training rows (``data.train_views``, LoDa's
    ``train.patch_num``): sample ``s`` of ``num_rows * views`` is a view of row ``s // views`` (LoDa's layout, each
    image repeated ``views`` times), and all samples are shuffled together, so the views of an image land in
    different batches and each gets its own flips and fragment offsets. It yields ``(row, draw_seed)`` pairs. The
    order and the seeds depend on nothing but the run seed, the split and the epoch, never on earlier epochs,
    workers or a previous process: a run resumed at an epoch boundary sees exactly the batches and augmentations of
    an uninterrupted one; with ``views == 1`` the order is the one of runs made before ``views`` existed. Accelerate's
    prepared loader calls :meth:`set_epoch` (through ``loader.set_epoch``) and shards the batches across processes.
    """

    def __init__(self, num_rows: int, seed: int, split: int, views: int = 1):
        if views < 1:
            raise ValueError(f"views must be a positive integer, got {views}")
        self.num_rows, self.seed, self.split, self.views, self.epoch = num_rows, seed, split, int(views), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_rows * self.views

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.split, self.epoch])
        order = rng.permutation(len(self))
        draw_seeds = rng.integers(0, 2**62, size=len(self))
        return iter(zip((order // self.views).tolist(), draw_seeds.tolist()))


class IQAImageDataset(Dataset):
    """Rows of an IQA ``datasets.Dataset`` as loaded images, with the random flips of training.

    Items are dicts with ``image`` (8-bit RGB PIL image from :func:`glia_hf.data.load_image`, which raises an
    error naming the file when it cannot be read), ``mos`` (on the data set's scale), ``index`` (position in this
    dataset), ``draw_seed``, ``image_id`` (the image's id in the semantic cache: ``ids[index]``, by default
    ``index``; the trainer passes the row in the whole data set, so that a split's training and test images share one
    cache) and ``orientation`` (its flips, see :data:`ORIENTATIONS`). Training items are requested as
    ``(index, draw_seed)`` pairs (see :class:`EpochSampler`); the flips are drawn from a generator seeded with
    ``draw_seed``.

    ``resize`` (the processor's :meth:`~glia_hf.GLIAImageProcessor.resize_image`, i.e. ``data.resize_short_side``)
    is applied right after decoding, before the flips, as LoDa flips its pre-resized copies; it runs in the loader's
    workers, and the processor's own call of it in the collator then finds the size already right and does nothing.

    ``decoded`` (a :class:`DecodedImageCache` built with the same ``resize``, ``data.cache_images``) replaces the
    decode and the resize by a read of the stored pixels, the same ones; paths it does not hold are decoded.
    """

    def __init__(self, paths: Sequence[str], mos: Sequence[float], hflip: float = 0.0, vflip: float = 0.0,
                 resize: Optional[Callable] = None, ids: Optional[Sequence[int]] = None,
                 decoded: Optional["DecodedImageCache"] = None):
        self.paths, self.mos = list(paths), [float(m) for m in mos]
        self.hflip, self.vflip, self.resize, self.decoded = hflip, vflip, resize, decoded
        self.ids = list(range(len(self.paths))) if ids is None else [int(i) for i in ids]
        if len(self.ids) != len(self.paths):
            raise ValueError(f"{len(self.ids)} image ids for {len(self.paths)} images")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item):
        index, draw_seed = item if isinstance(item, tuple) else (item, None)
        image = self.decoded.get(self.paths[index]) if self.decoded is not None else None
        if image is None:
            image = load_image(self.paths[index])
            if self.resize is not None:
                image = self.resize(image)
        orientation = 0
        if draw_seed is not None and (self.hflip or self.vflip):
            flip_h, flip_v = np.random.default_rng(draw_seed).random(2)
            if flip_h < self.hflip:
                image = image.transpose(0)  # Image.Transpose.FLIP_LEFT_RIGHT
                orientation += 1
            if flip_v < self.vflip:
                image = image.transpose(1)  # Image.Transpose.FLIP_TOP_BOTTOM
                orientation += 2
        return {"image": image, "mos": self.mos[index], "index": index, "draw_seed": draw_seed,
                "image_id": self.ids[index], "orientation": orientation}


class TrainCollator:
    """Stacks a training batch: the image processor with random fragment offsets drawn from a generator seeded
    from the batch's first sample (so the draws follow the run seed, whatever process or worker builds the batch)."""

    def __init__(self, processor: GLIAImageProcessor, random_offsets: bool):
        self.processor, self.random_offsets = processor, random_offsets

    def __call__(self, samples: List[dict]) -> Dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(int(samples[0]["draw_seed"]) % (2**63))
        features = self.processor(
            [s["image"] for s in samples], random_offsets=self.random_offsets, generator=generator
        )
        return _batch(features, samples)


class EvalCollator:
    """Stacks a test batch: ``num_views`` fragment draws per image under a fixed seed (same views for an image in
    any batch), shape ``(B, K, 3, h, w)``; the model averages the views' scores."""

    def __init__(self, processor: GLIAImageProcessor, num_views: int, seed: int):
        self.processor, self.num_views, self.seed = processor, num_views, seed

    def __call__(self, samples: List[dict]) -> Dict[str, torch.Tensor]:
        features = self.processor([s["image"] for s in samples], num_samples=self.num_views, seed=self.seed)
        return _batch(features, samples)


def _batch(features, samples) -> Dict[str, torch.Tensor]:
    return {
        "pixel_values": features["pixel_values"],
        "fragment_values": features["fragment_values"],
        "labels": torch.tensor([s["mos"] for s in samples], dtype=torch.float32),
        "index": torch.tensor([s["index"] for s in samples], dtype=torch.long),
        # Plain integers, not tensors: Accelerate leaves them on the host, so that the semantic cache's look-up
        # in the training step never waits for the device.
        "image_id": [int(s["image_id"]) for s in samples],
        "orientation": [int(s["orientation"]) for s in samples],
    }


def _worker_init(worker_id: int) -> None:
    # Workers draw nothing from the global RNGs (all randomness is seeded per sample), but keep them apart anyway.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
