"""ONNX export: one graph for any batch size and number of views, equal to torch; the NumPy/onnxruntime example.

The graph is exported once per module (through `glia-iqa export onnx`) from a tiny saved GLIANet whose GLIA blocks
are switched on, so that both streams reach the score.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from glia_hf.cli import main
from glia_hf.pipeline_glia import PIPELINE_TASK
from tests.test_cli import save_tiny_glia, smooth_photo


onnxruntime = pytest.importorskip("onnxruntime", reason="pip install 'glia-hf[onnx]' for the ONNX tests")
pytest.importorskip("onnxscript", reason="pip install 'glia-hf[onnx]' for the ONNX tests")

GRAPH_ATOL = 1e-4  # the bound for graph parity (identical inputs)
END_TO_END_ATOL = 1e-3  # NumPy processor + onnxruntime vs the torch pipeline, single centred view
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "score_onnx.py"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    model = save_tiny_glia(root / "model", seed=3)
    graph = root / "export" / "model.onnx"
    assert main(["export", "onnx", "--model", str(root / "model"), "--output", str(graph)]) == 0
    photos = []
    for index, (height, width) in enumerate([(240, 320), (500, 380), (90, 150)]):
        photos.append(root / f"photo{index}.png")
        Image.fromarray(smooth_photo(height, width, seed=10 + index)).save(photos[-1])
    return root, model, graph, photos


def load_example():
    spec = importlib.util.spec_from_file_location("score_onnx_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_writes_the_graph_the_processor_settings_and_the_scale(exported):
    _, model, graph, _ = exported
    assert graph.is_file()
    settings = json.loads((graph.parent / "preprocessor_config.json").read_text())
    assert settings["image_size"] == model.config.image_size and settings["grid_size"] == model.config.grid_size
    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert (float(meta["score_min"]), float(meta["score_max"])) == (1.0, 5.0)
    shapes = {node.name: node.shape for node in session.get_inputs()}
    # batch and views are named (dynamic) dimensions, the image sizes are fixed
    assert isinstance(shapes["fragment_values"][0], str) and isinstance(shapes["fragment_values"][1], str)
    assert shapes["fragment_values"][2:] == [3, 224, 224] and isinstance(shapes["pixel_values"][0], str)


@pytest.mark.parametrize("views", [1, 15])
def test_graph_equals_torch_for_any_batch_and_number_of_views(exported, views):
    _, model, graph, _ = exported
    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(views)
    for batch in (1, 3):
        pixels = torch.randn(batch, 3, 224, 224, generator=generator)
        fragments = torch.randn(batch, views, 3, 224, 224, generator=generator)
        with torch.no_grad():
            expected = model(pixel_values=pixels, fragment_values=fragments).score.numpy()
        got = session.run(["score"], {"pixel_values": pixels.numpy(), "fragment_values": fragments.numpy()})[0]
        assert got.shape == (batch,)
        np.testing.assert_allclose(got, expected, rtol=0, atol=GRAPH_ATOL)
    # the views really count: scoring only the first view gives another score
    first = session.run(["score"], {"pixel_values": pixels.numpy(), "fragment_values": fragments[:, :1].numpy()})[0]
    assert views == 1 or np.abs(first - expected).max() > 1e-3


def test_numpy_processor_and_onnxruntime_give_the_pipelines_score(exported):
    root, _, graph, photos = exported
    example = load_example()
    settings = json.loads((graph.parent / "preprocessor_config.json").read_text())
    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    scorer = pipeline(PIPELINE_TASK, model=str(root / "model"), trust_remote_code=True, device="cpu")
    for photo in photos:  # wide, tall and smaller than the fragment grid (upscaled first)
        expected = scorer(str(photo))["score"]
        got = session.run(["score"], example.preprocess(example.read_rgb(photo), settings))[0][0]
        assert abs(float(got) - expected) < END_TO_END_ATOL, photo.name


def test_the_example_runs_without_torch_or_transformers(exported):
    root, _, graph, photos = exported
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'transformers', 'glia_hf'):\n"
        "            raise ImportError(name + ' is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import runpy\n"
        f"sys.argv = ['score_onnx.py', '--model', {str(graph)!r}, {str(photos[0])!r}]\n"
        f"runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    scorer = pipeline(PIPELINE_TASK, model=str(root / "model"), trust_remote_code=True, device="cpu")
    printed = float(result.stdout.split(": ")[1].split(" ")[0])
    assert abs(printed - scorer(str(photos[0]))["score"]) < END_TO_END_ATOL
    assert "1 to 5, higher is better" in result.stdout


def test_cli_scores_with_the_onnx_backend_as_with_torch(exported, tmp_path):
    root, _, graph, photos = exported
    outputs = {}
    for backend, model in (("torch", root / "model"), ("onnx", graph)):
        out = tmp_path / f"{backend}.json"
        arguments = ["score", *map(str, photos), "--model", str(model), "--output", str(out), "--no-progress",
                     "--num-samples", "4", "--seed", "1", "--backend", backend]
        assert main(arguments) == 0
        outputs[backend] = [row["score"] for row in json.loads(out.read_text())["results"]]
    np.testing.assert_allclose(outputs["onnx"], outputs["torch"], rtol=0, atol=GRAPH_ATOL)
    assert json.loads((tmp_path / "onnx.json").read_text())["score_range"] == [1.0, 5.0]


def test_onnx_backend_errors_are_one_line_usage_errors(exported, tmp_path, capsys):
    _, _, _, photos = exported
    assert main(["score", str(photos[0]), "--model", str(tmp_path), "--backend", "onnx"]) == 2
    assert "no ONNX graph here" in capsys.readouterr().err
    assert main(["export", "onnx", "--model", str(tmp_path), "--output", str(tmp_path / "m.txt")]) == 2
    assert "must end in .onnx" in capsys.readouterr().err


def test_forward_keeps_its_clear_errors_outside_export(exported):
    _, model, _, _ = exported
    with pytest.raises(ValueError, match="different numbers of images: 2 and 1"):
        model(pixel_values=torch.zeros(2, 3, 224, 224), fragment_values=torch.zeros(1, 3, 3, 224, 224))
    with pytest.raises(ValueError, match="holds no views"):
        model(pixel_values=torch.zeros(1, 3, 224, 224), fragment_values=torch.zeros(1, 0, 3, 224, 224))
