"""The decoded-image cache (``data.cache_images``): every image decoded and resized once into a memory-mapped
``datasets`` table, so that an epoch only reads arrays."""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import numpy as np

from glia_hf.data import load_image


#: Bumped whenever the layout, the decode or the whole-image view of :class:`DecodedImageCache` changes, so older
#: caches are never read (2: the whole-image view is stored too).
DECODED_CACHE_VERSION = 2


def decoded_cache_key(paths: Sequence[str], resize_short_side: Optional[int], resize_resample: str,
                      image_size: int) -> str:
    """A SHA-256 over everything the stored arrays depend on: the ordered image list, each file's size and
    modification time (a file replaced under the same name changes the key), the resize settings, the side of the
    whole-image view and the layout version. No two image sets or resolutions can share a cache folder. (The view is
    stored before normalisation, so the backbone's mean and standard deviation are not part of the key.)"""
    import hashlib
    import os

    digest = hashlib.sha256(f"v{DECODED_CACHE_VERSION} {resize_short_side} {resize_resample} {image_size}\n".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class DecodedImageCache:
    """Every image of a data set decoded once (:func:`glia_hf.data.load_image`: full decode, EXIF orientation,
    8-bit RGB), resized once (the processor's :meth:`~glia_hf.GLIAImageProcessor.resize_image`,
    ``data.resize_short_side``) and its whole-image view made once (the processor's
    :meth:`~glia_hf.GLIAImageProcessor.whole_image_view`, before normalisation and before any flip), kept on disk as
    a memory-mapped ``datasets.Dataset``, so that an epoch only reads arrays (``data.cache_images``).

    Layout (one row per image, in the order of ``paths``): ``path`` (string), ``height``, ``width`` (int32),
    ``pixels`` (``large_binary``: the ``height x width x 3`` uint8 array, row-major) and ``view`` (``large_binary``:
    the ``3 x S x S`` float32 whole-image view, ``S`` the processor's ``image_size``). Raw bytes rather than lists, so
    that a read is one ``numpy.frombuffer`` of the mapped buffer; 64-bit offsets, so native-resolution chunks may pass
    2 GiB. Size: ``H x W x 3 + 12 x S x S`` bytes per image, 590 KB + 602 KB at 512x384 and 224 px, 12.0 GB for
    KonIQ-10k at the paper's 384 px short side (5.9 GB of pixels, 6.1 GB of views). The folder is
    ``<root>/decoded-<key>``, key from :func:`decoded_cache_key`; a finished folder is reused as is, a new one is
    built in a temporary folder and renamed into place, so that an interrupted build or a concurrent process never
    leaves a half-written cache behind.

    :meth:`array` and :meth:`view` return exactly what the uncached path computes, and the cache pickles into
    DataLoader workers (the mapped file is reopened there, not copied).
    """

    def __init__(self, folder, rows: Dict[str, int]):
        import datasets

        self.folder, self.rows = str(folder), rows
        self.table = datasets.load_from_disk(self.folder).data  # memory-mapped Arrow table
        self.heights = self.table.column("height").to_numpy()
        self.widths = self.table.column("width").to_numpy()
        self.image_size = int(self.table.column("view_size")[0].as_py()) if self.table.num_rows else None
        self._pixels, self._views = self.table.column("pixels"), self.table.column("view")

    @classmethod
    def build(cls, root, paths: Sequence[str], processor, log: Callable[[str], None] = print) -> "DecodedImageCache":
        """Open the cache of ``paths`` under ``root`` for ``processor`` (a :class:`~glia_hf.GLIAImageProcessor`: its
        resize and its whole-image view), decoding and storing every image first when there is none."""
        import os
        import shutil
        import tempfile
        from pathlib import Path

        import datasets
        import torch

        paths = [str(p) for p in paths]
        key = decoded_cache_key(paths, processor.resize_short_side, processor.resize_resample, processor.image_size)
        folder = Path(root) / f"decoded-{key[:32]}"
        if not (folder / "dataset_info.json").exists():
            Path(root).mkdir(parents=True, exist_ok=True)

            def rows():
                for path in paths:
                    array = np.ascontiguousarray(np.asarray(processor.resize_image(load_image(path)), dtype=np.uint8))
                    with torch.no_grad():
                        view = processor.whole_image_view(unit_float(array))
                    yield {"path": path, "height": array.shape[0], "width": array.shape[1], "pixels": array.tobytes(),
                           "view_size": processor.image_size, "view": view.contiguous().numpy().tobytes()}

            features = datasets.Features({"path": datasets.Value("string"), "height": datasets.Value("int32"),
                                          "width": datasets.Value("int32"), "pixels": datasets.Value("large_binary"),
                                          "view_size": datasets.Value("int32"), "view": datasets.Value("large_binary")})
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
        buffer = self._pixels[row].as_buffer()
        return np.frombuffer(buffer, dtype=np.uint8).reshape(int(self.heights[row]), int(self.widths[row]), 3)

    def view(self, path: str) -> Optional[np.ndarray]:
        """The stored ``(3, S, S)`` float32 whole-image view of ``path``, unflipped and not normalised (read-only, a
        view of the mapped file); ``None`` when this cache does not hold it."""
        row = self.rows.get(str(path))
        if row is None:
            return None
        size = self.image_size
        return np.frombuffer(self._views[row].as_buffer(), dtype=np.float32).reshape(3, size, size)

    def get(self, path: str):
        """The image of ``path`` as the 8-bit RGB PIL image the uncached path decodes; ``None`` when not held."""
        from PIL import Image

        array = self.array(path)
        return None if array is None else Image.fromarray(array, "RGB")


def unit_float(array: np.ndarray):
    """An ``(H, W, 3)`` uint8 array as the ``(3, H, W)`` float tensor in [0, 1] that
    :func:`glia_hf.image_processing_glia.to_rgb_tensor` makes of an 8-bit RGB image (``x / 255``, bit for bit)."""
    import torch

    if not (array.flags.writeable and array.flags.c_contiguous):
        array = np.array(array)  # torch reads only writable, contiguous arrays without a warning
    return torch.from_numpy(array).permute(2, 0, 1).float().div(255.0)
