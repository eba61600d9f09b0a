"""pipeline("image-quality-assessment"): saved with every checkpoint, usable without glia_hf, batch independent."""

import csv
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from glia_hf import GLIAImageProcessor, ImageQualityAssessmentPipeline
from glia_hf.cli import score_files
from glia_hf.data.images import load_image
from glia_hf.pipeline_glia import PIPELINE_TASK
from tests.conftest import BATCH_ATOL, run_without_glia_hf
from tests.test_cli import GOOD_IMAGES, save_tiny_glia, write_images


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    model = save_tiny_glia(root / "model")
    return root, model, write_images(root / "images")


@pytest.fixture
def scorer(workspace):
    root, _, _ = workspace
    return pipeline(PIPELINE_TASK, model=str(root / "model"), trust_remote_code=True, device="cpu")


def direct_scores(model, images, **options):
    processor = GLIAImageProcessor.from_config(model.config)
    with torch.no_grad():
        return model(**processor(images=images, **options)).score.tolist()


def test_a_saved_model_carries_the_pipeline(workspace):
    root, _, _ = workspace
    directory = root / "model"
    files = {p.name for p in directory.iterdir()}
    assert {"pipeline_glia.py", "modeling_glia.py", "image_processing_glia.py", "fragment_sampling.py",
            "configuration_glia.py", "config.json", "model.safetensors", "preprocessor_config.json"} <= files
    source = Path(__file__).resolve().parents[1] / "glia_hf" / "pipeline_glia.py"
    assert (directory / "pipeline_glia.py").read_text() == source.read_text()
    config = json.loads((directory / "config.json").read_text())
    assert config["custom_pipelines"] == {
        PIPELINE_TASK: {"impl": "pipeline_glia.ImageQualityAssessmentPipeline", "pt": ["AutoModel"], "type": "image"}
    }
    pipeline_source = (directory / "pipeline_glia.py").read_text()
    assert "glia_hf" not in pipeline_source.replace("glia_hf.", "")  # no import of the package
    assert "import glia_hf" not in pipeline_source and "from glia_hf" not in pipeline_source


def test_scores_paths_pil_images_arrays_and_lists(workspace, scorer):
    _, model, paths = workspace
    rgb = paths["rgb.png"]
    single = scorer(str(rgb))
    assert set(single) == {"score"} and isinstance(single["score"], float)
    (expected,) = direct_scores(model, load_image(rgb))
    # Alone against alone (the same batch composition, the same pixels): equal to float rounding, held tighter than
    # the batch guarantee. Comparisons across batches below use BATCH_ATOL.
    assert single["score"] == pytest.approx(expected, abs=1e-6)
    assert scorer(rgb)["score"] == pytest.approx(expected, abs=1e-6)  # pathlib.Path
    assert scorer(Image.open(rgb))["score"] == pytest.approx(expected, abs=1e-6)
    assert scorer(np.array(Image.open(rgb)))["score"] == pytest.approx(expected, abs=1e-6)

    # Batch independence: the pipeline one image at a time, in batches of 4 in reverse order, and the command line's
    # scorer (which reads files with glia_hf.data.images.load_image) in batches of 5 all agree.
    files = [str(paths[name]) for name in GOOD_IMAGES if name != "large.jpg"]
    processor = GLIAImageProcessor.from_config(model.config)
    reference = {r.path: r.score for r in score_files(files, model, processor, batch_size=5, progress=False)}
    batched = scorer(files[::-1], batch_size=4)
    assert isinstance(batched, list) and len(batched) == len(files)
    for f, r in zip(files[::-1], batched):
        assert r["score"] == pytest.approx(reference[f], abs=BATCH_ATOL), f
    # Alone against alone: the rotated and the upright file decode to the same pixels, so these stay tight.
    alone = {Path(f).name: scorer(f)["score"] for f in files if Path(f).name in ("exif.png", "upright.png",
                                                                                 "gray.png", "gray16.png")}
    for name, score in alone.items():
        assert score == pytest.approx(reference[str(paths[name])], abs=BATCH_ATOL), name
    assert alone["exif.png"] == pytest.approx(alone["upright.png"], abs=1e-6)  # EXIF orientation applied
    assert alone["gray16.png"] == pytest.approx(alone["gray.png"], abs=1e-6)  # 16-bit scaled to 8-bit
    assert scorer(tuple(files[:2]))[1]["score"] == pytest.approx(reference[files[1]], abs=BATCH_ATOL)
    assert scorer([]) == []


def test_test_time_averaging_options(workspace, scorer):
    _, model, paths = workspace
    files = [str(paths["rgb.png"]), str(paths["rgba.png"])]
    averaged = [r["score"] for r in scorer(files, num_samples=3, seed=5, batch_size=2)]
    alone = [scorer(f, num_samples=3, seed=5)["score"] for f in files]
    np.testing.assert_allclose(averaged, alone, atol=BATCH_ATOL)
    np.testing.assert_allclose(averaged, direct_scores(model, [load_image(f) for f in files], num_samples=3, seed=5),
                               atol=BATCH_ATOL)
    centred = [r["score"] for r in scorer(files)]
    assert not np.allclose(averaged, centred, atol=1e-6)
    assert scorer(files[0], num_samples=3)["score"] == pytest.approx(scorer(files[0], num_samples=3, seed=0)["score"])
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        scorer(files[0], num_samples=0)


def test_unreadable_inputs_fail_naming_the_file(workspace, scorer, tmp_path):
    _, _, paths = workspace
    with pytest.raises(FileNotFoundError, match="URLs are not fetched"):  # nothing is downloaded
        scorer("https://example.com/photo.jpg")
    with pytest.raises(FileNotFoundError, match="absent.png"):
        scorer(str(tmp_path / "absent.png"))
    with pytest.raises(OSError, match=r"notes\.jpg: cannot read image"):
        scorer(str(paths["notes.jpg"]))
    with pytest.raises(OSError, match=r"truncated\.jpg: cannot read image .*truncated"):
        scorer(str(paths["truncated.jpg"]))
    with pytest.raises(ValueError, match=r"large\.jpg: image too large: 1600x1200 = 1,920,000 pixels"):
        scorer(str(paths["large.jpg"]), max_pixels=1_000_000)
    assert np.isfinite(scorer(str(paths["large.jpg"]), max_pixels=None)["score"])
    with pytest.raises(TypeError, match="Cannot score an input of type int"):
        scorer(3)


def test_one_reader_one_message_on_every_path(workspace, scorer, tmp_path):
    """The pipeline, `glia-iqa score` and `glia_hf.data.load_image` read files with the one reader and fail alike."""
    from glia_hf.cli import main
    from glia_hf.data import IQAImageError
    from glia_hf.pipeline_glia import ImageFileError, open_image_file

    _, _, paths = workspace
    cases = [(paths["notes.jpg"], None), (paths["truncated.jpg"], None), (paths["large.jpg"], 1_000_000),
             (tmp_path / "absent.png", None)]
    for path, limit in cases:
        with pytest.raises(ImageFileError) as raised:
            open_image_file(path, max_pixels=limit)
        message = str(raised.value)
        assert message.startswith(f"{path}: ") and message == f"{path}: {raised.value.reason}"
        with pytest.raises(OSError) as through_pipeline:
            scorer(str(path), max_pixels=limit)
        with pytest.raises(IQAImageError) as through_data:
            load_image(path, max_pixels=limit)
        assert str(through_pipeline.value) == str(through_data.value) == message, path
        assert through_data.value.file == str(path)
        if path.exists():  # the command line reports the same line on stderr and the reason in its CSV
            out = tmp_path / "out.csv"
            options = ["--max-pixels", str(limit)] if limit else []
            assert main(["score", str(path), "--model", str(workspace[0] / "model"), "--output", str(out),
                         "--no-progress", *options]) == 1
            rows = list(csv.DictReader(out.open(encoding="utf-8")))
            assert f"{path}: {rows[0]['error']}" == message
    reasons = {}
    for path, limit in cases:
        try:
            open_image_file(path, max_pixels=limit)
        except ImageFileError as error:
            reasons[path.name] = error.reason
    assert reasons["truncated.jpg"].startswith("cannot read image") and "truncated" in reasons["truncated.jpg"]
    assert reasons["notes.jpg"].startswith("cannot read image")
    assert "1600x1200 = 1,920,000 pixels, more than the limit of 1,000,000" in reasons["large.jpg"]
    assert reasons["absent.png"] == "no such image file"


def test_the_reader_restores_pils_settings_and_ignores_load_truncated_images(workspace):
    from PIL import ImageFile

    from glia_hf.pipeline_glia import ImageFileError, open_image_file

    _, _, paths = workspace
    previous = Image.MAX_IMAGE_PIXELS
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # some other library asked for half-decoded files: still refused here
    try:
        with pytest.raises(ImageFileError, match="truncated"):
            open_image_file(paths["truncated.jpg"])
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True and Image.MAX_IMAGE_PIXELS == previous
        image = open_image_file(paths["rgb.png"])
        assert image.mode == "RGB" and image.size == (320, 240) and np.asarray(image).std() > 0
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_pipeline_class_directly_and_pipeline_save_pretrained(workspace, tmp_path):
    _, model, paths = workspace
    scorer = ImageQualityAssessmentPipeline(model=model, device="cpu")  # processor built from the config
    (expected,) = direct_scores(model, load_image(paths["rgb.png"]))
    assert scorer(str(paths["rgb.png"]))["score"] == pytest.approx(expected, abs=1e-6)
    scorer.save_pretrained(tmp_path / "from_pipeline")
    files = {p.name for p in (tmp_path / "from_pipeline").iterdir()}
    assert {"pipeline_glia.py", "modeling_glia.py", "preprocessor_config.json"} <= files
    config = json.loads((tmp_path / "from_pipeline" / "config.json").read_text())
    assert config["custom_pipelines"][PIPELINE_TASK]["impl"] == "pipeline_glia.ImageQualityAssessmentPipeline"

    # A checkpoint saved without its processor still works: the pipeline builds one from the model's config.
    model.save_pretrained(tmp_path / "model_only")
    assert not (tmp_path / "model_only" / "preprocessor_config.json").exists()
    loaded = pipeline(PIPELINE_TASK, model=str(tmp_path / "model_only"), trust_remote_code=True, device="cpu")
    assert loaded(str(paths["rgb.png"]))["score"] == pytest.approx(expected, abs=1e-6)


# Runs through `run_without_glia_hf`, in an interpreter where `import glia_hf` fails.
WITHOUT_GLIA_HF = textwrap.dedent(
    """
    import json, sys

    from PIL import Image
    from transformers import pipeline

    results = {}
    for directory in sys.argv[3:]:
        scorer = pipeline("image-quality-assessment", model=directory, trust_remote_code=True, device="cpu")
        one, two = sys.argv[1], sys.argv[2]
        results[directory] = {
            "pipeline_module": type(scorer).__module__,
            "model_module": type(scorer.model).__module__,
            "single": scorer(one)["score"],
            "pil": scorer(Image.open(one))["score"],
            "batch": [r["score"] for r in scorer([one, two], batch_size=2)],
            "averaged": scorer(two, num_samples=3, seed=5)["score"],
        }
    print(json.dumps(results))
    """
)


def test_pipeline_works_from_a_directory_in_a_python_without_glia_hf(workspace, tmp_path, offline_hf_home):
    root, model, paths = workspace
    one, two = str(paths["exif.jpg"]), str(paths["cmyk.tif"])
    expected_pair = direct_scores(model, [load_image(one), load_image(two)])
    (expected_averaged,) = direct_scores(model, load_image(two), num_samples=3, seed=5)

    work = tmp_path / "elsewhere"
    work.mkdir()
    directories = [str(root / "model")]  # written by model.save_pretrained alone
    result = run_without_glia_hf(WITHOUT_GLIA_HF, one, two, *directories, cwd=work, hf_home=offline_hf_home)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    for directory in directories:
        got = results[directory]
        assert got["pipeline_module"].startswith("transformers_modules.")
        assert got["pipeline_module"].endswith(".pipeline_glia")
        assert got["model_module"].startswith("transformers_modules.")
        assert got["single"] == pytest.approx(expected_pair[0], abs=BATCH_ATOL)
        assert got["pil"] == pytest.approx(expected_pair[0], abs=BATCH_ATOL)
        np.testing.assert_allclose(got["batch"], expected_pair, atol=BATCH_ATOL)
        assert got["averaged"] == pytest.approx(expected_averaged, abs=BATCH_ATOL)
