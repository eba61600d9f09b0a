"""Print the trainable-parameter table of every fine-tuning method: `python -m glia_hf.methods [--tiny]`.

The models are built on PyTorch's meta device from `ViTConfig()` (ViT-B/16, 224 px): the shapes are real, no weight
is allocated or downloaded, and the whole table takes seconds.
"""

import argparse

import torch
from transformers import ViTConfig

from . import build_model, count_parameters


# The rows of the table: each method at its default options, plus the Houlsby variant of the adapters.
TABLE_RUNS = (
    ("glia", None, "GLIA blocks in front of every block, latent 64"),
    ("linear_probe", None, "head only"),
    ("full_finetune", None, "ViT + head"),
    ("lora", None, "r=8, alpha=16, q_proj+v_proj"),
    ("adapter", None, "AdaptFormer, bottleneck 64, learnable scale"),
    ("adapter", {"adapter_type": "houlsby"}, "Houlsby, bottleneck 64, 2 per block"),
    ("vpt", None, "deep, 10 prompts per block"),
)


def parameter_table(backbone: ViTConfig | None = None) -> list[tuple[str, str, int, int]]:
    """Rows `(method, description, trainable, total)` of `TABLE_RUNS`, counted on the meta device."""
    backbone = backbone if backbone is not None else ViTConfig()
    rows = []
    for method, options, description in TABLE_RUNS:
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
    parser.add_argument("--tiny", action="store_true", help="a 2-block, 32-wide ViT instead of ViT-B/16")
    args = parser.parse_args(argv)
    backbone = ViTConfig()
    if args.tiny:
        backbone = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    name = "tiny ViT (2 blocks, hidden 32)" if args.tiny else "ViT-B/16"
    print(f"Trainable parameters per fine-tuning method, {name}, default options\n")
    print(format_table(parameter_table(backbone)))


if __name__ == "__main__":
    main()
