"""glia_hf.methods: every fine-tuning method of paper Table 6 on the one model class, its gradients and its exports."""

import re

import pytest
import torch
from transformers import ViTConfig

from glia_hf import GLIAForImageQualityAssessment
from glia_hf.methods import (
    METHODS,
    AdapterMethodConfig,
    BottleneckAdapter,
    PromptedViTLayer,
    build_model,
    count_parameters,
    load_method_checkpoint,
    merge_for_export,
    save_method_checkpoint,
)
from glia_hf.methods.__main__ import format_table, parameter_table
from tests.conftest import random_inputs, tiny_vit_config


# Small options so the tiny ViT (hidden 32) gets small modules; `None` = the method's defaults.
TINY_OPTIONS = {
    "glia": None,
    "linear_probe": None,
    "full_finetune": None,
    "lora": {"r": 4, "alpha": 8},
    "adapter": {"bottleneck": 8},
    "adapter_houlsby": {"bottleneck": 8, "adapter_type": "houlsby"},
    "vpt": {"num_prompts": 5},
}
VARIANTS = list(TINY_OPTIONS)

# Names of the parameters that must train, per variant; every other parameter must stay frozen.
TRAINABLE = {
    "glia": r"glia\.(glia_blocks|prior_projection)\..*|regressor\..*",
    "linear_probe": r"regressor\..*",
    "full_finetune": r"glia\.vit\..*|regressor\..*",
    "lora": r"glia\.vit\.layers\.\d+\.attention\.(q_proj|v_proj)\.lora_[AB]\.default\.weight|regressor\..*",
    "adapter": r"glia\.vit\.layers\.\d+\.mlp\.(adapter\.(down|up)\.(weight|bias)|adapter_scale)|regressor\..*",
    "adapter_houlsby": r"glia\.vit\.layers\.\d+\.(attention\.o_proj|mlp\.fc2)\.adapter\.(down|up)\.(weight|bias)"
    r"|regressor\..*",
    "vpt": r"glia\.vit\.layers\.\d+\.prompts|regressor\..*",
}


def method_of(variant):
    return variant.split("_houlsby")[0]


def tiny(variant, seed=0, **glia_options):
    torch.manual_seed(seed)
    glia_options.setdefault("latent_dim", 16)
    return build_model(method_of(variant), tiny_vit_config(), TINY_OPTIONS[variant], **glia_options)


LABELS = torch.tensor([0.1, 0.5, 0.9])


def scores(model, inputs):
    model.eval()
    with torch.no_grad():
        return model(**inputs).normalized_score


def train_steps(model, steps=1, lr=1e-2):
    """A few AdamW steps on the trainable parameters only, as the training loop does."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for step in range(steps):
        optimizer.zero_grad()
        model(**random_inputs(seed=step), labels=LABELS).loss.backward()
        optimizer.step()


@pytest.mark.parametrize("variant", VARIANTS)
def test_only_the_methods_parameters_get_gradients(variant):
    model = tiny(variant)
    assert type(model) is GLIAForImageQualityAssessment and model.glia_method == method_of(variant)
    pattern = re.compile(TRAINABLE[variant])
    model.train()
    out = model(**random_inputs(), labels=LABELS)
    assert out.score.shape == (3,) and torch.isfinite(out.loss)
    out.loss.backward()
    trained = []
    for name, parameter in model.named_parameters():
        if pattern.fullmatch(name):
            assert parameter.requires_grad, name
            assert parameter.grad is not None, name
            trained.append(name)
        else:
            assert not parameter.requires_grad and parameter.grad is None, name
    assert model.regressor.weight.grad.abs().sum() > 0
    if variant not in ("glia", "linear_probe", "full_finetune"):
        assert len(trained) > 2, "the method added no trainable parameter"
        # The zero-initialised halves (LoRA B, adapter up-projections) and the prompts already get a signal.
        signal = [n for n in trained if re.search(r"lora_B|adapter\.up\.weight|prompts", n)]
        assert signal and all(model.get_parameter(n).grad.abs().sum() > 0 for n in signal)


@pytest.mark.parametrize("variant", VARIANTS)
def test_an_optimizer_step_leaves_the_frozen_vit_unchanged(variant):
    model = tiny(variant)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train_steps(model, steps=2)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert not changed & frozen
    assert "regressor.weight" in changed
    vit_weights = {name for name in before if name.startswith("glia.vit.") and not re.fullmatch(TRAINABLE[variant], name)}
    if variant == "full_finetune":
        assert "glia.vit.layers.0.attention.q_proj.weight" in changed
        assert not vit_weights
    else:
        # Every pre-trained ViT weight (its name now maybe one `base_layer` deeper) is frozen.
        assert vit_weights and vit_weights <= frozen
        plain = sum(p.numel() for p in tiny("linear_probe").glia.vit.parameters())
        assert sum(before[name].numel() for name in vit_weights) == plain


def test_trainable_counts_are_ordered_and_exact():
    counts = {variant: count_parameters(tiny(variant)) for variant in VARIANTS}
    for variant, (trainable, total) in counts.items():
        print(f"tiny ViT, {variant}: {trainable:,} trainable of {total:,}")
    head = 32 + 1
    assert counts["linear_probe"][0] == head
    assert counts["vpt"][0] == 2 * 5 * 32 + head  # 2 blocks x 5 prompts x hidden
    assert counts["lora"][0] == 2 * 2 * (32 * 4 + 4 * 32) + head  # 2 blocks x (q, v) x (A + B), r=4
    bottleneck = 32 * 8 + 8 + 8 * 32 + 32
    assert counts["adapter"][0] == 2 * (bottleneck + 1) + head  # + AdaptFormer's scale
    assert counts["adapter_houlsby"][0] == 2 * 2 * bottleneck + head
    plain_vit = sum(p.numel() for p in tiny("linear_probe").glia.vit.parameters())
    assert counts["full_finetune"][0] == plain_vit + head
    for variant in ("vpt", "lora", "adapter", "adapter_houlsby"):
        assert counts["linear_probe"][0] < counts[variant][0] < counts["full_finetune"][0]
        assert counts[variant][1] == counts["linear_probe"][1] + counts[variant][0] - head


def test_vit_b16_parameter_table():
    rows = parameter_table()
    print("\n" + format_table(rows))
    trainable = {method + ("_houlsby" if "Houlsby" in setting else ""): count for method, setting, count, _ in rows}
    head = 768 + 1
    assert trainable == {
        "glia": trainable["glia"],
        "linear_probe": head,
        "full_finetune": 85_798_656 + head,  # ViT-B/16 without its pooler
        "lora": 12 * 2 * (768 * 8 + 8 * 768) + head,
        "adapter": 12 * (768 * 64 + 64 + 64 * 768 + 768 + 1) + head,
        "adapter_houlsby": 12 * 2 * (768 * 64 + 64 + 64 * 768 + 768) + head,
        "vpt": 12 * 10 * 768 + head,
        # every bias: patch embedding, per block q/k/v/o + fc1 + fc2 + both layer norms, the final layer norm
        "bitfit": 768 + 12 * (4 * 768 + 3072 + 768 + 2 * 768) + 768 + head,
    }
    assert 7_500_000 <= trainable["glia"] <= 9_500_000


@pytest.mark.parametrize("variant", ["adapter", "adapter_houlsby", "lora"])
def test_zero_initialised_methods_start_as_the_linear_probe(variant):
    inputs = random_inputs()
    probe, model = tiny("linear_probe"), tiny(variant)
    torch.testing.assert_close(scores(model, inputs), scores(probe, inputs), rtol=0, atol=1e-6)


def test_prompts_change_the_output_at_initialisation():
    inputs = random_inputs()
    probe, model = tiny("linear_probe"), tiny("vpt")
    assert not torch.allclose(scores(model, inputs), scores(probe, inputs), atol=1e-4)
    # Jia et al.'s initialisation: uniform within the Xavier bound of the patch embedding's fan-in.
    bound = (6 / (3 * 16 * 16 + 32)) ** 0.5
    prompts = model.glia.vit.layers[0].prompts
    assert prompts.shape == (5, 32) and prompts.abs().max() <= bound and prompts.abs().max() > bound / 2


def test_prompts_only_visit_their_own_block():
    model = tiny("vpt").eval()
    layer = model.glia.vit.layers[1]
    assert isinstance(layer, PromptedViTLayer)
    hidden = torch.randn(2, 197, 32)
    with torch.no_grad():
        out = layer(hidden)
        expected = layer.base_layer(torch.cat([hidden[:, :1], layer.prompts.expand(2, -1, -1), hidden[:, 1:]], 1))
    assert out.shape == hidden.shape
    torch.testing.assert_close(out, torch.cat([expected[:, :1], expected[:, 6:]], 1))


def test_method_options_choose_blocks():
    model = build_model("vpt", tiny_vit_config(), {"layers": [1], "num_prompts": 3})
    assert [type(layer) for layer in model.glia.vit.layers][1] is PromptedViTLayer
    assert not isinstance(model.glia.vit.layers[0], PromptedViTLayer)
    model = build_model("adapter", tiny_vit_config(), AdapterMethodConfig(bottleneck=4, layers=[0]))
    assert sum(isinstance(m, BottleneckAdapter) for m in model.modules()) == 1
    model = build_model("lora", tiny_vit_config(), {"target_modules": ["q_proj", "fc1"]})
    lora = {n.rsplit(".lora_", 1)[0] for n, _ in model.named_parameters() if ".lora_" in n}
    assert lora == {f"glia.vit.layers.{i}.{m}" for i in (0, 1) for m in ("attention.q_proj", "mlp.fc1")}


@pytest.mark.parametrize("variant", ["vpt", "adapter", "lora"])
def test_views_semantic_stream_and_bf16_autocast(variant):
    model = tiny(variant, main_stream="semantic")
    assert model(pixel_values=random_inputs()["pixel_values"]).score.shape == (3,)
    model = tiny(variant).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**random_inputs(views=2), labels=LABELS)
    out.loss.float().backward()
    assert out.score.shape == (3,) and model.regressor.weight.grad is not None


def test_attention_maps_with_prompts():
    model = tiny("vpt")
    model.set_attn_implementation("eager")
    out = model(**random_inputs(batch=2), output_attentions=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 2, 197 + 5, 197 + 5)


def test_lora_merges_into_a_plain_model_with_the_same_scores(tmp_path):
    model = tiny("lora")
    train_steps(model, steps=3)
    inputs = random_inputs(seed=7)
    before = scores(model, inputs)
    assert not torch.allclose(before, scores(tiny("linear_probe"), inputs), atol=1e-4), "LoRA did not train"
    merged = merge_for_export(model)
    assert type(merged) is GLIAForImageQualityAssessment
    assert not any("lora" in name or "base_layer" in name for name in merged.state_dict())
    assert not hasattr(merged, "peft_config")
    torch.testing.assert_close(scores(merged, inputs), before, rtol=0, atol=1e-5)
    assert count_parameters(merged) == count_parameters(tiny("linear_probe"))
    merged.save_pretrained(tmp_path)
    reloaded = GLIAForImageQualityAssessment.from_pretrained(tmp_path)
    torch.testing.assert_close(scores(reloaded, inputs), before, rtol=0, atol=1e-5)


def test_merge_leaves_plain_methods_alone_and_refuses_adapters_and_prompts():
    model = tiny("full_finetune")
    assert merge_for_export(model) is model and count_parameters(model) == count_parameters(tiny("full_finetune"))
    for variant in ("adapter", "vpt"):
        with pytest.raises(ValueError, match="save_method_checkpoint"):
            merge_for_export(tiny(variant))


@pytest.mark.parametrize("variant", ["vpt", "adapter", "adapter_houlsby", "lora"])
def test_method_checkpoint_round_trip(variant, tmp_path):
    model = tiny(variant, score_min=1.0, score_max=5.0)
    train_steps(model, steps=2)
    inputs = random_inputs(seed=3)
    model.eval()
    with torch.no_grad():
        expected = model(**inputs).score
    save_method_checkpoint(model, method_of(variant), None, tmp_path / "export")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["glia_method.json", "glia_method.safetensors"]
    reloaded = load_method_checkpoint(tmp_path / "export").eval()
    assert reloaded.glia_method == method_of(variant) and reloaded.config.score_max == 5.0
    assert reloaded.glia_method_options == model.glia_method_options
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).score, expected, rtol=0, atol=1e-6)
    assert count_parameters(reloaded) == count_parameters(model)
    assert [n for n, p in reloaded.named_parameters() if p.requires_grad] == [
        n for n, p in model.named_parameters() if p.requires_grad
    ]


def test_a_method_checkpoint_is_not_an_automodel_directory(tmp_path):
    from transformers import AutoModel

    save_method_checkpoint(tiny("vpt"), "vpt", {"num_prompts": 5}, tmp_path)
    with pytest.raises((OSError, ValueError)):  # no config.json: refused rather than loaded without its prompts
        AutoModel.from_pretrained(tmp_path, trust_remote_code=True)
    with pytest.raises(ValueError, match="built for method 'vpt'"):
        save_method_checkpoint(tiny("vpt"), "adapter", None, tmp_path / "other")
    with pytest.raises(FileNotFoundError, match="glia_method.json"):
        load_method_checkpoint(tmp_path / "missing")


def test_glia_is_from_backbone_as_is():
    torch.manual_seed(0)
    reference = GLIAForImageQualityAssessment.from_backbone(tiny_vit_config(), latent_dim=16, use_glr=False)
    model = tiny("glia", use_glr=False)
    assert count_parameters(model) == count_parameters(reference)
    inputs = random_inputs()
    torch.testing.assert_close(scores(model, inputs), scores(reference, inputs))


@pytest.mark.parametrize(
    "method, options, glia_options, message",
    [
        ("prefix_tuning", None, {}, "Unknown fine-tuning method 'prefix_tuning'"),
        ("lora", {"rank": 8}, {}, r"Unknown option\(s\) \['rank'\] for method 'lora'"),
        ("lora", {"r": 0}, {}, "r must be a positive integer"),
        ("lora", {"target_modules": ["qkv"]}, {}, "target_modules must be a non-empty subset"),
        ("adapter", {"adapter_type": "pfeiffer"}, {}, "adapter_type must be one of"),
        ("adapter", {"bottleneck": 8, "layers": [5]}, {}, r"layers \[5\] are not blocks of a 2-block backbone"),
        ("vpt", {"num_prompts": 0}, {}, "num_prompts must be a positive integer"),
        ("vpt", {"dropout": 1.5}, {}, r"dropout must be a number in \[0, 1\)"),
        ("linear_probe", {"r": 8}, {}, "takes no method options"),
        ("lora", None, {"glia_layers": [0]}, "sets glia_layers=\\[\\]"),
        ("full_finetune", None, {"freeze_backbone": True}, "sets freeze_backbone=False"),
    ],
)
def test_bad_methods_and_options_get_clear_errors(method, options, glia_options, message):
    with pytest.raises(ValueError, match=message):
        build_model(method, tiny_vit_config(), options, **glia_options)


def test_methods_constant_and_defaults():
    # The paper's methods in registration order, then our additions (BitFit, glia_hf/methods/bitfit.py).
    assert tuple(METHODS) == ("glia", "linear_probe", "full_finetune", "lora", "adapter", "vpt", "bitfit")
    model = build_model("lora", tiny_vit_config())
    assert model.glia_method_options == {"r": 8, "alpha": 16.0, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]}
    assert build_model("linear_probe", ViTConfig(**tiny_vit_config().to_dict()), glia_layers=[]).glia_method_options == {}
