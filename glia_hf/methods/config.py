"""Hyper-parameters of the fine-tuning methods, one dataclass per method that has any, validated on creation."""

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..backbones import PROJECTIONS
from .registry import get_method


ADAPTER_TYPES = ("houlsby", "adaptformer")
# Generic names of a block's linear layers; each backbone family maps them to its own modules (glia_hf.backbones).
LORA_TARGETS = PROJECTIONS


def _check_layers(layers, method: str) -> None:
    if layers is None:
        return
    if isinstance(layers, (str, bytes)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
        raise ValueError(f"{method}: layers must be a list of block indices or None (all blocks), got {layers!r}.")


def _check_dropout(value, method: str) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{method}: dropout must be a number in [0, 1), got {value!r}.")


@dataclass
class LoraMethodConfig:
    """LoRA from peft on the backbone's attention projections (Hu et al., 2022).

    Args:
        r: rank of the low-rank update.
        alpha: LoRA scaling numerator; the update is scaled by `alpha / r`.
        dropout: dropout on the LoRA branch's input.
        target_modules: which linear layers of every backbone block get an update, among `q_proj`, `k_proj`,
            `v_proj`, `o_proj` (attention) and `fc1`, `fc2` (MLP). These generic names are mapped to each family's
            own modules (CLIP's and SigLIP's `o_proj` is `self_attn.out_proj`; see `BackboneSpec.projections`). The
            usual choice, and the default, is query and value.
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")

    def __post_init__(self):
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            raise ValueError(f"lora: r must be a positive integer, got {self.r!r}.")
        if not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            raise ValueError(f"lora: alpha must be a positive number, got {self.alpha!r}.")
        _check_dropout(self.dropout, "lora")
        if isinstance(self.target_modules, str):
            self.target_modules = (self.target_modules,)
        self.target_modules = tuple(self.target_modules)
        unknown = [name for name in self.target_modules if name not in LORA_TARGETS]
        if unknown or not self.target_modules:
            raise ValueError(f"lora: target_modules must be a non-empty subset of {LORA_TARGETS}, got {unknown or '[]'}.")


@dataclass
class AdapterMethodConfig:
    """Bottleneck adapters (ours), zero-initialised so that training starts from the frozen model.

    Args:
        bottleneck: width of the down-projection.
        adapter_type: `"houlsby"` (Houlsby et al., 2019: a residual adapter in sequence after the attention output
            projection and after the MLP, GELU inside) or `"adaptformer"` (Chen et al., 2022: one adapter parallel to
            the MLP, reading the MLP's input, ReLU inside, its output multiplied by `scale`).
        scale: initial value of AdaptFormer's scale (unused by Houlsby).
        learnable_scale: train AdaptFormer's scale (one scalar per block) rather than keeping it fixed.
        dropout: dropout between the adapter's two projections.
        layers: indices of the ViT blocks that get adapters; `None` for all of them.
    """

    bottleneck: int = 64
    adapter_type: str = "adaptformer"
    scale: float = 0.1
    learnable_scale: bool = True
    dropout: float = 0.0
    layers: list[int] | None = None

    def __post_init__(self):
        if not isinstance(self.bottleneck, int) or isinstance(self.bottleneck, bool) or self.bottleneck < 1:
            raise ValueError(f"adapter: bottleneck must be a positive integer, got {self.bottleneck!r}.")
        if self.adapter_type not in ADAPTER_TYPES:
            raise ValueError(f"adapter: adapter_type must be one of {ADAPTER_TYPES}, got {self.adapter_type!r}.")
        if not isinstance(self.scale, (int, float)):
            raise ValueError(f"adapter: scale must be a number, got {self.scale!r}.")
        _check_dropout(self.dropout, "adapter")
        _check_layers(self.layers, "adapter")
        if self.layers is not None:
            self.layers = sorted(set(self.layers))


@dataclass
class VPTMethodConfig:
    """Deep visual prompt tuning (ours, after Jia et al., 2022).

    Args:
        num_prompts: learnable tokens inserted after the CLS token in front of every chosen block (and dropped after
            it, so the next block sees fresh prompts of its own).
        dropout: dropout on the prompt tokens.
        layers: indices of the ViT blocks that get prompts; `None` for all of them (VPT-deep), `[0]` for prompts in
            front of the first block only (then dropped after it: not VPT-shallow, whose prompts travel on).
    """

    num_prompts: int = 10
    dropout: float = 0.0
    layers: list[int] | None = None

    def __post_init__(self):
        if not isinstance(self.num_prompts, int) or isinstance(self.num_prompts, bool) or self.num_prompts < 1:
            raise ValueError(f"vpt: num_prompts must be a positive integer, got {self.num_prompts!r}.")
        _check_dropout(self.dropout, "vpt")
        _check_layers(self.layers, "vpt")
        if self.layers is not None:
            self.layers = sorted(set(self.layers))


def check_method(method: str) -> str:
    """Return `method` if it is one of the registered `METHODS`, else raise a `ValueError` listing them."""
    get_method(method)
    return method


def parse_method_options(method: str, options: dict[str, Any] | Any | None = None):
    """Validate a method's options and return its dataclass (or `None` for methods without options).

    `options` may be a dict (unknown keys are an error that lists the allowed ones), the method's dataclass itself,
    or `None` for the defaults.
    """
    config_class = get_method(method).config_class
    if config_class is None:
        if options:
            raise ValueError(f"Method {method!r} takes no method options, got {dict(options)!r}.")
        return None
    if options is None:
        return config_class()
    if isinstance(options, config_class):
        return config_class(**asdict(options))
    if not isinstance(options, dict):
        raise ValueError(f"Options of method {method!r} must be a dict or a {config_class.__name__}, got {options!r}.")
    allowed = [field.name for field in fields(config_class)]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} for method {method!r}; allowed: {allowed}.")
    return config_class(**options)


def options_to_dict(options) -> dict[str, Any]:
    """Plain JSON-ready dict of a method's options (`{}` for methods without any)."""
    if options is None:
        return {}
    values = asdict(options)
    return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}
