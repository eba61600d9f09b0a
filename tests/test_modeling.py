"""GLIAForImageQualityAssessment: frozen backbone, adapters, ablations, outputs and checkpoints."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import ViTConfig, ViTModel

from glia_hf import GLIAConfig, GLIAForImageQualityAssessment, GLIAImageProcessor, quality_loss
from tests.conftest import BATCH_ATOL, random_inputs, tiny_vit_config


def tiny_model(**options):
    torch.manual_seed(0)
    options.setdefault("latent_dim", 16)
    return GLIAForImageQualityAssessment(GLIAConfig(backbone_config=tiny_vit_config(), **options))


def train_step(model, inputs, labels):
    model.train()
    out = model(**inputs, labels=labels)
    out.loss.backward()
    return out


def test_vit_b16_default_has_about_8m_trainable_parameters():
    model = GLIAForImageQualityAssessment(GLIAConfig())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    print(f"ViT-B/16 GLIANet: {trainable:,} trainable, {frozen:,} frozen parameters")
    assert 7_500_000 <= trainable <= 9_500_000
    assert 85_000_000 <= frozen <= 87_000_000  # ViT-B/16 without its pooler


def test_only_adapters_projection_and_head_train():
    model = tiny_model()
    train_step(model, random_inputs(), torch.tensor([0.1, 0.5, 0.9]))
    for name, parameter in model.named_parameters():
        if name.startswith("glia.vit."):
            assert not parameter.requires_grad and parameter.grad is None, name
        else:
            assert parameter.requires_grad, name
            assert name.startswith(("glia.glia_blocks.", "glia.prior_projection.", "regressor.")), name
            assert parameter.grad is not None, name
    assert model.glia.glia_blocks["1"].global_local_refine is None  # nothing would read the last refined prior
    assert model.regressor.weight.grad is not None and model.regressor.weight.grad.abs().sum() > 0
    assert model.glia.glia_blocks["0"].up.fc2.weight.grad.abs().sum() > 0


def test_an_optimizer_step_leaves_the_backbone_unchanged():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.glia.vit.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        train_step(model, random_inputs(), torch.tensor([0.1, 0.5, 0.9]))
        optimizer.step()
        optimizer.zero_grad()
    after = model.glia.vit.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.glia.glia_blocks["1"].up.fc2.weight.abs().sum() > 0


def test_at_initialisation_the_backbone_sees_its_pretrained_input():
    model = tiny_model().eval()
    inputs = random_inputs()
    with torch.no_grad():
        glia = model.glia(**inputs).last_hidden_state
        plain = model.glia.vit(pixel_values=inputs["fragment_values"]).last_hidden_state
    torch.testing.assert_close(glia, plain)


ABLATIONS = [
    dict(use_lgf=False),
    dict(use_glr=False),
    dict(use_lgf=False, use_glr=False),
    dict(main_stream="semantic", guidance_stream="semantic"),
    dict(main_stream="detail", guidance_stream="detail"),
    dict(main_stream="semantic", guidance_stream="detail"),
    dict(lambda_shape="vector"),
    dict(glia_layers=[1]),
    dict(loss="mse"),
    dict(loss="l1"),
]


@pytest.mark.parametrize("options", ABLATIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("views", [None, 2])
def test_every_ablation_builds_runs_and_trains(options, views):
    model = tiny_model(**options)
    out = train_step(model, random_inputs(views=views), torch.tensor([0.2, 0.4, 0.7]))
    assert out.score.shape == (3,) and torch.isfinite(out.loss)
    # Every trainable parameter reaches the score, as distributed data parallel training requires.
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    expected_blocks = options.get("glia_layers", [0, 1])
    assert sorted(int(k) for k in model.glia.glia_blocks) == expected_blocks
    if not options.get("use_lgf", True):
        assert model.glia.glia_blocks["0"].local_global_fusion is None
    if not options.get("use_glr", True) or not options.get("use_lgf", True):
        assert model.glia.glia_blocks["0"].global_local_refine is None
    if not options.get("use_lgf", True):
        assert model.glia.prior_projection is None


def test_views_are_averaged():
    model = tiny_model().eval()
    inputs = random_inputs(batch=2, views=3)
    with torch.no_grad():
        averaged = model(**inputs).normalized_score
        per_view = [
            model(pixel_values=inputs["pixel_values"], fragment_values=inputs["fragment_values"][:, k]).normalized_score
            for k in range(3)
        ]
    torch.testing.assert_close(averaged, torch.stack(per_view).mean(0))


def test_scores_come_back_on_the_dataset_scale():
    model = tiny_model(score_min=1.0, score_max=5.0).eval()
    with torch.no_grad():
        out = model(**random_inputs())
    torch.testing.assert_close(out.score, 1.0 + 4.0 * out.normalized_score)
    labels = torch.tensor([1.0, 3.0, 5.0])
    torch.testing.assert_close(model.normalize_labels(labels), torch.tensor([0.0, 0.5, 1.0]))


def test_cached_guidance_gives_the_same_score():
    model = tiny_model().eval()
    inputs = random_inputs()
    with torch.no_grad():
        cached = model.glia.encode_guidance(inputs["pixel_values"])
        torch.testing.assert_close(model(**inputs, guidance_hidden_states=cached).score, model(**inputs).score)


def test_guidance_pass_has_no_autograd_graph():
    model = tiny_model()
    assert not model.glia.encode_guidance(torch.randn(1, 3, 224, 224)).requires_grad


def test_an_image_scores_the_same_alone_and_in_a_batch():
    model = tiny_model().eval()
    processor = GLIAImageProcessor()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size, dtype=np.uint8) for size in [(300, 400, 3), (224, 224, 3), (90, 700, 3)]]
    with torch.no_grad():
        batch = model(**processor(images)).score
        alone = torch.cat([model(**processor(image)).score for image in images])
        views = model(**processor(images, num_samples=3, seed=1)).score
        views_alone = torch.cat([model(**processor(image, num_samples=3, seed=1)).score for image in images])
    torch.testing.assert_close(batch, alone, rtol=0, atol=BATCH_ATOL)
    torch.testing.assert_close(views, views_alone, rtol=0, atol=BATCH_ATOL)


def test_hidden_states_and_attentions_on_request():
    model = tiny_model().eval()
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(**random_inputs(batch=2), output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape == (2, 197, 32)
    assert len(out.attentions) == 2 and out.attentions[-1].shape == (2, 2, 197, 197)
    torch.testing.assert_close(out.attentions[-1].sum(-1), torch.ones(2, 2, 197))


def test_attentions_are_recorded_once_even_after_the_backbone_recorded_its_own():
    """transformers hooks a sub-model again from its parent; GLIANet hooks at construction so that this cannot double."""
    model = tiny_model().eval()
    model.set_attn_implementation("eager")
    inputs = random_inputs(batch=1)
    with torch.no_grad():
        own = model.glia.vit(pixel_values=inputs["fragment_values"], output_attentions=True).attentions
        glia = model(**inputs, output_attentions=True).attentions
        again = model.glia.vit(pixel_values=inputs["fragment_values"], output_attentions=True).attentions
    assert len(own) == len(glia) == len(again) == 2
    # The injection starts at zero: the main stream (the fragments) is attended to as by the plain backbone.
    for mine, theirs in zip(glia, again):
        torch.testing.assert_close(mine, theirs)


def test_return_dict_false_gives_the_outputs_as_a_tuple():
    model = tiny_model().eval()
    model.set_attn_implementation("eager")
    inputs = random_inputs(batch=2)
    options = dict(output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        for module in (model, model.glia):
            as_dict = module(**inputs, **options)
            as_tuple = module(**inputs, **options, return_dict=False)
            assert isinstance(as_tuple, tuple) and len(as_tuple) == len(as_dict.to_tuple())
            for mine, theirs in zip(as_tuple, as_dict.to_tuple()):
                torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
        score, normalized, hidden_states, attentions = model(**inputs, **options, return_dict=False)
        assert score.shape == (2,) and len(hidden_states) == 3 and len(attentions) == 2
        model.config.return_dict = False  # the config's default, as transformers reads it
        score_only, normalized_only = model(**inputs)
        torch.testing.assert_close(score_only, score, rtol=0, atol=0)


def test_attentions_need_the_eager_implementation():
    model = tiny_model().eval()
    model.set_attn_implementation("sdpa")
    with pytest.raises(ValueError, match="eager"):
        model(**random_inputs(batch=1), output_attentions=True)


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(grid_size=(7, 7), fragment_size=(16, 16)), "do not fit the backbone"),
        (dict(grid_size=(14, 14), fragment_size=(16, 16), latent_dim=16), None),
        (dict(grid_size=(28, 28), fragment_size=(8, 8)), "multiple of the backbone's patch size"),
        (dict(latent_dim=30, cross_attention_heads=4), "divisible"),
        (dict(glia_layers=[5]), "not blocks"),
        (dict(main_stream="both"), "main_stream"),
        (dict(loss="hinge"), "loss"),
        (dict(score_min=5, score_max=1), "score_max"),
    ],
)
def test_config_validation(options, message):
    if message is None:
        GLIAConfig(backbone_config=tiny_vit_config(), **options)
        return
    with pytest.raises(ValueError, match=message):
        GLIAConfig(backbone_config=tiny_vit_config(), **options)


def test_bad_model_inputs_get_clear_errors():
    model = tiny_model().eval()
    good = random_inputs(batch=2)
    with pytest.raises(ValueError, match="different numbers of images: 2 and 1"):
        model(pixel_values=good["pixel_values"], fragment_values=good["fragment_values"][:1])
    with pytest.raises(ValueError, match="empty batch"):
        model(pixel_values=good["pixel_values"][:0], fragment_values=good["fragment_values"][:0])
    with pytest.raises(ValueError, match="fragment_values .* required"):
        model(pixel_values=good["pixel_values"])
    with pytest.raises(ValueError, match="fragment_values must have shape"):
        model(pixel_values=good["pixel_values"], fragment_values=good["fragment_values"][0])
    with pytest.raises(ValueError, match="labels must have shape"):
        model(**good, labels=torch.ones(3))


def test_plcc_loss():
    x = torch.tensor([0.1, 0.2, 0.3, 0.4])
    assert quality_loss(x, 2 * x + 1).item() == pytest.approx(0.0, abs=1e-6)
    assert quality_loss(x, -x).item() == pytest.approx(1.0, abs=1e-6)
    assert quality_loss(x[:1], x[:1] + 0.5).item() == pytest.approx(0.25)  # one sample: squared error


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model(score_min=1.0, score_max=100.0, score_name="test MOS").eval()
    with torch.no_grad():
        model.glia.glia_blocks["0"].up.fc2.weight.normal_()  # make the adapters matter
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    loaded = GLIAForImageQualityAssessment.from_pretrained(tmp_path).eval()
    assert loaded.config.score_name == "test MOS" and loaded.config.latent_dim == 16
    assert not any(p.requires_grad for p in loaded.glia.vit.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    inputs = random_inputs()
    with torch.no_grad():
        # Same weights; the last bits may differ because memory-mapped tensors take other BLAS code paths.
        torch.testing.assert_close(model(**inputs).score, loaded(**inputs).score, rtol=1e-6, atol=1e-6)


def test_from_backbone_loads_and_freezes_a_local_vit(tmp_path):
    torch.manual_seed(1)
    vit = ViTModel(tiny_vit_config(), add_pooling_layer=False)
    vit.save_pretrained(tmp_path / "vit")
    model = GLIAForImageQualityAssessment.from_backbone(str(tmp_path / "vit"), latent_dim=16, use_glr=False)
    assert not model.config.use_glr
    for key, value in vit.state_dict().items():
        assert torch.equal(model.glia.vit.state_dict()[key], value), key
    assert not any(p.requires_grad for p in model.glia.vit.parameters())


def test_from_backbone_with_a_config_builds_a_random_backbone():
    model = GLIAForImageQualityAssessment.from_backbone(tiny_vit_config(), latent_dim=8, cross_attention_heads=2)
    assert model.config.latent_dim == 8 and model.config.backbone_config.hidden_size == 32


def to_transformers4_layout(state_dict, prefix=""):
    """Rename transformers 5 ViT keys to the layout of transformers 4 checkpoints (as most Hub ViTs are stored)."""
    renames = [
        ("layers.", "encoder.layer."),
        ("attention.q_proj", "attention.attention.query"),
        ("attention.k_proj", "attention.attention.key"),
        ("attention.v_proj", "attention.attention.value"),
        ("attention.o_proj", "attention.output.dense"),
        ("mlp.fc1", "intermediate.dense"),
        ("mlp.fc2", "output.dense"),
    ]
    converted = {}
    for key, value in state_dict.items():
        new = key
        for old, replacement in renames:
            new = new.replace(prefix + old, prefix + replacement) if old == "layers." else new.replace(old, replacement)
        converted[new] = value.contiguous()
    return converted


def test_a_transformers4_vit_checkpoint_loads(tmp_path):
    torch.manual_seed(2)
    vit = ViTModel(tiny_vit_config(), add_pooling_layer=False)
    vit.save_pretrained(tmp_path)
    old = to_transformers4_layout(load_file(tmp_path / "model.safetensors"))
    assert "encoder.layer.0.attention.attention.query.weight" in old
    save_file(old, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model = GLIAForImageQualityAssessment.from_backbone(str(tmp_path), latent_dim=16)
    for key, value in vit.state_dict().items():
        assert torch.equal(model.glia.vit.state_dict()[key], value), key


def test_a_glia_checkpoint_in_the_transformers4_layout_loads(tmp_path):
    model = tiny_model().eval()
    model.save_pretrained(tmp_path)
    old = to_transformers4_layout(load_file(tmp_path / "model.safetensors"), prefix="glia.vit.")
    assert "glia.vit.encoder.layer.1.output.dense.weight" in old
    save_file(old, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = GLIAForImageQualityAssessment.from_pretrained(tmp_path).eval()
    inputs = random_inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).score, loaded(**inputs).score, rtol=1e-6, atol=1e-6)


def test_config_is_plain_json(tmp_path):
    GLIAConfig(backbone_config=tiny_vit_config(), score_name="x").save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "glia" and saved["backbone_config"]["hidden_size"] == 32
    assert isinstance(GLIAConfig.from_pretrained(tmp_path).backbone_config, ViTConfig)


@pytest.mark.parametrize("main_stream", ["detail", "semantic"])
def test_without_glia_blocks_the_model_is_a_plain_vit_with_a_head(main_stream):
    model = tiny_model(glia_layers=[], main_stream=main_stream).eval()
    assert model.glia.uses_prior is False
    inputs = random_inputs()
    stream = inputs["fragment_values" if main_stream == "detail" else "pixel_values"]
    with torch.no_grad():
        plain = model.glia.vit(pixel_values=stream).last_hidden_state[:, 0]
        torch.testing.assert_close(model(**{"pixel_values" if main_stream == "semantic" else "fragment_values": stream}).normalized_score,
                                   model.regressor(plain).squeeze(-1))


def test_glr_without_lgf_is_accepted_and_recorded_as_inactive(tmp_path):
    """GLR refines the prior that only LGF reads: `use_glr` with `use_lgf=False` is accepted (older commands set it so),
    builds no GLR step, and config.json says so (`glr_active`)."""
    config = GLIAConfig(backbone_config=tiny_vit_config(), use_lgf=False, use_glr=True)
    assert config.glr_active is False and config.use_glr is True
    assert GLIAConfig(backbone_config=tiny_vit_config()).glr_active is True
    model = GLIAForImageQualityAssessment(config)
    assert not any("global_local_refine" in name for name, _ in model.named_parameters())
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["glr_active"] is False
    assert GLIAConfig.from_pretrained(tmp_path).glr_active is False
