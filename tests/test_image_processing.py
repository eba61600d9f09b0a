"""GLIAImageProcessor: inputs of every kind in, the two normalised views out."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from glia_hf import GLIAImageProcessor
from glia_hf.image_processing_glia import to_rgb_tensor


@pytest.fixture
def processor():
    return GLIAImageProcessor()


def photo(height=240, width=320, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_output_shapes_and_normalisation(processor):
    out = processor([photo(), photo(500, 300)])
    assert out["pixel_values"].shape == (2, 3, 224, 224)
    assert out["fragment_values"].shape == (2, 3, 224, 224)
    white = processor(np.full((300, 300, 3), 255, dtype=np.uint8))
    assert torch.allclose(white["pixel_values"], torch.ones(1, 3, 224, 224))
    assert torch.allclose(white["fragment_values"], torch.ones(1, 3, 224, 224))


def test_fragment_view_is_full_resolution(processor):
    image = photo(224, 224)
    out = processor(image)
    expected = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    assert torch.allclose(out["fragment_values"][0], expected, atol=1e-6)


@pytest.mark.parametrize(
    "image",
    [
        Image.fromarray(photo()),
        Image.fromarray(photo()).convert("L"),
        Image.fromarray(photo()).convert("RGBA"),
        Image.fromarray(photo()).convert("CMYK"),
        Image.fromarray(photo()).convert("P"),
        Image.fromarray((photo()[..., 0].astype(np.uint16) * 257)).convert("I;16"),
        photo()[..., 0],
        photo()[..., :1],
        np.concatenate([photo(), np.full((240, 320, 1), 255, np.uint8)], axis=-1),
        photo().astype(np.float32) / 255,
        photo().astype(np.uint16) * 257,
        torch.from_numpy(photo()).permute(2, 0, 1),
        torch.rand(3, 64, 48),
    ],
    ids=["rgb", "L", "RGBA", "CMYK", "P", "I16", "hw", "hw1", "hwc4", "float", "uint16", "chw-uint8", "chw-float"],
)
def test_accepts_every_common_input(processor, image):
    out = processor(image)
    assert out["pixel_values"].shape == (1, 3, 224, 224)
    assert torch.isfinite(out["fragment_values"]).all()


def test_16_bit_and_8_bit_versions_agree():
    eight = photo()
    assert torch.allclose(to_rgb_tensor(eight), to_rgb_tensor(eight.astype(np.uint16) * 257), atol=1e-6)


def test_alpha_is_composited_on_white():
    transparent = np.zeros((8, 8, 4), dtype=np.uint8)
    assert torch.allclose(to_rgb_tensor(transparent), torch.ones(3, 8, 8))


def test_exif_orientation_is_honoured(processor):
    image = Image.fromarray(photo(100, 300))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    loaded = Image.open(io.BytesIO(buffer.getvalue()))
    assert loaded.size == (300, 100)
    assert to_rgb_tensor(loaded).shape == (3, 300, 100)


@pytest.mark.parametrize(
    "bad,message",
    [
        (np.zeros((2, 3, 4, 5, 6), np.uint8), "Unsupported image array shape"),
        (np.zeros((10, 10, 2), np.uint8), "Unsupported image array shape"),
        (np.zeros((10, 10, 3), np.int64), "Unsupported image dtype"),
        (np.full((10, 10, 3), 2.0, np.float32), r"\[0, 1\]"),
        ("not an image", "Unsupported image type"),
    ],
)
def test_bad_inputs_get_clear_errors(processor, bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        processor(bad)


def test_empty_batch_is_refused(processor):
    with pytest.raises(ValueError, match="empty batch"):
        processor([])


def test_test_time_views_are_reproducible_and_batch_independent(processor):
    images = [photo(seed=1), photo(400, 600, seed=2)]
    batch = processor(images, num_samples=4, seed=7)["fragment_values"]
    assert batch.shape == (2, 4, 3, 224, 224)
    alone = processor(images[1], num_samples=4, seed=7)["fragment_values"]
    assert torch.equal(batch[1], alone[0])
    assert not torch.equal(batch[1, 0], batch[1, 1])  # four different draws
    assert torch.equal(batch, processor(images, num_samples=4, seed=7)["fragment_values"])


def test_training_draws_follow_the_generator(processor):
    image = photo(400, 600)
    first = processor(image, random_offsets=True, generator=torch.Generator().manual_seed(3))["fragment_values"]
    again = processor(image, random_offsets=True, generator=torch.Generator().manual_seed(3))["fragment_values"]
    centred = processor(image)["fragment_values"]
    assert torch.equal(first, again) and not torch.equal(first, centred)


def test_save_and_load_round_trip(tmp_path):
    processor = GLIAImageProcessor(grid_size=(4, 4), fragment_size=(56, 56), image_mean=[0.4, 0.5, 0.6])
    processor.save_pretrained(tmp_path)
    loaded = GLIAImageProcessor.from_pretrained(tmp_path)
    assert loaded.grid_size == [4, 4] and loaded.fragment_size == [56, 56] and loaded.image_mean == [0.4, 0.5, 0.6]
    image = photo()
    assert torch.equal(processor(image)["fragment_values"], loaded(image)["fragment_values"])


def test_high_bit_depth_and_float_images_follow_one_rule(tmp_path):
    from glia_hf.data import load_image

    ramp = np.tile(np.linspace(0, 255, 16), (8, 1))
    cases = {
        "I": (Image.fromarray((ramp * 257).astype(np.int32), mode="I"), ramp),
        "F 0-1": (Image.fromarray((ramp / 255).astype(np.float32), mode="F"), ramp),
        "F 0-255": (Image.fromarray(ramp.astype(np.float32), mode="F"), ramp),
    }
    for name, (image, expected) in cases.items():
        path = tmp_path / f"{name}.tiff"
        image.save(path)
        for converted in (np.asarray(to_rgb_tensor(image)[0] * 255), np.asarray(load_image(path))[..., 0]):
            np.testing.assert_allclose(converted, expected, atol=1.0, err_msg=name)
