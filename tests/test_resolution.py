"""Resolution (`data.resize_short_side`): LoDa's resize, stored in the processor config, the same pixels in training
and in the pipeline."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from glia_hf import GLIAImageProcessor
from glia_hf.image_processing_glia import resize_short_side, short_side_size
from tests.conftest import tiny_vit_config


def smooth_photo(width, height, seed=0):
    """A photo-like 8-bit RGB image: a coarse random pattern upsampled, plus some fine noise."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    noisy = np.asarray(coarse, dtype=np.int16) + rng.integers(-20, 21, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def exif_rotated_png(displayed: Image.Image) -> bytes:
    """A PNG file that stores ``displayed`` rotated, with EXIF orientation 6 ("rotate 90 degrees clockwise to
    display"), so that a viewer shows ``displayed``."""
    stored = displayed.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="PNG", exif=exif.tobytes())
    return buffer.getvalue()


def with_exif_rotation(displayed: Image.Image) -> Image.Image:
    return Image.open(io.BytesIO(exif_rotated_png(displayed)))


@pytest.mark.parametrize(
    "size,expected",
    [
        ((1024, 768), (512, 384)),  # KonIQ-10k's 1024x768 -> LoDa's 512x384 folder
        ((768, 1024), (384, 512)),
        ((4000, 3000), (512, 384)),  # SPAQ-sized
        ((512, 384), (512, 384)),  # KADID-10k / TID2013: unchanged
        ((500, 500), (384, 384)),
        ((300, 200), (576, 384)),  # smaller images are scaled up, as torchvision's Resize(int) does
        ((3001, 1000), (1152, 384)),  # the long side is rounded down: int(384 * 3001 / 1000)
        ((1000, 2999), (384, 1151)),
    ],
)
def test_short_side_size_follows_torchvision_resize_int(size, expected):
    assert short_side_size(*size, 384) == expected


def test_a_1024x768_photo_becomes_512x384_bicubic_after_its_exif_rotation():
    displayed = smooth_photo(1024, 768)
    opened = with_exif_rotation(displayed)
    assert opened.size == (768, 1024)  # as stored: portrait

    resized = resize_short_side(opened, 384)
    assert resized.size == (512, 384) and resized.mode == "RGB"
    # EXIF first, then Pillow's bicubic resize to 512x384: written out independently of the function under test.
    reference = ImageOps.exif_transpose(opened).convert("RGB").resize((512, 384), Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(resized), np.asarray(reference))
    assert np.array_equal(np.asarray(resize_short_side(displayed, 384)), np.asarray(reference))

    bilinear = resize_short_side(opened, 384, "bilinear")  # LoDa's KonIQ-10k and SPAQ scripts: torchvision's default
    assert np.array_equal(np.asarray(bilinear), np.asarray(displayed.resize((512, 384), Image.Resampling.BILINEAR)))
    assert not np.array_equal(np.asarray(bilinear), np.asarray(resized))

    # Already at the size: returned as is (a second resize changes nothing); None: the native resolution.
    assert np.array_equal(np.asarray(resize_short_side(resized, 384)), np.asarray(resized))
    assert resize_short_side(opened, None) is opened
    with pytest.raises(ValueError, match="resample must be one of"):
        resize_short_side(displayed, 384, "nearest")


def test_arrays_are_resized_like_the_same_pil_image():
    displayed = smooth_photo(640, 480)
    expected = torch.from_numpy(np.array(resize_short_side(displayed, 384))).permute(2, 0, 1).float() / 255
    from_array = resize_short_side(np.asarray(displayed), 384)
    assert from_array.shape == (3, 384, 512) and torch.equal(from_array, expected)
    deep = resize_short_side(np.asarray(displayed).astype(np.float32) / 255 * 0.999, 384)  # not 8-bit: float path
    assert deep.shape == (3, 384, 512) and (deep - expected * 0.999).abs().max() < 0.03


def test_processor_option_round_trips_and_is_checked(tmp_path):
    processor = GLIAImageProcessor(resize_short_side=384, resize_resample="bilinear")
    processor.save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert stored["resize_short_side"] == 384 and stored["resize_resample"] == "bilinear"
    loaded = GLIAImageProcessor.from_pretrained(tmp_path)
    assert loaded.resize_short_side == 384 and loaded.resize_resample == "bilinear"

    native = GLIAImageProcessor()
    native.save_pretrained(tmp_path / "native")
    assert GLIAImageProcessor.from_pretrained(tmp_path / "native").resize_short_side is None
    # A processor config written before the option existed loads as native resolution.
    old = {k: v for k, v in stored.items() if not k.startswith("resize_")}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "preprocessor_config.json").write_text(json.dumps(old))
    assert GLIAImageProcessor.from_pretrained(tmp_path / "old").resize_short_side is None

    with pytest.raises(ValueError, match="resize_short_side must be a positive integer"):
        GLIAImageProcessor(resize_short_side=0)
    with pytest.raises(ValueError, match="resize_resample must be one of"):
        GLIAImageProcessor(resize_short_side=384, resize_resample="area")


def test_processor_resizes_first():
    """Both views come from the resized image: the same features as a native-resolution processor given the
    resized image."""
    photo = smooth_photo(1024, 768, seed=3)
    resizing = GLIAImageProcessor(resize_short_side=384)
    native = GLIAImageProcessor()
    got = resizing(photo, num_samples=2, seed=5)
    expected = native(photo.resize((512, 384), Image.Resampling.BICUBIC), num_samples=2, seed=5)
    assert torch.equal(got["pixel_values"], expected["pixel_values"])
    assert torch.equal(got["fragment_values"], expected["fragment_values"])
    full = native(photo, num_samples=2, seed=5)
    assert not torch.allclose(full["fragment_values"], got["fragment_values"])  # the detail view does change


def test_training_and_pipeline_see_the_same_pixels(tmp_path, offline_hf_home):
    """A photo file scored by the saved model's pipeline gets exactly the tensors the training loader builds from it
    (test views; and the global view of a training batch without flips)."""
    from transformers import pipeline

    from glia_hf import GLIAForImageQualityAssessment
    from glia_hf.pipeline_glia import PIPELINE_TASK
    from training.train import EvalCollator, IQAImageDataset, TrainCollator

    path = tmp_path / "photo.png"
    path.write_bytes(exif_rotated_png(smooth_photo(1024, 768, seed=7)))
    model = GLIAForImageQualityAssessment.from_backbone(tiny_vit_config(), latent_dim=16, cross_attention_heads=2)
    processor = GLIAImageProcessor.from_config(model.config, image_mean=[0.485, 0.456, 0.406],
                                               image_std=[0.229, 0.224, 0.225], resize_short_side=384)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")

    scorer = pipeline(PIPELINE_TASK, model=str(tmp_path / "model"), trust_remote_code=True, device="cpu")
    assert scorer.image_processor.resize_short_side == 384
    served = scorer.preprocess(str(path), num_samples=3, seed=11)

    test_item = IQAImageDataset([str(path)], [1.0], resize=processor.resize_image)[0]
    assert test_item["image"].shape == (384, 512, 3)  # EXIF applied, then resized, in the loader's worker
    tested = EvalCollator(processor, num_views=3, seed=11)([test_item])
    assert torch.equal(served["pixel_values"], tested["pixel_values"])
    assert torch.equal(served["fragment_values"], tested["fragment_values"])

    train_item = IQAImageDataset([str(path)], [1.0], hflip=0.0, vflip=0.0, resize=processor.resize_image)[(0, 123)]
    trained = TrainCollator(processor, random_offsets=True)([train_item])
    assert torch.equal(served["pixel_values"], trained["pixel_values"])

