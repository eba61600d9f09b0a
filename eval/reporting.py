"""Per-split summaries and the paper's tables, written as markdown and CSV.

Input everywhere is the list of per-split results of one (method, data set) cell, e.g.
``[{"split": 0, "srcc": 0.91, "plcc": 0.93}, {"split": 1, ...}, ...]``. A cell is summarised by
:func:`summarize_splits` into median (the number the paper reports), mean, std and count.

Tables are built in two steps: a small *layout* function per paper table
(:func:`intra_dataset_table` for Table 1, :func:`cross_dataset_table` for Table 2,
:func:`data_efficiency_table` for Table 3, :func:`ablation_table` for Tables 4-5,
:func:`finetune_methods_table` for Table 6) turns nested results into a :class:`Table`; one generic
writer (:func:`to_markdown`, :func:`to_csv`, :func:`write_table`) renders any :class:`Table`.

Every caption names the number of splits (counted from the results) and the backbone (passed
in), plus an optional label such as "randomly initialised backbone, pseudo-MOS".

Markdown cells show the median, and with ``spread=True`` (the default) the mean and standard
deviation beside it: ``0.912 (0.910 ± 0.008)``. CSV cells hold plain numbers: the median in the
named column, and with ``spread=True`` a ``<column> mean`` and a ``<column> std`` column after
it. The CSV holds the table only (one header row, then data); the caption is in the markdown and
on :attr:`Table.caption`.

NaN is never hidden: a metric that is NaN in any split makes that cell's summary NaN, shown as
``nan``. A cell with no results is shown as ``–`` (markdown) or left empty (CSV).
"""

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

__all__ = [
    "SplitSummary",
    "Table",
    "summarize_splits",
    "make_caption",
    "to_markdown",
    "to_csv",
    "write_table",
    "intra_dataset_table",
    "cross_dataset_table",
    "data_efficiency_table",
    "ablation_table",
    "finetune_methods_table",
    "format_param_count",
    "ParamCount",
    "METRIC_LABELS",
    "FIT_NOTE",
    "RESULTS_SCHEMA_VERSION",
    "metric_label",
    "RANDOM_BACKBONE_LABEL",
    "PSEUDO_MOS_LABEL",
    "result_label",
    "describe_backbone",
    "describe_train_fraction",
]

#: How metric keys (the result keys of :mod:`eval.metrics`) are shown in headers, everywhere.
METRIC_LABELS = {
    "srcc": "SRCC",
    "plcc": "PLCC",
    "plcc_raw": "PLCC (raw)",
    "krcc": "KRCC",
    "rmse": "RMSE",
    "rmse_raw": "RMSE (raw)",
}

#: What "PLCC" and "RMSE" mean in every table; added to a caption that shows either.
FIT_NOTE = ("PLCC and RMSE after the 4-parameter logistic fit from predictions to MOS (LoDa's fit, as VQEG "
            "recommends); \"raw\" columns without it.")

#: Version of the results files (``results.json``) the training loop writes. 2: ``plcc``/``rmse`` are after the
#: logistic fit, ``plcc_raw``/``rmse_raw`` added (version 1, unmarked, had the raw values under ``plcc``/``rmse``).
RESULTS_SCHEMA_VERSION = 2

#: The labels of results that are not what a paper's numbers are: a randomly initialised (not pre-trained)
#: backbone, and the built-in data set's pseudo-MOS (a full-reference metric's scores, not human opinions).
RANDOM_BACKBONE_LABEL = "randomly initialised backbone"
PSEUDO_MOS_LABEL = "pseudo-MOS"

CHECK, CROSS = "✓", "✗"
MISSING = "–"


@dataclass(frozen=True)
class SplitSummary:
    """Summary of one metric over splits: median (the paper's number), mean, sample std, count."""

    median: float
    mean: float
    std: float
    count: int

    def as_dict(self):
        return {"median": self.median, "mean": self.mean, "std": self.std, "count": self.count}


def metric_label(metric):
    """The display label of a metric key (``"plcc_raw"`` -> ``"PLCC (raw)"``)."""
    return METRIC_LABELS.get(metric, metric.upper())


_metric_label = metric_label


def describe_backbone(backbone):
    """The backbone in words, for captions, results files and model cards: its Hub id or directory as given, or for
    a dict of config fields (a randomly initialised backbone of the family its ``model_type`` names, ViT when absent)
    its shape, e.g. ``"randomly initialised ViT (hidden 768, 12 blocks, 12 heads, patch 16, 224 px)"`` (fields not
    in the dict: the family config's defaults, which are what the model gets)."""
    if not isinstance(backbone, dict):
        return str(backbone)
    from glia_hf.backbones import backbone_config_from, backbone_spec  # here: the tables themselves need only numpy

    config = backbone_config_from(backbone)
    return (f"randomly initialised {backbone_spec(config).family} (hidden {config.hidden_size}, "
            f"{config.num_hidden_layers} blocks, {config.num_attention_heads} heads, patch {config.patch_size}, "
            f"{config.image_size} px)")


def result_label(random_backbone, pseudo_mos):
    """The label of results, for captions, results files and model cards: ``"randomly initialised backbone,
    pseudo-MOS"``, either half alone, or ``None`` when neither holds."""
    parts = [RANDOM_BACKBONE_LABEL] * bool(random_backbone) + [PSEUDO_MOS_LABEL] * bool(pseudo_mos)
    return ", ".join(parts) or None


def describe_train_fraction(fraction, of="dataset", train_ratio=None):
    """Say which training images a data-efficient run used, for captions and model cards.

    ``of="dataset"``: ``fraction`` of all images of the data set (drawn from each split's training part);
    ``of="train_split"``: ``fraction`` of each split's training part (``fraction * train_ratio`` of the data set).
    """
    percent = f"{float(fraction) * 100:g}%"
    if of == "dataset":
        return f"{percent} of all images of the data set for training, drawn from each split's training part"
    if of == "train_split":
        share = f" (= {float(fraction) * float(train_ratio) * 100:g}% of the data set)" if train_ratio else ""
        return f"{percent} of each split's training part{share} for training"
    raise ValueError(f"train fraction 'of' must be 'dataset' or 'train_split', got {of!r}")


def summarize_splits(results: Sequence[Mapping[str, Any]], metrics: Optional[Sequence[str]] = None):
    """Summarise per-split results into ``{metric: SplitSummary}``.

    Args:
        results: one mapping per split, e.g. ``{"split": 0, "srcc": 0.91, "plcc": 0.93}``.
        metrics: which keys to summarise; default every numeric key except ``"split"`` that every
            split has.

    The std is the sample standard deviation (``ddof=1``); it is NaN for a single split. A NaN in
    any split propagates to median, mean and std of that metric (never dropped silently).
    Raises ``ValueError`` for no results, or a requested metric that a split lacks.
    """
    results = list(results)
    if not results:
        raise ValueError("no per-split results to summarise")
    if metrics is None:
        common = set.intersection(*(set(r) for r in results)) - {"split"}
        metrics = [
            k for k in results[0]
            if k in common and all(_is_number(r[k]) for r in results)
        ]
    summary = {}
    for metric in metrics:
        missing = [i for i, r in enumerate(results) if metric not in r]
        if missing:
            raise ValueError(f"metric {metric!r} missing from split result(s) at position(s) {missing}")
        values = np.array([float(r[metric]) for r in results], dtype=np.float64)
        n = len(values)
        std = float(np.std(values, ddof=1)) if n > 1 else float("nan")
        summary[metric] = SplitSummary(
            median=float(np.median(values)), mean=float(np.mean(values)), std=std, count=n
        )
    return summary


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


# ---------------------------------------------------------------- the generic table


@dataclass
class Table:
    """A table ready to render.

    ``row_headers`` name the leading label columns (e.g. ``["Method"]``); ``columns`` name the
    value columns. Each row is ``(labels, values)``: ``labels`` a list of strings, one per row
    header; ``values`` one per column, each a :class:`SplitSummary`, a number, a string, or
    ``None`` (no result).
    """

    title: str
    caption: str
    row_headers: list
    columns: list
    rows: list = field(default_factory=list)
    spread: bool = True
    digits: int = 3

    def add_row(self, labels, values):
        labels, values = list(labels), list(values)
        if len(labels) != len(self.row_headers) or len(values) != len(self.columns):
            raise ValueError(
                f"row has {len(labels)} labels and {len(values)} values; the table has "
                f"{len(self.row_headers)} row headers and {len(self.columns)} columns"
            )
        self.rows.append((labels, values))


class ParamCount(int):
    """A parameter count: markdown shows it as ``8.03M``, CSV keeps the exact integer."""


def _fmt(x, digits):
    if x is None:
        return MISSING
    if isinstance(x, ParamCount):
        return format_param_count(x)
    if isinstance(x, str):
        return x
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    x = float(x)
    return "nan" if math.isnan(x) else f"{x:.{digits}f}"


def _md_cell(value, table):
    if isinstance(value, SplitSummary):
        text = _fmt(value.median, table.digits)
        if table.spread and value.count > 1:
            text += f" ({_fmt(value.mean, table.digits)} ± {_fmt(value.std, table.digits)})"
        return text
    return _fmt(value, table.digits)


def _md_escape(text):
    return str(text).replace("|", "\\|")


def to_markdown(table: Table) -> str:
    """Render ``table`` as a caption line and a GitHub-flavoured markdown table."""
    header = [*table.row_headers, *table.columns]
    lines = [f"**{_md_escape(table.title)}.** {_md_escape(table.caption)}", ""]
    lines.append("| " + " | ".join(_md_escape(h) for h in header) + " |")
    lines.append("|" + "|".join([":---"] * len(table.row_headers) + ["---:"] * len(table.columns)) + "|")
    for labels, values in table.rows:
        cells = [_md_escape(x) for x in labels] + [_md_escape(_md_cell(v, table)) for v in values]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _csv_number(x):
    if x is None:
        return ""
    if isinstance(x, str):
        return x
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    return repr(float(x))


def to_csv(table: Table) -> str:
    """Render ``table`` as CSV: one header row, full-precision numbers, spread columns if asked."""
    summary_cols = [
        i for i, _ in enumerate(table.columns)
        if any(isinstance(values[i], SplitSummary) for _, values in table.rows)
    ]
    header = list(table.row_headers)
    for i, name in enumerate(table.columns):
        header.append(name)
        if table.spread and i in summary_cols:
            header += [f"{name} mean", f"{name} std"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for labels, values in table.rows:
        row = list(labels)
        for i, value in enumerate(values):
            if isinstance(value, SplitSummary):
                row.append(_csv_number(value.median))
                if table.spread:
                    row += [_csv_number(value.mean), _csv_number(value.std)]
            else:
                row.append(_csv_number(value))
                if table.spread and i in summary_cols:
                    row += ["", ""]
        writer.writerow(row)
    return buf.getvalue()


def write_table(table: Table, path_stem) -> tuple:
    """Write ``<path_stem>.md`` and ``<path_stem>.csv``; return both paths."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    md_path = stem.with_name(stem.name + ".md")
    csv_path = stem.with_name(stem.name + ".csv")
    md_path.write_text(to_markdown(table), encoding="utf-8")
    csv_path.write_text(to_csv(table), encoding="utf-8")
    return md_path, csv_path


# ---------------------------------------------------------------- captions and cells


def _split_counts(cells):
    return sorted({s.count for cell in cells for s in cell.values()})


def make_caption(description, backbone, split_counts, metrics, label=None, spread=True,
                 note=None):
    """Build a caption naming the metrics, the number of splits and the backbone.

    ``split_counts`` is the sorted set of split counts seen in the table's cells.
    """
    if not backbone:
        raise ValueError("a table caption must name the backbone")
    if not split_counts:
        splits = "no splits"
    elif len(split_counts) == 1:
        n = split_counts[0]
        splits = f"{n} split" if n == 1 else f"{n} splits"
    else:
        splits = f"{split_counts[0]}-{split_counts[-1]} splits per cell"
    names = "/".join(_metric_label(m) for m in metrics)
    text = f"{description} Median {names} over {splits}"
    if spread:
        text += " (mean ± std in parentheses)"
    text += f"; backbone: {backbone}."
    if any(m in ("plcc", "rmse") for m in metrics):
        text += f" {FIT_NOTE}"
    if note:
        text += f" {note}"
    if label:
        text += f" [{label}]"
    return text


def _summaries(cell_results, metrics):
    """``{metric: SplitSummary}`` for one cell, or ``{}`` when the cell has no results."""
    if not cell_results:
        return {}
    return summarize_splits(cell_results, metrics)


def _group_columns(groups, metrics):
    return [f"{g} {_metric_label(m)}" for g in groups for m in metrics]


def _group_values(cells_by_group, groups, metrics):
    values = []
    for g in groups:
        summ = cells_by_group.get(g, {})
        values += [summ.get(m) for m in metrics]
    return values


def _ordered_keys(nested, given):
    if given is not None:
        return list(given)
    seen = []
    for inner in nested:
        for key in inner:
            if key not in seen:
                seen.append(key)
    return seen


def _grid_table(title, description, row_headers, row_items, datasets, metrics, backbone, label,
                spread, digits, extra_columns=(), note=None):
    """Shared body of the tables whose columns are (data set x metric) groups.

    ``row_items`` is a list of ``(labels, extra_values, {dataset: per-split results})``.
    """
    datasets = _ordered_keys([cells for _, _, cells in row_items], datasets)
    summarised = [
        (labels, extra, {d: _summaries(cells.get(d), metrics) for d in datasets})
        for labels, extra, cells in row_items
    ]
    counts = _split_counts([c for _, _, cells in summarised for c in cells.values()])
    table = Table(
        title=title,
        caption=make_caption(description, backbone, counts, metrics, label, spread, note),
        row_headers=list(row_headers),
        columns=list(extra_columns) + _group_columns(datasets, metrics),
        spread=spread,
        digits=digits,
    )
    for labels, extra, cells in summarised:
        table.add_row(labels, list(extra) + _group_values(cells, datasets, metrics))
    return table


# ---------------------------------------------------------------- the paper's layouts


def intra_dataset_table(results, *, backbone, datasets=None, metrics=("srcc", "plcc"),
                        label=None, spread=True, digits=3, title="Table 1"):
    """Table 1 layout: rows = methods; per data set, one column per metric (SRCC, PLCC).

    ``results``: ``{method: {dataset: [per-split result dicts]}}``; data sets are taken in the
    order given by ``datasets`` or of first appearance.
    """
    rows = [([method], [], cells) for method, cells in results.items()]
    return _grid_table(title, "Intra-data-set results: train and test on random splits of the "
                       "same data set.", ["Method"], rows, datasets, metrics, backbone, label,
                       spread, digits)


def cross_dataset_table(results, *, backbone, pairs=None, metrics=("srcc",), label=None,
                        spread=True, digits=3, title="Table 2", arrow="→"):
    """Table 2 layout: rows = methods; one column per (train set → test set) pair, SRCC.

    ``results``: ``{method: {(train_set, test_set): [per-split result dicts]}}``. Each split's
    model (trained on that split of the training set) is tested on the whole test set without
    fine-tuning.
    """
    pairs = _ordered_keys(list(results.values()), pairs)
    names = {p: f"{p[0]} {arrow} {p[1]}" for p in pairs}
    rows = [([method], [], {names[p]: cells[p] for p in pairs if p in cells})
            for method, cells in results.items()]
    return _grid_table(title, "Cross-data-set results: trained on one data set, tested on "
                       "another without fine-tuning.", ["Method"], rows,
                       [names[p] for p in pairs], metrics, backbone, label, spread, digits)


def _fraction_label(fraction):
    fraction = float(fraction)
    return f"{fraction * 100:g}%" if fraction <= 1.0 else f"{fraction:g}%"


#: Table 3's description for each reading of its percentages (``data.train_fraction_of``).
DATA_EFFICIENCY_READINGS = {
    "dataset": ("Data-efficient training: each row's percentage is a share of all images of the data set (the "
                "paper's \"training set containing 20%, 40% and 60% images\"), drawn from each split's training "
                "part; tested on that split's test part, unchanged."),
    "train_split": ("Data-efficient training: each row's percentage is a share of each split's training part "
                    "({ratio} of the data set, so 20% is {twenty} of all images); tested on that split's test part, "
                    "unchanged."),
}


def data_efficiency_table(results, *, backbone, datasets=None, metrics=("srcc", "plcc"),
                          label=None, spread=True, digits=3, title="Table 3", fraction_of="dataset",
                          train_ratio=0.8):
    """Table 3 layout: rows = (training fraction, method); per data set SRCC and PLCC.

    ``results``: ``{fraction: {method: {dataset: [per-split result dicts]}}}``, with fraction as
    a share (0.2) or a percentage (20); shown as ``20%``. ``fraction_of`` says what the share is
    of (``"dataset"``: all images; ``"train_split"``: each split's training part, which holds
    ``train_ratio`` of the images), and the caption says so.
    """
    if fraction_of not in DATA_EFFICIENCY_READINGS:
        raise ValueError(f"fraction_of must be one of {sorted(DATA_EFFICIENCY_READINGS)}, got {fraction_of!r}")
    description = DATA_EFFICIENCY_READINGS[fraction_of].format(
        ratio=f"{train_ratio * 100:g}%", twenty=f"{0.2 * train_ratio * 100:g}%")
    rows = [([_fraction_label(frac), method], [], cells)
            for frac, by_method in results.items() for method, cells in by_method.items()]
    return _grid_table(title, description, ["Training data", "Method"], rows,
                       datasets, metrics, backbone, label, spread, digits)


def _setting_label(value):
    if isinstance(value, bool):
        return CHECK if value else CROSS
    return str(value)


def ablation_table(rows, *, backbone, settings, datasets=None, metrics=("srcc", "plcc"),
                   label=None, spread=True, digits=3, title="Table 4",
                   description="Ablation of the GLIA block."):
    """Tables 4-5 layout: one column per setting, then per data set SRCC and PLCC.

    ``rows``: a sequence of ``(setting_values, {dataset: [per-split result dicts]})``, where
    ``setting_values`` maps each name in ``settings`` to a bool (shown as ✓ / ✗) or a string
    shown as is.

    Table 4 (modules): ``settings=("LGF", "GLR")``, values ``{"LGF": True, "GLR": False}``.
    Table 5 (streams): ``settings=("Guidance", "Main")``, values such as
    ``{"Guidance": "x_s", "Main": "x_d"}``.
    """
    items = []
    for setting_values, cells in rows:
        missing = [s for s in settings if s not in setting_values]
        if missing:
            raise ValueError(f"ablation row {setting_values!r} lacks setting(s) {missing}")
        items.append(([_setting_label(setting_values[s]) for s in settings], [], cells))
    return _grid_table(title, description, list(settings), items, datasets, metrics, backbone,
                       label, spread, digits)


def format_param_count(n):
    """Write a parameter count as the paper does: ``8.03M``, ``590K``, ``86M``."""
    n = int(n)
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.0f}K"
    return str(n)


def finetune_methods_table(results, *, backbone, params, datasets=None,
                           metrics=("srcc", "plcc"), label=None, spread=True, digits=3,
                           title="Table 6"):
    """Table 6 layout: rows = fine-tuning methods with their trainable parameter count, then per
    data set SRCC and PLCC.

    ``results``: ``{method: {dataset: [per-split result dicts]}}``; ``params``:
    ``{method: trainable parameter count}`` (shown as ``8.03M``; the CSV keeps the full count).
    """
    missing = [m for m in results if m not in params]
    if missing:
        raise ValueError(f"no trainable parameter count for method(s) {missing}")
    table = _grid_table(title, "Fine-tuning methods on the same backbone (frozen for all but full fine-tuning).",
                        ["Method"], [([m], [None], cells) for m, cells in results.items()],
                        datasets, metrics, backbone, label, spread, digits,
                        extra_columns=("Trainable params",))
    # The parameter column shows "8.03M" in markdown and the exact integer in CSV.
    table.rows = [
        (labels, [ParamCount(params[labels[0]])] + values[1:]) for labels, values in table.rows
    ]
    return table

