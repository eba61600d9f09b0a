"""Print the trainable-parameter table of every fine-tuning method on every backbone family:
`python -m glia_hf.methods [--tiny] [--family dinov2 ...]`.

The models are built on PyTorch's meta device from base-size configs made from the config classes (the base-size
values of each family's usual checkpoint, written below; nothing is downloaded): the shapes are real, no weight is
allocated, and the whole table takes seconds.
"""

import argparse

import torch
from transformers import AutoConfig

from ..backbones import FAMILIES
from . import METHODS, build_model, count_parameters, get_method


# The rows of the table: each method at its default options, plus the Houlsby variant of the adapters; a method
# registered elsewhere (BitFit, or one of your own) joins at its default options (see `table_runs`).
TABLE_RUNS = (
    ("glia", None, "GLIA blocks in front of every block, latent 64"),
    ("linear_probe", None, "head only"),
    ("full_finetune", None, "backbone + head"),
    ("lora", None, "r=8, alpha=16, q_proj+v_proj"),
    ("adapter", None, "AdaptFormer, bottleneck 64, learnable scale"),
    ("adapter", {"adapter_type": "houlsby"}, "Houlsby, bottleneck 64, 2 per block"),
    ("vpt", None, "deep, 10 prompts per block"),
)

_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
# Base-size config fields per family (model_type), as in the config.json of `BackboneSpec.hub_id`; the rest are the
# config classes' defaults.
BASE_CONFIGS = {
    "vit": dict(_BASE, image_size=224, patch_size=16),
    "deit": dict(_BASE, image_size=224, patch_size=16),
    "dinov2": dict(_BASE, image_size=518, patch_size=14),
    "dinov2_with_registers": dict(_BASE, image_size=518, patch_size=14, num_register_tokens=4),
    "clip_vision_model": dict(_BASE, image_size=224, patch_size=16, hidden_act="quick_gelu"),
    "siglip_vision_model": dict(_BASE, image_size=224, patch_size=16),
}
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def base_config(model_type: str, tiny: bool = False):
    """The base-size (or a 2-block, 32-wide) backbone config of a family, built from its config class."""
    fields = dict(BASE_CONFIGS[model_type])
    if tiny:
        fields.update(TINY)
    return AutoConfig.for_model(model_type, **fields)


def table_runs() -> tuple:
    """`TABLE_RUNS`, then every other registered method at its default options, described by its `description`."""
    listed = {method for method, _, _ in TABLE_RUNS}
    return TABLE_RUNS + tuple((name, None, get_method(name).description) for name in METHODS if name not in listed)


def parameter_table(backbone=None) -> list[tuple[str, str, int, int]]:
    """Rows `(method, description, trainable, total)` of `table_runs()` for one backbone config (default ViT-B/16),
    counted on the meta device."""
    backbone = backbone if backbone is not None else base_config("vit")
    rows = []
    for method, options, description in table_runs():
        with torch.device("meta"):
            model = build_model(method, backbone, options)
        rows.append((method, description, *count_parameters(model)))
    return rows


def format_table(rows) -> str:
    """Markdown table of `parameter_table` rows."""
    lines = ["| method | setting | trainable | total | trainable % |", "|---|---|---:|---:|---:|"]
    for method, description, trainable, total in rows:
        lines.append(f"| {method} | {description} | {trainable:,} | {total:,} | {100 * trainable / total:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="2-block, 32-wide backbones instead of base size")
    parser.add_argument("--family", nargs="*", choices=sorted(FAMILIES), default=list(FAMILIES),
                        help="backbone families (model_type) to count; default: all")
    args = parser.parse_args(argv)
    size = "tiny (2 blocks, hidden 32)" if args.tiny else "base size"
    for model_type in args.family:
        spec = FAMILIES[model_type]
        where = "" if args.tiny else f", as {spec.hub_id}"
        print(f"## {spec.family} ({model_type}), {size}{where}: trainable parameters per method, default options\n")
        print(format_table(parameter_table(base_config(model_type, args.tiny))))
        print()


if __name__ == "__main__":
    main()
