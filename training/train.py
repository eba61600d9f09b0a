"""The one training loop of GLIA-HF: GLIANet and every fine-tuning baseline, on one CPU, one GPU or many.

    accelerate launch training/train.py --config training/configs/quickstart.yaml
    accelerate launch training/train.py --config training/configs/koniq10k.yaml --data.data_dir /data/koniq10k
    accelerate launch training/train.py --config training/configs/koniq10k.yaml --model.method lora --data.splits 0
    accelerate launch training/train.py --config ... --resume                  # continue an interrupted run
    accelerate launch training/train.py --config ... --push_to_hub --hub_model_id user/glia-koniq10k

What one run does, per split of the seeded split file (``data.splits``: one, a list, or all ten):

1. builds the model with ``glia_hf.methods.build_model`` (the score range of the data set goes into its config)
   and an AdamW optimiser over its trainable parameters only, with a per-step cosine schedule;
2. trains for ``optim.epochs`` epochs on the split's training part (random flips, random fragment offsets), with
   Accelerate taking care of devices, mixed precision, gradient accumulation and data-parallel sharding, and saves
   the full training state after every epoch (``checkpoints/split-K/epoch-E``);
3. scores the split's test part, averaging ``eval.num_views`` fragment draws per image under a fixed seed, gathers
   the predictions of all processes, and writes ``split-K/predictions.csv``, ``split-K/scatter.png``,
   ``split-K/result.json`` and the trained model as a Hub-ready directory ``split-K/model``.

At the end it writes ``results.json`` (per-split metrics; median, mean and std over the splits; trainable
parameters; wall time; the config), ``results.md`` / ``results.csv`` (the table), and pushes one split's model to
the Hub when asked. ``--resume`` skips finished splits, reloads the newest epoch state of the running one
(model, optimiser, scheduler, RNG; the data order is a function of seed and epoch) and ends with the same
predictions as a run that was never interrupted.

Where the parts live (this file is only the command line): ``checks.py`` (backbone and data checks, the model),
``loop.py`` (the :class:`Run` and its epoch loop), ``run_data.py`` (data set, splits, loaders, caches),
``evaluation.py`` (scoring, calibration, per-split outputs), ``results.py`` (results files and tables), ``publish.py``
(saved models, model cards, Hub push), ``run_dir.py`` (reuse, resume, clean-up), ``trackers.py``, ``data.py``.

Configuration: ``training/config.py`` (every field, its default and its meaning); overrides on the command line
with dotted names. Run-control flags that are not part of the recipe: ``--resume [RUN_DIR]``,
``--max_epochs_this_invocation N`` (stop cleanly after N epochs, e.g. to fit a time slot), ``--push_to_hub``,
``--hub_model_id``, ``--print_config``.
"""

from __future__ import annotations

import os
import sys


if not __package__:
    # Run as a script (`accelerate launch training/train.py`), Python puts training/ on sys.path, not the repository
    # root, so `eval` (the metrics and report helpers, which are not part of the installed package) and `training`
    # itself would not import. Put the root first; when imported as `training.train` the root is already there.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

import glia_hf  # noqa: F401  (registers the GLIA classes with the Auto classes and for remote code)
from training.config import RUN_CONTROL_FIELDS, ConfigError, TrainConfig, config_help, flat_config
from training.errors import DiskFull, RunInterrupted, is_disk_full, run_cli
# Every name below stays importable from training.train, as before the package was split into rooms.
from training.checks import (backbone_argument, backbone_description, backbone_normalisation, build_model,
                             check_backbone, check_data, method_label, resolution_of, _first_line)
from training.data import (DecodedImageCache, EpochSampler, EvalCollator, IQAImageDataset, SemanticCache,
                           TrainCollator, semantic_cache_key, semantic_cache_reason)
from training.loop import Progress, Run, StopRun, make_accelerator, schedule_steps
from training.publish import card_values, export_model, finish_run, push_to_hub, write_model_cards
from training.results import (REPORTED_METRICS, per_split_markdown, reported_metrics, result_label, results_table,
                              summary_of, whole_run_markdown, write_results)
from training.run_dir import (STATE_MARKER, ExistingRun, RunDirGuard, describe_run_dir, failure_message,
                              kept_summary, prepare_run_dir, recipe_differences, refuse_existing_run, resolve_config,
                              resumable, resume_command, reuse_finished_run, _is_main_rank)
from training.trackers import CSVTracker, make_trackers

__all__ = [
    "main", "parse_args", "resolve_config", "Run", "Progress", "StopRun", "schedule_steps", "make_accelerator",
    "RUN_CONTROL_FIELDS", "STATE_MARKER", "CSVTracker", "make_trackers", "backbone_argument",
    "backbone_description", "backbone_normalisation", "build_model", "check_backbone", "check_data", "method_label",
    "resolution_of", "REPORTED_METRICS", "per_split_markdown", "reported_metrics", "result_label", "results_table",
    "summary_of", "whole_run_markdown", "write_results", "card_values", "export_model", "finish_run", "push_to_hub",
    "write_model_cards", "ExistingRun", "RunDirGuard", "describe_run_dir", "failure_message", "kept_summary",
    "prepare_run_dir", "recipe_differences", "refuse_existing_run", "resumable", "resume_command",
    "reuse_finished_run", "ConfigError", "TrainConfig", "DecodedImageCache", "EpochSampler", "EvalCollator",
    "IQAImageDataset", "SemanticCache", "TrainCollator", "semantic_cache_key", "semantic_cache_reason",
]


def parse_args(argv: Optional[Sequence[str]] = None):
    parser = argparse.ArgumentParser(
        description="Train GLIANet or a fine-tuning baseline with Accelerate. Any config value can be overridden "
                    "with its dotted name, e.g. --optim.lr 1e-4 --data.splits [0,1,2].",
        epilog=config_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", action="append",
                        help="YAML config (training/configs/*.yaml); repeat to layer files, e.g. a data set config "
                             "then training/configs/methods/lora.yaml (later files win); default: all defaults")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
                        help="continue the interrupted run in output.dir (or RUN_DIR, whose config.yaml is used "
                             "when --config is not given)")
    parser.add_argument("--max_epochs_this_invocation", type=int, default=None,
                        help="save the state and stop after this many epochs; continue later with --resume")
    parser.add_argument("--push_to_hub", action="store_true", help="shortcut for --hub.push_to_hub true")
    parser.add_argument("--hub_model_id", help="shortcut for --hub.hub_model_id")
    parser.add_argument("--print_config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of its one-line message (or GLIA_DEBUG=1)")
    args, overrides = parser.parse_known_args(argv)
    if args.push_to_hub:
        overrides += ["--hub.push_to_hub", "true"]
    if args.hub_model_id:
        overrides += ["--hub.hub_model_id", args.hub_model_id]
    return args, overrides


def main(argv: Optional[Sequence[str]] = None, on_epoch_end: Optional[Callable[[int, int], None]] = None) -> dict:
    """Run the trainer. Returns the results payload (what ``results.json`` holds), or ``{"stopped": True, ...}``.

    ``on_epoch_end(split, epoch)`` is called after each epoch's state is saved (tests use it to interrupt a run).

    A finished run of the same recipe in ``output.dir`` is reused: nothing is trained, its ``results.json`` is
    returned (with ``"reused": True``). Errors the user can fix are raised as :class:`ConfigError`, data errors,
    :class:`~training.errors.DiskFull` or, for Ctrl-C, :class:`~training.errors.RunInterrupted` (still a
    ``KeyboardInterrupt``), each with a one-line message; the command line prints that line
    (:func:`training.errors.run_cli`). A run that fails before anything resumable was written leaves no
    trace in ``output.dir``.
    """
    args, overrides = parse_args(argv)
    config = resolve_config(args, overrides)
    if args.print_config:
        print(config.to_yaml())
        return {"config": config.to_dict()}
    run_dir = config.run_dir().absolute()

    if not args.resume and not config.output.overwrite:
        existing = describe_run_dir(config, run_dir)
        if existing.kind == "finished":
            return reuse_finished_run(run_dir, existing)
        if existing.kind != "none":
            refuse_existing_run(run_dir, existing)  # before anything is built or written
    check_backbone(config.model.backbone)  # a reused run needs no backbone, so only now
    check_data(config)

    guard = RunDirGuard(run_dir)
    try:
        return _train(config, args, run_dir, on_epoch_end)
    except BaseException as error:  # noqa: B902  (Ctrl-C included: it is reported like the others)
        cleaned = guard.clean_up() if _is_main_rank() and not isinstance(error, SystemExit) else False
        if isinstance(error, KeyboardInterrupt):
            raise RunInterrupted(f"interrupted; {failure_message(run_dir, cleaned)}") from None
        if is_disk_full(error):
            raise DiskFull(f"no space left on device while writing the run ({_first_line(error)}); free some space "
                           f"or choose another --output.dir; {failure_message(run_dir, cleaned)}") from error
        raise


def _train(config: TrainConfig, args, run_dir: Path, on_epoch_end) -> dict:
    accelerator, num_workers = make_accelerator(config, run_dir)
    if accelerator.is_main_process:
        prepare_run_dir(config, run_dir, bool(args.resume))  # config.yaml keeps `auto`, portable to other machines
    config.data.num_workers = num_workers  # what this machine uses; results.json records it
    accelerator.wait_for_everyone()
    accelerator.init_trackers(run_dir.name, config=flat_config(config))
    accelerator.print(f"run directory: {run_dir}  ({accelerator.num_processes} process(es), "
                      f"device {accelerator.device}, mixed precision {accelerator.mixed_precision}, "
                      f"{torch.get_num_threads()} compute thread(s), {num_workers} data worker(s))")

    run = Run(config, run_dir, accelerator, args)
    run.on_epoch_end = on_epoch_end
    run.load_data()
    results = []
    try:
        for split in run.split_ids:
            done = run.split_dir(split) / "result.json"
            if args.resume and done.is_file():
                results.append(json.loads(done.read_text()))
                accelerator.print(f"split {split}: already finished, results read from {done}")
                continue
            results.append(run.train_split(split))
    except StopRun:
        accelerator.print(f"stopped after {run.epochs_this_invocation} epoch(s) as asked; the state is saved in "
                          f"{run_dir / 'checkpoints'}. Continue with: {resume_command(run_dir)}")
        accelerator.end_training()
        return {"stopped": True, "run_dir": str(run_dir)}

    wall_time = float(sum(r.get("wall_time_seconds", 0.0) for r in results))
    payload = finish_run(run, results, wall_time) if accelerator.is_main_process else {}
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return payload


if __name__ == "__main__":
    sys.exit(run_cli(main))
