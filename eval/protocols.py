"""The paper's experiments (Tables 1-6) as resumable protocols over the one training loop.

Run a protocol with::

    python -m eval.protocols TABLE --base-config training/configs/quickstart.yaml \
        [--splits 0 1 2] [--out outputs/protocols] [--dry-run] [--section.key value ...]

``TABLE`` is one of

=====================  ==========  ====================================================================================
name                   paper       rows x columns
=====================  ==========  ====================================================================================
``intra``              Table 1     GLIA x each data set (one ``--base-config`` per data set)
``cross``              Table 2     GLIA x (train set -> test set) pairs; each split's model is tested on the whole other
                                   set, without fine-tuning
``data_efficient``     Table 3     (20/40/60 % of the images, GLIA) x each data set: of all images of the data set by
                                   default (``data.train_fraction_of: dataset``, the paper's words) or of each training
                                   split (``train_split``); the nested subsets stored in the splits file
``ablation_components``Table 4     (GLR, LGF) on/off x each data set: three runs per split and data set (GLR on with LGF
                                   off is the no-interaction model, printed, not trained; see :data:`COMPONENTS_NOTE`)
``ablation_streams``   Table 5     (guidance, main) stream pairs x each data set
``methods``            Table 6     linear probe, full fine-tune, adapter, LoRA, VPT, GLIA with trainable parameter
                                   counts x each data set, and LoDa's row quoted from the paper (not run)
=====================  ==========  ====================================================================================

How a protocol runs
-------------------
A protocol *expands* into cells (one row x one data-set column of its table) and each cell into one training run per
split. A run's configuration is layered, last one wins:

1. the base config file of its data set (``--base-config``, any config ``training/train.py`` accepts);
2. protocol defaults that only change what is written, not what is learnt (no saved model per run; CSV tracker);
3. the user's ``--section.key value`` overrides (e.g. ``--optim.epochs 2``);
4. what defines the cell (method, GLIA switches, training fraction, cross-data-set test set), the split, the run
   directory and the shared splits file. A user override of one of these keys is refused, since it would silently
   change what the table claims to show.

Every run gets a directory ``<out>/runs/<slug>-s<split>-<hash>``, where the hash is taken over the whole effective
configuration (outputs and Hub settings aside). Two tables asking for the same training run (the default GLIA model
is a row of Tables 1, 4, 5 and 6) therefore share it, and a finished run whose results file exists is never trained
again: an interrupted protocol is continued by running the same command, and more splits can be added later
(``--splits 3 4``) without retraining the first ones. A changed setting (more epochs, say) gives new run directories.
All runs of one data set read the same splits file ``<out>/splits/<data set>-<hash>.json`` (created by the first
run), so every method and every table sees the same splits.

A run's results count only if its results file carries the current ``schema_version``
(:data:`eval.reporting.RESULTS_SCHEMA_VERSION`); a run finished before PLCC became the fitted one is refused with a
message saying which directory to delete, so that no table mixes the two.

The table is assembled from the per-split results of its runs with :mod:`eval.reporting` and written as
``<out>/<table file>.md`` and ``.csv``. Its caption names the number of splits and the backbone, and carries the
label "random-initialised backbone, pseudo-MOS" when the backbone is randomly initialised and the data set is the
built-in pseudo-labelled one (both read from the configs).

Cross-data-set on a single built-in data set
--------------------------------------------
With two or more ``--base-config`` files, ``cross`` uses every ordered pair of their data sets. With a single base
config of the built-in data set it uses a stand-in: the built-in set is cut into two sets that share neither scenes nor
distortion families, built by the data package's own options (``scenes``, ``distortions``):

- ``builtin:structural``: every other scene (0th, 2nd, ...) with blur, noise, compression and spatial distortions;
- ``builtin:photometric``: the remaining scenes with colour, brightness, contrast and sharpness distortions.

Training on one and testing on the other then changes both the content and the kind of distortion, as moving between
two synthetic benchmarks does. It is named as such in the table caption.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import yaml

from eval import reporting

logger = logging.getLogger("eval.protocols")

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAIN_SCRIPT = REPO_ROOT / "training" / "train.py"

TABLES = ("intra", "cross", "data_efficient", "ablation_components", "ablation_streams", "methods")

#: File stem and paper table number of each protocol's output.
TABLE_FILES = {
    "intra": ("table1_intra", "Table 1"),
    "cross": ("table2_cross", "Table 2"),
    "data_efficient": ("table3_data_efficient", "Table 3"),
    "ablation_components": ("table4_ablation_components", "Table 4"),
    "ablation_streams": ("table5_ablation_streams", "Table 5"),
    "methods": ("table6_methods", "Table 6"),
}

DEFAULT_FRACTIONS = (0.2, 0.4, 0.6)
DEFAULT_METHODS = ("linear_probe", "full_finetune", "adapter", "lora", "vpt", "glia")
METHOD_LABELS = {
    "linear_probe": "Linear probe",
    "full_finetune": "Full fine-tune",
    "adapter": "Adapter",
    "lora": "LoRA",
    "vpt": "VPT",
    "glia": "GLIA (ours)",
}
#: Paper Table 4's rows as (GLR, LGF) in the paper's order, then the row we add (neither module).
COMPONENT_ROWS = ((True, False), (False, True), (True, True), (False, False))
#: Rows of Table 4 that are printed but not trained, and the row whose model they are.
COMPONENT_SAME_AS = {(True, False): (False, False)}
#: Table 4's columns and metrics, in the paper's order.
COMPONENT_SETTINGS = ("GLR", "LGF")
COMPONENT_METRICS = ("plcc", "srcc")
#: What a row of Table 4 that is not trained shows in its cells.
SAME_AS_NO_INTERACTION = "= no interaction (see note)"
#: Why (caption of Table 4; the same reasoning is in model_card.md's equations section).
COMPONENTS_NOTE = (
    "Note: GLR on with LGF off is not trained. In Eq. 3-4 as we read them, GLR (Eq. 4) only refines the semantic "
    "prior and only LGF (Eq. 3) reads that prior into the detail stream; with LGF off nothing reads the prior, so the "
    "model is the one without interaction (GLR off, LGF off), and the row would repeat that row's numbers. The paper "
    "prints distinct numbers for it, which Eq. 3-4 as written cannot produce. The row with neither module is our "
    "addition (not in the paper's Table 4)."
)
#: Paper Table 6's LoDa row, quoted (not run): {data set: {metric: value}}; LoDa's trainable parameters are from
#: paper Table 1 ("LoDa(9M)").
LODA_TABLE6_QUOTED = {"kadid10k": {"srcc": 0.931, "plcc": 0.936}, "koniq10k": {"srcc": 0.932, "plcc": 0.944}}
LODA_ROW_LABEL = "LoDa (quoted from the paper, not run)"
LODA_PARAMS_QUOTED = "9M (quoted)"
METHODS_NOTE = (
    "The LoDa row is quoted from the paper's Table 6 (KADID-10k and KonIQ-10k only; 9M trainable parameters from its "
    "Table 1), not run here: this repository does not implement LoDa. The baselines (linear probe, full fine-tune, "
    "Adapter, LoRA, VPT) are fed the detail stream (the fragment grid, GLIA's main stream) and score its CLS token; "
    "the paper's \"Sample\" column, which may say what each method was fed, was lost from the text we have."
)
#: Paper Table 5: (guidance stream, main stream); the third is GLIANet's default.
STREAM_ROWS = (("semantic", "semantic"), ("detail", "detail"), ("semantic", "detail"), ("detail", "semantic"))
#: The GLIA switches whose defaults are filled in before hashing, so that "default" and "explicitly default" match.
GLIA_SWITCHES = ("use_lgf", "use_glr", "main_stream", "guidance_stream")

RANDOM_PSEUDO_LABEL = "random-initialised backbone, pseudo-MOS"

#: The built-in set's distortion families (after KADID-10k's grouping) for the cross-data-set stand-in.
STRUCTURAL_DISTORTIONS = (
    "gaussian_blur", "lens_blur", "motion_blur",  # blur
    "white_noise", "impulse_noise", "multiplicative_noise",  # noise
    "jpeg", "jpeg2000",  # compression
    "pixelate", "jitter", "non_eccentricity_patch",  # spatial
)
PHOTOMETRIC_DISTORTIONS = (
    "desaturate", "oversaturate", "color_quantization", "color_shift",  # colour
    "brighten", "darken",  # brightness
    "contrast_decrease", "sharpen",  # contrast and sharpness
)

#: Written by the protocol beside each finished run: wall time and how it was launched.
RUN_RECORD = "protocol_run.json"


class ProtocolError(ValueError):
    """A protocol cannot be expanded or assembled as asked."""


# ------------------------------------------------------------------------------------------------ data sources


@dataclass
class DataSource:
    """A data set as a column of a table: its label and the ``data`` settings that load it."""

    label: str
    dataset: str
    data_dir: Optional[str] = None
    options: Dict[str, Any] = field(default_factory=dict)
    note: Optional[str] = None

    @property
    def options_dict(self) -> Dict[str, Any]:
        return copy.deepcopy(dict(self.options))

    def train_overrides(self) -> Dict[str, Any]:
        return {"data.dataset": self.dataset, "data.data_dir": self.data_dir, "data.dataset_options": self.options_dict}

    def test_overrides(self) -> Dict[str, Any]:
        return {
            "data.test_dataset": self.dataset,
            "data.test_data_dir": self.data_dir,
            "data.test_dataset_options": self.options_dict,
        }

    @property
    def is_builtin(self) -> bool:
        return _canonical(self.dataset) == "builtin"


def _canonical(name: str) -> str:
    key = "".join(ch for ch in str(name).lower() if ch.isalnum())
    try:
        from glia_hf.data import canonical_name

        return canonical_name(name)
    except Exception:  # the data package is optional for expanding a protocol
        return key


@dataclass
class BaseConfig:
    """One ``--base-config`` file, merged with the user's overrides (nested dicts, not yet validated)."""

    path: Optional[Path]
    values: Dict[str, Any]
    source: DataSource
    file_values: Dict[str, Any] = field(default_factory=dict)  # the file as written, before the user's overrides

    @property
    def data(self) -> Dict[str, Any]:
        return self.values.get("data") or {}

    @property
    def model(self) -> Dict[str, Any]:
        return self.values.get("model") or {}


def _source_label(data: Dict[str, Any]) -> str:
    name = data.get("dataset", "builtin")
    key = _canonical(name)
    if key in ("csv", "pyiqa"):
        options = data.get("dataset_options") or {}
        if options.get("name"):
            return str(options["name"])
        where = data.get("data_dir") or options.get("meta_info_file") or key
        return f"{key}:{Path(str(where)).stem}"
    return key


def load_base(path: Optional[os.PathLike], user_overrides: Sequence[Tuple[str, Any]]) -> BaseConfig:
    """Read a base config file and apply the user's dotted overrides (validation comes with each run's config)."""
    from training.config import set_dotted

    values: Dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ProtocolError(f"base config {path} does not exist")
        values = yaml.safe_load(path.read_text()) or {}
    file_values = copy.deepcopy(values)
    values = copy.deepcopy(values)
    for dotted, value in user_overrides:
        set_dotted(values, dotted, copy.deepcopy(value))
    data = values.get("data") or {}
    source = DataSource(
        label=_source_label(data),
        dataset=str(data.get("dataset", "builtin")),
        data_dir=data.get("data_dir"),
        options=copy.deepcopy(data.get("dataset_options") or {}),
    )
    return BaseConfig(Path(path) if path is not None else None, values, source, file_values)


def builtin_cross_sources(base: DataSource) -> Tuple[DataSource, DataSource]:
    """The two disjoint stand-in sets cut from the built-in data set (see the module docstring)."""
    from glia_hf.data import SOURCES
    from glia_hf.data.builtin import source_path

    options = base.options_dict
    scenes = options.pop("scenes", None)
    if scenes is None:
        scenes = [s.scene for s in SOURCES if source_path(s) is not None]
    distortions = options.pop("distortions", None)
    structural = [d for d in STRUCTURAL_DISTORTIONS if distortions is None or d in distortions]
    photometric = [d for d in PHOTOMETRIC_DISTORTIONS if distortions is None or d in distortions]
    if len(scenes) < 4 or not structural or not photometric:
        raise ProtocolError("the built-in cross-data-set stand-in needs at least 4 scenes and both distortion families")
    halves = (list(scenes[0::2]), list(scenes[1::2]))
    result = []
    for name, chosen, family in (("structural", halves[0], structural), ("photometric", halves[1], photometric)):
        data_dir = None if base.data_dir is None else f"{base.data_dir}-cross-{name}"
        note = (f"builtin:{name} = {len(chosen)} scenes x {len(family)} {name} distortion types "
                f"({', '.join(family)})")
        result.append(DataSource(
            label=f"builtin:{name}", dataset=base.dataset, data_dir=data_dir,
            options={**options, "scenes": chosen, "distortions": list(family)}, note=note,
        ))
    return tuple(result)


# ------------------------------------------------------------------------------------------------ cells and runs


@dataclass
class Cell:
    """One cell of a table: a row key, a column key, the base config it trains from, and what defines it."""

    row: Tuple[Any, ...]
    column: Any
    base: BaseConfig
    overrides: Dict[str, Any]
    train_label: str
    test_label: Optional[str] = None  # cross-data-set cells: the other data set
    result_part: str = "test"  # "test": the split's own test part; "cross": the other data set


@dataclass
class Run:
    """One training run: one cell on one split."""

    cell: Cell
    split: int
    run_id: str
    run_dir: Path
    config: Dict[str, Any]  # the nested effective config written for the training loop
    config_path: Path

    @property
    def name(self) -> str:
        return self.run_id.rsplit("-", 1)[0]


@dataclass
class Plan:
    """A protocol expanded: its table, cells and runs, and what its caption needs."""

    table: str
    cells: List[Cell]
    runs: List[Run]
    out: Path
    splits: List[int]
    options: Dict[str, Any] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def unique_runs(self) -> List[Run]:
        seen, unique = set(), []
        for run in self.runs:
            if run.run_id not in seen:
                seen.add(run.run_id)
                unique.append(run)
        return unique


def _glia_cell(base: BaseConfig, row, column, **switches) -> Cell:
    overrides: Dict[str, Any] = {"model.method": "glia"}
    overrides.update({f"model.glia.{k}": v for k, v in switches.items()})
    return Cell(tuple(row), column, base, overrides, base.source.label)


def _cells_intra(bases: List[BaseConfig], options) -> Tuple[List[Cell], List[str]]:
    return [_glia_cell(b, ("glia",), b.source.label) for b in bases], []


def _cells_cross(bases: List[BaseConfig], options) -> Tuple[List[Cell], List[str]]:
    notes: List[str] = []
    if len(bases) >= 2:
        pairs = [(a, b, a.source, b.source) for a in bases for b in bases if a is not b]
    elif len(bases) == 1 and bases[0].source.is_builtin:
        first, second = builtin_cross_sources(bases[0].source)
        base = bases[0]
        pairs = [(base, base, first, second), (base, base, second, first)]
        notes.append(
            "Stand-in for two data sets: the built-in set cut into two sets with disjoint scenes and disjoint "
            f"distortion families; {first.note}; {second.note}."
        )
    else:
        raise ProtocolError(
            "cross needs two or more --base-config files (one per data set), or one base config of the built-in "
            "data set (then two disjoint parts of it stand in for two data sets)"
        )
    cells = []
    for train_base, _, train_source, test_source in pairs:
        overrides: Dict[str, Any] = {"model.method": "glia"}
        if train_source is not train_base.source:
            overrides.update(train_source.train_overrides())
        overrides.update(test_source.test_overrides())
        cells.append(Cell(("glia",), (train_source.label, test_source.label), train_base, overrides,
                          train_source.label, test_source.label, result_part="cross"))
    return cells, notes


def _cells_data_efficient(bases, options):
    cells = []
    for fraction in options.get("fractions") or DEFAULT_FRACTIONS:
        fraction = float(fraction)
        for b in bases:
            cell = _glia_cell(b, (fraction, "glia"), b.source.label)
            cell.overrides["data.train_fraction"] = fraction
            cells.append(cell)
    return cells, []


def _cells_components(bases, options):
    """Table 4: one cell per (GLR, LGF) row that is trained (rows in :data:`COMPONENT_SAME_AS` are not)."""
    cells = []
    for glr, lgf in COMPONENT_ROWS:
        if (glr, lgf) in COMPONENT_SAME_AS:
            continue
        for b in bases:
            cells.append(_glia_cell(b, (glr, lgf), b.source.label, use_lgf=lgf, use_glr=glr))
    return cells, []


def _cells_streams(bases, options):
    cells, notes = [], []
    for b in bases:
        backbone = b.model.get("backbone")
        side = backbone.get("image_size", 224) if isinstance(backbone, dict) else 224
        size = b.source.options.get("size") if b.source.is_builtin else None
        if size is not None and int(size) <= int(side):
            # A fragment grid as large as the whole image tiles it exactly: both streams are then the same picture.
            notes.append(f"Caution: the {b.source.label} images are {size} px, not larger than the {side} px model "
                         "input, so the detail and semantic streams show the same picture and the rows cannot differ.")
    for guidance, main in STREAM_ROWS:
        for b in bases:
            cells.append(_glia_cell(b, (guidance, main), b.source.label, guidance_stream=guidance, main_stream=main))
    return cells, notes


def _cells_methods(bases, options):
    methods = list(options.get("methods") or DEFAULT_METHODS)
    from training.config import METHODS

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ProtocolError(f"unknown method(s) {unknown}; known: {list(METHODS)}")
    cells = []
    for method in methods:
        for b in bases:
            cells.append(Cell((method,), b.source.label, b, {"model.method": method}, b.source.label))
    return cells, []


CELL_BUILDERS: Dict[str, Callable] = {
    "intra": _cells_intra,
    "cross": _cells_cross,
    "data_efficient": _cells_data_efficient,
    "ablation_components": _cells_components,
    "ablation_streams": _cells_streams,
    "methods": _cells_methods,
}

#: Keys a protocol sets itself; a user override of one of them is refused.
DEFINING_KEYS = {
    "intra": ("model.method",),
    "cross": ("model.method", "data.test_dataset", "data.test_data_dir", "data.test_dataset_options"),
    "data_efficient": ("model.method", "data.train_fraction"),
    "ablation_components": ("model.method", "model.glia.use_lgf", "model.glia.use_glr"),
    "ablation_streams": ("model.method", "model.glia.main_stream", "model.glia.guidance_stream"),
    "methods": ("model.method",),
}
ALWAYS_SET = ("data.splits", "output.dir", "data.splits_file")

#: Defaults of protocol runs that change what is written, not what is learnt; user overrides win.
OUTPUT_DEFAULTS = {
    "output.save_model": False,
    "output.trackers": ["csv"],
    "output.keep_final_state": False,
}


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in str(text)).strip("-")


def _hash(value: Any, length: int = 8) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _get_dotted(values: Dict[str, Any], dotted: str, default=None):
    target: Any = values
    for part in dotted.split("."):
        if not isinstance(target, dict) or part not in target:
            return default
        target = target[part]
    return target


def _glia_defaults() -> Dict[str, Any]:
    try:
        from glia_hf.configuration_glia import GLIAConfig

        config = GLIAConfig()
        return {key: getattr(config, key) for key in GLIA_SWITCHES}
    except Exception:  # pragma: no cover - the model package is part of this repository
        return {"use_lgf": True, "use_glr": True, "main_stream": "detail", "guidance_stream": "semantic"}


#: Config fields that change how a run is executed, not what it learns; left out of a run's identity.
RUN_CONTROL_KEYS = (("data", "splits_file"), ("data", "num_workers"), ("data", "cpu_threads"))


def _drop_nulls(value):
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    return value


def run_identity(config) -> Dict[str, Any]:
    """What decides a run's results: the effective config without its outputs, Hub settings and run-control fields,
    with the GLIA switches' defaults filled in. Null values are left out, so that a field added to the config schema
    later (optional, null by default) does not change the identity of runs that already finished."""
    values = config.to_dict()
    values.pop("output", None)
    values.pop("hub", None)
    for section, key in RUN_CONTROL_KEYS:
        values.get(section, {}).pop(key, None)
    if values["model"]["method"] == "glia":
        values["model"]["glia"] = {**_glia_defaults(), **values["model"]["glia"]}
    if values["data"].get("train_fraction") is None:
        values["data"].pop("train_fraction_of", None)  # no effect without a fraction
    values.get("eval", {}).pop("logistic", None)  # deprecated and ignored
    return _drop_nulls(values)


def run_slug(cell: Cell, identity: Dict[str, Any]) -> str:
    """A readable run name made from what the run *is* (not from which table asked for it), so that the same run
    requested by two tables gets the same directory: data set, method, non-default GLIA switches, training fraction
    and cross-data-set test set."""
    parts = [cell.train_label, identity["model"]["method"]]
    if identity["model"]["method"] == "glia":
        glia, defaults = identity["model"]["glia"], _glia_defaults()
        if (glia["use_lgf"], glia["use_glr"]) != (defaults["use_lgf"], defaults["use_glr"]):
            parts.append(f"lgf{int(bool(glia['use_lgf']))}-glr{int(bool(glia['use_glr']))}")
        if (glia["guidance_stream"], glia["main_stream"]) != (defaults["guidance_stream"], defaults["main_stream"]):
            parts.append(f"guide-{glia['guidance_stream']}-main-{glia['main_stream']}")
    if identity["data"].get("train_fraction") is not None:
        parts.append(f"frac{identity['data']['train_fraction']:g}")
        if identity["data"].get("train_fraction_of") == "train_split":
            parts.append("of-train")
    if cell.test_label:
        parts.append(f"to-{cell.test_label}")
    return _slug("-".join(str(p) for p in parts))


_SPLIT_DEFINING = ("dataset", "data_dir", "dataset_options", "num_splits", "split_seed", "train_ratio")


def _keeps_base_splits_file(file_values: Dict[str, Any], values: Dict[str, Any]) -> bool:
    data_file, data_run = file_values.get("data") or {}, values.get("data") or {}
    if not data_file.get("splits_file"):
        return False
    return all(data_file.get(key) == data_run.get(key) for key in _SPLIT_DEFINING)


def _splits_file(out: Path, config) -> str:
    """One splits file per data set (and split recipe), shared by every run of every protocol under ``out``."""
    data = config.data
    key = {"dataset": _canonical(data.dataset), "data_dir": data.data_dir, "options": data.dataset_options,
           "num_splits": data.num_splits, "seed": data.split_seed, "train_ratio": data.train_ratio}
    return str(out / "splits" / f"{_slug(_canonical(data.dataset))}-{_hash(key)}.json")


def expand(
    table: str,
    base_configs: Sequence[Optional[os.PathLike]],
    *,
    splits: Sequence[int] = (0, 1, 2),
    out: os.PathLike = "outputs/protocols",
    overrides: Sequence[str] = (),
    fractions: Optional[Sequence[float]] = None,
    methods: Optional[Sequence[str]] = None,
) -> Plan:
    """Expand protocol ``table`` into its cells and runs without training anything.

    Args:
        table: one of :data:`TABLES`.
        base_configs: one config file per data set (``None``: the training loop's defaults).
        splits: split indices to run.
        out: output folder of the protocol (runs, splits files, tables).
        overrides: the user's ``--section.key value`` arguments, applied to every run.
        fractions: ``data_efficient`` only: training fractions (default 0.2, 0.4, 0.6).
        methods: ``methods`` only: which methods (default all six of Table 6).
    """
    from training.config import ConfigError, config_from_dict, parse_overrides, set_dotted

    if table not in TABLES:
        raise ProtocolError(f"unknown protocol {table!r}; known: {list(TABLES)}")
    splits = [int(s) for s in splits]
    if not splits or len(set(splits)) != len(splits) or min(splits) < 0:
        raise ProtocolError(f"splits must be distinct non-negative indices, got {splits}")
    try:
        user = parse_overrides(list(overrides))
    except ConfigError as error:
        raise ProtocolError(str(error)) from error
    refused = [key for key, _ in user if key in DEFINING_KEYS[table] or key in ALWAYS_SET]
    if refused:
        raise ProtocolError(
            f"override(s) {refused} set what the {table} protocol itself varies; use --splits / --out, or a base "
            "config, instead"
        )
    out = Path(out)
    bases = [load_base(path, user) for path in (base_configs or [None])]
    labels = [b.source.label for b in bases]
    if len(set(labels)) != len(labels):
        raise ProtocolError(f"two base configs use the same data set {labels}; give each data set once")
    user_keys = {key for key, _ in user}
    options = {"fractions": fractions, "methods": methods}
    cells, notes = CELL_BUILDERS[table](bases, options)

    runs: List[Run] = []
    for cell in cells:
        for split in splits:
            values = copy.deepcopy(cell.base.values)
            for key, value in OUTPUT_DEFAULTS.items():
                if key not in user_keys:
                    set_dotted(values, key, copy.deepcopy(value))
            for key, value in cell.overrides.items():
                set_dotted(values, key, copy.deepcopy(value))
            set_dotted(values, "data.splits", [split])
            try:
                config = config_from_dict(copy.deepcopy(values))
            except ConfigError as error:
                raise ProtocolError(f"{table} cell {cell.row} x {cell.column}, split {split}: {error}") from error
            if split >= config.data.num_splits:
                raise ProtocolError(f"split {split} does not exist: data.num_splits is {config.data.num_splits}")
            identity = run_identity(config)
            run_id = f"{run_slug(cell, identity)}-s{split}-{_hash(identity)}"
            run_dir = out / "runs" / run_id
            # A splits file named by the base config file is kept while the run reads that file's data set with its
            # split recipe; when an override changes either (or the file names none), the protocol's shared file.
            if not _keeps_base_splits_file(cell.base.file_values, values):
                set_dotted(values, "data.splits_file", _splits_file(out, config))
            set_dotted(values, "output.dir", str(run_dir))
            values.setdefault("output", {})["run_name"] = run_id
            runs.append(Run(cell, split, run_id, run_dir, values, out / "configs" / f"{run_id}.yaml"))
    return Plan(table, cells, runs, out, splits, options, notes)


# ------------------------------------------------------------------------------------------------ results files


def find_results_file(run_dir: Path) -> Optional[Path]:
    """The training loop's results JSON in a run directory, or ``None`` if the run has not finished."""
    run_dir = Path(run_dir)
    for name in ("results.json",):
        if (run_dir / name).is_file():
            return run_dir / name
    return None


class StaleResultsError(ProtocolError):
    """A finished run's results file predates the current results schema."""


def load_results(path: Path) -> Dict[str, Any]:
    """Read a results file; raise :class:`StaleResultsError` unless it has the current ``schema_version``."""
    results = json.loads(Path(path).read_text())
    version = results.get("schema_version", 1)
    if version != reporting.RESULTS_SCHEMA_VERSION:
        raise StaleResultsError(
            f"{path} has results schema {version}, not {reporting.RESULTS_SCHEMA_VERSION} (before version 2 "
            f"\"plcc\" was the raw PLCC): delete {Path(path).parent} to train it again, or use another --out"
        )
    return results


def stale_runs(plan: Plan) -> List[Run]:
    """The plan's distinct runs whose results file exists but predates the current results schema."""
    stale = []
    for run in plan.unique_runs():
        path = find_results_file(run.run_dir)
        if path is None:
            continue
        try:
            load_results(path)
        except StaleResultsError:
            stale.append(run)
    return stale


def _metrics_of(entry: Dict[str, Any]) -> Dict[str, float]:
    """The numbers of one split entry; a metric written as null (a NaN, which JSON cannot hold) is NaN again, so
    that the table shows it instead of failing on a missing key."""
    from eval.metrics import RESULT_KEYS

    metrics = {k: float(v) for k, v in entry.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    metrics.update({k: float("nan") for k in RESULT_KEYS if k in entry and entry[k] is None})
    return metrics


def read_split_result(run_dir: Path, split: int, part: str = "test") -> Optional[Dict[str, Any]]:
    """The metrics of one split of a finished run, ``{"split": k, "srcc": ..., "plcc": ...}``; ``part="cross"``
    reads the results on the cross-data-set test set. ``None`` if the run has no results yet."""
    path = find_results_file(run_dir)
    if path is None:
        return None
    results = load_results(path)
    for entry in _split_entries(results):
        if int(entry.get("split", -1)) != int(split):
            continue
        metrics = _pick_part(entry, part)
        if metrics is None:
            raise ProtocolError(f"{path}: split {split} has no {part!r} results")
        return {"split": int(split), **_metrics_of(metrics)}
    return None


def _split_entries(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    entries = results.get("splits")
    if isinstance(entries, dict):
        return [{"split": int(k), **v} for k, v in entries.items()]
    return list(entries or [])


def _pick_part(entry: Dict[str, Any], part: str) -> Optional[Dict[str, Any]]:
    if part == "test":
        for key in ("test", "metrics"):
            if isinstance(entry.get(key), dict):
                return entry[key]
        return entry if "srcc" in entry else None
    cross = entry.get("cross")
    if not isinstance(cross, dict) or not cross:
        return None
    if len(cross) != 1:
        raise ProtocolError(f"split {entry.get('split')} was tested on several other data sets: {sorted(cross)}")
    return next(iter(cross.values()))


def read_trainable_parameters(run_dir: Path) -> Optional[int]:
    path = find_results_file(run_dir)
    if path is None:
        return None
    results = load_results(path)
    for key in ("trainable_parameters", "trainable_params", "num_trainable_parameters"):
        if isinstance(results.get(key), int):
            return results[key]
    params = results.get("parameters")
    if isinstance(params, dict) and isinstance(params.get("trainable"), int):
        return params["trainable"]
    return None


def read_run_record(run_dir: Path) -> Dict[str, Any]:
    path = Path(run_dir) / RUN_RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


# ------------------------------------------------------------------------------------------------ running


def _launch_command(config_path: Path, launcher: str, launch_args: Sequence[str]) -> List[str]:
    if launcher == "accelerate":
        return [sys.executable, "-m", "accelerate.commands.launch", *launch_args, str(TRAIN_SCRIPT),
                "--config", str(config_path)]
    return [sys.executable, str(TRAIN_SCRIPT), "--config", str(config_path)]


def _in_process_entry() -> Optional[Callable]:
    try:
        from training import train as module
    except Exception:  # pragma: no cover - the loop is imported lazily
        return None
    return getattr(module, "main", None)


def execute_run(run: Run, launcher: str = "inprocess", launch_args: Sequence[str] = ("--cpu", "--num_processes", "1"),
                log_dir: Optional[Path] = None) -> Dict[str, Any]:
    """Train one run unless its results exist; return its record (status, wall time, command)."""
    existing = find_results_file(run.run_dir)
    if existing is not None:
        load_results(existing)  # a run from before the current results schema is refused, not reused
        record = read_run_record(run.run_dir)
        return {**record, "status": "cached"}
    run.config_path.parent.mkdir(parents=True, exist_ok=True)
    run.config_path.write_text(yaml.safe_dump(run.config, sort_keys=False))
    resume = (run.run_dir / "config.yaml").is_file()  # an interrupted run: the loop continues it
    extra = ["--resume"] if resume else []
    started = time.perf_counter()
    if launcher == "inprocess":
        entry = _in_process_entry()
        if entry is None:
            raise ProtocolError("training/train.py has no main(argv) to call in-process; use --launcher subprocess")
        command = ["training/train.py", "--config", str(run.config_path), *extra]
        status = "done"
        try:
            payload = entry(["--config", str(run.config_path), *extra])  # the results payload
            if isinstance(payload, dict) and payload.get("stopped"):
                status = "failed (stopped before the end)"
        except SystemExit as error:
            if error.code not in (None, 0):
                status = f"failed (exit {error.code})"
        except Exception as error:  # keep going with the other runs; the failure is reported
            logger.exception("run %s failed", run.run_id)
            status = f"failed ({type(error).__name__}: {error})"
    else:
        command = _launch_command(run.config_path, "accelerate" if launcher == "accelerate" else "python",
                                  launch_args) + extra
        log_path = (log_dir or run.config_path.parent) / f"{run.run_id}.log"
        with open(log_path, "w") as log:
            code = subprocess.call(command, cwd=str(REPO_ROOT), stdout=log, stderr=subprocess.STDOUT)
        status = "done" if code == 0 else f"failed (exit {code}; log {log_path})"
    wall = time.perf_counter() - started
    record = {"run_id": run.run_id, "split": run.split, "wall_s": round(wall, 1), "command": shlex.join(command),
              "resumed": resume}
    if status == "done" and find_results_file(run.run_dir) is None:
        status = "failed (no results file written)"
    if status == "done":
        (run.run_dir / RUN_RECORD).write_text(json.dumps(record, indent=2))
    return {**record, "status": status}


def execute(plan: Plan, launcher: str = "inprocess", launch_args: Sequence[str] = ("--cpu", "--num_processes", "1"),
            progress: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """Run every not-yet-finished run of a plan, in order, each once."""
    records = []
    unique = plan.unique_runs()
    for i, run in enumerate(unique, 1):
        record = execute_run(run, launcher, launch_args)
        records.append(record)
        wall = record.get("wall_s")
        progress(f"[{i}/{len(unique)}] {run.run_id}: {record['status']}"
                 + (f" ({wall:.0f} s)" if isinstance(wall, (int, float)) else ""))
    return records


# ------------------------------------------------------------------------------------------------ tables


def describe_backbone(backbone: Any) -> str:
    """A caption-ready name of the backbone: its Hub id / directory, or the shape of a randomly initialised ViT."""
    if isinstance(backbone, dict):
        parts = []
        for key, text in (("hidden_size", "hidden {}"), ("num_hidden_layers", "{} blocks"),
                          ("num_attention_heads", "{} heads"), ("patch_size", "patch {}"), ("image_size", "{} px")):
            if key in backbone:
                parts.append(text.format(backbone[key]))
        return "randomly initialised ViT" + (f" ({', '.join(parts)})" if parts else "")
    return str(backbone)


def _backbone_of(cell: Cell) -> Any:
    backbone = _get_dotted(cell.base.values, "model.backbone")
    if backbone is None:
        from training.config import ModelConfig

        backbone = ModelConfig().backbone
    return backbone


def table_label(plan: Plan) -> Optional[str]:
    """"random-initialised backbone, pseudo-MOS" when every run has a random backbone and uses the built-in set;
    the matching half of it when only one of the two holds; ``None`` otherwise."""
    random_backbone = all(isinstance(_backbone_of(c), dict) for c in plan.cells)
    builtin = all(_canonical(_get_dotted(r.config, "data.dataset", "builtin")) == "builtin" for r in plan.runs)
    if random_backbone and builtin:
        return RANDOM_PSEUDO_LABEL
    if random_backbone:
        return "random-initialised backbone"
    if builtin:
        return "pseudo-MOS"
    return None


def _plan_backbone(plan: Plan) -> str:
    names = []
    for cell in plan.cells:
        name = describe_backbone(_backbone_of(cell))
        if name not in names:
            names.append(name)
    return "; ".join(names)


def collect(plan: Plan) -> Dict[int, List[Dict[str, Any]]]:
    """Per-split results of each cell (by the cell's index in ``plan.cells``); missing runs are left out."""
    by_cell: Dict[int, List[Dict[str, Any]]] = {i: [] for i in range(len(plan.cells))}
    index = {id(c): i for i, c in enumerate(plan.cells)}
    for run in plan.runs:
        result = read_split_result(run.run_dir, run.split, run.cell.result_part)
        if result is not None:
            by_cell[index[id(run.cell)]].append(result)
    return by_cell


def build_table(plan: Plan, metrics: Sequence[str] = ("srcc", "plcc")) -> reporting.Table:
    """Assemble the plan's table in the paper's layout from whatever results exist."""
    results = collect(plan)
    backbone = _plan_backbone(plan)
    label = table_label(plan)
    _, title = TABLE_FILES[plan.table]
    note = " ".join(plan.notes + describe_setup(plan)) or None
    cells = plan.cells
    if plan.table == "intra":
        nested: Dict[str, Dict[str, list]] = {}
        for i, c in enumerate(cells):
            nested.setdefault(METHOD_LABELS[c.row[0]], {})[c.column] = results[i]
        table = reporting.intra_dataset_table(nested, backbone=backbone, metrics=metrics, label=label, title=title)
    elif plan.table == "cross":
        nested = {}
        for i, c in enumerate(cells):
            nested.setdefault(METHOD_LABELS[c.row[0]], {})[tuple(c.column)] = results[i]
        # Paper Table 2 reports SRCC only.
        table = reporting.cross_dataset_table(nested, backbone=backbone, metrics=("srcc",), label=label, title=title)
    elif plan.table == "data_efficient":
        nested = {}
        for i, c in enumerate(cells):
            fraction, method = c.row
            nested.setdefault(fraction, {}).setdefault(METHOD_LABELS[method], {})[c.column] = results[i]
        fraction_of, train_ratio = _fraction_reading(plan)
        table = reporting.data_efficiency_table(nested, backbone=backbone, metrics=metrics, label=label, title=title,
                                                fraction_of=fraction_of, train_ratio=train_ratio)
    elif plan.table == "ablation_components":
        table = _components_table(plan, results, backbone, label, title)
        note = " ".join(([note] if note else []) + [COMPONENTS_NOTE])
    elif plan.table == "ablation_streams":
        settings = ("Guidance", "Main")
        description = ("Ablation of the two streams: which one guides (prior) and which one is scored (main); "
                       "semantic = the resized whole image, detail = the fragment grid.")
        rows: Dict[tuple, Dict[str, list]] = {}
        for i, c in enumerate(cells):
            rows.setdefault(tuple(c.row), {})[c.column] = results[i]
        table = reporting.ablation_table(
            [(dict(zip(settings, key)), by_col) for key, by_col in rows.items()],
            backbone=backbone, settings=settings, metrics=metrics, label=label, title=title, description=description,
        )
    elif plan.table == "methods":
        nested, params = {}, {}
        for i, c in enumerate(cells):
            name = METHOD_LABELS[c.row[0]]
            nested.setdefault(name, {})[c.column] = results[i]
            if name not in params:
                params[name] = _trainable_parameters(plan, c)
        table = reporting.finetune_methods_table(nested, backbone=backbone, metrics=metrics, label=label, title=title,
                                                 params={m: p or 0 for m, p in params.items()})
        # A count that is neither in a results file nor computable is shown as missing, not as 0.
        table.rows = [(labels, [None if params[labels[0]] is None else values[0]] + values[1:])
                      for labels, values in table.rows]
        columns = list(dict.fromkeys(c.column for c in cells))
        quoted = [LODA_TABLE6_QUOTED.get(_canonical(column), {}).get(m) for column in columns for m in metrics]
        table.add_row([LODA_ROW_LABEL], [LODA_PARAMS_QUOTED] + quoted)
        note = " ".join(([note] if note else []) + [METHODS_NOTE])
    else:  # pragma: no cover - guarded by expand
        raise ProtocolError(plan.table)
    if note:
        table.caption += f" {note}"
    return table


def _components_table(plan: Plan, results, backbone, label, title) -> reporting.Table:
    """Table 4 in the paper's layout: columns GLR, LGF, then PLCC and SRCC per data set; rows in
    :data:`COMPONENT_ROWS` order; a row in :data:`COMPONENT_SAME_AS` shows :data:`SAME_AS_NO_INTERACTION`."""
    by_row: Dict[tuple, Dict[str, list]] = {}
    for i, c in enumerate(plan.cells):
        by_row.setdefault(tuple(c.row), {})[c.column] = results[i]
    ours = COMPONENT_ROWS[-1]
    items = []
    for row in COMPONENT_ROWS:
        values = {name: on for name, on in zip(COMPONENT_SETTINGS, row)}
        if row == ours:
            values[COMPONENT_SETTINGS[-1]] = f"{reporting.CROSS if not row[-1] else reporting.CHECK} (our addition)"
        items.append((values, by_row.get(row, {})))
    table = reporting.ablation_table(
        items, backbone=backbone, settings=COMPONENT_SETTINGS, metrics=COMPONENT_METRICS, label=label, title=title,
        description="Ablation of the GLIA block's components (GLR: Global-Local Refine, paper Eq. 4; LGF: "
                    "Local-Global Fusion, Eq. 3).",
    )
    for index, row in enumerate(COMPONENT_ROWS):
        if row in COMPONENT_SAME_AS:
            labels, values = table.rows[index]
            table.rows[index] = (labels, [SAME_AS_NO_INTERACTION] * len(values))
    return table


def _fraction_reading(plan: Plan) -> Tuple[str, float]:
    """``(data.train_fraction_of, data.train_ratio)`` shared by the plan's runs (an error if they differ)."""
    from training.config import DataConfig

    readings = {(_get_dotted(r.config, "data.train_fraction_of", DataConfig.train_fraction_of),
                 float(_get_dotted(r.config, "data.train_ratio", DataConfig.train_ratio))) for r in plan.runs}
    if len(readings) != 1:
        raise ProtocolError(f"the runs of one table use different data.train_fraction_of / train_ratio: "
                            f"{sorted(readings)}")
    return readings.pop()


def describe_setup(plan: Plan) -> List[str]:
    """Caption notes read from the run configs: a data set read with non-default options (a subset of the built-in
    set, say) and the training recipe (epochs, batch, learning rate, test-time views)."""
    notes = []
    cross = plan.table == "cross"
    for cell in plan.cells:
        options = cell.base.source.options
        text = f"Data set {cell.base.source.label} read with options {json.dumps(options, sort_keys=True)}."
        if options and not cross and text not in notes:
            notes.append(text)
    if cross:
        for cell in plan.cells:
            options = cell.base.source.options
            text = (f"Both parts cut from the built-in set read with options {json.dumps(options, sort_keys=True)}."
                    if cell.base.source.is_builtin else None)
            if options and text and text not in notes:
                notes.append(text)
    recipes = []
    for run in plan.runs:
        optim, evaluation = run.config.get("optim") or {}, run.config.get("eval") or {}
        from training.config import EvalConfig, OptimConfig

        epochs = optim.get("epochs", OptimConfig.epochs)
        batch = optim.get("batch_size", OptimConfig.batch_size)
        lr = optim.get("lr", OptimConfig.lr)
        views = evaluation.get("num_views", EvalConfig.num_views)
        recipe = f"Recipe: {epochs} epoch(s), batch {batch}, lr {lr:g}, {views} test view(s) per image."
        if recipe not in recipes:
            recipes.append(recipe)
    return notes + recipes + describe_views_and_resolution(plan)


def describe_views_and_resolution(plan: Plan) -> List[str]:
    """Caption note: training views per image (``data.train_views``) and image resolution
    (``data.resize_short_side``) of the runs, per data set when they differ between data sets."""
    from training.config import DataConfig, describe_resolution

    settings: Dict[str, List[str]] = {}
    for run in plan.runs:
        data = run.config.get("data") or {}
        text = (f"{data.get('train_views', DataConfig.train_views)} training view(s) per image per epoch, images at "
                + describe_resolution(data.get("resize_short_side"),
                                      data.get("resize_resample", DataConfig.resize_resample)))
        datasets = settings.setdefault(text, [])
        name = str(data.get("dataset", DataConfig.dataset))
        if name not in datasets:
            datasets.append(name)
    if len(settings) == 1:
        return [f"Training: {next(iter(settings))}."]
    return [f"Training on {', '.join(datasets)}: {text}." for text, datasets in settings.items()]


def _trainable_parameters(plan: Plan, cell: Cell) -> Optional[int]:
    """The trainable parameter count of a cell's model: from a finished run's results, else counted on a model
    built on the meta device (no weights allocated or downloaded), else ``None``."""
    runs = [run for run in plan.runs if run.cell is cell]
    for run in runs:
        count = read_trainable_parameters(run.run_dir)
        if count is not None:
            return count
    return count_trainable_parameters(runs[0].config) if runs else None


def count_trainable_parameters(values: Dict[str, Any]) -> Optional[int]:
    """Count the trainable parameters of the model a run config describes, without training or allocating it."""
    try:
        import torch
        from transformers import ViTConfig

        from glia_hf.methods import build_model, count_parameters

        model = values.get("model") or {}
        backbone = model.get("backbone", "google/vit-base-patch16-224")
        backbone = ViTConfig(**backbone) if isinstance(backbone, dict) else backbone
        with torch.device("meta"):
            built = build_model(model.get("method", "glia"), backbone, dict(model.get("method_options") or {}) or None,
                                **dict(model.get("glia") or {}))
        return int(count_parameters(built)[0])
    except Exception as error:  # e.g. a Hub backbone that is not cached, offline
        logger.info("could not count trainable parameters (%s)", error)
        return None


def write_outputs(plan: Plan, records: Sequence[Dict[str, Any]] = ()) -> Tuple[Path, Path]:
    """Write the table (markdown + CSV) and a JSON index of the runs behind it."""
    stem, _ = TABLE_FILES[plan.table]
    table = build_table(plan)
    md_path, csv_path = reporting.write_table(table, plan.out / stem)
    index = []
    for run in plan.runs:
        record = read_run_record(run.run_dir)
        index.append({"run_id": run.run_id, "cell": [list(map(str, run.cell.row)), str(run.cell.column)],
                      "split": run.split, "run_dir": str(run.run_dir),
                      "finished": find_results_file(run.run_dir) is not None, "wall_s": record.get("wall_s")})
    (plan.out / f"{stem}.runs.json").write_text(json.dumps(index, indent=2))
    return md_path, csv_path


# ------------------------------------------------------------------------------------------------ command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m eval.protocols", allow_abbrev=False,
        description="Run one of the paper's experiments (Tables 1-6) through training/train.py and write its table.",
        epilog="Any further --section.key value arguments override every run's config, e.g. --optim.epochs 2.",
    )
    parser.add_argument("table", choices=TABLES)
    parser.add_argument("--base-config", nargs="+", action="extend", default=None, metavar="YAML",
                        help="one training config per data set, listed after one flag or each after its own "
                             "(default: the training loop's defaults)")
    parser.add_argument("--splits", nargs="+", type=int, default=[0, 1, 2], metavar="K")
    parser.add_argument("--out", default="outputs/protocols", help="protocol folder: runs, splits files, tables")
    parser.add_argument("--fractions", nargs="+", type=float, default=None, help="data_efficient: training fractions")
    parser.add_argument("--methods", nargs="+", default=None, help="methods: which methods (default all six)")
    parser.add_argument("--launcher", choices=("inprocess", "subprocess", "accelerate"), default="inprocess",
                        help="how each run is started: in this process through training.train.main, as "
                             "'python training/train.py', or through 'accelerate launch' (with --launch-args)")
    parser.add_argument("--launch-args", default="--cpu --num_processes 1",
                        help="arguments of 'accelerate launch' for --launcher accelerate")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    parser.add_argument("--tables-only", action="store_true", help="do not train; assemble the table from what exists")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        plan = expand(args.table, args.base_config or [None], splits=args.splits, out=args.out, overrides=rest,
                      fractions=args.fractions, methods=args.methods)
    except ProtocolError as error:
        parser.error(str(error))
    unique = plan.unique_runs()
    print(f"{args.table}: {len(plan.cells)} cells x {len(plan.splits)} splits = {len(plan.runs)} runs "
          f"({len(unique)} distinct)")
    stale = {run.run_id for run in stale_runs(plan)}
    if args.dry_run:
        for run in unique:
            state = ("stale results schema: delete to re-run" if run.run_id in stale
                     else "done" if find_results_file(run.run_dir) else "to run")
            print(f"  {run.run_id}  [{state}]  {json.dumps(run.cell.overrides, default=str)}")
        return 0
    if stale:
        for run in plan.unique_runs():
            if run.run_id in stale:
                print(f"error: {run.run_dir} holds results from before results schema "
                      f"{reporting.RESULTS_SCHEMA_VERSION} (PLCC was raw then); delete it to train it again, or "
                      "use another --out", file=sys.stderr)
        return 2
    started = time.perf_counter()
    records = [] if args.tables_only else execute(plan, args.launcher, shlex.split(args.launch_args))
    md_path, csv_path = write_outputs(plan, records)
    failed = [r for r in records if not str(r.get("status", "")).startswith(("done", "cached"))]
    trained = sum(r.get("wall_s", 0) or 0 for r in records if r.get("status") == "done")
    behind = sum(read_run_record(run.run_dir).get("wall_s", 0) or 0 for run in plan.unique_runs())
    print(md_path.read_text())
    print(f"wrote {md_path} and {csv_path}; {len(records) - len(failed)} of {len(records)} runs available; "
          f"trained by this command: {trained:.0f} s; all runs behind the table: {behind:.0f} s; "
          f"command wall time {time.perf_counter() - started:.0f} s")
    for record in failed:
        print(f"FAILED {record.get('run_id')}: {record.get('status')}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
