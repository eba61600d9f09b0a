"""RMSE: root mean squared error between predicted quality scores and MOS, after the 4-parameter
logistic mapping (default, as IQA papers report it) or raw."""

import datasets
import evaluate

from ._iqa_core import rmse as _rmse
from ._iqa_core import rmse_raw as _rmse_raw

_DESCRIPTION = """\
RMSE is the square root of the mean squared difference between the predicted scores and the
subjective scores (MOS). Lower is better; 0 means a perfect prediction.

Two configurations:
- "default": the predictions are first mapped onto the MOS scale by the 4-parameter logistic
  f(x) = b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|)), fitted as LoDa fits it (least squares in raw
  units from [max MOS, min MOS, mean prediction, 0.5]); result key `rmse`, in MOS units, the RMSE
  of IQA papers. A failed fit raises a ValueError (NaN with a warning under `allow_degenerate=True`).
- "raw": the predictions as they are; result key `rmse_raw`. Meaningful only when the predictions
  are on the MOS scale of the data set (GLIA-HF models return scores on that scale).

Degenerate input: mismatched lengths, too few samples (4 for the fit, 1 for "raw"), or a NaN/inf
reference raise a ValueError. NaN/inf predictions, and (default configuration) constant input,
raise a ValueError too, unless `allow_degenerate=True`, which returns NaN with a RuntimeWarning.
The raw RMSE is defined for constant predictions.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): predicted quality scores, one per image.
    references (`list` of `float`): subjective scores (MOS) of the same images, same order.
    allow_degenerate (`bool`, defaults to `False`): return NaN with a warning, instead of raising,
        when a prediction is NaN/inf, the input is constant or the fit fails.
Returns:
    rmse (`float`, config "default"): RMSE after the logistic fit, in the units of the references.
    rmse_raw (`float`, config "raw"): RMSE of the raw predictions.
Examples:
    >>> rmse_raw = evaluate.load("eval/metrics/rmse", "raw")
    >>> rmse_raw.compute(predictions=[1.0, 2.0, 3.0, 4.0], references=[1.0, 2.0, 3.0, 6.0])
    {'rmse_raw': 1.0}
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


_CONFIGS = {"default": ("rmse", _rmse), "raw": ("rmse_raw", _rmse_raw)}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Rmse(evaluate.Metric):
    """Root mean squared error for image quality assessment (after the logistic fit, or raw)."""

    def _info(self):
        if self.config_name not in _CONFIGS:
            raise ValueError(
                f"rmse: unknown configuration {self.config_name!r}; choose one of {sorted(_CONFIGS)}"
            )
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
        key, fn = _CONFIGS[self.config_name]
        return {key: fn(predictions, references, allow_degenerate=allow_degenerate)}
