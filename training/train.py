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
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.tracking import GeneralTracker
from accelerate.utils import ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

import glia_hf  # noqa: F401  (registers the GLIA classes with the Auto classes and for remote code)
from eval.metrics import RESULT_KEYS, compute_iqa_metrics
from eval.plots import scatter_plot, training_curve_plot
from eval.reporting import result_label as reporting_result_label
from eval.reporting import (FIT_NOTE, RESULTS_SCHEMA_VERSION, Table, describe_backbone, describe_train_fraction,
                            make_caption, metric_label, summarize_splits, to_markdown, write_table)
from glia_hf import GLIAImageProcessor
from glia_hf.data import get_score_scale, load_iqa_dataset, load_splits, make_splits, save_splits
from glia_hf.data.scales import canonical_name
from glia_hf.data.splits import split_indices
from training.config import (
    RUN_CONTROL_FIELDS, ConfigError, TrainConfig, available_cpus, config_from_dict, config_help, describe_resolution,
    flat_config, load_config, resolve_num_workers,
)
from training.errors import DiskFull, RunInterrupted, is_disk_full, run_cli
from training.data import (  # noqa: F401  (re-exported: the data path lives in training/data.py)
    DecodedImageCache, EpochSampler, EvalCollator, IQAImageDataset, SemanticCache, TrainCollator, _batch,
    _worker_init, semantic_cache_key, semantic_cache_reason,
)


logger = logging.getLogger("glia_hf.training")

STATE_MARKER = "STATE_COMPLETE"


# =================================================================================================== trackers


class CSVTracker(GeneralTracker):
    """A minimal Accelerate tracker that appends every logged value to ``<dir>/metrics.csv``.

    One row per value (``step, name, value, time``), so that splits, phases and metrics with different keys share
    one file and a resumed run simply appends. Accelerate calls it on the main process only.
    """

    name = "csv"
    requires_logging_directory = True
    main_process_only = True

    def __init__(self, logging_dir: str | os.PathLike):
        super().__init__()
        self.path = Path(logging_dir) / "metrics.csv"

    @property
    def tracker(self):
        return self.path

    def start(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            with open(self.path, "w", newline="") as handle:
                csv.writer(handle).writerow(["step", "name", "value", "time"])

    def store_init_configuration(self, values: dict):
        self.start()
        (self.path.parent / "hparams.json").write_text(json.dumps(values, indent=2, sort_keys=True, default=str))

    def log(self, values: dict, step: Optional[int] = None, **kwargs):
        self.start()
        now = time.time()
        with open(self.path, "a", newline="") as handle:
            writer = csv.writer(handle)
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    value = value.item()
                writer.writerow([step, key, value, f"{now:.3f}"])


def make_trackers(names: Sequence[str], logging_dir: Path) -> list:
    trackers: list = []
    for name in names:
        if name == "csv":
            trackers.append(CSVTracker(logging_dir))
        elif name == "tensorboard":
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                try:
                    import tensorboardX  # noqa: F401
                except ImportError:
                    logger.warning("tensorboard is not installed; the tensorboard tracker is skipped")
                    continue
            trackers.append("tensorboard")
    return trackers


# =================================================================================================== data


def schedule_steps(batches_per_epoch: int, config: TrainConfig) -> int:
    """Optimiser steps of a whole training run: the schedule's length.

    ``batches_per_epoch`` is the length of the training loader, whose sampler holds ``data.train_views`` samples per
    image, so this is ``epochs x ceil(batches / accumulation)`` with ``batches = views x images / micro-batch``
    (rounded down with ``optim.drop_last``, up without): with accumulation 1, ``epochs x views x images / batch``.
    """
    return math.ceil(batches_per_epoch / config.optim.gradient_accumulation_steps) * config.optim.epochs


# =================================================================================================== model


def backbone_argument(backbone):
    """A backbone config for a dict of its fields (random backbone; ``model_type`` picks the family, default ViT),
    else the Hub id / directory as is."""
    if isinstance(backbone, dict):
        from glia_hf.backbones import backbone_config_from

        return backbone_config_from(backbone)
    return backbone


def backbone_description(backbone) -> str:
    """The backbone in words (one wording everywhere: :func:`eval.reporting.describe_backbone`)."""
    return describe_backbone(backbone)


def resolution_of(config: TrainConfig) -> str:
    """The recipe's image resolution in words (``data.resize_short_side``; also in the saved processor config)."""
    return describe_resolution(config.data.resize_short_side, config.data.resize_resample)


def backbone_normalisation(config: TrainConfig):
    """The backbone's image mean and std: the config's, else its ``preprocessor_config.json``, else (a timm
    checkpoint) its ``pretrained_cfg``, else 0.5."""
    mean, std = config.model.image_mean, config.model.image_std
    if (mean is None or std is None) and isinstance(config.model.backbone, str):
        try:
            from transformers.utils import cached_file

            path = cached_file(
                config.model.backbone,
                "preprocessor_config.json",
                _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
            )
            if path:
                stored = json.loads(Path(path).read_text())
                mean = mean if mean is not None else stored.get("image_mean")
                std = std if std is not None else stored.get("image_std")
        except Exception as error:  # an absent or unreadable file only means the defaults are used
            logger.info("no preprocessor config for %s (%s); using mean/std 0.5", config.model.backbone, error)
    if (mean is None or std is None) and isinstance(config.model.backbone, str):
        from glia_hf.convert_timm import timm_normalisation

        try:
            stated = timm_normalisation(config.model.backbone)
        except Exception as error:  # unreadable here means unloadable: building the model reports it
            logger.info("no timm pretrained_cfg for %s (%s)", config.model.backbone, error)
            stated = None
        if stated is not None:
            mean = mean if mean is not None else stated[0]
            std = std if std is not None else stated[1]
    return mean, std


HUB_ID_EXAMPLE = "google/vit-base-patch16-224"


def _looks_like_path(name: str) -> bool:
    """A Hub id is ``name`` or ``namespace/name``; anything with more slashes, or starting like a path, is a path."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or "\\" in name


def check_backbone(backbone) -> None:
    """Fail fast, with a :class:`ConfigError` naming ``model.backbone``, when the backbone cannot be had.

    A dict must be valid config fields of its family (``model_type``, ViT when absent); a local directory must hold ``config.json``; a Hub id must be in the
    local Hugging Face cache or, when the Hub may be reached (``HF_HUB_OFFLINE`` unset), be fetchable: its
    ``config.json`` is fetched once here, so that an unreachable Hub costs one request instead of the retries of
    every file of the checkpoint.
    """
    if isinstance(backbone, dict):
        from glia_hf.backbones import backbone_config_from

        try:
            backbone_config_from(backbone)
        except (TypeError, ValueError, KeyError) as error:
            raise ConfigError(f"model.backbone: these backbone config fields are not valid ({error})") from None
        return
    name = str(backbone)
    fix = ("set model.backbone (--model.backbone) to a local directory holding a ViT checkpoint (config.json and "
           f"weights) or to a Hub id such as {HUB_ID_EXAMPLE}")
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model.backbone {name!r} is a local path without a config.json; {fix}")
        return
    if _looks_like_path(name):
        raise ConfigError(f"model.backbone {name!r}: no such directory; {fix}")
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    try:
        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return
    except ValueError as error:  # not a valid repository id
        raise ConfigError(f"model.backbone {name!r} is neither a local directory nor a Hub id ({error}); {fix}") \
            from None
    local = ("set model.backbone (--model.backbone) to a local directory holding a ViT checkpoint (config.json and "
             "weights)")
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ConfigError(f"model.backbone {name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is "
                          f"set: download it once with a network, or {local}")
    try:
        # One request without retries first: an unreachable Hub is reported at once, not after the download
        # helpers' back-off (about 25 s per file).
        from huggingface_hub.utils import get_session

        get_session().head(constants.ENDPOINT, timeout=10)
    except Exception as error:
        raise ConfigError(f"model.backbone {name!r} is not in the local Hugging Face cache and the Hub "
                          f"({constants.ENDPOINT}) cannot be reached ({_first_line(error)}): connect to the network, "
                          f"or {local}") from None
    try:
        hf_hub_download(name, "config.json", etag_timeout=10)
    except Exception as error:  # connection, missing repository, gated model: the user's to fix, named below
        raise ConfigError(f"model.backbone {name!r} cannot be fetched from the Hugging Face Hub "
                          f"({_first_line(error)}): check the id and the network (HF_TOKEN for a gated model), or "
                          f"{local}") from None


def _data_reader(name: str):
    """The function that ``load_iqa_dataset(name, ...)`` calls, or ``None`` for an unknown name."""
    from glia_hf.data import readers

    key = canonical_name(name)
    if key == "builtin":
        from glia_hf.data.builtin import build_builtin_dataset

        return build_builtin_dataset
    return {"csv": readers.read_csv_dataset, "pyiqa": readers.read_pyiqa_meta}.get(key) or readers.READERS.get(key)


def check_data(config: TrainConfig) -> None:
    """Fail fast, with a :class:`ConfigError` naming the ``data.*`` field, before anything is built or written:
    an unknown data set, a missing or nonexistent ``data_dir``, a reader option the reader does not take. The same
    for the cross-data-set test set. (What is inside the folder is checked by the readers, which name the file.)"""
    import inspect

    d = config.data
    checks = [("data.dataset", d.dataset, "data.data_dir", d.data_dir, "data.dataset_options", d.dataset_options)]
    if d.test_dataset:
        checks.append(("data.test_dataset", d.test_dataset, "data.test_data_dir", d.test_data_dir,
                       "data.test_dataset_options", d.test_dataset_options))
    for name_field, name, dir_field, folder, options_field, options in checks:
        reader = _data_reader(name)
        if reader is None:
            from glia_hf.data.readers import READERS

            raise ConfigError(f"{name_field} {name!r} is not a known data set; known: "
                              f"{sorted(READERS) + ['builtin', 'csv', 'pyiqa']}")
        key = canonical_name(name)
        what = "the CSV file" if key == "csv" else "the folder of the unpacked release"
        if folder is None and key != "builtin" and not (set(options) & {"csv_file", "image_dir"}):
            raise ConfigError(f"{dir_field} is not set: give {what} of {name}, e.g. --{dir_field} /data/{key}")
        if folder is not None and not Path(folder).expanduser().exists() and key != "builtin":
            raise ConfigError(f"{dir_field} {folder} does not exist: give {what} of {name}")
        accepted = inspect.signature(reader).parameters
        allowed = [p for p in accepted if p not in ("data_dir", "root", "csv_file", "image_dir")] + {
            "csv": ["csv_file", "image_dir"], "pyiqa": ["image_dir"]}.get(key, [])
        if key == "pyiqa" and "meta_info_file" not in options:
            raise ConfigError(f"{options_field} needs meta_info_file (the pyiqa meta-info CSV) for {name}")
        unknown = [k for k in options if k not in allowed]
        if unknown and not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
            raise ConfigError(f"{options_field}: {unknown} not options of the {key} reader; it takes {allowed}")


def build_model(config: TrainConfig, scale):
    """The model of ``config.model`` with the data set's score range and the configured loss.

    A backbone that cannot be loaded (missing, unreachable, not a ViT, weights that do not fit) and options the
    model rejects become a :class:`ConfigError` that names the config field to change.
    """
    from glia_hf.methods import build_model as build_method_model

    glia_options = dict(config.model.glia)
    glia_options.update(scale.config_kwargs())
    glia_options["loss"] = config.optim.loss
    backbone = config.model.backbone
    try:
        return build_method_model(
            config.model.method, backbone_argument(backbone), dict(config.model.method_options) or None,
            **glia_options,
        )
    except OSError as error:
        if is_disk_full(error) or not isinstance(backbone, str):
            raise
        raise ConfigError(f"model.backbone {backbone!r} cannot be loaded ({_first_line(error)}); set "
                          "model.backbone to a local directory holding a ViT checkpoint (config.json and weights) or "
                          f"to a Hub id such as {HUB_ID_EXAMPLE}") from error
    except ValueError as error:
        raise ConfigError(f"the model rejects its settings ({_first_line(error)}); check model.backbone, "
                          "model.glia and model.method_options") from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def unreachable_trainable(model) -> List[str]:
    """Trainable parameters that no output depends on: the prior projection when no GLIA block reads the prior
    (e.g. the ``use_lgf: false`` ablation). Their gradient stays empty, which DDP must be told to expect."""
    glia = getattr(model, "glia", None)
    projection = getattr(glia, "prior_projection", None)
    if projection is None or getattr(glia, "uses_prior", True):
        return []
    return [f"glia.prior_projection.{name}" for name, p in projection.named_parameters() if p.requires_grad]


def method_label(config: TrainConfig) -> str:
    """``glia`` or e.g. ``glia [use_glr=false]`` for an ablation; the baselines by name (with non-default options).

    What goes in the brackets is the method's ``MethodSpec.label_options`` (default: its options)."""
    from glia_hf.methods import get_method

    spec = get_method(config.model.method)
    if spec.label_options is not None:
        parts = spec.label_options(dict(config.model.glia), dict(config.model.method_options))
    else:
        parts = [f"{k}={v}" for k, v in sorted(config.model.method_options.items())]
    return config.model.method + (f" [{', '.join(parts)}]" if parts else "")


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
        unreachable = unreachable_trainable(model)
        if unreachable and accelerator.num_processes > 1:
            logger.warning("trainable parameters that the loss never reaches: %s; DDP will look for unused "
                           "parameters every step", unreachable)
        self.ddp_kwargs.find_unused_parameters = bool(unreachable)
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
            self.semantic_caches[key] = SemanticCache.from_config(key, self.config, len(images))
            if not quiet:
                self.accelerator.print(f"split {split}: semantic cache on (guidance tokens computed once per image "
                                       f"and orientation, {self.semantic_caches[key].storage})")
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


# =================================================================================================== reporting


def result_label(config: TrainConfig) -> Optional[str]:
    """The run's results label (:func:`eval.reporting.result_label`): a random backbone, pseudo-MOS labels, or both."""
    return reporting_result_label(isinstance(config.model.backbone, dict),
                                  canonical_name(config.data.dataset) == "builtin")


def _clean(value):
    """JSON-safe: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(_clean(value), indent=2, sort_keys=False) + "\n")
    os.replace(temporary, path)


#: The metrics shown in results.md and the model card, in this order, when every split has them (``plcc`` and
#: ``rmse`` after the logistic fit, the raw ones beside them: :data:`eval.metrics.RESULT_KEYS`).
REPORTED_METRICS = RESULT_KEYS


def reported_metrics(results: List[dict]) -> List[str]:
    """The keys of :data:`REPORTED_METRICS` that every result has (a value of ``None`` is a NaN saved as JSON)."""
    return [m for m in REPORTED_METRICS if results and all(m in r for r in results)]


def _as_number(value) -> float:
    return float("nan") if value is None else float(value)


def _split_summaries(results: List[dict], metrics: Sequence[str]):
    """``summarize_splits`` over the splits' results, a metric saved as ``null`` (a NaN in JSON) counted as NaN."""
    numeric = [{**r, **{m: _as_number(r.get(m)) for m in metrics}} for r in results]
    return summarize_splits(numeric, list(metrics))


def summary_of(results: List[dict], metrics: Optional[Sequence[str]] = None) -> Dict[str, dict]:
    """``{metric: {median, mean, std, count}}`` over the splits (std is ``None`` in JSON for one split)."""
    metrics = reported_metrics(results) if metrics is None else list(metrics)
    return {metric: summary.as_dict() for metric, summary in _split_summaries(results, metrics).items()}


def _train_fraction_text(config: TrainConfig) -> str:
    data = config.data
    return describe_train_fraction(data.train_fraction, data.train_fraction_of, data.train_ratio)


def results_table(config: TrainConfig, results: List[dict], wall_time: float) -> Table:
    """One row (this run's method): trainable parameters, median (mean ± std) of each reported metric, wall time.

    The spread (mean ± std) is announced and shown only when there are at least two splits; a single split's
    caption says so instead of promising a spread it cannot have."""
    from eval.reporting import ParamCount

    metrics = reported_metrics(results)
    summary = _split_summaries(results, metrics)
    counts = sorted({s.count for s in summary.values()})
    spread = max(counts, default=0) > 1
    caption = make_caption(
        f"{config.data.dataset}"
        + (f", {_train_fraction_text(config)}" if config.data.train_fraction else "")
        + f", test part of each split; images at {resolution_of(config)}, {config.data.train_views} training "
        f"view(s) per image per epoch.",
        backbone_description(config.model.backbone), counts, metrics, label=result_label(config), spread=spread,
        note=None if spread else "One split, so no mean ± std over splits.",
    )
    table = Table(title=f"{method_label(config)} on {config.data.dataset}", caption=caption, row_headers=["Method"],
                  columns=["Trainable params"] + [metric_label(m) for m in metrics]
                  + ["Wall time (s)"], spread=spread)
    table.add_row([method_label(config)],
                  [ParamCount(results[0]["trainable_parameters"])] + [summary[m] for m in metrics]
                  + [f"{wall_time:.0f}"])
    return table


def per_split_markdown(results: List[dict]) -> str:
    """One markdown row per split: its train/test sizes and every reported metric."""
    metrics = reported_metrics(results)
    lines = ["| Split | Train | Test | " + " | ".join(metric_label(m) for m in metrics) + " |",
             "|---:|---:|---:|" + "---:|" * len(metrics)]
    for r in results:
        cells = [_num(r.get(m)) for m in metrics]
        lines.append(f"| {r['split']} | {r['num_train']} | {r['num_test']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(run: Run, results: List[dict], wall_time: float) -> dict:
    config = run.config
    results = sorted(results, key=lambda r: r["split"])
    payload = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "method": config.model.method,
        "method_label": method_label(config),
        "dataset": config.data.dataset,
        "backbone": backbone_description(config.model.backbone),
        "label": result_label(config),
        "score_name": run.scale.description if run.scale else None,
        "splits_file": str(run.splits_file),
        "train_fraction": config.data.train_fraction,
        "train_fraction_of": config.data.train_fraction_of if config.data.train_fraction else None,
        "trainable_parameters": results[0]["trainable_parameters"],
        "total_parameters": results[0]["total_parameters"],
        "wall_time_seconds": wall_time,
        "num_processes": run.accelerator.num_processes,
        "mixed_precision": run.accelerator.mixed_precision,
        "splits": results,
        "summary": summary_of(results),
        "config": config.to_dict(),
        "versions": _versions(),
    }
    cross = [r for r in results if r.get("cross")]
    if cross:
        name = next(iter(cross[0]["cross"]))
        payload["cross_dataset"] = {"test_dataset": name,
                                    "summary": summary_of([{**r["cross"][name], "split": r["split"]} for r in cross])}
    _write_json(run.run_dir / "results.json", payload)
    table = results_table(config, results, wall_time)
    write_table(table, run.run_dir / "results")
    text = to_markdown(table) + "\nPer split:\n\n" + per_split_markdown(results) + "\n"
    if cross:
        summary = payload["cross_dataset"]["summary"]
        text += (f"\nCross-data-set test on the whole of {name}: median SRCC {_num(summary['srcc']['median'])}, "
                 f"PLCC {_num(summary['plcc']['median'])} over {summary['srcc']['count']} split model(s).\n")
    (run.run_dir / "results.md").write_text(text, encoding="utf-8")
    return payload


def _versions() -> dict:
    import accelerate
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "accelerate": accelerate.__version__, "glia_hf": getattr(glia_hf, "__version__", "?")}
    try:
        import peft

        versions["peft"] = peft.__version__
    except ImportError:
        pass
    return versions


def whole_run_markdown(summary: Dict[str, dict], metrics: Sequence[str]) -> str:
    """The whole run's summary for the card: median, mean and std per metric for several splits; for one split a
    sentence (a std over one split does not exist)."""
    count = summary[metrics[0]]["count"] if metrics else 0
    if count < 2:
        return "The run has one split, so there is no spread over splits to show."
    return (f"The whole run ({count} splits, one model per split):\n\n| Metric | Median | Mean | Std |\n|---|---:|---:|---:|\n"
            + "\n".join(f"| {metric_label(m)} | {_num(summary[m]['median'])} | "
                        f"{_num(summary[m]['mean'])} | {_num(summary[m]['std'])} |" for m in metrics))


def card_values(run: Run, payload: dict, split_result: dict, model_id: str) -> Dict[str, str]:
    """The text values of the model card of one split's model (the template's names; see ``model_card.md``)."""
    from training.model_card import DATASET_NAMES

    config = run.config
    scale = run.scale
    label = result_label(config)
    num_splits = len(run.splits["splits"])
    by_scene = run.splits.get("by_reference")
    protocol = (
        f"split {split_result['split']} of {num_splits} seeded {round(config.data.train_ratio * 100)}/"
        f"{round((1 - config.data.train_ratio) * 100)} train/test splits (seed {run.splits.get('seed')}, "
        f"{'by reference scene' if by_scene else 'by image'}); trained on its training part "
        f"({split_result['num_train']} images"
        + (f"; {_train_fraction_text(config)}" if config.data.train_fraction else "")
        + f"), tested on its test part ({split_result['num_test']} images)"
    )
    metrics = reported_metrics(payload["splits"])
    table = (
        f"This model (split {split_result['split']}) on {split_result['num_test']} test images: "
        + ", ".join(f"{metric_label(m)} {_num(split_result.get(m))}" for m in metrics) + "."
        + "\n\n" + whole_run_markdown(payload["summary"], metrics)
        + "\n\n" + FIT_NOTE
        + "\n\nPer split:\n\n" + per_split_markdown(payload["splits"])
    )
    notes = []
    if label:
        notes.append(
            f"**These numbers are labelled \"{label}\".** "
            + ("The backbone was randomly initialised, not pre-trained. " if isinstance(config.model.backbone, dict)
               else "")
            + ("The labels are pseudo-MOS computed by a full-reference metric (SSIM) on synthetically distorted "
               "photographs of the GLIA-HF built-in set, not human opinions. " if "pseudo-MOS" in label else "")
            + "They show that the pipeline runs; they say nothing about agreement with human quality judgements, "
              "and they are kept out of the card's `model-index` metadata."
        )
    from glia_hf.methods import get_method

    spec = get_method(config.model.method)
    if spec.export_note:
        notes.append(spec.export_note)
    details = (
        f"Trained with `training/train.py` (GLIA-HF, Accelerate) on {payload['num_processes']} process(es), mixed "
        f"precision `{payload['mixed_precision']}`. AdamW (lr {config.optim.lr:g}, weight decay "
        f"{config.optim.weight_decay:g}, betas {tuple(config.optim.betas)}), {config.optim.scheduler} schedule stepped "
        f"per optimiser step (warm-up {config.optim.warmup_steps or config.optim.warmup_ratio:g}), "
        f"{config.optim.epochs} epochs, batch {config.optim.batch_size} (accumulation "
        f"{config.optim.gradient_accumulation_steps}), seed {config.optim.seed}, {config.optim.loss.upper()} loss on "
        f"labels normalised to [0, 1], {config.data.train_views} training view(s) per image per epoch. Images at "
        f"{resolution_of(config)} in training, test and scoring (`resize_short_side` in the saved processor "
        f"config). Augmentation: horizontal flip p={config.augmentation.hflip:g}, vertical flip "
        f"p={config.augmentation.vflip:g}, {'random' if config.augmentation.random_offsets else 'centred'} fragment "
        f"offsets. Test scores: mean over {config.eval.num_views} fragment draws (seed {config.eval.seed}). "
        f"Training and test time of the run: {payload['wall_time_seconds']:.0f} s. Versions: "
        + ", ".join(f"{k} {v}" for k, v in payload["versions"].items()) + "."
        + ("\n\nGLIA options: `" + json.dumps(config.model.glia, sort_keys=True) + "`" if config.model.glia else "")
        + ("\n\nMethod options: `" + json.dumps(config.model.method_options, sort_keys=True) + "`"
           if config.model.method_options else "")
    )
    dataset = canonical_name(config.data.dataset)
    return {
        "title": f"{spec.description} trained on {DATASET_NAMES.get(dataset, config.data.dataset)}"
                 + (f" ({label})" if label else ""),
        "notice": method_checkpoint_notice(config.model.method) if spec.export == "method_checkpoint" else "",
        "method": f"`{method_label(config)}`: {spec.description}",
        "backbone": backbone_description(config.model.backbone),
        "dataset": f"{config.data.dataset} ({scale.description})",
        "score_name": scale.description,
        "score_min": f"{scale.min:g}",
        "score_max": f"{scale.max:g}",
        "trainable_parameters": f"{split_result['trainable_parameters']:,} of {split_result['total_parameters']:,}",
        "split_protocol": protocol,
        "results_table": table,
        "results_note": "\n\n".join(notes),
        "training_details": details,
        "model_id": model_id,
    }


def method_checkpoint_notice(method: str) -> str:
    return (
        f"> **Note:** this `{method}` model is saved with `glia_hf.methods.save_method_checkpoint` "
        "(`glia_method.json` + `glia_method.safetensors`), because its extra modules have no place in a plain GLIANet. "
        "Load it with `glia_hf.methods.load_method_checkpoint(path)` (needs the `glia_hf` package); `AutoModel` "
        "does not load it."
    )


def _num(value) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.4f}"


def write_model_cards(run: Run, payload: dict) -> None:
    """Write ``README.md`` (the model card) into every split's saved model directory.

    Each card carries Hub metadata (:func:`training.model_card.card_data`); its ``model-index`` holds the split
    model's own test metrics only when no result label applies (human-rated data, pre-trained backbone)."""
    from training.model_card import card_data, model_config, render_model_card

    config = run.config
    for result in payload["splits"]:
        directory = run.split_dir(result["split"]) / "model"
        if not directory.is_dir():
            continue
        model_id = config.hub.hub_model_id or str(directory)
        values = card_values(run, payload, result, model_id)
        data = card_data(model_name=config.hub.hub_model_id or f"{run.run_dir.name}-split-{result['split']}",
                         dataset=canonical_name(config.data.dataset), backbone=config.model.backbone,
                         metrics=result, benchmark=result_label(config) is None, split=result["split"])
        card = render_model_card(data, values, model_config(directory))
        card.save(directory / "README.md")


def push_to_hub(run: Run, split: int) -> str:
    """Create the repository if needed and upload the split's model directory with ``huggingface_hub``."""
    from huggingface_hub import HfApi

    hub = run.config.hub
    directory = run.split_dir(split) / "model"
    if not directory.is_dir():
        raise FileNotFoundError(f"no saved model for split {split} at {directory} (output.save_model must be true)")
    api = HfApi()
    api.create_repo(repo_id=hub.hub_model_id, private=hub.private, exist_ok=True, repo_type="model")
    api.upload_folder(
        repo_id=hub.hub_model_id, folder_path=str(directory), repo_type="model",
        commit_message=f"GLIA-HF: {method_label(run.config)} on {run.config.data.dataset}, split {split}",
    )
    return f"https://huggingface.co/{hub.hub_model_id}"


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


def _recipe(values: dict) -> dict:
    return {section: {k: v for k, v in fields.items() if (section, k) not in RUN_CONTROL_FIELDS}
            for section, fields in values.items()}


def recipe_differences(previous: dict, current: dict) -> List[str]:
    """The recipe fields (not the run-control ones) in which two configs differ, as ``"optim.lr (0.0003 -> 0.001)"``."""
    before, after = _recipe(previous), _recipe(current)
    changed = []
    for section, fields in after.items():
        for key, value in fields.items():
            old = before.get(section, {}).get(key)
            if old != value:
                changed.append(f"{section}.{key} ({json.dumps(old, default=str)} -> {json.dumps(value, default=str)})")
    return changed


@dataclass
class ExistingRun:
    """What a run directory holds, measured against the config of a new invocation.

    ``kind``: ``none`` (no run yet), ``finished`` (this recipe, every requested split done), ``unfinished`` (this
    recipe, some split not done) or ``different`` (another recipe; ``differences`` names the fields).
    """

    kind: str
    differences: List[str]
    results: Optional[Path] = None


def _read_saved_config(saved: Path) -> dict:
    import yaml

    try:
        return config_from_dict(yaml.safe_load(saved.read_text())).to_dict()
    except (ConfigError, yaml.YAMLError) as error:
        raise ConfigError(f"{saved} is not a config this version can read ({error}); choose another --output.dir, "
                          "or set --output.overwrite true to replace the run") from None


def _requested_splits(config: TrainConfig, run_dir: Path) -> Optional[List[int]]:
    """The split indices this invocation would run, or ``None`` when the splits file does not exist yet."""
    chosen = config.data.splits
    if chosen != "all":
        return [chosen] if isinstance(chosen, int) else list(chosen)
    splits_file = Path(config.data.splits_file) if config.data.splits_file else run_dir / "splits.json"
    try:
        return list(range(len(json.loads(splits_file.read_text())["splits"])))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def describe_run_dir(config: TrainConfig, run_dir: Path) -> ExistingRun:
    """Whether ``run_dir`` holds a run, and whether it is a finished or unfinished run of ``config``'s recipe."""
    saved = run_dir / "config.yaml"
    if not saved.is_file() or not (any(run_dir.glob("split-*")) or (run_dir / "checkpoints").exists()):
        return ExistingRun("none", [])
    differences = recipe_differences(_read_saved_config(saved), config.to_dict())
    if differences:
        return ExistingRun("different", differences)
    results = run_dir / "results.json"
    requested = _requested_splits(config, run_dir)
    done = results.is_file() and requested is not None and all(
        (run_dir / f"split-{k}" / "result.json").is_file() for k in requested)
    return ExistingRun("finished" if done else "unfinished", [], results if done else None)


def refuse_existing_run(run_dir: Path, existing: ExistingRun) -> None:
    """Raise the :class:`ConfigError` for a directory that holds another recipe's run or an unfinished one."""
    if existing.kind == "different":
        raise ConfigError(
            f"{_shown(run_dir)} holds a run of another recipe (it differs in {', '.join(existing.differences)}); "
            "choose another --output.dir, or set --output.overwrite true to replace that run"
        )
    if existing.kind == "unfinished":
        raise ConfigError(
            f"{_shown(run_dir)} holds an unfinished run of this recipe; continue it with: {resume_command(run_dir)} "
            "(or set --output.overwrite true to start it again)"
        )
    raise ConfigError(f"{_shown(run_dir)} holds a finished run of this recipe; set --output.overwrite true to train "
                      "it again")


def prepare_run_dir(config: TrainConfig, run_dir: Path, resume: bool) -> None:
    """Check the run directory against ``--resume`` / ``output.overwrite``; write the resolved config.

    Without ``--resume`` a directory that holds a run is only reused for a new one with ``output.overwrite`` (its
    splits, states and results are deleted first); an unfinished run of the same recipe is an error that says to
    continue it with ``--resume``, and a run of another recipe is an error that names the fields that differ. (A
    finished run of the same recipe never gets here: :func:`main` reuses it.)
    """
    saved = run_dir / "config.yaml"
    if resume:
        if not saved.is_file():
            raise ConfigError(f"--resume: {run_dir} holds no run (no config.yaml); start it without --resume")
        changed = recipe_differences(_read_saved_config(saved), config.to_dict())
        if changed:
            raise ConfigError(f"--resume: the config differs from the interrupted run's in {', '.join(changed)}; a "
                              "resumed run must use the same recipe")
        saved.write_text(config.to_yaml())  # run-control fields (splits to run, trackers, ...) may have changed
        return
    existing = describe_run_dir(config, run_dir)
    if existing.kind != "none":
        if not config.output.overwrite:
            refuse_existing_run(run_dir, existing)
        for path in list(run_dir.glob("split-*")) + [run_dir / "checkpoints"]:
            shutil.rmtree(path, ignore_errors=True)
        for name in ("results.json", "results.md", "results.csv"):
            (run_dir / name).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(config.to_yaml())


# ----------------------------------------------------------------------------------------- after a failure


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies inside it (shorter to read and to paste)."""
    try:
        return str(Path(path).absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def resume_command(run_dir: Path) -> str:
    """The command that continues the run in ``run_dir`` (its ``config.yaml`` holds the recipe).

    Launched by ``accelerate launch``, the launcher's process flags are repeated (``--cpu``, the number of
    processes); run as a plain script, it is ``python training/train.py``.
    """
    import shlex

    script = shlex.quote(_shown(Path(__file__)))
    tail = f"{script} --resume {shlex.quote(_shown(run_dir))}"
    if "ACCELERATE_USE_CPU" not in os.environ and "LOCAL_RANK" not in os.environ:
        return f"python {tail}"
    flags = ["--cpu"] if os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" else []
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    flags += (["--multi_gpu"] if processes > 1 else []) + ["--num_processes", str(processes)]
    return " ".join(["accelerate launch", *flags, tail])


def _finished_splits(run_dir: Path) -> List[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in run_dir.glob("split-*/result.json"))


def _saved_states(run_dir: Path) -> Dict[int, int]:
    """``{split: newest epoch}`` of the complete epoch states in ``run_dir/checkpoints``."""
    states: Dict[int, int] = {}
    for marker in run_dir.glob(f"checkpoints/split-*/epoch-*/{STATE_MARKER}"):
        split, epoch = int(marker.parent.parent.name.split("-")[1]), int(marker.parent.name.split("-")[1])
        states[split] = max(states.get(split, 0), epoch)
    return states


def resumable(run_dir: Path) -> bool:
    """Whether ``--resume`` would reuse anything in ``run_dir``: a finished split or a complete epoch state."""
    return bool(_finished_splits(run_dir) or _saved_states(run_dir))


def kept_summary(run_dir: Path) -> str:
    """What an interrupted run leaves for ``--resume``, e.g. "split 0 finished; the state of split 1 after epoch 2"."""
    parts = []
    finished = _finished_splits(run_dir)
    if finished:
        parts.append(f"split{'s' if len(finished) > 1 else ''} {', '.join(map(str, finished))} finished")
    for split, epoch in sorted(_saved_states(run_dir).items()):
        if split not in finished:
            parts.append(f"the state of split {split} after its epoch {epoch} (the last finished one)")
    return "; ".join(parts)


class RunDirGuard:
    """Remembers what existed of a run directory before this invocation, and removes what it added when the run
    fails before leaving anything ``--resume`` can use.

    Nothing that existed before is ever deleted: not the directory, not its entries, not the parents of a new one.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.existed = run_dir.is_dir()
        self.entries = {p.name for p in run_dir.iterdir()} if self.existed else set()
        self.new_parents = []  # the parents that this invocation will create, outermost first
        parent = run_dir.parent
        while not parent.exists():
            self.new_parents.insert(0, parent)
            parent = parent.parent

    def clean_up(self) -> bool:
        """Remove what this invocation added, unless the directory can be resumed; whether anything was removed."""
        if not self.run_dir.is_dir() or resumable(self.run_dir):
            return False
        if self.existed:
            added = [p for p in self.run_dir.iterdir() if p.name not in self.entries]
            for path in added:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            return bool(added)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        for parent in reversed(self.new_parents):
            try:
                parent.rmdir()  # only if empty: something else may have been put there meanwhile
            except OSError:
                break
        return True


def failure_message(run_dir: Path, cleaned: bool) -> str:
    """The end of the one-line message after an interrupted or failed run: what was kept and how to continue."""
    kept = kept_summary(run_dir) if run_dir.is_dir() else ""
    if kept:
        return f"kept {kept} in {_shown(run_dir)}; continue with: {resume_command(run_dir)}"
    if cleaned:
        return f"no epoch had finished, so nothing was kept (removed what this run had written to {_shown(run_dir)})"
    return "no epoch had finished, so there is nothing to resume"


def _is_main_rank() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


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
    ddp_kwargs = DistributedDataParallelKwargs()  # find_unused_parameters is set per model, see unreachable_trainable
    accelerator = Accelerator(
        cpu=cpu_ddp,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=config.optim.gradient_accumulation_steps,
        log_with=make_trackers(config.output.trackers, run_dir / "logs"),
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        kwargs_handlers=[ddp_kwargs],
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
    run.ddp_kwargs = ddp_kwargs
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
