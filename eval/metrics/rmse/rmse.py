"""RMSE: root mean squared error between predicted quality scores and MOS."""

import datasets
import evaluate

from ._iqa_core import rmse as _rmse

_DESCRIPTION = """\
RMSE is the square root of the mean squared difference between the predicted scores and the
subjective scores (MOS). Unlike the correlations it depends on the scale, so it is meaningful only
when the predictions are on the MOS scale of the data set (GLIA-HF models return scores on that
scale). Lower is better; 0 means a perfect prediction.

Degenerate input: mismatched lengths, no samples, or a NaN/inf reference raise a ValueError.
NaN/inf predictions raise a ValueError too, unless `allow_degenerate=True`, which returns NaN with a
RuntimeWarning. Constant predictions are fine: RMSE is defined for them.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): predicted quality scores, one per image, on the MOS scale.
    references (`list` of `float`): subjective scores (MOS) of the same images, same order.
    allow_degenerate (`bool`, defaults to `False`): return NaN with a warning, instead of raising,
        when a prediction is NaN/inf.
Returns:
    rmse (`float`): root mean squared error, in the units of the references.
Examples:
    >>> rmse = evaluate.load("eval/metrics/rmse")
    >>> rmse.compute(predictions=[1.0, 2.0, 3.0, 4.0], references=[1.0, 2.0, 3.0, 6.0])
    {'rmse': 1.0}
"""

_CITATION = """\
@techreport{vqeg2000final,
  title       = {Final Report from the Video Quality Experts Group on the Validation of
                 Objective Models of Video Quality Assessment},
  author      = {{Video Quality Experts Group (VQEG)}},
  institution = {VQEG},
  year        = {2000}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Rmse(evaluate.Metric):
    """Root mean squared error for image quality assessment."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            # Left as Python lists: the "numpy" format would cast the floats to float32.
        )

    def _compute(self, predictions, references, allow_degenerate=False):
        return {"rmse": _rmse(predictions, references, allow_degenerate=allow_degenerate)}
