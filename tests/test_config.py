"""training/config.py on omegaconf structured configs: every shipped YAML loads, overrides and layered files convert
to the fields' types (PEP 604 annotations included), and omegaconf's errors reach the user as one-line ConfigErrors
that name the key, the bad value and what the key takes."""

import types
import typing
from pathlib import Path

import pytest
import yaml

from training import config as config_module
from training.config import ConfigError, HubConfig, TrainConfig, config_from_dict, load_config, parse_overrides

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS = REPO_ROOT / "training" / "configs"
QUICKSTART = CONFIGS / "quickstart.yaml"


def _assert_holds(config, written, where):
    """Every value a YAML file writes is in the loaded config (a mapping's keys, as mappings are merged)."""
    for section, values in written.items():
        for key, value in (values or {}).items():
            loaded = getattr(getattr(config, section), key)
            if isinstance(value, dict):
                assert {k: loaded.get(k) for k in value} == value, f"{where}: {section}.{key}"
            else:  # YAML 1.1 reads 3e-4 as a string; the float field holds the number
                assert loaded == (float(value) if isinstance(loaded, float) else value), f"{where}: {section}.{key}"


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_loads_alone_and_layered_on_the_quickstart(path):
    written = yaml.safe_load(path.read_text())
    _assert_holds(load_config(path), written, path.name)
    _assert_holds(load_config([QUICKSTART, path]), written, f"quickstart + {path.name}")


def test_overrides_take_both_spellings_and_convert_to_the_field_type():
    for arguments in (["--optim.lr", "1e-3"], ["--optim.lr=1e-3"]):
        config = load_config(None, arguments)
        assert config.optim.lr == 1e-3 and isinstance(config.optim.lr, float)
    config = load_config(None, ["--optim.epochs", "3", "--data.cache_semantic", "--model.image_mean", "[0.5, 0.5, 1]",
                                "--data.num_workers", "2", "--data.splits", "[0, 2]"])
    assert config.optim.epochs == 3 and config.data.cache_semantic is True and config.data.num_workers == 2
    assert config.model.image_mean == [0.5, 0.5, 1.0] and all(isinstance(v, float) for v in config.model.image_mean)
    assert config.data.splits == [0, 2]
    assert load_config(None, ["--data.splits", "1"]).data.splits == 1
    assert parse_overrides(["--a.b=c=d", "--x.y"]) == [("a.b", "c=d"), ("x.y", True)]


def test_a_pep_604_annotation_is_read():
    """hub.split is written ``int | None``, the annotation the hand-written converter before omegaconf could not read."""
    annotation = typing.get_type_hints(HubConfig)["split"]
    assert isinstance(annotation, types.UnionType) and set(typing.get_args(annotation)) == {int, type(None)}
    assert load_config(None, ["--hub.split", "3"]).hub.split == 3
    assert config_from_dict({"hub": {"split": "2"}}).hub.split == 2
    assert load_config(None, ["--hub.split", "null"]).hub.split is None
    with pytest.raises(ConfigError, match=r"^hub.split must be an integer or null, got 'x'$"):
        load_config(None, ["--hub.split", "x"])


def test_backbone_is_a_hub_id_or_a_dict_and_a_dict_override_replaces_the_files_dict(tmp_path):
    backbone = "{hidden_size: 768, num_hidden_layers: 12}"
    assert load_config(None, ["--model.backbone", backbone]).model.backbone == {"hidden_size": 768,
                                                                                 "num_hidden_layers": 12}
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"model": {"backbone": {"hidden_size": 48, "intermediate_size": 96},
                                              "glia": {"latent_dim": 16}}}))
    # A mapping on the command line replaces the file's whole; a dotted key sets one key inside it.
    assert load_config(base, ["--model.backbone", "{hidden_size: 96}"]).model.backbone == {"hidden_size": 96}
    assert load_config(base, ["--model.backbone.hidden_size", "96"]).model.backbone == {"hidden_size": 96,
                                                                                       "intermediate_size": 96}
    # A later file merges its mappings key by key; a scalar replaces a mapping.
    later = tmp_path / "later.yaml"
    later.write_text("model:\n  glia: {use_glr: false}\n  backbone: google/vit-base-patch16-224\n")
    layered = load_config([base, later])
    assert layered.model.glia == {"latent_dim": 16, "use_glr": False}
    assert layered.model.backbone == "google/vit-base-patch16-224"
    with pytest.raises(ConfigError, match=r"model.backbone must be a Hub id / directory or a dict .*got \[1, 2\]"):
        load_config(None, ["--model.backbone", "[1, 2]"])


@pytest.mark.parametrize("arguments, message", [
    (["--optim.lrr", "1e-4"], r"Unknown config key 'optim.lrr'. Did you mean 'lr'\?"),
    (["--optimiser.lr", "1e-4"], r"Unknown config key 'optimiser'. Did you mean 'optim'\?"),
    (["--optim.epochs", "two"], r"optim.epochs must be an integer, got 'two'"),
    (["--optim.lr", "fast"], r"optim.lr must be a number, got 'fast'"),
    (["--optim.lr", "null"], r"optim.lr must be a number, got null"),
    (["--optim.drop_last", "maybe"], r"optim.drop_last must be true or false, got 'maybe'"),
    (["--optim.betas", "0.9"], r"optim.betas must be a list, got 0.9"),
    (["--optim.betas", "[0.9, x]"], r"optim.betas\[1\] must be a number, got 'x'"),
    (["--model.image_mean", "[0.5, a, 0.5]"], r"model.image_mean\[1\] must be a number, got 'a'"),
    (["--data.dataset_options", "5"], r"data.dataset_options must be a mapping, got 5"),
    (["--data.dataset", "[a]"], r"data.dataset must be a string, got \['a'\]"),
    (["--data.num_workers", "2.5"], r"data.num_workers must be an integer or a string, got 2.5"),
    (["--data.splits", "[0, a]"], r"data.splits must be an index, a list of indices or 'all', got \[0, 'a'\]"),
    (["--optim.epochs", "${data.dataset}"], r"optim.epochs: .*'builtin' .* could not be converted to Integer"),
    (["--output.run_name", "${no.such_key}"], r"output.run_name: Interpolation key 'no.such_key' not found"),
])
def test_omegaconf_errors_become_one_line_config_errors(arguments, message):
    with pytest.raises(ConfigError, match=message) as raised:
        load_config(None, arguments)
    assert "\n" not in str(raised.value)


def test_file_errors_name_the_file_and_empty_sections_keep_their_defaults(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  epochs: ten\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: optim.epochs must be an integer, got 'ten'$"):
        load_config(bad)
    bad.write_text("data: 5\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: section 'data' must be a mapping, got 5"):
        load_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("optim:\nmodel:\n  method: lora\n")
    assert load_config(empty).optim == TrainConfig().optim and load_config(empty).model.method == "lora"
    with pytest.raises(ConfigError, match="config file .*missing.yaml does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_values_may_refer_to_other_values():
    config = load_config(None, ["--data.dataset", "koniq10k", "--output.run_name", "${data.dataset}-lr${optim.lr}"])
    assert config.output.run_name == "koniq10k-lr0.0003"


def test_the_result_is_the_plain_dataclasses_and_round_trips():
    config = load_config(QUICKSTART, ["--model.glia.use_glr", "false"])
    assert type(config) is TrainConfig and type(config.model.glia) is dict and type(config.optim.betas) is list
    assert config_from_dict(yaml.safe_load(config.to_yaml())) == config


def test_every_public_name_is_kept():
    for name in config_module.__all__:
        assert hasattr(config_module, name), name
    from training import config_help

    assert config_module.config_help is config_help.config_help
    assert "  --optim.lr [0.0003]  " in config_module.config_help()
