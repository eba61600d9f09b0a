"""`glia-iqa score`: path expansion, every kind of image file, unreadable files, outputs, exit codes, batch invariance.

The helpers at the top (a tiny saved GLIANet and a folder of generated image files) are also used by
tests/test_pipeline.py and tests/test_attention_maps.py.
"""

import csv
import io
import json
import math
import os
import runpy
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from glia_hf import GLIAConfig, GLIAForImageQualityAssessment, GLIAImageProcessor
from glia_hf.cli import expand_paths, main
from tests.conftest import BATCH_ATOL, tiny_vit_config


# --- shared helpers -------------------------------------------------------------------------------------------------


def tiny_glia(seed=0, **options):
    """A tiny random GLIANet on a 1-5 scale whose GLIA blocks are switched on (non-zero injection), in eval mode."""
    torch.manual_seed(seed)
    options.setdefault("latent_dim", 16)
    model = GLIAForImageQualityAssessment(
        GLIAConfig(backbone_config=tiny_vit_config(), score_min=1, score_max=5, **options)
    )
    with torch.no_grad():
        for block in model.glia.glia_blocks.values():
            block.up.fc2.weight.normal_(std=0.2)
        model.regressor.weight.normal_(std=0.5)
    return model.eval()


def save_tiny_glia(directory, seed=0, **options):
    """Save a tiny GLIANet and its processor as a checkpoint directory; returns the model."""
    model = tiny_glia(seed, **options)
    model.save_pretrained(directory)
    GLIAImageProcessor.from_config(model.config).save_pretrained(directory)
    return model


def smooth_photo(height, width, seed=0):
    """A photo-like uint8 RGB array: smooth colour gradients, blobs and mild noise (not white noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [np.sin(6 * x * (c + 1) + 3 * y + rng.uniform(0, 6)) * 0.4 + 0.5 for c in range(3)]
    image = np.stack(channels, axis=-1) + rng.normal(0, 0.05, (height, width, 3))
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def exif_with_orientation(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


GOOD_IMAGES = ("rgb.png", "exif.jpg", "exif.png", "upright.png", "gray.png", "gray16.png", "rgba.png", "cmyk.jpg",
               "cmyk.tif", "tiny.png", "large.jpg", "nested/deep/inner.png")
BAD_IMAGES = ("truncated.jpg", "notes.jpg")


def write_images(folder):
    """Write one file of each kind the scorer must handle; returns {name: path}.

    Good: RGB PNG; JPEG and PNG with EXIF orientation 6 (and `upright.png`, the same pixels already rotated);
    8-bit and 16-bit grayscale PNG with equal values; RGBA PNG; CMYK JPEG and TIFF; a 1x1 PNG; a 1600x1200 JPEG; a PNG
    two folders down. Bad: a truncated JPEG and a text file named .jpg. `readme.txt` must be ignored by folder walks.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nested" / "deep").mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in GOOD_IMAGES + BAD_IMAGES}
    rgb = smooth_photo(240, 320, seed=1)
    Image.fromarray(rgb).save(paths["rgb.png"])
    Image.fromarray(rgb).save(paths["exif.jpg"], quality=95, exif=exif_with_orientation(6))
    Image.fromarray(rgb).save(paths["exif.png"], exif=exif_with_orientation(6))
    # Orientation 6: the stored picture must be turned 90 degrees clockwise to be upright.
    Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_270).save(paths["upright.png"])
    gray = smooth_photo(200, 260, seed=2)[..., 0]
    Image.fromarray(gray).save(paths["gray.png"])
    Image.fromarray(gray.astype(np.uint16) * 257).save(paths["gray16.png"])
    alpha = np.linspace(0, 255, 300, dtype=np.uint8)[None, :].repeat(220, 0)
    Image.fromarray(np.dstack([smooth_photo(220, 300, seed=3), alpha])).save(paths["rgba.png"])
    Image.fromarray(smooth_photo(230, 250, seed=4)).convert("CMYK").save(paths["cmyk.jpg"], quality=95)
    Image.fromarray(smooth_photo(230, 250, seed=5)).convert("CMYK").save(paths["cmyk.tif"])
    Image.fromarray(np.array([[[200, 30, 90]]], dtype=np.uint8)).save(paths["tiny.png"])
    Image.fromarray(smooth_photo(1200, 1600, seed=6)).save(paths["large.jpg"], quality=90)
    Image.fromarray(smooth_photo(250, 250, seed=7)).save(paths["nested/deep/inner.png"])
    whole = io.BytesIO()
    Image.fromarray(smooth_photo(300, 300, seed=8)).save(whole, format="JPEG", quality=95)
    paths["truncated.jpg"].write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    paths["notes.jpg"].write_text("these are notes, not a picture\n")
    (folder / "readme.txt").write_text("not an image\n")
    return paths


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A saved tiny model and the image folder, shared by the tests of this module (both are read-only here)."""
    root = tmp_path_factory.mktemp("cli")
    save_tiny_glia(root / "model")
    return root / "model", write_images(root / "images")


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as stream:
        return {row["path"]: row for row in csv.DictReader(stream)}


def scores_of(rows):
    return {os.path.basename(path): float(row["score"]) for path, row in rows.items() if row["status"] == "ok"}


# --- path expansion -------------------------------------------------------------------------------------------------


def test_expand_paths_files_folders_globs_and_misses(workspace):
    _, paths = workspace
    folder = paths["rgb.png"].parent
    files, missing = expand_paths([str(paths["notes.jpg"]), str(folder), str(folder / "*.png"),
                                   str(folder / "nothing-*.png"), str(folder / "absent.png")])
    names = [os.path.relpath(f, folder) for f in files]
    assert names[0] == "notes.jpg"  # named explicitly: kept first, listed once although the folder holds it too
    assert sorted(names) == sorted(GOOD_IMAGES + BAD_IMAGES)  # recursive, each file once, readme.txt left out
    assert "readme.txt" not in names
    assert [(os.path.basename(m.path), m.error) for m in missing] == [
        ("nothing-*.png", "pattern matches no image files"), ("absent.png", "no such file or folder")]
    recursive, _ = expand_paths([str(folder / "**" / "inner.png")])
    assert [os.path.basename(f) for f in recursive] == ["inner.png"]


# --- scoring --------------------------------------------------------------------------------------------------------


def test_every_kind_of_image_is_scored_and_bad_files_are_reported(workspace, tmp_path, capsys):
    model, paths = workspace
    folder = paths["rgb.png"].parent
    out = tmp_path / "scores.csv"
    status = main(["score", str(folder), "--model", str(model), "--batch-size", "4", "--output", str(out)])
    assert status == 1  # two files failed
    rows = read_csv(out)
    assert len(rows) == len(GOOD_IMAGES) + len(BAD_IMAGES)
    for name in GOOD_IMAGES:
        row = rows[str(paths[name])]
        assert row["status"] == "ok" and row["error"] == "", row
        assert math.isfinite(float(row["score"]))
    for name in BAD_IMAGES:
        row = rows[str(paths[name])]
        assert row["status"] == "error" and row["score"] == "" and row["error"], row
    assert "truncated" in rows[str(paths["truncated.jpg"])]["error"]
    stderr = capsys.readouterr().err
    for name in BAD_IMAGES:
        assert f"glia-iqa: error: {paths[name]}: cannot read image" in stderr
    assert "scored 12 image(s), 2 failed" in stderr

    scores = scores_of(rows)
    # EXIF orientation is applied: the rotated PNG scores as the upright copy of its pixels; 16-bit = 8-bit. The pairs
    # sit in different batches / rows here, so they agree within the batch guarantee, not bit for bit.
    assert scores["exif.png"] == pytest.approx(scores["upright.png"], abs=BATCH_ATOL)
    assert scores["gray16.png"] == pytest.approx(scores["gray.png"], abs=BATCH_ATOL)
    assert len({round(s, 6) for s in scores.values()}) > 5  # a real model, not a constant


def test_an_image_scores_the_same_alone_and_in_any_batch(workspace, tmp_path):
    model, paths = workspace
    good = [str(paths[name]) for name in GOOD_IMAGES if name != "large.jpg"]
    results = {}
    for batch_size, files in [(1, good), (4, good[::-1]), (16, good[3:6])]:
        out = tmp_path / f"b{batch_size}.json"
        assert main(["score", *files, "--model", str(model), "--batch-size", str(batch_size), "--output", str(out),
                     "--no-progress"]) == 0
        results[batch_size] = {r["path"]: r["score"] for r in json.loads(out.read_text())["results"]}
    reference = results[1]
    for batch_size, scores in results.items():
        for path, score in scores.items():
            assert score == pytest.approx(reference[path], abs=BATCH_ATOL), (batch_size, path)


def test_test_time_averaging_is_seeded_and_batch_independent(workspace, tmp_path):
    model, paths = workspace
    files = [str(paths[name]) for name in ("rgb.png", "exif.jpg", "gray.png")]

    def run(*options):
        out = tmp_path / "tta.json"
        assert main(["score", *files, "--model", str(model), "--output", str(out), "--no-progress", *options]) == 0
        document = json.loads(out.read_text())
        return document, [r["score"] for r in document["results"]]

    document, first = run("--num-samples", "3", "--seed", "7", "--batch-size", "3")
    assert document["num_samples"] == 3 and document["seed"] == 7
    assert document["score_range"] == [1.0, 5.0]
    _, again = run("--num-samples", "3", "--seed", "7", "--batch-size", "1")
    np.testing.assert_allclose(again, first, atol=BATCH_ATOL)
    default_seed, other_seed = run("--num-samples", "3")
    assert default_seed["seed"] == 0
    _, centred = run()
    assert not np.allclose(other_seed, first, atol=1e-6)
    assert not np.allclose(centred, first, atol=1e-6)


def test_images_above_the_pixel_limit_are_refused_clearly(workspace, tmp_path, capsys):
    model, paths = workspace
    out = tmp_path / "limit.csv"
    status = main(["score", str(paths["large.jpg"]), str(paths["rgb.png"]), "--model", str(model),
                   "--max-pixels", "1000000", "--output", str(out), "--no-progress"])
    assert status == 1
    rows = read_csv(out)
    large = rows[str(paths["large.jpg"])]
    assert large["status"] == "error"
    assert "1600x1200 = 1,920,000 pixels" in large["error"] and "--max-pixels" in large["error"]
    assert rows[str(paths["rgb.png"])]["status"] == "ok"
    assert f"{paths['large.jpg']}: image too large" in capsys.readouterr().err
    assert main(["score", str(paths["large.jpg"]), "--model", str(model), "--max-pixels", "0",
                 "--output", str(tmp_path / "nolimit.csv"), "--no-progress"]) == 0


def test_table_on_stdout_json_document_and_missing_inputs(workspace, tmp_path, capsys):
    model, paths = workspace
    status = main(["score", str(paths["rgb.png"]), str(tmp_path / "absent.png"), "--model", str(model),
                   "--no-progress"])
    assert status == 1
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].split() == ["score", "status", "path"]
    assert any(line.endswith(str(paths["rgb.png"])) and " ok " in line for line in lines[1:])
    assert any(line.endswith("absent.png") and " error " in line for line in lines[1:])
    assert f"{tmp_path / 'absent.png'}: no such file or folder" in captured.err

    out = tmp_path / "sub" / "scores.json"
    assert main(["score", str(paths["tiny.png"]), "--model", str(model), "--output", str(out), "--no-progress"]) == 0
    document = json.loads(out.read_text())
    assert document["model"] == str(model) and document["num_samples"] is None and document["seed"] is None
    (result,) = document["results"]
    assert result["path"] == str(paths["tiny.png"]) and result["status"] == "ok" and result["error"] is None


@pytest.mark.parametrize(
    "arguments, message",
    [
        ([], "the following arguments are required: COMMAND (see 'glia-iqa --help')"),
        (["score", "x.png"], "the following arguments are required: --model"),
        (["score", "{image}", "--model", "{model}", "--output", "scores.txt"], "must end in .csv or .json"),
        (["score", "{image}", "--model", "{model}", "--seed", "3"], "--seed only applies with --num-samples"),
        (["score", "{image}", "--model", "{model}", "--batch-size", "0"], "must be a positive integer"),
        (["score", "{image}", "--model", "{model}", "--batch-size", "four"], "must be an integer, got 'four'"),
        (["score", "{image}", "--model", "{model}", "--device", "tpu"], "invalid choice: 'tpu'"),
        (["score", "{empty}", "{absent}", "--model", "{model}"],
         "no image files found in the given paths ({empty}: folder holds no image files; {absent}: no such file"),
        (["score", "{image}", "--model", "{absent}"], "{absent}: no such model folder"),
        (["score", "{image}", "--model", "/tmp/surely/not/a/model"], "/tmp/surely/not/a/model: no such model folder"),
        (["score", "{image}", "--model", "{empty}"], "{empty}: not a model folder (it has no config.json)"),
        (["score", "{image}", "--model", "{image}"], "{image}: is a file, not a model folder"),
        (["score", "{image}", "--model", "{vit}"], "{vit}: holds a 'vit' model, not a GLIANet checkpoint"),
        (["score", "{image}", "--model", "someone/glianet"],
         "someone/glianet: no such local folder, and it cannot be downloaded from the Hugging Face Hub in offline "
         "mode (HF_HUB_OFFLINE=1); a local model folder works too (--model path/to/model)"),
    ],
)
def test_usage_errors_are_one_line_and_exit_with_2(workspace, tmp_path, capsys, arguments, message):
    model, paths = workspace
    (tmp_path / "empty").mkdir()
    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / "config.json").write_text('{"model_type": "vit"}')
    values = {"image": str(paths["rgb.png"]), "model": str(model), "empty": str(tmp_path / "empty"),
              "absent": str(tmp_path / "absent"), "vit": str(tmp_path / "vit")}
    assert main([a.format(**values) for a in arguments]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1, captured.err  # one line, no usage block, no traceback
    assert message.format(**values) in captured.err
    assert captured.err.startswith(("glia-iqa: error: ", "glia-iqa score: error: "))


def test_a_hub_id_that_cannot_be_reached_says_so_and_that_a_folder_works(workspace, monkeypatch, capsys):
    """Mocked at the Hub boundary: online mode, and the download fails as transformers reports a missing network."""
    import huggingface_hub

    from glia_hf import GLIAForImageQualityAssessment

    _, paths = workspace

    def no_network(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in "
                      "the cached files.\nCheck your internet connection or see how to run the library in offline mode")

    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(GLIAForImageQualityAssessment, "from_pretrained", no_network)
    assert main(["score", str(paths["rgb.png"]), "--model", "someone/glianet", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == ("glia-iqa: error: someone/glianet: no such local folder, and the Hugging Face Hub cannot be "
                   "reached; a local model folder works too (--model path/to/model)\n")


def test_debug_flag_and_environment_variable_show_the_traceback(workspace, tmp_path, monkeypatch):
    from glia_hf.cli import UsageError

    _, paths = workspace
    arguments = ["score", str(paths["rgb.png"]), "--model", str(tmp_path / "nomodel")]
    with pytest.raises(UsageError, match="no such model folder"):
        main([*arguments, "--debug"])
    with pytest.raises(UsageError, match="no such model folder"):
        main(["--debug", *arguments])  # before the subcommand too
    monkeypatch.setenv("GLIA_DEBUG", "1")
    with pytest.raises(UsageError, match="no such model folder"):
        main(arguments)


def test_an_unexpected_error_is_one_line_pointing_at_debug(workspace, monkeypatch, capsys):
    from glia_hf import cli

    model, paths = workspace

    def broken(*args, **kwargs):
        raise RuntimeError("something inside\nbroke")

    monkeypatch.setattr(cli, "score_files", broken)
    assert main(["score", str(paths["rgb.png"]), "--model", str(model), "--no-progress"]) == 1
    assert capsys.readouterr().err.endswith(
        "glia-iqa: error: RuntimeError: something inside broke (run with --debug for the traceback)\n")


def test_the_installed_command_prints_no_traceback(tmp_path):
    """The issue's case, as a user runs it: a path-like --model that does not exist, in a fresh interpreter."""
    import subprocess

    image = tmp_path / "x.jpg"
    Image.fromarray(smooth_photo(40, 40)).save(image)
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    env.pop("GLIA_DEBUG", None)
    nomodel = str(tmp_path / "nomodel")
    result = subprocess.run([sys.executable, "-m", "glia_hf.cli", "score", str(image), "--model", nomodel],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2
    assert result.stderr == f"glia-iqa: error: {nomodel}: no such model folder\n"


@pytest.mark.filterwarnings("ignore:'glia_hf.cli' found in sys.modules")
def test_runs_as_a_module_with_a_progress_bar(workspace, tmp_path, capfd, monkeypatch):
    """`python -m glia_hf.cli` (run in this interpreter with runpy, to save a second start-up of torch)."""
    model, paths = workspace
    out = tmp_path / "scores.csv"
    monkeypatch.setattr(sys, "argv", ["glia-iqa", "score", str(paths["rgb.png"]), str(paths["notes.jpg"]),
                                      "--model", str(model), "--output", str(out), "--device", "cpu"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("glia_hf.cli", run_name="__main__", alter_sys=True)
    assert exit_.value.code == 1
    stderr = capfd.readouterr().err
    assert "Scoring: 100%" in stderr  # the tqdm bar
    assert f"{paths['notes.jpg']}: cannot read image" in stderr
    rows = read_csv(out)
    assert rows[str(paths["rgb.png"])]["status"] == "ok" and rows[str(paths["notes.jpg"])]["status"] == "error"
