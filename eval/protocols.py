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
                                   off is the no-interaction model, printed, not trained; see
                                   :data:`eval.protocol_tables.COMPONENTS_NOTE`)
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
label "randomly initialised backbone, pseudo-MOS" when the backbone is randomly initialised and the data set is the
built-in pseudo-labelled one (both read from the configs).

Adding a table
--------------
A table is one :class:`Protocol`: its name on the command line, its output file stem and title, how its cells are
made from the base configs, the config keys that define a cell (a user override of one is refused), and how its
table is laid out from the cells' per-split results. :func:`register_protocol` adds it; the paper's six are
registered in :mod:`eval.protocol_tables`, which is also where their layouts, row orders and notes live.

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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import yaml

from eval import reporting
from eval.protocol_captions import describe_setup, get_dotted, plan_backbone, table_label
# The runs on disk, re-exported here so that the protocol API is one module.
from eval.protocol_runs import (RUN_RECORD, ProtocolError, StaleResultsError, collect, execute, execute_run,
                                find_results_file, load_results, read_run_record, read_split_result,
                                read_trainable_parameters, stale_runs)
from glia_hf.configuration_glia import GLIAConfig
from glia_hf.data.scales import canonical_name
from training.config import EXECUTION_FIELDS, ConfigError, config_from_dict, parse_overrides, set_dotted

logger = logging.getLogger("eval.protocols")

#: The GLIA switches whose defaults are filled in before hashing, so that "default" and "explicitly default" match.
GLIA_SWITCHES = ("use_lgf", "use_glr", "main_stream", "guidance_stream")

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
        return canonical_name(self.dataset) == "builtin"


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
    key = canonical_name(name)
    if key in ("csv", "pyiqa"):
        options = data.get("dataset_options") or {}
        if options.get("name"):
            return str(options["name"])
        where = data.get("data_dir") or options.get("meta_info_file") or key
        return f"{key}:{Path(str(where)).stem}"
    return key


def load_base(path: Optional[os.PathLike], user_overrides: Sequence[Tuple[str, Any]]) -> BaseConfig:
    """Read a base config file and apply the user's dotted overrides (validation comes with each run's config)."""
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


# ------------------------------------------------------------------------------------------------ protocols


@dataclass(frozen=True)
class TableContext:
    """What every table's caption needs, read from the plan: its title, the backbone in words, the results label
    (see :func:`table_label`) and the metrics to show."""

    title: str
    backbone: str
    label: Optional[str]
    metrics: Tuple[str, ...]

    def layout(self, metrics: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """Keyword arguments of :mod:`eval.reporting`'s table layouts; ``metrics`` overrides the plan's."""
        return {"backbone": self.backbone, "label": self.label, "title": self.title,
                "metrics": tuple(metrics if metrics is not None else self.metrics)}


@dataclass(frozen=True)
class Protocol:
    """One table as a protocol.

    Attributes:
        name: its name on the command line (``python -m eval.protocols NAME``).
        file_stem: its output files, ``<out>/<file_stem>.md`` / ``.csv`` / ``.runs.json``.
        title: the table's title, e.g. ``"Table 4"``.
        build_cells: ``(bases, options) -> (cells, notes)``: one :class:`Cell` per row x data-set column, from the
            base configs (one per data set) and the command line's options (``{"fractions": ..., "methods": ...}``);
            notes go into the caption.
        build_table: ``(plan, results, context) -> reporting.Table``: the layout, from ``results`` (the per-split
            results of each cell, by the cell's index in ``plan.cells``) and :class:`TableContext`.
        defining_keys: the config keys its cells set; a user override of one is refused, since it would silently
            change what the table claims to show.
        note: a fixed note at the end of the caption.
    """

    name: str
    file_stem: str
    title: str
    build_cells: Callable[[List[BaseConfig], Dict[str, Any]], Tuple[List[Cell], List[str]]]
    build_table: Callable[[Plan, Dict[int, List[Dict[str, Any]]], TableContext], reporting.Table]
    defining_keys: Tuple[str, ...] = ("model.method",)
    note: Optional[str] = None


_PROTOCOLS: Dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    """Add a table to ``python -m eval.protocols``. A name or file stem already taken is an error."""
    for other in _PROTOCOLS.values():
        if protocol.name == other.name or protocol.file_stem == other.file_stem:
            raise ValueError(f"protocol {protocol.name!r} (file {protocol.file_stem!r}) clashes with the registered "
                             f"{other.name!r} (file {other.file_stem!r}); choose another name and file stem")
    _PROTOCOLS[protocol.name] = protocol
    return protocol


def registered_protocols() -> Dict[str, Protocol]:
    """Every registered protocol by name, the paper's six (:mod:`eval.protocol_tables`) first."""
    import eval.protocol_tables  # noqa: F401  (registers the paper's tables on first use)

    return dict(_PROTOCOLS)


def get_protocol(name: str) -> Protocol:
    """The protocol registered as ``name``; an unknown name is a :class:`ProtocolError` listing the known ones."""
    protocols = registered_protocols()
    if name not in protocols:
        raise ProtocolError(f"unknown protocol {name!r}; known: {list(protocols)}")
    return protocols[name]


def glia_cell(base: BaseConfig, row, column, **switches) -> Cell:
    """A cell that trains GLIA with the given GLIA switches (``use_lgf=False``, ``main_stream="semantic"``...)."""
    overrides: Dict[str, Any] = {"model.method": "glia"}
    overrides.update({f"model.glia.{k}": v for k, v in switches.items()})
    return Cell(tuple(row), column, base, overrides, base.source.label)


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


def _glia_defaults() -> Dict[str, Any]:
    config = GLIAConfig()
    return {key: getattr(config, key) for key in GLIA_SWITCHES}


def _drop_nulls(value):
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    return value


def run_identity(config) -> Dict[str, Any]:
    """What decides a run's results: the effective config without its outputs, Hub settings, execution fields
    (:data:`training.config.EXECUTION_FIELDS`) and splits file, with the GLIA switches' defaults filled in. The
    splits file is left out because the protocol names it itself, from the split recipe that the identity holds
    (data set, ``num_splits``, ``split_seed``, ``train_ratio``; see :func:`_splits_file`). Null values are left out,
    so that a field added to the config schema later (optional, null by default) does not change the identity of
    runs that already finished."""
    values = config.to_dict()
    values.pop("output", None)
    values.pop("hub", None)
    for section, key in EXECUTION_FIELDS + (("data", "splits_file"),):
        values.get(section, {}).pop(key, None)
    if values["model"]["method"] == "glia":
        values["model"]["glia"] = {**_glia_defaults(), **values["model"]["glia"]}
    if values["data"].get("train_fraction") is None:
        values["data"].pop("train_fraction_of", None)  # no effect without a fraction
    if values["data"].get("semantic_cache_dtype") == "fp32":
        values["data"].pop("semantic_cache_dtype")  # an fp32 cache computes what no cache does; bf16 tokens do not
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
    key = {"dataset": canonical_name(data.dataset), "data_dir": data.data_dir, "options": data.dataset_options,
           "num_splits": data.num_splits, "seed": data.split_seed, "train_ratio": data.train_ratio}
    return str(out / "splits" / f"{_slug(canonical_name(data.dataset))}-{_hash(key)}.json")


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
        table: the name of a registered :class:`Protocol` (the paper's: see the module docstring).
        base_configs: one config file per data set (``None``: the training loop's defaults).
        splits: split indices to run.
        out: output folder of the protocol (runs, splits files, tables).
        overrides: the user's ``--section.key value`` arguments, applied to every run.
        fractions: ``data_efficient`` only: training fractions (default 0.2, 0.4, 0.6).
        methods: ``methods`` only: which methods (default: the paper's Table 6 methods, then every other method
            registered with :mod:`glia_hf.methods`).
    """
    protocol = get_protocol(table)
    splits = [int(s) for s in splits]
    if not splits or len(set(splits)) != len(splits) or min(splits) < 0:
        raise ProtocolError(f"splits must be distinct non-negative indices, got {splits}")
    try:
        user = parse_overrides(list(overrides))
    except ConfigError as error:
        raise ProtocolError(str(error)) from error
    refused = [key for key, _ in user if key in protocol.defining_keys or key in ALWAYS_SET]
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
    cells, notes = protocol.build_cells(bases, options)

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


# ------------------------------------------------------------------------------------------------ tables


def build_table(plan: Plan, metrics: Sequence[str] = ("srcc", "plcc")) -> reporting.Table:
    """Assemble the plan's table in its protocol's layout from whatever results exist; the caption ends with the
    protocol's cell notes, the runs' setup (:func:`describe_setup`) and the protocol's own note."""
    protocol = get_protocol(plan.table)
    context = TableContext(protocol.title, plan_backbone(plan), table_label(plan), tuple(metrics))
    table = protocol.build_table(plan, collect(plan), context)
    notes = plan.notes + describe_setup(plan) + ([protocol.note] if protocol.note else [])
    if notes:
        table.caption += " " + " ".join(notes)
    return table


def write_outputs(plan: Plan, records: Sequence[Dict[str, Any]] = ()) -> Tuple[Path, Path]:
    """Write the table (markdown + CSV) and a JSON index of the runs behind it."""
    stem = get_protocol(plan.table).file_stem
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
    parser.add_argument("table", choices=list(registered_protocols()))
    parser.add_argument("--base-config", nargs="+", action="extend", default=None, metavar="YAML",
                        help="one training config per data set, listed after one flag or each after its own "
                             "(default: the training loop's defaults)")
    parser.add_argument("--splits", nargs="+", type=int, default=[0, 1, 2], metavar="K")
    parser.add_argument("--out", default="outputs/protocols", help="protocol folder: runs, splits files, tables")
    parser.add_argument("--fractions", nargs="+", type=float, default=None, help="data_efficient: training fractions")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="methods: which methods (default: every registered one, the paper's first)")
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
    # Through the imported module: it is the one eval.protocol_tables registers the paper's tables with.
    from eval.protocols import main as _main

    sys.exit(_main())
