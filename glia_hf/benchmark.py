"""`glia-iqa benchmark`: a checkpoint's SRCC, PLCC, KRCC and RMSE on IQA data sets, in one command.

    glia-iqa benchmark --model DIR_OR_HUB_ID --dataset livec=/data/ChallengeDB_release \\
        --dataset koniq10k=/data/koniq10k --whole --output-dir bench/
    glia-iqa benchmark --model DIR --dataset koniq10k=/data/koniq10k --split 0 --splits koniq10k=splits.json

For each ``NAME=FOLDER`` the data set is read with the readers of `glia_hf.data` (``NAME`` as `load_iqa_dataset`
knows it); its images are all of it (``--whole``, the default: the cross-data-set protocol) or the test part of split
``N`` (``--split N``), from ``--splits NAME=FILE`` when given (the file training wrote), otherwise from
`make_splits` with its defaults (10 seeded 80/20 splits, seed 3407: what training makes when it has no file).

Scoring goes through `glia_hf.scoring.score_to_file`, so each data set's ``OUTPUT/NAME/scores.csv`` is written per batch
and ``--resume`` continues where a run stopped; a data set whose ``metrics.json`` is already there with the same
settings is not scored again. The metrics come from `IQAEvaluator` (`glia_hf.evaluation`), fed the saved scores.

Outputs in ``--output-dir``: ``benchmark.md``, ``benchmark.csv`` and ``benchmark.json`` (``schema_version``: that of
the results files, ``eval.reporting.RESULTS_SCHEMA_VERSION``), with the model, views, seed and resolution in the
caption, and the bootstrap intervals (``--bootstrap N`` resamples of the scores, 1,000 by default; 0 for none).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .image_processing_glia import describe_resolution


def _pairs(values, option):
    from glia_hf.cli import UsageError

    pairs = {}
    for value in values or []:
        name, separator, folder = value.partition("=")
        if not separator or not name or not folder:
            raise UsageError(f"{option} takes NAME=PATH, got {value!r}")
        if name in pairs:
            raise UsageError(f"{option} names {name!r} twice")
        pairs[name] = folder
    return pairs


def add_arguments(parser) -> None:
    """The options of `glia-iqa benchmark`."""
    from glia_hf.cli import DEFAULT_MAX_PIXELS, _non_negative_int, _positive_int

    parser.add_argument("--model", required=True, metavar="DIR", help="checkpoint directory or Hub id")
    parser.add_argument("--dataset", action="append", required=True, metavar="NAME=FOLDER",
                        help="a data set by its reader name (livec, koniq10k, kadid10k, ...) and release folder; "
                             "repeat for more")
    part = parser.add_mutually_exclusive_group()
    part.add_argument("--split", type=_non_negative_int, default=None, metavar="N", help="score the test part of split N")
    part.add_argument("--whole", action="store_true", help="score every image (the default)")
    parser.add_argument("--splits", action="append", default=[], metavar="NAME=FILE",
                        help="the splits file of a data set (default: make_splits' seeded splits)")
    parser.add_argument("--output-dir", default="benchmark", metavar="DIR", help="where the tables go (benchmark/)")
    parser.add_argument("--batch-size", type=_positive_int, default=8, metavar="N", help="images per forward pass (8)")
    parser.add_argument("--num-samples", type=_positive_int, default=None, metavar="K",
                        help="average over K random fragment views per image (default: one centred view)")
    parser.add_argument("--seed", type=int, default=None, metavar="S", help="seed of the views (0; needs --num-samples)")
    parser.add_argument("--bootstrap", type=_non_negative_int, default=1000, metavar="N",
                        help="bootstrap resamples for the confidence intervals (1000; 0 for none)")
    parser.add_argument("--confidence", type=float, default=0.95, metavar="P", help="interval level (0.95)")
    parser.add_argument("--resume", action="store_true", help="keep finished data sets and partial scores")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--max-pixels", type=_non_negative_int, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help="refuse larger images (PIL's limit by default; 0 for no limit)")
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")


def describe_input(processor) -> str:
    """What the model sees, from its image processor's settings."""
    grid, fragment = processor.grid_size, processor.fragment_size
    resolution = describe_resolution(getattr(processor, "resize_short_side", None),
                                     getattr(processor, "resize_resample", "bicubic"))
    return (f"global view {processor.image_size} px; {grid[0]}x{grid[1]} fragments of "
            f"{fragment[0]}x{fragment[1]} px, images at {resolution}")


def describe_views(num_samples, seed) -> str:
    return ("1 centred view (deterministic, no seed)" if num_samples is None
            else f"mean of {num_samples} random views, seed {seed}")


def _select(name, dataset, args, splits_files):
    from glia_hf.data import load_splits, make_splits, select_split

    if args.split is None:
        return dataset, "whole data set"
    if name in splits_files:
        splits = load_splits(splits_files[name], dataset)
        origin = splits_files[name]
    else:
        splits, origin = make_splits(dataset), "make_splits defaults"
    available = len(splits["splits"])
    if args.split >= available:
        from glia_hf.cli import UsageError

        raise UsageError(f"--split {args.split}: {name} has {available} splits ({origin})")
    return select_split(dataset, splits, args.split, part="test"), f"test part of split {args.split} ({origin})"


def run_benchmark(args) -> int:
    """Score every data set, compute the metrics, write the tables; returns the exit status."""
    import torch

    from glia_hf._reporting import RESULTS_SCHEMA_VERSION, Table, metric_label, to_csv, to_markdown
    from glia_hf.cli import UsageError, load_scorer
    from glia_hf.data import get_score_scale, load_iqa_dataset
    from glia_hf.evaluation import IQAEvaluator, load_iqa_metrics
    from glia_hf.scoring import process_state, score_to_file, write_atomically

    if args.seed is not None and args.num_samples is None:
        raise UsageError("--seed only applies with --num-samples (the default view is deterministic)")
    datasets = _pairs(args.dataset, "--dataset")
    splits_files = _pairs(args.splits, "--splits")
    unknown = sorted(set(splits_files) - set(datasets))
    if unknown:
        raise UsageError(f"--splits names {unknown[0]!r}, which no --dataset names")
    state = process_state()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and state.num_processes > 1:
        device = f"cuda:{state.local_process_index}"
    network, processor = load_scorer(args.model, device)
    seed = (0 if args.seed is None else args.seed) if args.num_samples is not None else None
    settings = {
        "model": args.model, "num_samples": args.num_samples, "seed": seed,
        "resolution": describe_input(processor), "split": "whole" if args.split is None else args.split,
        "bootstrap": args.bootstrap, "confidence": args.confidence,
    }
    output_dir = Path(args.output_dir)
    results = {}
    for name, folder in datasets.items():
        try:
            dataset = load_iqa_dataset(name, folder)
        except KeyError as error:
            raise UsageError(f"--dataset {name}: {error.args[0] if error.args else error}") from error
        part, part_text = _select(name, dataset, args, splits_files)
        directory = output_dir / name
        finished = directory / "metrics.json"
        if args.resume and finished.is_file():
            previous = json.loads(finished.read_text(encoding="utf-8"))
            if previous.get("settings") == settings and previous.get("num_images") == len(part):
                if state.is_main_process:
                    print(f"glia-iqa: {name}: kept the finished result in {finished}", file=sys.stderr)
                results[name] = previous
                continue
        scale = get_score_scale(dataset)
        images = [str(path) for path in part["image"]]
        metadata = {"model": args.model, "dataset": name, "part": part_text, "num_samples": args.num_samples,
                    "seed": seed}
        records = score_to_file(
            images, [], network, processor, directory / "scores.csv", metadata, resume=args.resume,
            batch_size=args.batch_size, num_samples=args.num_samples, seed=seed, max_pixels=args.max_pixels or None,
            progress=not args.no_progress, state=state,
        )
        if records is None:  # not the main process: it only scores
            continue
        failed = [r for r in records if r.status != "ok"]
        if failed:
            raise UsageError(f"{name}: {len(failed)} image(s) could not be scored, first {failed[0].path}: "
                             f"{failed[0].error} (see {directory / 'scores.csv'})")
        scores = {record.path: record.score for record in records}
        evaluator = IQAEvaluator()
        strategy = "bootstrap" if args.bootstrap else "simple"
        try:
            computed = evaluator.compute(
                model_or_pipeline=lambda paths: [scores[str(path)] for path in paths], data=part,
                metric=load_iqa_metrics(), strategy=strategy, n_resamples=max(args.bootstrap, 1),
                confidence_level=args.confidence, random_state=0, input_column="image", label_column="mos",
            )
        except ValueError as error:
            raise UsageError(f"{name}: the metrics are undefined on these scores: {error}") from error
        metrics, intervals = {}, {}
        for key, value in computed.items():
            if isinstance(value, dict):
                metrics[key], intervals[key] = value["score"], list(value["confidence_interval"])
            elif key not in ("total_time_in_seconds", "samples_per_second", "latency_in_seconds"):
                metrics[key] = value
        results[name] = {"settings": settings, "part": part_text, "num_images": len(part), "metrics": metrics,
                         "intervals": intervals, "scores_file": str(directory / "scores.csv"),
                         "mos_range": [scale.min, scale.max]}
        write_atomically(finished, lambda stream: json.dump(results[name], stream, indent=2))
    if not state.is_main_process:
        return 0

    keys = [key for key in ("srcc", "plcc", "plcc_raw", "krcc", "rmse", "rmse_raw")
            if any(key in r["metrics"] for r in results.values())]
    labels = [metric_label(key) for key in keys]  # the display labels are defined once, in eval/reporting.py
    with_intervals = any(r["intervals"] for r in results.values())
    interval_text = (f"; [{args.confidence:.0%} bootstrap interval over {args.bootstrap} resamples of the "
                     "(score, MOS) pairs, the logistic refitted on each]" if with_intervals else "")
    model_range = [network.config.score_min, network.config.score_max]
    other_scale = [f"{name} (MOS {r['mos_range'][0]:g}-{r['mos_range'][1]:g})" for name, r in results.items()
                   if [float(v) for v in r.get("mos_range", model_range)] != [float(v) for v in model_range]]
    scale_note = (f"; the model scores on {model_range[0]:g}-{model_range[1]:g}, so raw RMSE is across scales for "
                  + ", ".join(other_scale) if other_scale else "")
    caption = (f"GLIANet {args.model}: {describe_views(args.num_samples, seed)}; {describe_input(processor)}; "
               f"{'whole data sets' if args.split is None else f'test part of split {args.split}'}{interval_text}"
               f"{scale_note}.")
    markdown = Table("Benchmark", caption, ["Data set", "Images"], labels, digits=4)
    numbers_columns = []
    for label in labels:
        numbers_columns += [label] + ([f"{label} low", f"{label} high"] if with_intervals else [])
    numbers = Table("Benchmark", caption, ["Data set", "Images"], numbers_columns)
    for name, result in results.items():
        cells, values = [], []
        for key in keys:
            value, interval = result["metrics"].get(key), result["intervals"].get(key)
            cells.append(None if value is None else
                         f"{value:.4f}" + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""))
            values += [value] + (list(interval) if interval else [None, None] if with_intervals else [])
        markdown.add_row([name, str(result["num_images"])], cells)
        numbers.add_row([name, str(result["num_images"])], values)
    output_dir.mkdir(parents=True, exist_ok=True)
    document = {"schema_version": RESULTS_SCHEMA_VERSION, "caption": caption, **settings, "datasets": results}
    write_atomically(output_dir / "benchmark.md", lambda stream: stream.write(to_markdown(markdown)))
    write_atomically(output_dir / "benchmark.csv", lambda stream: stream.write(to_csv(numbers)))
    write_atomically(output_dir / "benchmark.json", lambda stream: json.dump(document, stream, indent=2))
    sys.stdout.write(to_markdown(markdown))
    print(f"glia-iqa: wrote {output_dir / 'benchmark.md'}, .csv and .json", file=sys.stderr)
    return 0
