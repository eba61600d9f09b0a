"""GLIANet on every ViT-family backbone of glia_hf.backbones, each as a tiny random config made here."""

import json
import textwrap

import pytest
import torch

from glia_hf import GLIAConfig, GLIAForImageQualityAssessment
from glia_hf.backbones import FAMILIES, backbone_config_from, default_fragments
from glia_hf.methods import build_model, count_parameters
from tests.conftest import BATCH_ATOL, run_without_glia_hf


TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
# One tiny config per family (model_type -> fields) and the GLIA options that go with it. DINOv2's config states a
# 70-px pre-training size and the model runs at 56 px, so its position embeddings are interpolated, as at base size.
FAMILY_CASES = {
    "vit": (dict(model_type="vit", **TINY, intermediate_size=64, image_size=64, patch_size=16), {}),
    "deit": (dict(model_type="deit", **TINY, intermediate_size=64, image_size=64, patch_size=16), {}),
    "dinov2": (dict(model_type="dinov2", **TINY, mlp_ratio=2, image_size=70, patch_size=14), {"image_size": 56}),
    "dinov2_with_registers": (
        dict(model_type="dinov2_with_registers", **TINY, mlp_ratio=2, image_size=70, patch_size=14,
             num_register_tokens=3),
        {"image_size": 56},
    ),
    "clip_vision_model": (
        dict(model_type="clip_vision_model", **TINY, intermediate_size=64, image_size=64, patch_size=16), {}
    ),
    "siglip_vision_model": (
        dict(model_type="siglip_vision_model", **TINY, intermediate_size=64, image_size=64, patch_size=16), {}
    ),
}
LEADING_TOKENS = {"vit": 1, "deit": 2, "dinov2": 1, "dinov2_with_registers": 4, "clip_vision_model": 1,
                  "siglip_vision_model": 0}
FAMILY_IDS = list(FAMILY_CASES)
GLIA = dict(latent_dim=8, cross_attention_heads=2, score_min=1.0, score_max=5.0)


def make_model(family, seed=0, **options):
    backbone, glia = FAMILY_CASES[family]
    torch.manual_seed(seed)
    return GLIAForImageQualityAssessment.from_backbone(dict(backbone), **{**GLIA, **glia, **options})


def inputs_for(model, batch=3, seed=0):
    size = model.config.image_size
    generator = torch.Generator().manual_seed(seed)
    return {
        "pixel_values": torch.randn(batch, 3, size, size, generator=generator),
        "fragment_values": torch.randn(batch, 3, size, size, generator=generator),
    }


def perturb_injection(model, std=0.1):
    """Make the GLIA injection non-zero (it starts at exactly zero), so that the blocks matter."""
    with torch.no_grad():
        for block in model.glia.glia_blocks.values():
            block.up.fc2.weight.normal_(std=std)


def test_every_family_has_a_case():
    assert set(FAMILY_CASES) == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_zero_injection_gives_the_backbones_own_output(family):
    model = make_model(family).eval()
    spec = model.glia.backbone_spec
    inputs = inputs_for(model)
    with torch.no_grad():
        out = model.glia(**inputs, output_hidden_states=True)
        backbone = model.glia.vit
        size = model.config.image_size
        native = backbone.config.image_size
        extra = {"interpolate_pos_encoding": True} if spec.interpolation_flag and size != native else {}
        own = backbone(pixel_values=inputs["fragment_values"], **extra)
    patches = (size // backbone.config.patch_size) ** 2
    assert model.glia.num_leading_tokens == LEADING_TOKENS[family]
    assert out.last_hidden_state.shape == (3, LEADING_TOKENS[family] + patches, 32)
    assert model.glia.uses_prior and len(model.glia.glia_blocks) == 2  # the GLIA path really ran
    if family == "clip_vision_model":
        # CLIP's last_hidden_state has no final norm: compare the last block's tokens, and the pooled CLS token
        # after post_layernorm (CLIP's pooler_output) with what the head reads.
        torch.testing.assert_close(out.hidden_states[-1], own.last_hidden_state, atol=1e-6, rtol=0)
    else:
        torch.testing.assert_close(out.last_hidden_state, own.last_hidden_state, atol=1e-6, rtol=0)
    pooled = own.pooler_output if own.pooler_output is not None else own.last_hidden_state[:, 0]
    torch.testing.assert_close(out.pooler_output, pooled, atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_a_training_step_changes_only_the_glia_parameters_and_the_head(family):
    model = make_model(family).train()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith(("glia.glia_blocks.", "glia.prior_projection.", "regressor."))
                             for name in trainable), sorted(trainable)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = model(**inputs_for(model, batch=4), labels=torch.tensor([1.0, 2.0, 4.0, 5.0])).loss
    loss.backward()
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed <= trainable
    assert any(name.startswith("glia.glia_blocks.") for name in changed) and "regressor.weight" in changed


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_save_and_load_give_the_same_scores(family, tmp_path):
    model = make_model(family).eval()
    perturb_injection(model)
    inputs = inputs_for(model)
    with torch.no_grad():
        expected = model(**inputs).score
    model.save_pretrained(tmp_path / family)
    config = json.loads((tmp_path / family / "config.json").read_text())
    assert config["backbone_config"]["model_type"] == family
    loaded = GLIAForImageQualityAssessment.from_pretrained(tmp_path / family).eval()
    assert type(loaded.glia.vit) is type(model.glia.vit)
    assert not any(p.requires_grad for p in loaded.glia.vit.parameters())
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).score, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_a_score_alone_equals_the_score_in_a_batch(family):
    model = make_model(family).eval()
    perturb_injection(model)
    inputs = inputs_for(model, batch=4)
    with torch.no_grad():
        batched = model(**inputs).score
        alone = torch.cat([model(**{k: v[i : i + 1] for k, v in inputs.items()}).score for i in range(4)])
    torch.testing.assert_close(alone, batched, atol=BATCH_ATOL, rtol=0)


# Runs through `run_without_glia_hf`: loads every saved family with remote code and prints its scores.
REMOTE_SCORES = textwrap.dedent(
    """
    import json, sys

    import torch
    from transformers import AutoModel

    results = {}
    for directory in sys.argv[1:]:
        model = AutoModel.from_pretrained(directory, trust_remote_code=True).eval()
        inputs = torch.load(f"{directory}/inputs.pt")
        with torch.no_grad():
            results[directory] = {"score": model(**inputs).score.tolist(), "backbone": type(model.glia.vit).__name__,
                                  "module": type(model).__module__}
    print(json.dumps(results))
    """
)


def test_every_family_loads_with_remote_code_without_glia_hf(tmp_path, offline_hf_home):
    expected, directories = {}, []
    for family in FAMILY_IDS:
        model = make_model(family).eval()
        perturb_injection(model)
        inputs = inputs_for(model, batch=2)
        directory = tmp_path / family
        model.save_pretrained(directory)
        torch.save(inputs, directory / "inputs.pt")
        assert (directory / "backbones.py").is_file()
        with torch.no_grad():
            expected[str(directory)] = (model(**inputs).score.tolist(), type(model.glia.vit).__name__)
        directories.append(directory)
    result = run_without_glia_hf(REMOTE_SCORES, *directories, cwd=tmp_path, hf_home=offline_hf_home)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    for directory, (scores, backbone) in expected.items():
        assert loaded[directory]["module"].startswith("transformers_modules.")
        assert loaded[directory]["backbone"] == backbone
        torch.testing.assert_close(torch.tensor(loaded[directory]["score"]), torch.tensor(scores), atol=1e-6, rtol=0)


METHOD_OPTIONS = {
    "linear_probe": None,
    "full_finetune": None,
    "lora": {"r": 2, "target_modules": ["q_proj", "v_proj", "o_proj"]},
    "adapter": {"bottleneck": 4},
    "houlsby": {"bottleneck": 4, "adapter_type": "houlsby"},
    "vpt": {"num_prompts": 3},
}


@pytest.mark.parametrize("family", FAMILY_IDS)
@pytest.mark.parametrize("variant", list(METHOD_OPTIONS))
def test_every_table6_method_builds_and_trains_on_every_family(family, variant):
    method = "adapter" if variant == "houlsby" else variant
    backbone, glia = FAMILY_CASES[family]
    torch.manual_seed(0)
    model = build_model(method, dict(backbone), METHOD_OPTIONS[variant], **{**GLIA, **glia}).train()
    spec = model.glia.backbone_spec
    trainable, total = count_parameters(model)
    assert 0 < trainable <= total
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    if method == "lora":
        lora = [name for name in names if "lora_" in name]
        assert lora and all(name.startswith(f"glia.vit.{spec.blocks}.") for name in lora)
        # each family's own name for the attention output projection
        assert any(f".{spec.projections['o_proj']}.lora_" in name for name in lora), lora
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    out = model(**inputs_for(model, batch=3), labels=torch.tensor([1.0, 3.0, 5.0]))
    assert out.score.shape == (3,) and torch.isfinite(out.loss)
    out.loss.backward()
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and changed <= set(names)
    assert "regressor.weight" in changed
    if method != "full_finetune":
        assert not any(name.startswith("glia.vit.") and "lora_" not in name and "adapter" not in name
                       and "prompts" not in name for name in changed), sorted(changed)


@pytest.mark.parametrize("family", ["deit", "dinov2_with_registers", "siglip_vision_model"])
def test_vpt_prompts_go_in_after_the_leading_tokens(family):
    """The prompts sit between the special tokens and the patches, and leave no trace in the token layout."""
    backbone, glia = FAMILY_CASES[family]
    model = build_model("vpt", dict(backbone), {"num_prompts": 2, "layers": [0]}, **{**GLIA, **glia}).eval()
    layer = model.glia.backbone_blocks[0]
    lead = LEADING_TOKENS[family]
    assert layer.num_leading_tokens == lead
    seen = []
    handle = layer.base_layer.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    tokens = torch.randn(2, lead + 16, 32)
    with torch.no_grad():
        output = layer(tokens, None)
    handle.remove()
    assert output.shape == tokens.shape
    torch.testing.assert_close(seen[0][:, :lead], tokens[:, :lead])
    torch.testing.assert_close(seen[0][:, lead : lead + 2], layer.prompts.expand(2, -1, -1))
    torch.testing.assert_close(seen[0][:, lead + 2 :], tokens[:, lead:])


def test_default_geometry_per_family():
    assert default_fragments(224, 16) == (7, 32)
    assert default_fragments(224, 14) == (8, 28)
    assert default_fragments(224, 32) == (7, 32)
    dinov2 = GLIAConfig(backbone_config={"model_type": "dinov2", "image_size": 518, "patch_size": 14})
    assert (dinov2.image_size, dinov2.grid_size, dinov2.fragment_size) == (224, [8, 8], [28, 28])
    clip = GLIAConfig(backbone_config={"model_type": "clip_vision_model", "patch_size": 16})
    assert (clip.image_size, clip.grid_size, clip.fragment_size) == (224, [7, 7], [32, 32])
    with pytest.raises(ValueError, match="multiple of the backbone's patch size"):
        GLIAConfig(backbone_config={"model_type": "dinov2", "patch_size": 14}, grid_size=(7, 7), fragment_size=(32, 32))


def test_backbone_dicts_pick_the_family_and_old_vit_dicts_still_load():
    old = GLIAConfig(backbone_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2})
    assert type(old.backbone_config).__name__ == "ViTConfig"
    tower = backbone_config_from({"model_type": "clip", "vision_config": {"hidden_size": 48, "patch_size": 32}})
    assert type(tower).__name__ == "CLIPVisionConfig" and tower.hidden_size == 48
    with pytest.raises(ValueError, match="model_type 'swin' is not supported"):
        backbone_config_from({"model_type": "swin"})


@pytest.mark.parametrize("two_tower", ["clip", "siglip"])
def test_from_backbone_takes_the_vision_tower_of_a_two_tower_checkpoint(two_tower, tmp_path):
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    tower = dict(**TINY, intermediate_size=64)
    config_class, model_class = (CLIPConfig, CLIPModel) if two_tower == "clip" else (SiglipConfig, SiglipModel)
    torch.manual_seed(0)
    full = model_class(config_class(vision_config=dict(tower, image_size=64, patch_size=16), text_config=tower))
    full.save_pretrained(tmp_path / two_tower)
    stated_mean, stated_std = [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]
    (tmp_path / two_tower / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": stated_mean, "image_std": stated_std})
    )
    model = GLIAForImageQualityAssessment.from_backbone(str(tmp_path / two_tower), **GLIA)
    assert type(model.glia.vit).__name__ == type(full.vision_model).__name__
    for name, value in full.vision_model.state_dict().items():
        torch.testing.assert_close(model.glia.vit.state_dict()[name], value, atol=0, rtol=0)
    assert not any(p.requires_grad for p in model.glia.vit.parameters())
    assert (model.config.image_mean, model.config.image_std) == (stated_mean, stated_std)
    from glia_hf import GLIAImageProcessor

    processor = GLIAImageProcessor.from_config(model.config)
    assert (processor.image_mean, processor.image_std, processor.image_size) == (stated_mean, stated_std, 64)


def test_from_backbone_refuses_a_checkpoint_missing_backbone_weights(tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers import Dinov2Config, Dinov2Model

    Dinov2Model(Dinov2Config(**TINY, mlp_ratio=2, image_size=56, patch_size=14)).save_pretrained(tmp_path / "d")
    weights = load_file(tmp_path / "d" / "model.safetensors")
    del weights["layernorm.weight"]
    save_file(weights, tmp_path / "d" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"does not hold all the weights of a Dinov2Model; missing: .*layernorm\.weight"):
        GLIAForImageQualityAssessment.from_backbone(str(tmp_path / "d"), **GLIA)


def test_random_backbones_get_their_familys_normalisation():
    model = make_model("clip_vision_model")
    assert model.config.image_mean == list(FAMILIES["clip_vision_model"].image_mean)
    assert make_model("dinov2").config.image_std == [0.229, 0.224, 0.225]


def test_attention_maps_skip_the_leading_tokens():
    from eval.attention_maps import _cls_map, compute_attention_maps

    attention = torch.rand(2, 3, 4 + 16, 4 + 16)
    torch.testing.assert_close(_cls_map(attention, (4, 4), 4), attention[:, :, 0, 4:].mean(1).reshape(2, 4, 4))
    no_cls = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(_cls_map(no_cls, (4, 4), 0), no_cls.mean(dim=(1, 2)).reshape(2, 4, 4))

    model = make_model("dinov2_with_registers")
    perturb_injection(model)
    images = [torch.rand(3, 80, 90), torch.rand(3, 70, 70)]
    maps = compute_attention_maps(model, images)
    assert maps.glia.shape == maps.vit.shape == (2, 4, 4)
