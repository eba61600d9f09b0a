"""The training loop: one :class:`Run` per invocation, one model per split, one AdamW step per (accumulated) batch.

:meth:`Run.train_split` is the whole life of a split's model (build, prepare, resume, epochs, calibrate, test, write)
and :meth:`Run.train_epoch` the loop over its batches. The data side of a run is in :mod:`training.run_data`, the
scoring and per-split outputs in :mod:`training.evaluation`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

from eval.plots import training_curve_plot
from glia_hf import GLIAImageProcessor
from training.checks import backbone_normalisation, build_model, method_label
from training.config import TrainConfig
from training.data import DecodedImageCache, SemanticCache
from training.evaluation import RunEvaluation
from training.results import _write_json
from training.run_data import RunData
from training.run_dir import STATE_MARKER
from training.trackers import make_trackers


def schedule_steps(batches_per_epoch: int, config: TrainConfig) -> int:
    """Optimiser steps of a whole training run: the schedule's length.

    ``batches_per_epoch`` is the length of the training loader, whose sampler holds ``data.train_views`` samples per
    image, so this is ``epochs x ceil(batches / accumulation)`` with ``batches = views x images / micro-batch``
    (rounded down with ``optim.drop_last``, up without): with accumulation 1, ``epochs x views x images / batch``.
    """
    return math.ceil(batches_per_epoch / config.optim.gradient_accumulation_steps) * config.optim.epochs


def available_cpus() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one, else all of them)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def resolve_num_workers(value: Union[int, str], num_processes: int, on_gpu: bool, cpus: Optional[int] = None) -> int:
    """The DataLoader workers per process for ``data.num_workers`` (an ``int`` is kept as is).

    ``auto`` shares the machine's cores among the processes first. On the CPU the workers decode and sample while
    the compute threads run the model, so each process gets half of its cores as workers (2 cores, 1 process:
    1 worker and 1 thread; 1 core: no worker). On a GPU the model runs elsewhere: each process keeps one core for
    its own loop and uses the others as workers, at most 8 (LoDa's setting).
    """
    if value != "auto":
        return int(value)
    per_process = max(1, (cpus or available_cpus()) // max(1, num_processes))
    return min(8, max(1, per_process - 1)) if on_gpu else per_process // 2


def make_accelerator(config: TrainConfig, run_dir: Path) -> Tuple[Accelerator, int]:
    """The run's Accelerator (devices, mixed precision, accumulation, trackers) and its number of data workers;
    on the CPU it also sets the compute threads, and it configures logging (INFO on the main process)."""
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
    return accelerator, num_workers


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


class Run(RunData, RunEvaluation):
    """One invocation of the trainer: the accelerator, the data, the splits and where everything is written.

    The methods that load data are those of :class:`~training.run_data.RunData`; those that score and write a split's
    outputs, of :class:`~training.evaluation.RunEvaluation`."""

    def __init__(self, config: TrainConfig, run_dir: Path, accelerator: Accelerator, args):
        self.config, self.run_dir, self.accelerator, self.args = config, run_dir, accelerator, args
        self.progress = Progress()
        accelerator.register_for_checkpointing(self.progress)
        self.epochs_this_invocation = 0
        self.on_epoch_end: Optional[Callable[[int, int], None]] = None
        self.scale = None
        self.semantic_caches: Dict[str, SemanticCache] = {}  # by key; kept across splits while the key holds
        self.decoded_caches: Dict[tuple, DecodedImageCache] = {}  # by (image list, resize settings)

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

    def split_dir(self, split: int) -> Path:
        return self.run_dir / f"split-{split}"

    def state_dir(self, split: int, epoch: int) -> Path:
        return self.run_dir / "checkpoints" / f"split-{split}" / f"epoch-{epoch}"

    def latest_state(self, split: int) -> Optional[Path]:
        folder = self.run_dir / "checkpoints" / f"split-{split}"
        states = [p for p in folder.glob("epoch-*") if (p / STATE_MARKER).is_file()] if folder.is_dir() else []
        return max(states, key=lambda p: int(p.name.split("-")[1]), default=None)
