"""The fine-tuning methods of paper Table 6 on one model class, for one training loop.

    from glia_hf.methods import build_model, count_parameters
    model = build_model("lora", "google/vit-base-patch16-224", {"r": 8}, score_min=1, score_max=5)
    trainable, total = count_parameters(model)

`build_model` returns a `GLIAForImageQualityAssessment` for every method; only the method's own parameters and the
head train (the whole ViT for `full_finetune`). Export: `glia`, `linear_probe` and `full_finetune` models save with
`save_pretrained`; a `lora` model does too after `merge_for_export`; `adapter` and `vpt` models save with
`save_method_checkpoint` and reload with `load_method_checkpoint` (they need this package, not `AutoModel`);
`save_model` / `load_model` do whichever the method needs. A built model's `config.method` records the method and
its options (`{"name": "lora", "options": {...}, "merged": true}` after merging), so a saved `config.json` says what
made it.

Each method is one `MethodSpec` registered with `register_method` (see `registry.py`); `METHODS` lists them. The
paper's methods are registered in `model.py`; `bitfit.py` adds BitFit (our addition) in one file.
"""

from .config import (
    ADAPTER_TYPES,
    AdapterMethodConfig,
    LoraMethodConfig,
    VPTMethodConfig,
    parse_method_options,
)
from .registry import EXPORT_KINDS, METHODS, MethodSpec, get_method, register_method, unregister_method
from .layer import BottleneckAdapter, ParallelAdapter, PromptedViTLayer, SequentialAdapter
from .model import (
    apply_method,
    build_model,
    count_parameters,
    load_method_checkpoint,
    load_model,
    merge_for_export,
    method_of,
    save_method_checkpoint,
    save_model,
    set_trainable,
)
from . import bitfit  # noqa: E402,F401  (registers BitFit, our addition)


__all__ = [
    "ADAPTER_TYPES",
    "EXPORT_KINDS",
    "METHODS",
    "AdapterMethodConfig",
    "BottleneckAdapter",
    "LoraMethodConfig",
    "MethodSpec",
    "ParallelAdapter",
    "PromptedViTLayer",
    "SequentialAdapter",
    "VPTMethodConfig",
    "apply_method",
    "build_model",
    "count_parameters",
    "get_method",
    "load_method_checkpoint",
    "load_model",
    "merge_for_export",
    "method_of",
    "parse_method_options",
    "register_method",
    "save_method_checkpoint",
    "save_model",
    "set_trainable",
    "unregister_method",
]
