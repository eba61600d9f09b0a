"""Training views per image (`data.train_views`, LoDa's `train.patch_num`): each view is its own sample of the shuffled
epoch, with its own flips and fragment draw, and the cosine schedule spans epochs x views x images / batch steps."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_training import fresh_accelerate_state, iqa_csv, one_thread, write_config  # noqa: F401 (fixtures)


def old_epoch_order(num_rows, seed, split, epoch):
    """The sampler's order before `train_views` existed (written out here, so that a change of it shows)."""
    rng = np.random.default_rng([seed, split, epoch])
    order = rng.permutation(num_rows)
    draw_seeds = rng.integers(0, 2**62, size=num_rows)
    return list(zip(order.tolist(), draw_seeds.tolist()))


@pytest.mark.parametrize("epoch", [0, 3])
def test_one_view_keeps_the_order_of_earlier_runs(epoch):
    from training.train import EpochSampler

    sampler = EpochSampler(37, seed=3407, split=2)
    sampler.set_epoch(epoch)
    assert len(sampler) == 37
    assert list(sampler) == old_epoch_order(37, 3407, 2, epoch)
    explicit = EpochSampler(37, seed=3407, split=2, views=1)
    explicit.set_epoch(epoch)
    assert list(explicit) == list(sampler)


def test_each_view_is_its_own_shuffled_sample():
    from training.train import EpochSampler

    rows, views, batch = 40, 3, 8
    sampler = EpochSampler(rows, seed=3407, split=0, views=views)
    samples = list(sampler)
    assert len(sampler) == len(samples) == rows * views
    counts = np.bincount([row for row, _ in samples], minlength=rows)
    assert counts.tolist() == [views] * rows  # every image exactly `views` times per epoch
    assert len({seed for _, seed in samples}) == rows * views  # every view draws its own augmentation
    # Views are shuffled over the whole epoch, not kept together: most images have views in several batches.
    batches_of = {}
    for position, (row, _) in enumerate(samples):
        batches_of.setdefault(row, set()).add(position // batch)
    spread = sum(len(b) > 1 for b in batches_of.values())
    assert spread >= rows * 3 // 4
    # The order is a function of (seed, split, epoch) only, and changes from epoch to epoch.
    assert list(EpochSampler(rows, seed=3407, split=0, views=views)) == samples
    sampler.set_epoch(1)
    assert list(sampler) != samples
    with pytest.raises(ValueError, match="views"):
        EpochSampler(rows, seed=0, split=0, views=0)


def test_views_of_an_image_get_their_own_flips_and_fragments(tmp_path):
    """Through the real dataset, collator and DataLoader: the three views of each image differ from each other."""
    from torch.utils.data import DataLoader

    from glia_hf import GLIAImageProcessor
    from training.train import EpochSampler, IQAImageDataset, TrainCollator

    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):  # asymmetric content, so that a flip changes the pixels
        path = tmp_path / f"image{i}.png"
        Image.fromarray(rng.integers(0, 256, (300, 320, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    processor = GLIAImageProcessor(grid_size=(2, 2), fragment_size=(32, 32))
    dataset = IQAImageDataset(paths, [float(i) for i in range(6)], hflip=0.5, vflip=0.5,
                              resize=processor.resize_image)
    views = 3
    loader = DataLoader(dataset, batch_size=3, sampler=EpochSampler(6, seed=1, split=0, views=views),
                        collate_fn=TrainCollator(processor, random_offsets=True))
    fragments = {}
    for batch in loader:
        assert batch["fragment_values"].shape[0] == 3
        for index, value in zip(batch["index"].tolist(), batch["fragment_values"]):
            fragments.setdefault(index, []).append(value)
    assert sorted(fragments) == list(range(6)) and all(len(v) == views for v in fragments.values())
    for index, drawn in fragments.items():
        for a in range(views):
            for b in range(a + 1, views):
                assert not torch.equal(drawn[a], drawn[b]), f"image {index}: views {a} and {b} are identical"


def test_schedule_spans_epochs_x_views_x_images_over_batch(tmp_path, iqa_csv):  # noqa: F811
    """A real run: 16 training images x 2 views / batch 4 = 8 optimiser steps per epoch; the cosine schedule reaches
    zero exactly at the last of them (a schedule sized for one view would reach zero at step 4 and climb again)."""
    from training.train import main

    config = write_config(tmp_path, iqa_csv, data={"train_views": 2, "resize_short_side": 112},
                          optim={"epochs": 1, "batch_size": 4},
                          output={"dir": str(tmp_path / "run"), "log_every": 1, "trackers": ["csv"],
                                  "plots": False})
    payload = main(["--config", str(config)])
    num_train = payload["splits"][0]["num_train"]
    assert num_train == 16
    expected_steps = 1 * 2 * num_train // 4
    with open(tmp_path / "run" / "logs" / "metrics.csv", newline="") as handle:
        rates = [(int(r["step"]), float(r["value"])) for r in csv.DictReader(handle) if r["name"] == "split-0/train/lr"]
    assert [step for step, _ in rates] == list(range(1, expected_steps + 1))
    assert rates[-1][1] == pytest.approx(0.0, abs=1e-12)
    assert all(rate > 0 for _, rate in rates[:-1])
    assert all(a > b for (_, a), (_, b) in zip(rates, rates[1:]))  # one cosine descent, no restart

    # The resolution travels with the model, and the tables and card say it.
    saved = json.loads((tmp_path / "run" / "split-0" / "model" / "preprocessor_config.json").read_text())
    assert saved["resize_short_side"] == 112 and saved["resize_resample"] == "bicubic"
    assert "112 px short side" in (tmp_path / "run" / "results.md").read_text()
    assert "2 training view(s) per image" in (tmp_path / "run" / "results.md").read_text()
    assert "112 px short side" in (tmp_path / "run" / "split-0" / "model" / "README.md").read_text()


def test_a_batch_needs_images_times_views(tmp_path, iqa_csv):  # noqa: F811
    """16 training images x 2 views fill a batch of 24 that 16 images alone would not."""
    from training.config import ConfigError
    from training.train import main

    config = write_config(tmp_path, iqa_csv, optim={"batch_size": 24})
    with pytest.raises(ConfigError, match="16 training images x 1 view"):
        main(["--config", str(config)])
    config = write_config(tmp_path, iqa_csv, data={"train_views": 2}, optim={"batch_size": 24, "epochs": 1},
                          output={"dir": str(tmp_path / "run2"), "trackers": ["csv"], "plots": False,
                                  "save_model": False})
    assert main(["--config", str(config)])["splits"][0]["num_train"] == 16


def test_config_checks_views_and_resolution():
    from training.config import ConfigError, config_from_dict

    config = config_from_dict({})
    assert (config.data.train_views, config.data.resize_short_side, config.data.resize_resample) == (1, None,
                                                                                                      "bicubic")
    with pytest.raises(ConfigError, match="data.train_views must be positive"):
        config_from_dict({"data": {"train_views": 0}})
    with pytest.raises(ConfigError, match="data.resize_short_side must be positive"):
        config_from_dict({"data": {"resize_short_side": -384}})
    with pytest.raises(ConfigError, match="data.resize_resample must be one of"):
        config_from_dict({"data": {"resize_resample": "lanczos"}})
