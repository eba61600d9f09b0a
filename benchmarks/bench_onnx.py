"""onnxruntime vs torch on the CPU: graph parity and images per second, on a tiny and a ViT-B/16-size random GLIANet.

    python benchmarks/bench_onnx.py [--sizes tiny base] [--batch 4] [--rounds 3]

Random weights (the speed and the parity do not depend on training). torch and onnxruntime run in alternation, one
round each per step, on the same inputs (one centred view); the best round of each is reported. On a shared CPU the
figures move with the other load: compare the two columns of one run, not runs.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from glia_hf import GLIAConfig, GLIAForImageQualityAssessment  # noqa: E402
from glia_hf.onnx_export import OnnxScorer, check_parity, export_onnx  # noqa: E402
from transformers import ViTConfig  # noqa: E402

SIZES = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"], choices=sorted(SIZES))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"torch threads {torch.get_num_threads()}; batch {args.batch}, 1 view; best of {args.rounds} rounds")
    print("| backbone | parity max abs diff (1 / 15 views, batch 1 and 3) | torch images/s | onnxruntime images/s |")
    print("|---|---|---|---|")
    for size in args.sizes:
        torch.manual_seed(0)
        model = GLIAForImageQualityAssessment(GLIAConfig(backbone_config=ViTConfig(**SIZES[size]))).eval()
        with torch.no_grad():
            for block in model.glia.glia_blocks.values():
                block.up.fc2.weight.normal_(std=0.02)
        with tempfile.TemporaryDirectory() as folder:
            path = export_onnx(model, Path(folder) / "model.onnx", check=False)
            parity = [check_parity(model, path, batch_sizes=(1, 3), views=(k,)) for k in (1, 15)]
            scorer = OnnxScorer(path)
            pixels = torch.randn(args.batch, 3, 224, 224)
            fragments = torch.randn(args.batch, 1, 3, 224, 224)
            best = {"torch": float("inf"), "onnxruntime": float("inf")}
            for _ in range(args.rounds):
                start = time.perf_counter()
                with torch.inference_mode():
                    model(pixel_values=pixels, fragment_values=fragments)
                best["torch"] = min(best["torch"], time.perf_counter() - start)
                start = time.perf_counter()
                scorer(pixels.numpy(), fragments.numpy())
                best["onnxruntime"] = min(best["onnxruntime"], time.perf_counter() - start)
        print(f"| {size} | {parity[0]:.1e} / {parity[1]:.1e} | {args.batch / best['torch']:.1f} | "
              f"{args.batch / best['onnxruntime']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
