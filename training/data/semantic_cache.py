"""The semantic cache (``data.cache_semantic``): the frozen backbone's guidance tokens of each (image, orientation),
computed once, in host memory (:class:`SemanticCache`) or in a memory-mapped file (:class:`DiskSemanticCache`)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from glia_hf import GLIAImageProcessor
from training.config import SEMANTIC_CACHE_DTYPES as CACHE_DTYPE_NAMES


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
        return f"kept in host memory, {_dtype_name(self.dtype)}"

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


def _dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (for logs and a disk cache's ``meta.json``)."""
    return str(dtype).removeprefix("torch.")


#: Bumped whenever the layout of :class:`DiskSemanticCache` or the tokens it holds change, so older folders are
#: never read (2: a flipped image's whole-image view is the flip of the resized view, no longer the resize of the
#: flipped image; the two differ by up to about 1e-5 per pixel).
DISK_SEMANTIC_CACHE_VERSION = 2


def disk_semantic_cache_key(key: str, dtype: torch.dtype) -> str:
    """The folder key of a disk cache: :func:`semantic_cache_key` (backbone, processor, images, precision) with the
    storage dtype and the layout version, so that a bf16 folder never serves an fp32 run or the other way round."""
    return hashlib.sha256(f"{key} {_dtype_name(dtype)} v{DISK_SEMANTIC_CACHE_VERSION}".encode()).hexdigest()


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
        return f"memory-mapped in {self.folder}, {_dtype_name(self.dtype)}"

    # ------------------------------------------------------------------------------------------- files

    def _open(self) -> bool:
        """Map the files when they exist (``meta.json`` present); False when no row was ever written."""
        if self._tokens is not None:
            return True
        meta_path = self.folder / "meta.json"
        if not meta_path.exists():
            return False
        meta = json.loads(meta_path.read_text())
        expected = {"key": self.key, "rows": self.num_images * 4, "dtype": _dtype_name(self.dtype)}
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
        if (self.folder / "meta.json").exists():
            return
        rows = self.num_images * 4
        row_bytes = int(np.prod(token_shape)) * torch.empty(0, dtype=self.dtype).element_size()
        for name, size in (("tokens.bin", rows * row_bytes), ("filled.bin", rows)):
            with open(self.folder / name, "wb") as handle:
                handle.truncate(size)  # sparse: disk is used by the rows written
        meta = {"key": self.key, "rows": rows, "dtype": _dtype_name(self.dtype), "token_shape": list(token_shape),
                "token_dtype": _dtype_name(token_dtype), "version": DISK_SEMANTIC_CACHE_VERSION}
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
        if getattr(self, "_flags_fd", None) is not None:
            os.close(self._flags_fd)
            self._flags_fd = None
