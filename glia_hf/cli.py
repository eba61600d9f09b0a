"""`glia-iqa`: score image files with a trained GLIANet checkpoint from the command line.

    glia-iqa score photos/ extra.jpg "shots/**/*.png" --model path/to/glianet --output scores.csv
    python -m glia_hf.cli score img.jpg --model path/to/glianet --num-samples 15 --seed 0

What it does:

- PATH arguments may be files, folders (searched recursively for image extensions) or glob patterns (quote them to
  let `glia-iqa` expand them; `**` crosses folders). A file named explicitly is always tried, whatever its extension.
- Images are read with `glia_hf.data.images.load_image`: EXIF orientation applied, grayscale / palette / CMYK / 16-bit
  converted to 8-bit RGB, transparency composited onto white. Tiny images (down to 1x1) are upscaled by the image
  processor until each grid cell holds a whole fragment.
- Very large images are refused, not downscaled: the detail stream cuts its fragments from the full-resolution image, so
  downscaling would change what is being judged. The limit is `--max-pixels` (default: PIL's decompression-bomb limit,
  89,478,485 pixels; 0 for none), checked from the file header before decoding.
- A file that cannot be scored (missing, not an image, corrupt, truncated, too large) is reported on stderr with its
  path, listed in the output with `status` = `error` and the reason, and the others are still scored.
- Scores are on the checkpoint's data-set scale (higher is better). Each image is processed on its own and the model
  runs in evaluation mode, so an image gets the same score alone or in any batch.

Output: a table on stdout, or `--output FILE` as CSV (`path,score,status,error`) or JSON (chosen by the extension).
With `--output`, rows are saved after every batch and the file is replaced atomically at the end; `--resume` continues
an interrupted run, and `accelerate launch -m glia_hf.cli score ...` splits the files across processes, writing the
same single file in input order (see `glia_hf/scoring.py`).
Exit status: 0 when every image was scored, 1 when any failed, 2 for a usage error (bad arguments, no input found, a
model directory that cannot be loaded).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys
from dataclasses import asdict, dataclass

from PIL import Image


IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm", ".pnm",
)
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's default Image.MAX_IMAGE_PIXELS
OUTPUT_FORMATS = {".csv": "csv", ".json": "json"}
GLOB_CHARACTERS = "*?["


class UsageError(Exception):
    """A mistake in the command line; reported with the usage line and exit status 2."""


@dataclass
class ScoreRecord:
    """One input's result: `score` is `None` and `error` says why when `status` is `"error"`."""

    path: str
    score: float | None = None
    status: str = "ok"
    error: str | None = None


def expand_paths(arguments: list[str], extensions=IMAGE_EXTENSIONS) -> tuple[list[str], list[ScoreRecord]]:
    """Turn PATH arguments into image files, in argument order, each file once.

    Returns the files and a failed record for every argument that matched nothing (a missing file, an empty glob).
    Folders are walked recursively (sorted, hidden entries skipped) and keep only files with an image extension; glob
    matches are filtered the same way; a file named explicitly is kept as is.
    """
    files, missing, seen = [], [], set()

    def add(path):
        key = os.path.normcase(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            files.append(path)

    def is_image_name(path):
        return path.lower().endswith(extensions)

    def walk(folder):
        found = []
        for root, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [os.path.join(root, n) for n in names if not n.startswith(".") and is_image_name(n)]
        return sorted(found)

    for argument in arguments:
        if os.path.isfile(argument):
            add(argument)
        elif os.path.isdir(argument):
            found = walk(argument)
            if not found:
                missing.append(ScoreRecord(argument, status="error", error="folder holds no image files"))
            for path in found:
                add(path)
        elif any(character in argument for character in GLOB_CHARACTERS):
            matched = []
            for match in sorted(glob.glob(argument, recursive=True)):
                if os.path.isdir(match):
                    matched += walk(match)
                elif os.path.isfile(match) and is_image_name(match):
                    matched.append(match)
            if not matched:
                missing.append(ScoreRecord(argument, status="error", error="pattern matches no image files"))
            for path in matched:
                add(path)
        else:
            missing.append(ScoreRecord(argument, status="error", error="no such file or folder"))
    return files, missing


def read_image(path: str, max_pixels: int | None) -> Image.Image:
    """Read one file as 8-bit RGB with `load_image`, after refusing it from its header if it is too large.

    Raises `ValueError` naming the file and its size when it has more than `max_pixels` pixels, and
    `glia_hf.data.errors.IQAImageError` (naming the file) when it cannot be read.
    """
    from glia_hf.data.images import load_image

    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our limit below replaces PIL's decompression-bomb check
    try:
        try:
            with Image.open(path) as header:
                width, height = header.size
        except Exception:  # noqa: BLE001 -- load_image raises the error that names the file
            width = height = 0
        if max_pixels and width * height > max_pixels:
            raise ValueError(
                f"{path}: image too large: {width}x{height} = {width * height:,} pixels, more than the limit of "
                f"{max_pixels:,}; downscale it first or raise --max-pixels (0 removes the limit)"
            )
        return load_image(path)
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def load_scorer(model: str, device: str):
    """Load a GLIANet checkpoint (local directory or Hub id) and its image processor, in evaluation mode."""
    import torch

    from glia_hf import GLIAForImageQualityAssessment, GLIAImageProcessor

    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but CUDA is not available")
    try:
        network = GLIAForImageQualityAssessment.from_pretrained(model)
    except Exception as error:  # noqa: BLE001 -- any loading failure is reported the same way
        raise UsageError(f"cannot load the model {model!r}: {type(error).__name__}: {error}") from error
    try:
        processor = GLIAImageProcessor.from_pretrained(model)
    except Exception:  # noqa: BLE001 -- a checkpoint saved without its processor: rebuild it from the config
        processor = GLIAImageProcessor.from_config(network.config)
    return network.to(device).eval(), processor


def score_files(
    files: list[str],
    network,
    processor,
    batch_size: int = 8,
    num_samples: int | None = None,
    seed: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: bool = True,
    report=None,
) -> list[ScoreRecord]:
    """Score `files` in batches of `batch_size`; unreadable files become error records (and are passed to `report`)."""
    import torch
    from tqdm.auto import tqdm

    device = next(network.parameters()).device
    records: list[ScoreRecord] = []
    with tqdm(total=len(files), unit="image", desc="Scoring", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(files), batch_size):
            batch_paths, images, batch_records = files[start : start + batch_size], [], []
            for path in batch_paths:
                record = ScoreRecord(path)
                try:
                    images.append(read_image(path, max_pixels))
                except (OSError, ValueError) as error:
                    message, prefix = str(error), f"{path}: "
                    record.status = "error"
                    record.error = message[len(prefix) :] if message.startswith(prefix) else message
                    if report is not None:
                        report(record)
                batch_records.append(record)
            if images:
                inputs = processor(images=images, num_samples=num_samples, seed=seed)
                with torch.inference_mode():
                    scores = network(
                        pixel_values=inputs["pixel_values"].to(device),
                        fragment_values=inputs["fragment_values"].to(device),
                    ).score.float().cpu().tolist()
                for record, score in zip((r for r in batch_records if r.status == "ok"), scores):
                    record.score = float(score)
            records += batch_records
            bar.update(len(batch_paths))
    return records


def write_csv(records: list[ScoreRecord], stream) -> None:
    writer = csv.DictWriter(stream, fieldnames=["path", "score", "status", "error"], lineterminator="\n")
    writer.writeheader()
    for record in records:
        row = asdict(record)
        row["score"] = "" if record.score is None else repr(record.score)
        row["error"] = record.error or ""
        writer.writerow(row)


def write_json(records: list[ScoreRecord], stream, metadata: dict) -> None:
    json.dump({**metadata, "results": [asdict(r) for r in records]}, stream, indent=2)
    stream.write("\n")


def format_table(records: list[ScoreRecord]) -> str:
    """A plain text table: score (or ERROR), status and path, one image a line."""
    lines = [f"{'score':>12}  {'status':6}  path"]
    for record in records:
        score = f"{record.score:12.6f}" if record.score is not None else f"{'-':>12}"
        lines.append(f"{score}  {record.status:6}  {record.path}")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glia-iqa", description="Blind image quality assessment with GLIANet checkpoints."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    score = commands.add_parser(
        "score",
        help="score image files, folders or glob patterns",
        description="Score images with a GLIANet checkpoint. Exit status: 0 all scored, 1 some failed, 2 usage error.",
    )
    score.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (recursive) or glob patterns")
    score.add_argument("--model", required=True, metavar="DIR", help="checkpoint directory (or Hub id)")
    score.add_argument("--batch-size", type=_positive_int, default=8, metavar="N", help="images per forward pass (8)")
    score.add_argument(
        "--num-samples", type=_positive_int, default=None, metavar="K",
        help="average over K random fragment views per image (default: one centred view)",
    )
    score.add_argument("--seed", type=int, default=None, metavar="S", help="seed of the views (0; needs --num-samples)")
    score.add_argument("--output", default=None, metavar="FILE", help="a .csv or .json file (default: table on stdout)")
    score.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available, else cpu")
    score.add_argument(
        "--max-pixels", type=_non_negative_int, default=DEFAULT_MAX_PIXELS, metavar="N",
        help=f"refuse larger images (default {DEFAULT_MAX_PIXELS:,}, PIL's limit; 0 for no limit)",
    )
    score.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    score.add_argument(
        "--resume", action="store_true",
        help="keep the rows already scored in --output (and in its .parts/ folder after an interruption); score the rest",
    )
    benchmark = commands.add_parser(
        "benchmark",
        help="SRCC, PLCC, KRCC and RMSE of a checkpoint on IQA data sets, as markdown, CSV and JSON tables",
        description="Score IQA data sets (whole, or the test part of a split) with a checkpoint and tabulate the "
        "metrics with bootstrap intervals. Exit status: 0 done, 2 usage error. See glia_hf/benchmark.py.",
    )
    from glia_hf.benchmark import add_arguments as add_benchmark_arguments

    add_benchmark_arguments(benchmark)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or a positive integer, got {text}")
    return value


def run_score(args) -> int:
    import torch
    from tqdm.auto import tqdm
    from transformers.utils import logging as hf_logging

    if args.seed is not None and args.num_samples is None:
        raise UsageError("--seed only applies with --num-samples (the default view is deterministic)")
    output_format = None
    if args.output is not None:
        output_format = OUTPUT_FORMATS.get(os.path.splitext(args.output)[1].lower())
        if output_format is None:
            raise UsageError(f"--output must end in .csv or .json, got {args.output!r}")
    if args.resume and args.output is None:
        raise UsageError("--resume needs --output (the file whose rows are kept)")
    files, missing = expand_paths(args.paths)
    if not files:
        for record in missing:
            print(f"glia-iqa: error: {record.path}: {record.error}", file=sys.stderr)
        raise UsageError("no image files found in the given paths")

    from glia_hf.scoring import process_state, score_to_file

    state = process_state()  # several processes under `accelerate launch`; see glia_hf/scoring.py
    if state.num_processes > 1 and output_format is None:
        raise UsageError("scoring on several processes needs --output (a .csv or .json file they all write to)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    bars_were_enabled = hf_logging.is_progress_bar_enabled()
    if args.no_progress:
        hf_logging.disable_progress_bar()
    try:
        network, processor = load_scorer(args.model, device)
    finally:
        if bars_were_enabled:
            hf_logging.enable_progress_bar()
    if device == "cuda" and state.num_processes > 1:
        device = f"cuda:{state.local_process_index}"
        network.to(device)
    seed = (0 if args.seed is None else args.seed) if args.num_samples is not None else None

    def report(record):
        tqdm.write(f"glia-iqa: error: {record.path}: {record.error}", file=sys.stderr)  # keeps the bar intact

    if state.is_main_process:
        for record in missing:
            report(record)

    metadata = {
        "model": args.model,
        "score_name": network.config.score_name,
        "score_range": [network.config.score_min, network.config.score_max],
        "num_samples": args.num_samples,
        "seed": seed,
    }
    if output_format is None:
        # Arguments that matched nothing come first, then every file in expansion order.
        records = missing + score_files(
            files, network, processor, batch_size=args.batch_size, num_samples=args.num_samples, seed=seed,
            max_pixels=args.max_pixels or None, progress=not args.no_progress, report=report,
        )
        sys.stdout.write(format_table(records))
    else:
        # Split across processes, written per batch, merged in input order, replaced atomically (glia_hf/scoring.py).
        records = score_to_file(
            files, missing, network, processor, args.output, metadata, resume=args.resume,
            batch_size=args.batch_size, num_samples=args.num_samples, seed=seed, max_pixels=args.max_pixels or None,
            progress=not args.no_progress, report=report, state=state,
        )
        if records is None:  # not the main process: the main one writes the output and the summary
            return 0
    failed = sum(r.status != "ok" for r in records)
    scored = len(records) - failed
    print(f"glia-iqa: scored {scored} image(s), {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `glia-iqa` and `python -m glia_hf.cli`; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed its message; keep main() a function that returns a status
        return int(exit_.code or 0)
    try:
        if args.command == "benchmark":
            from glia_hf.benchmark import run_benchmark

            return run_benchmark(args)
        return run_score(args)
    except UsageError as error:
        parser.print_usage(sys.stderr)
        print(f"glia-iqa: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
