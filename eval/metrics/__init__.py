"""IQA metrics: SRCC, KRCC, and PLCC and RMSE after LoDa's 4-parameter logistic fit, plus raw PLCC
and RMSE.

Result keys (the keys of every results file; see ``_iqa_core.py`` for the maths and the policy for
degenerate input and failed fits):

=============  ==================================================================================
``srcc``       Spearman rank-order correlation
``plcc``       Pearson correlation after the 4-parameter logistic fit (LoDa's fit, as VQEG
               recommends): the PLCC of the paper's tables
``plcc_raw``   Pearson correlation of the predictions as they are
``krcc``       Kendall rank correlation (tau-b)
``rmse``       root mean squared error after the logistic fit, in MOS units
``rmse_raw``   root mean squared error of the predictions as they are
=============  ==================================================================================

Each metric is an `evaluate` module in a folder of this directory (``srcc/srcc.py``, ...), loaded
by path, so nothing is fetched from the Hub and everything works offline. ``plcc`` and ``rmse``
each have a ``"raw"`` configuration for the raw values. The maths lives once, in ``_iqa_core.py``
(each metric folder links to it).

Two entry points:

* :func:`load_iqa_metrics` returns an ``evaluate.CombinedEvaluations`` for users of `evaluate`;
* :func:`compute_iqa_metrics` is a plain function for the training loop: same numbers, no
  `evaluate` machinery (no module cache, no Arrow files), one logistic fit for PLCC and RMSE.
"""

from pathlib import Path

from . import _iqa_core
from ._iqa_core import RESULT_KEYS, DegenerateInputWarning, LogisticFitWarning

__all__ = [
    "METRICS_DIR",
    "METRIC_NAMES",
    "RESULT_KEYS",
    "DegenerateInputWarning",
    "LogisticFitWarning",
    "compute_iqa_metrics",
    "load_iqa_metrics",
    "metric_path",
]

#: Folder holding the metric modules.
METRICS_DIR = Path(__file__).resolve().parent

#: Names of the shipped metric modules (folders).
METRIC_NAMES = ("srcc", "plcc", "krcc", "rmse")

#: Result key -> (metric module, its configuration).
_MODULE_OF_KEY = {
    "srcc": ("srcc", "default"),
    "plcc": ("plcc", "default"),
    "plcc_raw": ("plcc", "raw"),
    "krcc": ("krcc", "default"),
    "rmse": ("rmse", "default"),
    "rmse_raw": ("rmse", "raw"),
}


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
        if name == "plcc_logistic4":
            raise ValueError("'plcc_logistic4' is gone: 'plcc' is now the PLCC after the logistic fit "
                             "(and 'plcc_raw' the raw one)")
        if name not in _MODULE_OF_KEY:
            raise ValueError(f"unknown IQA metric {name!r}; result keys are {list(RESULT_KEYS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"metric names repeat: {list(names)}")
    return names


def load_iqa_metrics(names=RESULT_KEYS, keep_in_memory=True, cache_dir=None):
    """Load the shipped metric modules by path and combine them with ``evaluate.combine``.

    Args:
        names: which result keys (:data:`RESULT_KEYS`: ``srcc``, ``plcc``, ``plcc_raw``, ``krcc``,
            ``rmse``, ``rmse_raw``), in the order of the results.
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
    for key in _check_names(names):
        module, config = _MODULE_OF_KEY[key]
        modules[key] = evaluate.load(str(metric_path(module)), config, **kwargs)
    return evaluate.combine(modules)


def compute_iqa_metrics(predictions, references, allow_degenerate=False, names=RESULT_KEYS):
    """Compute the IQA metrics of one evaluation as a plain ``{key: float}`` dict.

    Gives the same numbers as ``load_iqa_metrics(names).compute(...)``: both call the functions
    of ``_iqa_core.py``; the logistic fit is made once for ``plcc`` and ``rmse``.

    Args:
        predictions: predicted scores, one per image (list, numpy array or 1-D CPU tensor).
        references: MOS of the same images.
        allow_degenerate: return NaN with a ``DegenerateInputWarning`` (a ``LogisticFitWarning``
            for a failed fit) instead of raising ``ValueError`` for constant input, NaN/inf
            predictions or a failed logistic fit. Mismatched lengths, too few samples and NaN/inf
            references always raise.
        names: which result keys, in order (default :data:`RESULT_KEYS`).
    """
    return _iqa_core.compute(predictions, references, _check_names(names), allow_degenerate)
