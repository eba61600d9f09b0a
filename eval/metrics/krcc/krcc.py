"""KRCC: Kendall's rank correlation between predicted quality scores and MOS."""

import datasets
import evaluate

from ._iqa_core import krcc as _krcc

_DESCRIPTION = """\
KRCC counts, over all pairs of images, how often the predicted scores and the subjective scores
(MOS) agree on which image of the pair is better, minus how often they disagree, normalised to
[-1, 1]. Like SRCC it depends only on the order of the scores. Ties are handled by the tau-b
variant, exactly as scipy.stats.kendalltau does by default.

Degenerate input: mismatched lengths, fewer than 2 samples, or a NaN/inf reference raise a
ValueError. Constant predictions or references (correlation undefined) and NaN/inf predictions
raise a ValueError too, unless `allow_degenerate=True`, which returns NaN with a RuntimeWarning.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): predicted quality scores, one per image.
    references (`list` of `float`): subjective scores (MOS) of the same images, same order.
    allow_degenerate (`bool`, defaults to `False`): return NaN with a warning, instead of raising,
        when the correlation is undefined (constant input) or a prediction is NaN/inf.
Returns:
    krcc (`float`): Kendall's tau-b, in [-1, 1].
Examples:
    >>> krcc = evaluate.load("eval/metrics/krcc")
    >>> krcc.compute(predictions=[1.0, 2.0, 3.0, 4.0], references=[10.0, 30.0, 20.0, 40.0])
    {'krcc': 0.6666666666666669}
"""

_CITATION = """\
@article{kendall1938new,
  title   = {A New Measure of Rank Correlation},
  author  = {Kendall, Maurice G.},
  journal = {Biometrika},
  volume  = {30},
  number  = {1/2},
  pages   = {81--93},
  year    = {1938}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Krcc(evaluate.Metric):
    """Kendall rank correlation coefficient (tau-b) for image quality assessment."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            # Left as Python lists: the "numpy" format would cast the floats to float32.
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.kendalltau.html"],
        )

    def _compute(self, predictions, references, allow_degenerate=False):
        return {"krcc": _krcc(predictions, references, allow_degenerate=allow_degenerate)}
