"""A saved GLIANet directory loads through the Auto classes with remote code, without the glia_hf package."""

import json
import textwrap

import numpy as np
import torch
from PIL import Image

from glia_hf import GLIAConfig, GLIAForImageQualityAssessment, GLIAImageProcessor
from tests.conftest import run_without_glia_hf, tiny_vit_config


# Runs through `run_without_glia_hf`, in an interpreter where `import glia_hf` fails.
REMOTE_LOAD = textwrap.dedent(
    """
    import json, sys

    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    directory, image_path = sys.argv[1], sys.argv[2]
    config = AutoConfig.from_pretrained(directory, trust_remote_code=True)
    model = AutoModel.from_pretrained(directory, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(directory, trust_remote_code=True)
    with torch.no_grad():
        score = model(**processor(Image.open(image_path))).score
    print(json.dumps({
        "config": type(config).__name__,
        "model": type(model).__name__,
        "model_module": type(model).__module__,
        "processor": type(processor).__name__,
        "score": score.tolist(),
        "backbone_frozen": not any(p.requires_grad for p in model.glia.vit.parameters()),
    }))
    """
)


def test_saved_directory_loads_with_remote_code_in_a_python_without_glia_hf(tmp_path, offline_hf_home):
    torch.manual_seed(0)
    model = GLIAForImageQualityAssessment(
        GLIAConfig(backbone_config=tiny_vit_config(), latent_dim=16, score_min=1.0, score_max=5.0)
    ).eval()
    with torch.no_grad():
        for block in model.glia.glia_blocks.values():
            block.up.fc2.weight.normal_(std=0.1)
    processor = GLIAImageProcessor()
    directory = tmp_path / "glianet"
    model.save_pretrained(directory)
    processor.save_pretrained(directory)

    files = sorted(p.name for p in directory.iterdir())
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "modeling_glia.py",
                 "configuration_glia.py", "image_processing_glia.py", "fragment_sampling.py"):
        assert name in files, files
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files)
    auto_map = json.loads((directory / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_glia.GLIAForImageQualityAssessment"
    assert auto_map["AutoConfig"] == "configuration_glia.GLIAConfig"
    assert json.loads((directory / "preprocessor_config.json").read_text())["auto_map"]["AutoImageProcessor"] == (
        "image_processing_glia.GLIAImageProcessor"
    )

    image_path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(image_path)
    with torch.no_grad():
        expected = model(**processor(Image.open(image_path))).score.tolist()

    result = run_without_glia_hf(REMOTE_LOAD, directory, image_path, cwd=tmp_path, hf_home=offline_hf_home)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["config"] == "GLIAConfig" and loaded["processor"] == "GLIAImageProcessor"
    assert loaded["model"] == "GLIAForImageQualityAssessment"
    assert loaded["model_module"].startswith("transformers_modules.")
    assert loaded["backbone_frozen"]
    np.testing.assert_allclose(loaded["score"], expected, rtol=1e-6, atol=1e-6)
