"""The numerical core of the IQA metrics: input checks, SRCC, PLCC (raw and after a
4-parameter logistic fit), KRCC and RMSE.

This file is the single place where the metric maths lives. It is used two ways:

* the `evaluate` modules in the sibling folders (``srcc/srcc.py``, ...) import it with a
  relative import (``from ._iqa_core import ...``). `evaluate` copies a module's script and its
  relative imports into its module cache, and only looks in the script's own folder, so each
  metric folder holds ``_iqa_core.py`` as a symbolic link to this file;
* :func:`eval.metrics.compute_iqa_metrics` imports it directly, so that the training loop gets
  exactly the numbers that the `evaluate` modules give, without `evaluate`'s Arrow round trip.

It may import only installed packages (numpy, scipy) and nothing from this repository.

Degenerate-input policy (shared by every metric)
------------------------------------------------
Always a ``ValueError`` (these are caller bugs, never silently a number):

* predictions and references of different lengths, or not one-dimensional;
* fewer samples than the metric needs (2 for the correlations, 1 for RMSE, 4 for the
  logistic fit);
* a NaN or infinite value in the references.

A ``ValueError`` by default, and NaN plus a ``RuntimeWarning`` when the caller passes
``allow_degenerate=True`` (so that, for example, a training loop can log a diverged evaluation
and carry on):

* a NaN or infinite value in the predictions (every metric is then NaN);
* constant predictions or constant references, for which a correlation is undefined (RMSE is
  still well defined and is returned normally).

Ties are ranked as scipy does (average ranks for SRCC, tau-b for KRCC), because the values come
from scipy itself.

The logistic fit: ``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2`` is fitted by least
squares (``scipy.optimize.curve_fit``) from the predictions to the references, and the PLCC of
``f(predictions)`` against the references is reported as ``plcc_logistic4``. The fit is made on
z-scored predictions and references, which changes nothing in the result (the family is closed
under affine changes of either axis and PLCC ignores them) but makes the starting values
scale-free. Since ``f`` may decrease as well as increase, the fitted PLCC is never negative for a
monotone relation of either sign. If the optimiser fails, a ``RuntimeWarning`` says so and the raw
PLCC is returned under the same key (a conservative fallback: it is what the identity map gives).
"""

import warnings

import numpy as np
from scipy import optimize, special, stats

MIN_SAMPLES_CORRELATION = 2
MIN_SAMPLES_RMSE = 1
MIN_SAMPLES_LOGISTIC = 4


class DegenerateInputWarning(RuntimeWarning):
    """Warned when a metric returns NaN for degenerate input under ``allow_degenerate=True``."""


class LogisticFitWarning(RuntimeWarning):
    """Warned when the 4-parameter logistic fit fails and the raw PLCC is used instead."""


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


def degenerate_reason(pred, ref, correlation=True):
    """Return a sentence naming why the metric is undefined for these arrays, or ``None``."""
    bad = ~np.isfinite(pred)
    if bad.any():
        return (
            f"predictions contain {int(bad.sum())} NaN or infinite value(s) "
            f"(first at index {int(np.flatnonzero(bad)[0])})"
        )
    if correlation:
        if np.ptp(pred) == 0:
            return "predictions are constant: correlation is undefined"
        if np.ptp(ref) == 0:
            return "references are constant: correlation is undefined"
    return None


def _degenerate(metric, reason, allow_degenerate):
    if not allow_degenerate:
        raise ValueError(
            f"{metric}: {reason} (pass allow_degenerate=True to get NaN with a warning instead)"
        )
    warnings.warn(f"{metric}: {reason}; returning NaN", DegenerateInputWarning, stacklevel=3)
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


def plcc(predictions, references, allow_degenerate=False):
    """Pearson linear correlation of the raw predictions with the references, as a float."""
    pred, ref = check_inputs(predictions, references, MIN_SAMPLES_CORRELATION, "plcc")
    reason = degenerate_reason(pred, ref)
    if reason:
        return _degenerate("plcc", reason, allow_degenerate)
    return float(stats.pearsonr(pred, ref).statistic)


def rmse(predictions, references, allow_degenerate=False):
    """Root mean squared error between predictions and references (same scale), as a float."""
    pred, ref = check_inputs(predictions, references, MIN_SAMPLES_RMSE, "rmse")
    reason = degenerate_reason(pred, ref, correlation=False)
    if reason:
        return _degenerate("rmse", reason, allow_degenerate)
    return float(np.sqrt(np.mean((pred - ref) ** 2)))


def logistic4(x, b1, b2, b3, b4):
    """The 4-parameter logistic ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``.

    Written with ``scipy.special.expit`` so that large arguments do not overflow; ``|b4|`` is
    floored at 1e-12 to keep the division finite.
    """
    scale = max(abs(float(b4)), 1e-12)
    return (b1 - b2) * special.expit((np.asarray(x, dtype=np.float64) - b3) / scale) + b2


def fit_logistic4(predictions, references, maxfev=20000):
    """Fit :func:`logistic4` from predictions to references; return ``(params, fitted)``.

    ``params`` are in the original units of both axes; ``fitted`` is ``f(predictions)``.
    Raises ``RuntimeError`` when the optimiser does not converge or gives non-finite values.
    The inputs must already have passed :func:`check_inputs` and :func:`degenerate_reason`.
    """
    x = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(references, dtype=np.float64)
    x_mu, x_sd = x.mean(), x.std()
    y_mu, y_sd = y.mean(), y.std()
    xz = (x - x_mu) / x_sd
    yz = (y - y_mu) / y_sd
    # Start from a sigmoid spanning the references, centred on the predictions, rising if the
    # relation is increasing (rank sign) and falling otherwise.
    rising = stats.spearmanr(xz, yz).statistic >= 0
    top, bottom = float(yz.max()), float(yz.min())
    p0 = [top, bottom, float(np.median(xz)), 1.0] if rising else [bottom, top, float(np.median(xz)), 1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optimize.OptimizeWarning)
        params, _ = optimize.curve_fit(logistic4, xz, yz, p0=p0, maxfev=maxfev)
    fitted_z = logistic4(xz, *params)
    if not np.all(np.isfinite(fitted_z)):
        raise RuntimeError("logistic fit produced non-finite values")
    b1, b2, b3, b4 = params
    params_orig = np.array(
        [b1 * y_sd + y_mu, b2 * y_sd + y_mu, b3 * x_sd + x_mu, abs(b4) * x_sd], dtype=np.float64
    )
    return params_orig, fitted_z * y_sd + y_mu


def plcc_logistic4(predictions, references, allow_degenerate=False):
    """PLCC after mapping the predictions through a fitted 4-parameter logistic, as a float.

    Falls back to the raw PLCC, with a :class:`LogisticFitWarning`, if the fit fails or its
    output is constant (e.g. a step that puts every sample on one plateau).
    """
    pred, ref = check_inputs(predictions, references, MIN_SAMPLES_LOGISTIC, "plcc_logistic4")
    reason = degenerate_reason(pred, ref)
    if reason:
        return _degenerate("plcc_logistic4", reason, allow_degenerate)
    raw = float(stats.pearsonr(pred, ref).statistic)
    try:
        _, fitted = fit_logistic4(pred, ref)
        if np.ptp(fitted) == 0:
            raise RuntimeError("fitted curve is flat over the predictions")
    except (RuntimeError, ValueError, np.linalg.LinAlgError) as err:
        warnings.warn(
            f"plcc_logistic4: 4-parameter logistic fit failed ({err}); "
            f"reporting the raw PLCC ({raw:.4f}) instead",
            LogisticFitWarning,
            stacklevel=2,
        )
        return raw
    return float(stats.pearsonr(fitted, ref).statistic)


#: Result key -> function computing it.
METRIC_FUNCTIONS = {
    "srcc": srcc,
    "plcc": plcc,
    "krcc": krcc,
    "rmse": rmse,
    "plcc_logistic4": plcc_logistic4,
}
