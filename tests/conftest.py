"""Shared test set-up: every test runs offline, with a private Hugging Face cache, on tiny random ViTs."""

import os

import pytest


# Set before transformers/datasets/evaluate are imported by any test module: they read these at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def offline_hf_home(tmp_path_factory, monkeypatch):
    """A fresh, empty HF_HOME per test, so that nothing cached on this machine can make a test pass."""
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_MODULES_CACHE", str(home / "modules"))
    return home


def tiny_vit_config(**overrides):
    """A 2-block ViT with hidden size 32 at 224 px and 16 px patches: the shape of ViT-B/16, a thousandth of its size."""
    from transformers import ViTConfig

    options = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=224,
        patch_size=16,
    )
    options.update(overrides)
    return ViTConfig(**options)


@pytest.fixture
def tiny_vit():
    return tiny_vit_config()
