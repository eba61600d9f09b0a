"""Score images with an exported GLIANet graph, using only onnxruntime, NumPy and Pillow (no torch, no transformers).

    glia-iqa export onnx --model outputs/quickstart/split-0/model --output export/model.onnx
    python examples/score_onnx.py --model export/model.onnx photo.jpg [more.jpg ...] [--num-samples 15 --seed 0]

It reads the processor settings saved beside the graph (`preprocessor_config.json`) and repeats what
`GLIAImageProcessor` does, in NumPy:

- the semantic stream: the whole image resized to `image_size x image_size` with antialiased bicubic interpolation
  (the filter of torch's `interpolate(..., mode="bicubic", antialias=True)`, written out as two weight matrices);
- the detail stream: an image smaller than the fragment grid is first upscaled, aspect ratio kept, with plain bicubic
  interpolation (torch's `mode="bicubic"`, `align_corners=False`); then one `fh x fw` fragment is cut from each of the
  `nh x nw` grid cells, centred in its cell, and the fragments are tiled into one image;
- both are normalised with `image_mean` / `image_std`.

Without `--num-samples` the single centred view is scored: deterministic, and equal to the torch pipeline's score
(within 1e-3; the tests check it). With `--num-samples K` the offsets are drawn at random by NumPy's own generator
(`numpy.random.default_rng(seed)`), not torch's: the K views are equally valid draws but not the ones the torch
pipeline draws for the same seed, so those scores differ from the pipeline's by the spread of the views.

Image reading is the common case of the project's rule: EXIF orientation applied, transparency composited onto white,
everything else converted by Pillow to 8-bit RGB.
"""

import argparse
import json
import math
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image, ImageOps


def read_rgb(path) -> np.ndarray:
    """An image file as a float32 `(3, H, W)` array in [0, 1]."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return rgb.transpose(2, 0, 1)


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with parameter `a`."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def antialiased_bicubic_weights(in_size: int, out_size: int) -> np.ndarray:
    """`(out, in)` weights of torch's antialiased bicubic resize (Pillow's filter: a = -0.5, widened when shrinking)."""
    scale = in_size / out_size
    support = 2.0 * max(scale, 1.0)
    inverse = 1.0 / max(scale, 1.0)
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = scale * (i + 0.5)
        start = max(int(center - support + 0.5), 0)
        stop = min(int(center + support + 0.5), in_size)
        taps = np.arange(start, stop)
        w = _cubic((taps - center + 0.5) * inverse, -0.5)
        weights[i, start:stop] = w / w.sum()
    return weights


def bicubic_weights(in_size: int, out_size: int) -> np.ndarray:
    """`(out, in)` weights of torch's bicubic resize without antialiasing (a = -0.75, borders repeated)."""
    scale = in_size / out_size
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        source = (i + 0.5) * scale - 0.5
        first = math.floor(source)
        t = source - first
        for k, distance in zip(range(-1, 3), (1 + t, t, 1 - t, 2 - t)):
            weights[i, min(max(first + k, 0), in_size - 1)] += _cubic(np.array(distance), -0.75)
    return weights


def resize(image: np.ndarray, height: int, width: int, antialias: bool) -> np.ndarray:
    """Resize a `(C, H, W)` array with one of the two filters above, clipped to [0, 1]."""
    make = antialiased_bicubic_weights if antialias else bicubic_weights
    rows, cols = make(image.shape[1], height), make(image.shape[2], width)
    return np.clip(rows @ image.astype(np.float64) @ cols.T, 0, 1).astype(np.float32)


def fragment_view(image: np.ndarray, grid, fragment, rng=None) -> np.ndarray:
    """The tiled fragments of one `(3, H, W)` image: centred in their cells, or at random offsets drawn from `rng`."""
    (nh, nw), (fh, fw) = grid, fragment
    height, width = image.shape[1:]
    scale = max(nh * fh / height, nw * fw / width)
    if scale > 1:  # too small for the grid: upscale, aspect ratio kept
        height, width = max(nh * fh, math.ceil(height * scale)), max(nw * fw, math.ceil(width * scale))
        image = resize(image, height, width, antialias=False)
    cell_h, cell_w = height // nh, width // nw
    tiled = np.empty((image.shape[0], nh * fh, nw * fw), dtype=np.float32)
    for i in range(nh):
        for j in range(nw):
            if rng is None:
                dy, dx = (cell_h - fh) // 2, (cell_w - fw) // 2
            else:
                dy, dx = rng.integers(0, cell_h - fh + 1), rng.integers(0, cell_w - fw + 1)
            top, left = i * cell_h + dy, j * cell_w + dx
            tiled[:, i * fh : (i + 1) * fh, j * fw : (j + 1) * fw] = image[:, top : top + fh, left : left + fw]
    return tiled


def preprocess(image: np.ndarray, settings: dict, num_samples=None, seed: int = 0) -> dict:
    """`pixel_values` `(1, 3, S, S)` and `fragment_values` `(1, K, 3, h, w)` for one `(3, H, W)` image."""
    if settings.get("resize_short_side"):
        raise SystemExit("This example does not implement resize_short_side; use glia-iqa score --backend onnx.")
    mean = np.asarray(settings.get("image_mean", [0.5] * 3), dtype=np.float32)[:, None, None]
    std = np.asarray(settings.get("image_std", [0.5] * 3), dtype=np.float32)[:, None, None]
    size = settings["image_size"]
    pixels = (resize(image, size, size, antialias=True) - mean) / std
    rng = np.random.default_rng(seed) if num_samples else None
    views = [fragment_view(image, settings["grid_size"], settings["fragment_size"], rng)
             for _ in range(num_samples or 1)]
    fragments = (np.stack(views) - mean) / std
    return {"pixel_values": pixels[None].astype(np.float32), "fragment_values": fragments[None].astype(np.float32)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--model", required=True, help="the .onnx file written by `glia-iqa export onnx`")
    parser.add_argument("--num-samples", type=int, default=None, help="K random views (NumPy's generator)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    graph = Path(args.model)
    settings = json.loads((graph.parent / "preprocessor_config.json").read_text())
    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    inputs = {node.name for node in session.get_inputs()}
    meta = session.get_modelmeta().custom_metadata_map
    scale = f"{meta.get('score_name', 'score')}, {float(meta['score_min']):g} to {float(meta['score_max']):g}"
    for path in args.images:
        feeds = preprocess(read_rgb(path), settings, args.num_samples, args.seed)
        score = session.run(["score"], {k: v for k, v in feeds.items() if k in inputs})[0][0]
        print(f"{path}: {float(score):.4f} ({scale}, higher is better)")


if __name__ == "__main__":
    main()
