"""PLCC: Pearson's linear correlation between predicted quality scores and MOS, after the standard
4-parameter logistic mapping (default, as IQA papers report it) or raw."""

import datasets
import evaluate

from ._iqa_core import plcc as _plcc
from ._iqa_core import plcc_raw as _plcc_raw

_DESCRIPTION = """\
PLCC measures how well a straight line through the predicted scores explains the subjective scores
(MOS) (prediction accuracy), from -1 to 1.

Two configurations:
- "default": the predictions are first mapped by the 4-parameter logistic
  f(x) = b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|)), fitted by least squares
  (scipy.optimize.curve_fit) from the predictions to the MOS in raw units, starting from
  [max MOS, min MOS, mean prediction, 0.5], exactly as LoDa does (and as VQEG recommends), so
  that a model is not penalised for a monotone non-linear scale. Result key `plcc`: the PLCC of
  IQA papers' tables. A failed fit is never replaced by the raw value: it raises a ValueError,
  or gives NaN with a RuntimeWarning under `allow_degenerate=True`.
- "raw": PLCC of the predictions as they are. Result key `plcc_raw`.

Degenerate input: mismatched lengths, fewer than 4 samples (2 for "raw"), or a NaN/inf
reference raise a ValueError. Constant predictions or references (correlation undefined) and
NaN/inf predictions raise a ValueError too, unless `allow_degenerate=True`, which returns NaN with a
RuntimeWarning.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): predicted quality scores, one per image.
    references (`list` of `float`): subjective scores (MOS) of the same images, same order.
    allow_degenerate (`bool`, defaults to `False`): return NaN with a warning, instead of raising,
        when the correlation is undefined (constant input) or a prediction is NaN/inf.
Returns:
    plcc (`float`, config "default"): Pearson correlation after the logistic fit, in [-1, 1].
    plcc_raw (`float`, config "raw"): Pearson correlation of the raw predictions.
Examples:
    >>> plcc_raw = evaluate.load("eval/metrics/plcc", "raw")
    >>> plcc_raw.compute(predictions=[1.0, 2.0, 3.0, 4.0], references=[2.0, 4.0, 6.0, 8.0])
    {'plcc_raw': 1.0}
    >>> plcc = evaluate.load("eval/metrics/plcc")
    >>> sorted(plcc.compute(predictions=[1.0, 2.0, 3.0, 4.0, 5.0], references=[1.0, 1.5, 3.0, 4.5, 5.0]))
    ['plcc']
"""

_CITATION = """\
@article{pearson1895note,
  title   = {Note on Regression and Inheritance in the Case of Two Parents},
  author  = {Pearson, Karl},
  journal = {Proceedings of the Royal Society of London},
  volume  = {58},
  pages   = {240--242},
  year    = {1895}
}
@techreport{vqeg2000final,
  title       = {Final Report from the Video Quality Experts Group on the Validation of
                 Objective Models of Video Quality Assessment},
  author      = {{Video Quality Experts Group (VQEG)}},
  institution = {VQEG},
  year        = {2000}
}
"""

_CONFIGS = {"default": ("plcc", _plcc), "raw": ("plcc_raw", _plcc_raw)}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Plcc(evaluate.Metric):
    """Pearson linear correlation coefficient for image quality assessment (after the logistic fit, or raw)."""

    def _info(self):
        if self.config_name == "logistic4":
            raise ValueError('plcc: the "logistic4" configuration is now the default one (result key '
                             '"plcc"); use "raw" for the raw PLCC')
        if self.config_name not in _CONFIGS:
            raise ValueError(
                f"plcc: unknown configuration {self.config_name!r}; choose one of {sorted(_CONFIGS)}"
            )
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            # Left as Python lists: the "numpy" format would cast the floats to float32.
            reference_urls=[
                "https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.pearsonr.html",
                "https://docs.scipy.org/doc/scipy/reference/generated/scipy.optimize.curve_fit.html",
            ],
        )

    def _compute(self, predictions, references, allow_degenerate=False):
        key, fn = _CONFIGS[self.config_name]
        return {key: fn(predictions, references, allow_degenerate=allow_degenerate)}
