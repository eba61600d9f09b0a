"""The benchmark configs carry LoDa's recipe: `--print_config` of each shows LoDa's training views, loss, resolution,
backbone and normalisation, checked here against the values in LoDa's public code (NeosXu/LoDa on GitHub, commit
6bd648d9), each with the file it comes from."""

import contextlib
import io
from pathlib import Path

import pytest
import yaml


REPO_ROOT = Path(__file__).resolve().parent.parent

# Training views per image per epoch: `train.patch_num` in LoDa's config/job/train_loda_<name>.yaml.
LODA_TRAIN_VIEWS = {
    "koniq10k": 3,  # config/job/train_loda_koniq10k.yaml
    "kadid10k": 3,  # config/job/train_loda_kadid10k.yaml
    "spaq": 3,  # config/job/train_loda_spaq.yaml
    "live": 5,  # config/job/train_loda_live.yaml
    "livec": 5,  # config/job/train_loda_livec.yaml
    "tid2013": 10,  # config/job/train_loda_tid2013.yaml
    "flive": 1,  # config/job/train_loda_flive.yaml
    "csiq": 5,  # no LoDa config: ours, as LIVE (see the comment in training/configs/csiq.yaml)
}

# (short side, filter) of the images LoDa's dataset classes read: the folder src/dataset/<name>_dataset.py opens and
# the scripts/process_<name>.py that wrote it (torchvision Resize(384); its default filter is bilinear).
LODA_RESOLUTION = {
    "koniq10k": (384, "bilinear"),  # scripts/process_koniq10k.py -> 512x384/, Resize(size=384), default filter
    "spaq": (384, "bilinear"),  # scripts/process_spaq.py -> TestImage_384/, exif_transpose, Resize(384), default
    "kadid10k": (384, "bicubic"),  # scripts/process_kadid10k.py -> images_384/, BICUBIC
    "live": (384, "bicubic"),  # scripts/process_live.py -> images_384/, BICUBIC
    "flive": (384, "bicubic"),  # scripts/process_flive.py -> flive_384/, BICUBIC
    "livec": (None, None),  # src/dataset/livechallenge_dataset.py reads Images/ (native), not Images_384/
    "tid2013": (None, None),  # src/dataset/tid2013_dataset.py reads distorted_images/ (native)
    "csiq": (384, "bicubic"),  # no LoDa script: ours, as LIVE (see the comment in training/configs/csiq.yaml)
}

# The same for every data set.
LODA_BACKBONE = "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k"  # config/model/loda.yaml: basic_model_name
LODA_MEAN = [0.485, 0.456, 0.406]  # src/dataset/dataloader.py: transforms.Normalize(mean=..., std=...)
LODA_STD = [0.229, 0.224, 0.225]  # src/dataset/dataloader.py
LODA_LOSS = "loda_plcc"  # config/loss/default.yaml: fn [[plcc_loss, 1]] (src/utils/loss.py), our name for its form
LODA_OPTIM = {"lr": 3e-4, "weight_decay": 1e-2}  # config/optimizer/adamW.yaml
# config/job/train_loda_*.yaml: num_epoch, train.batch_size, random_seed
LODA_RUN = {"epochs": 10, "batch_size": 128, "seed": 3407}
LODA_TEST_VIEWS = 15  # config/job/train_loda_*.yaml: test.patch_num


def print_config(name: str) -> dict:
    """What `python training/train.py --config training/configs/<name>.yaml --print_config` prints, parsed."""
    from training.train import main

    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        main(["--config", str(REPO_ROOT / "training" / "configs" / f"{name}.yaml"), "--print_config"])
    return yaml.safe_load(output.getvalue())


@pytest.mark.parametrize("name", sorted(LODA_TRAIN_VIEWS))
def test_print_config_shows_lodas_recipe(name):
    printed = print_config(name)
    data, model, optim = printed["data"], printed["model"], printed["optim"]
    assert data["dataset"] == name
    assert data["train_views"] == LODA_TRAIN_VIEWS[name]
    side, resample = LODA_RESOLUTION[name]
    assert data["resize_short_side"] == side
    if side is not None:
        assert data["resize_resample"] == resample
    assert optim["loss"] == LODA_LOSS
    assert model["backbone"] == LODA_BACKBONE
    assert model["image_mean"] == pytest.approx(LODA_MEAN) and model["image_std"] == pytest.approx(LODA_STD)
    assert {k: optim[k] for k in LODA_OPTIM} == pytest.approx(LODA_OPTIM)
    assert {k: optim[k] for k in LODA_RUN} == LODA_RUN and optim["scheduler"] == "cosine"
    assert printed["eval"]["num_views"] == LODA_TEST_VIEWS


@pytest.mark.parametrize("name", sorted(LODA_TRAIN_VIEWS))
def test_the_google_vit_stays_a_documented_option(name):
    text = (REPO_ROOT / "training" / "configs" / f"{name}.yaml").read_text()
    assert "# backbone: google/vit-base-patch16-224" in text
    assert "LoDa normalises with ImageNet's statistics" in text
