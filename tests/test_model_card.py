"""The model card (huggingface_hub ModelCard from the model_card.md template), results.md, and the training curve.

All offline. ``ModelCard.validate`` asks the Hub's server and cannot run here; the cards are checked by parsing their
YAML and round-tripping it through ``ModelCardData`` instead.
"""

import json

import pytest
import yaml

from tests.conftest import tiny_vit_config
from tests.test_training import fresh_accelerate_state, iqa_csv, one_thread, write_config  # noqa: F401  (fixtures)

REAL_METRICS = {"srcc": 0.912, "plcc": 0.931, "plcc_raw": 0.925, "krcc": 0.744, "rmse": 0.213}


def yaml_header(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def card_text_values(**overrides):
    values = {name: f"<{name}>" for name in (
        "title", "method", "backbone", "dataset", "score_name", "score_min", "score_max", "trainable_parameters",
        "split_protocol", "results_table", "results_note", "training_details", "model_id")}
    values["notice"] = ""
    values.update(overrides)
    return values


def small_glia_config():
    from glia_hf import GLIAConfig

    return GLIAConfig(backbone_config=tiny_vit_config(hidden_size=48, num_hidden_layers=3, num_attention_heads=3,
                                                      intermediate_size=96),
                      latent_dim=16, cross_attention_heads=2, glia_layers=[0, 2])


def render(tmp_path, **card_data_options):
    from huggingface_hub import ModelCard

    from training.model_card import card_data, render_model_card

    card = render_model_card(card_data(**card_data_options), card_text_values(), small_glia_config())
    path = tmp_path / "README.md"
    card.save(path)
    return ModelCard.load(path), path.read_text()


def test_real_data_card_has_hub_metadata_and_model_index(tmp_path):
    from huggingface_hub import ModelCardData

    card, text = render(tmp_path, model_name="someone/glia-koniq10k", dataset="koniq10k",
                        backbone="google/vit-base-patch16-224", metrics=REAL_METRICS, benchmark=True, split=3)
    header = yaml_header(text)
    assert header["pipeline_tag"] == "other" and header["library_name"] == "transformers"
    assert header["license"] == "apache-2.0" and "image-quality-assessment" in header["tags"]
    assert header["base_model"] == "google/vit-base-patch16-224" and header["datasets"] == ["koniq10k"]
    assert set(header["metrics"]) == {"spearmanr", "pearsonr", "kendalltau", "rmse"}
    results = header["model-index"][0]["results"]
    shown = {(m["name"], m["value"]) for r in results for m in r["metrics"]}
    assert ("SRCC", 0.912) in shown and ("RMSE", 0.213) in shown and len(shown) == 5
    assert all(r["dataset"]["type"] == "koniq10k" and r["dataset"]["split"] == "test" for r in results)

    # Round trip: the parsed metadata rebuilds the same ModelCardData, eval results included.
    again = ModelCardData(**card.data.to_dict())
    assert again.to_dict() == card.data.to_dict()
    assert {(e.metric_type, e.metric_value) for e in card.data.eval_results} >= {("spearmanr", 0.912),
                                                                                 ("kendalltau", 0.744)}
    assert "{{" not in text and "{%" not in text and "{#" not in text


@pytest.mark.parametrize("dataset, backbone", [("builtin", "google/vit-base-patch16-224"),
                                               ("koniq10k", {"hidden_size": 48, "num_hidden_layers": 3})])
def test_pseudo_labelled_or_random_backbone_results_stay_out_of_model_index(tmp_path, dataset, backbone):
    from huggingface_hub import ModelCardData

    from training.train import result_label
    from training.config import config_from_dict

    config = config_from_dict({"data": {"dataset": dataset}, "model": {"backbone": backbone}})
    label = result_label(config)
    assert label  # what write_model_cards passes as benchmark=False
    card, text = render(tmp_path, model_name="run-split-0", dataset=dataset, backbone=backbone,
                        metrics=REAL_METRICS, benchmark=label is None, split=0)
    header = yaml_header(text)
    assert "model-index" not in header and card.data.eval_results is None
    assert header["datasets"] == [dataset] and header["pipeline_tag"] == "other"
    if isinstance(backbone, dict):
        assert "base_model" not in header  # never a dict of a random config
    assert ModelCardData(**card.data.to_dict()).to_dict() == card.data.to_dict()


def test_base_model_is_only_a_hub_id(tmp_path):
    from training.model_card import hub_base_model

    assert hub_base_model("google/vit-base-patch16-224") == "google/vit-base-patch16-224"
    assert hub_base_model({"hidden_size": 64}) is None
    assert hub_base_model(str(tmp_path)) is None  # a local directory
    assert hub_base_model("not a / valid id") is None


def test_card_dimensions_come_from_the_model_config(tmp_path):
    _, text = render(tmp_path, model_name="m", dataset="koniq10k", backbone="google/vit-base-patch16-224",
                     metrics=REAL_METRICS, benchmark=True)
    equations = text.split("## The equations as implemented", 1)[1].split("## How to use", 1)[0]
    assert "down: Linear(48, 16) - GELU - Linear(16, 16)" in equations
    assert "up: Linear(16, 48) - GELU - Linear(48, 48)" in equations
    assert "2 heads in the latent space" in equations
    assert "ViT hidden size 48, 3" in equations and "only blocks 0, 2" in equations
    assert "768" not in equations and "all 12" not in equations


def test_ablation_without_lgf_shows_no_cross_attention(tmp_path):
    from glia_hf import GLIAConfig
    from training.model_card import card_data, render_model_card

    config = GLIAConfig(backbone_config=tiny_vit_config(), latent_dim=8, use_lgf=False)
    data = card_data(model_name="m", dataset="csiq", backbone="x/y", metrics={}, benchmark=True)
    text = str(render_model_card(data, card_text_values(), config))
    equations = text.split("## The equations as implemented", 1)[1].split("## How to use", 1)[0]
    assert "MHCA" not in equations.split("```")[1] and "all 2 blocks" in equations
    assert "model-index" not in yaml_header(text)  # no metrics, no results to show


def test_single_split_results_say_so_instead_of_nan(tmp_path, iqa_csv):
    from eval.reporting import METRIC_LABELS, to_markdown
    from training.config import load_config
    from training.train import per_split_markdown, results_table, whole_run_markdown, summary_of

    config = load_config(write_config(tmp_path, iqa_csv))
    result = {"split": 0, "num_train": 16, "num_test": 4, "trainable_parameters": 100, **REAL_METRICS}
    text = to_markdown(results_table(config, [result], 12.0)) + per_split_markdown([result])
    row = [line for line in text.splitlines() if line.startswith("| glia")][0]
    assert "nan" not in text and "in parentheses" not in text and "±" not in row and "One split" in text
    header = per_split_markdown([result]).splitlines()[0]
    assert [cell.strip() for cell in header.strip("|").split("|")][3:] == [
        METRIC_LABELS.get(key, key.upper()) for key in ("srcc", "plcc", "plcc_raw", "krcc", "rmse")]
    card_summary = whole_run_markdown(summary_of([result]), ["srcc", "plcc"])
    assert "nan" not in card_summary and "one split" in card_summary


def test_two_split_run_writes_spread_curve_and_cards(tmp_path, iqa_csv):
    from huggingface_hub import ModelCard, ModelCardData

    from training.train import main

    payload = main(["--config", str(write_config(tmp_path, iqa_csv, data={"splits": [0, 1]},
                                                 optim={"epochs": 2, "batch_size": 4}))])
    run_dir = tmp_path / "run-glia"
    results_md = (run_dir / "results.md").read_text()
    row = [line for line in results_md.splitlines() if line.startswith("| glia")][0]
    assert "(mean ± std in parentheses)" in results_md and row.count("±") >= 4 and "nan" not in row
    for split in (0, 1):
        result = json.loads((run_dir / f"split-{split}" / "result.json").read_text())
        assert [p["epoch"] for p in result["curve"]] == [1, 2]
        assert all(isinstance(p["loss"], float) and -1 <= p["srcc"] <= 1 for p in result["curve"])
        assert (run_dir / f"split-{split}" / "curve.png").stat().st_size > 0

        text = (run_dir / f"split-{split}" / "model" / "README.md").read_text()
        header = yaml_header(text)
        assert "model-index" not in header and "base_model" not in header  # random backbone on a tiny CSV set
        assert header["datasets"] == ["csv"] and header["pipeline_tag"] == "other"
        card = ModelCard.load(run_dir / f"split-{split}" / "model" / "README.md")
        assert ModelCardData(**card.data.to_dict()).to_dict() == card.data.to_dict()
        assert "down: Linear(32, 16) - GELU - Linear(16, 16)" in text and "all 2 blocks" in text
        assert "randomly initialised" in text and "(2 splits, one model per split)" in text
    assert payload["summary"]["srcc"]["count"] == 2


def test_curve_plot_writes_a_png(tmp_path):
    from eval.plots import training_curve_plot

    path = training_curve_plot([{"epoch": 1, "loss": 0.4, "srcc": 0.1}, {"epoch": 2, "loss": 0.3, "srcc": None}],
                               tmp_path / "c" / "curve.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no epochs"):
        training_curve_plot([], tmp_path / "empty.png")


def test_the_curve_changes_no_training_and_survives_a_resume(tmp_path, iqa_csv):
    from accelerate.state import AcceleratorState, GradientState

    from tests.test_training import read_predictions
    from training.train import main

    def reset():
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()

    def config(name, plots):
        (tmp_path / name).mkdir()
        return str(write_config(tmp_path / name, iqa_csv, optim={"epochs": 2, "batch_size": 4},
                                output={"plots": plots, "save_model": False}))

    main(["--config", config("with", True)])
    reset()
    main(["--config", config("without", False)])
    reset()
    interrupted = config("resumed", True)

    class Crash(Exception):
        pass

    def crash(split, epoch):
        if epoch == 1:
            raise Crash()

    with pytest.raises(Crash):
        main(["--config", interrupted], on_epoch_end=crash)
    reset()
    main(["--config", interrupted, "--resume"])

    runs = {name: tmp_path / name / "run-glia" / "split-0" for name in ("with", "without", "resumed")}
    predictions = {name: [float(r["prediction"]) for r in read_predictions(folder / "predictions.csv")]
                   for name, folder in runs.items()}
    assert predictions["with"] == pytest.approx(predictions["without"], abs=1e-6)  # RNG left as it was
    assert predictions["resumed"] == pytest.approx(predictions["with"], abs=1e-6)
    curves = {name: json.loads((runs[name] / "result.json").read_text()).get("curve") for name in runs}
    assert curves["without"] is None and not (runs["without"] / "curve.png").exists()
    assert [p["epoch"] for p in curves["resumed"]] == [1, 2]
    assert [p["srcc"] for p in curves["resumed"]] == pytest.approx([p["srcc"] for p in curves["with"]], abs=1e-6)
    assert (runs["resumed"] / "curve.png").is_file()
