"""eval.attention_maps: last-block CLS attention of GLIANet and of the plain frozen ViT, and the Fig. 3 style PNG."""

import numpy as np
import pytest
import torch
from PIL import Image

from eval.attention_maps import attention_map_figure, compute_attention_maps, main
from tests.test_cli import save_tiny_glia, smooth_photo, tiny_glia


def sharpen_attention(model, factor=10.0):
    """Scale the frozen query/key weights: a random tiny ViT attends almost uniformly, which would hide differences."""
    with torch.no_grad():
        for layer in model.glia.vit.layers:
            layer.attention.q_proj.weight.mul_(factor)
            layer.attention.k_proj.weight.mul_(factor)
    return model


def trained_looking(model, std=0.2):
    """Give every GLIA block weight a trained-sized value, so that the adapters visibly steer the frozen blocks."""
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.glia.glia_blocks.parameters():
            parameter.normal_(std=std)
    return sharpen_attention(model)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("attention")
    paths = [folder / "a.png", folder / "b.jpg"]
    Image.fromarray(smooth_photo(260, 300, seed=1)).save(paths[0])
    Image.fromarray(smooth_photo(300, 240, seed=2)).save(paths[1], quality=95)
    return paths


def test_maps_are_cls_attention_of_the_last_block(images):
    model = trained_looking(tiny_glia())
    maps = compute_attention_maps(model, images)
    assert maps.views.shape == (2, 224, 224, 3) and maps.view_name == "tiled fragments"
    assert 0 <= maps.views.min() and maps.views.max() <= 1
    assert maps.glia.shape == maps.vit.shape == (2, 14, 14)
    for attention in (maps.glia, maps.vit):
        assert (attention >= 0).all()
        assert (attention.sum(axis=(1, 2)) < 1 + 1e-5).all()  # the CLS token's own share is left out
    assert maps.scores.shape == (2,)
    assert maps.vit.max() > 2 * maps.vit.min()  # not a flat map
    assert np.abs(maps.glia - maps.vit).max() > 1e-3  # the GLIA blocks change what the frozen ViT attends to

    # Recomputed by hand from the outputs the model already exposes.
    from glia_hf import GLIAImageProcessor

    inputs = GLIAImageProcessor.from_config(model.config)(images=[Image.open(p) for p in images])
    model.glia.vit.set_attn_implementation("eager")
    with torch.no_grad():
        last = model(**inputs, output_attentions=True).attentions[-1]
        plain = model.glia.vit(pixel_values=inputs["fragment_values"], output_attentions=True).attentions[-1]
    model.glia.vit.set_attn_implementation("sdpa")
    np.testing.assert_allclose(maps.glia, last[:, :, 0, 1:].mean(1).reshape(2, 14, 14).numpy(), atol=1e-6)
    np.testing.assert_allclose(maps.vit, plain[:, :, 0, 1:].mean(1).reshape(2, 14, 14).numpy(), atol=1e-6)


def test_at_initialisation_glianet_attends_like_the_plain_vit(images):
    """The adapters' injection starts at zero, so before training the two maps are the same."""
    torch.manual_seed(0)
    from glia_hf import GLIAConfig, GLIAForImageQualityAssessment
    from tests.conftest import tiny_vit_config

    model = GLIAForImageQualityAssessment(GLIAConfig(backbone_config=tiny_vit_config(), latent_dim=16))
    sharpen_attention(model)
    model.train()
    maps = compute_attention_maps(model, images[:1])
    np.testing.assert_allclose(maps.glia, maps.vit, atol=1e-6)
    assert model.training  # training mode and attention implementation are put back
    assert model.glia.vit.config._attn_implementation == "sdpa"


def test_semantic_main_stream_uses_the_resized_image(images):
    model = tiny_glia(main_stream="semantic", guidance_stream="detail")
    maps = compute_attention_maps(model, Image.open(images[0]))
    assert maps.view_name == "resized image" and maps.glia.shape == (1, 14, 14)


def test_figure_is_a_png_of_the_expected_size(images, tmp_path):
    model = trained_looking(tiny_glia())
    path = attention_map_figure(model, images, tmp_path / "figs" / "fig3.png")
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (900, 600)  # 3 panels x 2 rows of 3 inches at 100 dpi
        pixels = np.asarray(png.convert("RGB"))
    assert pixels.std() > 10  # something was drawn
    small = attention_map_figure(model, [Image.open(images[0])], tmp_path / "one.png", cell_inches=2, dpi=50)
    with Image.open(small) as png:
        assert png.size == (300, 100)


def test_figure_is_readable_grey_photo_under_the_maps_a_colour_bar_and_the_score_in_the_title(images, tmp_path,
                                                                                              monkeypatch):
    from matplotlib.figure import Figure

    drawn = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (drawn.append(self), save(self, *a, **k))[1])
    colourful = tmp_path / "colourful.png"
    y, x = np.mgrid[0:320, 0:320]
    Image.fromarray(np.stack([np.sin(x / 9) * 127 + 128, np.cos(y / 7) * 127 + 128, (x + y) % 256],
                             axis=-1).astype(np.uint8)).save(colourful)
    model = trained_looking(tiny_glia())
    path = attention_map_figure(model, [colourful], tmp_path / "fig.png")
    scores = compute_attention_maps(model, [colourful]).scores

    (figure,) = drawn
    titles = [axis.get_title() for axis in figure.axes]
    assert titles[0] == f"score {scores[0]:.2f} (scale 1-5)\ncolourful.png, tiled fragments"
    assert titles[1].startswith("GLIANet attention") and titles[2].startswith("plain frozen ViT attention")
    assert len(figure.axes) == 4  # three panels and the colour bar
    assert [t.get_text() for t in figure.axes[3].get_yticklabels()] == ["least", "most"]

    with Image.open(path) as png:
        hsv = np.asarray(png.convert("HSV")).astype(float) / 255
        rgb = np.asarray(png.convert("RGB")).astype(float)
    width = hsv.shape[1]
    inner = slice(int(0.2 * hsv.shape[0]), int(0.9 * hsv.shape[0]))
    photo = hsv[inner, int(0.05 * width) : int(0.25 * width), 1].mean()
    glia_map = hsv[inner, int(0.35 * width) : int(0.55 * width), 1].mean()
    assert photo > 0.5 and glia_map < 0.5 * photo  # the photo's colours do not compete with the map's
    bar = rgb[inner, int(0.935 * width) : int(0.94 * width)].mean(axis=1)
    assert np.abs(bar[0] - bar[-1]).sum() > 60  # the bar runs from one colour to another


def test_command_line(images, tmp_path, capsys):
    save_tiny_glia(tmp_path / "model")
    out = tmp_path / "fig.png"
    assert main(["--model", str(tmp_path / "model"), "--images", *map(str, images), "--out", str(out)]) == 0
    with Image.open(out) as png:
        assert png.size == (900, 600)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["--model", str(tmp_path / "model"), "--images", str(bad), "--out", str(tmp_path / "x.png")]) == 1
    assert "bad.png" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
