"""Build, count, export and reload the fine-tuning methods of paper Table 6 on `GLIAForImageQualityAssessment`.

Every method returns the same model class with the same `forward`; what differs is which parameters exist and which
of them train. The baselines (`linear_probe`, `full_finetune`, `lora`, `adapter`, `vpt`) have no GLIA block: the model
is then the plain backbone on the main stream with a dropout + linear head on its readout token, and the guidance pass
is skipped. Every method works on every backbone family of `glia_hf.backbones`: the blocks, the leading tokens and
the names of the linear layers come from the family's `BackboneSpec`.
"""

import re

import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedConfig

from ..configuration_glia import GLIAConfig
from ..modeling_glia import GLIAForImageQualityAssessment
from .config import (
    AdapterMethodConfig,
    LoraMethodConfig,
    VPTMethodConfig,
    check_method,
    options_to_dict,
    parse_method_options,
)
from .layer import BottleneckAdapter, ParallelAdapter, PromptedViTLayer, SequentialAdapter, vpt_init_bound
from .registry import METHODS, MethodSpec, get_method, register_method


CHECKPOINT_CONFIG_NAME = "glia_method.json"
CHECKPOINT_WEIGHTS_NAME = "glia_method.safetensors"
CHECKPOINT_FORMAT_VERSION = 1


def _forced_glia_options(method: str) -> dict[str, Any]:
    """GLIAConfig settings that a method fixes (its `MethodSpec.glia_options`)."""
    return dict(get_method(method).glia_options)


def method_record(method: str, options, merged: bool = False) -> dict[str, Any]:
    """What `GLIAConfig.method` stores: `{"name": ..., "options": {...}, "merged": bool}` (JSON-ready)."""
    return {"name": method, "options": options_to_dict(options), "merged": bool(merged)}


def build_model(
    method: str,
    backbone: str | os.PathLike | PreTrainedConfig | dict,
    method_options: dict[str, Any] | None = None,
    **glia_options,
) -> GLIAForImageQualityAssessment:
    """Build a `GLIAForImageQualityAssessment` set up for one fine-tuning method.

    Args:
        method: a registered method (`METHODS`; see `register_method`), among them:
            - `"glia"`: GLIANet itself, exactly as [`GLIAForImageQualityAssessment.from_backbone`] builds it (its
              ablations are `glia_options`, e.g. `use_glr=False`, `main_stream="semantic"`);
            - `"linear_probe"`: frozen ViT, only the head trains;
            - `"full_finetune"`: the whole ViT and the head train;
            - `"lora"`: peft LoRA on the ViT's attention projections (see `LoraMethodConfig`) plus the head;
            - `"adapter"`: Houlsby or AdaptFormer bottleneck adapters (see `AdapterMethodConfig`) plus the head;
            - `"vpt"`: deep visual prompts (see `VPTMethodConfig`) plus the head;
            - `"bitfit"`: the backbone's bias terms plus the head (our addition, see `glia_hf.methods.bitfit`).
        backbone: a Hub id or a local directory of a checkpoint of any family in `glia_hf.backbones` (ViT, DeiT,
            DINOv2, DINOv2 with registers, CLIP or SigLIP vision), or a backbone config (or a dict of its fields with a
            `model_type`) for a random one; see [`GLIAForImageQualityAssessment.from_backbone`].
        method_options: the method's hyper-parameters as a dict (or its dataclass); `None` for the defaults. Only
            methods with a `MethodSpec.config_class` (`lora`, `adapter`, `vpt`) take any.
        glia_options: [`GLIAConfig`] arguments (score range, `main_stream`, `loss`, `head_dropout`, ...). For the
            baselines `glia_layers` and `freeze_backbone` are fixed by the method; passing another value is an error.

    Returns:
        The model, whose ViT is frozen except for `full_finetune`, and whose only trainable parameters are the
        method's own new ones plus the head (and the ViT for `full_finetune`; the GLIA blocks and prior projection for
        `glia`). The method and its resolved options are recorded in `model.config.method` (so `save_pretrained`
        writes them into `config.json`) and kept on the model as `model.glia_method` and `model.glia_method_options`.
    """
    check_method(method)
    options = parse_method_options(method, method_options)
    for key, value in _forced_glia_options(method).items():
        if key in glia_options and glia_options[key] != value:
            raise ValueError(f"Method {method!r} sets {key}={value!r}; got {key}={glia_options[key]!r}.")
        glia_options[key] = value
    model = GLIAForImageQualityAssessment.from_backbone(backbone, **glia_options)
    return apply_method(model, method, options)


def apply_method(model: GLIAForImageQualityAssessment, method: str, method_options=None) -> GLIAForImageQualityAssessment:
    """Add a method's modules to a freshly built model (in place) and set which parameters train.

    The model's configuration must already match the method (`build_model` sees to it): no GLIA block for the
    baselines, a frozen backbone for all but `full_finetune` and `bitfit`.
    """
    spec = get_method(method)
    options = parse_method_options(method, method_options)
    config = model.config
    expected = _forced_glia_options(method)
    actual = {"glia_layers": list(config.glia_layers), "freeze_backbone": config.freeze_backbone}
    mismatch = {key: actual[key] for key, value in expected.items() if actual[key] != value}
    if mismatch:
        raise ValueError(f"Method {method!r} needs a model with {expected}, this one has {mismatch}.")
    if spec.apply is not None:
        spec.apply(model, options)
    set_trainable(model, method)
    model.glia_method = method
    model.glia_method_options = options_to_dict(options)
    model.config.method = method_record(method, options)
    return model


def set_trainable(model: GLIAForImageQualityAssessment, method: str) -> None:
    """Set `requires_grad` on every parameter as the method's `MethodSpec.trainable` says.

    A method with `trainable=None` (`glia`) keeps what the model itself set (GLIA blocks, prior projection and head
    train; the ViT frozen). For the others only the head and the parameters that `trainable` selects train.
    """
    spec = get_method(method)
    if spec.trainable is None:
        model.glia.freeze_backbone()
        return
    model.requires_grad_(False)
    model.regressor.requires_grad_(True)
    for name, parameter in model.named_parameters():
        if spec.trains(name, parameter):
            parameter.requires_grad_(True)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Return `(trainable, total)` numbers of parameter elements (trainable = `requires_grad`)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def _chosen_layers(model: GLIAForImageQualityAssessment, layers: list[int] | None, method: str) -> list[int]:
    num_layers = len(model.glia.backbone_blocks)
    if layers is None:
        return list(range(num_layers))
    bad = [index for index in layers if not 0 <= index < num_layers]
    if bad or not layers:
        raise ValueError(f"{method}: layers {bad or '[]'} are not blocks of a {num_layers}-block backbone.")
    return list(layers)


def _lora_target_regex(model: GLIAForImageQualityAssessment, targets) -> str:
    """A regex of the full names of the chosen linear layers in every block, in the family's own names (e.g.
    `glia.vit.encoder.layers.3.self_attn.out_proj` for CLIP's `o_proj`)."""
    spec = model.glia.backbone_spec
    paths = "|".join(re.escape(spec.projections[name]) for name in targets)
    return r"glia\.vit\." + re.escape(spec.blocks) + r"\.\d+\.(?:" + paths + ")"


def _inject_lora(model: GLIAForImageQualityAssessment, options: LoraMethodConfig) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    _check_projections(model, options.target_modules, "lora")
    lora_config = LoraConfig(
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=_lora_target_regex(model, options.target_modules),
        bias="none",
    )
    inject_adapter_in_model(lora_config, model)


def _check_projections(model: GLIAForImageQualityAssessment, names, method: str) -> None:
    """Every named linear layer must exist in the family's blocks (DINOv2's SwiGLU MLP has no fc1/fc2)."""
    spec = model.glia.backbone_spec
    block = model.glia.backbone_blocks[0]
    absent = []
    for name in names:
        try:
            block.get_submodule(spec.projections[name])
        except AttributeError:
            absent.append(name)
    if absent:
        raise ValueError(f"{method}: {absent} are not layers of a {spec.family} block; choose among the others.")


def _wrap(block: nn.Module, path: str, wrapper) -> None:
    """Replace the submodule at `path` inside `block` by `wrapper(that submodule)`."""
    parent, _, child = path.rpartition(".")
    owner = block.get_submodule(parent) if parent else block
    setattr(owner, child, wrapper(getattr(owner, child)))


def _add_adapters(model: GLIAForImageQualityAssessment, options: AdapterMethodConfig) -> None:
    hidden_size = model.config.backbone_config.hidden_size
    spec = model.glia.backbone_spec
    if options.adapter_type == "houlsby":
        _check_projections(model, ("o_proj", "fc2"), "adapter")
    for index in _chosen_layers(model, options.layers, "adapter"):
        layer = model.glia.backbone_blocks[index]
        if options.adapter_type == "houlsby":
            for name in ("o_proj", "fc2"):
                _wrap(layer, spec.projections[name], lambda base: SequentialAdapter(
                    base, BottleneckAdapter(hidden_size, options.bottleneck, "gelu", options.dropout)
                ))
        else:
            _wrap(layer, spec.mlp, lambda base: ParallelAdapter(
                base,
                BottleneckAdapter(hidden_size, options.bottleneck, "relu", options.dropout),
                options.scale,
                options.learnable_scale,
            ))


def _add_prompts(model: GLIAForImageQualityAssessment, options: VPTMethodConfig) -> None:
    backbone = model.config.backbone_config
    patch = backbone.patch_size
    patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
    bound = vpt_init_bound(patch, backbone.hidden_size, backbone.num_channels)
    layers = model.glia.backbone_blocks
    lead = model.glia.num_leading_tokens
    for index in _chosen_layers(model, options.layers, "vpt"):
        layers[index] = PromptedViTLayer(
            layers[index], options.num_prompts, backbone.hidden_size, bound, options.dropout, num_leading_tokens=lead
        )


def merge_for_export(model: GLIAForImageQualityAssessment) -> GLIAForImageQualityAssessment:
    """Return a plain `GLIAForImageQualityAssessment` ready for `save_pretrained` / `push_to_hub`.

    A method with `export="merge"` (`lora`) is folded into the ViT's weights by its `MethodSpec.merge`, in place: the
    scores do not change, the saved directory loads through `AutoModel` with remote code like any other GLIANet
    checkpoint, and `config.method` records the method and options with `"merged": true`. Methods exported with
    `save_pretrained` are returned as they are. Adapters and prompts cannot be merged into the ViT: save those with
    `save_method_checkpoint`.
    """
    method = getattr(model, "glia_method", None)
    spec = get_method(method) if method in METHODS else None
    if (spec is not None and spec.export == "method_checkpoint") or _has_wrappers(model):
        raise ValueError(
            f"A {method or 'adapter/vpt'} model cannot be merged into a plain ViT; "
            "save it with glia_hf.methods.save_method_checkpoint and reload it with load_method_checkpoint."
        )
    lora_layers = _lora_layers(model)
    if spec is not None and spec.export == "merge":
        spec.merge(model)
    elif lora_layers:  # a model given LoRA layers by hand, without build_model
        _merge_lora(model)
    if lora_layers or (spec is not None and spec.export == "merge"):
        record = dict(getattr(model.config, "method", None) or method_record("lora", None))
        model.config.method = {**record, "merged": True}
        model.glia_method, model.glia_method_options = "linear_probe", {}
        set_trainable(model, "linear_probe")
    return model


def _lora_layers(model: nn.Module) -> list:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(name, module) for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)]


def _merge_lora(model: GLIAForImageQualityAssessment) -> None:
    """Add the LoRA updates into the wrapped linear layers and put the plain layers back, in place."""
    for name, module in _lora_layers(model):
        module.merge()
        parent_name, _, child_name = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child_name, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config


def _has_wrappers(model: nn.Module) -> bool:
    return any(isinstance(m, (SequentialAdapter, ParallelAdapter, PromptedViTLayer)) for m in model.modules())


def save_method_checkpoint(
    model: GLIAForImageQualityAssessment,
    method: str,
    method_options: dict[str, Any] | None,
    save_directory: str | os.PathLike,
) -> Path:
    """Save any method's model as `glia_method.json` (method, options, GLIAConfig) + `glia_method.safetensors`.

    This is the export of `adapter` and `vpt` models, whose extra modules have no place in a plain GLIANet: the
    directory reloads with [`load_method_checkpoint`] (which needs `glia_hf` installed), not with `AutoModel` (there
    is deliberately no `config.json`, so `AutoModel` refuses it rather than loading a model without its adapters).
    Nothing is pickled. An image processor may be saved into the same directory beside it.

    Args:
        model: a model from [`build_model`].
        method: the method it was built with.
        method_options: its options; `None` takes those recorded on the model by `build_model` (or the defaults).
        save_directory: created if missing.
    """
    check_method(method)
    recorded = getattr(model, "glia_method", None)
    if recorded is not None and recorded != method:
        raise ValueError(f"The model was built for method {recorded!r}, not {method!r}.")
    if method_options is None:
        method_options = getattr(model, "glia_method_options", None)
    options = options_to_dict(parse_method_options(method, method_options))
    directory = Path(save_directory)
    directory.mkdir(parents=True, exist_ok=True)
    state_dict = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    save_file(state_dict, directory / CHECKPOINT_WEIGHTS_NAME, metadata={"format": "pt", "glia_method": method})
    record = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "method": method,
        "method_options": options,
        "config": model.config.to_dict(),
    }
    (directory / CHECKPOINT_CONFIG_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return directory


def load_method_checkpoint(save_directory: str | os.PathLike) -> GLIAForImageQualityAssessment:
    """Rebuild a model saved by [`save_method_checkpoint`]: same method, options, configuration and weights.

    The ViT is rebuilt from the stored configuration (nothing is downloaded), every weight must match, and the
    parameters that train are set again as the method wants them.
    """
    directory = Path(save_directory)
    record_path = directory / CHECKPOINT_CONFIG_NAME
    if not record_path.is_file():
        raise FileNotFoundError(f"{directory} holds no {CHECKPOINT_CONFIG_NAME}: not a glia_hf.methods checkpoint.")
    record = json.loads(record_path.read_text())
    if record.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(f"Unsupported checkpoint format {record.get('format_version')!r} in {record_path}.")
    method = record["method"]
    config = GLIAConfig.from_dict(record["config"])
    model = GLIAForImageQualityAssessment(config)
    apply_method(model, method, record["method_options"] or None)
    model.load_state_dict(load_file(directory / CHECKPOINT_WEIGHTS_NAME), strict=True)
    set_trainable(model, method)
    return model


def save_model(model: GLIAForImageQualityAssessment, save_directory: str | os.PathLike) -> str:
    """Export a trained model the way its method's `MethodSpec.export` says; return that export kind.

    `save_pretrained` methods are saved as they are; `merge` methods (`lora`) are merged into a copy of the model
    first (the model passed in keeps training as it was); `method_checkpoint` methods (`adapter`, `vpt`) are saved
    with [`save_method_checkpoint`]. Either way the saved configuration's `method` field names the method and options.
    """
    import copy

    method = getattr(model, "glia_method", None) or method_of(model.config)["name"]
    spec = get_method(method)
    if spec.export == "method_checkpoint":
        save_method_checkpoint(model, method, getattr(model, "glia_method_options", None) or None, save_directory)
    else:
        if spec.export == "merge":
            model = merge_for_export(copy.deepcopy(model))
        model.save_pretrained(save_directory, safe_serialization=True)
    return spec.export


def method_of(config: GLIAConfig) -> dict[str, Any]:
    """The method record of a configuration (`GLIAConfig.method`), inferred for a `config.json` written before the
    field existed: `glia` if it has GLIA blocks, else `full_finetune` if the backbone trains, else `linear_probe`
    (a merged LoRA model of that time is indistinguishable from a linear probe)."""
    record = getattr(config, "method", None)
    if record:
        return {"name": record["name"], "options": dict(record.get("options") or {}),
                "merged": bool(record.get("merged", False))}
    name = "glia" if config.glia_layers else ("linear_probe" if config.freeze_backbone else "full_finetune")
    return {"name": name, "options": {}, "merged": False}


def load_model(save_directory: str | os.PathLike, **kwargs) -> GLIAForImageQualityAssessment:
    """Load any exported model and restore its method: which parameters train, `glia_method`(`_options`).

    A `glia_method.json` directory goes through [`load_method_checkpoint`]; a `config.json` directory through
    `GLIAForImageQualityAssessment.from_pretrained(save_directory, **kwargs)`, after which the method recorded in
    `config.method` sets which parameters train (a merged model trains its head only, its method's modules being
    folded into the backbone).
    """
    directory = Path(save_directory)
    if (directory / CHECKPOINT_CONFIG_NAME).is_file() and not (directory / "config.json").is_file():
        return load_method_checkpoint(directory)
    model = GLIAForImageQualityAssessment.from_pretrained(save_directory, **kwargs)
    record = method_of(model.config)
    model.config.method = record
    if record["merged"]:
        model.glia_method, model.glia_method_options = "linear_probe", {}
    else:
        model.glia_method = record["name"]
        model.glia_method_options = options_to_dict(parse_method_options(record["name"], record["options"] or None))
    set_trainable(model, model.glia_method)
    return model


# ------------------------------------------------------------------------------------------ the registered methods


def _glia_ablation_options(glia_options: dict, method_options: dict) -> list[str]:
    """GLIANet's run label names its ablations: the GLIAConfig settings that differ from the defaults."""
    import inspect

    defaults = {name: p.default for name, p in inspect.signature(GLIAConfig.__init__).parameters.items()}
    parts = []
    for key in ("use_lgf", "use_glr", "guidance_stream", "main_stream", "glia_layers", "latent_dim"):
        if key in glia_options and glia_options[key] != defaults.get(key):
            value = glia_options[key]
            parts.append(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
    return parts


_BASELINE = {"glia_layers": [], "freeze_backbone": True}

register_method(MethodSpec(
    name="glia", label="GLIA (ours)", description="GLIANet (GLIA blocks, frozen ViT)", trainable=None, paper=True,
    reference="the paper", label_options=_glia_ablation_options,
))
register_method(MethodSpec(
    name="linear_probe", label="Linear probe", description="linear probe (frozen ViT)", glia_options=_BASELINE,
    paper=True,
))
register_method(MethodSpec(
    name="full_finetune", label="Full fine-tune", description="full fine-tuning",
    glia_options={"glia_layers": [], "freeze_backbone": False}, trainable=r"^glia\.vit\.", paper=True,
))
register_method(MethodSpec(
    name="lora", label="LoRA", description="LoRA (peft), merged for export", config_class=LoraMethodConfig,
    glia_options=_BASELINE, apply=_inject_lora, trainable="lora_", export="merge", merge=_merge_lora,
    export_note="The LoRA updates were merged into the ViT's weights for export (`merge_for_export`); the "
                "directory loads like any GLIANet checkpoint.",
    paper=True, reference="Hu et al., 2022",
))
register_method(MethodSpec(
    name="adapter", label="Adapter", description="bottleneck adapters", config_class=AdapterMethodConfig,
    glia_options=_BASELINE, apply=_add_adapters, trainable=(r"\.adapter\.", r"\.adapter_scale$"),
    export="method_checkpoint", paper=True, reference="Houlsby et al., 2019; Chen et al., 2022 (AdaptFormer)",
))
register_method(MethodSpec(
    name="vpt", label="VPT", description="deep visual prompt tuning", config_class=VPTMethodConfig,
    glia_options=_BASELINE, apply=_add_prompts, trainable=r"\.prompts$", export="method_checkpoint", paper=True,
    reference="Jia et al., 2022",
))


__all__ = [
    "apply_method",
    "build_model",
    "count_parameters",
    "load_method_checkpoint",
    "load_model",
    "merge_for_export",
    "method_of",
    "method_record",
    "save_method_checkpoint",
    "save_model",
    "set_trainable",
]
