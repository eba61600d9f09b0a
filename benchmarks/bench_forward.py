"""GLIANet's cost next to a plain ViTModel on the same batch, measured in one run.

    python benchmarks/bench_forward.py                      # ViT-B/16, batch 8, CPU, fp32
    python benchmarks/bench_forward.py --device cuda --batch-size 128 --dtype bf16 --train

Prints the median time of each forward (and, with --train, of each training step), the ratio GLIANet / plain ViT,
images per second and, on CUDA, peak memory. Weights are random: speed does not depend on their values.
"""

import argparse
import statistics
import time

import torch
from transformers import ViTConfig, ViTModel

from glia_hf import GLIAConfig, GLIAForImageQualityAssessment


def timed(functions: dict, repeats: int, warmup: int, device: str) -> dict:
    """Median wall time in seconds of each function over `repeats` runs after `warmup` runs.

    The functions take turns (a, b, a, b, ...), so that a change of load on a shared machine weighs on all of them
    alike and their ratios stay meaningful.
    """
    times = {name: [] for name in functions}
    for round_ in range(warmup + repeats):
        for name, fn in functions.items():
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_memory(fn, device: str) -> float | None:
    if device != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--train", action="store_true", help="also time a training step (forward + backward)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.manual_seed(0)

    vit_config = ViTConfig()  # ViT-B/16, 224 px
    plain = ViTModel(vit_config, add_pooling_layer=False).to(args.device, dtype).eval()
    glia = GLIAForImageQualityAssessment(GLIAConfig(backbone_config=vit_config)).to(args.device, dtype).eval()
    trainable = sum(p.numel() for p in glia.parameters() if p.requires_grad)
    pixels = torch.randn(args.batch_size, 3, 224, 224, device=args.device, dtype=dtype)
    fragments = torch.randn(args.batch_size, 3, 224, 224, device=args.device, dtype=dtype)
    labels = torch.rand(args.batch_size, device=args.device)

    @torch.no_grad()
    def plain_forward():
        plain(pixel_values=pixels)

    @torch.no_grad()
    def glia_forward():
        glia(pixel_values=pixels, fragment_values=fragments)

    functions = {"plain ViTModel forward": plain_forward, "GLIANet forward": glia_forward}
    if args.train:
        plain.train().requires_grad_(True)
        glia.train()
        plain_head = torch.nn.Linear(vit_config.hidden_size, 1).to(args.device, dtype)

        def plain_full_finetune_step():
            loss = plain_head(plain(pixel_values=pixels).last_hidden_state[:, 0]).float().square().mean()
            loss.backward()

        def glia_train_step():
            glia(pixel_values=pixels, fragment_values=fragments, labels=labels).loss.backward()

        functions["plain ViT full fine-tune step"] = plain_full_finetune_step
        functions["GLIANet training step"] = glia_train_step
    seconds = timed(functions, args.repeats, args.warmup, args.device)
    rows = [(name, seconds[name], peak_memory(fn, args.device)) for name, fn in functions.items()]

    print(f"device={args.device} dtype={args.dtype} batch={args.batch_size} threads={torch.get_num_threads()} "
          f"torch={torch.__version__}; GLIANet trainable parameters: {trainable:,}")
    print(f"{'what':32s} {'median s':>10s} {'img/s':>9s} {'vs plain fwd':>13s} {'peak GiB':>9s}")
    base = rows[0][1]
    for name, seconds, memory in rows:
        memory_text = f"{memory:9.2f}" if memory is not None else f"{'-':>9s}"
        print(f"{name:32s} {seconds:10.4f} {args.batch_size / seconds:9.1f} {seconds / base:13.2f} {memory_text}")


if __name__ == "__main__":
    main()
