"""The `image-quality-assessment` pipeline: image files or PIL images in, one quality score per image out.

    from transformers import pipeline

    scorer = pipeline("image-quality-assessment", model="path/to/glianet", trust_remote_code=True)
    scorer("photo.jpg")                                   # {"score": 3.71}
    scorer(["a.jpg", pil_image], batch_size=8)            # [{"score": ...}, {"score": ...}]
    scorer("photo.jpg", num_samples=15, seed=0)           # mean over 15 random fragment views

Scores are on the scale of the data set the model was trained on (`config.score_min` .. `config.score_max`, higher is
better). This file is saved beside the modeling files of every GLIANet checkpoint and recorded in the `custom_pipelines`
entry of its `config.json`, so the call above works in a Python that only has transformers: keep its imports to
transformers, torch, PIL, numpy and the flat GLIA modules next to it (relative imports).
"""

import os
import threading

import numpy as np
import torch
from PIL import Image, ImageFile
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .image_processing_glia import GLIAImageProcessor, pil_to_rgb


PIPELINE_TASK = "image-quality-assessment"
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
_PIL_SETTINGS_LOCK = threading.Lock()
_UNSET = object()


class ImageFileError(OSError):
    """An image file cannot be scored. The message is `"<path>: <reason>"`; `file` and `reason` hold the two parts.

    The one error of the project's one image reader, [`open_image_file`]: the pipeline raises it as is, `glia-iqa
    score` prints it, and `glia_hf.data.load_image` re-raises it as an `IQAImageError` with the same text.
    """

    def __init__(self, file, reason: str):
        self.file, self.reason = os.fspath(file), reason
        super().__init__(f"{self.file}: {reason}")


class ImageFileMissingError(ImageFileError, FileNotFoundError):
    """The image file does not exist (also a `FileNotFoundError`)."""


class ImageTooLargeError(ImageFileError, ValueError):
    """The image has more pixels than the limit (also a `ValueError`); the reason gives its size and the limit."""


_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def open_image_file(path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read an image file into an 8-bit RGB PIL image, upright as its EXIF orientation says: the project's one reader.

    The pipeline, `glia-iqa score` and `glia_hf.data.load_image` all read files through this function, so a file gets
    the same pixels and, when it cannot be read, the same message everywhere. Conversion to RGB is [`pil_to_rgb`].

    Raises [`ImageFileError`] (an `OSError`) whose message is `"<path>: <reason>"`:

    - [`ImageFileMissingError`] (also `FileNotFoundError`): no such file; a URL is refused the same way (nothing is
      downloaded);
    - [`ImageTooLargeError`] (also `ValueError`): more than `max_pixels` pixels (`None` or 0: no limit). The size is
      read from the file header before anything is decoded. GLIANet cuts its detail view out of the full-resolution
      image, so a huge image is refused rather than silently downscaled;
    - `ImageFileError`: not an image, corrupt, or truncated. A truncated file fails even when other code has set
      `PIL.ImageFile.LOAD_TRUNCATED_IMAGES`: a half-decoded picture is never scored.

    PIL's two process-wide settings involved (its decompression-bomb limit, replaced here by `max_pixels`, and the
    truncated-file switch) are changed and restored under one lock, so concurrent readers never see each other's.
    """
    path = os.fspath(path)
    if path.startswith(("http://", "https://")):
        raise ImageFileMissingError(path, "URLs are not fetched; download the image and pass the local file")
    if not os.path.isfile(path):
        raise ImageFileMissingError(path, "no such image file")
    with _PIL_SETTINGS_LOCK:
        previous_limit, previous_truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, False
        try:
            try:
                image = Image.open(path)
            except _DECODE_ERRORS as error:
                raise ImageFileError(path, f"cannot read image ({type(error).__name__}: {error})") from error
            with image:
                width, height = image.size
                if max_pixels and width * height > max_pixels:
                    raise ImageTooLargeError(
                        path,
                        f"image too large: {width}x{height} = {width * height:,} pixels, more than the limit of "
                        f"{max_pixels:,}; downscale it first or raise the limit (max_pixels / --max-pixels; 0 "
                        "removes it)",
                    )
                try:
                    image.load()
                    rgb = pil_to_rgb(image)
                except _DECODE_ERRORS as error:
                    raise ImageFileError(path, f"cannot read image ({type(error).__name__}: {error})") from error
                return rgb.copy() if rgb is image else rgb  # an upright RGB file comes back as is: outlive the `with`
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = previous_limit, previous_truncated


class ImageQualityAssessmentPipeline(Pipeline):
    """Scores the perceptual quality of images with a GLIANet model (blind IQA: no reference image needed).

    Inputs: a local file path (`str` or `pathlib.Path`, read with [`open_image_file`]), a PIL image, a NumPy array or
    tensor (as accepted by `GLIAImageProcessor`), or a list of these. URLs are refused: nothing is downloaded.

    Output: `{"score": float}` per image, or a list of them for a list input. The score is on the data set's scale.

    Call options (also accepted when building the pipeline):
        num_samples: average the score over this many random fragment views per image (test-time averaging). Without
            it, one view with centred fragments is scored (deterministic).
        seed: seed of the random views (default 0 when `num_samples` is given). Each image draws from its own seeded
            generator, so an image gets the same score alone or in any batch.
        max_pixels: refuse image files with more pixels than this (default: PIL's decompression-bomb limit,
            about 89.5 megapixels; 0 or `None` for no limit).
        batch_size: the transformers pipeline option, images per forward pass.
    """

    _load_processor = False
    _load_image_processor = None
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, model, image_processor=None, **kwargs):
        if image_processor is None:
            image_processor = GLIAImageProcessor.from_config(model.config)
        super().__init__(model=model, image_processor=image_processor, **kwargs)
        self.model.eval()

    def _sanitize_parameters(self, num_samples=None, seed=None, max_pixels=_UNSET, **unused):
        if unused:
            raise TypeError(f"Unexpected arguments for the image-quality-assessment pipeline: {sorted(unused)}.")
        preprocess = {}
        if num_samples is not None:
            if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
                raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
            preprocess["num_samples"] = num_samples
        if seed is not None:
            preprocess["seed"] = int(seed)
        if max_pixels is not _UNSET:
            preprocess["max_pixels"] = max_pixels
        return preprocess, {}, {}

    def __call__(self, inputs, **kwargs):
        """Score one image (returns a dict) or a list/tuple of images (returns a list of dicts, in input order)."""
        if isinstance(inputs, tuple):
            inputs = list(inputs)
        if isinstance(inputs, list) and not inputs:
            return []
        return super().__call__(inputs, **kwargs)

    def preprocess(self, image, num_samples=None, seed=None, max_pixels=DEFAULT_MAX_PIXELS):
        if isinstance(image, (str, os.PathLike)):
            image = open_image_file(image, max_pixels=max_pixels)
        elif isinstance(image, Image.Image):
            image = pil_to_rgb(image)
        elif not isinstance(image, (np.ndarray, torch.Tensor)):
            raise TypeError(
                f"Cannot score an input of type {type(image).__name__}: give a local file path, a PIL image, a NumPy "
                "array or a tensor."
            )
        if num_samples is not None and seed is None:
            seed = 0
        features = self.image_processor(images=image, num_samples=num_samples, seed=seed)
        return {"pixel_values": features["pixel_values"], "fragment_values": features["fragment_values"]}

    def _forward(self, model_inputs):
        outputs = self.model(
            pixel_values=model_inputs["pixel_values"], fragment_values=model_inputs["fragment_values"]
        )
        return {"score": outputs.score.float()}

    def postprocess(self, model_outputs):
        return {"score": float(model_outputs["score"].reshape(-1)[0])}


def register_pipeline() -> None:
    """Register the pipeline under the task name `image-quality-assessment` with transformers' pipeline registry.

    The model is loaded through `AutoModel`, i.e. the checkpoint's `auto_map`. Saved checkpoints carry this file and
    the `custom_pipelines` entry of `config.json` (see `GLIAConfig`), so the pipeline also loads with
    `trust_remote_code=True` where this package is not installed. Safe to call more than once.
    """
    registered = PIPELINE_REGISTRY.supported_tasks.get(PIPELINE_TASK, {}).get("impl")
    if registered is not ImageQualityAssessmentPipeline:
        PIPELINE_REGISTRY.register_pipeline(
            PIPELINE_TASK, pipeline_class=ImageQualityAssessmentPipeline, pt_model=AutoModel, type="image"
        )


__all__ = [
    "ImageFileError",
    "ImageFileMissingError",
    "ImageQualityAssessmentPipeline",
    "ImageTooLargeError",
    "PIPELINE_TASK",
    "open_image_file",
    "register_pipeline",
]
