"""One benchmark of GLIA-HF's speed against its multiply-add limit: inference, training steps, whole epochs through
the real training loop, the semantic cache and the data path, all timed in alternation in one run.

    python benchmarks/bench_train.py --size small --json bench_small.json              # CPU, fp32
    python benchmarks/bench_train.py --size base --device cuda --dtype bf16 --batch-size 128 --json bench_gpu.json

Every row has its images per second, its GFLOP per image (``torch.utils.flop_counter.FlopCounterMode``: multiply-adds
x 2 of one forward, or forward + backward of a training step), its ``ratio`` to a comparator (images/s over the
comparator's images/s: the plain ``ViTModel`` forward for inference, the LoRA step or epoch for training) and the
``fraction_of_limit`` that ratio reaches, the limit being the comparator's GFLOP over the row's (what the ratio would
be if both ran at the same FLOP rate). Comparators use the same number of rows per call: ``glia_inference_15_views``
counts views, next to ``plain_forward_15_views`` over the same ``batch x 15`` rows.

Rows: ``plain_forward``, ``glia_inference`` (1 view), ``plain_forward_15_views``, ``glia_inference_15_views``;
training steps (forward, backward, AdamW) of ``glia_train``, ``glia_train_cached`` (guidance tokens passed in),
``lora_train``, ``adapter_train``, ``vpt_train``, ``linear_probe_train``, ``full_finetune_train``; epochs through
``training.train.Run.train_epoch`` (Accelerate, the real DataLoader, sampler, collator and semantic cache; random
flips and fragment offsets) on a fixed subset of ``--epoch-images`` images (64) of the built-in set:
``glia_epoch`` (no cache), ``glia_epoch_cached`` (filled cache, fp32 in host memory), ``glia_epoch_cached_bf16_disk``
(filled bf16 cache on disk, memory-mapped: ``data.semantic_cache_dtype bf16``, ``data.semantic_cache_dir``),
``glia_epoch_cached_3_views``, ``lora_epoch``,
``lora_epoch_3_views`` (images/s counts views); ``semantic_cache_fill`` (encoding the whole-image view of every
image in its 4 orientations into a new cache, from pixel values already made: the one-time cost the first epochs pay
lazily); ``data_jpeg_1024`` and ``data_png_512`` (one process decoding a 1024x768 JPEG / 512x384 PNG and making both
views, as one DataLoader worker does); ``data_cached`` (the same JPEG decoded and resized once to the paper's 384 px short
side into a ``training.data.DecodedImageCache``, ``data.cache_images``, with its 224 px whole-image view: a worker
reads both, flips them and cuts the fragments). ``--data-only`` times the data rows alone.

Weights are random (speed does not depend on them). ``--size``: ``base`` is ViT-B/16 with the paper's GLIA settings,
``small`` the quickstart's ViT (hidden 64, 4 blocks), ``tiny`` a 2-block, hidden-32 ViT for tests. On CUDA
``--dtype bf16`` runs under bf16 autocast with SDPA attention and reports each row's peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIZES = {
    "tiny": (dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
             dict(latent_dim=16, cross_attention_heads=2)),
    "small": (dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128),
              dict(latent_dim=32, cross_attention_heads=4)),
    "base": (dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072), {}),
}
TRAIN_METHODS = ("glia", "lora", "adapter", "vpt", "linear_probe", "full_finetune")
# Each row's comparator (None: no comparator).
COMPARATORS = {
    "plain_forward": "plain_forward", "glia_inference": "plain_forward",
    "plain_forward_15_views": "plain_forward_15_views", "glia_inference_15_views": "plain_forward_15_views",
    **{f"{m}_train": "lora_train" for m in TRAIN_METHODS}, "glia_train_cached": "lora_train",
    "glia_epoch": "lora_epoch", "glia_epoch_cached": "lora_epoch", "lora_epoch": "lora_epoch",
    "glia_epoch_cached_bf16_disk": "lora_epoch",
    "glia_epoch_cached_3_views": "lora_epoch_3_views", "lora_epoch_3_views": "lora_epoch_3_views",
    "semantic_cache_fill": None, "data_jpeg_1024": None, "data_png_512": None, "data_cached": None,
}
ROW_NAMES = tuple(COMPARATORS)


def vit_config(size: str):
    from transformers import ViTConfig

    return ViTConfig(image_size=224, patch_size=16, **SIZES[size][0])


def gflop(fn, images: int) -> float:
    """GFLOP per image of one call of ``fn`` on ``images`` images (forward, or forward + backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops() / images / 1e9


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def alternate(functions: dict, repeats: int, warmup: int, device: str) -> dict:
    """Median seconds per call of each function; the functions take turns, so that a change of load on a shared
    machine weighs on all of them alike."""
    times = {name: [] for name in functions}
    for round_ in range(warmup + repeats):
        for name, fn in functions.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_memory_gib(fn, device: str):
    if device != "cuda":
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def write_test_images(folder: Path) -> dict:
    """A 1024x768 JPEG and a 512x384 PNG of smooth random content (what a photograph costs to decode)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    jpeg, png = folder / "photo_1024.jpg", folder / "photo_512.png"
    coarse.resize((1024, 768), Image.BICUBIC).save(jpeg, quality=90)
    coarse.resize((512, 384), Image.BICUBIC).save(png)
    return {"data_jpeg_1024": str(jpeg), "data_png_512": str(png)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default=None,
                        help="default: bf16 on CUDA (autocast), fp32 on CPU")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--epoch-images", type=int, default=64, help="images of the built-in set in an epoch row")
    parser.add_argument("--epoch-batch-size", type=int, default=None, help="default: --batch-size")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers of the epoch rows")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--data-csv", default=None,
                        help="a labels CSV (image, mos) for the epoch rows instead of the built-in set (tests)")
    parser.add_argument("--skip-epochs", action="store_true", help="leave out the epoch rows")
    parser.add_argument("--data-only", action="store_true",
                        help="only the data rows (one DataLoader worker's work per image; no model is built)")
    parser.add_argument("--json", default=None, help="write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype_name = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    device, batch = args.device, args.batch_size
    if args.data_only:
        return finish(args, {}, {}, {}, device, dtype_name, batch)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype_name == "bf16")

    from glia_hf.methods import build_model
    from transformers import ViTModel

    vit = vit_config(args.size)
    glia_options = dict(SIZES[args.size][1])
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch, 3, 224, 224, generator=generator).to(device)
    fragments = torch.randn(batch, 3, 224, 224, generator=generator).to(device)
    fragments_15 = torch.randn(batch, 15, 3, 224, 224, generator=generator).to(device)
    labels = torch.rand(batch, generator=generator).to(device) * 4 + 1
    plain = ViTModel(vit, add_pooling_layer=False).to(device).eval()
    # The ViTs of build_model use transformers' default attention, SDPA.
    models = {m: build_model(m, vit, None, **(glia_options if m == "glia" else {})).to(device) for m in TRAIN_METHODS}
    glia = models["glia"]
    with torch.no_grad(), autocast:
        guidance = glia.glia.encode_guidance(pixels).detach()

    functions, units, flops = {}, {}, {}

    @torch.no_grad()
    def plain_forward(rows=pixels):
        with autocast:
            plain(pixel_values=rows)

    @torch.no_grad()
    def glia_inference(fragment_values=fragments):
        glia.eval()
        with autocast:
            glia(pixel_values=pixels, fragment_values=fragment_values)

    pixels_15 = pixels.repeat_interleave(15, dim=0)
    functions["plain_forward"], units["plain_forward"] = plain_forward, batch
    functions["glia_inference"], units["glia_inference"] = glia_inference, batch
    functions["plain_forward_15_views"] = lambda: plain_forward(pixels_15)
    functions["glia_inference_15_views"] = lambda: glia_inference(fragments_15)
    units["plain_forward_15_views"] = units["glia_inference_15_views"] = batch * 15

    optimizers = {m: torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
                  for m, model in models.items()}

    def train_step(method, cached=False):
        def step():
            model = models[method]
            model.train()
            extra = {"guidance_hidden_states": guidance} if cached else {}
            with autocast:
                loss = model(pixel_values=pixels, fragment_values=fragments, labels=labels, **extra).loss
            loss.backward()
            optimizers[method].step()
            optimizers[method].zero_grad(set_to_none=True)
        return step

    for method in TRAIN_METHODS:
        functions[f"{method}_train"], units[f"{method}_train"] = train_step(method), batch
    functions["glia_train_cached"], units["glia_train_cached"] = train_step("glia", cached=True), batch

    for name, fn in functions.items():
        flops[name] = gflop(fn, units[name])

    epoch_rows = {} if args.skip_epochs else epoch_functions(args, vit, glia_options, dtype_name, flops)
    for name, (fn, count, gflop_per_image) in epoch_rows.items():
        functions[name], units[name], flops[name] = fn, count, gflop_per_image

    return finish(args, functions, units, flops, device, dtype_name, batch)


def finish(args, functions: dict, units: dict, flops: dict, device: str, dtype_name: str, batch: int) -> dict:
    """Add the data rows, time every row in alternation, print the table and write the JSON."""
    with tempfile.TemporaryDirectory() as folder:
        for name, fn in data_functions(write_test_images(Path(folder)), Path(folder) / "image-cache").items():
            functions[name], units[name], flops[name] = fn, 1, None
        seconds = alternate(functions, args.repeats, args.warmup, device)
        memory = {name: peak_memory_gib(fn, device) for name, fn in functions.items()}

    rows = []
    for name in sorted(functions, key=lambda n: ROW_NAMES.index(n) if n in ROW_NAMES else len(ROW_NAMES)):
        speed = units[name] / seconds[name]
        comparator = COMPARATORS.get(name)
        ratio = limit = fraction = None
        if comparator in seconds:
            ratio = speed / (units[comparator] / seconds[comparator])
            if flops[name] and flops[comparator]:
                limit = flops[comparator] / flops[name]
                fraction = ratio / limit
        rows.append({"what": name, "images_per_second": speed, "gflop_per_image": flops[name], "ratio": ratio,
                     "fraction_of_limit": fraction, "peak_memory_gib": memory[name], "comparator": comparator,
                     "limit": limit, "seconds_per_call": seconds[name], "images_per_call": units[name]})
    result = {"device": device if device == "cpu" else torch.cuda.get_device_name(), "dtype": dtype_name,
              "batch": batch, "size": args.size, "threads": torch.get_num_threads(), "workers": args.workers,
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "rows": rows}
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def epoch_functions(args, vit, glia_options, dtype_name, flops) -> dict:
    """Epoch rows through ``training.train.Run.train_epoch``: name -> (function, images per call, GFLOP per image)."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader
    from transformers import get_constant_schedule_with_warmup

    from glia_hf import GLIAImageProcessor
    from glia_hf.data import load_iqa_dataset
    from glia_hf.methods import build_model
    from training.config import config_from_dict
    from training.data import (DiskSemanticCache, EpochSampler, IQAImageDataset, SemanticCache, TrainCollator,
                               _worker_init)
    from training.train import Run

    if args.data_csv:
        dataset = load_iqa_dataset("csv", args.data_csv)
    else:
        dataset = load_iqa_dataset("builtin")
    count = min(args.epoch_images, len(dataset))
    subset = dataset.select(range(count))  # a fixed subset: the first images of the set
    paths, mos = list(subset["image"]), [float(m) for m in subset["mos"]]
    low, high = min(mos), max(mos) if max(mos) > min(mos) else min(mos) + 1
    batch = args.epoch_batch_size or args.batch_size
    accelerator = Accelerator(cpu=args.device == "cpu", mixed_precision="bf16" if dtype_name == "bf16" else "no")
    backbone = {k: getattr(vit, k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                             "intermediate_size", "image_size", "patch_size")}

    def setup(method, views, cached):
        config = config_from_dict({
            "data": {"num_workers": args.workers, "train_views": views, "cache_semantic": cached},
            "model": {"method": method, "backbone": backbone, "glia": glia_options if method == "glia" else {}},
            "optim": {"batch_size": batch, "epochs": 1, "drop_last": False},
            "output": {"log_every": 10**9, "trackers": []},
        })
        torch.manual_seed(0)
        model = build_model(method, vit, None, **(glia_options if method == "glia" else {}), score_min=low,
                            score_max=high)
        processor = GLIAImageProcessor.from_config(model.config)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-6)
        scheduler = get_constant_schedule_with_warmup(optimizer, 0)
        loader = DataLoader(
            IQAImageDataset(paths, mos, config.augmentation.hflip, config.augmentation.vflip,
                            resize=processor.resize_image, ids=range(count)),
            batch_size=batch, sampler=EpochSampler(count, config.optim.seed, 0, views),
            collate_fn=TrainCollator(processor, True), num_workers=args.workers, worker_init_fn=_worker_init,
            pin_memory=args.device == "cuda",
        )
        model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
        run = Run(config, Path(tempfile.gettempdir()), accelerator, None)
        return run, model, optimizer, scheduler, loader, trainable, processor

    rows, counter = {}, {"epoch": 0}

    def epoch_row(method, views, cache_holder=None):
        run, model, optimizer, scheduler, loader, trainable, _ = setup(method, views, cache_holder is not None)

        def one_epoch():
            counter["epoch"] += 1
            cache = cache_holder["cache"] if cache_holder is not None else None
            run.train_epoch(model, optimizer, scheduler, loader, trainable, 0, counter["epoch"], cache)
        return one_epoch

    # The filled cache of the cached rows, made by the fill row (and once before timing).
    glia_run = setup("glia", 1, True)
    glia_model, processor = accelerator.unwrap_model(glia_run[1]), glia_run[6]
    from PIL import Image

    images = [processor.resize_image(Image.open(p).convert("RGB")) for p in paths]
    oriented = [(i, o, image if o == 0 else image.transpose(0) if o == 1 else image.transpose(1) if o == 2
                 else image.transpose(0).transpose(1)) for i, image in enumerate(images) for o in range(4)]
    pixel_batches = []
    for start in range(0, len(oriented), batch):
        chunk = oriented[start:start + batch]
        values = processor([image for _, _, image in chunk])["pixel_values"].to(accelerator.device)
        pixel_batches.append(([i for i, _, _ in chunk], [o for _, o, _ in chunk], values))
    holder = {}

    def filled(cache):
        for ids, orientations, values in pixel_batches:
            with accelerator.autocast():
                cache.lookup(ids, orientations, values, glia_model.glia.encode_guidance)
        return cache

    def fill():
        holder["cache"] = filled(SemanticCache("bench"))

    fill()
    # The same tokens in a bf16 cache on disk (a folder that lives as long as the rows), filled once before timing.
    disk_folder = tempfile.TemporaryDirectory(prefix="glia-semantic-")
    disk = {"cache": filled(DiskSemanticCache("bench", disk_folder.name, count, dtype=torch.bfloat16)),
            "folder": disk_folder}
    fill_gflop = gflop(lambda: glia_model.glia.encode_guidance(pixel_batches[0][2]), len(pixel_batches[0][0]))
    rows["glia_epoch"] = (epoch_row("glia", 1), count, flops["glia_train"])
    rows["glia_epoch_cached"] = (epoch_row("glia", 1, holder), count, flops["glia_train_cached"])
    rows["glia_epoch_cached_bf16_disk"] = (epoch_row("glia", 1, disk), count, flops["glia_train_cached"])
    rows["glia_epoch_cached_3_views"] = (epoch_row("glia", 3, holder), count * 3, flops["glia_train_cached"])
    rows["lora_epoch"] = (epoch_row("lora", 1), count, flops["lora_train"])
    rows["lora_epoch_3_views"] = (epoch_row("lora", 3), count * 3, flops["lora_train"])
    rows["semantic_cache_fill"] = (fill, count * 4, fill_gflop)
    return rows


#: The paper's resolution (LoDa's 384 px short side), at which ``data_cached`` reads its arrays.
CACHED_SHORT_SIDE = 384


def data_functions(files: dict, cache_root: Path) -> dict:
    """One image through a DataLoader worker's work: decode (or read from the decoded-image cache, ``data_cached``,
    built here under ``cache_root`` before the timing), flips, both views (the training collator)."""
    from glia_hf import GLIAImageProcessor
    from training.data import DecodedImageCache, IQAImageDataset, TrainCollator

    functions = {}
    for name, path in files.items():
        dataset = IQAImageDataset([path], [3.0], hflip=0.5, vflip=0.5)
        collate = TrainCollator(GLIAImageProcessor(), random_offsets=True)
        functions[name] = (lambda d=dataset, c=collate: c([d[(0, 1)]]))
    processor = GLIAImageProcessor(resize_short_side=CACHED_SHORT_SIDE)
    jpeg = files["data_jpeg_1024"]
    cache = DecodedImageCache.build(cache_root, [jpeg], processor, log=lambda line: None)
    dataset = IQAImageDataset([jpeg], [3.0], hflip=0.5, vflip=0.5, resize=processor.resize_image, decoded=cache)
    collate = TrainCollator(processor, random_offsets=True)
    functions["data_cached"] = (lambda d=dataset, c=collate: c([d[(0, 1)]]))
    return functions


def format_table(result: dict) -> str:
    lines = [f"device={result['device']} dtype={result['dtype']} batch={result['batch']} size={result['size']} "
             f"threads={result['threads']} workers={result['workers']} torch={result['torch']} {result['date']}",
             f"{'what':28s} {'img/s':>9s} {'GFLOP/img':>10s} {'ratio':>7s} {'limit':>7s} {'of limit':>9s} "
             f"{'peak GiB':>9s}  vs"]

    def number(value, width, digits):
        return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}s}"

    for row in result["rows"]:
        lines.append(f"{row['what']:28s} {number(row['images_per_second'], 9, 2)} "
                     f"{number(row['gflop_per_image'], 10, 3)} {number(row['ratio'], 7, 3)} "
                     f"{number(row['limit'], 7, 3)} {number(row['fraction_of_limit'], 9, 3)} "
                     f"{number(row['peak_memory_gib'], 9, 2)}  {row['comparator'] or ''}")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
