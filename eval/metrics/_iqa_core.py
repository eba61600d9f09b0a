"""The numerical core of the IQA metrics: input checks, SRCC, KRCC, and PLCC and RMSE after the
4-parameter logistic fit (the numbers IQA papers report) as well as raw.

This file is the single place where the metric maths lives. It is used two ways:

* the `evaluate` modules in the sibling folders (``srcc/srcc.py``, ...) import it with a
  relative import (``from ._iqa_core import ...``). `evaluate` copies a module's script and its
  relative imports into its module cache, and only looks in the script's own folder, so each
  metric folder holds ``_iqa_core.py`` as a symbolic link to this file;
* :func:`eval.metrics.compute_iqa_metrics` imports it directly, so that the training loop gets
  exactly the numbers that the `evaluate` modules give, without `evaluate`'s Arrow round trip.

It may import only installed packages (numpy, scipy) and nothing from this repository.

Result keys
-----------
``srcc``, ``krcc``: rank correlations (no fit; a monotone map changes nothing).
``plcc``, ``rmse``: after the logistic fit below, the PLCC and RMSE of the paper's tables.
``plcc_raw``, ``rmse_raw``: of the predictions as they are (RMSE on the data set's scale).

The logistic fit (LoDa's, which follows VQEG)
---------------------------------------------
``f(x) = b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|))`` is fitted by least squares
(``scipy.optimize.curve_fit``, Levenberg-Marquardt) from the predictions ``x`` to the MOS ``y``,
in raw units (no standardisation), starting from ``[max(y), min(y), mean(x), 0.5]``, exactly as
LoDa's ``logistic_regression`` (NeosXu/LoDa ``src/utils/metrics.py``), which ``test_model.py``
applies before its PLCC and RMSE. ``plcc`` is then Pearson's r of ``f(x)`` with ``y`` and
``rmse`` is ``sqrt(mean((f(x) - y)^2))`` (LoDa adds 1e-8 under the root; we do not: it moves the
value by less than 1e-7 for any RMSE above 0.05). The only other difference is the budget: LoDa
allows ``maxfev = 1e8`` function evaluations, we allow :data:`LOGISTIC_MAXFEV` (converged fits
take tens to hundreds), so that a fit that does not converge ends in seconds, not hours.

A failed fit (no convergence within the budget, non-finite values, or a curve that is flat over
the predictions) is *never* replaced by the raw value under the ``plcc``/``rmse`` key, because a
table would then silently mix fitted and raw numbers. LoDa's test crashes with scipy's
``RuntimeError``; we follow the degenerate-input policy below: a ``ValueError`` naming the fit by
default, NaN with a :class:`LogisticFitWarning` under ``allow_degenerate=True``.

Degenerate-input policy (shared by every metric)
------------------------------------------------
Always a ``ValueError`` (these are caller bugs, never silently a number):

* predictions and references of different lengths, or not one-dimensional;
* fewer samples than the metric needs (2 for the correlations and the fitted RMSE, 1 for the
  raw RMSE);
* a NaN or infinite value in the references.

A ``ValueError`` by default, and NaN plus a ``RuntimeWarning`` when the caller passes
``allow_degenerate=True`` (so that, for example, a training loop can log a diverged evaluation
and carry on):

* a NaN or infinite value in the predictions (every metric is then NaN);
* constant predictions or constant references, for which a correlation and the fit are undefined
  (the raw RMSE is still well defined and is returned normally);
* a failed logistic fit, or fewer than 4 samples for it (the curve has 4 parameters):
  ``plcc`` and ``rmse`` only, with a :class:`LogisticFitWarning`.

Ties are ranked as scipy does (average ranks for SRCC, tau-b for KRCC), because the values come
from scipy itself.
"""

import warnings

import numpy as np
from scipy import optimize, stats

MIN_SAMPLES_CORRELATION = 2
MIN_SAMPLES_RMSE = 1
MIN_SAMPLES_LOGISTIC = 4

#: Most function evaluations the logistic fit may use (LoDa: 1e8; see the module docstring).
LOGISTIC_MAXFEV = 100_000

#: Every result key, in the order results are reported.
RESULT_KEYS = ("srcc", "plcc", "plcc_raw", "krcc", "rmse", "rmse_raw")

#: Result keys whose value goes through the logistic fit.
FITTED_KEYS = ("plcc", "rmse")


class DegenerateInputWarning(RuntimeWarning):
    """Warned when a metric returns NaN for degenerate input under ``allow_degenerate=True``."""


class LogisticFitWarning(DegenerateInputWarning):
    """Warned when the 4-parameter logistic fit fails and ``plcc``/``rmse`` are NaN."""


def check_inputs(predictions, references, min_samples, metric="metric"):
    """Turn predictions and references into 1-D float64 arrays and check the structural rules.

    Raises ``ValueError`` for mismatched lengths, non-1-D input, fewer than ``min_samples``
    samples, or any NaN/inf in the references. NaN/inf in the predictions is *not* checked here
    (see :func:`degenerate_reason`), because its handling depends on ``allow_degenerate``.
    """
    try:
        pred = np.asarray(predictions, dtype=np.float64)
        ref = np.asarray(references, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{metric}: predictions and references must be numbers ({err})") from err
    if pred.ndim != 1 or ref.ndim != 1:
        raise ValueError(
            f"{metric}: predictions and references must be one-dimensional, "
            f"got shapes {pred.shape} and {ref.shape}"
        )
    if pred.shape[0] != ref.shape[0]:
        raise ValueError(
            f"{metric}: predictions and references differ in length "
            f"({pred.shape[0]} != {ref.shape[0]})"
        )
    if pred.shape[0] < min_samples:
        raise ValueError(
            f"{metric}: needs at least {min_samples} samples, got {pred.shape[0]}"
        )
    bad = ~np.isfinite(ref)
    if bad.any():
        raise ValueError(
            f"{metric}: references contain {int(bad.sum())} NaN or infinite value(s) "
            f"(first at index {int(np.flatnonzero(bad)[0])})"
        )
    return pred, ref


def degenerate_reason(pred, ref, correlation=True, what="correlation"):
    """Return a sentence naming why the metric is undefined for these arrays, or ``None``.

    ``correlation``: also refuse constant input (undefined for a correlation and for the fit);
    ``what`` names the undefined thing in the sentence.
    """
    bad = ~np.isfinite(pred)
    if bad.any():
        return (
            f"predictions contain {int(bad.sum())} NaN or infinite value(s) "
            f"(first at index {int(np.flatnonzero(bad)[0])})"
        )
    if correlation:
        if np.ptp(pred) == 0:
            return f"predictions are constant: {what} is undefined"
        if np.ptp(ref) == 0:
            return f"references are constant: {what} is undefined"
    return None


def _degenerate(metric, reason, allow_degenerate, category=DegenerateInputWarning):
    if not allow_degenerate:
        raise ValueError(
            f"{metric}: {reason} (pass allow_degenerate=True to get NaN with a warning instead)"
        )
    warnings.warn(f"{metric}: {reason}; returning NaN", category, stacklevel=3)
    return float("nan")


def srcc(predictions, references, allow_degenerate=False):
    """Spearman rank-order correlation (average ranks for ties), as a float."""
    pred, ref = check_inputs(predictions, references, MIN_SAMPLES_CORRELATION, "srcc")
    reason = degenerate_reason(pred, ref)
    if reason:
        return _degenerate("srcc", reason, allow_degenerate)
    return float(stats.spearmanr(pred, ref).statistic)


def krcc(predictions, references, allow_degenerate=False):
    """Kendall rank correlation (tau-b, which accounts for ties), as a float."""
    pred, ref = check_inputs(predictions, references, MIN_SAMPLES_CORRELATION, "krcc")
    reason = degenerate_reason(pred, ref)
    if reason:
        return _degenerate("krcc", reason, allow_degenerate)
    return float(stats.kendalltau(pred, ref).statistic)


def plcc_raw(predictions, references, allow_degenerate=False):
    """Pearson linear correlation of the raw predictions with the references, as a float."""
    pred, ref = check_inputs(predictions, references, MIN_SAMPLES_CORRELATION, "plcc_raw")
    reason = degenerate_reason(pred, ref)
    if reason:
        return _degenerate("plcc_raw", reason, allow_degenerate)
    return float(stats.pearsonr(pred, ref).statistic)


def rmse_raw(predictions, references, allow_degenerate=False):
    """Root mean squared error between the raw predictions and the references, as a float.

    Meaningful only when the predictions are on the references' scale (GLIA-HF models score on
    the data set's scale).
    """
    pred, ref = check_inputs(predictions, references, MIN_SAMPLES_RMSE, "rmse_raw")
    reason = degenerate_reason(pred, ref, correlation=False)
    if reason:
        return _degenerate("rmse_raw", reason, allow_degenerate)
    return float(np.sqrt(np.mean((pred - ref) ** 2)))


def logistic4(x, b1, b2, b3, b4):
    """The 4-parameter logistic ``b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|))``.

    The same function as LoDa's ``logistic_func``, with the same floating-point operations in the
    same order, so that the optimiser follows the same path and stops at the same parameters.
    ``exp`` may overflow to ``inf`` far from the centre, which gives the correct limit ``b2``; that
    overflow is not warned about.
    """
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        return b2 + np.divide(b1 - b2, 1 + np.exp(np.negative(np.divide(x - b3, np.abs(b4)))))


def logistic_start(predictions, references):
    """LoDa's starting values ``[max(y), min(y), mean(x), 0.5]`` (x: predictions, y: MOS)."""
    x = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(references, dtype=np.float64)
    return [float(np.max(y)), float(np.min(y)), float(np.mean(x)), 0.5]


def fit_logistic4(predictions, references, maxfev=LOGISTIC_MAXFEV):
    """Fit :func:`logistic4` from predictions to references as LoDa does; return ``(params, fitted)``.

    Raw units, starting values :func:`logistic_start`, ``scipy.optimize.curve_fit`` (its
    ``OptimizeWarning`` about the covariance is irrelevant here and silenced). ``params`` are
    ``(b1, b2, b3, b4)``; ``fitted`` is ``f(predictions)``. Raises ``RuntimeError`` when the
    optimiser does not converge within ``maxfev`` evaluations, or the fitted values are
    non-finite or constant. The inputs must already have passed :func:`check_inputs` and
    :func:`degenerate_reason`.
    """
    x = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(references, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optimize.OptimizeWarning)
        params, _ = optimize.curve_fit(logistic4, x, y, p0=logistic_start(x, y), maxfev=maxfev)
    fitted = logistic4(x, *params)
    if not np.all(np.isfinite(fitted)):
        raise RuntimeError("the fitted curve gives non-finite values")
    if np.ptp(fitted) == 0:
        raise RuntimeError("the fitted curve is flat over the predictions")
    return np.asarray(params, dtype=np.float64), fitted


def _fitted_or_reason(pred, ref):
    """``(fitted, None)``, or ``(None, reason)`` when the data or the fit is degenerate."""
    reason = degenerate_reason(pred, ref, what="the logistic fit")
    if reason:
        return None, reason
    if pred.shape[0] < MIN_SAMPLES_LOGISTIC:
        return None, (f"the 4-parameter logistic fit needs at least {MIN_SAMPLES_LOGISTIC} samples, "
                      f"got {pred.shape[0]}")
    try:
        _, fitted = fit_logistic4(pred, ref)
    except (RuntimeError, ValueError, np.linalg.LinAlgError) as err:
        return None, f"the 4-parameter logistic fit failed ({err})"
    return fitted, None


def _from_fit(key, fitted, ref):
    if key == "plcc":
        return float(stats.pearsonr(fitted, ref).statistic)
    return float(np.sqrt(np.mean((fitted - ref) ** 2)))


def _fitted_metric(key, predictions, references, allow_degenerate):
    pred, ref = check_inputs(predictions, references, MIN_SAMPLES_CORRELATION, key)
    fitted, reason = _fitted_or_reason(pred, ref)
    if reason:
        category = LogisticFitWarning if reason.startswith("the 4-parameter") else DegenerateInputWarning
        return _degenerate(key, reason, allow_degenerate, category)
    return _from_fit(key, fitted, ref)


def plcc(predictions, references, allow_degenerate=False):
    """PLCC after LoDa's 4-parameter logistic fit (the PLCC of the paper's tables), as a float."""
    return _fitted_metric("plcc", predictions, references, allow_degenerate)


def rmse(predictions, references, allow_degenerate=False):
    """RMSE after LoDa's 4-parameter logistic fit, in the references' units, as a float."""
    return _fitted_metric("rmse", predictions, references, allow_degenerate)


#: Result key -> function computing it.
METRIC_FUNCTIONS = {
    "srcc": srcc,
    "plcc": plcc,
    "plcc_raw": plcc_raw,
    "krcc": krcc,
    "rmse": rmse,
    "rmse_raw": rmse_raw,
}


def compute(predictions, references, keys=RESULT_KEYS, allow_degenerate=False):
    """``{key: value}`` for ``keys`` (result keys), fitting the logistic once for ``plcc`` and
    ``rmse``; the same numbers as calling each function of :data:`METRIC_FUNCTIONS`."""
    results = {}
    fit = None
    for key in keys:
        if key not in FITTED_KEYS:
            results[key] = METRIC_FUNCTIONS[key](predictions, references, allow_degenerate=allow_degenerate)
            continue
        pred, ref = check_inputs(predictions, references, MIN_SAMPLES_CORRELATION, key)
        if fit is None:
            fit = _fitted_or_reason(pred, ref)
        fitted, reason = fit
        if reason:
            category = LogisticFitWarning if reason.startswith("the 4-parameter") else DegenerateInputWarning
            results[key] = _degenerate(key, reason, allow_degenerate, category)
        else:
            results[key] = _from_fit(key, fitted, ref)
    return results
