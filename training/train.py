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
import csv
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

import glia_hf  # noqa: F401  (registers the GLIA classes with the Auto classes and for remote code)
from eval.metrics import compute_iqa_metrics
from eval.plots import scatter_plot, training_curve_plot
from glia_hf import GLIAImageProcessor
from glia_hf.data import get_score_scale, load_iqa_dataset, load_splits, make_splits, save_splits
from glia_hf.data.splits import split_indices
from training.config import (
    RUN_CONTROL_FIELDS, ConfigError, TrainConfig, available_cpus, config_from_dict, config_help,
    flat_config, load_config, resolve_num_workers,
)
from training.checks import (  # noqa: F401  (re-exported)
    HUB_ID_EXAMPLE, backbone_argument, backbone_description, backbone_normalisation, build_model, check_backbone,
    check_data, method_label, resolution_of, _first_line,
)
from training.run_dir import (  # noqa: F401  (re-exported)
    STATE_MARKER, ExistingRun, RunDirGuard, describe_run_dir, failure_message, kept_summary, prepare_run_dir,
    recipe_differences, refuse_existing_run, resumable, resume_command, _is_main_rank, _shown,
)
from training.results import (  # noqa: F401  (re-exported)
    REPORTED_METRICS, per_split_markdown, reported_metrics, result_label, results_table, summary_of,
    whole_run_markdown, write_results, _clean, _num, _write_json,
)
from training.publish import card_values, method_checkpoint_notice, push_to_hub, write_model_cards  # noqa: F401
from training.trackers import CSVTracker, make_trackers  # noqa: F401  (re-exported)
from training.errors import DiskFull, RunInterrupted, is_disk_full, run_cli
from training.data import (  # noqa: F401  (re-exported: the data path lives in training/data.py)
    DecodedImageCache, EpochSampler, EvalCollator, IQAImageDataset, SemanticCache, TrainCollator, _batch,
    _worker_init, semantic_cache_key, semantic_cache_reason,
)


logger = logging.getLogger("glia_hf.training")



# =================================================================================================== data


def schedule_steps(batches_per_epoch: int, config: TrainConfig) -> int:
    """Optimiser steps of a whole training run: the schedule's length.

    ``batches_per_epoch`` is the length of the training loader, whose sampler holds ``data.train_views`` samples per
    image, so this is ``epochs x ceil(batches / accumulation)`` with ``batches = views x images / micro-batch``
    (rounded down with ``optim.drop_last``, up without): with accumulation 1, ``epochs x views x images / batch``.
    """
    return math.ceil(batches_per_epoch / config.optim.gradient_accumulation_steps) * config.optim.epochs


# =================================================================================================== the run


@dataclass
class Progress:
    """Where a split's training stands; saved with every epoch state (Accelerate custom checkpoint object)."""

    split: int = -1
    epoch: int = 0
    step: int = 0
    seconds: float = 0.0
    curve: list = None  # one {"epoch", "loss", "srcc"} per finished epoch (the training curve)

    def state_dict(self) -> dict:
        return {"split": self.split, "epoch": self.epoch, "step": self.step, "seconds": self.seconds,
                "curve": list(self.curve or [])}

    def load_state_dict(self, state: dict) -> None:
        self.split, self.epoch, self.step, self.seconds = (
            int(state["split"]), int(state["epoch"]), int(state["step"]), float(state["seconds"])
        )
        self.curve = list(state.get("curve", []))


class StopRun(Exception):
    """Raised inside the loop when ``--max_epochs_this_invocation`` is reached (the state is saved first)."""


class Run:
    """One invocation of the trainer: the accelerator, the data, the splits and where everything is written."""

    def __init__(self, config: TrainConfig, run_dir: Path, accelerator: Accelerator, args):
        self.config, self.run_dir, self.accelerator, self.args = config, run_dir, accelerator, args
        self.progress = Progress()
        accelerator.register_for_checkpointing(self.progress)
        self.epochs_this_invocation = 0
        self.on_epoch_end: Optional[Callable[[int, int], None]] = None
        self.scale = None
        self.semantic_caches: Dict[str, SemanticCache] = {}  # by key; kept across splits while the key holds
        self.decoded_caches: Dict[tuple, DecodedImageCache] = {}  # by (image list, resize settings)

    # ----------------------------------------------------------------------------------------------- data

    def load_data(self) -> None:
        config, accelerator = self.config, self.accelerator
        with accelerator.main_process_first():  # the built-in set is built once, by the main process
            self.dataset = load_iqa_dataset(config.data.dataset, config.data.data_dir, **config.data.dataset_options)
        self.scale = get_score_scale(self.dataset)
        splits_file = Path(config.data.splits_file) if config.data.splits_file else self.run_dir / "splits.json"
        self.splits_file = splits_file
        if accelerator.is_main_process and not splits_file.exists():
            splits = make_splits(
                self.dataset, num_splits=config.data.num_splits, train_fraction=config.data.train_ratio,
                seed=config.data.split_seed,
            )
            save_splits(splits, splits_file)
            accelerator.print(f"wrote {len(splits['splits'])} splits to {splits_file}")
        accelerator.wait_for_everyone()
        self.splits = load_splits(splits_file, self.dataset)
        self.split_ids = config.split_indices(len(self.splits["splits"]))
        self.cross = None
        if config.data.test_dataset:
            with accelerator.main_process_first():
                self.cross = load_iqa_dataset(
                    config.data.test_dataset, config.data.test_data_dir, **config.data.test_dataset_options
                )
            self.cross_name = str(self.cross[0]["dataset"]) if len(self.cross) else config.data.test_dataset

    def rows(self, split: int, part: str) -> List[int]:
        fraction = self.config.data.train_fraction if part == "train" else None
        return split_indices(self.splits, split, part, fraction, of=self.config.data.train_fraction_of)

    def loaders(self, split: int, processor: GLIAImageProcessor):
        """Unprepared training and test loaders of one split (plus the training sampler)."""
        config, accelerator = self.config, self.accelerator
        train_rows, test_rows = self.rows(split, "train"), self.rows(split, "test")
        train = self.dataset.select(train_rows)
        micro_batch = config.optim.batch_size // config.optim.gradient_accumulation_steps
        processes = accelerator.num_processes
        if micro_batch % processes:
            raise ConfigError(
                f"optim.batch_size / gradient_accumulation_steps = {micro_batch} images per forward pass must be "
                f"divisible by the {processes} processes"
            )
        views = config.data.train_views
        if config.optim.drop_last and len(train) * views < micro_batch:
            raise ConfigError(
                f"split {split}: {len(train)} training images x {views} view(s) are fewer than one batch of "
                f"{micro_batch}; lower optim.batch_size or set optim.drop_last false"
            )
        sampler = EpochSampler(len(train), config.optim.seed, split, views)
        if views > 1:
            accelerator.print(f"split {split}: {len(train)} training images x {views} views = {len(sampler)} "
                              "samples per epoch")
        common = dict(num_workers=config.data.num_workers, worker_init_fn=_worker_init,
                      pin_memory=torch.cuda.is_available())
        train_loader = DataLoader(
            IQAImageDataset(train["image"], train["mos"], config.augmentation.hflip, config.augmentation.vflip,
                            resize=processor.resize_image, ids=train_rows,
                            decoded=self.decoded_images(processor, self.dataset["image"])),
            batch_size=micro_batch, sampler=sampler, drop_last=config.optim.drop_last,
            collate_fn=TrainCollator(processor, config.augmentation.random_offsets), **common,
        )
        test_loader = self.eval_loader(self.dataset.select(test_rows), processor, ids=test_rows)
        return train_loader, sampler, test_loader, train_rows, test_rows

    def eval_loader(self, rows, processor: GLIAImageProcessor, num_views: Optional[int] = None,
                    ids: Optional[Sequence[int]] = None) -> DataLoader:
        """A test loader of ``rows``; ``ids`` are their image ids in the semantic cache (default: positions)."""
        processes = self.accelerator.num_processes
        batch = math.ceil(self.config.eval.batch_size / processes) * processes  # split_batches needs a multiple
        paths = rows["image"]
        decoded = self.decoded_images(processor, self.dataset["image"])
        if decoded is not None and any(str(path) not in decoded.rows for path in paths):  # another data set
            decoded = self.decoded_images(processor, paths)
        return DataLoader(
            IQAImageDataset(paths, rows["mos"], resize=processor.resize_image, ids=ids, decoded=decoded),
            batch_size=batch,
            shuffle=False,
            collate_fn=EvalCollator(processor, num_views or self.config.eval.num_views, self.config.eval.seed),
            num_workers=self.config.data.num_workers, worker_init_fn=_worker_init,
            pin_memory=torch.cuda.is_available(),
        )

    def decoded_images(self, processor: GLIAImageProcessor, paths: Sequence[str]) -> Optional[DecodedImageCache]:
        """The decoded-image cache of ``paths`` at the processor's resolution (``data.cache_images``), built once
        by the main process (under ``data.image_cache_dir``, default ``<run>/image-cache``); ``None`` when off."""
        if not self.config.data.cache_images:
            return None
        paths = [str(path) for path in paths]
        memo = (tuple(paths), processor.resize_short_side, processor.resize_resample)
        if memo not in self.decoded_caches:
            root = Path(self.config.data.image_cache_dir or self.run_dir / "image-cache")
            with self.accelerator.main_process_first():
                self.decoded_caches[memo] = DecodedImageCache.build(
                    root, paths, processor.resize_image, processor.resize_short_side, processor.resize_resample,
                    log=self.accelerator.print)
        return self.decoded_caches[memo]

    # ----------------------------------------------------------------------------------------------- one split

    def split_dir(self, split: int) -> Path:
        return self.run_dir / f"split-{split}"

    def state_dir(self, split: int, epoch: int) -> Path:
        return self.run_dir / "checkpoints" / f"split-{split}" / f"epoch-{epoch}"

    def latest_state(self, split: int) -> Optional[Path]:
        folder = self.run_dir / "checkpoints" / f"split-{split}"
        states = [p for p in folder.glob("epoch-*") if (p / STATE_MARKER).is_file()] if folder.is_dir() else []
        return max(states, key=lambda p: int(p.name.split("-")[1]), default=None)

    def train_split(self, split: int) -> Optional[dict]:
        """Train and evaluate one split; return its result, or raise :class:`StopRun` when told to stop early."""
        config, accelerator = self.config, self.accelerator
        started = time.perf_counter()
        set_seed(config.optim.seed)  # the same initialisation for every split, whichever splits ran before
        model = build_model(config, self.scale)
        mean, std = backbone_normalisation(config)
        processor = GLIAImageProcessor.from_config(
            model.config, image_mean=mean, image_std=std, resize_short_side=config.data.resize_short_side,
            resize_resample=config.data.resize_resample,
        )
        train_loader, sampler, test_loader, train_rows, test_rows = self.loaders(split, processor)
        cache = self.semantic_cache(model, processor, self.dataset["image"], split)

        trainable = [p for p in model.parameters() if p.requires_grad]
        num_trainable, num_total = sum(p.numel() for p in trainable), sum(p.numel() for p in model.parameters())
        accelerator.print(
            f"split {split}: {method_label(config)} trains {num_trainable:,} of {num_total:,} parameters; "
            f"{len(train_rows)} training / {len(test_rows)} test images"
        )
        optimizer = torch.optim.AdamW(
            trainable, lr=config.optim.lr, weight_decay=config.optim.weight_decay, betas=tuple(config.optim.betas),
            eps=config.optim.eps,
        )
        total_steps = schedule_steps(len(train_loader), config)
        warmup = config.optim.warmup_steps or round(config.optim.warmup_ratio * total_steps)
        if config.optim.scheduler == "cosine":
            scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
        else:
            scheduler = get_constant_schedule_with_warmup(optimizer, warmup)
        model, optimizer, train_loader, test_loader, scheduler = accelerator.prepare(
            model, optimizer, train_loader, test_loader, scheduler
        )

        self.progress.split, self.progress.epoch, self.progress.step, self.progress.seconds = split, 0, 0, 0.0
        self.progress.curve = []
        state = self.latest_state(split) if self.args.resume else None
        if state is not None:
            accelerator.load_state(str(state))
            if self.progress.split != split:
                raise RuntimeError(f"{state} holds the state of split {self.progress.split}, not {split}")
            accelerator.print(f"split {split}: resumed from {state} (epoch {self.progress.epoch} done)")
        previous_seconds = self.progress.seconds

        for epoch in range(self.progress.epoch, config.optim.epochs):
            if self.args.max_epochs_this_invocation is not None and (
                self.epochs_this_invocation >= self.args.max_epochs_this_invocation
            ):
                raise StopRun()
            loss = self.train_epoch(model, optimizer, scheduler, train_loader, trainable, split, epoch, cache)
            if config.output.plots:
                self.curve_point(model, test_loader, len(test_rows), split, epoch + 1, loss, cache)
            self.epochs_this_invocation += 1
            self.progress.epoch = epoch + 1
            self.progress.seconds = previous_seconds + time.perf_counter() - started
            if config.output.save_state_every_epoch:
                self.save_state(split, epoch + 1)
            if self.on_epoch_end is not None:
                self.on_epoch_end(split, epoch + 1)

        calibration = self.calibrate(model, processor, train_rows, split, cache) if config.eval.calibrate else None
        predictions = self.predict(model, test_loader, len(test_rows), f"split {split}: test", cache)
        if cache is not None:
            accelerator.print(f"split {split}: semantic cache holds {len(cache)} image orientation(s), "
                              f"{cache.nbytes / 2**20:.1f} MiB; {cache.hits} hits, {cache.misses} computed")
        result = self.finish_split(split, model, processor, test_rows, predictions, train_rows,
                                   num_trainable, num_total)
        result["calibration"] = calibration
        if self.progress.curve:
            result["curve"] = list(self.progress.curve)
            if accelerator.is_main_process:
                training_curve_plot(self.progress.curve, self.split_dir(split) / "curve.png",
                                    title=f"{method_label(config)} on {config.data.dataset}, split {split}")
        if self.cross is not None:
            cross_loader = accelerator.prepare(self.eval_loader(self.cross, processor))
            cross_cache = self.semantic_cache(model, processor, self.cross["image"], split, quiet=True)
            cross_predictions = self.predict(model, cross_loader, len(self.cross), f"split {split}: {self.cross_name}",
                                             cross_cache)
            result["cross"] = {self.cross_name: self.write_predictions(
                split, self.cross, list(range(len(self.cross))), cross_predictions, f"cross-{self.cross_name}")}
        result["wall_time_seconds"] = previous_seconds + time.perf_counter() - started
        if accelerator.is_main_process:
            _write_json(self.split_dir(split) / "result.json", result)
        accelerator.wait_for_everyone()
        if not config.output.keep_final_state and accelerator.is_main_process:
            shutil.rmtree(self.run_dir / "checkpoints" / f"split-{split}", ignore_errors=True)
            try:
                (self.run_dir / "checkpoints").rmdir()  # only when no other split's state is left in it
            except OSError:
                pass
        accelerator.free_memory()  # drop this split's model/optimizer/loaders from the accelerator before the next
        return result

    # ----------------------------------------------------------------------------------------------- semantic cache

    def semantic_cache(self, model, processor, images, split: int, quiet: bool = False) -> Optional[SemanticCache]:
        """The semantic cache for ``images`` (an ordered list of paths; cache ids are positions in it), or ``None``
        when ``data.cache_semantic`` is off or does not apply to this model (the reason is printed once).

        A cache made for an earlier split is reused when its key (backbone weights, processor, images, precision)
        is the same, as it is for every split of a run (the backbone is frozen and built from the same seed).
        """
        unwrapped = self.accelerator.unwrap_model(model)
        reason = semantic_cache_reason(self.config, unwrapped)
        if reason is not None:
            if not quiet:
                self.accelerator.print(f"split {split}: semantic cache off ({reason})")
            return None
        key = semantic_cache_key(unwrapped, processor, images, self.accelerator.mixed_precision)
        if key not in self.semantic_caches:
            self.semantic_caches[key] = SemanticCache(key)
            if not quiet:
                self.accelerator.print(f"split {split}: semantic cache on (guidance tokens computed once per image "
                                       "and orientation, kept in host memory, float32)")
        return self.semantic_caches[key]

    def guidance(self, model, batch, cache: Optional[SemanticCache]) -> dict:
        """``{"guidance_hidden_states": tokens}`` of a batch from ``cache`` (filling it), or ``{}`` without one.

        The missing tokens are computed by the unwrapped model's ``encode_guidance`` under the accelerator's
        autocast, as the model's own forward would compute them.
        """
        if cache is None:
            return {}
        encode = self.accelerator.unwrap_model(model).glia.encode_guidance

        def encode_in_precision(pixel_values):
            with self.accelerator.autocast():
                return encode(pixel_values)

        tokens = cache.lookup(batch["image_id"], batch["orientation"], batch["pixel_values"], encode_in_precision)
        return {"guidance_hidden_states": tokens}

    # ----------------------------------------------------------------------------------------------- epochs

    def train_epoch(self, model, optimizer, scheduler, loader, trainable, split: int, epoch: int,
                    cache: Optional[SemanticCache] = None) -> float:
        """One epoch; returns its mean training loss (NaN for no step). The host reads the loss only every
        ``output.log_every`` optimiser steps and at the epoch's end, so that the device is never waited for in
        between."""
        config, accelerator = self.config, self.accelerator
        model.train()
        loader.set_epoch(epoch)
        bar = tqdm(loader, desc=f"split {split} epoch {epoch + 1}/{config.optim.epochs}",
                   disable=not accelerator.is_local_main_process, leave=False, dynamic_ncols=True)
        window, step_losses = [], []
        for batch in bar:
            with accelerator.accumulate(model):
                outputs = model(pixel_values=batch["pixel_values"], fragment_values=batch["fragment_values"],
                                labels=batch["labels"], **self.guidance(model, batch, cache))
                accelerator.backward(outputs.loss)
                if accelerator.sync_gradients and config.optim.max_grad_norm:
                    accelerator.clip_grad_norm_(trainable, config.optim.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            window.append(outputs.loss.detach())
            if accelerator.sync_gradients:
                self.progress.step += 1
                step_losses.append(torch.stack(window).mean())
                window = []
                if self.progress.step % config.output.log_every == 0:
                    loss = accelerator.reduce(step_losses[-1], reduction="mean").item()
                    bar.set_postfix(loss=f"{loss:.4f}")
                    accelerator.log({f"split-{split}/train/loss": loss,
                                     f"split-{split}/train/lr": scheduler.get_last_lr()[0]}, step=self.progress.step)
        bar.close()
        if step_losses:
            mean_loss = accelerator.reduce(torch.stack(step_losses).float().mean(), reduction="mean").item()
            accelerator.log({f"split-{split}/train/epoch_loss": mean_loss, f"split-{split}/epoch": epoch + 1},
                            step=self.progress.step)
            accelerator.print(f"split {split} epoch {epoch + 1}/{config.optim.epochs}: mean loss {mean_loss:.4f}")
            return mean_loss
        return float("nan")

    def curve_point(self, model, test_loader, expected: int, split: int, epoch: int, loss: float,
                    cache: Optional[SemanticCache] = None) -> None:
        """One point of the training curve (written when ``output.plots`` is true): the epoch's mean loss and the test
        SRCC from one fragment draw per image under ``eval.seed`` (cheap: a fraction of a training epoch; the final
        test averages ``eval.num_views`` draws). No model is selected on it. The random number generators are left as
        they were, so a run with the curve trains exactly like one without, and a resumed run like an uninterrupted
        one."""
        import random

        collator = getattr(test_loader, "collate_fn", None)
        views = getattr(collator, "num_views", None)
        states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        try:
            if views is not None:
                collator.num_views = 1
            scores = self.predict(model, test_loader, expected, f"split {split}: epoch {epoch} test", cache)
        finally:
            if views is not None:
                collator.num_views = views
            random.setstate(states[0]), np.random.set_state(states[1]), torch.set_rng_state(states[2])
        references = np.asarray(self.dataset.select(self.rows(split, "test"))["mos"], dtype=np.float64)
        srcc = float(compute_iqa_metrics(scores, references, names=("srcc",), allow_degenerate=True)["srcc"])
        self.progress.curve = list(self.progress.curve or []) + [{"epoch": epoch, "loss": loss, "srcc": srcc}]
        self.accelerator.log({f"split-{split}/curve/test_srcc_1view": srcc}, step=self.progress.step)
        self.accelerator.print(f"split {split} epoch {epoch}: test SRCC {srcc:.4f} (1 view, for the curve)")

    def save_state(self, split: int, epoch: int) -> None:
        """Save model, optimiser, scheduler, RNG and progress; mark it complete; keep the newest few."""
        accelerator = self.accelerator
        folder = self.state_dir(split, epoch)
        accelerator.save_state(str(folder))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (folder / STATE_MARKER).write_text(json.dumps(self.progress.state_dict()))
            states = sorted((p for p in folder.parent.glob("epoch-*") if p != folder),
                            key=lambda p: int(p.name.split("-")[1]))
            for old in states[: max(0, len(states) - (self.config.output.keep_states - 1))]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    def calibrate(self, model, processor, train_rows, split: int,
                  cache: Optional[SemanticCache] = None) -> Optional[Dict[str, float]]:
        """Fit ``label = a * prediction + b`` on the training images and fold it into the head (see ``eval.calibrate``).

        Every process gathers the same predictions, so every copy of the model gets the same map. A fit that would
        reverse the ranking (``a <= 0``) is not applied.
        """
        rows = self.dataset.select(train_rows)
        loader = self.accelerator.prepare(self.eval_loader(rows, processor, num_views=1, ids=train_rows))
        scores = self.predict(model, loader, len(rows), f"split {split}: calibration", cache)
        head = self.accelerator.unwrap_model(model)
        low, high = head.config.score_min, head.config.score_max
        predicted, target = (scores - low) / (high - low), (np.asarray(rows["mos"], dtype=np.float64) - low) / (high - low)
        scale, shift = np.polyfit(predicted, target, deg=1) if np.ptp(predicted) > 0 else (0.0, float(target.mean()))
        if not scale > 0:
            logger.warning("split %d: calibration skipped (fitted slope %.3g would reverse the ranking)", split, scale)
            return None
        head.fold_affine_into_head(float(scale), float(shift))
        return {"scale": float(scale), "shift": float(shift)}

    @torch.no_grad()
    def predict(self, model, loader, expected: int, description: str,
                cache: Optional[SemanticCache] = None) -> np.ndarray:
        """Scores of every image of a prepared test loader, in row order, gathered from all processes."""
        accelerator = self.accelerator
        model.eval()
        scores, indices = [], []
        for batch in tqdm(loader, desc=description, disable=not accelerator.is_local_main_process, leave=False,
                          dynamic_ncols=True):
            outputs = model(pixel_values=batch["pixel_values"], fragment_values=batch["fragment_values"],
                            **self.guidance(model, batch, cache))
            score, index = accelerator.gather_for_metrics((outputs.score.float(), batch["index"]))
            scores.append(score.cpu().double())
            indices.append(index.cpu())
        scores, indices = torch.cat(scores).numpy(), torch.cat(indices).numpy()
        if len(indices) != expected or len(np.unique(indices)) != expected:
            raise RuntimeError(
                f"{description}: gathered {len(indices)} predictions for {len(np.unique(indices))} distinct of "
                f"{expected} images"
            )
        ordered = np.empty(expected, dtype=np.float64)
        ordered[indices] = scores
        return ordered

    # ----------------------------------------------------------------------------------------------- outputs

    def write_predictions(self, split: int, rows, positions, predictions: np.ndarray, name: str) -> dict:
        """Metrics of one evaluation; the main process writes ``<name>.csv`` and the scatter plot."""
        references = np.asarray(rows["mos"], dtype=np.float64)[positions] if len(positions) else np.array([])
        metrics = compute_iqa_metrics(predictions, references, allow_degenerate=True)
        metrics = {key: float(value) for key, value in metrics.items()}
        if self.accelerator.is_main_process:
            folder = self.split_dir(split)
            folder.mkdir(parents=True, exist_ok=True)
            images = [rows[int(i)]["image"] for i in positions]
            with open(folder / f"{name}.csv", "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["image", "mos", "prediction"])
                for image, mos, prediction in zip(images, references, predictions):
                    writer.writerow([image, repr(float(mos)), repr(float(prediction))])
            if self.config.output.plots:
                scatter_plot(predictions, references, folder / f"{name.replace('predictions', 'scatter')}.png",
                             title=f"{method_label(self.config)} on {self.config.data.dataset}, split {split} ({name})",
                             metrics=metrics, xlabel=f"Predicted ({self.scale.name})", ylabel="MOS")
        return metrics

    def finish_split(self, split, model, processor, test_rows, predictions, train_rows, num_trainable, num_total):
        accelerator = self.accelerator
        test = self.dataset.select(test_rows)
        metrics = self.write_predictions(split, test, list(range(len(test))), predictions, "predictions")
        result = {"split": split, **metrics, "num_train": len(train_rows), "num_test": len(test_rows),
                  "trainable_parameters": num_trainable, "total_parameters": num_total}
        accelerator.print(
            f"split {split}: SRCC {metrics['srcc']:.4f}  PLCC {metrics['plcc']:.4f}  KRCC {metrics['krcc']:.4f}  "
            f"RMSE {metrics['rmse']:.4f}"
        )
        accelerator.log({f"split-{split}/test/{k}": v for k, v in metrics.items()}, step=self.progress.step)
        if self.config.output.save_model:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                self.export_model(accelerator.unwrap_model(model), processor, self.split_dir(split) / "model")
        accelerator.wait_for_everyone()
        return result

    def export_model(self, model, processor, directory: Path) -> None:
        """Save a Hub-ready directory: weights (safetensors), config with auto_map and remote code, processor.

        How is the method's ``MethodSpec.export`` (``glia_hf.methods.save_model``): ``lora`` is merged into the ViT
        first, so it loads like any GLIANet checkpoint; ``adapter`` and ``vpt`` models are saved with
        ``save_method_checkpoint`` (they need ``glia_hf`` to load). The model card is written at the end of the run,
        when every split's results are known.
        """
        from glia_hf.methods import save_model

        if directory.exists():
            shutil.rmtree(directory)
        save_model(model, directory)
        processor.save_pretrained(directory)


# =================================================================================================== entry point


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


def resolve_config(args, overrides) -> TrainConfig:
    config_path = args.config
    if not config_path and isinstance(args.resume, str):
        saved = Path(args.resume) / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"--resume {args.resume}: no run there (no config.yaml); give the run directory of an "
                              "interrupted run, or start the run without --resume")
        config_path = [str(saved)]
    config = load_config(config_path, overrides)
    if isinstance(args.resume, str):
        # The run directory named on the command line wins over the one in the config.
        values = config.to_dict()
        values["output"]["dir"] = args.resume
        config = config_from_dict(values)
    return config


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
            payload = json.loads(existing.results.read_text())
            models = [p for p in sorted(run_dir.glob("split-*/model")) if p.is_dir()]
            if _is_main_rank():
                where = f"model in {_shown(models[0])}" if len(models) == 1 else (
                    f"models in {_shown(run_dir)}/split-*/model" if models else "no model was saved")
                print(f"{_shown(run_dir)} already holds this finished run; reusing it, nothing is trained ({where}; "
                      "--output.overwrite true trains again)", flush=True)
            payload["reused"] = True
            return payload
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
    mixed_precision = config.optim.mixed_precision
    if mixed_precision == "auto":
        mixed_precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    # `accelerate launch --cpu --num_processes N` starts one process unless MPI is set up; `accelerate launch
    # --multi_gpu --num_processes N` (torchrun) on a machine without a GPU starts N, which Accelerate joins over gloo
    # only when told to use the CPU. So: several torchrun processes and no GPU means CPU data parallel.
    cpu_ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ and not torch.cuda.is_available()
    accelerator = Accelerator(
        cpu=cpu_ddp,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=config.optim.gradient_accumulation_steps,
        log_with=make_trackers(config.output.trackers, run_dir / "logs"),
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )
    num_workers = resolve_num_workers(config.data.num_workers, accelerator.num_processes,
                                      on_gpu=accelerator.device.type != "cpu")
    if accelerator.device.type == "cpu":
        threads = config.data.cpu_threads or max(
            1, (available_cpus() - num_workers * accelerator.num_processes) // accelerator.num_processes
        )
        torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per saved file is too chatty
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
    payload = {}
    if accelerator.is_main_process:
        payload = write_results(run, results, wall_time)
        if config.output.save_model:
            write_model_cards(run, payload)
        summary = payload["summary"]
        accelerator.print(
            f"{method_label(config)} on {config.data.dataset}, {len(results)} split(s): median SRCC "
            f"{_num(summary['srcc']['median'])}, PLCC {_num(summary['plcc']['median'])}; {wall_time:.0f} s; "
            f"results in {run_dir / 'results.json'}"
        )
        if config.hub.push_to_hub:
            split = config.hub.split if config.hub.split is not None else run.split_ids[0]
            url = push_to_hub(run, split)
            payload["pushed_to"] = url
            accelerator.print(f"pushed split {split}'s model to {url}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return payload


if __name__ == "__main__":
    sys.exit(run_cli(main))
