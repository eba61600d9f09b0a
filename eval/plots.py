"""Plots of one run: predicted quality against MOS (scatter), and the training curve (loss and test SRCC per epoch).

Drawn with matplotlib's Agg canvas on a private ``Figure`` (no ``pyplot``), so it works without a
display, does not change the caller's matplotlib backend, and leaves no global figure state.
"""

from pathlib import Path

import numpy as np

__all__ = ["scatter_plot", "training_curve_plot"]


def _metric_text(metrics):
    from .reporting import METRIC_LABELS

    parts = []
    for key in METRIC_LABELS:  # every result key, in the order defined once in eval.reporting
        if metrics.get(key) is not None:
            value = float(metrics[key])
            parts.append(f"{METRIC_LABELS[key]} = {'nan' if np.isnan(value) else f'{value:.3f}'}")
    return "\n".join(parts)


def scatter_plot(predictions, references, path, title=None, metrics=None,
                 xlabel="Predicted score", ylabel="MOS", dpi=100, size=(5.0, 5.0)):
    """Write a PNG scatter plot of predicted scores (x) against MOS (y) and return its path.

    Every sample is drawn with the same small, semi-transparent marker; there is no identity
    line (predicted scores and MOS need not share a scale). The corner of the plot shows SRCC and
    PLCC (and any other of KRCC, RMSE, PLCC (logistic) found in ``metrics``).

    Args:
        predictions: predicted scores, one per image.
        references: MOS of the same images.
        path: where to write the PNG; parent folders are created.
        title: optional title, e.g. the run name and split.
        metrics: a dict such as the one :func:`eval.metrics.compute_iqa_metrics` returns. When
            ``None`` it is computed here; degenerate input (e.g. constant predictions) then shows
            ``nan`` with a warning rather than failing the plot.
        xlabel, ylabel: axis labels.
        dpi, size: resolution and figure size in inches (default 500x500 pixels).

    Raises ``ValueError`` if predictions and references differ in length or are empty.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = np.asarray(predictions, dtype=np.float64).ravel()
    y = np.asarray(references, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"predictions and references differ in length ({x.size} != {y.size})")
    if x.size == 0:
        raise ValueError("nothing to plot: no samples")
    if metrics is None:
        metrics = _metrics_for_plot(x, y)

    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(x, y, s=14, c="tab:blue", alpha=0.6, linewidths=0, marker="o")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title if title else f"{x.size} images")
    ax.grid(True, alpha=0.3)
    text = _metric_text(metrics)
    if text:
        ax.text(0.03, 0.97, text, transform=ax.transAxes, va="top", ha="left", fontsize=9,
                bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8, "linewidth": 0.5})
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _metrics_for_plot(x, y):
    from .metrics import compute_iqa_metrics

    if x.size < 2:
        return {}
    return compute_iqa_metrics(x, y, names=("srcc", "plcc"), allow_degenerate=True)


def training_curve_plot(curve, path, title=None, dpi=100, size=(8.0, 3.5)):
    """Write a PNG of the training curve and return its path: the mean training loss per epoch (left) and the test
    SRCC per epoch (right).

    Args:
        curve: one mapping per epoch with ``epoch``, ``loss`` and ``srcc`` (as the trainer keeps them; the SRCC
            is measured with one fragment view per test image, so it is a cheaper, noisier number than the final
            test's). NaN values are left out of their line.
        path: where to write the PNG; parent folders are created.
        title: optional title above both panels.

    Raises ``ValueError`` for an empty curve.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curve:
        raise ValueError("nothing to plot: the curve has no epochs")
    epochs = np.array([float(point["epoch"]) for point in curve])
    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    for position, (key, label) in enumerate((("loss", "Training loss (epoch mean)"),
                                             ("srcc", "Test SRCC (1 view)")), start=1):
        ax = fig.add_subplot(1, 2, position)
        values = np.array([np.nan if point.get(key) is None else float(point[key]) for point in curve])
        keep = np.isfinite(values)
        ax.plot(epochs[keep], values[keep], marker="o", color="tab:blue" if key == "loss" else "tab:green")
        ax.set_xlabel("Epoch")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if epochs.size:
            ax.set_xticks(epochs)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
