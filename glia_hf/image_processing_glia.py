"""Image processor of GLIANet: one image in, its two views out (the resized whole image and the tiled fragments)."""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

from .fragment_sampling import sample_fragments


VIT_MEAN = [0.5, 0.5, 0.5]
VIT_STD = [0.5, 0.5, 0.5]

# The filters a resize to a fixed short side may use (Pillow's, as in LoDa's `scripts/process_*.py`, which resize with
# torchvision on PIL images: bicubic for most data sets, torchvision's default bilinear for KonIQ-10k and SPAQ).
RESIZE_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def pil_to_rgb(image: Image.Image) -> Image.Image:
    """Turn any PIL image into an 8-bit RGB one, with its EXIF orientation applied.

    This is the one conversion rule of the project (the processor, the pipeline and the data loaders all use it):

    - grayscale is repeated over three channels; palette, CMYK, YCbCr, LAB and HSV images use Pillow's conversion;
    - transparency (RGBA, LA, PA, palette with a transparent colour) is composited onto a white background;
    - integer images of more than 8 bits (`I;16*`, `I`) are scaled from 0-65535 to 0-255; float images (`F`) are read
      as 0-1 when their maximum is at most 1, else as 0-255; values outside the range are clipped.
    """
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
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
        if gray.ndim == 3:  # multi-channel high-bit-depth modes, should Pillow return them
            return Image.fromarray(gray[..., :3] if gray.shape[-1] >= 3 else gray[..., 0]).convert("RGB")
        return Image.fromarray(gray, mode="L").convert("RGB")
    return image.convert("RGB")


def short_side_size(width: int, height: int, short_side: int) -> tuple:
    """The `(width, height)` an image of `width x height` gets when its short side is scaled to `short_side`.

    The short side becomes exactly `short_side`; the long side keeps the aspect ratio, rounded down:
    `long' = floor(short_side * long / short)` (torchvision's `Resize(int)` rule, which LoDa's scripts use; e.g.
    1024x768 -> 512x384, 4000x3000 -> 512x384, 500x500 -> 384x384 at 384). Smaller images are scaled up.
    """
    if short_side < 1:
        raise ValueError(f"short_side must be a positive integer, got {short_side}.")
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


def describe_resolution(resize_short_side: int | None, resize_resample: str = "bicubic") -> str:
    """The resolution images are seen at, in words, for captions and model cards: `"native resolution"` or e.g.
    `"384 px short side (bicubic resize)"`; reads after "images at"."""
    if resize_short_side is None:
        return "native resolution"
    return f"{resize_short_side} px short side ({resize_resample} resize)"


def resize_short_side(image, short_side: int | None, resample: str = "bicubic"):
    """Scale an image so that its short side is `short_side` pixels, aspect ratio kept; `None` returns it unchanged.

    This is the one resize of the project: the processor applies it before anything else (so the pipeline, the CLI
    and any caller get it), and the training data loader applies it (through the processor) before the random flips.
    It does what LoDa's `scripts/process_*.py` do once on disk: a full decode, the EXIF orientation applied first,
    then a Pillow resize with the given filter (antialiased when shrinking, as Pillow always is) to the size of
    [`short_side_size`]; an image whose size already matches is returned as is, and a smaller one is scaled up.

    Args:
        image: a PIL image (any mode: converted by [`pil_to_rgb`] first; the result is an 8-bit RGB PIL image, as a
            PNG written by LoDa's scripts holds), or a NumPy array / tensor accepted by [`to_rgb_tensor`] (the result
            is a `(3, H, W)` float tensor in [0, 1]; 8-bit content is resized exactly as the same PIL image would be,
            deeper content per channel in 32-bit float by the same Pillow filter).
        short_side: the target short side in pixels, or `None` for the native resolution.
        resample: `"bicubic"` or `"bilinear"`.
    """
    if resample not in RESIZE_FILTERS:
        raise ValueError(f"resample must be one of {sorted(RESIZE_FILTERS)}, got {resample!r}.")
    if short_side is None:
        return image
    if isinstance(image, Image.Image):
        image = pil_to_rgb(image)
        size = short_side_size(image.width, image.height, short_side)
        return image if size == image.size else image.resize(size, RESIZE_FILTERS[resample])
    rgb = to_rgb_tensor(image)
    height, width = rgb.shape[-2:]
    size = short_side_size(width, height, short_side)
    if size == (width, height):
        return rgb
    levels = rgb * 255.0
    if torch.allclose(levels, levels.round(), atol=1e-3):  # 8-bit content: Pillow's 8-bit resize, as for a PIL image
        eight_bit = Image.fromarray(levels.round().to(torch.uint8).permute(1, 2, 0).numpy())
        return to_rgb_tensor(eight_bit.resize(size, RESIZE_FILTERS[resample]))
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(channel.numpy(), dtype=np.float32)).resize(
            size, RESIZE_FILTERS[resample]))
        for channel in rgb.float()
    ]
    return torch.from_numpy(np.stack(channels)).clamp(0, 1)


def to_rgb_tensor(image) -> torch.Tensor:
    """Convert one image to a float `(3, H, W)` tensor with values in [0, 1].

    Accepts a PIL image (any mode, see [`pil_to_rgb`]), or a NumPy array / torch tensor laid out as `(H, W)`,
    `(H, W, C)` or `(C, H, W)` with `C` in {1, 3, 4} (the alpha channel is composited onto white). Integer arrays are
    read as 8-bit (uint8) or 16-bit (uint16) values; float arrays must already lie in [0, 1].
    """
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.array(pil_to_rgb(image))).permute(2, 0, 1).float().div(255.0)
    if isinstance(image, np.ndarray):
        # A copy: the caller's array may be read-only (np.asarray of a PIL image), and torch has no uint16 arithmetic.
        array = torch.from_numpy(image.astype(np.int32 if image.dtype == np.uint16 else image.dtype, copy=True))
        dtype_name = str(image.dtype)
    elif isinstance(image, torch.Tensor):
        array, dtype_name = image.detach().cpu(), str(image.dtype).replace("torch.", "")
    else:
        raise TypeError(f"Unsupported image type {type(image).__name__}: expected a PIL image, NumPy array or tensor.")

    shape = tuple(array.shape)
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and array.shape[-1] in (1, 3, 4) and array.shape[0] not in (1, 3, 4):
        array = array.permute(2, 0, 1)
    elif array.ndim == 3 and array.shape[0] in (1, 3, 4):
        pass
    elif array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        array = array.permute(2, 0, 1)
    else:
        raise ValueError(
            f"Unsupported image array shape {shape}: expected (H, W), (H, W, C) or (C, H, W) with C in 1, 3 or 4."
        )
    if min(array.shape[-2:]) < 1:
        raise ValueError(f"Image array of shape {shape} is empty.")

    if dtype_name == "uint8":
        array = array.float() / 255.0
    elif dtype_name == "uint16":
        array = array.float() / 65535.0
    elif array.is_floating_point():
        array = array.float()
        if not torch.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ValueError(f"Float image arrays must hold finite values in [0, 1]; got an array of shape {shape}.")
    else:
        raise ValueError(f"Unsupported image dtype {dtype_name}: use uint8, uint16 or float in [0, 1].")

    if array.shape[0] == 1:
        array = array.expand(3, -1, -1)
    elif array.shape[0] == 4:
        rgb, alpha = array[:3], array[3:]
        array = rgb * alpha + (1 - alpha)
    return array.contiguous()


class GLIAImageProcessor(BaseImageProcessor):
    r"""
    Prepares images for [`GLIAForImageQualityAssessment`]. Each image gives two views:

    - `pixel_values`: the whole image resized to `image_size x image_size` (bicubic, antialiased): the semantic stream;
    - `fragment_values`: the grid fragments of the full-resolution image tiled into one image (see
      `fragment_sampling.py`): the detail stream. Images too small for the grid are upscaled first, aspect ratio kept.

    Both are normalised with the backbone's mean and standard deviation. With `resize_short_side` set, every image is
    first scaled so that its short side has that many pixels ([`resize_short_side`]), the resolution the model was
    trained at; both views are then taken from the scaled image.

    Args:
        image_size (`int`, *optional*, defaults to 224): side of the resized whole image.
        grid_size (`tuple[int, int]`, *optional*, defaults to `(7, 7)`): grid cells `(nh, nw)`.
        fragment_size (`tuple[int, int]`, *optional*, defaults to `(32, 32)`): fragment size `(fh, fw)` in pixels.
        image_mean (`list[float]`, *optional*, defaults to `[0.5, 0.5, 0.5]`): per-channel mean of the backbone.
        image_std (`list[float]`, *optional*, defaults to `[0.5, 0.5, 0.5]`): per-channel standard deviation.
        resize_short_side (`int`, *optional*): scale every image so that its short side has this many pixels before
            anything else (LoDa trains and tests at 384 on most data sets); `None`: the native resolution.
        resize_resample (`str`, *optional*, defaults to `"bicubic"`): the filter of that resize, `"bicubic"` or
            `"bilinear"`.
    """

    model_input_names = ["pixel_values", "fragment_values"]

    def __init__(
        self,
        image_size: int = 224,
        grid_size=(7, 7),
        fragment_size=(32, 32),
        image_mean=None,
        image_std=None,
        resize_short_side: int | None = None,
        resize_resample: str = "bicubic",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.grid_size = [int(n) for n in grid_size]
        self.fragment_size = [int(n) for n in fragment_size]
        self.image_mean = list(image_mean) if image_mean is not None else list(VIT_MEAN)
        self.image_std = list(image_std) if image_std is not None else list(VIT_STD)
        if resize_short_side is not None and (isinstance(resize_short_side, bool) or int(resize_short_side) < 1):
            raise ValueError(f"resize_short_side must be a positive integer or None, got {resize_short_side!r}.")
        if resize_resample not in RESIZE_FILTERS:
            raise ValueError(f"resize_resample must be one of {sorted(RESIZE_FILTERS)}, got {resize_resample!r}.")
        self.resize_short_side = int(resize_short_side) if resize_short_side is not None else None
        self.resize_resample = resize_resample

    @classmethod
    def from_config(
        cls, config, image_mean=None, image_std=None, resize_short_side=None, resize_resample="bicubic"
    ) -> "GLIAImageProcessor":
        """The processor that matches a [`GLIAConfig`]'s global size, grid and fragments (and its backbone's
        normalisation, `config.image_mean` / `config.image_std`, unless given here)."""
        return cls(
            image_size=config.image_size,
            grid_size=config.grid_size,
            fragment_size=config.fragment_size,
            image_mean=image_mean if image_mean is not None else getattr(config, "image_mean", None),
            image_std=image_std if image_std is not None else getattr(config, "image_std", None),
            resize_short_side=resize_short_side,
            resize_resample=resize_resample,
        )

    def resize_image(self, image):
        """This processor's resize ([`resize_short_side`] with its `resize_short_side` and `resize_resample`); the
        first step of [`preprocess`], and what the training data loader applies before its random flips."""
        return resize_short_side(image, self.resize_short_side, self.resize_resample)

    def whole_image_view(self, rgb: torch.Tensor) -> torch.Tensor:
        """The semantic stream's view of one image before normalisation: the `(3, H, W)` float image in [0, 1]
        resized to `image_size x image_size` (bicubic, antialiased, clamped to [0, 1]). The one definition of that
        view: [`preprocess`] and the training loader's decoded-image cache both make it here."""
        size = (self.image_size, self.image_size)
        return F.interpolate(rgb[None], size=size, mode="bicubic", align_corners=False, antialias=True)[0].clamp(0, 1)

    def normalize_values(self, values: torch.Tensor) -> torch.Tensor:
        """`(values - image_mean) / image_std` per channel, for any `(..., 3, h, w)` float tensor in [0, 1]."""
        mean = torch.tensor(self.image_mean).view(3, 1, 1)
        std = torch.tensor(self.image_std).view(3, 1, 1)
        return (values - mean) / std

    def preprocess(
        self,
        images,
        random_offsets: bool | None = None,
        num_samples: int | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Turn one image or a list of images into `pixel_values` and `fragment_values`.

        Args:
            images: a PIL image, NumPy array or tensor (see [`to_rgb_tensor`]), or a list of them. Any size, any
                number of channels among 1, 3 and 4; EXIF orientation is honoured. Each is first scaled to
                `resize_short_side` when the processor has one.
            random_offsets: draw the fragment offsets at random (training) instead of centring them (evaluation).
                Defaults to `False`, or to `True` when `num_samples` is given.
            num_samples: draw `K` fragment views per image for test-time averaging: `fragment_values` then has shape
                `(B, K, 3, h, w)` instead of `(B, 3, h, w)`.
            seed: make the random draws reproducible. Each image draws from its own generator seeded with `seed`, so
                an image gets the same views alone or inside any batch.
            generator: a shared `torch.Generator` for the random draws (training), used when `seed` is not given.
            return_tensors: only `"pt"` (PyTorch) is supported.
        """
        if kwargs:
            raise TypeError(f"Unexpected arguments for GLIAImageProcessor: {sorted(kwargs)}.")
        if return_tensors not in (None, "pt"):
            raise ValueError(f"GLIAImageProcessor returns PyTorch tensors only, got return_tensors={return_tensors!r}.")
        if isinstance(images, (list, tuple)):
            images = list(images)
        elif isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
            images = list(images)
        else:
            images = [images]
        if not images:
            raise ValueError("GLIAImageProcessor received an empty batch: give at least one image.")
        if num_samples is not None and num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples}.")
        if random_offsets is None:
            random_offsets = num_samples is not None

        pixel_values, fragment_values = [], []
        for image in images:
            rgb = to_rgb_tensor(self.resize_image(image))
            pixel_values.append(self.normalize_values(self.whole_image_view(rgb)))
            image_generator = torch.Generator().manual_seed(seed) if seed is not None else generator
            views = [
                sample_fragments(rgb, self.grid_size, self.fragment_size, random_offsets, image_generator)
                for _ in range(num_samples or 1)
            ]
            views = self.normalize_values(torch.stack(views))
            fragment_values.append(views if num_samples is not None else views[0])
        return BatchFeature(
            data={"pixel_values": torch.stack(pixel_values), "fragment_values": torch.stack(fragment_values)},
            tensor_type=None,
        )


__all__ = ["GLIAImageProcessor", "pil_to_rgb", "resize_short_side", "short_side_size", "to_rgb_tensor"]
