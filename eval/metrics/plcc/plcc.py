"""PLCC: Pearson's linear correlation between predicted quality scores and MOS, raw or after the
standard 4-parameter logistic mapping."""

import datasets
import evaluate

from ._iqa_core import plcc as _plcc
from ._iqa_core import plcc_logistic4 as _plcc_logistic4

_DESCRIPTION = """\
PLCC measures how well a straight line through the predicted scores explains the subjective scores
(MOS) (prediction accuracy), from -1 to 1.

Two configurations:
- "default": PLCC of the raw predictions; result key `plcc`.
- "logistic4": the predictions are first mapped by the 4-parameter logistic
  f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2, fitted by least squares
  (scipy.optimize.curve_fit) from the predictions to the MOS, as is customary in IQA so that a
  model is not penalised for a monotone non-linear scale. Result key `plcc_logistic4`. If the fit
  fails, a RuntimeWarning says so and the raw PLCC is reported under that key. Because f may
  fall as well as rise, this value is not negative for a monotone relation of either sign.

Degenerate input: mismatched lengths, fewer than 2 samples (4 for "logistic4"), or a NaN/inf
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
    plcc (`float`, config "default"): Pearson correlation of the raw predictions, in [-1, 1].
    plcc_logistic4 (`float`, config "logistic4"): Pearson correlation after the logistic fit.
Examples:
    >>> plcc = evaluate.load("eval/metrics/plcc")
    >>> plcc.compute(predictions=[1.0, 2.0, 3.0, 4.0], references=[2.0, 4.0, 6.0, 8.0])
    {'plcc': 1.0}
    >>> plcc4 = evaluate.load("eval/metrics/plcc", "logistic4")
    >>> sorted(plcc4.compute(predictions=[1.0, 2.0, 3.0, 4.0, 5.0], references=[1.0, 1.5, 3.0, 4.5, 5.0]))
    ['plcc_logistic4']
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

_CONFIGS = {"default": ("plcc", _plcc), "logistic4": ("plcc_logistic4", _plcc_logistic4)}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Plcc(evaluate.Metric):
    """Pearson linear correlation coefficient for image quality assessment (raw or logistic)."""

    def _info(self):
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
