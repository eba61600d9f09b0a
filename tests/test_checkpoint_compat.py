"""Checkpoints saved before the transformers-5 hooks (config.json without the keys derived since) load and score alike.

`fixtures/glia_before_v5/` is a tiny GLIANet (16-px ViT, 8-px patches) saved by the code before `save_pretrained` and
`from_pretrained` lost their overrides: its `config.json` and `model.safetensors` only (49 KB). The scores below are
what that code printed for `fixture_inputs()`.
"""

import json
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from transformers import pipeline

from glia_hf import GLIAConfig, GLIAForImageQualityAssessment
from glia_hf.pipeline_glia import PIPELINE_TASK
from tests.conftest import tiny_vit_config


FIXTURE = Path(__file__).parent / "fixtures" / "glia_before_v5"
SCORES_BEFORE = [0.9562358856201172, 0.7890267968177795]
PIPELINE_ENTRY = {"impl": "pipeline_glia.ImageQualityAssessmentPipeline", "pt": ["AutoModel"], "type": "image"}
REMOTE_FILES = {"modeling_glia.py", "configuration_glia.py", "backbones.py", "pipeline_glia.py",
                "image_processing_glia.py", "fragment_sampling.py"}


def fixture_inputs():
    generator = torch.Generator().manual_seed(0)
    return {
        "pixel_values": torch.randn(2, 3, 16, 16, generator=generator),
        "fragment_values": torch.randn(2, 3, 16, 16, generator=generator),
    }


def test_a_checkpoint_saved_before_loads_frozen_with_the_same_scores():
    model = GLIAForImageQualityAssessment.from_pretrained(FIXTURE).eval()
    assert not any(p.requires_grad for p in model.glia.vit.parameters())
    assert all(p.requires_grad for p in model.glia.glia_blocks.parameters())
    assert model.config.image_size == 16 and model.config.custom_pipelines == {PIPELINE_TASK: PIPELINE_ENTRY}
    with torch.no_grad():
        scores = model(**fixture_inputs()).score
    torch.testing.assert_close(scores, torch.tensor(SCORES_BEFORE), rtol=0, atol=1e-6)


def test_a_config_json_without_the_derived_keys_loads(tmp_path):
    """image_size and custom_pipelines are filled in; an old file that names them keeps its own."""
    stored = json.loads((FIXTURE / "config.json").read_text())
    for key in ("image_size", "custom_pipelines", "glr_active", "method"):
        stored.pop(key)
    (tmp_path / "config.json").write_text(json.dumps(stored))
    shutil.copyfile(FIXTURE / "model.safetensors", tmp_path / "model.safetensors")
    model = GLIAForImageQualityAssessment.from_pretrained(tmp_path).eval()
    assert model.config.image_size == 16 and model.config.custom_pipelines == {PIPELINE_TASK: PIPELINE_ENTRY}
    with torch.no_grad():
        torch.testing.assert_close(model(**fixture_inputs()).score, torch.tensor(SCORES_BEFORE), rtol=0, atol=1e-6)


def test_resaving_an_old_checkpoint_gives_a_pipeline_directory(tmp_path):
    """transformers' own save writes the remote code, pipeline_glia.py included (GLIAConfig imports it)."""
    model = GLIAForImageQualityAssessment.from_pretrained(FIXTURE).eval()
    model.save_pretrained(tmp_path / "resaved")
    assert REMOTE_FILES <= {p.name for p in (tmp_path / "resaved").iterdir()}
    config = json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert config["custom_pipelines"] == {PIPELINE_TASK: PIPELINE_ENTRY}
    scorer = pipeline(PIPELINE_TASK, model=str(tmp_path / "resaved"), trust_remote_code=True, device="cpu")
    assert type(scorer).__name__ == "ImageQualityAssessmentPipeline"
    assert not any(p.requires_grad for p in scorer.model.glia.vit.parameters())


def test_save_pretrained_push_to_hub_uploads_the_pipeline_code(tmp_path, monkeypatch):
    """transformers' own `push_to_hub` path; only the two network calls are stubbed (the Hub boundary)."""
    calls = {}
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda self, repo_id, **kwargs: calls.setdefault("repo", huggingface_hub.RepoUrl(
                            f"https://huggingface.co/{repo_id}")))
    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit",
                        lambda self, repo_id, operations, **kwargs: calls.update(
                            repo_id=repo_id, files={op.path_in_repo for op in operations}))
    model = GLIAForImageQualityAssessment(GLIAConfig(backbone_config=tiny_vit_config(), latent_dim=8,
                                                     cross_attention_heads=2))
    model.save_pretrained(tmp_path / "glia", push_to_hub=True, repo_id="someone/glia-tiny")
    assert calls["repo_id"] == "someone/glia-tiny"
    assert REMOTE_FILES | {"config.json", "model.safetensors"} <= calls["files"]


def test_image_size_is_the_backbones_unless_the_family_interpolates():
    vit = tiny_vit_config(image_size=64)
    assert GLIAConfig(backbone_config=vit).image_size == 64
    assert GLIAConfig(backbone_config=vit, image_size=64).image_size == 64  # old config.json files state it
    with pytest.raises(ValueError, match=r"image_size 96 does not fit the ViT backbone, whose image_size is 64"):
        GLIAConfig(backbone_config=vit, image_size=96)
    dinov2 = {"model_type": "dinov2", "image_size": 518, "patch_size": 14}
    assert GLIAConfig(backbone_config=dinov2).image_size == 224
    assert GLIAConfig(backbone_config=dinov2, image_size=112).image_size == 112
