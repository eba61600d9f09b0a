"""The method registry (glia_hf.methods.register_method): a method registered from outside trains through the loop,
BitFit trains exactly the backbone's biases and the head, and a saved model's configuration says what made it.

Tiny and offline: the 2-block ViT of conftest.py, the 20 generated images of tests/test_training.py.
"""

import json

import pytest
import torch

from glia_hf.methods import (
    METHODS,
    MethodSpec,
    build_model,
    count_parameters,
    get_method,
    load_method_checkpoint,
    load_model,
    register_method,
    save_method_checkpoint,
    save_model,
    unregister_method,
)
from tests.conftest import random_inputs, tiny_vit_config
from tests.test_training import fresh_accelerate_state, iqa_csv, one_thread, write_config  # noqa: F401 (fixtures)


def _trainable_names(model) -> set:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_a_method_registered_in_a_test_trains_through_the_loop(tmp_path, iqa_csv):  # noqa: F811
    """Nothing outside the registration knows the method: the config accepts it, the loop trains it, export saves it."""
    from training.train import main

    name = "norms_only"
    register_method(MethodSpec(
        name=name, label="Norms only", description="backbone layer-norm scales + head",
        glia_options={"glia_layers": [], "freeze_backbone": False}, trainable=r"^glia\.vit\..*layernorm.*\.weight$",
    ))
    try:
        assert name in METHODS
        model = build_model(name, tiny_vit_config())
        expected = {n for n, _ in model.named_parameters()
                    if n.startswith("regressor.") or (n.startswith("glia.vit.") and "layernorm" in n and n.endswith(".weight"))}
        assert _trainable_names(model) == expected and len(expected) > 2

        payload = main(["--config", str(write_config(tmp_path, iqa_csv, name)), "--optim.epochs", "1"])
        assert payload["method"] == name
        results = json.loads((tmp_path / f"run-{name}" / "results.json").read_text())
        assert results["trainable_parameters"] == count_parameters(model)[0]
        model_dir = tmp_path / f"run-{name}" / "split-0" / "model"
        assert json.loads((model_dir / "config.json").read_text())["method"] == {
            "name": name, "options": {}, "merged": False}
        trained = load_model(model_dir)
        # The layer norms were initialised to 1 and moved; the card names the method by its description.
        scales = [p for n, p in trained.named_parameters() if "layernorm" in n and n.endswith(".weight")]
        assert any(not torch.allclose(p, torch.ones_like(p)) for p in scales)
        assert _trainable_names(trained) == expected
        assert "backbone layer-norm scales + head" in (model_dir / "README.md").read_text()
    finally:
        unregister_method(name)
    assert name not in METHODS


def test_bitfit_trains_only_the_backbone_biases_and_the_head():
    model = build_model("bitfit", tiny_vit_config(), score_min=1, score_max=5)
    params = dict(model.named_parameters())
    biases = {n for n in params if n.startswith("glia.vit.") and n.endswith(".bias")}
    head = {n for n in params if n.startswith("regressor.")}
    assert _trainable_names(model) == biases | head
    # 2 blocks x (q, k, v, attention output, fc1, fc2, 2 layer norms) + patch embedding + final layer norm.
    assert len(biases) == 2 * 8 + 2
    expected = sum(params[n].numel() for n in biases | head)
    assert count_parameters(model)[0] == expected < count_parameters(model)[1] // 10
    assert not model.glia.glia_blocks and model.config.freeze_backbone is False

    # Gradients reach the biases through the backbone; no weight of it gets one.
    model(**random_inputs(batch=2), labels=torch.tensor([2.0, 4.0])).loss.backward()
    assert all(params[n].grad is not None and params[n].grad.abs().sum() > 0 for n in biases)
    assert all(p.grad is None for n, p in params.items() if n not in biases | head)

    from eval.protocol_tables import default_methods, method_label

    assert get_method("bitfit").paper is False and method_label("bitfit") == "BitFit (our addition)"
    assert default_methods()[-1] == "bitfit" and method_label("lora") == "LoRA"


def test_saved_config_names_the_method_and_loading_restores_it(tmp_path):
    bitfit = build_model("bitfit", tiny_vit_config())
    assert save_model(bitfit, tmp_path / "bitfit") == "save_pretrained"
    record = json.loads((tmp_path / "bitfit" / "config.json").read_text())["method"]
    assert record == {"name": "bitfit", "options": {}, "merged": False}
    reloaded = load_model(tmp_path / "bitfit")
    assert reloaded.glia_method == "bitfit" and reloaded.config.method == record
    assert _trainable_names(reloaded) == _trainable_names(bitfit)  # from_pretrained alone would train the whole ViT

    lora = build_model("lora", tiny_vit_config(), {"r": 4, "target_modules": ["q_proj"]})
    assert save_model(lora, tmp_path / "lora") == "merge"
    assert lora.glia_method == "lora" and lora.config.method["merged"] is False  # the model passed in is untouched
    options = {"r": 4, "alpha": 16.0, "dropout": 0.1, "target_modules": ["q_proj"]}
    record = json.loads((tmp_path / "lora" / "config.json").read_text())["method"]
    assert record == {"name": "lora", "options": options, "merged": True}
    merged = load_model(tmp_path / "lora")
    assert merged.config.method == record and not any("lora_" in n for n, _ in merged.named_parameters())
    assert _trainable_names(merged) == {n for n, _ in merged.named_parameters() if n.startswith("regressor.")}

    vpt = build_model("vpt", tiny_vit_config(), {"num_prompts": 3})
    assert save_model(vpt, tmp_path / "vpt") == "method_checkpoint"
    stored = json.loads((tmp_path / "vpt" / "glia_method.json").read_text())["config"]["method"]
    assert stored == {"name": "vpt", "options": {"num_prompts": 3, "dropout": 0.0, "layers": None}, "merged": False}
    again = load_model(tmp_path / "vpt")
    assert again.glia_method_options == stored["options"] and again.config.method == stored


def test_old_checkpoints_without_a_method_record_still_load(tmp_path):
    # An adapter checkpoint from before GLIAConfig.method: the side file's record names the method.
    adapter = build_model("adapter", tiny_vit_config(), {"bottleneck": 4})
    save_method_checkpoint(adapter, "adapter", None, tmp_path / "adapter")
    side = tmp_path / "adapter" / "glia_method.json"
    record = json.loads(side.read_text())
    del record["config"]["method"]
    side.write_text(json.dumps(record))
    for loader in (load_method_checkpoint, load_model):
        reloaded = loader(tmp_path / "adapter")
        assert reloaded.glia_method == "adapter" and reloaded.config.method["options"]["bottleneck"] == 4
        assert count_parameters(reloaded) == count_parameters(adapter)

    # A config.json from before the field: the method is inferred from the architecture.
    probe = build_model("linear_probe", tiny_vit_config())
    probe.save_pretrained(tmp_path / "probe")
    path = tmp_path / "probe" / "config.json"
    config = json.loads(path.read_text())
    del config["method"]
    path.write_text(json.dumps(config))
    reloaded = load_model(tmp_path / "probe")
    assert reloaded.glia_method == "linear_probe" and reloaded.config.method["name"] == "linear_probe"
    assert count_parameters(reloaded) == count_parameters(probe)


def test_registration_errors_are_clear():
    with pytest.raises(ValueError, match="already registered"):
        register_method(MethodSpec(name="lora", label="LoRA", description="again"))
    with pytest.raises(ValueError, match="export must be one of"):
        MethodSpec(name="x", label="X", description="x", export="pickle")
    with pytest.raises(ValueError, match="Unknown fine-tuning method 'nope'"):
        build_model("nope", tiny_vit_config())
