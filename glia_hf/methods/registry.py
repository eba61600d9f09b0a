"""One registration per fine-tuning method: what it fixes in the model, what it adds, what trains, how it exports.

    from glia_hf.methods import MethodSpec, register_method
    register_method(MethodSpec(name="bias_only", label="Bias only", description="backbone biases + head",
                               glia_options={"glia_layers": [], "freeze_backbone": False},
                               trainable=r"^glia\\.vit\\..*\\.bias$"))

After that `build_model("bias_only", ...)`, `accelerate launch training/train.py --model.method bias_only` and the
method rows of `python -m eval.protocols methods` know the method: every place that used to switch on a method's
name looks its `MethodSpec` up here instead (after peft's `PEFT_TYPE_TO_CONFIG_MAPPING` / tuner registration).
`METHODS` is a live view of the registered names, in registration order.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable


#: How a trained model leaves the training loop: `save_pretrained` as it is, merged into the backbone first and then
#: `save_pretrained` (the saved model is a plain GLIANet), or as a `glia_method.json` + `.safetensors` checkpoint that
#: needs `glia_hf` to load (modules that have no place in a plain GLIANet).
EXPORT_KINDS = ("save_pretrained", "merge", "method_checkpoint")


@dataclass(frozen=True)
class MethodSpec:
    """Everything the code needs to know about one fine-tuning method.

    Args:
        name: the name users type (`--model.method NAME`), stored in `GLIAConfig.method["name"]`.
        label: the method's row name in the tables (`"LoRA"`).
        description: the longer name a model card gives it (`"LoRA (peft), merged for export"`).
        config_class: dataclass of the method's options (validated on creation), or `None` if it takes none.
        glia_options: `GLIAConfig` settings the method fixes (the baselines: `{"glia_layers": [],
            "freeze_backbone": ...}`); a user value that contradicts them is an error. `freeze_backbone=False` lets
            gradients flow through the backbone, which any method training something inside it needs.
        apply: `apply(model, options)` adds the method's modules to a freshly built model in place; `None` adds none.
        trainable: which parameters train besides the head: a regular expression (or a tuple of them) searched in
            each parameter's qualified name (`"lora_"`, `r"^glia\\.vit\\."`), or a predicate `(name, parameter) ->
            bool`. `None` leaves it to the model (GLIANet itself: the backbone frozen, the rest trains).
        export: one of `EXPORT_KINDS`.
        merge: for `export="merge"`: `merge(model)` folds the method's modules into the backbone in place.
        export_note: a sentence the model card adds about the export (e.g. that LoRA was merged).
        paper: whether paper Table 6 has the method; the tables mark the others "(our addition)".
        reference: where the method comes from (a citation), for documentation.
        label_options: `label_options(glia_options, method_options) -> list[str]` names the non-default settings of a
            run in its label (`glia [use_glr=false]`); `None` lists the method options.
    """

    name: str
    label: str
    description: str
    config_class: type | None = None
    glia_options: dict[str, Any] = field(default_factory=dict)
    apply: Callable[[Any, Any], None] | None = None
    trainable: str | tuple[str, ...] | Callable[[str, Any], bool] | None = ()
    export: str = "save_pretrained"
    merge: Callable[[Any], None] | None = None
    export_note: str = ""
    paper: bool = False
    reference: str = ""
    label_options: Callable[[dict, dict], list[str]] | None = None

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ValueError(f"A method name must be an identifier (letters, digits, _), got {self.name!r}.")
        if self.export not in EXPORT_KINDS:
            raise ValueError(f"Method {self.name!r}: export must be one of {EXPORT_KINDS}, got {self.export!r}.")
        if (self.export == "merge") != (self.merge is not None):
            raise ValueError(f"Method {self.name!r}: give merge=... exactly when export='merge'.")

    def trains(self, name: str, parameter) -> bool:
        """Whether the method trains the parameter of this qualified name (the head is always trained besides)."""
        if callable(self.trainable):
            return bool(self.trainable(name, parameter))
        patterns = (self.trainable,) if isinstance(self.trainable, str) else tuple(self.trainable or ())
        return any(re.search(pattern, name) for pattern in patterns)

    def table_label(self) -> str:
        """The row name in the tables: the label, marked "(our addition)" for a method paper Table 6 lacks."""
        return self.label if self.paper else f"{self.label} (our addition)"


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec, *, replace: bool = False) -> MethodSpec:
    """Register a fine-tuning method; a second registration of a name is an error unless `replace=True`."""
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"Method {spec.name!r} is already registered; pass replace=True to redefine it.")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_method(name: str) -> None:
    """Remove a registered method (for tests that register a throw-away one)."""
    _REGISTRY.pop(name, None)


def get_method(name: str) -> MethodSpec:
    """The `MethodSpec` of a registered method, or a `ValueError` listing the registered names."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown fine-tuning method {name!r}; choose one of {tuple(_REGISTRY)}.") from None


class _MethodNames(Sequence):
    """The registered method names, in registration order; a live view, so a method registered later joins it."""

    def __getitem__(self, index):
        return tuple(_REGISTRY)[index]

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __contains__(self, name) -> bool:
        return name in _REGISTRY

    def __eq__(self, other) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, (Sequence, _MethodNames)) else other)

    def __hash__(self):
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))


#: The names of every registered method (`glia`, the paper's baselines, then additions such as `bitfit`).
METHODS = _MethodNames()
