"""Loading the frozen backbone: timm ViT checkpoints are converted, and every backbone weight must load."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import ViTForImageClassification, ViTModel

from glia_hf import GLIAForImageQualityAssessment
from glia_hf import convert_timm
from glia_hf.convert_timm import load_timm_vit, timm_normalisation
from tests.conftest import tiny_vit_config


# A tiny timm "vit_small" (6 heads, as timm's small size; 48 wide so that the heads are 8 wide), 2 blocks, 224 px.
DIM, DEPTH, HEADS, MLP, PATCH, IMAGE = 48, 2, 6, 96, 16, 224
TIMM_MEAN, TIMM_STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


def timm_state_dict(seed=0, qkv_bias=True):
    """Random weights under timm's ViT keys, with layer-norm scales and biases away from 1 and 0."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, std=0.05, mean=0.0):
        return torch.randn(*shape, generator=generator) * std + mean

    tokens = (IMAGE // PATCH) ** 2 + 1
    state = {
        "patch_embed.proj.weight": rand(DIM, 3, PATCH, PATCH),
        "patch_embed.proj.bias": rand(DIM),
        "cls_token": rand(1, 1, DIM, std=0.5),
        "pos_embed": rand(1, tokens, DIM, std=0.5),
        "norm.weight": rand(DIM, std=0.2, mean=1.0),
        "norm.bias": rand(DIM, std=0.2),
        "head.weight": rand(10, DIM),
        "head.bias": rand(10),
    }
    for n in range(DEPTH):
        block = f"blocks.{n}."
        state.update({
            block + "norm1.weight": rand(DIM, std=0.2, mean=1.0), block + "norm1.bias": rand(DIM, std=0.2),
            block + "attn.qkv.weight": rand(3 * DIM, DIM, std=0.3),
            block + "attn.proj.weight": rand(DIM, DIM, std=0.2), block + "attn.proj.bias": rand(DIM),
            block + "norm2.weight": rand(DIM, std=0.2, mean=1.0), block + "norm2.bias": rand(DIM, std=0.2),
            block + "mlp.fc1.weight": rand(MLP, DIM, std=0.2), block + "mlp.fc1.bias": rand(MLP),
            block + "mlp.fc2.weight": rand(DIM, MLP, std=0.2), block + "mlp.fc2.bias": rand(DIM),
        })
        if qkv_bias:
            state[block + "attn.qkv.bias"] = rand(3 * DIM, std=0.2)
    return state


def write_timm_folder(path, state, architecture="vit_small_patch16_224", model_args=None):
    """A folder in the layout timm publishes on the Hub: config.json (architecture, pretrained_cfg) + safetensors."""
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "architecture": architecture,
        "num_classes": 10,
        "num_features": DIM,
        "global_pool": "token",
        "pretrained_cfg": {
            "tag": "test",
            "input_size": [3, IMAGE, IMAGE],
            "fixed_input_size": True,
            "interpolation": "bicubic",
            "crop_pct": 0.9,
            "mean": TIMM_MEAN,
            "std": TIMM_STD,
            "num_classes": 10,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
        },
    }
    if model_args is not None:
        config["model_args"] = model_args
    (path / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in state.items()}, path / "model.safetensors", metadata={"format": "pt"})
    return path


def reference_timm_forward(state, pixels, heads, eps=1e-6):
    """A timm ViT's tokens after the final norm, computed in plain torch straight from timm's tensors.

    Pre-norm blocks: x + proj(attention(norm1(x))), then x + fc2(gelu(fc1(norm2(x)))); the fused qkv weight holds
    the query, key and value rows in that order, each split into `heads` heads.
    """
    batch = pixels.shape[0]
    tokens = F.conv2d(pixels, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=PATCH)
    tokens = tokens.flatten(2).transpose(1, 2)
    x = torch.cat([state["cls_token"].expand(batch, -1, -1), tokens], dim=1) + state["pos_embed"]
    length, width = x.shape[1], x.shape[2]
    head_dim = width // heads
    for n in range(DEPTH):
        p = lambda name: state.get(f"blocks.{n}.{name}")  # noqa: E731
        h = F.layer_norm(x, (width,), p("norm1.weight"), p("norm1.bias"), eps)
        qkv = F.linear(h, p("attn.qkv.weight"), p("attn.qkv.bias"))
        q, k, v = qkv.reshape(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-2, -1) / head_dim**0.5, dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(batch, length, width)
        x = x + F.linear(attended, p("attn.proj.weight"), p("attn.proj.bias"))
        h = F.layer_norm(x, (width,), p("norm2.weight"), p("norm2.bias"), eps)
        x = x + F.linear(F.gelu(F.linear(h, p("mlp.fc1.weight"), p("mlp.fc1.bias"))), p("mlp.fc2.weight"),
                         p("mlp.fc2.bias"))
    return F.layer_norm(x, (width,), state["norm.weight"], state["norm.bias"], eps)


def test_a_timm_folder_converts_to_the_same_token_outputs(tmp_path):
    state = timm_state_dict()
    folder = write_timm_folder(tmp_path / "timm_vit", state)
    model = GLIAForImageQualityAssessment.from_backbone(str(folder), latent_dim=16)
    vit_config = model.config.backbone_config
    assert (vit_config.hidden_size, vit_config.num_hidden_layers, vit_config.num_attention_heads) == (DIM, DEPTH, HEADS)
    assert (vit_config.intermediate_size, vit_config.patch_size, vit_config.image_size) == (MLP, PATCH, IMAGE)
    assert vit_config.layer_norm_eps == 1e-6 and vit_config.qkv_bias
    assert not any(p.requires_grad for p in model.glia.vit.parameters())

    pixels = torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        tokens = model.glia.vit(pixel_values=pixels).last_hidden_state
        expected = reference_timm_forward(state, pixels, HEADS)
    assert tokens.shape == (2, (IMAGE // PATCH) ** 2 + 1, DIM)
    torch.testing.assert_close(tokens, expected, rtol=0, atol=1e-5)
    with torch.no_grad():  # the comparison can fail: the same weights split into other heads give other tokens
        assert (reference_timm_forward(state, pixels, heads=3) - tokens).abs().max() > 1e-3


def test_a_timm_checkpoint_without_qkv_bias_and_with_model_args_heads(tmp_path):
    state = timm_state_dict(seed=1, qkv_bias=False)
    folder = write_timm_folder(tmp_path / "vit", state, architecture="vit_custom_patch16_224",
                               model_args={"num_heads": 3})
    vit = load_timm_vit(folder)
    assert vit.config.num_attention_heads == 3 and not vit.config.qkv_bias
    pixels = torch.randn(1, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(vit(pixel_values=pixels).last_hidden_state,
                                   reference_timm_forward(state, pixels, 3), rtol=0, atol=1e-5)


def test_a_timm_architecture_of_unknown_size_without_num_heads_is_an_error(tmp_path):
    folder = write_timm_folder(tmp_path / "vit", timm_state_dict(), architecture="vit_custom_patch16_224")
    with pytest.raises(ValueError, match="num_heads"):
        load_timm_vit(folder)


def test_a_timm_folder_missing_backbone_weights_names_them(tmp_path):
    state = timm_state_dict()
    del state["norm.weight"], state["blocks.1.mlp.fc1.bias"]
    folder = write_timm_folder(tmp_path / "vit", state)
    with pytest.raises(ValueError, match="lacks backbone weights") as error:
        GLIAForImageQualityAssessment.from_backbone(str(folder))
    assert "norm.weight" in str(error.value) and "blocks.*.mlp.fc1.bias" in str(error.value)


def test_a_timm_variant_with_weights_vit_has_no_place_for_is_refused(tmp_path):
    state = timm_state_dict()
    for n in range(DEPTH):
        state[f"blocks.{n}.ls1.gamma"] = torch.ones(DIM)  # layer scale: ViTModel has none
    folder = write_timm_folder(tmp_path / "vit", state)
    with pytest.raises(ValueError, match=r"blocks\.\*\.ls1\.gamma"):
        load_timm_vit(folder)


def test_a_timm_hub_id_is_downloaded_through_huggingface_hub(tmp_path, monkeypatch):
    folder = write_timm_folder(tmp_path / "hub", timm_state_dict())
    asked = []

    def fake_hf_hub_download(repo_id, filename, **kwargs):  # the Hub boundary, served from the folder
        asked.append((repo_id, filename))
        return str(folder / filename)

    monkeypatch.setattr(convert_timm, "hf_hub_download", fake_hf_hub_download)
    repo_id = "timm/vit_small_patch16_224.test"
    model = GLIAForImageQualityAssessment.from_backbone(repo_id, latent_dim=16)
    assert (repo_id, "config.json") in asked and (repo_id, "model.safetensors") in asked
    assert torch.equal(model.glia.vit.embeddings.cls_token, timm_state_dict()["cls_token"])
    assert timm_normalisation(repo_id) == (TIMM_MEAN, TIMM_STD)


def test_a_transformers_folder_missing_backbone_weights_names_them(tmp_path):
    ViTModel(tiny_vit_config(), add_pooling_layer=False).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["layernorm.weight"], weights["encoder.layer.1.intermediate.dense.weight"]  # saved in the v4 layout
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="missing") as error:
        GLIAForImageQualityAssessment.from_backbone(str(tmp_path))
    assert "layernorm.weight" in str(error.value) and "layers.*.mlp.fc1.weight" in str(error.value)


def test_a_transformers_classifier_checkpoint_loads_its_vit_and_ignores_the_classifier(tmp_path):
    torch.manual_seed(3)
    classifier = ViTForImageClassification(tiny_vit_config(num_labels=5))
    classifier.save_pretrained(tmp_path)
    model = GLIAForImageQualityAssessment.from_backbone(str(tmp_path), latent_dim=16)
    for key, value in classifier.vit.state_dict().items():
        assert torch.equal(model.glia.vit.state_dict()[key], value), key


def test_normalisation_comes_from_the_timm_config_unless_the_training_config_sets_it(tmp_path):
    from training.config import TrainConfig
    from training.train import backbone_normalisation

    folder = write_timm_folder(tmp_path / "vit", timm_state_dict())
    (tmp_path / "transformers").mkdir()
    assert timm_normalisation(folder) == (TIMM_MEAN, TIMM_STD)
    assert timm_normalisation(tmp_path / "transformers") is None
    config = TrainConfig()
    config.model.backbone = str(folder)
    assert backbone_normalisation(config) == (TIMM_MEAN, TIMM_STD)
    imagenet_mean, imagenet_std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    config.model.image_mean, config.model.image_std = imagenet_mean, imagenet_std
    assert backbone_normalisation(config) == (imagenet_mean, imagenet_std)


def test_a_model_built_on_a_timm_backbone_saves_and_reloads_without_conversion(tmp_path):
    folder = write_timm_folder(tmp_path / "timm_vit", timm_state_dict())
    model = GLIAForImageQualityAssessment.from_backbone(str(folder), latent_dim=16).eval()
    model.save_pretrained(tmp_path / "glia")
    assert (tmp_path / "glia" / "convert_timm.py").is_file()  # imported by modeling_glia.py, so shipped with it
    saved = json.loads((tmp_path / "glia" / "config.json").read_text())["backbone_config"]
    assert saved["layer_norm_eps"] == 1e-6 and saved["num_attention_heads"] == HEADS
    loaded = GLIAForImageQualityAssessment.from_pretrained(tmp_path / "glia").eval()
    pixels = torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixels, fragment_values=pixels).score,
                                   model(pixel_values=pixels, fragment_values=pixels).score, rtol=1e-6, atol=1e-6)
