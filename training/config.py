"""The training configuration: dataclasses with defaults, read from YAML, overridden from the command line.

A config file has the sections below (every key optional; anything not given keeps its default)::

    data:          which data set, which splits, which part of the training split, cross-data-set test set
    model:         method, backbone (Hub id, local directory, or a dict of ViTConfig fields), GLIA and method options
    optim:         LoDa's recipe by default: AdamW 3e-4, weight decay 1e-2, cosine to 0, 10 epochs, batch 128, seed 3407
    augmentation:  random horizontal / vertical flips, random fragment offsets
    eval:          test-time views and their seed
    output:        run directory, checkpointing, trackers
    hub:           push the trained model to the Hugging Face Hub

Command-line overrides use dotted keys, ``--optim.lr 1e-4 --data.splits [0,1,2] --model.glia.use_glr false`` (or
``--optim.lr=1e-4``). A value is read as YAML and then converted to the type of the field it sets, so ``1e-4`` is a
float even though YAML 1.1 would read it as a string. An unknown key, in a file or on the command line, is an error
that names the key and the closest known one; so is a value of the wrong type.

The schema, the layering and the type conversion are omegaconf's structured configs: ``OmegaConf.structured`` on the
dataclasses below, ``OmegaConf.merge`` of each file onto it, ``OmegaConf.to_object`` back to the dataclasses. A value
may therefore refer to another, ``--output.run_name '${data.dataset}-lr${optim.lr}'``. Fields whose type omegaconf
cannot check (a union with a list or mapping: ``data.splits``, ``model.backbone``) are annotated ``Any`` and checked
in :meth:`TrainConfig.validate`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
import warnings
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ConfigTypeError, OmegaConfBaseException, ValidationError

from glia_hf.configuration_glia import LOSSES
from glia_hf.image_processing_glia import RESIZE_FILTERS, describe_resolution  # noqa: F401 (re-exported)
from glia_hf.methods import METHODS  # the registered fine-tuning methods (glia_hf.methods.register_method)
from training.config_help import config_help, field_descriptions  # noqa: F401 (re-exported: train.py --help)


TRACKERS = ("csv", "tensorboard")
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
SCHEDULERS = ("cosine", "constant")
RESIZE_RESAMPLE = tuple(RESIZE_FILTERS)
#: What ``data.train_fraction`` is a share of (paper Table 3).
TRAIN_FRACTION_OF = ("dataset", "train_split")
#: ``data.semantic_cache_dtype``: what the semantic cache stores its tokens in (training.data maps them to torch dtypes).
SEMANTIC_CACHE_DTYPES = ("fp32", "bf16")


class ConfigError(ValueError):
    """A configuration problem: an unknown key, a value of the wrong type, or a value out of range."""


@dataclass
class DataConfig:
    """Which images train and test each model.

    Attributes:
        dataset: a name understood by ``glia_hf.data.load_iqa_dataset`` (``builtin``, ``koniq10k``, ``kadid10k``,
            ``livec``, ``live``, ``csiq``, ``tid2013``, ``spaq``, ``flive``, ``csv``, ``pyiqa``).
        data_dir: the unpacked release folder (for ``csv`` the CSV file; for ``builtin`` where to build/cache it).
        dataset_options: extra keyword arguments of the reader, e.g. ``{score_column: MOS_zscore}`` for KonIQ-10k.
        splits_file: the JSON file of the seeded train/test splits. Created on first use (every method that points at
            the same file then sees the same splits). Default: ``splits.json`` inside the run directory.
        num_splits, split_seed, train_ratio: how the splits file is made when it does not exist yet (10, 3407, 0.8).
        splits: which splits to run: one index, a list of indices, or ``"all"``.
        train_fraction: train on a nested subset of the training part of each split (paper Table 3: 0.2, 0.4,
            0.6). ``null``: the whole training part.
        train_fraction_of: what ``train_fraction`` is a share of. ``dataset`` (default, the paper's words: "the
            training set containing 20%, 40% and 60% images"): of all images of the data set, drawn from the
            split's training part (so at most ``train_ratio``); ``train_split``: of the split's training part
            (0.2 x 80% = 16% of the data set). Either way the model is tested on the same split's test part, and
            the subsets are nested (20% inside 40% inside 60%).
        train_views: how many times each training image appears per epoch (LoDa's ``train.patch_num``: 3 for
            KonIQ-10k, KADID-10k and SPAQ, 5 for LIVE and LIVE Challenge, 10 for TID2013, 1 for FLIVE). Each
            appearance is an independent sample of the shuffled epoch, with its own flips and fragment offsets, in
            whatever batch the shuffle puts it; an epoch is ``train_views x images / batch_size`` optimiser steps, and
            the cosine schedule spans all of them. 1: one view per image (the order of earlier runs, unchanged).
        resize_short_side: scale every image (training, test, and later every photo the saved model scores: the value
            is stored in the processor's ``preprocessor_config.json``) so that its short side has this many pixels,
            aspect ratio kept, smaller images scaled up, EXIF orientation applied first: what LoDa's
            ``scripts/process_*.py`` do once on disk (384 for most data sets). ``null``: the native resolution.
        resize_resample: the filter of that resize, ``bicubic`` or ``bilinear`` (LoDa's KonIQ-10k and SPAQ scripts
            use torchvision's default, bilinear; the others bicubic).
        test_dataset, test_data_dir, test_dataset_options: a second data set on which each split's model is also
            tested, whole (paper Table 2, cross-data-set). ``null``: none.
        cache_semantic: compute the frozen backbone's guidance (semantic-stream) tokens of each image and orientation
            once, keep them in host memory (float32) and reuse them in every later epoch, view, test and calibration
            pass (``training.data.SemanticCache``; the same results within 1e-5, a GLIANet step about 30% fewer
            multiply-adds). On by default; it applies to GLIANet with a frozen backbone whose guidance stream is the
            whole image, and is ignored, with the reason printed, otherwise. Memory: 605 KB per image and
            orientation at ViT-B/16 and 224 px, at most 24.4 GB for all of KonIQ-10k with 4 orientations each.
        cache_images: decode and resize every image (training and test) once, before the first epoch, into a
            memory-mapped ``datasets`` cache of uint8 arrays and whole-image views (``training.data.DecodedImageCache``),
            so that each epoch only reads arrays, flips and draws fragments: the same batches and results. Off by
            default (disk per image: ``H x W x 3`` bytes + the float32 view, 590 + 602 KB at 512x384 and 224 px, 12.0 GB
            for KonIQ-10k at 384 px). The cache is keyed by the image list (with each file's size and time), the resize
            settings and the view's size, so it is reused by later runs with the same images and resolution and never
            when one changes.
        image_cache_dir: where ``cache_images`` keeps its caches (a folder per key). Default: ``image-cache`` inside
            the run directory; name a shared folder to reuse the decoded images across runs.
        semantic_cache_dtype: the dtype ``cache_semantic`` stores the tokens in: ``fp32`` (default; the same results as
            without the cache within 1e-5) or ``bf16`` (half the memory or disk: 303 KB per image and orientation at
            ViT-B/16, at most 12.2 GB for KonIQ-10k; its effect on results is measured in the README).
        semantic_cache_dir: ``null`` (default): ``cache_semantic`` keeps the tokens in host memory, per process, for
            this run. A folder: in a memory-mapped file there (``training.data.DiskSemanticCache``), filled lazily,
            shared by the processes of a run on one machine and reused by later runs with the same key (backbone
            weights, processor settings, image list, precision and ``semantic_cache_dtype``).
        num_workers: DataLoader worker processes per training process, or ``auto`` (the default): what the machine
            has. On the CPU half the cores of each process (1 worker + 1 compute thread on 2 cores, none on 1 core),
            on a GPU each process's cores but one, at most 8 (see :func:`training.loop.resolve_num_workers`).
        cpu_threads: PyTorch compute threads per process when training on the CPU. Default: the cores left over by
            the data workers, shared among the processes (at least one), so that workers and compute threads do not
            fight for the same cores (on 2 cores: 1 worker + 1 thread). Ignored on GPUs.
    """

    dataset: str = "builtin"
    data_dir: Optional[str] = None
    dataset_options: Dict[str, Any] = field(default_factory=dict)
    splits_file: Optional[str] = None
    num_splits: int = 10
    split_seed: int = 3407
    train_ratio: float = 0.8
    splits: Any = "all"  # int | List[int] | "all"; omegaconf cannot type a union with a list: validate() checks it
    train_fraction: Optional[float] = None
    train_views: int = 1
    resize_short_side: Optional[int] = None
    resize_resample: str = "bicubic"
    train_fraction_of: str = "dataset"
    test_dataset: Optional[str] = None
    test_data_dir: Optional[str] = None
    test_dataset_options: Dict[str, Any] = field(default_factory=dict)
    cache_semantic: bool = True
    cache_images: bool = False
    image_cache_dir: Optional[str] = None
    semantic_cache_dtype: str = "fp32"
    semantic_cache_dir: Optional[str] = None
    num_workers: Union[int, str] = "auto"
    cpu_threads: Optional[int] = None


#: Fields that change how a run is carried out, never what it computes; no part of a run's identity (eval.protocols).
EXECUTION_FIELDS = (("data", "num_workers"), ("data", "cpu_threads"), ("data", "cache_semantic"),
                    ("data", "cache_images"), ("data", "image_cache_dir"), ("data", "semantic_cache_dir"))
#: Fields in which ``--resume`` may differ from the interrupted run: execution, which splits, where and how it writes,
#: the Hub push. Not ``data.splits_file``: it holds the splits, and a resumed run must read the same one.
RUN_CONTROL_FIELDS = EXECUTION_FIELDS + (
    ("data", "splits"), ("output", "dir"), ("output", "run_name"), ("output", "trackers"), ("output", "log_every"),
    ("output", "overwrite"), ("output", "keep_states"), ("output", "keep_final_state"),
    ("hub", "push_to_hub"), ("hub", "hub_model_id"), ("hub", "private"), ("hub", "split"))


@dataclass
class ModelConfig:
    """What is trained.

    Attributes:
        method: ``glia`` or a baseline of paper Table 6: ``linear_probe``, ``full_finetune``, ``lora``, ``adapter``,
            ``vpt``.
        backbone: a Hub id or local directory of a backbone checkpoint (a transformers ViT, DeiT, DINOv2, DINOv2 with
            registers, CLIP or SigLIP model, or a timm ViT: converted on load; every backbone weight must load), or a
            dict of the backbone config's fields for a randomly initialised one (offline runs; the results are then
            labelled as such), whose ``model_type`` key picks the family (``vit``, ``deit``, ``dinov2``,
            ``dinov2_with_registers``, ``clip_vision_model``, ``siglip_vision_model``; default ``vit``).
        glia: ``GLIAConfig`` options, e.g. ``{latent_dim: 64, use_glr: false, main_stream: semantic}``. The score
            range and the loss are filled in by the trainer (from the data set and ``optim.loss``).
        method_options: options of the baseline method (e.g. LoRA rank), passed to ``glia_hf.methods.build_model``.
        image_mean, image_std: normalisation of the backbone; default: its ``preprocessor_config.json``, else a timm
            checkpoint's ``pretrained_cfg``, else the family's usual values (``glia_hf.backbones``).
    """

    method: str = "glia"
    backbone: Any = "google/vit-base-patch16-224"  # str | Dict[str, Any]; validate() checks it
    glia: Dict[str, Any] = field(default_factory=dict)
    method_options: Dict[str, Any] = field(default_factory=dict)
    image_mean: Optional[List[float]] = None
    image_std: Optional[List[float]] = None


@dataclass
class OptimConfig:
    """The optimisation recipe. Defaults: LoDa's public configs (the paper trains "with the same settings as LoDa").

    Attributes:
        lr, weight_decay, betas, eps: AdamW over the trainable parameters only.
        scheduler: ``cosine`` (to 0 at the last optimiser step, stepped every step) or ``constant``.
        warmup_steps, warmup_ratio: linear warm-up length in optimiser steps, or as a share of all steps.
        epochs: passes over the training split.
        batch_size: images per optimiser step, summed over all processes and accumulation steps. Each process sees
            ``batch_size / (num_processes * gradient_accumulation_steps)`` images per forward pass; the PLCC loss is
            computed over those.
        gradient_accumulation_steps: forward/backward passes per optimiser step.
        drop_last: drop the last incomplete batch of each epoch (a PLCC over a handful of images is noisy).
        seed: seeds the model initialisation, the shuffling and the augmentations.
        loss: one of ``glia_hf.configuration_glia.LOSSES`` on labels normalised to [0, 1]: ``plcc`` ((1 - r) / 2),
            ``loda_plcc`` (the form of LoDa's ``plcc_loss``; the benchmark configs use it), ``mse``, ``l1``.
        max_grad_norm: clip gradients to this norm; ``null``: no clipping.
        mixed_precision: ``auto`` (bf16 on a GPU that supports it, else none), ``no``, ``fp16``, ``bf16``.
    """

    lr: float = 3e-4
    weight_decay: float = 1e-2
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    scheduler: str = "cosine"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    epochs: int = 10
    batch_size: int = 128
    gradient_accumulation_steps: int = 1
    drop_last: bool = True
    seed: int = 3407
    loss: str = "plcc"
    max_grad_norm: Optional[float] = None
    mixed_precision: str = "auto"


@dataclass
class AugmentationConfig:
    """Training-time augmentation (none at test time).

    Attributes:
        hflip, vflip: probabilities of a horizontal and of a vertical flip of the whole image (LoDa: 0.5 each).
        random_offsets: draw the fragment offsets at random in each cell (else centred, as in evaluation).
    """

    hflip: float = 0.5
    vflip: float = 0.5
    random_offsets: bool = True


@dataclass
class EvalConfig:
    """Test-time scoring.

    Attributes:
        num_views: fragment views per test image, whose scores are averaged (LoDa averages 15 crops).
        seed: seed of the views' random offsets; the same seed gives the same views and the same predictions.
        batch_size: test images per forward pass (each with ``num_views`` views), over all processes.
        logistic: deprecated and ignored (still read, so that saved configs parse). PLCC and RMSE are always
            reported after LoDa's 4-parameter logistic fit (``plcc``, ``rmse``), the raw values beside them
            (``plcc_raw``, ``rmse_raw``).
        calibrate: after training, fit ``label = a * prediction + b`` by least squares on the training images (one
            view each) and fold it into the head, so that saved models score on the data set's scale. The PLCC loss
            leaves scale and offset free; ranks and correlations do not change, RMSE does.
    """

    num_views: int = 15
    seed: int = 3407
    batch_size: int = 16
    logistic: Optional[bool] = None
    calibrate: bool = True


@dataclass
class OutputConfig:
    """Where results go.

    Attributes:
        dir: the run directory; ``{dataset}``, ``{method}`` and ``{run_name}`` are filled in.
        run_name: a free name for trackers and the model card (default: the run directory's name).
        save_state_every_epoch: save the full training state (model, optimiser, scheduler, RNG) after every epoch so
            that ``--resume`` can continue an interrupted run.
        keep_states: how many epoch states of the running split to keep (older ones are deleted).
        keep_final_state: keep the last state of a finished split (default: delete it; the model is saved anyway).
        trackers: ``csv`` and/or ``tensorboard`` (skipped with a warning when not installed).
        log_every: log the training loss every this many optimiser steps.
        save_model: save each split's trained model as a Hub-ready directory.
        plots: write a scatter plot PNG per split.
        overwrite: train again in a run directory that already holds a run, replacing its results and models.
            Without it, a finished run of the same recipe is reused (nothing is trained), an unfinished one is
            continued with ``--resume``, and a run of another recipe is an error that names the differing fields.
    """

    dir: str = "runs/{dataset}-{method}"
    run_name: Optional[str] = None
    save_state_every_epoch: bool = True
    keep_states: int = 1
    keep_final_state: bool = False
    trackers: List[str] = field(default_factory=lambda: ["csv", "tensorboard"])
    log_every: int = 10
    save_model: bool = True
    plots: bool = True
    overwrite: bool = False


@dataclass
class HubConfig:
    """Pushing a trained model to the Hugging Face Hub.

    Attributes:
        push_to_hub: push one split's saved model directory (model, processor, remote code, model card).
        hub_model_id: the repository, ``user/name``.
        private: create the repository private if it does not exist (default: private, so nothing is published by
            accident).
        split: which split's model to push; default: the first split of the run.
    """

    push_to_hub: bool = False
    hub_model_id: Optional[str] = None
    private: bool = True
    split: int | None = None


@dataclass
class TrainConfig:
    """The whole configuration of one training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    hub: HubConfig = field(default_factory=HubConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def run_dir(self) -> Path:
        """The run directory, with ``{dataset}``, ``{method}`` and ``{run_name}`` filled in."""
        text = self.output.dir.format(
            dataset=self.data.dataset, method=self.model.method, run_name=self.output.run_name or "run"
        )
        return Path(text).expanduser()

    def validate(self) -> "TrainConfig":
        """Check ranges and choices; raise :class:`ConfigError` naming the first bad field."""
        d, m, o, a, e, out, hub = self.data, self.model, self.optim, self.augmentation, self.eval, self.output, self.hub
        for name, allowed in _CHOICES.items():
            _choice(name, attrgetter(name)(self), allowed)
        for name in _POSITIVE:
            _positive(name, attrgetter(name)(self))
        for name in out.trackers:
            _choice("output.trackers", name, TRACKERS)
        if not (d.splits == "all" or _is_index(d.splits) or isinstance(d.splits, list) and all(map(_is_index,
                                                                                                   d.splits))):
            raise ConfigError(f"data.splits must be an index, a list of indices or 'all', got {d.splits!r}")
        for index in self.split_indices(d.num_splits) if not isinstance(d.splits, str) else []:
            if index < 0:
                raise ConfigError(f"data.splits holds a negative index {index}")
        if d.train_fraction is not None and not 0 < d.train_fraction <= 1:
            raise ConfigError(f"data.train_fraction must lie in (0, 1], got {d.train_fraction}")
        if d.resize_short_side is not None:
            _positive("data.resize_short_side", d.resize_short_side)
        if d.train_fraction is not None and d.train_fraction_of == "dataset" and d.train_fraction > d.train_ratio:
            raise ConfigError(
                f"data.train_fraction {d.train_fraction:g} of the whole data set is more than the training part "
                f"(data.train_ratio {d.train_ratio:g}); lower it or set data.train_fraction_of train_split"
            )
        if not 0 < d.train_ratio < 1:
            raise ConfigError(f"data.train_ratio must lie in (0, 1), got {d.train_ratio}")
        if isinstance(d.num_workers, str) and d.num_workers != "auto" or isinstance(d.num_workers, int) and (
            d.num_workers < 0
        ):
            raise ConfigError(f"data.num_workers must be a number >= 0 or 'auto', got {d.num_workers!r}")
        if d.cpu_threads is not None and d.cpu_threads < 1:
            raise ConfigError("data.cpu_threads must be >= 1 (or null for automatic)")
        if not isinstance(m.backbone, (str, dict)):
            raise ConfigError("model.backbone must be a Hub id / directory or a dict of backbone config fields, "
                              f"got {m.backbone!r}")
        for key in ("score_min", "score_max", "loss"):
            if key in m.glia:
                raise ConfigError(
                    f"model.glia.{key} is set by the trainer (score range from the data set, loss from optim.loss); "
                    "remove it"
                )
        if o.weight_decay < 0 or o.warmup_steps < 0 or not 0 <= o.warmup_ratio < 1:
            raise ConfigError("optim.weight_decay and optim.warmup_steps must be >= 0, optim.warmup_ratio in [0, 1)")
        if len(o.betas) != 2:
            raise ConfigError(f"optim.betas must hold two numbers, got {o.betas}")
        if o.batch_size % o.gradient_accumulation_steps:
            raise ConfigError(
                f"optim.batch_size ({o.batch_size}) must be divisible by optim.gradient_accumulation_steps "
                f"({o.gradient_accumulation_steps})"
            )
        for name in ("hflip", "vflip"):
            if not 0 <= getattr(a, name) <= 1:
                raise ConfigError(f"augmentation.{name} is a probability, got {getattr(a, name)}")
        if e.logistic is not None:
            warnings.warn(
                "eval.logistic is deprecated and ignored: PLCC and RMSE are always reported after LoDa's "
                "4-parameter logistic fit (plcc, rmse), raw values beside them (plcc_raw, rmse_raw); remove the key",
                FutureWarning, stacklevel=2,
            )
        if hub.push_to_hub and not hub.hub_model_id:
            raise ConfigError("hub.push_to_hub needs hub.hub_model_id (e.g. --hub_model_id user/glia-koniq10k)")
        return self

    def split_indices(self, available: int) -> List[int]:
        """The split indices to run, given how many splits the splits file holds."""
        chosen = self.data.splits
        if chosen == "all":
            return list(range(available))
        indices = [chosen] if isinstance(chosen, int) else list(chosen)
        bad = [i for i in indices if not 0 <= i < available]
        if bad:
            raise ConfigError(f"data.splits {bad} out of range: the splits file holds {available} splits")
        if len(set(indices)) != len(indices):
            raise ConfigError(f"data.splits lists a split twice: {indices}")
        return indices


#: The fields that take one of a few values, and those that must be positive (checked by TrainConfig.validate).
_CHOICES = {"model.method": METHODS, "optim.scheduler": SCHEDULERS, "optim.mixed_precision": MIXED_PRECISION,
            "optim.loss": LOSSES, "data.resize_resample": RESIZE_RESAMPLE, "data.train_fraction_of": TRAIN_FRACTION_OF,
            "data.semantic_cache_dtype": SEMANTIC_CACHE_DTYPES}
_POSITIVE = ("data.train_views", "data.num_splits", "optim.lr", "optim.epochs", "optim.batch_size",
             "optim.gradient_accumulation_steps", "eval.num_views", "eval.batch_size", "output.keep_states",
             "output.log_every")


def _choice(name: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(name: str, value) -> None:
    if value is None or value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")


# ------------------------------------------------------------------------------------------- reading and merging
# omegaconf merges and converts; kept here: the ``--key value`` syntax (omegaconf's dotlist knows only ``key=value``),
# empty YAML sections, omegaconf's exceptions as one-line ConfigErrors naming key, value, expected type, nearest key.

_SECTIONS = typing.get_type_hints(TrainConfig)  # {"data": DataConfig, ...}
_FIELDS = {"": _SECTIONS, **{name: typing.get_type_hints(cls) for name, cls in _SECTIONS.items()}}
_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
               dict: "a mapping"}


def _without_none(annotation: Any) -> Any:
    """``Optional[X]`` or ``X | None`` -> ``X``; any other annotation as it is."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if typing.get_origin(annotation) in (Union, types.UnionType) and len(args) == 1 else annotation


def _expected(annotation: Any) -> str:
    """A field type as an error message says it: ``an integer``, ``a number or null``, ``a list``."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = typing.get_args(annotation)
        return " or ".join([_expected(a) for a in args if a is not type(None)] + ["null"] * (type(None) in args))
    origin = typing.get_origin(annotation) or annotation
    return _TYPE_NAMES.get(origin, getattr(origin, "__name__", str(origin)))


def _config_error(error: OmegaConfBaseException, source: Optional[Path] = None) -> ConfigError:
    """omegaconf's exception as one line naming the key, the bad value and what the key takes."""
    key, where = error.full_key or "", f"{source}: " if source else ""
    parent, _, name = key.rpartition(".")
    if isinstance(error, ConfigKeyError) and parent in _FIELDS and name not in _FIELDS[parent]:
        close = difflib.get_close_matches(name, list(_FIELDS[parent]), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return ConfigError(f"{where}Unknown config key {key!r}.{hint} Known keys here: {sorted(_FIELDS[parent])}")
    section, _, rest = key.partition(".")
    annotation = _FIELDS.get(section, {}).get(rest.split("[")[0]) if section else None
    if annotation is not None and type(error) in (ValidationError, ConfigTypeError):
        if "[" in rest:  # an item of a list field: Optional[List[float]] -> float
            annotation = typing.get_args(_without_none(annotation))[0]
        value = "null" if error.value is None else repr(error.value)
        return ConfigError(f"{where}{key} must be {_expected(annotation)}, got {value}")
    return ConfigError(f"{where}{key or 'config'}: {str(error.msg).splitlines()[0]}")


def _layer(base: DictConfig, values: Any, source: Optional[Path] = None) -> DictConfig:
    """``values`` (nested dicts) merged onto ``base``: values converted to their field's type, mappings key by key."""
    where = f"{source}: " if source else ""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}a config file must hold a mapping of sections (data, model, optim, ...)")
    for section, content in values.items():
        if section in _SECTIONS and content is not None and not isinstance(content, dict):
            raise ConfigError(f"{where}section {section!r} must be a mapping, got {content!r}")
    try:  # a section left empty (``optim:`` and nothing under it) keeps its defaults
        return OmegaConf.merge(base, {k: v for k, v in values.items() if not (k in _SECTIONS and v is None)})
    except OmegaConfBaseException as error:
        raise _config_error(error, source) from None


def config_from_dict(values: Optional[Dict[str, Any]]) -> TrainConfig:
    """Build a validated :class:`TrainConfig` from nested dicts (a parsed YAML file)."""
    merged = _layer(OmegaConf.structured(TrainConfig), values or {})
    try:
        config = OmegaConf.to_object(merged)  # resolves ${section.key} interpolations, checking their types
    except OmegaConfBaseException as error:
        raise _config_error(error) from None
    return config.validate()


def load_config(path, overrides: Optional[List[str]] = None) -> TrainConfig:
    """Read YAML config(s) and apply ``--a.b value`` overrides.

    Args:
        path: one YAML file, a list of them (layered: a later file's keys win, mappings are merged key by key, e.g.
            a data set config and then ``configs/methods/lora.yaml``), or ``None`` for the defaults.
        overrides: command-line ``--section.key value`` arguments, applied last.
    """
    layered = OmegaConf.structured(TrainConfig)
    for item in map(Path, [] if path is None else [path] if isinstance(path, (str, Path)) else path):
        if not item.is_file():
            raise ConfigError(f"config file {item} does not exist")
        layered = _layer(layered, yaml.safe_load(item.read_text()) or {}, item)
    # An override names one key (--model.glia.use_glr false) or replaces a whole mapping
    # (--model.backbone '{hidden_size: 96}' drops the file's other backbone keys): set_dotted on plain dicts.
    values = OmegaConf.to_container(layered, resolve=False)
    for dotted, value in parse_overrides(overrides or []):
        set_dotted(values, dotted, value)
    return config_from_dict(values)


def parse_overrides(arguments: List[str]) -> List[tuple]:
    """Turn ``["--optim.lr", "1e-4", "--data.splits=[0,1]"]`` into ``[("optim.lr", "1e-4"), ("data.splits", [0, 1])]``.

    Values are parsed as YAML (lists, booleans, null); a flag without a value is ``true``.
    """
    pairs, i = [], 0
    while i < len(arguments):
        argument = arguments[i]
        if not argument.startswith("--") or len(argument) == 2:
            raise ConfigError(f"expected an option --section.key, got {argument!r}")
        key, i = argument[2:], i + 1
        if "=" in key:
            key, raw = key.split("=", 1)
        elif i < len(arguments) and not (arguments[i].startswith("--") and len(arguments[i]) > 2):
            raw, i = arguments[i], i + 1
        else:
            raw = "true"
        if "." not in key:
            raise ConfigError(f"override --{key} needs a section, e.g. --optim.{key} (sections: {list(_SECTIONS)})")
        try:
            pairs.append((key, yaml.safe_load(raw)))
        except yaml.YAMLError:
            pairs.append((key, raw))
    return pairs


def set_dotted(values: Dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``values["a"]["b"]["c"] = value`` for ``"a.b.c"``; keys inside dict fields (``model.glia.x``) work too."""
    parts = dotted.split(".")
    target = values
    for part in parts[:-1]:
        existing = target.get(part)
        if existing is None:
            existing = target[part] = {}
        if not isinstance(existing, dict):
            raise ConfigError(f"cannot set {dotted!r}: {part!r} is not a section or mapping")
        target = existing
    target[parts[-1]] = value


def flat_config(config: TrainConfig) -> Dict[str, Any]:
    """The config as ``{"optim.lr": 0.0003, ...}`` with only str/int/float/bool values (for trackers' hparams)."""
    flat: Dict[str, Any] = {}

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                visit(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, (str, int, float, bool)):
            flat[prefix] = value
        else:
            flat[prefix] = str(value)

    visit("", config.to_dict())
    return flat


__all__ = [
    "AugmentationConfig", "ConfigError", "DataConfig", "EvalConfig", "HubConfig", "METHODS",
    "ModelConfig", "OptimConfig", "OutputConfig", "TrainConfig", "config_from_dict", "describe_resolution",
    "config_help", "field_descriptions", "EXECUTION_FIELDS", "RUN_CONTROL_FIELDS", "flat_config", "load_config",
    "parse_overrides", "set_dotted",
]
