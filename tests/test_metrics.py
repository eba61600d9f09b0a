"""Tests of the IQA metrics: the shared core, the `evaluate` modules loaded by path, and
`evaluate.combine`, all offline."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from eval.metrics import (
    METRICS_DIR,
    RESULT_KEYS,
    LogisticFitWarning,
    compute_iqa_metrics,
    load_iqa_metrics,
    metric_path,
)
from eval.metrics import _iqa_core

REPO = Path(__file__).resolve().parents[1]

# Fixed data: 12 images, with ties in both predictions and references.
PRED = np.array([0.10, 0.40, 0.40, 0.35, 0.80, 0.75, 0.20, 0.90, 0.55, 0.55, 0.60, 0.05])
MOS = np.array([12.0, 35.0, 41.0, 35.0, 70.0, 77.0, 30.0, 81.0, 52.0, 48.0, 52.0, 15.0])


@pytest.fixture(scope="module")
def offline_evaluate(tmp_path_factory):
    """Import `evaluate` offline, with its module cache and data cache in a temporary HF_HOME."""
    home = tmp_path_factory.mktemp("hf_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("HF_DATASETS_OFFLINE", "1")
    mp.setenv("HF_HOME", str(home))
    import evaluate

    # evaluate reads its paths when first imported; point them at the temporary home unless a
    # dynamic-modules package is already importable from elsewhere in this process.
    if "evaluate_modules" not in sys.modules:
        mp.setattr(evaluate.config, "HF_MODULES_CACHE", home / "modules")
    mp.setattr(evaluate.config, "HF_METRICS_CACHE", home / "metrics")
    yield evaluate
    mp.undo()


# ---------------------------------------------------------------- core vs scipy


def _loda_logistic(x, b1, b2, b3, b4):
    """LoDa's logistic_func (NeosXu/LoDa src/utils/metrics.py), written out independently."""
    return b2 + (b1 - b2) / (1.0 + np.exp(-(x - b3) / np.abs(b4)))


def _loda_fitted(pred, mos):
    """LoDa's logistic_regression: curve_fit in raw units from [max MOS, min MOS, mean pred, 0.5]."""
    from scipy.optimize import curve_fit

    p0 = [np.max(mos), np.min(mos), np.mean(pred), 0.5]
    params, _ = curve_fit(_loda_logistic, pred, mos, p0=p0, maxfev=int(1e8))
    return _loda_logistic(pred, *params)


def test_core_matches_scipy_with_ties():
    got = compute_iqa_metrics(PRED, MOS)
    assert list(got) == list(RESULT_KEYS) == ["srcc", "plcc", "plcc_raw", "krcc", "rmse", "rmse_raw"]
    assert got["srcc"] == pytest.approx(stats.spearmanr(PRED, MOS).statistic, abs=1e-12)
    assert got["plcc_raw"] == pytest.approx(stats.pearsonr(PRED, MOS).statistic, abs=1e-12)
    assert got["krcc"] == pytest.approx(stats.kendalltau(PRED, MOS).statistic, abs=1e-12)
    assert got["rmse_raw"] == pytest.approx(np.sqrt(np.mean((PRED - MOS) ** 2)), abs=1e-12)
    fitted = _loda_fitted(PRED, MOS)
    assert got["plcc"] == pytest.approx(stats.pearsonr(fitted, MOS).statistic, abs=1e-9)
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean((fitted - MOS) ** 2)), abs=1e-7)
    assert all(isinstance(v, float) for v in got.values())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scale", [(1.0, 5.0), (0.0, 100.0)])
def test_plcc_and_rmse_are_lodas_fitted_values(seed, scale):
    # Model-like scores on a MOS scale (1-5 as KonIQ's MOS, 0-100 as LIVE C's), a few hundred images.
    rng = np.random.default_rng(seed)
    lo, hi = scale
    mos = rng.uniform(lo, hi, 300)
    pred = lo + (hi - lo) * (0.5 + 0.4 * np.tanh((mos - (lo + hi) / 2) / (hi - lo) * 3)) \
        + rng.normal(0, 0.05 * (hi - lo), 300)
    got = compute_iqa_metrics(pred, mos)
    fitted = _loda_fitted(pred, mos)
    assert got["plcc"] == pytest.approx(stats.pearsonr(fitted, mos).statistic, abs=1e-9)
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean((fitted - mos) ** 2)), rel=1e-7)
    assert got["plcc"] > got["plcc_raw"] and got["rmse"] < got["rmse_raw"]
    # The evaluate-free single functions give the same numbers as the one-fit path.
    assert _iqa_core.plcc(pred, mos) == got["plcc"] and _iqa_core.rmse(pred, mos) == got["rmse"]


def test_ties_use_average_ranks():
    pred = [1.0, 2.0, 2.0, 2.0, 5.0, 6.0]
    ref = [1.0, 1.0, 3.0, 4.0, 4.0, 6.0]
    expected = stats.pearsonr(stats.rankdata(pred), stats.rankdata(ref)).statistic
    assert compute_iqa_metrics(pred, ref)["srcc"] == pytest.approx(expected, abs=1e-12)
    # tau-b with ties, computed by hand: concordant/discordant pairs over tie-corrected totals.
    n_c = n_d = 0
    tie_x = tie_y = 0
    for i in range(6):
        for j in range(i + 1, 6):
            dx, dy = np.sign(pred[i] - pred[j]), np.sign(ref[i] - ref[j])
            tie_x += dx == 0
            tie_y += dy == 0
            if dx * dy > 0:
                n_c += 1
            elif dx * dy < 0:
                n_d += 1
    n0 = 15
    tau_b = (n_c - n_d) / np.sqrt((n0 - tie_x) * (n0 - tie_y))
    assert compute_iqa_metrics(pred, ref)["krcc"] == pytest.approx(tau_b, abs=1e-12)


def test_rank_metrics_ignore_monotone_transforms():
    base = compute_iqa_metrics(PRED, MOS)
    warped = compute_iqa_metrics(np.exp(5 * PRED), MOS)
    assert warped["srcc"] == pytest.approx(base["srcc"], abs=1e-12)
    assert warped["krcc"] == pytest.approx(base["krcc"], abs=1e-12)
    assert warped["plcc_raw"] != pytest.approx(base["plcc_raw"], abs=1e-6)


def test_accepts_lists_and_numpy_and_tensor_like():
    a = compute_iqa_metrics(list(PRED), list(MOS))
    b = compute_iqa_metrics(PRED.astype(np.float32), MOS)
    assert a["srcc"] == pytest.approx(b["srcc"], abs=1e-12)


# ---------------------------------------------------------------- degenerate input


@pytest.mark.parametrize("which", ["predictions", "references"])
def test_constant_input_raises_by_default(which):
    pred, ref = (np.full(6, 0.5), MOS[:6]) if which == "predictions" else (PRED[:6], np.full(6, 3.0))
    for name in ["srcc", "plcc_raw", "krcc"]:
        with pytest.raises(ValueError, match=f"{which} are constant: correlation is undefined"):
            compute_iqa_metrics(pred, ref, names=[name])
    for name in ["plcc", "rmse"]:
        with pytest.raises(ValueError, match=f"{name}: {which} are constant: the logistic fit is undefined"):
            compute_iqa_metrics(pred, ref, names=[name])


def test_constant_predictions_allowed_give_nan_with_warning():
    pred = np.full(6, 0.5)
    with pytest.warns(RuntimeWarning, match="predictions are constant"):
        got = compute_iqa_metrics(pred, MOS[:6], allow_degenerate=True)
    for key in ["srcc", "plcc", "plcc_raw", "krcc", "rmse"]:
        assert np.isnan(got[key])
    # The raw RMSE is defined for constant predictions and is not NaN.
    assert got["rmse_raw"] == pytest.approx(np.sqrt(np.mean((0.5 - MOS[:6]) ** 2)))


def test_no_silent_nan_from_scipy():
    # Whatever the input, a NaN result comes only with a warning (or an error).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises((ValueError, RuntimeWarning)):
            compute_iqa_metrics([1.0, 1.0, 1.0], [1.0, 2.0, 3.0], allow_degenerate=True)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_predictions(bad):
    pred = PRED.copy()
    pred[3] = bad
    with pytest.raises(ValueError, match=r"predictions contain 1 NaN or infinite value\(s\) \(first at index 3\)"):
        compute_iqa_metrics(pred, MOS)
    with pytest.warns(RuntimeWarning, match="NaN or infinite"):
        got = compute_iqa_metrics(pred, MOS, allow_degenerate=True)
    assert all(np.isnan(v) for v in got.values())


def test_non_finite_references_always_raise():
    ref = MOS.copy()
    ref[0] = np.nan
    for allow in (False, True):
        with pytest.raises(ValueError, match="references contain 1 NaN"):
            compute_iqa_metrics(PRED, ref, allow_degenerate=allow)


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match=r"differ in length \(12 != 11\)"):
        compute_iqa_metrics(PRED, MOS[:-1])
    with pytest.raises(ValueError, match="one-dimensional"):
        compute_iqa_metrics(PRED.reshape(3, 4), MOS.reshape(3, 4))


def test_too_few_samples_raise():
    with pytest.raises(ValueError, match="srcc: needs at least 2 samples, got 1"):
        compute_iqa_metrics([0.3], [2.0], names=["srcc"])
    with pytest.raises(ValueError, match="needs at least 2 samples, got 0"):
        compute_iqa_metrics([], [])
    assert compute_iqa_metrics([0.3], [2.0], names=["rmse_raw"])["rmse_raw"] == pytest.approx(1.7)
    for key in ("plcc", "rmse"):
        with pytest.raises(ValueError, match=f"{key}: the 4-parameter logistic fit needs at least 4 samples, got 3"):
            compute_iqa_metrics([1.0, 2.0, 3.0], [1.0, 3.0, 2.0], names=[key])
    # A tiny test set in a training loop: NaN with a warning for the fitted values, the others as usual.
    with pytest.warns(LogisticFitWarning, match="needs at least 4 samples"):
        got = compute_iqa_metrics([1.0, 2.0, 3.0], [1.0, 3.0, 2.0], allow_degenerate=True)
    assert np.isnan(got["plcc"]) and np.isnan(got["rmse"]) and got["srcc"] == pytest.approx(0.5)


def test_unknown_metric_name():
    with pytest.raises(ValueError, match="unknown IQA metric 'mae'"):
        compute_iqa_metrics(PRED, MOS, names=["srcc", "mae"])
    with pytest.raises(ValueError, match="'plcc_logistic4' is gone: 'plcc' is now the PLCC after the logistic fit"):
        compute_iqa_metrics(PRED, MOS, names=["plcc_logistic4"])


# ---------------------------------------------------------------- logistic PLCC


def _sigmoid_data(sign=1.0, n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-3.0, 3.0, n))
    y = 20.0 + 60.0 / (1.0 + np.exp(-sign * 2.5 * (x - 0.4))) + rng.normal(0.0, 1.0, n)
    return x, y


def test_logistic_plcc_beats_raw_on_monotone_nonlinear_data():
    x, y = _sigmoid_data()
    got = compute_iqa_metrics(x, y)
    assert got["plcc"] > 0.99 and got["plcc_raw"] < 0.97
    params, fitted = _iqa_core.fit_logistic4(x, y)
    b1, b2, b3, b4 = params
    assert b1 == pytest.approx(80.0, abs=2.0) and b2 == pytest.approx(20.0, abs=2.0)
    assert b3 == pytest.approx(0.4, abs=0.1) and abs(b4) == pytest.approx(0.4, abs=0.05)
    assert stats.pearsonr(fitted, y).statistic == pytest.approx(got["plcc"])
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean((fitted - y) ** 2)))
    assert got["rmse"] == pytest.approx(1.0, abs=0.3)  # the noise added to the sigmoid


def test_fit_starts_from_lodas_values():
    x, y = _sigmoid_data()
    assert _iqa_core.logistic_start(x, y) == [y.max(), y.min(), x.mean(), 0.5]


@pytest.mark.parametrize("failure", ["maxfev", "flat"])
def test_failed_fit_is_never_the_raw_value(monkeypatch, failure):
    if failure == "maxfev":
        # scipy's own failure: "Optimal parameters not found: ... maxfev" (LoDa's test would crash here).
        monkeypatch.setattr(_iqa_core, "LOGISTIC_MAXFEV", 3)
        monkeypatch.setattr(_iqa_core.fit_logistic4, "__defaults__", (3,))
        match = "the 4-parameter logistic fit failed .*maxfev"
    else:
        monkeypatch.setattr(_iqa_core, "logistic4", lambda x, *p: np.zeros_like(np.asarray(x, dtype=float)))
        match = "the 4-parameter logistic fit failed .*flat"
    with pytest.raises(ValueError, match="plcc: " + match):
        compute_iqa_metrics(PRED, MOS)
    with pytest.warns(LogisticFitWarning, match=match) as caught:
        got = compute_iqa_metrics(PRED, MOS, allow_degenerate=True)
    assert {str(w.message).split(":")[0] for w in caught} == {"plcc", "rmse"}
    assert np.isnan(got["plcc"]) and np.isnan(got["rmse"])
    # The raw values and the rank correlations are still reported, under their own keys.
    assert got["plcc_raw"] == pytest.approx(stats.pearsonr(PRED, MOS).statistic)
    assert np.isfinite(got["srcc"]) and np.isfinite(got["rmse_raw"])


# ---------------------------------------------------------------- evaluate modules


def test_metric_folders_hold_module_and_core():
    for name in ["srcc", "plcc", "krcc", "rmse"]:
        folder = metric_path(name)
        assert (folder / f"{name}.py").is_file()
        assert (folder / "_iqa_core.py").resolve() == (METRICS_DIR / "_iqa_core.py").resolve()


def test_modules_match_core_and_combine(offline_evaluate):
    combined = load_iqa_metrics()
    assert isinstance(combined, offline_evaluate.CombinedEvaluations)
    got = combined.compute(predictions=PRED.tolist(), references=MOS.tolist())
    want = compute_iqa_metrics(PRED, MOS)
    assert list(got) == list(want) == list(RESULT_KEYS)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    # scipy again, through evaluate's Arrow round trip (float64 features keep full precision)
    assert got["srcc"] == pytest.approx(stats.spearmanr(PRED, MOS).statistic, abs=1e-12)


def test_single_modules_and_plain_combine(offline_evaluate):
    evaluate = offline_evaluate
    srcc = evaluate.load(str(metric_path("srcc")), keep_in_memory=True)
    krcc = evaluate.load(str(metric_path("krcc")), keep_in_memory=True)
    plcc = evaluate.load(str(metric_path("plcc")), keep_in_memory=True)
    rmse_raw = evaluate.load(str(metric_path("rmse")), "raw", keep_in_memory=True)
    assert srcc.name == "srcc"
    assert "Spearman" in srcc.citation and srcc.description
    both = evaluate.combine([srcc, krcc, plcc, rmse_raw])
    got = both.compute(predictions=PRED, references=MOS)
    assert set(got) == {"srcc", "krcc", "plcc", "rmse_raw"}
    assert got["plcc"] == pytest.approx(compute_iqa_metrics(PRED, MOS)["plcc"], abs=1e-12)
    # incremental use: add_batch then compute
    for lo in range(0, 12, 5):
        both.add_batch(predictions=PRED[lo:lo + 5], references=MOS[lo:lo + 5])
    again = both.compute()
    assert again == pytest.approx(got)
    with pytest.raises(ValueError, match="unknown configuration 'cubic'"):
        evaluate.load(str(metric_path("plcc")), "cubic")
    with pytest.raises(ValueError, match='"logistic4" configuration is now the default one'):
        evaluate.load(str(metric_path("plcc")), "logistic4")


def test_combined_degenerate_policy(offline_evaluate):
    combined = load_iqa_metrics(names=("srcc", "rmse_raw"))
    with pytest.raises(ValueError, match="predictions are constant"):
        combined.compute(predictions=[0.5] * 5, references=[1.0, 2.0, 3.0, 4.0, 5.0])
    with pytest.warns(RuntimeWarning, match="predictions are constant"):
        got = combined.compute(predictions=[0.5] * 5, references=[1.0, 2.0, 3.0, 4.0, 5.0],
                               allow_degenerate=True)
    assert np.isnan(got["srcc"]) and np.isfinite(got["rmse_raw"])
    with pytest.raises(ValueError, match="Mismatch in the number of predictions"):
        combined.compute(predictions=[0.1, 0.2, 0.3], references=[1.0, 2.0])
    with pytest.raises(ValueError, match="references contain 1 NaN"):
        combined.compute(predictions=[0.1, 0.2, 0.3], references=[1.0, float("nan"), 2.0])


def test_subset_keys_in_the_order_given(offline_evaluate):
    combined = load_iqa_metrics(names=("plcc_raw", "srcc", "rmse"))
    got = combined.compute(predictions=PRED, references=MOS)
    assert list(got) == ["plcc_raw", "srcc", "rmse"]
    assert list(compute_iqa_metrics(PRED, MOS, names=("plcc_raw", "srcc", "rmse"))) == list(got)


def test_loads_offline_in_a_fresh_process_with_empty_hf_home(tmp_path):
    home = tmp_path / "empty_hf_home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               PYTHONPATH=str(REPO))
    code = (
        "import json\n"
        "from eval.metrics import load_iqa_metrics\n"
        "m = load_iqa_metrics()\n"
        "print(json.dumps(m.compute(predictions=[1, 2, 3, 4, 5.], references=[1, 3, 2, 5, 4.])))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["srcc"] == pytest.approx(0.8) and got["krcc"] == pytest.approx(0.6)
    assert set(got) == set(RESULT_KEYS)
    # the module scripts were copied under the empty HF_HOME, nowhere else
    assert list(home.rglob("srcc.py"))
