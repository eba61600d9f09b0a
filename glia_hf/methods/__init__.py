"""The fine-tuning methods of paper Table 6 on one model class, for one training loop.

    from glia_hf.methods import build_model, count_parameters
    model = build_model("lora", "google/vit-base-patch16-224", {"r": 8}, score_min=1, score_max=5)
    trainable, total = count_parameters(model)

`build_model` returns a `GLIAForImageQualityAssessment` for every method; only the method's own parameters and the
head train (the whole ViT for `full_finetune`). Export: `glia`, `linear_probe` and `full_finetune` models save with
`save_pretrained`; a `lora` model does too after `merge_for_export`; `adapter` and `vpt` models save with
`save_method_checkpoint` and reload with `load_method_checkpoint` (they need this package, not `AutoModel`).
"""

from .config import (
    ADAPTER_TYPES,
    METHOD_CONFIGS,
    METHODS,
    AdapterMethodConfig,
    LoraMethodConfig,
    VPTMethodConfig,
    parse_method_options,
)
from .layer import BottleneckAdapter, ParallelAdapter, PromptedViTLayer, SequentialAdapter
from .model import (
    apply_method,
    build_model,
    count_parameters,
    load_method_checkpoint,
    merge_for_export,
    save_method_checkpoint,
    set_trainable,
)


__all__ = [
    "ADAPTER_TYPES",
    "METHOD_CONFIGS",
    "METHODS",
    "AdapterMethodConfig",
    "BottleneckAdapter",
    "LoraMethodConfig",
    "ParallelAdapter",
    "PromptedViTLayer",
    "SequentialAdapter",
    "VPTMethodConfig",
    "apply_method",
    "build_model",
    "count_parameters",
    "load_method_checkpoint",
    "merge_for_export",
    "parse_method_options",
    "save_method_checkpoint",
    "set_trainable",
]
