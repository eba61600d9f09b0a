"""The data side of a training run (:class:`RunData`, a part of :class:`training.loop.Run`): the data set and its
seeded splits, the loaders of one split, and the caches that spare repeated work (decoded images, the frozen
backbone's guidance tokens).

The datasets, sampler, collators and caches themselves are in :mod:`training.data`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from torch.utils.data import DataLoader

from glia_hf import GLIAImageProcessor
from glia_hf.data import get_score_scale, load_iqa_dataset, load_splits, make_splits, save_splits
from glia_hf.data.splits import split_indices
from training.config import ConfigError
from training.data import (DecodedImageCache, EpochSampler, EvalCollator, IQAImageDataset, SemanticCache,
                           TrainCollator, _worker_init, semantic_cache_key, semantic_cache_reason)


class RunData:
    """The data of a run. A part of :class:`training.loop.Run`, which sets what these methods read: ``config``,
    ``run_dir``, ``accelerator``, ``semantic_caches`` and ``decoded_caches``; :meth:`load_data` sets ``dataset``,
    ``scale``, ``splits_file``, ``splits``, ``split_ids`` and ``cross`` (with ``cross_name``)."""

    def load_data(self) -> None:
        config, accelerator = self.config, self.accelerator
        with accelerator.main_process_first():  # the built-in set is built once, by the main process
            self.dataset = load_iqa_dataset(config.data.dataset, config.data.data_dir, **config.data.dataset_options)
        self.scale = get_score_scale(self.dataset)
        splits_file = Path(config.data.splits_file) if config.data.splits_file else self.run_dir / "splits.json"
        self.splits_file = splits_file
        if accelerator.is_main_process and not splits_file.exists():
            splits = make_splits(
                self.dataset, num_splits=config.data.num_splits, train_fraction=config.data.train_ratio,
                seed=config.data.split_seed,
            )
            save_splits(splits, splits_file)
            accelerator.print(f"wrote {len(splits['splits'])} splits to {splits_file}")
        accelerator.wait_for_everyone()
        self.splits = load_splits(splits_file, self.dataset)
        self.split_ids = config.split_indices(len(self.splits["splits"]))
        self.cross = None
        if config.data.test_dataset:
            with accelerator.main_process_first():
                self.cross = load_iqa_dataset(
                    config.data.test_dataset, config.data.test_data_dir, **config.data.test_dataset_options
                )
            self.cross_name = str(self.cross[0]["dataset"]) if len(self.cross) else config.data.test_dataset

    def rows(self, split: int, part: str) -> List[int]:
        fraction = self.config.data.train_fraction if part == "train" else None
        return split_indices(self.splits, split, part, fraction, of=self.config.data.train_fraction_of)

    def loaders(self, split: int, processor: GLIAImageProcessor):
        """Unprepared training and test loaders of one split (plus the training sampler)."""
        config, accelerator = self.config, self.accelerator
        train_rows, test_rows = self.rows(split, "train"), self.rows(split, "test")
        train = self.dataset.select(train_rows)
        micro_batch = config.optim.batch_size // config.optim.gradient_accumulation_steps
        processes = accelerator.num_processes
        if micro_batch % processes:
            raise ConfigError(
                f"optim.batch_size / gradient_accumulation_steps = {micro_batch} images per forward pass must be "
                f"divisible by the {processes} processes"
            )
        views = config.data.train_views
        if config.optim.drop_last and len(train) * views < micro_batch:
            raise ConfigError(
                f"split {split}: {len(train)} training images x {views} view(s) are fewer than one batch of "
                f"{micro_batch}; lower optim.batch_size or set optim.drop_last false"
            )
        sampler = EpochSampler(len(train), config.optim.seed, split, views)
        if views > 1:
            accelerator.print(f"split {split}: {len(train)} training images x {views} views = {len(sampler)} "
                              "samples per epoch")
        common = dict(num_workers=config.data.num_workers, worker_init_fn=_worker_init,
                      pin_memory=torch.cuda.is_available())
        train_loader = DataLoader(
            IQAImageDataset(train["image"], train["mos"], config.augmentation.hflip, config.augmentation.vflip,
                            resize=processor.resize_image, ids=train_rows,
                            decoded=self.decoded_images(processor, self.dataset["image"])),
            batch_size=micro_batch, sampler=sampler, drop_last=config.optim.drop_last,
            collate_fn=TrainCollator(processor, config.augmentation.random_offsets), **common,
        )
        test_loader = self.eval_loader(self.dataset.select(test_rows), processor, ids=test_rows)
        return train_loader, sampler, test_loader, train_rows, test_rows

    def eval_loader(self, rows, processor: GLIAImageProcessor, num_views: Optional[int] = None,
                    ids: Optional[Sequence[int]] = None) -> DataLoader:
        """A test loader of ``rows``; ``ids`` are their image ids in the semantic cache (default: positions)."""
        processes = self.accelerator.num_processes
        batch = math.ceil(self.config.eval.batch_size / processes) * processes  # split_batches needs a multiple
        paths = rows["image"]
        decoded = self.decoded_images(processor, self.dataset["image"])
        if decoded is not None and any(str(path) not in decoded.rows for path in paths):  # another data set
            decoded = self.decoded_images(processor, paths)
        return DataLoader(
            IQAImageDataset(paths, rows["mos"], resize=processor.resize_image, ids=ids, decoded=decoded),
            batch_size=batch,
            shuffle=False,
            collate_fn=EvalCollator(processor, num_views or self.config.eval.num_views, self.config.eval.seed),
            num_workers=self.config.data.num_workers, worker_init_fn=_worker_init,
            pin_memory=torch.cuda.is_available(),
        )

    def decoded_images(self, processor: GLIAImageProcessor, paths: Sequence[str]) -> Optional[DecodedImageCache]:
        """The decoded-image cache of ``paths`` for the processor (its resolution and whole-image view,
        ``data.cache_images``), built once by the main process (under ``data.image_cache_dir``, default
        ``<run>/image-cache``); ``None`` when off."""
        if not self.config.data.cache_images:
            return None
        paths = [str(path) for path in paths]
        memo = (tuple(paths), processor.resize_short_side, processor.resize_resample, processor.image_size)
        if memo not in self.decoded_caches:
            root = Path(self.config.data.image_cache_dir or self.run_dir / "image-cache")
            with self.accelerator.main_process_first():
                self.decoded_caches[memo] = DecodedImageCache.build(root, paths, processor, log=self.accelerator.print)
        return self.decoded_caches[memo]

    def semantic_cache(self, model, processor, images, split: int, quiet: bool = False) -> Optional[SemanticCache]:
        """The semantic cache for ``images`` (an ordered list of paths; cache ids are positions in it), or ``None``
        when ``data.cache_semantic`` is off or does not apply to this model (the reason is printed once).

        A cache made for an earlier split is reused when its key (backbone weights, processor, images, precision)
        is the same, as it is for every split of a run (the backbone is frozen and built from the same seed).
        """
        unwrapped = self.accelerator.unwrap_model(model)
        reason = semantic_cache_reason(self.config, unwrapped)
        if reason is not None:
            if not quiet:
                self.accelerator.print(f"split {split}: semantic cache off ({reason})")
            return None
        key = semantic_cache_key(unwrapped, processor, images, self.accelerator.mixed_precision)
        if key not in self.semantic_caches:
            self.semantic_caches[key] = SemanticCache.from_config(key, self.config, len(images))
            if not quiet:
                self.accelerator.print(f"split {split}: semantic cache on (guidance tokens computed once per image "
                                       f"and orientation, {self.semantic_caches[key].storage})")
        return self.semantic_caches[key]

    def guidance(self, model, batch, cache: Optional[SemanticCache]) -> dict:
        """``{"guidance_hidden_states": tokens}`` of a batch from ``cache`` (filling it), or ``{}`` without one.

        The missing tokens are computed by the unwrapped model's ``encode_guidance`` under the accelerator's
        autocast, as the model's own forward would compute them.
        """
        if cache is None:
            return {}
        encode = self.accelerator.unwrap_model(model).glia.encode_guidance

        def encode_in_precision(pixel_values):
            with self.accelerator.autocast():
                return encode(pixel_values)

        tokens = cache.lookup(batch["image_id"], batch["orientation"], batch["pixel_values"], encode_in_precision)
        return {"guidance_hidden_states": tokens}
