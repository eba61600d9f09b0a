"""The decoded-image cache (``data.cache_images``): every image decoded and resized once into a memory-mapped
``datasets`` table, so that an epoch only reads arrays."""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import numpy as np

from glia_hf.data import load_image


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
