"""KADID-style synthetic distortions for the built-in data set, written with numpy, scipy and Pillow.

Each distortion takes an ``HxWx3`` ``uint8`` RGB array, a level from 1 (mild) to 5 (strong) and a
``numpy.random.Generator``, and returns a new ``uint8`` array of the same shape. The builder gives every level of one
(scene, distortion) pair a generator with the same seed, so the random pattern (noise field, motion direction, patch
positions) is the same at every level and only its strength changes, as in KADID-10k.

The parameters per level are listed in :data:`DISTORTIONS` (``name -> (function, five parameters, description)``).
"""

from __future__ import annotations

import io
from typing import Callable, Dict, Sequence, Tuple

import numpy as np
from PIL import Image, features
from scipy import ndimage, signal

Array = np.ndarray
DistortionFn = Callable[[Array, float, np.random.Generator], Array]


def _to_uint8(array: Array) -> Array:
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def _luma(image: Array) -> Array:
    return image[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _filter_channels(image: Array, kernel: Array) -> Array:
    """Convolve each channel with ``kernel`` (odd size), reflecting at the borders."""
    pad_y, pad_x = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(image.astype(np.float64), ((pad_y, pad_y), (pad_x, pad_x), (0, 0)), mode="reflect")
    return np.stack([signal.fftconvolve(padded[..., c], kernel, mode="valid") for c in range(image.shape[2])], -1)


# ---------------------------------------------------------------------------------------------------- blurs


def gaussian_blur(image: Array, sigma: float, rng: np.random.Generator) -> Array:
    return _to_uint8(ndimage.gaussian_filter(image.astype(np.float64), sigma=(sigma, sigma, 0), mode="reflect"))


def lens_blur(image: Array, radius: float, rng: np.random.Generator) -> Array:
    """Defocus: a uniform disk kernel of the given radius (anti-aliased edge)."""
    size = int(np.ceil(radius)) * 2 + 1
    yy, xx = np.mgrid[:size, :size] - size // 2
    kernel = np.clip(radius + 0.5 - np.hypot(yy, xx), 0.0, 1.0)
    return _to_uint8(_filter_channels(image, kernel / kernel.sum()))


def motion_blur(image: Array, length: float, rng: np.random.Generator) -> Array:
    """Linear camera motion: a line kernel of ``length`` pixels (made odd) in a random direction."""
    angle = rng.uniform(0.0, 180.0)
    size = int(length) | 1  # odd, so that the line is centred
    kernel = np.zeros((size, size))
    kernel[size // 2, :] = 1.0
    kernel = np.clip(ndimage.rotate(kernel, angle, reshape=False, order=1), 0.0, None)
    return _to_uint8(_filter_channels(image, kernel / kernel.sum()))


# ---------------------------------------------------------------------------------------------------- noises


def white_noise(image: Array, sigma: float, rng: np.random.Generator) -> Array:
    """Additive white Gaussian noise, independent per channel (sigma on the 0-255 scale)."""
    return _to_uint8(image + rng.standard_normal(image.shape) * sigma)


def impulse_noise(image: Array, density: float, rng: np.random.Generator) -> Array:
    """Salt and pepper: a share ``density`` of the pixels set to black or white."""
    draw = rng.random(image.shape[:2])
    out = image.copy()
    out[draw < density / 2] = 0
    out[draw > 1.0 - density / 2] = 255
    return out


def multiplicative_noise(image: Array, sigma: float, rng: np.random.Generator) -> Array:
    """Speckle: each value multiplied by ``1 + sigma * N(0, 1)``."""
    return _to_uint8(image * (1.0 + sigma * rng.standard_normal(image.shape)))


# ---------------------------------------------------------------------------------------------------- compression


def _encode_decode(image: Array, fmt: str, **options) -> Array:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt, **options)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB")).copy()


def jpeg(image: Array, quality: float, rng: np.random.Generator) -> Array:
    """JPEG at the given quality (Pillow/libjpeg, 4:2:0 chroma subsampling)."""
    return _encode_decode(image, "JPEG", quality=int(quality), subsampling=2)


def jpeg2000(image: Array, ratio: float, rng: np.random.Generator) -> Array:
    """JPEG 2000 at the given compression ratio (Pillow/OpenJPEG). Where Pillow lacks OpenJPEG, WebP at a matching
    low quality stands in (recorded in the data set's README by the builder)."""
    if features.check("jpg_2000"):
        return _encode_decode(image, "JPEG2000", quality_mode="rates", quality_layers=[float(ratio)], irreversible=True)
    return _encode_decode(image, "WEBP", quality=max(1, int(round(1600.0 / ratio))))


# ---------------------------------------------------------------------------------------------------- colour


def _saturation(image: Array, factor: float) -> Array:
    gray = _luma(image)[..., None]
    return _to_uint8(gray + factor * (image.astype(np.float64) - gray))


def desaturate(image: Array, factor: float, rng: np.random.Generator) -> Array:
    """Colour saturation lowered: each pixel moved towards its luma (factor 0 = grayscale)."""
    return _saturation(image, factor)


def oversaturate(image: Array, factor: float, rng: np.random.Generator) -> Array:
    """Colour saturation raised: each pixel pushed away from its luma by ``factor``."""
    return _saturation(image, factor)


def color_quantization(image: Array, colors: float, rng: np.random.Generator) -> Array:
    """Palette of ``colors`` colours (Pillow's fast octree quantiser, no dithering)."""
    quantized = Image.fromarray(image).quantize(
        colors=int(colors), method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
    )
    return np.asarray(quantized.convert("RGB")).copy()


def color_shift(image: Array, shift: float, rng: np.random.Generator) -> Array:
    """Chromatic misregistration: red and blue planes moved ``shift`` pixels in opposite random directions."""
    angle = rng.uniform(0.0, 2 * np.pi)
    dy, dx = shift * np.sin(angle), shift * np.cos(angle)
    out = image.astype(np.float64)
    out[..., 0] = ndimage.shift(out[..., 0], (dy, dx), order=1, mode="nearest")
    out[..., 2] = ndimage.shift(out[..., 2], (-dy, -dx), order=1, mode="nearest")
    return _to_uint8(out)


# ---------------------------------------------------------------------------------------------------- brightness and contrast


def contrast_decrease(image: Array, factor: float, rng: np.random.Generator) -> Array:
    """Values pulled towards the image's mean luma by ``factor`` (1 = unchanged)."""
    mean = _luma(image).mean()
    return _to_uint8(mean + factor * (image.astype(np.float64) - mean))


def _gamma(image: Array, gamma: float) -> Array:
    return _to_uint8(255.0 * (image / 255.0) ** gamma)


def brighten(image: Array, gamma: float, rng: np.random.Generator) -> Array:
    """Brighter: a gamma curve with exponent below 1."""
    return _gamma(image, gamma)


def darken(image: Array, gamma: float, rng: np.random.Generator) -> Array:
    """Darker: a gamma curve with exponent above 1."""
    return _gamma(image, gamma)


# ---------------------------------------------------------------------------------------------------- sharpness


def sharpen(image: Array, amount: float, rng: np.random.Generator) -> Array:
    """Over-sharpening: unsharp mask ``image + amount * (image - blur(image, sigma=1.5))``, with overshoot clipped."""
    blurred = ndimage.gaussian_filter(image.astype(np.float64), sigma=(1.5, 1.5, 0), mode="reflect")
    return _to_uint8(image + amount * (image - blurred))


# ---------------------------------------------------------------------------------------------------- spatial


def pixelate(image: Array, block: float, rng: np.random.Generator) -> Array:
    """Blocks of ``block x block`` pixels: box-downscaled, then upscaled with nearest neighbour."""
    height, width = image.shape[:2]
    block = int(block)
    small = Image.fromarray(image).resize((max(1, width // block), max(1, height // block)), Image.Resampling.BOX)
    return np.asarray(small.resize((width, height), Image.Resampling.NEAREST)).copy()


def jitter(image: Array, amount: float, rng: np.random.Generator) -> Array:
    """Each pixel replaced by one up to ``amount`` pixels away (a random displacement per pixel)."""
    height, width = image.shape[:2]
    field = rng.uniform(-1.0, 1.0, size=(2, height, width))
    yy, xx = np.mgrid[:height, :width]
    y = np.clip(yy + np.rint(field[0] * amount).astype(int), 0, height - 1)
    x = np.clip(xx + np.rint(field[1] * amount).astype(int), 0, width - 1)
    return image[y, x]


def non_eccentricity_patch(image: Array, count: float, rng: np.random.Generator) -> Array:
    """``count`` 16x16 patches replaced by a nearby patch (offset 8-24 px), as KADID-10k's non-eccentricity patch.

    The candidate positions are drawn once in the same order at every level, so a stronger level adds patches."""
    height, width = image.shape[:2]
    size, max_patches = 16, 400
    tops = rng.integers(0, height - size, size=max_patches)
    lefts = rng.integers(0, width - size, size=max_patches)
    offsets = rng.integers(8, 25, size=(max_patches, 2)) * rng.choice([-1, 1], size=(max_patches, 2))
    out = image.copy()
    for top, left, (oy, ox) in list(zip(tops, lefts, offsets))[: int(count)]:
        source_top = int(np.clip(top + oy, 0, height - size))
        source_left = int(np.clip(left + ox, 0, width - size))
        out[top : top + size, left : left + size] = image[source_top : source_top + size, source_left : source_left + size]
    return out


#: name -> (function, parameter at levels 1..5, what the parameter is)
DISTORTIONS: Dict[str, Tuple[DistortionFn, Sequence[float], str]] = {
    "gaussian_blur": (gaussian_blur, (0.6, 1.2, 2.0, 3.2, 5.0), "Gaussian sigma (px)"),
    "lens_blur": (lens_blur, (1.0, 2.0, 3.0, 4.5, 7.0), "disk radius (px)"),
    "motion_blur": (motion_blur, (3, 6, 10, 15, 22), "line length (px)"),
    "white_noise": (white_noise, (5, 10, 17, 27, 40), "noise sigma (0-255)"),
    "impulse_noise": (impulse_noise, (0.01, 0.03, 0.06, 0.11, 0.2), "share of pixels"),
    "multiplicative_noise": (multiplicative_noise, (0.06, 0.12, 0.2, 0.32, 0.5), "relative sigma"),
    "jpeg": (jpeg, (50, 30, 15, 8, 3), "JPEG quality"),
    "jpeg2000": (jpeg2000, (20, 50, 100, 200, 400), "compression ratio"),
    "desaturate": (desaturate, (0.75, 0.5, 0.3, 0.15, 0.0), "saturation factor"),
    "oversaturate": (oversaturate, (1.5, 2.0, 2.7, 3.5, 4.5), "saturation factor"),
    "color_quantization": (color_quantization, (64, 32, 16, 8, 4), "number of colours"),
    "color_shift": (color_shift, (1, 2, 4, 7, 11), "shift (px)"),
    "contrast_decrease": (contrast_decrease, (0.75, 0.55, 0.4, 0.28, 0.18), "contrast factor"),
    "brighten": (brighten, (0.8, 0.65, 0.5, 0.38, 0.28), "gamma"),
    "darken": (darken, (1.3, 1.6, 2.0, 2.6, 3.4), "gamma"),
    "sharpen": (sharpen, (1.0, 2.0, 3.5, 5.5, 8.0), "unsharp-mask amount"),
    "pixelate": (pixelate, (3, 4, 6, 9, 14), "block size (px)"),
    "jitter": (jitter, (1, 2, 3, 4, 6), "max displacement (px)"),
    "non_eccentricity_patch": (non_eccentricity_patch, (15, 40, 80, 140, 220), "number of moved patches"),
}

NUM_LEVELS = 5


def apply_distortion(image: Array, name: str, level: int, rng: np.random.Generator) -> Array:
    """Apply distortion ``name`` at ``level`` (1..5) to an RGB ``uint8`` image."""
    if not 1 <= level <= NUM_LEVELS:
        raise ValueError(f"level must be 1..{NUM_LEVELS}, got {level}")
    function, parameters, _ = DISTORTIONS[name]
    return function(image, parameters[level - 1], rng)
