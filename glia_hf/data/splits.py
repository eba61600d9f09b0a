"""Seeded train/test splits, nested data-efficient subsets, and the file every method reads them from.

Protocol (SPEC section 3): ``num_splits`` (10) random ``train_fraction`` (80/20) splits, seed 3407 by default.
Data sets built from reference scenes (LIVE, CSIQ, TID2013, KADID-10k, the built-in set) are split by scene: the
80/20 is counted in scenes, and no scene has images on both sides. The others are split by image. Inside each
training part, data-efficient subsets (20/40/60 % by default, paper Table 3) are nested: the 20 % subset is inside
the 40 % one, which is inside the 60 % one, which is inside the training part; with scene splits they are counted in
scenes too. They exist in two readings of "20 %", both drawn from the training part and tested on the split's test
part: of the training part (``train_subsets``: 20 % of 80 % = 16 % of the data set) and of the whole data set
(``train_subsets_of_dataset``: 20 % of all units, the paper's words). Both are prefixes of one shuffled order of the
training units, so every subset of either reading is nested in every larger one. Split ``k`` depends only on
``(seed, k)``, so the first 5 of 10 splits are the 5 splits of a 5-split run.

The JSON file (:func:`save_splits`) holds::

    {
      "format": "glia-hf-splits", "version": 1,
      "dataset": "live",                 # the data set's canonical name (its ``dataset`` column)
      "num_rows": 779,
      "fingerprint": "<sha256>",         # of every row's image name, original score and scene (see below)
      "seed": 3407, "train_fraction": 0.8, "by_reference": true, "fractions": [0.2, 0.4, 0.6],
      "images": ["jp2k/img1.bmp", ...],  # row i's image, relative to the folder all images share
      "splits": [
        {"train": [row indices], "test": [row indices],
         "train_subsets": {"0.2": [row indices], "0.4": [...], "0.6": [...]},              # of the training part
         "train_subsets_of_dataset": {"0.2": [row indices], "0.4": [...], "0.6": [...]},   # of the whole data set
         "train_refs": [...], "test_refs": [...]},     # the scenes on each side (scene splits only)
        ...
      ]
    }

Row indices refer to the dataset as :func:`load_iqa_dataset` returns it (sorted by image path). The image names are
stored too, and :func:`load_splits` checks them, the row count and the fingerprint against a dataset, so a split file
can never be applied silently to a different or changed data set. Paths are stored relative to the images' common
folder, so the file stays valid when the data set is moved.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .errors import IQADataError, PathLike
from .scales import REFERENCE_DATASETS, canonical_name

SPLITS_FORMAT = "glia-hf-splits"
SPLITS_VERSION = 1


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def _dataset_name(dataset) -> str:
    if "dataset" in dataset.column_names and len(dataset) > 0:
        return str(dataset[0]["dataset"])
    return "unknown"


def relative_image_names(images: Sequence[str]) -> List[str]:
    """Image paths relative to the deepest folder they all share, with ``/`` separators."""
    if not images:
        return []
    root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in images])
    return [os.path.relpath(os.path.abspath(p), root).replace(os.sep, "/") for p in images]


def dataset_fingerprint(dataset) -> str:
    """SHA-256 of the data set's name and of each row's relative image name, original score and scene id."""
    digest = hashlib.sha256(_dataset_name(dataset).encode())
    names = relative_image_names(dataset["image"])
    for name, score, ref in zip(names, dataset["mos_original"], dataset["ref"]):
        digest.update(f"\n{name}\t{float(score):.10g}\t{ref}".encode())
    return digest.hexdigest()


def _header(dataset, seed, train_fraction, by_reference, fractions) -> Dict[str, Any]:
    return {
        "format": SPLITS_FORMAT,
        "version": SPLITS_VERSION,
        "dataset": _dataset_name(dataset),
        "num_rows": len(dataset),
        "fingerprint": dataset_fingerprint(dataset),
        "seed": seed,
        "train_fraction": train_fraction,
        "by_reference": by_reference,
        "fractions": list(fractions),
        "images": relative_image_names(dataset["image"]),
    }


def _fraction_key(fraction: float) -> str:
    return f"{fraction:g}"


def make_splits(
    dataset,
    num_splits: int = 10,
    train_fraction: float = 0.8,
    seed: int = 3407,
    by_reference: Optional[bool] = None,
    fractions: Sequence[float] = (0.2, 0.4, 0.6),
) -> Dict[str, Any]:
    """Make ``num_splits`` seeded train/test splits of a dataset from :func:`load_iqa_dataset`.

    Args:
        dataset: a ``datasets.Dataset`` with ``image``, ``mos_original``, ``ref`` and ``dataset`` columns.
        num_splits: how many splits (10 in the paper).
        train_fraction: share of the units (scenes or images) in the training part, rounded half up, and at least
            one unit on each side.
        seed: the seed; split ``k`` uses ``numpy.random.default_rng([seed, k])``.
        by_reference: split by scene (``ref``) rather than by image. ``None``: by scene for LIVE, CSIQ, TID2013,
            KADID-10k and the built-in set, by image otherwise.
        fractions: sizes of the nested data-efficient subsets of each training part, as shares of its units
            (``train_subsets``) and as shares of all units of the data set (``train_subsets_of_dataset``, only
            for fractions up to ``train_fraction``); rounded half up, at least one unit.

    Returns:
        The splits as a dict in the format described in the module docstring (write it with :func:`save_splits`).
    """
    if num_splits < 1:
        raise ValueError("num_splits must be at least 1")
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be between 0 and 1, got {train_fraction}")
    fractions = sorted(float(f) for f in fractions)
    if any(not 0.0 < f <= 1.0 for f in fractions):
        raise ValueError(f"fractions must lie in (0, 1], got {fractions}")
    name = _dataset_name(dataset)
    if by_reference is None:
        by_reference = canonical_name(name) in REFERENCE_DATASETS
    keys = list(dataset["ref"]) if by_reference else list(range(len(dataset)))
    members: Dict[Any, List[int]] = {}
    for row, key in enumerate(keys):
        members.setdefault(key, []).append(row)
    units = sorted(members)
    if len(units) < 2:
        raise ValueError(f"cannot split {len(units)} {'scene' if by_reference else 'image'}(s) into train and test")
    num_train = min(max(_round_half_up(train_fraction * len(units)), 1), len(units) - 1)

    def rows_of(chosen) -> List[int]:
        return sorted(row for unit in chosen for row in members[unit])

    result = _header(dataset, seed, train_fraction, bool(by_reference), fractions)
    result["splits"] = []
    for k in range(num_splits):
        rng = np.random.default_rng([seed, k])
        order = [units[i] for i in rng.permutation(len(units))]
        train_units, test_units = order[:num_train], order[num_train:]
        subset_order = [train_units[i] for i in rng.permutation(len(train_units))]
        split: Dict[str, Any] = {
            "train": rows_of(train_units),
            "test": rows_of(test_units),
            "train_subsets": {
                _fraction_key(f): rows_of(subset_order[: max(1, _round_half_up(f * len(subset_order)))])
                for f in fractions
            },
            "train_subsets_of_dataset": {
                _fraction_key(f): rows_of(subset_order[: min(max(1, _round_half_up(f * len(units))), num_train)])
                for f in fractions if f <= train_fraction
            },
        }
        if by_reference:
            split["train_refs"] = sorted(train_units)
            split["test_refs"] = sorted(test_units)
        result["splits"].append(split)
    return result


def whole_set_as_test(dataset) -> Dict[str, Any]:
    """A one-split file with every row in ``test`` and none in ``train``: the test side of a cross-data-set run
    (train on all of set A, test on all of set B; paper Table 2). Same format as :func:`make_splits`."""
    result = _header(dataset, None, 0.0, False, [])
    result["splits"] = [{"train": [], "test": list(range(len(dataset))), "train_subsets": {}}]
    result["protocol"] = "whole set as test"
    return result


def save_splits(splits: Dict[str, Any], path: PathLike) -> None:
    """Write splits to a JSON file (format in the module docstring); the file is replaced atomically."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(splits, handle, separators=(",", ":"), sort_keys=True)
        handle.write("\n")
    os.replace(temporary, path)


def load_splits(path: PathLike, dataset=None) -> Dict[str, Any]:
    """Read a splits file, and, given the dataset it is meant for, check that it matches.

    Raises:
        IQADataError: the file is not a splits file, or (with ``dataset``) its data set name, row count, image names
            or fingerprint differ from the dataset's; the message says which, and the first differing row.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            splits = json.load(handle)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as error:
        raise IQADataError(f"cannot read splits file ({error})", file=path) from error
    if not isinstance(splits, dict) or splits.get("format") != SPLITS_FORMAT:
        raise IQADataError(f"not a {SPLITS_FORMAT} file", file=path)
    if splits.get("version") != SPLITS_VERSION:
        raise IQADataError(f"unsupported version {splits.get('version')!r} (expected {SPLITS_VERSION})", file=path)
    if dataset is None:
        return splits
    name = _dataset_name(dataset)
    if splits["dataset"] != name:
        raise IQADataError(f"splits are for data set {splits['dataset']!r}, not {name!r}", file=path)
    if splits["num_rows"] != len(dataset):
        raise IQADataError(f"splits are for {splits['num_rows']} rows, the dataset has {len(dataset)}", file=path)
    names = relative_image_names(dataset["image"])
    for row, (stored, actual) in enumerate(zip(splits["images"], names)):
        if stored != actual:
            raise IQADataError(f"image of row {row} is {actual!r} in the dataset but {stored!r} in the file", file=path)
    if splits["fingerprint"] != dataset_fingerprint(dataset):
        raise IQADataError("fingerprint differs: the dataset's scores or scene ids changed since the splits were made", file=path)
    return splits


#: What a data-efficient ``fraction`` is a share of, and the key of its subsets in a splits file.
SUBSET_KEYS = {"dataset": "train_subsets_of_dataset", "train_split": "train_subsets"}


def split_indices(splits: Dict[str, Any], split: int = 0, part: str = "train", fraction: Optional[float] = None,
                  of: str = "train_split") -> List[int]:
    """Row indices of one part of one split: ``part`` is ``"train"`` or ``"test"``; ``fraction`` (train only)
    picks a nested data-efficient subset, e.g. ``0.2``: a share of the split's training part (``of="train_split"``,
    this function's default since it was first written) or of the whole data set (``of="dataset"``, the default of
    ``data.train_fraction_of``, which the training loop passes explicitly)."""
    entry = splits["splits"][split]
    if fraction is None:
        return list(entry[part])
    if part != "train":
        raise ValueError("data-efficient subsets exist for the train part only")
    if of not in SUBSET_KEYS:
        raise ValueError(f"of must be one of {list(SUBSET_KEYS)}, got {of!r}")
    key = _fraction_key(float(fraction))
    subsets = entry.get(SUBSET_KEYS[of])
    if subsets is None:
        raise KeyError(
            "this splits file predates subsets counted in the whole data set: delete it to have it remade (the same "
            "seed gives the same train/test splits) or set data.train_fraction_of train_split"
        )
    if key not in subsets:
        raise KeyError(f"no {key} subset of the {'data set' if of == 'dataset' else 'training part'} in these "
                       f"splits; available: {sorted(subsets)}")
    return list(subsets[key])


def select_split(dataset, splits: Dict[str, Any], split: int = 0, part: str = "train", fraction: Optional[float] = None,
                 of: str = "train_split"):
    """The rows of :func:`split_indices` as a ``datasets.Dataset`` (``dataset.select``)."""
    return dataset.select(split_indices(splits, split, part, fraction, of))
