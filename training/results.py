"""What a finished run writes about itself: ``results.json``, ``results.md`` / ``results.csv`` (the table) and the
per-split ``result.json``; the summaries (median, mean and std over splits) and tables that the model card reuses.

Tables and captions come from :mod:`eval.reporting` (one wording for training and the paper's protocols).
"""

from __future__ import annotations

import math
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import torch

import glia_hf
from eval.metrics import RESULT_KEYS
from eval.reporting import result_label as reporting_result_label
from eval.reporting import (RESULTS_SCHEMA_VERSION, Table, describe_train_fraction, make_caption, metric_label,
                            summarize_splits, to_markdown, write_table)
from glia_hf.data.scales import canonical_name
from training.checks import backbone_description, method_label, resolution_of
from training.config import TrainConfig

if TYPE_CHECKING:
    from training.loop import Run


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


def write_results(run: "Run", results: List[dict], wall_time: float) -> dict:
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


def _num(value) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.4f}"
