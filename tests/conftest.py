"""Shared test set-up: every test runs offline, with a private Hugging Face cache, on tiny random ViTs."""

import os

import pytest


# Set before transformers/datasets/evaluate are imported by any test module: they read these at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: The batch guarantee (README, "Using a trained model"): an image's score in a batch equals its score alone within
#: this absolute tolerance (fp32, CPU). PyTorch does not promise bit-identical results across batch sizes or row
#: positions (the matrix kernels block rows differently), so every test that compares a score across different batch
#: compositions uses this one constant; comparisons within one batch composition may stay exact.
BATCH_ATOL = 1e-5


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


def random_inputs(batch=3, views=None, seed=0):
    """Random `pixel_values` and `fragment_values` for a batch (with `views` fragment draws per image if given)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    fragments_shape = (batch, views, 3, 224, 224) if views else (batch, 3, 224, 224)
    return {
        "pixel_values": torch.randn(batch, 3, 224, 224, generator=generator),
        "fragment_values": torch.randn(*fragments_shape, generator=generator),
    }


# Put in front of a script run by `run_without_glia_hf`: from then on `import glia_hf` fails, as on a machine that has
# transformers but not this package (the editable install would otherwise make it importable everywhere).
BLOCK_GLIA_HF = '''
import sys

class _BlockGliaHF:
    def find_spec(self, name, path=None, target=None):
        if name == "glia_hf" or name.startswith("glia_hf."):
            raise ImportError("glia_hf is blocked in this test")
        return None

sys.meta_path.insert(0, _BlockGliaHF())
try:
    import glia_hf  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("glia_hf must not be importable here")
'''


def run_without_glia_hf(script, *args, cwd, hf_home, timeout=300):
    """Run `script` (Python source) with `args` in a fresh offline interpreter that cannot import glia_hf.

    It runs from `cwd` with its own `HF_HOME`, so only what a saved directory carries (remote code) can be used.
    Returns the completed process; its last stdout line is the script's answer.
    """
    import subprocess
    import sys

    env = {**os.environ, "HF_HOME": str(hf_home), "HF_MODULES_CACHE": str(hf_home / "modules"), "HF_HUB_OFFLINE": "1",
           "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, "-c", BLOCK_GLIA_HF + script, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
