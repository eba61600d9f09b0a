"""Reading images for IQA: one function that either returns an 8-bit RGB image or raises an error naming the file.

Quality labels belong to the pixels a rater saw, so an unreadable file must never turn into a blank image. The rules:

- EXIF orientation is applied (``PIL.ImageOps.exif_transpose``), as a viewer would show the photo.
- The result is always an 8-bit ``RGB`` :class:`PIL.Image.Image`:

  * grayscale (``1``, ``L``) is repeated over three channels;
  * images with transparency (``RGBA``, ``LA``, ``PA``, palette images with a transparent colour) are composited
    onto a **white** background, i.e. they look as on a white page; the alpha channel is not kept;
  * palette (``P``), ``CMYK``, ``YCbCr``, ``LAB`` and ``HSV`` images are converted with Pillow's conversion (CMYK
    without an ICC transform);
  * 16-bit and 32-bit integer images (``I;16*``, ``I``) are scaled from 0..65535 to 0..255; float images (``F``) are
    taken as 0..1 if their maximum is at most 1, else as 0..255, and clipped.

- A missing, unreadable, corrupt or truncated file raises :class:`IQAImageError` naming the path. Truncated files
  raise even when some other code has set ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``, because a half-grey picture with a
  full-quality label is worse than an error.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Iterable, List, NamedTuple, Tuple

import numpy as np
from PIL import Image, ImageFile, ImageOps

from .errors import IQAImageError, PathLike

logger = logging.getLogger(__name__)

_TRUNCATED_FLAG_LOCK = threading.Lock()
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        array = np.asarray(image).astype(np.float64)
        if mode == "F":
            scale = 255.0 if array.size and np.nanmax(array) <= 1.0 else 1.0
        else:
            scale = 255.0 / 65535.0
        gray = np.clip(np.nan_to_num(array * scale), 0, 255).round().astype(np.uint8)
        if gray.ndim == 3:  # multi-channel 16-bit modes, should a future Pillow return them
            return Image.fromarray(gray[..., :3] if gray.shape[-1] >= 3 else gray[..., 0]).convert("RGB")
        return Image.fromarray(gray, mode="L").convert("RGB")
    return image.convert("RGB")


def load_image(path: PathLike) -> Image.Image:
    """Open an image file as an 8-bit RGB :class:`PIL.Image.Image`, upright as its EXIF orientation says.

    See the module docstring for how grayscale, transparent, palette, CMYK and 16-bit images are converted.

    Raises:
        IQAImageError: the file is missing, is not an image, or is corrupt or truncated; the message names ``path``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise IQAImageError("image file does not exist", file=path)
    try:
        with _TRUNCATED_FLAG_LOCK:
            previous = ImageFile.LOAD_TRUNCATED_IMAGES
            ImageFile.LOAD_TRUNCATED_IMAGES = False
            try:
                with Image.open(path) as opened:
                    opened.load()
                    image = ImageOps.exif_transpose(opened)
                    if image is opened:  # exif_transpose returns the same object when there is nothing to do
                        image = opened.copy()
            finally:
                ImageFile.LOAD_TRUNCATED_IMAGES = previous
        return _to_rgb(image)
    except IQAImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError) as error:
        raise IQAImageError(f"cannot read image ({type(error).__name__}: {error})", file=path) from error


class LoadedImages(NamedTuple):
    """What :func:`load_images` returns.

    Attributes:
        images: the images that could be read, in input order.
        paths: the path of each image in ``images`` (so labels can be matched to them).
        skipped: ``(path, reason)`` for each unreadable file; always empty unless ``skip_unreadable=True``.
    """

    images: List[Image.Image]
    paths: List[str]
    skipped: List[Tuple[str, str]]

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)


def load_images(paths: Iterable[PathLike], skip_unreadable: bool = False) -> LoadedImages:
    """Load several images with :func:`load_image`.

    Args:
        paths: image files.
        skip_unreadable: if ``False`` (default) the first unreadable file raises :class:`IQAImageError` naming its
            path. If ``True`` unreadable files are left out, listed in ``skipped`` with the reason, and counted in
            a logged warning; they are never replaced by a blank image.
    """
    images: List[Image.Image] = []
    loaded: List[str] = []
    skipped: List[Tuple[str, str]] = []
    for path in paths:
        path = os.fspath(path)
        try:
            images.append(load_image(path))
            loaded.append(path)
        except IQAImageError as error:
            if not skip_unreadable:
                raise
            skipped.append((path, str(error)))
    if skipped:
        logger.warning("skipped %d unreadable image(s), first: %s", len(skipped), skipped[0][1])
    return LoadedImages(images, loaded, skipped)
