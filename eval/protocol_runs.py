"""The runs of a protocol (:mod:`eval.protocols`) on disk: training them through ``training/train.py`` and reading
their results files back.

A run is finished when its directory holds the ``results.json`` the training loop writes; it counts only if that
file carries the current ``schema_version`` (:data:`eval.reporting.RESULTS_SCHEMA_VERSION`). Beside each run the
protocol writes :data:`RUN_RECORD` (wall time and the command that trained it).
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

import yaml

from eval import reporting

if TYPE_CHECKING:  # only for annotations: eval.protocols imports this module
    from eval.protocols import Plan, Run

logger = logging.getLogger("eval.protocols")

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAIN_SCRIPT = REPO_ROOT / "training" / "train.py"

#: Written by the protocol beside each finished run: wall time and how it was launched.
RUN_RECORD = "protocol_run.json"


class ProtocolError(ValueError):
    """A protocol cannot be expanded, run or assembled as asked."""


# ------------------------------------------------------------------------------------------------ results files


def find_results_file(run_dir: Path) -> Optional[Path]:
    """The training loop's ``results.json`` in a run directory, or ``None`` if the run has not finished."""
    path = Path(run_dir) / "results.json"
    return path if path.is_file() else None


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
    reads the results on the cross-data-set test set. ``None`` if the run has no results yet.

    ``results.json`` (training/train.py) holds one entry per split in ``splits``: the test part's metrics at its
    top level, beside ``num_train``, ``trainable_parameters`` and so on, and the cross-data-set metrics under
    ``cross`` as ``{test data set: metrics}``."""
    path = find_results_file(run_dir)
    if path is None:
        return None
    results = load_results(path)
    for entry in results.get("splits") or []:
        if int(entry.get("split", -1)) != int(split):
            continue
        metrics = _pick_part(entry, part)
        if metrics is None:
            raise ProtocolError(f"{path}: split {split} has no {part!r} results")
        return {"split": int(split), **_metrics_of(metrics)}
    return None


def _pick_part(entry: Dict[str, Any], part: str) -> Optional[Dict[str, Any]]:
    if part == "test":
        return entry
    cross = entry.get("cross")
    if not isinstance(cross, dict) or not cross:
        return None
    if len(cross) != 1:
        raise ProtocolError(f"split {entry.get('split')} was tested on several other data sets: {sorted(cross)}")
    return next(iter(cross.values()))


def read_trainable_parameters(run_dir: Path) -> Optional[int]:
    """The trainable parameter count in a finished run's ``results.json``, or ``None`` if it has not finished."""
    path = find_results_file(run_dir)
    if path is None:
        return None
    count = load_results(path).get("trainable_parameters")
    return count if isinstance(count, int) else None


def read_run_record(run_dir: Path) -> Dict[str, Any]:
    path = Path(run_dir) / RUN_RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


# ------------------------------------------------------------------------------------------------ running


def _launch_command(config_path: Path, launcher: str, launch_args: Sequence[str]) -> List[str]:
    if launcher == "accelerate":
        return [sys.executable, "-m", "accelerate.commands.launch", *launch_args, str(TRAIN_SCRIPT),
                "--config", str(config_path)]
    return [sys.executable, str(TRAIN_SCRIPT), "--config", str(config_path)]


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
        from training.train import main as entry  # imported here: the loop pulls in torch, accelerate, ...

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


def collect(plan: Plan) -> Dict[int, List[Dict[str, Any]]]:
    """Per-split results of each cell (by the cell's index in ``plan.cells``); missing runs are left out."""
    by_cell: Dict[int, List[Dict[str, Any]]] = {i: [] for i in range(len(plan.cells))}
    index = {id(c): i for i, c in enumerate(plan.cells)}
    for run in plan.runs:
        result = read_split_result(run.run_dir, run.split, run.cell.result_part)
        if result is not None:
            by_cell[index[id(run.cell)]].append(result)
    return by_cell
