"""The data path of the training loop: the epoch sampler, the image dataset, the collators and the workers' set-up.

``training/train.py`` re-exports these names, so ``from training.train import EpochSampler`` keeps working.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from glia_hf import GLIAImageProcessor
from glia_hf.data import load_image
from training.config import SEMANTIC_CACHE_DTYPES as CACHE_DTYPE_NAMES


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


# ============================================================================================== decoded-image cache

#: Bumped whenever the layout or the decode of :class:`DecodedImageCache` changes, so older caches are never read.
DECODED_CACHE_VERSION = 1


def decoded_cache_key(paths: Sequence[str], resize_short_side: Optional[int], resize_resample: str) -> str:
    """A SHA-256 over everything the decoded pixels depend on: the ordered image list, each file's size and
    modification time (a file replaced under the same name changes the key), the resize settings and the layout
    version. No two image sets or resolutions can share a cache folder."""
    import hashlib
    import os

    digest = hashlib.sha256(f"v{DECODED_CACHE_VERSION} {resize_short_side} {resize_resample}\n".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class DecodedImageCache:
    """Every image of a data set decoded once (:func:`glia_hf.data.load_image`: full decode, EXIF orientation,
    8-bit RGB) and resized once (``resize``: the processor's
    :meth:`~glia_hf.GLIAImageProcessor.resize_image`, ``data.resize_short_side``), kept on disk as a memory-mapped
    ``datasets.Dataset``, so that an epoch only reads arrays (``data.cache_images``).

    Layout (one row per image, in the order of ``paths``): ``path`` (string), ``height``, ``width`` (int32) and
    ``pixels`` (``large_binary``: the ``height x width x 3`` uint8 array, row-major; raw bytes rather than a list of
    uint8 so that a read is one ``numpy.frombuffer`` of the mapped buffer, and 64-bit offsets so native-resolution
    chunks may pass 2 GiB). Size: ``H x W x 3`` bytes per image, 590 KB at 512x384, 5.9 GB for KonIQ-10k at the
    paper's 384 px short side. The folder is ``<root>/decoded-<key>``, key from :func:`decoded_cache_key`; a
    finished folder is reused as is, a new one is built in a temporary folder and renamed into place, so that an
    interrupted build or a concurrent process never leaves a half-written cache behind.

    :meth:`get` returns the PIL image the uncached path makes, pixel for pixel, and pickles into DataLoader workers
    (the mapped file is reopened there, not copied).
    """

    def __init__(self, folder, rows: Dict[str, int]):
        import datasets

        self.folder, self.rows = str(folder), rows
        self.table = datasets.load_from_disk(self.folder).data  # memory-mapped Arrow table

    @classmethod
    def build(cls, root, paths: Sequence[str], resize: Optional[Callable], resize_short_side: Optional[int],
              resize_resample: str, log: Callable[[str], None] = print) -> "DecodedImageCache":
        """Open the cache of ``paths`` under ``root``, decoding and storing every image first when there is none."""
        import os
        import shutil
        import tempfile
        from pathlib import Path

        import datasets

        paths = [str(p) for p in paths]
        key = decoded_cache_key(paths, resize_short_side, resize_resample)
        folder = Path(root) / f"decoded-{key[:32]}"
        if not (folder / "dataset_info.json").exists():
            Path(root).mkdir(parents=True, exist_ok=True)

            def rows():
                for path in paths:
                    image = load_image(path)
                    if resize is not None:
                        image = resize(image)
                    array = np.asarray(image, dtype=np.uint8)
                    yield {"path": path, "height": array.shape[0], "width": array.shape[1],
                           "pixels": np.ascontiguousarray(array).tobytes()}

            features = datasets.Features({"path": datasets.Value("string"), "height": datasets.Value("int32"),
                                          "width": datasets.Value("int32"),
                                          "pixels": datasets.Value("large_binary")})
            work = Path(tempfile.mkdtemp(prefix=".decoded-", dir=root))
            try:
                built = datasets.Dataset.from_generator(rows, features=features, cache_dir=str(work / "build"),
                                                        writer_batch_size=64, keep_in_memory=False)
                built.save_to_disk(str(work / "cache"))
                del built
                try:
                    os.replace(work / "cache", folder)
                except OSError:  # another process finished the same cache first
                    if not (folder / "dataset_info.json").exists():
                        raise
            finally:
                shutil.rmtree(work, ignore_errors=True)
            log(f"decoded-image cache: {len(paths)} images decoded once into {folder}")
        cache = cls(folder, {path: row for row, path in enumerate(paths)})
        if cache.table.num_rows != len(paths) or cache.table.column("path").to_pylist() != paths:
            raise RuntimeError(f"{folder}: the decoded-image cache does not hold the images of its key; delete the "
                               "folder and run again")
        return cache

    def __len__(self) -> int:
        return self.table.num_rows

    def __getstate__(self):
        return {"folder": self.folder, "rows": self.rows}

    def __setstate__(self, state):
        self.__init__(state["folder"], state["rows"])

    def array(self, path: str) -> Optional[np.ndarray]:
        """The stored ``(H, W, 3)`` uint8 pixels of ``path`` (read-only, a view of the mapped file); ``None`` when
        this cache does not hold it."""
        row = self.rows.get(str(path))
        if row is None:
            return None
        height = self.table.column("height")[row].as_py()
        width = self.table.column("width")[row].as_py()
        buffer = self.table.column("pixels")[row].as_buffer()
        return np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3)

    def get(self, path: str):
        """The image of ``path`` as the 8-bit RGB PIL image the uncached path makes; ``None`` when not held."""
        from PIL import Image

        array = self.array(path)
        return None if array is None else Image.fromarray(array, "RGB")


# =================================================================================================== semantic cache

#: An image's orientation in training: 0 as stored, 1 flipped left-right, 2 flipped top-bottom, 3 both
#: (``hflip + 2 * vflip``). Test images are always 0.
ORIENTATIONS = ("none", "horizontal", "vertical", "both")


def semantic_cache_reason(config, model) -> Optional[str]:
    """Why the semantic cache cannot be used for this run, in one line; ``None`` when it can.

    ``config`` is the run's ``TrainConfig``, ``model`` the (unwrapped) ``GLIAForImageQualityAssessment``. The
    guidance tokens are a function of the image alone only when the guidance stream is the whole image, some GLIA
    block reads the prior, the backbone is frozen and has no dropout.
    """
    if not config.data.cache_semantic:
        return "data.cache_semantic is false"
    glia = getattr(model, "glia", None)
    if glia is None or not hasattr(glia, "encode_guidance"):
        return f"the {config.model.method} model has no guidance stream"
    if not getattr(glia, "uses_prior", False):
        return (f"the {config.model.method} model has no guidance pass (no GLIA block reads a prior)"
                if config.model.method == "glia" else f"the {config.model.method} baseline has no guidance stream")
    if not glia.config.freeze_backbone:
        return "the backbone trains, so its tokens change at every step"
    if glia.config.guidance_stream != "semantic":
        return "the guidance stream is the detail stream, whose random fragments change at every draw"
    vit = glia.config.backbone_config
    dropout = max(getattr(vit, "hidden_dropout_prob", 0.0) or 0.0, getattr(vit, "attention_probs_dropout_prob", 0.0)
                  or 0.0)
    if dropout > 0:
        return f"the backbone has dropout ({dropout:g}), so its tokens in training are random"
    return None


def semantic_cache_key(model, processor: GLIAImageProcessor, images: Sequence[str], precision: str) -> str:
    """A SHA-256 over everything the guidance tokens depend on, so that no cache can serve stale tokens.

    It covers the backbone (its config and every weight's bytes), the processor's settings that shape the whole-image
    view (``image_size``, ``image_mean``/``image_std``, ``resize_short_side``/``resize_resample``), the image set (the
    ordered list of image paths: a cache entry is addressed by the position of its image in that list) and the
    precision the tokens are computed in (``precision``, e.g. Accelerate's mixed precision ``no`` or ``bf16``).
    """
    import hashlib

    digest = hashlib.sha256()
    vit = model.glia.vit
    digest.update(vit.config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(vit.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.detach().reshape(-1).contiguous().view(torch.uint8).cpu().numpy().tobytes())
    settings = {key: getattr(processor, key) for key in ("image_size", "image_mean", "image_std", "resize_short_side",
                                                          "resize_resample")}
    digest.update(repr(sorted(settings.items())).encode())
    digest.update("\n".join(map(str, images)).encode())
    digest.update(str(precision).encode())
    return digest.hexdigest()


#: The torch dtype of each ``data.semantic_cache_dtype`` (:data:`training.config.SEMANTIC_CACHE_DTYPES`).
SEMANTIC_CACHE_DTYPES = dict(zip(CACHE_DTYPE_NAMES, (torch.float32, torch.bfloat16)))


class SemanticCache:
    """The frozen backbone's final guidance tokens of each (image, orientation), computed once and reused.

    GLIANet's guidance (semantic) stream runs the frozen ViT on the resized whole image, a function of the image and
    its flips alone (not of the fragment draw), and the projection into the latent space trains: so the cache holds
    the backbone's final tokens (after its final layer norm, what :meth:`GLIAModel.encode_guidance` returns) and the
    model receives them as ``guidance_hidden_states``. Entries are made lazily, the first time an (image,
    orientation) occurs in a batch, without autograd; every later epoch, every later view of that image
    (``data.train_views``) and the test and calibration passes read them. An image has up to four orientations
    (:data:`ORIENTATIONS`), each with its own tokens.

    This class keeps its entries in host memory (``device``, default CPU) in ``dtype`` (``data.semantic_cache_dtype``:
    float32 by default, with which a training run is the same step for step as without the cache, up to the last bits
    of a batched matrix product; bfloat16 halves it, its effect on results measured in the README). Size: ``L x
    hidden x 4`` bytes per orientation in float32; at ViT-B/16 and 224 px, ``197 x 768 x 4`` = 605 KB, so KonIQ-10k
    at the paper's resolution (all 10,073 images, up to 4 orientations each) holds at most 10,073 x 4 x 605,184 B =
    24.4 GB (22.7 GiB) in float32, 12.2 GB (11.4 GiB) in bfloat16; its training part (80%) with horizontal flips
    only (2 orientations) about 9.8 GB / 4.9 GB. :class:`DiskSemanticCache` (``data.semantic_cache_dir``) keeps them
    in a memory-mapped file instead, reused by later runs. :meth:`from_config` picks one from a run's config.

    One cache serves one image set under one key (:func:`semantic_cache_key`); the trainer keeps a cache across
    splits while the key stays the same. With DataLoader workers the collators only carry each sample's
    ``image_id`` and ``orientation``; the look-up runs in the training process, in the step. Under Accelerate's data
    parallelism each process fills its own in-memory cache with the images of its shards (a disk cache is shared).
    After ``--resume`` an in-memory cache starts empty and fills again.
    """

    def __init__(self, key: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.key, self.device, self.dtype = key, torch.device(device), dtype
        self.entries: Dict[tuple, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0
        self.token_dtype: Optional[torch.dtype] = None  # what the encoder returns; a bf16 cache is cast back to it

    @classmethod
    def from_config(cls, key: str, config, num_images: int) -> "SemanticCache":
        """The cache a run's ``TrainConfig`` asks for: ``data.semantic_cache_dtype`` (``fp32`` | ``bf16``) and
        ``data.semantic_cache_dir`` (``null``: host memory; a folder: a :class:`DiskSemanticCache` there for the
        ``num_images`` images of ``key``)."""
        name = config.data.semantic_cache_dtype  # one of SEMANTIC_CACHE_DTYPES (TrainConfig.validate checks it)
        folder = config.data.semantic_cache_dir
        if folder:
            return DiskSemanticCache(key, folder, num_images, dtype=SEMANTIC_CACHE_DTYPES[name])
        return cls(key, dtype=SEMANTIC_CACHE_DTYPES[name])

    @property
    def storage(self) -> str:
        """Where and how the tokens are kept, in words (for the run's log)."""
        return f"kept in host memory, {_DTYPE_NAMES[self.dtype]}"

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key) -> bool:
        return key in self.entries

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached tokens."""
        return sum(t.numel() * t.element_size() for t in self.entries.values())

    def tokens(self, image_id: int, orientation: int) -> torch.Tensor:
        """The stored ``(L, hidden)`` tokens of one entry, in the cache's dtype (``KeyError`` when not cached)."""
        return self.entries[(int(image_id), int(orientation))]

    # The storage: which keys are held, storing new ones, reading a batch of held ones.
    def _held(self, keys: List[tuple]) -> List[bool]:
        return [key in self.entries for key in keys]

    def _store(self, keys: List[tuple], tokens: torch.Tensor) -> None:
        for key, value in zip(keys, tokens):
            self.entries[key] = value.clone()  # not a view: the batch's tensor must not stay alive

    def _read(self, keys: List[tuple]) -> torch.Tensor:
        return torch.stack([self.entries[key] for key in keys])

    def lookup(self, image_ids: Sequence[int], orientations: Sequence[int], pixel_values: torch.Tensor,
               encode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The guidance tokens of a batch, ``(B, L, hidden)`` on ``pixel_values``' device.

        ``image_ids`` and ``orientations`` (plain integers, one per row of ``pixel_values``) address the entries;
        rows not cached yet are encoded with ``encode`` (``GLIAModel.encode_guidance``, called here under
        ``torch.no_grad``) on their rows of ``pixel_values`` and stored. The whole batch is one host-to-device copy.
        """
        keys = list(zip((int(i) for i in image_ids), (int(o) for o in orientations)))
        if len(keys) != len(pixel_values):
            raise ValueError(f"{len(keys)} cache keys for a batch of {len(pixel_values)} images")
        # A key seen twice in one batch (two views of an image with the same flips) is encoded once.
        first = {}
        for position, (key, held) in enumerate(zip(keys, self._held(keys))):
            if not held:
                first.setdefault(key, position)
        if first:
            positions = list(first.values())
            rows = pixel_values if len(positions) == len(pixel_values) else pixel_values[positions]
            with torch.no_grad():
                tokens = encode(rows).detach()
            produced = tokens.dtype
            self.token_dtype = self.token_dtype or produced
            self._store(list(first), tokens.to(self.device, self.dtype))
        self.misses += len(first)
        self.hits += len(keys) - len(first)
        stacked = self._read(keys)
        if self.token_dtype is not None and stacked.dtype != self.token_dtype:
            stacked = stacked.to(self.token_dtype)
        if stacked.device != pixel_values.device:
            if stacked.device.type == "cpu" and pixel_values.device.type == "cuda":
                stacked = stacked.pin_memory()
            stacked = stacked.to(pixel_values.device, non_blocking=True)
        return stacked


_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
#: Bumped whenever the layout of :class:`DiskSemanticCache` changes, so older folders are never read.
DISK_SEMANTIC_CACHE_VERSION = 1


def disk_semantic_cache_key(key: str, dtype: torch.dtype) -> str:
    """The folder key of a disk cache: :func:`semantic_cache_key` (backbone, processor, images, precision) with the
    storage dtype and the layout version, so that a bf16 folder never serves an fp32 run or the other way round."""
    import hashlib

    return hashlib.sha256(f"{key} {_DTYPE_NAMES[dtype]} v{DISK_SEMANTIC_CACHE_VERSION}".encode()).hexdigest()


class DiskSemanticCache(SemanticCache):
    """A :class:`SemanticCache` in a memory-mapped file under ``root`` (``data.semantic_cache_dir``), filled lazily
    and reused by every later run with the same key, by every split and by ``--resume``.

    Layout of ``<root>/semantic-<key>`` (key from :func:`disk_semantic_cache_key`, so the backbone, the processor, the
    image list, the precision and the storage dtype all name the folder): ``tokens.bin``, the array ``(num_images x
    4, L, hidden)`` in ``dtype`` (bfloat16 as its raw 16-bit words), row ``4 * image_id + orientation``, created at
    its full size as a sparse file (disk is used only by the rows written); ``filled.bin``, one byte per row, 1 once
    the row is written; ``meta.json`` (shape, dtypes, key), written last by an atomic rename, so that its presence
    means both files exist at full size; ``.lock``. Size: ``L x hidden x 2`` bytes per orientation in bfloat16, 303 KB
    at ViT-B/16 and 224 px (197 x 768 tokens): KonIQ-10k at the paper's resolution, 10,073 images x up to 4
    orientations x 197 x 768 x 2 B = 12.2 GB (11.4 GiB) at most; twice that in float32.

    Sharing between processes (Accelerate's ranks on one machine, or runs at once; no DataLoader worker ever touches
    it): rows are write-once. A process encodes the rows it misses without any lock (two ranks may both encode the same
    row), then, under an exclusive ``flock`` of ``.lock``, writes each row whose flag is still 0 with ``pwrite``,
    flushes the tokens to disk (``fdatasync``) and only then sets their flags: a reader, which takes no lock, sees a
    flag only after its row is complete, in memory and on disk, so neither a concurrent writer nor a crash can hand
    it a half-written row. A row once written never changes, and every process reads the same bytes. The folder must
    be on a file system with ``flock`` and a coherent page cache for all its users (one machine's local disk; give
    each node of a multi-node run its own folder).
    """

    def __init__(self, key: str, root, num_images: int, dtype: torch.dtype = torch.float32):
        from pathlib import Path

        super().__init__(key, device="cpu", dtype=dtype)
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"a disk semantic cache stores float32 or bfloat16, not {dtype}")
        self.num_images = int(num_images)
        self.folder = Path(root) / f"semantic-{disk_semantic_cache_key(key, dtype)[:32]}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._known = np.zeros(self.num_images * 4, dtype=bool)  # rows this process has seen filled
        self._tokens = None  # the mapped array, once the files exist
        self._flags_fd = None

    @property
    def storage(self) -> str:
        return f"memory-mapped in {self.folder}, {_DTYPE_NAMES[self.dtype]}"

    # ------------------------------------------------------------------------------------------- files

    def _open(self) -> bool:
        """Map the files when they exist (``meta.json`` present); False when no row was ever written."""
        import json
        import os

        if self._tokens is not None:
            return True
        meta_path = self.folder / "meta.json"
        if not meta_path.exists():
            return False
        meta = json.loads(meta_path.read_text())
        expected = {"key": self.key, "rows": self.num_images * 4, "dtype": _DTYPE_NAMES[self.dtype]}
        found = {name: meta.get(name) for name in expected}
        if found != expected:
            raise RuntimeError(f"{self.folder}: the semantic cache holds {found}, not {expected}; delete the folder "
                               "and run again")
        storage = np.uint16 if self.dtype == torch.bfloat16 else np.float32
        self._tokens = np.memmap(self.folder / "tokens.bin", dtype=storage, mode="r",
                                 shape=(meta["rows"], *meta["token_shape"]))
        self._flags_fd = os.open(self.folder / "filled.bin", os.O_RDONLY)
        self.token_dtype = self.token_dtype or getattr(torch, meta["token_dtype"])
        return True

    def _create(self, token_shape, token_dtype: torch.dtype) -> None:
        """Make the files at full size (under the lock); the first writer of a key does it."""
        import json
        import os

        if (self.folder / "meta.json").exists():
            return
        rows = self.num_images * 4
        row_bytes = int(np.prod(token_shape)) * torch.empty(0, dtype=self.dtype).element_size()
        for name, size in (("tokens.bin", rows * row_bytes), ("filled.bin", rows)):
            with open(self.folder / name, "wb") as handle:
                handle.truncate(size)  # sparse: disk is used by the rows written
        meta = {"key": self.key, "rows": rows, "dtype": _DTYPE_NAMES[self.dtype], "token_shape": list(token_shape),
                "token_dtype": str(token_dtype).replace("torch.", ""), "version": DISK_SEMANTIC_CACHE_VERSION}
        temporary = self.folder / f".meta-{os.getpid()}.json"
        temporary.write_text(json.dumps(meta))
        os.replace(temporary, self.folder / "meta.json")

    def _row(self, key: tuple) -> int:
        image_id, orientation = key
        if not (0 <= image_id < self.num_images and 0 <= orientation < 4):
            raise ValueError(f"semantic cache entry (image {image_id}, orientation {orientation}) outside the "
                             f"{self.num_images} images x 4 orientations of {self.folder}")
        return 4 * image_id + orientation

    def _filled(self, row: int) -> bool:
        import os

        if not self._known[row] and os.pread(self._flags_fd, 1, row) == b"\x01":
            self._known[row] = True
        return bool(self._known[row])

    # ------------------------------------------------------------------------------------------- storage

    def _held(self, keys: List[tuple]) -> List[bool]:
        rows = [self._row(key) for key in keys]
        if not self._open():
            return [False] * len(keys)
        return [self._filled(row) for row in rows]

    def _store(self, keys: List[tuple], tokens: torch.Tensor) -> None:
        import fcntl
        import os

        words = tokens.contiguous().view(torch.int16) if self.dtype == torch.bfloat16 else tokens.contiguous()
        words = words.numpy()
        with open(self.folder / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._create(tuple(tokens.shape[1:]), self.token_dtype)
                self._open()
                fd = os.open(self.folder / "tokens.bin", os.O_WRONLY)
                flags = os.open(self.folder / "filled.bin", os.O_WRONLY)
                try:
                    rows = [self._row(key) for key in keys]
                    fresh = [(row, words[i]) for i, row in enumerate(rows) if not self._filled(row)]
                    for row, value in fresh:
                        os.pwrite(fd, value.tobytes(), row * value.nbytes)
                    if fresh:
                        os.fdatasync(fd)  # the rows are on disk before any flag says so
                    for row, _ in fresh:
                        os.pwrite(flags, b"\x01", row)
                        self._known[row] = True
                finally:
                    os.close(fd)
                    os.close(flags)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self, keys: List[tuple]) -> torch.Tensor:
        rows = np.asarray(np.take(self._tokens, [self._row(key) for key in keys], axis=0))  # a copy, not the map
        stacked = torch.from_numpy(rows)
        return stacked.view(torch.bfloat16) if self.dtype == torch.bfloat16 else stacked

    def tokens(self, image_id: int, orientation: int) -> torch.Tensor:
        key = (int(image_id), int(orientation))
        if not self._held([key])[0]:
            raise KeyError(key)
        return self._read([key])[0]

    def __len__(self) -> int:
        """Rows written by any process, this one or another, now or in an earlier run."""
        if not self._open():
            return 0
        return int(np.count_nonzero(np.fromfile(self.folder / "filled.bin", dtype=np.uint8)))

    def __contains__(self, key) -> bool:
        return self._held([tuple(int(k) for k in key)])[0]

    @property
    def nbytes(self) -> int:
        """Bytes of disk held by the written rows."""
        if not self._open():
            return 0
        return len(self) * int(np.prod(self._tokens.shape[1:])) * self._tokens.itemsize

    def __del__(self):
        import os

        if getattr(self, "_flags_fd", None) is not None:
            os.close(self._flags_fd)
            self._flags_fd = None
