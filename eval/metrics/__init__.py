"""IQA metrics (SRCC, PLCC, PLCC after a 4-parameter logistic fit, KRCC, RMSE).

Each metric is an `evaluate` module in a folder of this directory (``srcc/srcc.py``, ...), loaded
by path, so nothing is fetched from the Hub and everything works offline. The maths lives once, in
``_iqa_core.py`` (each metric folder links to it); its module docstring states the policy for
degenerate input.

Two entry points:

* :func:`load_iqa_metrics` returns an ``evaluate.CombinedEvaluations`` for users of `evaluate`;
* :func:`compute_iqa_metrics` is a plain function for the training loop: same numbers, no
  `evaluate` machinery (no module cache, no Arrow files).
"""

from pathlib import Path

from . import _iqa_core
from ._iqa_core import DegenerateInputWarning, LogisticFitWarning

__all__ = [
    "METRICS_DIR",
    "METRIC_NAMES",
    "DegenerateInputWarning",
    "LogisticFitWarning",
    "compute_iqa_metrics",
    "load_iqa_metrics",
    "metric_path",
]

#: Folder holding the metric modules.
METRICS_DIR = Path(__file__).resolve().parent

#: Names of the shipped metric modules.
METRIC_NAMES = ("srcc", "plcc", "krcc", "rmse")


def metric_path(name):
    """Return the folder of the shipped metric ``name`` (usable as ``evaluate.load(str(path))``)."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown IQA metric {name!r}; shipped metrics are {list(METRIC_NAMES)}")
    return METRICS_DIR / name


def _check_names(names):
    names = tuple(names)
    if not names:
        raise ValueError("at least one metric name is needed")
    for name in names:
        metric_path(name)
    if len(set(names)) != len(names):
        raise ValueError(f"metric names repeat: {list(names)}")
    return names


def _result_keys(names, logistic):
    """Result keys in order: ``names``, with ``plcc_logistic4`` after ``plcc`` (or last)."""
    keys = []
    for name in _check_names(names):
        keys.append(name)
        if name == "plcc" and logistic:
            keys.append("plcc_logistic4")
    if logistic and "plcc_logistic4" not in keys:
        keys.append("plcc_logistic4")
    return keys


def load_iqa_metrics(names=METRIC_NAMES, logistic=False, keep_in_memory=True, cache_dir=None):
    """Load the shipped metric modules by path and combine them with ``evaluate.combine``.

    Args:
        names: which metrics, any of ``"srcc"``, ``"plcc"``, ``"krcc"``, ``"rmse"``, in the order
            of the results.
        logistic: also load PLCC in its ``"logistic4"`` configuration (result key
            ``plcc_logistic4``), right after the raw ``plcc`` (or alone if ``"plcc"`` is not in
            ``names``).
        keep_in_memory: passed to every module; ``True`` (the default) writes no Arrow cache files.
        cache_dir: passed to every module (where `evaluate` keeps its data when not in memory).

    Returns:
        An ``evaluate.CombinedEvaluations``; call ``.compute(predictions=..., references=...)``
        (optionally ``allow_degenerate=True``, forwarded to every module) to get one flat dict.

    Nothing is fetched: loading by path copies the module scripts into `evaluate`'s module cache
    under ``HF_HOME`` and works with ``HF_HUB_OFFLINE=1``.
    """
    import evaluate

    kwargs = {"keep_in_memory": keep_in_memory, "cache_dir": cache_dir}
    modules = {}
    for key in _result_keys(names, logistic):
        if key == "plcc_logistic4":
            modules[key] = evaluate.load(str(metric_path("plcc")), "logistic4", **kwargs)
        else:
            modules[key] = evaluate.load(str(metric_path(key)), **kwargs)
    return evaluate.combine(modules)


def compute_iqa_metrics(predictions, references, logistic=False, allow_degenerate=False,
                        names=METRIC_NAMES):
    """Compute the IQA metrics of one evaluation as a plain ``{name: float}`` dict.

    Gives the same numbers as ``load_iqa_metrics(names, logistic).compute(...)``: both call the
    functions of ``_iqa_core.py``. Keys, in order: the ``names`` (default ``srcc``, ``plcc``,
    ``krcc``, ``rmse``), with ``plcc_logistic4`` after ``plcc`` when ``logistic`` is true.

    Args:
        predictions: predicted scores, one per image (list, numpy array or 1-D CPU tensor).
        references: MOS of the same images.
        logistic: add PLCC after the 4-parameter logistic fit (needs at least 4 samples).
        allow_degenerate: return NaN with a ``DegenerateInputWarning`` instead of raising
            ``ValueError`` for constant input or NaN/inf predictions. Mismatched lengths, too few
            samples and NaN/inf references always raise.
        names: which metrics.
    """
    return {
        key: _iqa_core.METRIC_FUNCTIONS[key](predictions, references, allow_degenerate=allow_degenerate)
        for key in _result_keys(names, logistic)
    }
