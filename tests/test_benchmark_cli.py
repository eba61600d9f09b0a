"""`glia-iqa benchmark` and `IQAEvaluator`, offline, on release-layout stand-ins (LIVEC, KonIQ-10k) and a saved tiny
model: the table's numbers are the metrics of the pipeline's own scores, bootstrap intervals hold the point estimate,
a finished data set is kept on `--resume`.
"""

import csv
import json

import numpy as np
import pytest
import scipy.io
from PIL import Image

from glia_hf.cli import main
from glia_hf.data import load_iqa_dataset, make_splits, select_split
from glia_hf.evaluation import IQAEvaluator, compute_metrics, load_iqa_metrics, load_iqa_pipeline
from tests.test_cli import save_tiny_glia, smooth_photo
from tests.test_data import _cell


NUM_LIVEC = 25


def write_livec(root, count=NUM_LIVEC):
    """ChallengeDB_release: 7 rater-training images (left out by the reader) and `count` photos with MOS 0-100."""
    names = [f"t{i}.bmp" for i in range(1, 8)] + [f"{i}.bmp" for i in range(1, count + 1)]
    rng = np.random.default_rng(1)
    mos = rng.uniform(5, 95, len(names))
    (root / "Data").mkdir(parents=True)
    (root / "Images" / "trainingImages").mkdir(parents=True)
    scipy.io.savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": _cell(names).T})
    scipy.io.savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": mos[None]})
    for index, name in enumerate(names):
        folder = root / "Images" / ("trainingImages" if name.startswith("t") else "")
        Image.fromarray(smooth_photo(64 + 3 * index, 80 + 2 * index, seed=index)).save(folder / name)
    return root


def write_koniq(root, count=8):
    root.mkdir(parents=True)
    (root / "1024x768").mkdir()
    rows = ["image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore"]
    for index in range(count):
        name = f"{1000 + index}.jpg"
        Image.fromarray(smooth_photo(72, 96, seed=50 + index)).save(root / "1024x768" / name, quality=90)
        rows.append(f"{name},0,0,1,0,0,100,{1.5 + 0.4 * index:.2f},0.5,{20 + 7 * index}")
    (root / "koniq10k_scores_and_distributions.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    save_tiny_glia(root / "model")
    return root / "model", write_livec(root / "ChallengeDB_release"), write_koniq(root / "koniq10k")


def pipeline_scores(model, images):
    return [out["score"] for out in load_iqa_pipeline(str(model), device=-1)(list(images), batch_size=4)]


def test_the_table_holds_the_metrics_of_the_pipelines_scores(stand_in, tmp_path, capsys):
    model, livec, koniq = stand_in
    out = tmp_path / "bench"
    status = main(["benchmark", "--model", str(model), "--dataset", f"livec={livec}", "--dataset",
                   f"koniq10k={koniq}", "--whole", "--output-dir", str(out), "--bootstrap", "200", "--no-progress"])
    assert status == 0
    assert f"| livec | {NUM_LIVEC} |" in capsys.readouterr().out
    document = json.loads((out / "benchmark.json").read_text())
    assert document["schema_version"] == 2
    for name, folder in (("livec", livec), ("koniq10k", koniq)):
        data = load_iqa_dataset(name, folder)
        expected = compute_metrics(pipeline_scores(model, data["image"]), data["mos"])
        result = document["datasets"][name]
        assert result["num_images"] == len(data)
        assert set(result["metrics"]) == set(expected) and {"srcc", "plcc", "plcc_raw", "krcc"} <= set(expected)
        for key, value in expected.items():
            assert result["metrics"][key] == pytest.approx(value, abs=1e-6), (name, key)
            low, high = result["intervals"][key]
            assert low <= result["metrics"][key] <= high, (name, key)
    caption = document["caption"]
    assert str(model) in caption and "1 centred view" in caption and "global view 224 px" in caption
    with open(out / "benchmark.csv", newline="") as stream:
        table = list(csv.DictReader(stream))
    assert [row["Data set"] for row in table] == ["livec", "koniq10k"]
    assert float(table[0]["SRCC"]) == document["datasets"]["livec"]["metrics"]["srcc"]
    markdown = (out / "benchmark.md").read_text()
    assert caption in markdown.replace("\\|", "|") and "SRCC" in markdown


def test_split_scores_the_test_part_and_resume_keeps_finished_sets(stand_in, tmp_path, monkeypatch):
    model, livec, _ = stand_in
    out = tmp_path / "bench"
    arguments = ["benchmark", "--model", str(model), "--dataset", f"livec={livec}", "--split", "1", "--output-dir",
                 str(out), "--bootstrap", "0", "--num-samples", "2", "--seed", "5", "--no-progress"]
    assert main(arguments) == 0
    result = json.loads((out / "benchmark.json").read_text())["datasets"]["livec"]
    data = load_iqa_dataset("livec", livec)
    test = select_split(data, make_splits(data), 1, part="test")
    assert result["num_images"] == len(test) < len(data) and result["intervals"] == {}
    scores = [out["score"] for out in load_iqa_pipeline(str(model), device=-1)(list(test["image"]), num_samples=2,
                                                                                 seed=5)]
    assert result["metrics"]["srcc"] == pytest.approx(compute_metrics(scores, test["mos"])["srcc"], abs=1e-6)

    import glia_hf.cli

    monkeypatch.setattr(glia_hf.cli, "score_files", lambda *a, **k: pytest.fail("a finished data set was rescored"))
    assert main(arguments + ["--resume"]) == 0
    assert json.loads((out / "benchmark.json").read_text())["datasets"]["livec"] == result


def test_evaluator_accepts_a_pipeline_a_folder_and_a_callable(stand_in):
    model, livec, _ = stand_in
    data = load_iqa_dataset("livec", livec)
    pipe = load_iqa_pipeline(str(model), device=-1)
    scores = pipeline_scores(model, data["image"])
    expected = compute_metrics(scores, data["mos"])

    by_pipeline = IQAEvaluator().compute(model_or_pipeline=pipe, data=data, metric=load_iqa_metrics())
    by_folder = IQAEvaluator().compute(model_or_pipeline=str(model), data=data)
    by_callable = IQAEvaluator().compute(model_or_pipeline=lambda images: [scores[list(data["image"]).index(i)]
                                                                           for i in images], data=data)
    for result in (by_pipeline, by_folder, by_callable):
        for key, value in expected.items():
            assert result[key] == pytest.approx(value, abs=1e-6), key
        assert result["samples_per_second"] > 0

    booted = IQAEvaluator().compute(model_or_pipeline=pipe, data=data, strategy="bootstrap", n_resamples=100,
                                    random_state=0)
    for key, value in expected.items():
        low, high = booted[key]["confidence_interval"]
        assert booted[key]["score"] == pytest.approx(value, abs=1e-6) and low <= value <= high, key
        assert booted[key]["standard_error"] > 0


def test_benchmark_usage_errors(stand_in, tmp_path, capsys):
    model, livec, _ = stand_in
    base = ["benchmark", "--model", str(model), "--output-dir", str(tmp_path)]
    assert main(base + ["--dataset", str(livec)]) == 2
    assert "--dataset takes NAME=PATH" in capsys.readouterr().err
    assert main(base + ["--dataset", f"nosuchset={livec}"]) == 2
    assert "--dataset nosuchset" in capsys.readouterr().err
    assert main(base + ["--dataset", f"livec={livec}", "--split", "0", "--whole"]) == 2
    assert main(base + ["--dataset", f"livec={livec}", "--split", "10"]) == 2
    assert "--split 10: livec has 10 splits" in capsys.readouterr().err
