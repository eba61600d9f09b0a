"""Attention maps of GLIANet beside those of the plain frozen ViT (the paper's Fig. 3).

For each image the figure shows, left to right:

1. the main-stream input view (for the default GLIANet, the tiled grid fragments; for a `main_stream="semantic"`
   ablation, the resized whole image);
2. GLIANet's map: the attention of the CLS token to every patch token in the LAST frozen ViT block of the main stream,
   averaged over heads, upsampled to the view and overlaid on it;
3. the same map for the plain frozen ViT (`model.glia.vit` alone, no GLIA blocks) run on the same input view.

Both models share the same frozen weights, so any difference between columns 2 and 3 comes from the GLIA blocks. Each
map is min-max scaled to [0, 1] on its own before it is drawn (the colours compare places within one map, not values
across maps); the raw maps are returned by `compute_attention_maps`.

    python -m eval.attention_maps --model path/to/glianet --images a.jpg b.png --out fig3.png

The figure is drawn on a private matplotlib `Figure` with the Agg canvas: no display needed, no pyplot state touched.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


__all__ = ["AttentionMaps", "compute_attention_maps", "attention_map_figure", "main"]


@dataclass
class AttentionMaps:
    """What `compute_attention_maps` returns, for `N` images.

    Attributes:
        views: `(N, h, w, 3)` float arrays in [0, 1], the main-stream input of each image, de-normalised.
        glia: `(N, gh, gw)` GLIANet's CLS-to-patch attention of the last block, mean over heads (rows sum to <= 1).
        vit: `(N, gh, gw)` the plain frozen ViT's map on the same input.
        scores: `(N,)` GLIANet's predicted scores (data-set scale), from the same forward pass.
        view_name: `"tiled fragments"` or `"resized image"`.
    """

    views: np.ndarray
    glia: np.ndarray
    vit: np.ndarray
    scores: np.ndarray
    view_name: str


def _as_images(images) -> list:
    """Accept one image or a list; file paths are read with glia_hf's image loader (EXIF, CMYK, 16-bit handled)."""
    from glia_hf.data.images import load_image

    if not isinstance(images, (list, tuple)):
        images = [images]
    if not images:
        raise ValueError("attention maps need at least one image.")
    return [load_image(image) if isinstance(image, (str, os.PathLike)) else image for image in images]


def _cls_map(attention: torch.Tensor, grid: tuple[int, int], leading_tokens: int = 1) -> torch.Tensor:
    """`(N, heads, L, L)` attention -> `(N, gh, gw)` CLS-to-patch attention, mean over heads.

    The patch tokens follow `leading_tokens` special tokens (CLS; DeiT's distillation token; DINOv2's registers),
    token 0 being the CLS token. A backbone without any (SigLIP) has no CLS token: the map is then the attention each
    patch receives, averaged over all query tokens.
    """
    if leading_tokens > 0:
        patches = attention[:, :, 0, leading_tokens:].mean(dim=1)
    else:
        patches = attention.mean(dim=(1, 2))
    if patches.shape[-1] != grid[0] * grid[1]:
        raise ValueError(
            f"expected {grid[0] * grid[1]} patch tokens after {leading_tokens} special token(s), got {patches.shape[-1]}."
        )
    return patches.reshape(-1, *grid)


def compute_attention_maps(model, images, processor=None) -> AttentionMaps:
    """The last-block CLS attention maps of GLIANet and of its plain frozen ViT on the main-stream input of `images`.

    Args:
        model: a `GLIAForImageQualityAssessment`. It is run in evaluation mode with eager attention (the only
            implementation that returns attention weights); its attention implementation and training mode are
            restored afterwards.
        images: a PIL image, an array, a file path, or a list of them.
        processor: the `GLIAImageProcessor` of the checkpoint; by default one built from `model.config`. Centred
            fragments are used, so the maps are deterministic.
    """
    from glia_hf import GLIAImageProcessor

    if processor is None:
        processor = GLIAImageProcessor.from_config(model.config)
    inputs = processor(images=_as_images(images))
    config = model.config
    main_input = inputs["fragment_values"] if config.main_stream == "detail" else inputs["pixel_values"]
    backbone = model.glia.vit
    patch = backbone.config.patch_size
    patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
    grid = (main_input.shape[-2] // patch[0], main_input.shape[-1] // patch[1])
    device = next(model.parameters()).device

    previous_implementation = backbone.config._attn_implementation
    was_training = model.training
    backbone.set_attn_implementation("eager")
    model.eval()
    try:
        with torch.no_grad():
            outputs = model(
                pixel_values=inputs["pixel_values"].to(device),
                fragment_values=inputs["fragment_values"].to(device),
                output_attentions=True,
            )
            plain = backbone(pixel_values=main_input.to(device, backbone.dtype), output_attentions=True)
    finally:
        backbone.set_attn_implementation(previous_implementation)
        model.train(was_training)

    mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    views = (main_input * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return AttentionMaps(
        views=views,
        glia=_cls_map(outputs.attentions[-1].float().cpu(), grid, model.glia.num_leading_tokens).numpy(),
        vit=_cls_map(plain.attentions[-1].float().cpu(), grid, model.glia.num_leading_tokens).numpy(),
        scores=outputs.score.float().cpu().numpy(),
        view_name="tiled fragments" if config.main_stream == "detail" else "resized image",
    )


def _overlay_map(attention: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Upsample one `(gh, gw)` map to `size` (bilinear) and min-max scale it to [0, 1]."""
    upsampled = F.interpolate(torch.from_numpy(attention)[None, None].float(), size=size, mode="bilinear",
                              align_corners=False)[0, 0].numpy()
    low, high = upsampled.min(), upsampled.max()
    return (upsampled - low) / (high - low) if high > low else np.zeros_like(upsampled)


def attention_map_figure(model, images, path, processor=None, names=None, cell_inches: float = 3.0,
                         dpi: int = 100, alpha: float = 0.5, cmap: str = "jet") -> Path:
    """Write the attention-map figure to the PNG `path` and return its path.

    One row per image, three columns: the main-stream input view, GLIANet's last-block CLS attention overlaid on it,
    and the plain frozen ViT's overlaid on it. The image is `3 * cell_inches * dpi` pixels wide and
    `rows * cell_inches * dpi` high.

    Args:
        model, images, processor: as in `compute_attention_maps`.
        path: where to write the PNG (folders are created).
        names: a label per image for the row titles (default: file names for paths, else `image 1`, ...).
        cell_inches, dpi: size of each panel and resolution.
        alpha, cmap: transparency and colour map of the overlays.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    image_list = images if isinstance(images, (list, tuple)) else [images]
    if names is None:
        names = [Path(image).name if isinstance(image, (str, os.PathLike)) else f"image {i + 1}"
                 for i, image in enumerate(image_list)]
    maps = compute_attention_maps(model, image_list, processor=processor)
    rows = len(maps.views)
    figure = Figure(figsize=(3 * cell_inches, rows * cell_inches), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, 3, squeeze=False)
    for row in range(rows):
        view = maps.views[row]
        size = view.shape[:2]
        panels = (
            (None, f"{names[row]}: {maps.view_name}"),
            (maps.glia[row], f"GLIANet, last block (score {maps.scores[row]:.3g})"),
            (maps.vit[row], "plain frozen ViT, last block"),
        )
        for column, (attention, title) in enumerate(panels):
            axis = axes[row][column]
            axis.imshow(view, interpolation="nearest")
            if attention is not None:
                axis.imshow(_overlay_map(attention, size), cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0)
            axis.set_title(title, fontsize=8)
            axis.set_axis_off()
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.3 / (rows * cell_inches), wspace=0.04,
                           hspace=0.12)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=dpi)
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m eval.attention_maps",
        description="Last-block CLS attention of GLIANet and of its plain frozen ViT, side by side (paper Fig. 3).",
    )
    parser.add_argument("--model", required=True, help="GLIANet checkpoint directory (save_pretrained)")
    parser.add_argument("--images", nargs="+", required=True, help="image files, one figure row each")
    parser.add_argument("--out", required=True, help="output PNG file")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dpi", type=int, default=100)
    return parser


def main(argv=None) -> int:
    """Command line entry point; returns 0 on success, 2 for bad arguments, 1 when an image cannot be read."""
    args = build_parser().parse_args(argv)
    from glia_hf import GLIAForImageQualityAssessment, GLIAImageProcessor
    from glia_hf.data.errors import IQAImageError

    model = GLIAForImageQualityAssessment.from_pretrained(args.model).to(args.device).eval()
    try:
        processor = GLIAImageProcessor.from_pretrained(args.model)
    except Exception:  # noqa: BLE001 -- a checkpoint saved without its processor
        processor = GLIAImageProcessor.from_config(model.config)
    try:
        path = attention_map_figure(model, args.images, args.out, processor=processor, dpi=args.dpi)
    except IQAImageError as error:
        print(f"attention_maps: error: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
