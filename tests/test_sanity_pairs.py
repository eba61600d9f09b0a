"""eval/sanity_pairs.py: the degradations, the pair count, the held-out references, the command on a tiny model."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import tiny_vit_config


def photo(seed=0, size=(96, 80)):
    """A photo-like RGB image: smooth colour waves plus fine texture (so blur and JPEG visibly change it)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]] / max(size)
    channels = [np.sin(9 * x * (c + 1) + 5 * y + rng.uniform(0, 6)) * 0.35 + 0.5 for c in range(3)]
    image = np.stack(channels, axis=-1) + rng.normal(0, 0.04, (size[1], size[0], 3))
    return Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8))


def distance(a, b):
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


def test_degradations_change_the_image_and_level_5_more_than_level_4():
    from eval.sanity_pairs import DEGRADATIONS, degrade

    clean = photo()
    for kind in {k for k, _ in DEGRADATIONS}:
        four, five = degrade(clean, kind, 4), degrade(clean, kind, 5)
        assert four.size == five.size == clean.size and four.mode == five.mode == "RGB"
        assert 0 < distance(clean, four) < distance(clean, five), kind
    assert np.array_equal(np.asarray(degrade(clean, "noise", 4)), np.asarray(degrade(clean, "noise", 4)))
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade(clean, "fog", 4)


def test_pair_share_counts_strict_wins():
    from eval.sanity_pairs import make_pairs, pair_results

    references = {"a": photo(1), "b": photo(2)}
    pairs = make_pairs(references)
    assert len(pairs) == 12 and {(p.kind, p.level) for p in pairs} == {
        (k, lv) for k in ("jpeg", "blur", "noise") for lv in (4, 5)}

    def closeness(images):  # a scorer that knows the clean images: the nearer to its clean image, the better
        return [-min(distance(image, ref) for ref in references.values()) for image in images]

    right = pair_results(closeness, pairs)
    assert right["share"] == 1.0 and right["won"] == right["total"] == 12
    assert set(right["by_kind"]) == {"jpeg-4", "jpeg-5", "blur-4", "blur-5", "noise-4", "noise-5"}
    wrong = pair_results(lambda images: [-s for s in closeness(images)], pairs)
    assert wrong["share"] == 0.0 and all(not row["won"] for row in wrong["pairs"])
    assert pair_results(lambda images: [3.0] * len(images), pairs)["share"] == 0.0  # a tie is not a win
    with pytest.raises(ValueError, match="returned 1 scores"):
        pair_results(lambda images: [1.0], pairs)


def save_tiny_model(directory):
    from glia_hf import GLIAConfig, GLIAForImageQualityAssessment, GLIAImageProcessor

    import torch

    torch.manual_seed(0)
    model = GLIAForImageQualityAssessment(GLIAConfig(backbone_config=tiny_vit_config(), latent_dim=8,
                                                     cross_attention_heads=2, score_min=1.0, score_max=5.0))
    model.save_pretrained(directory)
    GLIAImageProcessor.from_config(model.config).save_pretrained(directory)
    return model


def test_command_scores_a_tiny_model_on_a_folder(tmp_path, capsys):
    from eval.sanity_pairs import main

    model_dir = tmp_path / "model"
    save_tiny_model(model_dir)
    folder = tmp_path / "photos"
    folder.mkdir()
    photo(1, (240, 224)).save(folder / "one.png")
    photo(2, (224, 256)).save(folder / "two.jpg")
    result = main(["--model", str(model_dir), "--references", str(folder), "--views", "1",
                   "--json", str(tmp_path / "pairs.json")])
    assert result["total"] == 12 and 0.0 <= result["share"] <= 1.0 and result["scenes"] == ["one", "two"]
    assert json.loads((tmp_path / "pairs.json").read_text())["won"] == result["won"]
    assert "pairs" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(model_dir), "--references", str(folder), "--views", "1", "--min-share", "1.01"])
    assert exit_info.value.code == 1


def test_held_out_references_are_the_test_scenes_of_the_split(tmp_path):
    from eval.sanity_pairs import held_out_references, main

    run = tmp_path / "run"
    model_dir = run / "split-1" / "model"
    options = {"scenes": ["astronaut", "camera"], "distortions": ["jpeg"], "size": 224, "num_workers": 1,
               "progress": False}
    splits_file = tmp_path / "splits.json"
    splits_file.write_text(json.dumps({"splits": [{"test_refs": ["astronaut"]}, {"test_refs": ["camera"]}]}))
    (run).mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {
        "dataset": "builtin", "data_dir": str(tmp_path / "builtin"), "dataset_options": options,
        "splits_file": str(splits_file)}}))
    model_dir.mkdir(parents=True)
    references = held_out_references(model_dir)
    assert list(references) == ["camera"] and references["camera"].size == (224, 224)

    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"dataset": "koniq10k"}}))
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(model_dir)])
    assert exit_info.value.code == 2
    with pytest.raises(ValueError, match="not the built-in set"):
        held_out_references(model_dir)
