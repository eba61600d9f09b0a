"""SRCC: Spearman's rank-order correlation between predicted quality scores and MOS."""

import datasets
import evaluate

from ._iqa_core import srcc as _srcc

_DESCRIPTION = """\
SRCC measures how well the predicted scores put the images in the same order as the subjective
scores (MOS). It is the Pearson correlation of the two rankings, so any monotone change of the
predictions leaves it unchanged; it ranges from -1 (reversed order) to 1 (same order). It is the
primary number in blind image quality assessment papers (prediction monotonicity). Tied values get
the average of the ranks they span, exactly as scipy.stats.spearmanr does.

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
    srcc (`float`): Spearman's rank-order correlation, in [-1, 1].
Examples:
    >>> srcc = evaluate.load("eval/metrics/srcc")
    >>> srcc.compute(predictions=[1.0, 2.0, 3.0, 4.0], references=[10.0, 30.0, 20.0, 40.0])
    {'srcc': 0.7999999999999999}
"""

_CITATION = """\
@article{spearman1904proof,
  title   = {The Proof and Measurement of Association between Two Things},
  author  = {Spearman, Charles},
  journal = {The American Journal of Psychology},
  volume  = {15},
  number  = {1},
  pages   = {72--101},
  year    = {1904}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Srcc(evaluate.Metric):
    """Spearman rank-order correlation coefficient for image quality assessment."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            # Left as Python lists: the "numpy" format would cast the floats to float32.
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.spearmanr.html"],
        )

    def _compute(self, predictions, references, allow_degenerate=False):
        return {"srcc": _srcc(predictions, references, allow_degenerate=allow_degenerate)}
