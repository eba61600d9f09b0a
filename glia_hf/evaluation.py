"""An `evaluate` Evaluator for the `image-quality-assessment` task, and the IQA metrics it computes.

    from glia_hf.evaluation import IQAEvaluator, load_iqa_metrics
    from glia_hf.data import load_iqa_dataset

    data = load_iqa_dataset("livec", "/data/ChallengeDB_release")        # columns image (path), mos, ...
    results = IQAEvaluator().compute(model_or_pipeline="path/or/hub-id", data=data, metric=load_iqa_metrics())
    results = IQAEvaluator().compute(model_or_pipeline=pipe, data=data, strategy="bootstrap", random_state=0)

Like transformers' other tasks in `evaluate` (`evaluate.evaluator("image-classification")`), the evaluator runs a
pipeline over the `input_column` of a dataset and hands its outputs and the `label_column` to the metric. What it
accepts as `model_or_pipeline`:

- a local folder or Hub id: built with :func:`load_iqa_pipeline` (our own construction, with `trust_remote_code=True`,
  which `evaluate`'s own one does not pass, so checkpoints that carry their code load too);
- a model instance, or a ready `image-quality-assessment` pipeline;
- any callable that maps a list of images (the column's values: file paths or PIL images) to one score per image
  (numbers, or dicts with a `"score"`).

The metrics. The maths lives once, in ``eval/metrics/_iqa_core.py``. ``eval/`` is a folder of the repository, not an
installed package, so ``glia_hf/_metrics`` is a symbolic link to ``eval/metrics`` (and ``glia_hf/_reporting.py`` one
to ``eval/reporting.py``, for the table renderer and the metric labels): the same files are importable from the
installed package and copied into the wheel, with nothing duplicated. Results use the project's keys: ``srcc``,
``plcc`` (after the 4-parameter logistic fit), ``plcc_raw``, ``krcc``, ``rmse`` (after the fit), ``rmse_raw``; a key
that the metric code does not compute is absent, never filled with another quantity.

Bootstrap (`strategy="bootstrap"`): the (prediction, MOS) pairs are resampled with replacement `n_resamples` times
(default 1,000, not `evaluate`'s 9,999) and every metric, the logistic fit included, is recomputed on each resample
(one fit per resample serves all fitted metrics); the interval is the percentile interval at `confidence_level`, the
standard error the resamples' standard deviation. The fit is redone rather than frozen so that the interval covers
the statistic the table reports; capping the resamples keeps that affordable (about 1,000 curve fits per data set).
For the IQA metrics this runs the plain functions directly (`compute_iqa_metrics`, the same numbers as the `evaluate`
modules without their Arrow round trip); for any other metric, its `compute` is called per resample.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from time import perf_counter
from typing import Callable, Optional

import numpy as np

from ._metrics import RESULT_KEYS
from ._metrics import compute_iqa_metrics as _compute_core
from ._metrics import load_iqa_metrics as _load_core
from .pipeline_glia import PIPELINE_TASK


#: Result keys, in table order (`plcc` and `rmse` after the logistic fit, `*_raw` without it): the metric code's own.
METRIC_KEYS = RESULT_KEYS
DEFAULT_RESAMPLES = 1000

try:
    from evaluate import Evaluator as _EvaluatorBase
except ImportError:  # `evaluate` is in the [train] extra; the evaluator needs it, the metric functions do not
    _EvaluatorBase = object


def _in_table_order(result: Mapping) -> dict:
    """The results as floats, `METRIC_KEYS` first in table order, other keys (another metric's) after them."""
    result = dict(result)
    ordered = {key: float(result.pop(key)) for key in METRIC_KEYS if key in result}
    return {**ordered, **result}


def compute_metrics(predictions, references, allow_degenerate: bool = False) -> dict:
    """Every IQA metric of one evaluation (`eval/metrics`' `compute_iqa_metrics`), in table order."""
    return _in_table_order(_compute_core(predictions, references, allow_degenerate=allow_degenerate))


def load_iqa_metrics(**options):
    """The shipped IQA metrics as one `evaluate.CombinedEvaluations`, the logistic PLCC included; loaded by path."""
    return _load_core(**options)


def load_iqa_pipeline(model, device=None, **options):
    """`pipeline("image-quality-assessment", model=model, trust_remote_code=True)` for a folder or Hub id."""
    from transformers import pipeline

    return pipeline(PIPELINE_TASK, model=model, device=device, trust_remote_code=True, **options)


def bootstrap(predictions, references, statistic: Callable[[np.ndarray, np.ndarray], Mapping],
              n_resamples: int = DEFAULT_RESAMPLES, confidence_level: float = 0.95,
              random_state: Optional[int] = None) -> dict:
    """Percentile bootstrap of every value `statistic(predictions, references)` returns, over resampled pairs.

    Returns ``{key: {"confidence_interval": (low, high), "standard_error": se}}``. Resamples on which a value is
    undefined (e.g. all predictions equal) are left out of that value's interval.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    if not 0 < confidence_level < 1:
        raise ValueError(f"confidence_level must be between 0 and 1, got {confidence_level}")
    predictions, references = np.asarray(predictions, dtype=np.float64), np.asarray(references, dtype=np.float64)
    rng = np.random.default_rng(random_state)
    samples: dict[str, list] = {}
    for _ in range(n_resamples):
        rows = rng.integers(0, len(predictions), len(predictions))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = statistic(predictions[rows], references[rows])
        for key, value in values.items():
            samples.setdefault(key, []).append(float(value))
    tail = 100 * (1 - confidence_level) / 2
    intervals = {}
    for key, values in samples.items():
        values = np.asarray(values)
        values = values[np.isfinite(values)]
        if values.size == 0:
            intervals[key] = {"confidence_interval": (float("nan"), float("nan")), "standard_error": float("nan")}
            continue
        low, high = np.percentile(values, [tail, 100 - tail])
        se = float(values.std(ddof=1)) if values.size > 1 else 0.0
        intervals[key] = {"confidence_interval": (float(low), float(high)), "standard_error": se}
    return intervals


class _CallableScorer:
    """Wraps a callable `images -> scores` so the evaluator can treat it like a pipeline."""

    task = PIPELINE_TASK

    def __init__(self, function):
        self.function = function

    def __call__(self, images, **unused):
        return self.function(images)


class IQAEvaluator(_EvaluatorBase):
    """`evaluate` Evaluator for the `image-quality-assessment` task (blind IQA: one score per image).

    `compute(model_or_pipeline, data, metric=None, strategy="simple", ...)` scores `data[input_column]` (default
    `"image"`, file paths or PIL images) and compares them with `data[label_column]` (default `"mos"`, the column
    `glia_hf.data` readers give). `metric` defaults to :func:`load_iqa_metrics`. Extra keyword options of
    `compute`: `batch_size`, `num_samples` and `seed` go to our pipeline (ignored for a plain callable).

    Returns the metrics under the project's keys (see the module docstring) and `evaluate`'s timing keys
    (`total_time_in_seconds`, `samples_per_second`, `latency_in_seconds`); with `strategy="bootstrap"` each metric
    is `{"score", "confidence_interval", "standard_error"}`.
    """

    PIPELINE_KWARGS: dict = {}
    METRIC_KWARGS: dict = {}

    def __init__(self, task: str = PIPELINE_TASK, default_metric_name: Optional[str] = None):
        if _EvaluatorBase is object:
            raise ImportError("IQAEvaluator needs the `evaluate` package: pip install 'glia-hf[train]'")
        super().__init__(task, default_metric_name=default_metric_name)
        self.predictions = None  # the scores of the last `compute`, in data order

    def compute(self, model_or_pipeline=None, data=None, subset=None, split=None, metric=None, tokenizer=None,
                feature_extractor=None, strategy="simple", confidence_level=0.95, n_resamples=DEFAULT_RESAMPLES,
                device=None, random_state=None, input_column="image", label_column="mos", label_mapping=None,
                batch_size: int = 8, num_samples: Optional[int] = None, seed: Optional[int] = None) -> dict:
        if strategy not in ("simple", "bootstrap"):
            raise ValueError(f"strategy must be 'simple' or 'bootstrap', got {strategy!r}")
        options = {"batch_size": batch_size}
        if num_samples is not None:
            options.update(num_samples=num_samples, seed=0 if seed is None else seed)
        self.PIPELINE_KWARGS = options
        return super().compute(
            model_or_pipeline=model_or_pipeline, data=data, subset=subset, split=split, metric=metric,
            tokenizer=tokenizer, feature_extractor=feature_extractor, strategy=strategy,
            confidence_level=confidence_level, n_resamples=n_resamples, device=device, random_state=random_state,
            input_column=input_column, label_column=label_column, label_mapping=label_mapping,
        )

    def prepare_data(self, data, input_column: str, label_column: str, *args, **kwargs):
        self.check_required_columns(data, {"input_column": input_column, "label_column": label_column})
        return {"references": [float(value) for value in data[label_column]]}, list(data[input_column])

    def prepare_pipeline(self, model_or_pipeline, tokenizer=None, feature_extractor=None, device=None):
        from transformers import Pipeline, PreTrainedModel

        if model_or_pipeline is None:
            raise ValueError("IQAEvaluator needs model_or_pipeline: a checkpoint folder, a Hub id, a pipeline or a "
                             "callable mapping images to scores (there is no default model)")
        if isinstance(model_or_pipeline, (str, PreTrainedModel)):
            return load_iqa_pipeline(model_or_pipeline, device=device)
        if isinstance(model_or_pipeline, Pipeline):
            if model_or_pipeline.task != self.task:
                raise ValueError(f"the pipeline's task is {model_or_pipeline.task!r}, not {self.task!r}")
            return model_or_pipeline
        if callable(model_or_pipeline):
            return _CallableScorer(model_or_pipeline)
        raise TypeError(f"cannot evaluate a {type(model_or_pipeline).__name__}: give a checkpoint folder, a Hub id, "
                        "a pipeline or a callable mapping images to scores")

    def prepare_metric(self, metric):
        return load_iqa_metrics() if metric is None else super().prepare_metric(metric)

    def call_pipeline(self, pipe, inputs, **unused):
        start = perf_counter()
        outputs = pipe(inputs, **self.PIPELINE_KWARGS)
        end = perf_counter()
        outputs = list(outputs) if not isinstance(outputs, Mapping) else [outputs]
        if len(outputs) != len(inputs):
            raise ValueError(f"the scorer returned {len(outputs)} scores for {len(inputs)} images")
        return outputs, self._compute_time_perf(start, end, len(inputs))

    def predictions_processor(self, predictions, label_mapping=None):
        scores = [float(p["score"]) if isinstance(p, Mapping) else float(p) for p in predictions]
        self.predictions = scores
        return {"predictions": scores}

    def compute_metric(self, metric, metric_inputs: dict, strategy="simple", confidence_level=0.95,
                       n_resamples=DEFAULT_RESAMPLES, random_state=None) -> dict:
        raw = metric.compute(**metric_inputs, **self.METRIC_KWARGS)
        result = _in_table_order(raw)
        if strategy != "bootstrap":
            return result
        if set(result) <= set(METRIC_KEYS):  # our metrics: the plain functions, the same numbers, no Arrow
            def statistic(predictions, references):
                values = compute_metrics(predictions, references, allow_degenerate=True)
                return {key: values.get(key, float("nan")) for key in result}
        else:
            def statistic(predictions, references):
                values = _in_table_order(metric.compute(predictions=list(predictions), references=list(references),
                                                     **self.METRIC_KWARGS))
                return {key: values[key] for key in result}
        intervals = bootstrap(metric_inputs["predictions"], metric_inputs["references"], statistic,
                              n_resamples=n_resamples, confidence_level=confidence_level, random_state=random_state)
        return {key: {"score": value, **intervals[key]} for key, value in result.items()}


__all__ = [
    "DEFAULT_RESAMPLES",
    "IQAEvaluator",
    "METRIC_KEYS",
    "bootstrap",
    "compute_metrics",
    "load_iqa_metrics",
    "load_iqa_pipeline",
]
