"""Errors a user can cause in `training/train.py`: one line naming what to change, a nonzero exit status, no
traceback, and no half-made run folder. Also `--help` (every config field) and `data.num_workers: auto`.

The runs are the tiny ones of tests/test_training.py (generated images, a 2-block random ViT), called through
`training.errors.run_cli` (what `python training/train.py` and `accelerate launch training/train.py` run) in this
process, and once as a real subprocess.
"""

import dataclasses
import errno
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_training import (  # noqa: F401  (fixtures)
    REPO_ROOT,
    _subprocess_env,
    fresh_accelerate_state,
    iqa_csv,
    one_thread,
    tiny_backbone,
    write_config,
)


def run_cli(argv, **kwargs):
    from training.errors import run_cli as cli
    from training.train import main

    return cli(main, argv, **kwargs)


def one_line(capsys) -> str:
    """The one line the run printed on stderr (the progress bars of training, which redraw with carriage returns,
    are left out)."""
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "it/s" not in line]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    return lines[0]


KONIQ = str(REPO_ROOT / "training" / "configs" / "koniq10k.yaml")


def tiny_backbone_argument() -> str:
    return yaml.safe_dump(tiny_backbone(), default_flow_style=True).strip()


@pytest.mark.parametrize("data_dir, expected", [
    (None, "data.data_dir is not set: give the folder of the unpacked release of koniq10k"),
    ("nonexistent", "nonexistent does not exist: give the folder of the unpacked release of koniq10k"),
])
def test_missing_data_dir_is_one_line_and_leaves_no_run_folder(tmp_path, capsys, data_dir, expected):
    out = tmp_path / "runs" / "koniq10k-glia"
    extra = ["--data.data_dir", str(tmp_path / data_dir)] if data_dir else []
    status = run_cli(["--config", KONIQ, *extra, "--model.backbone", tiny_backbone_argument(),
                      "--output.dir", str(out)])
    line = one_line(capsys)
    assert status == 2 and line.startswith("config error: data.data_dir") and expected in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("override, expected", [
    (["--data.dataset", "konik"], "data.dataset 'konik' is not a known data set"),
    (["--data.dataset_options", "{scor_column: MOS}"], "data.dataset_options: ['scor_column'] not options of"),
])
def test_bad_data_settings_are_config_errors(tmp_path, capsys, override, expected):
    status = run_cli(["--config", KONIQ, "--data.data_dir", str(tmp_path), "--model.backbone", tiny_backbone_argument(),
                      "--output.dir", str(tmp_path / "out"), *override])
    assert status == 2 and expected in one_line(capsys)
    assert not (tmp_path / "out").exists()


def test_data_folder_without_its_label_file_is_a_data_error_and_leaves_no_run_folder(tmp_path, capsys):
    """The folder exists, so the run starts; the reader then finds no label file. What the run had written goes,
    including the parent folder it made."""
    (tmp_path / "koniq").mkdir()
    out = tmp_path / "runs" / "koniq10k-glia"
    status = run_cli(["--config", KONIQ, "--data.data_dir", str(tmp_path / "koniq"), "--model.backbone",
                      tiny_backbone_argument(), "--output.dir", str(out)])
    line = one_line(capsys)
    assert status == 2 and line.startswith("data error:") and "koniq10k_scores_and_distributions.csv" in line
    assert "data.data_dir" in line
    assert not (tmp_path / "runs").exists()  # neither the run folder nor the parent this run made


def test_failed_run_never_deletes_what_was_there_before(tmp_path, iqa_csv, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    broken = tmp_path / "broken.csv"
    broken.write_text("name,score\nscene0_level0.png,1.0\n")  # not the columns the CSV reader expects
    config = write_config(tmp_path, iqa_csv, output={"dir": str(out)})
    status = run_cli(["--config", str(config), "--data.data_dir", str(broken)])
    assert status == 2 and "broken.csv" in one_line(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # what this run wrote is gone, the rest stays


@pytest.mark.parametrize("backbone, expected", [
    ("someone/no-such-vit", "not in the local Hugging Face cache and HF_HUB_OFFLINE is set"),
    ("/no/such/folder/vit", "no such directory"),
])
def test_backbone_that_cannot_be_had_names_the_field(tmp_path, iqa_csv, capsys, backbone, expected):
    config = write_config(tmp_path, iqa_csv)
    status = run_cli(["--config", str(config), "--model.backbone", backbone])
    line = one_line(capsys)
    assert status == 2 and line.startswith("config error: model.backbone") and expected in line
    assert "local directory" in line
    assert not (tmp_path / "run-glia").exists()


def test_backbone_that_fails_to_load_becomes_a_config_error(tmp_path, iqa_csv, capsys):
    """A local folder with a config.json but no weights gets past the quick check; loading it fails in
    `build_model`, and that failure is reported with the field to change."""
    folder = tmp_path / "vit"
    folder.mkdir()
    from tests.conftest import tiny_vit_config

    tiny_vit_config().save_pretrained(folder)  # config.json only, no weights
    config = write_config(tmp_path, iqa_csv)
    status = run_cli(["--config", str(config), "--model.backbone", str(folder)])
    line = one_line(capsys)
    assert status == 2 and "model.backbone" in line
    assert not (tmp_path / "run-glia").exists()


@pytest.mark.parametrize("override, expected", [
    (["--optim.lr", "-1"], "optim.lr must be positive"),
    (["--optim.epochs", "two"], "optim.epochs must be an integer"),
    (["--data.num_workers", "many"], "data.num_workers must be a number >= 0 or 'auto'"),
    (["--optim.lrr", "1"], "Did you mean 'lr'"),
])
def test_bad_config_values_are_one_line(tmp_path, iqa_csv, capsys, override, expected):
    status = run_cli(["--config", str(write_config(tmp_path, iqa_csv)), *override])
    line = one_line(capsys)
    assert status == 2 and line.startswith("config error:") and expected in line


def test_debug_shows_the_traceback(tmp_path, iqa_csv, monkeypatch):
    from training.config import ConfigError

    with pytest.raises(ConfigError):
        run_cli(["--config", str(write_config(tmp_path, iqa_csv)), "--optim.lr", "-1", "--debug"])
    monkeypatch.setenv("GLIA_DEBUG", "1")
    with pytest.raises(ConfigError):
        run_cli(["--config", str(write_config(tmp_path, iqa_csv)), "--optim.lr", "-1"])


def test_ctrl_c_keeps_the_last_epoch_state_and_prints_the_resume_command(tmp_path, iqa_csv, capsys):
    config = write_config(tmp_path, iqa_csv, optim={"epochs": 2, "batch_size": 4},
                          output={"save_model": False, "plots": False})

    def ctrl_c(split, epoch):
        raise KeyboardInterrupt

    status = run_cli(["--config", str(config)], on_epoch_end=ctrl_c)
    line = one_line(capsys)
    run_dir = tmp_path / "run-glia"
    assert status == 130
    assert line.startswith("interrupted; kept the state of split 0 after its epoch 1")
    assert line.endswith(f"continue with: python training/train.py --resume {run_dir}")
    assert (run_dir / "checkpoints" / "split-0" / "epoch-1" / "STATE_COMPLETE").is_file()


def test_ctrl_c_before_the_first_epoch_removes_the_run_folder(tmp_path, iqa_csv, capsys, monkeypatch):
    from training import train

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train.Run, "train_epoch", ctrl_c)
    status = run_cli(["--config", str(write_config(tmp_path, iqa_csv))])
    line = one_line(capsys)
    assert status == 130 and "nothing was kept" in line
    assert not (tmp_path / "run-glia").exists()


def test_disk_full_is_one_line(tmp_path, iqa_csv, capsys, monkeypatch):
    from training import train

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    # The first epoch state cannot be written: nothing can be resumed, so the run folder goes.
    monkeypatch.setattr(train.Run, "save_state", full)
    status = run_cli(["--config", str(write_config(tmp_path, iqa_csv))])
    line = one_line(capsys)
    assert status == 1 and line.startswith("no space left on device") and "--output.dir" in line
    assert "nothing was kept" in line and not (tmp_path / "run-glia").exists()


def test_disk_full_after_a_saved_epoch_says_how_to_resume(tmp_path, iqa_csv, capsys):
    config = write_config(tmp_path, iqa_csv, optim={"epochs": 2, "batch_size": 4},
                          output={"save_model": False, "plots": False})

    def full(split, epoch):
        raise OSError(errno.ENOSPC, "No space left on device")

    status = run_cli(["--config", str(config)], on_epoch_end=full)
    line = one_line(capsys)
    assert status == 1 and "after its epoch 1" in line and line.endswith(f"--resume {tmp_path / 'run-glia'}")


def test_command_line_error_is_one_line_in_a_subprocess(tmp_path):
    """The real entry point: `python training/train.py` with a missing data folder."""
    command = [sys.executable, str(REPO_ROOT / "training" / "train.py"), "--config",
               str(REPO_ROOT / "training" / "configs" / "koniq10k.yaml"), "--data.data_dir", "/nonexistent",
               "--model.backbone", yaml.safe_dump(tiny_backbone(), default_flow_style=True).strip()]
    done = subprocess.run(command, cwd=tmp_path, env=_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "/nonexistent" in done.stderr and "data.data_dir" in done.stderr
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------------------------------- --help


def test_help_lists_every_config_field_with_its_default_and_description():
    from training.config import TrainConfig, field_descriptions

    done = subprocess.run([sys.executable, str(REPO_ROOT / "training" / "train.py"), "--help"], cwd=REPO_ROOT,
                          env=_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    defaults = TrainConfig()
    for section in dataclasses.fields(TrainConfig):
        cls = type(getattr(defaults, section.name))
        assert any(line.startswith(f"{section.name}: ") for line in lines), section.name
        descriptions = field_descriptions(cls)
        for item in dataclasses.fields(cls):
            assert item.name in descriptions, f"{section.name}.{item.name} has no entry in {cls.__name__}'s docstring"
            line = next(line for line in lines if line.startswith(f"  --{section.name}.{item.name} ["))
            assert descriptions[item.name].split(".")[0][:30] in line
    assert any(line.startswith("  --data.num_workers [auto]  ") for line in lines)
    assert any(line.startswith("  --optim.lr [0.0003]  ") for line in lines)


# ------------------------------------------------------------------------------------------ num_workers: auto


def test_num_workers_auto_is_the_default_and_fits_the_machine():
    from training.config import ConfigError, TrainConfig, load_config
    from training.loop import resolve_num_workers

    assert TrainConfig().data.num_workers == "auto"
    assert load_config(None, ["--data.num_workers", "3"]).data.num_workers == 3
    with pytest.raises(ConfigError, match="data.num_workers"):
        load_config(None, ["--data.num_workers", "-1"])
    # CPU: half the cores of each process are workers, the rest compute threads (2 cores: 1 + 1; 1 core: none).
    assert resolve_num_workers("auto", 1, on_gpu=False, cpus=2) == 1
    assert resolve_num_workers("auto", 1, on_gpu=False, cpus=1) == 0
    assert resolve_num_workers("auto", 2, on_gpu=False, cpus=16) == 4
    # GPU: all of a process's cores but its own, at most 8.
    assert resolve_num_workers("auto", 1, on_gpu=True, cpus=4) == 3
    assert resolve_num_workers("auto", 1, on_gpu=True, cpus=64) == 8
    assert resolve_num_workers("auto", 8, on_gpu=True, cpus=8) == 1
    assert resolve_num_workers(5, 1, on_gpu=False, cpus=2) == 5
    benchmarks = [p for p in (REPO_ROOT / "training" / "configs").glob("*.yaml") if p.stem != "quickstart"]
    assert len(benchmarks) == 8
    for path in benchmarks:
        assert yaml.safe_load(path.read_text())["data"]["num_workers"] == "auto", path.name
        assert load_config(path).data.num_workers == "auto"
