"""`glia-iqa score --output` on several processes and after an interruption: one output, in input order, equal to a
one-process run within the batch guarantee, with no row lost or written twice.

Two processes on CPU are started the way tests/test_training.py starts them: `accelerate launch --multi_gpu
--num_processes 2` (torchrun), which glia_hf joins over gloo when there is no GPU (`--cpu --num_processes 2` would
start one process). The interruption uses the documented test hook GLIA_IQA_STOP_AFTER_BATCHES (glia_hf/scoring.py):
every process exits abruptly, as a kill would, once its first batch is on disk.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from glia_hf import scoring
from glia_hf.cli import main
from tests.conftest import BATCH_ATOL  # the shared batch-guarantee tolerance
from tests.test_cli import save_tiny_glia, smooth_photo


REPO_ROOT = Path(__file__).resolve().parents[1]
NUM_IMAGES = 13


@pytest.fixture(scope="module")
def folder_and_model(tmp_path_factory):
    """A saved tiny model and a folder of 13 photos of different sizes plus one unreadable file."""
    root = tmp_path_factory.mktemp("scale")
    save_tiny_glia(root / "model")
    images = root / "images"
    images.mkdir()
    for index in range(NUM_IMAGES):
        height, width = 60 + 7 * index, 90 + 5 * index
        Image.fromarray(smooth_photo(height, width, seed=index)).save(images / f"img{index:02d}.png")
    (images / "broken.jpg").write_text("not a picture\n")
    return root / "model", images


def rows(path):
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def assert_same_output(actual, expected):
    """Same rows in the same order, same statuses, scores equal within the batch guarantee."""
    assert [r["path"] for r in actual] == [r["path"] for r in expected]
    assert [r["status"] for r in actual] == [r["status"] for r in expected]
    for got, want in zip(actual, expected):
        if want["status"] == "ok":
            assert abs(float(got["score"]) - float(want["score"])) <= BATCH_ATOL, got["path"]
        else:
            assert got["score"] == "" and got["error"] == want["error"]


@pytest.fixture(scope="module")
def reference(folder_and_model, tmp_path_factory):
    """A one-process run, in this process, with a batch size that does not divide the file count."""
    model, images = folder_and_model
    output = tmp_path_factory.mktemp("reference") / "scores.csv"
    assert main(["score", str(images), "--model", str(model), "--output", str(output), "--batch-size", "3",
                 "--no-progress"]) == 1  # the broken file fails, the others are scored
    expected = rows(output)
    assert len(expected) == NUM_IMAGES + 1 and sum(r["status"] == "ok" for r in expected) == NUM_IMAGES
    assert not scoring.parts_dir(output).exists()
    return expected


def launch_two_processes(arguments, cwd, **extra_env):
    env = {key: value for key, value in os.environ.items() if key not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(REPO_ROOT), PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1", **extra_env)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "glia_hf.cli", "score", *map(str, arguments)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_two_processes_write_one_output_equal_to_one_process(folder_and_model, reference, tmp_path):
    model, images = folder_and_model
    output = tmp_path / "two.csv"
    done = launch_two_processes([images, "--model", model, "--output", output, "--batch-size", "2"], tmp_path)
    assert done.returncode != 0, "the broken file must give exit status 1"
    assert "scored 13 image(s), 1 failed" in done.stderr, done.stderr[-3000:]
    assert done.stderr.count("scored 13 image(s)") == 1  # only the main process reports
    assert_same_output(rows(output), reference)
    assert not scoring.parts_dir(output).exists()


def test_a_killed_two_process_run_resumes_without_losing_or_repeating_rows(
    folder_and_model, reference, tmp_path, monkeypatch
):
    model, images = folder_and_model
    output = tmp_path / "killed.csv"
    arguments = [images, "--model", model, "--output", output, "--batch-size", "2"]
    done = launch_two_processes(arguments, tmp_path, **{scoring.STOP_AFTER_ENV: "1"})
    assert done.returncode != 0
    assert not output.exists()  # the output is only ever written whole
    shards = sorted(scoring.parts_dir(output).glob("*.jsonl"))
    on_disk = [record for shard in shards for record in scoring.read_shard(shard)]
    kept = [record.path for record in on_disk]
    assert len(shards) == 2 and len(kept) == 4 and len(set(kept)) == 4  # one batch of 2 from each process
    # A write torn by the kill: half a line at the end of a shard is ignored.
    with open(shards[0], "a", encoding="utf-8") as stream:
        stream.write('{"path": "' + str(images / "img12.png") + '", "score": 9')
    assert len(scoring.read_shard(shards[0])) == 2

    # Resume in one process (any count works): only the files not scored yet are (failed rows are tried again).
    import glia_hf.cli

    scored, real_score_files = [], glia_hf.cli.score_files

    def counting_score_files(files, *args, **kwargs):
        scored.extend(files)
        return real_score_files(files, *args, **kwargs)

    monkeypatch.setattr("glia_hf.cli.score_files", counting_score_files)
    status = main(["score", *map(str, arguments), "--resume", "--no-progress"])
    assert status == 1
    every_file = {str(path) for path in images.iterdir()}
    assert sorted(scored) == sorted(every_file - {record.path for record in on_disk if record.status == "ok"})
    assert_same_output(rows(output), reference)
    assert not scoring.parts_dir(output).exists()

    # Resuming a finished output scores only the failed row again and changes nothing.
    scored.clear()
    assert main(["score", *map(str, arguments), "--resume", "--no-progress"]) == 1
    assert scored == [str(images / "broken.jpg")]
    assert_same_output(rows(output), reference)


def test_resume_refuses_other_settings_and_needs_an_output(folder_and_model, tmp_path, capsys):
    model, images = folder_and_model
    output = tmp_path / "scores.json"
    assert main(["score", str(images / "img00.png"), "--model", str(model), "--output", str(output),
                 "--no-progress"]) == 0
    assert json.loads(output.read_text())["results"][0]["status"] == "ok"
    capsys.readouterr()
    assert main(["score", str(images / "img00.png"), "--model", str(model), "--output", str(output), "--resume",
                 "--num-samples", "2", "--no-progress"]) == 2
    assert "made with other settings (num_samples: None then, 2 now" in capsys.readouterr().err
    assert main(["score", str(images / "img00.png"), "--model", str(model), "--resume"]) == 2
    assert "--resume needs --output" in capsys.readouterr().err


def test_a_stale_parts_folder_is_discarded_without_resume(folder_and_model, reference, tmp_path):
    model, images = folder_and_model
    output = tmp_path / "scores.csv"
    stale = scoring.parts_dir(output)
    stale.mkdir()
    (stale / "attempt-0000-rank-00000.jsonl").write_text(
        json.dumps({"path": str(images / "img00.png"), "score": 123.0, "status": "ok", "error": None}) + "\n"
    )
    assert main(["score", str(images), "--model", str(model), "--output", str(output), "--no-progress"]) == 1
    assert_same_output(rows(output), reference)  # img00.png's stale 123.0 is gone
