"""Score scales of the supported data sets.

Every reader returns ``mos`` higher-is-better on the data set's own range. Where a release file stores a difference
score (DMOS, lower is better) the reader flips it once as ``(min + max) - dmos``, which maps the range onto itself
(LIVE: ``100 - DMOS``; CSIQ: ``1 - DMOS``). The number exactly as written in the file stays in ``mos_original``.

A :class:`ScoreScale` carries the range of ``mos`` so that a model configuration can be filled from it
(:meth:`ScoreScale.config_kwargs`) and a trained model reports scores on the same scale.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union


@dataclass(frozen=True)
class ScoreScale:
    """The range and meaning of a data set's ``mos`` column (always higher is better).

    Attributes:
        name: canonical data set name, e.g. ``"live"``.
        min: lowest possible (nominal) ``mos``. Real values can lie slightly outside the nominal range (LIVE).
        max: highest possible (nominal) ``mos``.
        original_higher_is_better: whether the number in the release file was already higher-is-better; if not,
            ``mos = (min + max) - original``.
        description: what the score is and how it was derived from the file.
    """

    name: str
    min: float
    max: float
    original_higher_is_better: bool
    description: str

    def to_mos(self, original: float) -> float:
        """Turn a score as written in the release file into the higher-is-better ``mos``."""
        original = float(original)
        return original if self.original_higher_is_better else (self.min + self.max) - original

    def config_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments for the model configuration: ``score_min``, ``score_max``, ``score_name``."""
        return {"score_min": float(self.min), "score_max": float(self.max), "score_name": self.description}

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ScoreScale":
        return cls(**json.loads(text))


# Canonical names, in the paper's order, then our own sets.
_SCALES: Dict[str, ScoreScale] = {
    "live": ScoreScale("live", 0.0, 100.0, False, "LIVE release 2 DMOS (about 0-100), flipped as 100 - DMOS"),
    "csiq": ScoreScale("csiq", 0.0, 1.0, False, "CSIQ DMOS (0-1), flipped as 1 - DMOS"),
    "tid2013": ScoreScale("tid2013", 0.0, 9.0, True, "TID2013 MOS (0-9)"),
    "kadid10k": ScoreScale(
        "kadid10k", 1.0, 5.0, True, "KADID-10k score (1-5, higher is better although its column is named dmos)"
    ),
    "livec": ScoreScale("livec", 0.0, 100.0, True, "LIVE In the Wild (LIVEC) MOS (0-100)"),
    "koniq10k": ScoreScale("koniq10k", 1.0, 5.0, True, "KonIQ-10k MOS (1-5, column MOS)"),
    "spaq": ScoreScale("spaq", 0.0, 100.0, True, "SPAQ MOS (0-100)"),
    "flive": ScoreScale("flive", 0.0, 100.0, True, "FLIVE (PaQ-2-PiQ) image MOS (about 0-100)"),
    "builtin": ScoreScale(
        "builtin",
        1.0,
        5.0,
        True,
        "built-in set pseudo-MOS (1-5) = 1 + 4 * SSIM against the reference; pseudo-labelled, not human-rated",
    ),
}

_KONIQ_ZSCORE = ScoreScale("koniq10k", 0.0, 100.0, True, "KonIQ-10k MOS_zscore (about 0-100, column MOS_zscore)")

_ALIASES = {
    "liveiqa": "live",
    "liverelease2": "live",
    "live2": "live",
    "tid": "tid2013",
    "kadid": "kadid10k",
    "livechallenge": "livec",
    "liveinthewild": "livec",
    "clive": "livec",
    "koniq": "koniq10k",
    "paq2piq": "flive",
}

#: Data sets whose rows share reference scenes (split by scene, never by image).
REFERENCE_DATASETS = frozenset({"live", "csiq", "tid2013", "kadid10k", "builtin"})


def canonical_name(name: str) -> str:
    """Map a data set name or alias (``"KADID-10k"``, ``"LIVE_Challenge"``...) to its canonical key."""
    key = "".join(ch for ch in str(name).lower() if ch.isalnum())
    return _ALIASES.get(key, key)


def get_score_scale(name: Union[str, Any], score_column: Optional[str] = None) -> ScoreScale:
    """Return the :class:`ScoreScale` of a data set.

    Args:
        name: a data set name or alias (``"live"``, ``"koniq10k"``, ``"builtin"``...), or a ``datasets.Dataset``
            returned by :func:`load_iqa_dataset` (its scale is stored in ``dataset.info.description``; this is the
            way to get the scale of a generic or pyiqa-style CSV, whose range depends on the file).
        score_column: KonIQ-10k only: ``"MOS"`` (default, 1-5) or ``"MOS_zscore"`` (about 0-100).
    """
    if not isinstance(name, str):
        info = getattr(name, "info", None)
        description = getattr(info, "description", None) or ""
        try:
            return ScoreScale.from_json(description)
        except (ValueError, TypeError) as error:
            raise ValueError("this dataset carries no score scale; was it made by load_iqa_dataset?") from error
    key = canonical_name(name)
    if key == "koniq10k" and score_column is not None and score_column.lower() == "mos_zscore":
        return _KONIQ_ZSCORE
    if key not in _SCALES:
        raise KeyError(
            f"unknown data set {name!r}; known: {sorted(_SCALES)}. For a CSV data set pass the Dataset itself."
        )
    return _SCALES[key]
