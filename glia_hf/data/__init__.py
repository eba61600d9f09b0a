"""IQA data for GLIA-HF: benchmark readers, seeded splits, image loading and a built-in pseudo-labelled set.

Typical use::

    from glia_hf.data import load_iqa_dataset, get_score_scale, make_splits, save_splits, load_splits

    dataset = load_iqa_dataset("kadid10k", "/data/kadid10k")   # columns: image, mos, mos_original, ref, dataset
    scale = get_score_scale("kadid10k")                        # ScoreScale(min=1, max=5, ...)
    splits = make_splits(dataset)                              # 10 seeded 80/20 splits, by scene for KADID-10k
    save_splits(splits, "splits/kadid10k.json")
    splits = load_splits("splits/kadid10k.json", dataset)      # checks the file matches this dataset

    offline = load_iqa_dataset("builtin")                      # built on first use; pseudo-labelled (SSIM)

See ``glia_hf/data/README.md`` for the release layouts each reader expects.
"""

from .builtin import SOURCES, build_builtin_dataset, default_builtin_root, load_builtin_dataset
from .distortions import DISTORTIONS, apply_distortion
from .errors import IQADataError, IQAImageError, IQAMissingFileError
from .images import LoadedImages, load_image, load_images
from .readers import (
    READERS,
    load_iqa_dataset,
    read_csiq,
    read_csv_dataset,
    read_flive,
    read_kadid10k,
    read_koniq10k,
    read_live,
    read_livec,
    read_pyiqa_meta,
    read_spaq,
    read_tid2013,
)
from .scales import REFERENCE_DATASETS, ScoreScale, canonical_name, get_score_scale
from .splits import (
    dataset_fingerprint,
    load_splits,
    make_splits,
    save_splits,
    select_split,
    split_indices,
    whole_set_as_test,
)

__all__ = [
    "DISTORTIONS",
    "IQADataError",
    "IQAImageError",
    "IQAMissingFileError",
    "LoadedImages",
    "READERS",
    "REFERENCE_DATASETS",
    "SOURCES",
    "ScoreScale",
    "apply_distortion",
    "build_builtin_dataset",
    "canonical_name",
    "dataset_fingerprint",
    "default_builtin_root",
    "get_score_scale",
    "load_builtin_dataset",
    "load_image",
    "load_images",
    "load_iqa_dataset",
    "load_splits",
    "make_splits",
    "read_csiq",
    "read_csv_dataset",
    "read_flive",
    "read_kadid10k",
    "read_koniq10k",
    "read_live",
    "read_livec",
    "read_pyiqa_meta",
    "read_spaq",
    "read_tid2013",
    "save_splits",
    "select_split",
    "split_indices",
    "whole_set_as_test",
]
