"""Print the trainable-parameter table of every fine-tuning method: `python -m glia_hf.methods [--tiny]`.

Built on a randomly initialised ViT-B/16 (`ViTConfig()`), with each method's default options: nothing is downloaded.
"""

import argparse

import torch

from . import METHODS, build_model, count_parameters


def parameter_table(backbone=None) -> list[tuple[str, str, int, int]]:
    """Rows `(method, options, trainable, total)` for every method at its default options, plus Houlsby adapters."""
    from transformers import ViTConfig

    backbone = backbone if backbone is not None else ViTConfig()
    runs = [(method, None) for method in METHODS]
    runs.insert(METHODS.index("adapter") + 1, ("adapter", {"adapter_type": "houlsby"}))
    rows = []
    for method, options in runs:
        torch.manual_seed(0)
        model = build_model(method, backbone, options)
        trainable, total = count_parameters(model)
        shown = ", ".join(f"{key}={value}" for key, value in model.glia_method_options.items()) or "-"
        rows.append((method, shown, trainable, total))
        del model
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="use a 2-block, 32-wide ViT instead of ViT-B/16 (fast)")
    args = parser.parse_args(argv)
    backbone = None
    if args.tiny:
        from transformers import ViTConfig

        backbone = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    title = "tiny ViT (2 blocks, hidden 32)" if args.tiny else "ViT-B/16 (random init)"
    print(f"Trainable parameters per method, {title}\n")
    print("| method | options | trainable | total | trainable % |")
    print("|---|---|---:|---:|---:|")
    for method, options, trainable, total in parameter_table(backbone):
        print(f"| {method} | {options} | {trainable:,} | {total:,} | {100 * trainable / total:.3f} |")


if __name__ == "__main__":
    main()
