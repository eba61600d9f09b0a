"""`glia-iqa`: score image files with a trained GLIANet checkpoint from the command line.

    glia-iqa score photos/ extra.jpg "shots/**/*.png" --model path/to/glianet --output scores.csv
    python -m glia_hf.cli score img.jpg --model path/to/glianet --num-samples 15 --seed 0
    glia-iqa export onnx --model path/to/glianet --output export/model.onnx    # see glia_hf/onnx_export.py
    glia-iqa score photos/ --model export/model.onnx --backend onnx

What it does:

- PATH arguments may be files, folders (searched recursively for image extensions) or glob patterns (quote them to
  let `glia-iqa` expand them; `**` crosses folders). A file named explicitly is always tried, whatever its extension.
- Images are read with the project's one reader, `glia_hf.pipeline_glia.open_image_file` (the pipeline and
  `glia_hf.data.load_image` use it too, with the same messages): EXIF orientation applied, grayscale / palette /
  CMYK / 16-bit converted to 8-bit RGB, transparency composited onto white. Tiny images (down to 1x1) are upscaled
  by the image processor until each grid cell holds a whole fragment.
- Very large images are refused, not downscaled: the detail stream cuts its fragments from the full-resolution image, so
  downscaling would change what is being judged. The limit is `--max-pixels` (default: PIL's decompression-bomb limit,
  89,478,485 pixels; 0 for none), checked from the file header before decoding.
- A file that cannot be scored (missing, not an image, corrupt, truncated, too large) is reported on stderr with its
  path, listed in the output with `status` = `error` and the reason, and the others are still scored.
- Scores are on the checkpoint's data-set scale (higher is better). Each image is processed on its own and the model
  runs in evaluation mode, so an image gets the same score alone or in any batch, within 1e-5 (float rounding).

Output: a table on stdout, or `--output FILE` as CSV (`path,score,status,error`) or JSON (chosen by the extension).
With `--output`, rows are saved after every batch and the file is replaced atomically at the end; `--resume` continues
an interrupted run, and `accelerate launch -m glia_hf.cli score ...` splits the files across processes, writing the
same single file in input order (see `glia_hf/scoring.py`).
Exit status: 0 when every image was scored, 1 when any failed, 2 for a usage error (bad arguments, no input found, a
model that cannot be loaded: "no such model folder", a folder without config.json, a Hub id that cannot be reached).
Every error is one line on stderr; `--debug` (or the environment variable GLIA_DEBUG=1) shows the traceback.
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

from glia_hf.pipeline_glia import DEFAULT_MAX_PIXELS, ImageFileError, open_image_file


IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm", ".pnm",
)
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
    """Read one file as 8-bit RGB with the project's one reader, `glia_hf.pipeline_glia.open_image_file`.

    Raises its `ImageFileError` (an `OSError`, message `"<path>: <reason>"`) when the file is missing, not an image,
    corrupt, truncated, or has more than `max_pixels` pixels (checked from the header; `None` or 0: no limit).
    """
    return open_image_file(path, max_pixels=max_pixels)


def resolve_model(model: str) -> str:
    """Where `--model` points: a local checkpoint folder (returned with `~` expanded) or a Hub id (returned as is).

    Raises `UsageError` with one line saying what to change when a local path does not exist ("no such model
    folder"), is a file, or is a folder without `config.json`, or holds a model that is not a GLIANet. A value that
    is not a valid Hub id (an absolute path, `./x`, `a/b/c`, ...) is taken as a local path.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    local = os.path.expanduser(model)
    if os.path.isdir(local):
        config = os.path.join(local, "config.json")
        if not os.path.isfile(config):
            raise UsageError(
                f"{model}: not a model folder (it has no config.json); give the folder a training run saved, "
                "e.g. outputs/quickstart/split-0/model"
            )
        try:
            with open(config, encoding="utf-8") as stream:
                model_type = json.load(stream).get("model_type")
        except (OSError, ValueError, AttributeError) as error:
            raise UsageError(f"{config}: cannot read the model's config.json ({type(error).__name__}: {error})")
        if model_type != "glia":
            raise UsageError(f"{model}: holds a {model_type!r} model, not a GLIANet checkpoint (model_type 'glia')")
        return local
    if os.path.exists(local):
        raise UsageError(f"{model}: is a file, not a model folder; give the folder that holds config.json")
    try:
        validate_repo_id(model)
    except HFValidationError:
        raise UsageError(f"{model}: no such model folder") from None
    return model


def _hub_failure(model: str, error: Exception) -> str:
    """One line for a Hub id that could not be loaded: offline / unreachable, unknown, or another reason."""
    from huggingface_hub import is_offline_mode

    text = " ".join(str(error).split())
    local_hint = "a local model folder works too (--model path/to/model)"
    if is_offline_mode():
        return (f"{model}: no such local folder, and it cannot be downloaded from the Hugging Face Hub in offline "
                f"mode (HF_HUB_OFFLINE=1); {local_hint}")
    if "connect" in text.lower() or "connection" in type(error).__name__.lower():
        return f"{model}: no such local folder, and the Hugging Face Hub cannot be reached; {local_hint}"
    if "not a valid model identifier" in text or type(error).__name__ == "RepositoryNotFoundError":
        return (f"{model}: no such local folder, and no such model on the Hugging Face Hub (or it is private: "
                f"log in with `hf auth login`); {local_hint}")
    return f"cannot load the model {model!r}: {type(error).__name__}: {text}"


def load_scorer(model: str, device: str):
    """Load a GLIANet checkpoint (local directory or Hub id) and its image processor, in evaluation mode.

    Raises `UsageError` (one line) for a `model` that does not name a loadable GLIANet checkpoint (see
    `resolve_model`) and for `device="cuda"` without CUDA.
    """
    import torch

    from glia_hf import GLIAForImageQualityAssessment, GLIAImageProcessor

    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but CUDA is not available; use --device cpu")
    location = resolve_model(model)
    try:
        network = GLIAForImageQualityAssessment.from_pretrained(location)
    except Exception as error:  # noqa: BLE001 -- any loading failure becomes one line (--debug shows the traceback)
        if location == model and not os.path.isdir(location):
            raise UsageError(_hub_failure(model, error)) from error
        text = " ".join(str(error).split())
        raise UsageError(f"cannot load the model {model!r}: {type(error).__name__}: {text}") from error
    try:
        processor = GLIAImageProcessor.from_pretrained(location)
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
                except ImageFileError as error:
                    record.status, record.error = "error", error.reason
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


DEBUG_ENV = "GLIA_DEBUG"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one line: what is wrong, and where the help is."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """`--debug`: show the traceback of an error instead of its one line (so does the environment variable
    GLIA_DEBUG=1). Every subcommand takes it."""
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS,
        help=f"on an error, show the full traceback instead of one line (or set {DEBUG_ENV}=1)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="glia-iqa", description="Blind image quality assessment with GLIANet checkpoints.")
    add_debug_flag(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
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
    score.add_argument(
        "--seed", type=_integer, default=None, metavar="S", help="seed of the views (0; needs --num-samples)"
    )
    score.add_argument("--output", default=None, metavar="FILE", help="a .csv or .json file (default: table on stdout)")
    score.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available, else cpu")
    score.add_argument(
        "--max-pixels", type=_non_negative_int, default=DEFAULT_MAX_PIXELS, metavar="N",
        help=f"refuse larger images (default {DEFAULT_MAX_PIXELS:,}, PIL's limit; 0 for no limit)",
    )
    score.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    add_debug_flag(score)
    score.add_argument(
        "--backend", choices=("torch", "onnx"), default="torch",
        help="torch (default), or onnx: --model is a graph from `glia-iqa export onnx` run with onnxruntime on the CPU",
    )

    export = commands.add_parser("export", help="export a checkpoint to another format",
                                 description="Export a GLIANet checkpoint to another format.")
    formats = export.add_subparsers(dest="format", required=True, metavar="FORMAT")
    onnx = formats.add_parser(
        "onnx", help="one ONNX graph: both streams, K views, dynamic batch and views",
        description="Export to ONNX (needs the [onnx] extra). The processor settings are saved beside the graph.",
    )
    onnx.add_argument("--model", required=True, metavar="DIR", help="checkpoint directory (or Hub id)")
    onnx.add_argument("--output", required=True, metavar="FILE", help="the .onnx file to write")
    onnx.add_argument("--opset", type=_positive_int, default=18, metavar="N", help="ONNX opset (18)")
    onnx.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-torch parity check")
    add_debug_flag(onnx)
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


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = _integer(text)
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
        shown = "; ".join(f"{record.path}: {record.error}" for record in missing[:3])
        more = f"; and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise UsageError(f"no image files found in the given paths ({shown}{more})")

    from glia_hf.scoring import process_state, score_to_file

    state = process_state()  # several processes under `accelerate launch`; see glia_hf/scoring.py
    if state.num_processes > 1 and output_format is None:
        raise UsageError("scoring on several processes needs --output (a .csv or .json file they all write to)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    bars_were_enabled = hf_logging.is_progress_bar_enabled()
    if args.no_progress:
        hf_logging.disable_progress_bar()
    try:
        if args.backend == "onnx":
            network, processor = _load_onnx_backend(args.model, args.device or "cpu")
        else:
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
        try:
            os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        except OSError as error:
            raise UsageError(f"cannot write --output {args.output}: {error.strerror or error}") from error
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


def _load_onnx_backend(model: str, device: str):
    """`glia-iqa score --backend onnx`: the exported graph and the processor saved beside it."""
    if device != "cpu":
        raise UsageError("--backend onnx runs on the CPU: leave out --device or give --device cpu")
    try:
        from glia_hf.onnx_export import load_onnx_scorer

        return load_onnx_scorer(model)
    except ImportError as error:
        raise UsageError(f"--backend onnx needs onnxruntime: pip install 'glia-hf[onnx]' ({error})") from error
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot load the ONNX graph {model!r}: {error}") from error


def run_export(args) -> int:
    """`glia-iqa export onnx`: write the graph and the processor settings beside it."""
    try:
        from glia_hf.onnx_export import export_onnx
    except ImportError as error:
        raise UsageError(f"export onnx needs onnx, onnxscript and onnxruntime: pip install 'glia-hf[onnx]' ({error})")
    if not args.output.endswith(".onnx"):
        raise UsageError(f"--output must end in .onnx, got {args.output!r}")
    network, processor = load_scorer(args.model, "cpu")
    path = export_onnx(network, args.output, processor=processor, opset=args.opset, check=not args.no_check)
    print(f"glia-iqa: wrote {path} and {path.parent / 'preprocessor_config.json'}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `glia-iqa` and `python -m glia_hf.cli`; returns the exit status.

    An error is one line on stderr (`glia-iqa: error: ...`) and no traceback: 2 for a usage error (arguments, inputs,
    model), 1 for anything else, 130 after Ctrl-C. `--debug` or GLIA_DEBUG=1 shows the traceback instead.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed its message; keep main() a function that returns a status
        return int(exit_.code or 0)
    debug = getattr(args, "debug", False) or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")
    try:
        if args.command == "export":
            return run_export(args)
        if args.command == "benchmark":
            from glia_hf.benchmark import run_benchmark

            return run_benchmark(args)
        return run_score(args)
    except UsageError as error:
        if debug:
            raise
        print(f"glia-iqa: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("glia-iqa: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 -- not a usage error: one line, the traceback with --debug
        if debug:
            raise
        text = " ".join(str(error).split())
        print(f"glia-iqa: error: {type(error).__name__}: {text} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
