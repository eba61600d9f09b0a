"""Tests of training/train.py: every method end to end, resume, two processes, the saved directory, the Hub push.

Everything is offline and tiny: 20 generated 224 x 240 images described by a generic CSV, the 2-block ViT of
conftest.py, one or two epochs of 4 steps, 2 test-time views.
"""

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import run_without_glia_hf, tiny_vit_config


REPO_ROOT = Path(__file__).resolve().parent.parent
METHODS = ("glia", "linear_probe", "full_finetune", "lora", "adapter", "vpt")


def tiny_backbone() -> dict:
    vit = tiny_vit_config()
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size", "patch_size")
    return {key: getattr(vit, key) for key in keys}


@pytest.fixture(scope="module")
def iqa_csv(tmp_path_factory) -> Path:
    """20 images (5 scenes x 4 noise levels) and a labels CSV whose score falls with the noise."""
    root = tmp_path_factory.mktemp("tiny_iqa")
    rng = np.random.default_rng(0)
    rows = []
    for scene in range(5):
        coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((240, 224), Image.BICUBIC)
        base = np.asarray(coarse, dtype=np.float64)
        for level in range(4):
            noisy = np.clip(base + rng.normal(0.0, 15.0 * level, base.shape), 0, 255).astype(np.uint8)
            name = f"scene{scene}_level{level}.png"
            Image.fromarray(noisy).save(root / name)
            rows.append((name, 5.0 - level + float(rng.normal(0, 0.1)), f"scene{scene}"))
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mos", "ref"])
        writer.writerows(rows)
    return root / "labels.csv"


def write_config(tmp_path: Path, iqa_csv: Path, method: str = "glia", **sections) -> Path:
    config = {
        "data": {"dataset": "csv", "data_dir": str(iqa_csv), "splits_file": str(iqa_csv.parent / "splits.json"),
                 "num_splits": 3, "splits": 0, "cpu_threads": 1, "num_workers": 0},
        "model": {"method": method, "backbone": tiny_backbone(),
                  "glia": {"latent_dim": 16, "cross_attention_heads": 2} if method == "glia" else {}},
        "optim": {"epochs": 1, "batch_size": 4},
        "eval": {"num_views": 2, "batch_size": 4},
        "output": {"dir": str(tmp_path / f"run-{method}"), "log_every": 1, "trackers": ["csv"]},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path = tmp_path / f"{method}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the tiny models gain nothing from more, and on a busy 2-core machine extra threads spin."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each in-process run builds its own Accelerator; forget the previous one's process-wide state."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def read_predictions(path: Path) -> list:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_config_overrides_and_errors(tmp_path, iqa_csv):
    from training.config import ConfigError, load_config

    path = write_config(tmp_path, iqa_csv)
    config = load_config(path, ["--optim.lr", "1e-4", "--data.splits", "[0,1]", "--model.glia.use_glr", "false"])
    assert config.optim.lr == pytest.approx(1e-4) and isinstance(config.optim.lr, float)
    assert config.data.splits == [0, 1]
    assert config.model.glia == {"latent_dim": 16, "cross_attention_heads": 2, "use_glr": False}
    with pytest.raises(ConfigError, match="Did you mean 'lr'"):
        load_config(path, ["--optim.lrr", "1e-4"])
    with pytest.raises(ConfigError, match="optim.epochs must be an integer"):
        load_config(path, ["--optim.epochs", "two"])
    with pytest.raises(ConfigError, match="model.method must be one of"):
        load_config(path, ["--model.method", "prompt"])
    layered = load_config([path, REPO_ROOT / "training" / "configs" / "methods" / "lora.yaml"])
    assert layered.model.method == "lora" and layered.model.method_options["r"] == 8
    assert layered.model.backbone == tiny_backbone()  # kept from the first file


def test_shipped_configs_are_valid():
    from training.config import load_config

    configs = sorted((REPO_ROOT / "training" / "configs").glob("*.yaml"))
    assert {p.stem for p in configs} >= {"quickstart", "koniq10k", "kadid10k", "livec", "live", "csiq", "tid2013"}
    for path in configs:
        config = load_config(path)
        assert config.optim.seed == 3407
        if path.stem != "quickstart":  # LoDa's backbone and loss: tests/test_benchmark_configs.py checks every value
            assert config.model.backbone == "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k"
            assert config.optim.loss == "loda_plcc" and config.optim.lr == pytest.approx(3e-4)
            assert config.optim.epochs == 10 and config.optim.batch_size == 128 and config.data.splits == "all"
        for method in sorted((REPO_ROOT / "training" / "configs" / "methods").glob("*.yaml")):
            assert load_config([path, method]).model.method == method.stem


def test_bad_config_file(tmp_path):
    from training.config import ConfigError, load_config

    bad = tmp_path / "bad.yaml"
    bad.write_text("optimizer:\n  lr: 1.0\n")
    with pytest.raises(ConfigError, match="Did you mean 'optim'"):
        load_config(bad)


def test_unreadable_image_names_its_path(tmp_path):
    from glia_hf.data import IQAImageError
    from training.train import IQAImageDataset

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(IQAImageError, match="broken.png"):
        IQAImageDataset([str(broken)], [1.0])[0]


@pytest.mark.parametrize("method", METHODS)
def test_each_method_end_to_end(tmp_path, iqa_csv, method):
    pytest.importorskip("glia_hf.methods")
    from glia_hf.methods import count_parameters
    from training.train import main

    payload = main(["--config", str(write_config(tmp_path, iqa_csv, method))])
    run_dir = tmp_path / f"run-{method}"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["method"] == method == payload["method"]
    assert [r["split"] for r in results["splits"]] == [0]
    assert set(results["summary"]) >= {"srcc", "plcc"} and results["summary"]["srcc"]["count"] == 1
    assert results["trainable_parameters"] > 0 and results["wall_time_seconds"] > 0
    assert results["label"] == "randomly initialised backbone"
    assert "| Trainable params |" in (run_dir / "results.md").read_text()

    splits = json.loads((iqa_csv.parent / "splits.json").read_text())
    predictions = read_predictions(run_dir / "split-0" / "predictions.csv")
    assert len(predictions) == len(splits["splits"][0]["test"])
    assert all(np.isfinite(float(row["prediction"])) for row in predictions)
    assert (run_dir / "split-0" / "scatter.png").stat().st_size > 0
    assert (run_dir / "logs" / "metrics.csv").read_text().count("split-0/train/loss") >= 1
    assert not (run_dir / "checkpoints" / "split-0").exists()  # the finished split's state is cleaned up

    model_dir = run_dir / "split-0" / "model"
    card = (model_dir / "README.md").read_text()
    assert "{{" not in card and "csv" in card and "randomly initialised" in card
    assert (model_dir / "preprocessor_config.json").is_file()
    if method in ("adapter", "vpt"):
        from glia_hf.methods import load_method_checkpoint

        assert (model_dir / "glia_method.safetensors").is_file() and not (model_dir / "config.json").exists()
        assert "load_method_checkpoint" in card
        reloaded = load_method_checkpoint(model_dir)
        assert count_parameters(reloaded)[0] == results["trainable_parameters"]
    else:
        config = json.loads((model_dir / "config.json").read_text())
        assert config["auto_map"]["AutoModel"].endswith("GLIAForImageQualityAssessment")
        assert (model_dir / "model.safetensors").is_file() and (model_dir / "modeling_glia.py").is_file()
        assert not list(model_dir.glob("*.bin"))


def test_resumed_run_matches_uninterrupted(tmp_path, iqa_csv):
    from training.train import main

    recipe = dict(optim={"epochs": 2, "batch_size": 8}, data={"splits": [0, 1]},
                  output={"save_model": False, "plots": False})
    (tmp_path / "a").mkdir()
    straight = write_config(tmp_path / "a", iqa_csv, **recipe)
    main(["--config", str(straight)])

    (tmp_path / "b").mkdir()
    interrupted = write_config(tmp_path / "b", iqa_csv, **recipe)

    class Crash(Exception):
        pass

    def crash_after_first_epoch(split, epoch):
        if (split, epoch) == (1, 1):
            raise Crash()

    # Split 0 finishes, split 1 dies right after its first epoch's state is saved.
    with pytest.raises(Crash):
        main(["--config", str(interrupted)], on_epoch_end=crash_after_first_epoch)
    run_b = tmp_path / "b" / "run-glia"
    assert (run_b / "split-0" / "result.json").is_file() and not (run_b / "split-1").exists()
    assert (run_b / "checkpoints" / "split-1" / "epoch-1" / "STATE_COMPLETE").is_file()
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()

    epochs_run = []
    main(["--config", str(interrupted), "--resume"], on_epoch_end=lambda split, epoch: epochs_run.append((split, epoch)))
    assert epochs_run == [(1, 2)]  # split 0 was not redone, split 1 continued at its second epoch
    run_a = tmp_path / "a" / "run-glia"
    for split in (0, 1):
        a = read_predictions(run_a / f"split-{split}" / "predictions.csv")
        b = read_predictions(run_b / f"split-{split}" / "predictions.csv")
        assert [r["image"] for r in a] == [r["image"] for r in b]
        np.testing.assert_allclose([float(r["prediction"]) for r in b], [float(r["prediction"]) for r in a],
                                   rtol=0, atol=1e-6)
    summary_a = json.loads((run_a / "results.json").read_text())["summary"]
    summary_b = json.loads((run_b / "results.json").read_text())["summary"]
    assert summary_a["srcc"]["median"] == pytest.approx(summary_b["srcc"]["median"], abs=1e-9)


def _reset_accelerate():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_finished_run_is_reused_other_recipe_is_an_error_and_only_overwrite_retrains(tmp_path, iqa_csv, capsys):
    from training.config import ConfigError
    from training.train import main

    config = write_config(tmp_path, iqa_csv, output={"plots": False})
    first = main(["--config", str(config)])
    run_dir = tmp_path / "run-glia"
    weights = run_dir / "split-0" / "model" / "model.safetensors"
    stamp = (weights.stat().st_mtime_ns, weights.read_bytes())
    _reset_accelerate()
    capsys.readouterr()

    # The same command again: the finished run is reused, nothing is trained, the results come back as before.
    trained = []
    again = main(["--config", str(config)], on_epoch_end=lambda *a: trained.append(a))
    assert trained == [] and again["reused"] is True
    assert again["summary"]["srcc"]["median"] == first["summary"]["srcc"]["median"]
    assert [r["srcc"] for r in again["splits"]] == [r["srcc"] for r in first["splits"]]
    assert again["trainable_parameters"] == first["trainable_parameters"]
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "reusing it" in printed[0] and str(Path("split-0") / "model") in printed[0]
    assert (weights.stat().st_mtime_ns, weights.read_bytes()) == stamp

    # Another recipe in the same folder: an error naming the field that differs; the model is left alone.
    with pytest.raises(ConfigError, match=r"another recipe .*optim\.lr \(0\.0003 -> 0\.001\)"):
        main(["--config", str(config), "--optim.lr", "1e-3"])
    with pytest.raises(ConfigError, match="differs from the interrupted run's in optim.lr"):
        main(["--config", str(config), "--resume", "--optim.lr", "1e-3"])
    assert (weights.stat().st_mtime_ns, weights.read_bytes()) == stamp
    # A finished run resumed from its directory alone (its config.yaml) trains nothing and rewrites its results.
    payload = main(["--resume", str(run_dir)], on_epoch_end=lambda *a: trained.append(a))
    assert trained == [] and [r["split"] for r in payload["splits"]] == [0]
    assert (weights.stat().st_mtime_ns, weights.read_bytes()) == stamp
    _reset_accelerate()

    # Only output.overwrite trains again (here with the other recipe) and replaces the model.
    retrained = main(["--config", str(config), "--optim.lr", "1e-3", "--output.overwrite", "true"],
                     on_epoch_end=lambda *a: trained.append(a))
    assert trained == [(0, 1)] and "reused" not in retrained
    assert weights.read_bytes() != stamp[1]


def test_unfinished_run_is_continued_with_resume(tmp_path, iqa_csv):
    from training.config import ConfigError
    from training.errors import RunInterrupted
    from training.train import main

    config = write_config(tmp_path, iqa_csv, optim={"epochs": 2, "batch_size": 4},
                          output={"save_model": False, "plots": False})

    def ctrl_c(split, epoch):
        raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as interrupted:
        main(["--config", str(config)], on_epoch_end=ctrl_c)
    run_dir = tmp_path / "run-glia"
    assert isinstance(interrupted.value, KeyboardInterrupt)  # a caller looping over runs stops as well
    message = str(interrupted.value)
    assert "\n" not in message and "after its epoch 1" in message
    assert message.endswith(f"training/train.py --resume {run_dir}")
    _reset_accelerate()
    with pytest.raises(ConfigError, match="unfinished run of this recipe; continue it with: .* --resume"):
        main(["--config", str(config)])
    epochs = []
    main(["--config", str(config), "--resume"], on_epoch_end=lambda *a: epochs.append(a))
    assert epochs == [(0, 2)] and (run_dir / "results.json").is_file()


def _subprocess_env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1", **extra)
    return env


def test_two_processes_one_results_file(tmp_path, iqa_csv):
    config = write_config(tmp_path, iqa_csv, optim={"epochs": 1, "batch_size": 4}, eval={"num_views": 2, "batch_size": 3},
                          output={"dir": str(tmp_path / "ddp"), "trackers": ["csv"], "plots": False})
    # `--multi_gpu` is accelerate's torchrun launcher; without a GPU the trainer joins the processes over gloo on
    # the CPU (`--cpu --num_processes 2` would need MPI and otherwise starts one process).
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               str(REPO_ROOT / "training" / "train.py"), "--config", str(config)]
    done = subprocess.run(command, cwd=tmp_path, env=_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    results = list((tmp_path / "ddp").glob("**/results.json"))
    assert len(results) == 1
    payload = json.loads(results[0].read_text())
    assert payload["num_processes"] == 2
    splits = json.loads((iqa_csv.parent / "splits.json").read_text())
    test_rows = splits["splits"][0]["test"]
    predictions = read_predictions(tmp_path / "ddp" / "split-0" / "predictions.csv")
    # Every test image exactly once, although 2 processes x batches of 3 do not divide the test set evenly.
    assert len(predictions) == len(test_rows) == payload["splits"][0]["num_test"]
    assert len({row["image"] for row in predictions}) == len(test_rows)
    assert payload["splits"][0]["num_train"] == len(splits["splits"][0]["train"])


def test_saved_directory_loads_with_remote_code_only(tmp_path, iqa_csv, offline_hf_home):
    from training.train import main

    main(["--config", str(write_config(tmp_path, iqa_csv))])
    model_dir = tmp_path / "run-glia" / "split-0" / "model"
    row = read_predictions(tmp_path / "run-glia" / "split-0" / "predictions.csv")[0]
    script = textwrap.dedent(f"""
        import torch
        from PIL import Image
        from transformers import AutoImageProcessor, AutoModel
        model = AutoModel.from_pretrained({str(model_dir)!r}, trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained({str(model_dir)!r}, trust_remote_code=True)
        assert "glia_hf" not in type(model).__module__, type(model).__module__
        inputs = processor(Image.open({row['image']!r}), num_samples=2, seed=3407)
        with torch.no_grad():
            print("SCORE", model(**inputs).score.item())
    """)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    done = run_without_glia_hf(script, cwd=workdir, hf_home=offline_hf_home, timeout=180)
    assert done.returncode == 0, done.stderr[-4000:]
    score = float(done.stdout.split("SCORE")[-1])
    assert score == pytest.approx(float(row["prediction"]), abs=1e-4)


def test_push_to_hub_uploads_the_model_directory(tmp_path, iqa_csv, monkeypatch):
    import huggingface_hub

    from training.train import main

    calls = []
    # Only the network calls are stubbed: repository creation and the upload of the folder. Everything up to them
    # (the saved directory, its card, the arguments) is the real code path.
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda self, **kwargs: calls.append(("create_repo", kwargs)) or kwargs["repo_id"])
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder",
                        lambda self, **kwargs: calls.append(("upload_folder", kwargs)))
    config = write_config(tmp_path, iqa_csv)
    payload = main(["--config", str(config), "--push_to_hub", "--hub_model_id", "someone/glia-tiny"])
    assert [name for name, _ in calls] == ["create_repo", "upload_folder"]
    assert calls[0][1]["repo_id"] == "someone/glia-tiny" and calls[0][1]["private"] is True
    folder = Path(calls[1][1]["folder_path"])
    assert folder == tmp_path / "run-glia" / "split-0" / "model"
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= {
        p.name for p in folder.iterdir()}
    assert "someone/glia-tiny" in (folder / "README.md").read_text()
    assert payload["pushed_to"].endswith("someone/glia-tiny")


def test_calibration_puts_scores_on_the_label_scale_without_changing_ranks(tmp_path, iqa_csv):
    from training.train import main

    runs = {}
    for calibrate in (False, True):
        (tmp_path / str(calibrate)).mkdir()
        config = write_config(tmp_path / str(calibrate), iqa_csv, eval={"num_views": 2, "batch_size": 4,
                                                                        "calibrate": calibrate})
        main(["--config", str(config)])
        run_dir = tmp_path / str(calibrate) / "run-glia"
        result = json.loads((run_dir / "split-0" / "result.json").read_text())
        predictions = np.array([float(r["prediction"]) for r in read_predictions(run_dir / "split-0" / "predictions.csv")])
        runs[calibrate] = (result, predictions)
    (plain, raw), (calibrated, scored) = runs[False], runs[True]
    assert plain["calibration"] is None
    fit = calibrated["calibration"]
    assert fit is not None and fit["scale"] > 0
    scale = json.loads((tmp_path / "True" / "run-glia" / "split-0" / "model" / "config.json").read_text())
    low, high = scale["score_min"], scale["score_max"]
    expected = low + (high - low) * (fit["scale"] * (raw - low) / (high - low) + fit["shift"])
    np.testing.assert_allclose(scored, expected, rtol=1e-5, atol=1e-5)
    assert calibrated["srcc"] == pytest.approx(plain["srcc"], abs=1e-9)
