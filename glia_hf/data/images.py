"""Reading images for IQA: one function that either returns an 8-bit RGB image or raises an error naming the file.

Quality labels belong to the pixels a rater saw, so an unreadable file must never turn into a blank image. The rules:

- EXIF orientation is applied (``PIL.ImageOps.exif_transpose``), as a viewer would show the photo.
- The result is always an 8-bit ``RGB`` :class:`PIL.Image.Image`, converted by the project's one rule
  (``glia_hf.image_processing_glia.pil_to_rgb``, which the processor and the pipeline use too):

  * grayscale (``1``, ``L``) is repeated over three channels;
  * images with transparency (``RGBA``, ``LA``, ``PA``, palette images with a transparent colour) are composited
    onto a **white** background, i.e. they look as on a white page; the alpha channel is not kept;
  * palette (``P``), ``CMYK``, ``YCbCr``, ``LAB`` and ``HSV`` images are converted with Pillow's conversion (CMYK
    without an ICC transform);
  * 16-bit and 32-bit integer images (``I;16*``, ``I``) are scaled from 0..65535 to 0..255; float images (``F``) are
    taken as 0..1 if their maximum is at most 1, else as 0..255, and clipped.

- A missing, unreadable, corrupt, truncated or too large file raises :class:`IQAImageError` naming the path, with the
  message of the project's one reader (``glia_hf.pipeline_glia.open_image_file``). Truncated files raise even when
  some other code has set ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``, because a half-grey picture with a full-quality
  label is worse than an error.
"""

from __future__ import annotations

import logging
import os
from typing import Iterable, List, NamedTuple, Optional, Tuple

from PIL import Image

from ..pipeline_glia import DEFAULT_MAX_PIXELS, ImageFileError, open_image_file
from .errors import IQAImageError, PathLike

logger = logging.getLogger(__name__)


def load_image(path: PathLike, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image file as an 8-bit RGB :class:`PIL.Image.Image`, upright as its EXIF orientation says.

    The file is read by the project's one reader, ``glia_hf.pipeline_glia.open_image_file`` (the pipeline and
    ``glia-iqa score`` use it too), so the pixels and the error messages are the same on every path. See the module
    docstring for how grayscale, transparent, palette, CMYK and 16-bit images are converted.

    Args:
        path: the image file.
        max_pixels: refuse images with more pixels than this, read from the header before decoding (default: PIL's
            decompression-bomb limit, 89,478,485; ``None`` or 0 for no limit).

    Raises:
        IQAImageError: the file is missing, is not an image, is corrupt or truncated, or is too large; the message is
            the reader's, ``"<path>: <reason>"``.
    """
    try:
        return open_image_file(path, max_pixels=max_pixels)
    except ImageFileError as error:
        raise IQAImageError(error.reason, file=error.file) from error


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
