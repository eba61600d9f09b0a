"""ONNX export of GLIANet, and scoring with the exported graph through onnxruntime.

    glia-iqa export onnx --model path/to/glianet --output export/model.onnx
    glia-iqa score photos/ --model export/model.onnx --backend onnx

The graph holds both streams and the view averaging:

    inputs   pixel_values     float32 (batch, 3, S, S)      the resized whole images (semantic stream)
             fragment_values  float32 (batch, views, 3, h, w) K tiled-fragment views per image (detail stream)
    output   score            float32 (batch,)              mean over the views, on the model's scale (higher is better)

`batch` and `views` are dynamic: one file scores one centred view (`views = 1`) or test-time averaging over 15 random
views alike. The image processor's settings are saved beside the graph (`preprocessor_config.json`), and the score
scale is written into the graph's metadata (`score_min`, `score_max`, `score_name`), so that the graph can be used with
no Python model code at all (see `examples/score_onnx.py`).

The export uses the dynamo-based exporter (`torch.onnx.export(..., dynamo=True)`, needs `onnxscript`); the model's
forward skips its size checks while it is exported (`GLIAModel.check_inputs`) so that no size is frozen into the graph.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn


ONNX_FILE = "model.onnx"
INPUT_NAMES = ("pixel_values", "fragment_values")
OUTPUT_NAME = "score"
OPSET = 18


class GLIAScoreGraph(nn.Module):
    """The traced function: `(pixel_values, fragment_values with K views) -> score (B,)`, in evaluation mode."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, fragment_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values, fragment_values=fragment_values, return_dict=True).score


def export_onnx(model, output, processor=None, opset: int = OPSET, check: bool = True) -> Path:
    """Export a [`GLIAForImageQualityAssessment`] to the ONNX file `output`, its processor settings beside it.

    Args:
        model: the model (it is put in evaluation mode and run in float32 on the CPU for the export).
        output: the `.onnx` file to write (folders are created); `preprocessor_config.json` goes in the same folder.
        processor: the checkpoint's `GLIAImageProcessor`; by default one built from the model's config.
        opset: the ONNX opset.
        check: run the exported graph once with onnxruntime on 1 view and on 3 views (batch 2) and compare it with
            torch; a difference above 1e-4 raises `RuntimeError`. Needs `onnxruntime`.

    Returns the path of the `.onnx` file.
    """
    import onnx

    from .image_processing_glia import GLIAImageProcessor

    output = Path(output)
    if output.suffix != ".onnx":
        raise ValueError(f"the ONNX file name must end in .onnx, got {str(output)!r}.")
    if processor is None:
        processor = GLIAImageProcessor.from_config(model.config)
    model = model.float().cpu().eval()
    config = model.config
    image_size = config.image_size
    fragment_h, fragment_w = config.fragment_image_size
    # Example sizes above 1 on purpose: the exporter specialises dimensions of size 0 or 1.
    example = (torch.zeros(2, 3, image_size, image_size), torch.zeros(2, 3, 3, fragment_h, fragment_w))
    batch, views = torch.export.Dim("batch", min=1), torch.export.Dim("views", min=1)
    dynamic_shapes = {"pixel_values": {0: batch}, "fragment_values": {0: batch, 1: views}}

    output.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        program = torch.onnx.export(
            GLIAScoreGraph(model).eval(), example, input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic_shapes, opset_version=opset, dynamo=True, external_data=False, verbose=False,
        )
    proto = program.model_proto
    metadata = {
        "score_min": repr(config.score_min),
        "score_max": repr(config.score_max),
        "score_name": config.score_name,
        "higher_is_better": "true",
        "producer": "glia_hf.onnx_export",
    }
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save_model(proto, str(output))
    processor.save_pretrained(str(output.parent))
    if check:
        worst = check_parity(model, output)
        if worst > 1e-4:
            raise RuntimeError(f"the exported graph differs from torch by {worst:.2e} (more than 1e-4): {output}")
    return output


def check_parity(model, onnx_path, batch_sizes=(1, 2), views=(1, 3), seed: int = 0) -> float:
    """Largest absolute score difference between torch and onnxruntime on random inputs of the given sizes."""
    config = model.config
    fragment_h, fragment_w = config.fragment_image_size
    session = OnnxScorer(onnx_path).session
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch in batch_sizes:
        for k in views:
            pixels = torch.randn(batch, 3, config.image_size, config.image_size, generator=generator)
            fragments = torch.randn(batch, k, 3, fragment_h, fragment_w, generator=generator)
            with torch.no_grad():
                expected = model(pixel_values=pixels, fragment_values=fragments).score.float().numpy()
            feeds = {"pixel_values": pixels.numpy(), "fragment_values": fragments.numpy()}
            got = session.run([OUTPUT_NAME], _feeds_for(session, feeds))[0]
            worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def _feeds_for(session, feeds: dict) -> dict:
    """Only the inputs the graph declares (an ablation that reads one stream only has one input)."""
    names = {node.name for node in session.get_inputs()}
    return {name: value for name, value in feeds.items() if name in names}


def resolve_onnx_path(model: str | os.PathLike) -> Path:
    """`model` as given when it is an `.onnx` file, else the `model.onnx` inside the folder `model`."""
    path = Path(model)
    if path.is_dir():
        path = path / ONNX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{model}: no ONNX graph here (expected a .onnx file or a folder with {ONNX_FILE}).")
    return path


class OnnxScorer:
    """An exported GLIANet graph in an onnxruntime CPU session, with the processor saved beside it.

    `scorer(pixel_values, fragment_values)` takes the processor's outputs (tensors or arrays; 4-D fragments are one
    view) and returns the scores as a float32 NumPy array. `score_min`, `score_max` and `score_name` come from the
    graph's metadata.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime

        self.path = resolve_onnx_path(path)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.score_min = float(metadata.get("score_min", "nan"))
        self.score_max = float(metadata.get("score_max", "nan"))
        self.score_name = metadata.get("score_name", "score")

    def load_processor(self):
        """The `GLIAImageProcessor` saved beside the graph."""
        from .image_processing_glia import GLIAImageProcessor

        config_file = self.path.parent / "preprocessor_config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file}: the processor settings saved with the graph are missing.")
        return GLIAImageProcessor.from_pretrained(str(self.path.parent))

    def __call__(self, pixel_values, fragment_values) -> np.ndarray:
        pixels = np.asarray(pixel_values, dtype=np.float32)
        fragments = np.asarray(fragment_values, dtype=np.float32)
        if fragments.ndim == 4:
            fragments = fragments[:, None]
        feeds = _feeds_for(self.session, {"pixel_values": pixels, "fragment_values": fragments})
        return self.session.run([OUTPUT_NAME], feeds)[0]


class OnnxScoreModule(nn.Module):
    """An [`OnnxScorer`] behind the calling convention of `GLIAForImageQualityAssessment` (for `glia-iqa score`).

    `module(pixel_values=..., fragment_values=...)` returns an object whose `score` is a CPU tensor; `config` carries
    `score_name`, `score_min` and `score_max`. The graph runs on the CPU; the module holds one empty parameter only so
    that code asking for the model's device gets the CPU.
    """

    def __init__(self, scorer: OnnxScorer):
        super().__init__()
        self.scorer = scorer
        self.config = SimpleNamespace(score_name=scorer.score_name, score_min=scorer.score_min,
                                      score_max=scorer.score_max)
        self.device_anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, pixel_values, fragment_values):
        scores = self.scorer(pixel_values.cpu().numpy(), fragment_values.cpu().numpy())
        return SimpleNamespace(score=torch.from_numpy(scores))


def load_onnx_scorer(path: str | os.PathLike) -> tuple[OnnxScoreModule, object]:
    """The exported graph at `path` (a `.onnx` file or its folder) as a module, and the processor saved beside it."""
    scorer = OnnxScorer(path)
    return OnnxScoreModule(scorer).eval(), scorer.load_processor()


__all__ = [
    "GLIAScoreGraph", "OnnxScoreModule", "OnnxScorer", "check_parity", "export_onnx", "load_onnx_scorer",
    "resolve_onnx_path",
]
