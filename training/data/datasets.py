"""The datasets, the epoch sampler, the collators and the workers' set-up of the training data path."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from PIL import Image

from glia_hf import GLIAImageProcessor
from glia_hf.data import load_image
from glia_hf.fragment_sampling import fits_grid, sample_fragments
from glia_hf.image_processing_glia import short_side_size
from training.data.image_cache import unit_float

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
    """Rows of an IQA ``datasets.Dataset`` as loaded images, with the random flips of training drawn.

    Items are dicts with ``image`` (the ``(H, W, 3)`` uint8 array of the 8-bit RGB image from
    :func:`glia_hf.data.load_image`, which raises an error naming the file when it cannot be read; as stored, never
    flipped), ``view`` (its stored whole-image view, see below, or ``None``), ``mos`` (on the data set's scale),
    ``index`` (position in this dataset), ``draw_seed``, ``image_id`` (the image's id in the semantic cache:
    ``ids[index]``, by default ``index``; the trainer passes the row in the whole data set, so that a split's
    training and test images share one cache) and ``orientation`` (the flips the collator applies, see
    :data:`ORIENTATIONS`). Training items are requested as ``(index, draw_seed)`` pairs (see :class:`EpochSampler`);
    the flips are drawn from a generator seeded with ``draw_seed``.

    ``resize`` (the processor's :meth:`~glia_hf.GLIAImageProcessor.resize_image`, i.e. ``data.resize_short_side``)
    is applied right after decoding, as LoDa flips its pre-resized copies; it runs in the loader's workers.

    ``decoded`` (a :class:`DecodedImageCache` built for the collator's processor, ``data.cache_images``) replaces the
    decode and the resize by a read of the stored pixels, the same ones, and supplies the stored whole-image view;
    paths it does not hold are decoded.
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
        path = self.paths[index]
        image = self.decoded.array(path) if self.decoded is not None else None
        view = self.decoded.view(path) if image is not None else None
        if image is None:
            decoded = load_image(path)
            image = np.asarray(self.resize(decoded) if self.resize is not None else decoded)
        orientation = 0
        if draw_seed is not None and (self.hflip or self.vflip):
            flip_h, flip_v = np.random.default_rng(draw_seed).random(2)
            orientation = int(flip_h < self.hflip) + 2 * int(flip_v < self.vflip)
        return {"image": image, "view": view, "mos": self.mos[index], "index": index, "draw_seed": draw_seed,
                "image_id": self.ids[index], "orientation": orientation}


class TrainCollator:
    """Stacks a training batch (:func:`collate_views`), the fragment offsets drawn at random (``random_offsets``)
    from a generator seeded from the batch's first sample, so that the draws follow the run seed, whatever process
    or worker builds the batch."""

    def __init__(self, processor: GLIAImageProcessor, random_offsets: bool):
        self.processor, self.random_offsets = processor, random_offsets

    def __call__(self, samples: List[dict]) -> Dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(int(samples[0]["draw_seed"]) % (2**63))
        return collate_views(self.processor, samples, self.random_offsets, lambda: generator)


class EvalCollator:
    """Stacks a test batch (:func:`collate_views`): ``num_views`` fragment draws per image from a generator seeded
    with ``seed`` per image (the same views for an image in any batch, and the ones ``processor(images,
    num_samples=num_views, seed=seed)`` makes, bit for bit), shape ``(B, K, 3, h, w)``; the model averages the
    views' scores."""

    def __init__(self, processor: GLIAImageProcessor, num_views: int, seed: int):
        self.processor, self.num_views, self.seed = processor, num_views, seed

    def __call__(self, samples: List[dict]) -> Dict[str, torch.Tensor]:
        return collate_views(self.processor, samples, True, lambda: torch.Generator().manual_seed(self.seed),
                             self.num_views)


def collate_views(processor: GLIAImageProcessor, samples: List[dict], random_offsets: bool,
                  generator: Callable[[], torch.Generator], num_views: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Both views of every sample of a batch (see :class:`IQAImageDataset` for the items), stacked and normalised.

    Per sample: the whole-image view (the stored one, or the processor's
    :meth:`~glia_hf.GLIAImageProcessor.whole_image_view` of the image) is flipped as ``orientation`` says; the
    fragments are cut (:func:`~glia_hf.fragment_sampling.sample_fragments`, offsets drawn from ``generator()``, called
    once per sample) from the image flipped the same way. A training view is thus *resize, then flip*: flips of the
    224 px view cost a copy, while the image itself stays uint8 and is never copied whole (its flips are NumPy
    views). Fragments are cut from the uint8 pixels and turned into floats per sample, the same values the
    processor computes (``x / 255``, then the normalisation); without flips the batch equals
    :meth:`~glia_hf.GLIAImageProcessor.preprocess`'s bit for bit. ``num_views``: ``K`` fragment draws per sample,
    ``fragment_values`` of shape ``(B, K, 3, h, w)``.
    """
    size = processor.image_size
    grid, fragment = processor.grid_size, processor.fragment_size
    views, fragments = [], []
    for sample in samples:
        image, stored, orientation = sample["image"], sample.get("view"), int(sample["orientation"])
        if processor.resize_short_side is not None:
            height, width = image.shape[:2]
            if short_side_size(width, height, processor.resize_short_side) != (width, height):
                image = np.asarray(processor.resize_image(Image.fromarray(image, "RGB")))
                stored = None
        if stored is not None:
            if stored.shape[-1] != size:
                raise ValueError(f"a stored whole-image view of {stored.shape[-1]} px for a processor of {size} px: "
                                 "build the decoded-image cache with the collator's processor")
            view = stored[..., ::-1] if orientation & 1 else stored
            views.append(torch.from_numpy(np.array(view[..., ::-1, :] if orientation & 2 else view)))
        else:
            view = processor.whole_image_view(unit_float(image))
            flips = [dim for bit, dim in ((1, -1), (2, -2)) if orientation & bit]
            views.append(torch.flip(view, flips) if flips else view)
        flipped = image[:, ::-1] if orientation & 1 else image
        flipped = flipped[::-1] if orientation & 2 else flipped
        draws = generator()
        # Cut from a view of the uint8 pixels; an image too small for the grid is upscaled first, in floats, as the
        # processor does.
        source = flipped.transpose(2, 0, 1) if fits_grid(*image.shape[:2], grid, fragment) else unit_float(flipped)
        cut = [sample_fragments(source, grid, fragment, random_offsets, draws) for _ in range(num_views or 1)]
        cut = torch.stack(cut) if num_views is not None else cut[0]
        # uint8 fragments onto the [0, 1] scale here, per sample: a batch may mix them with the float fragments of
        # an upscaled small image, and stacking the two would promote the uint8 values to floats left at 0-255.
        fragments.append(cut.float().div(255.0) if cut.dtype == torch.uint8 else cut)
    fragments = torch.stack(fragments)
    return {
        "pixel_values": processor.normalize_values(torch.stack(views)),
        "fragment_values": processor.normalize_values(fragments),
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
