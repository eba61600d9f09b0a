"""The data path of the training loop, in three rooms: :mod:`.datasets` (the epoch sampler, the image dataset, the
collators, the workers' set-up), :mod:`.image_cache` (the decoded-image cache, ``data.cache_images``) and
:mod:`.semantic_cache` (the guidance-token cache, ``data.cache_semantic``). Every name is re-exported here, so
``from training.data import X`` works for all of them."""

from training.data.datasets import (  # noqa: F401 (_worker_init: the loaders' and the tests')
    ORIENTATIONS, EpochSampler, EvalCollator, IQAImageDataset, TrainCollator, _worker_init, collate_views)
from training.data.image_cache import DECODED_CACHE_VERSION, DecodedImageCache, decoded_cache_key, unit_float
from training.data.semantic_cache import (
    DISK_SEMANTIC_CACHE_VERSION, SEMANTIC_CACHE_DTYPES, DiskSemanticCache, SemanticCache,
    disk_semantic_cache_key, semantic_cache_key, semantic_cache_reason)

__all__ = [
    "ORIENTATIONS", "EpochSampler", "EvalCollator", "IQAImageDataset", "TrainCollator", "collate_views",
    "DECODED_CACHE_VERSION", "DecodedImageCache", "decoded_cache_key", "unit_float",
    "DISK_SEMANTIC_CACHE_VERSION", "SEMANTIC_CACHE_DTYPES", "DiskSemanticCache", "SemanticCache",
    "disk_semantic_cache_key", "semantic_cache_key", "semantic_cache_reason",
]
