"""Attention maps of GLIANet beside those of the plain frozen ViT (the paper's Fig. 3).

For each image the figure shows, left to right:

1. the main-stream input view (for the default GLIANet, the tiled grid fragments; for a `main_stream="semantic"`
   ablation, the resized whole image);
2. GLIANet's map: the attention of the CLS token to every patch token in the LAST frozen ViT block of the main stream,
   averaged over heads, upsampled to the view and overlaid on a grey, dimmed copy of it;
3. the same map for the plain frozen ViT (`model.glia.vit` alone, no GLIA blocks) run on the same input view.

The first column's title gives GLIANet's score. Both models share the same frozen weights, so any difference between
columns 2 and 3 comes from the GLIA blocks. Each map is min-max scaled to [0, 1] on its own before it is drawn (the
colours compare places within one map, not values across maps; the colour bar runs from a map's least to its most
attended patch); the raw maps are returned by `compute_attention_maps`.

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


def _backdrop(view: np.ndarray, dim: float) -> np.ndarray:
    """The photo under a map: grey (Rec. 601 luma) and compressed towards mid-grey by `dim`, so that its own colours
    never compete with the colour map: `0.5 + (1 - dim) * (luma - 0.5)`, repeated over RGB."""
    luma = view[..., :3] @ np.array([0.299, 0.587, 0.114])
    grey = 0.5 + (1.0 - dim) * (luma - 0.5)
    return np.repeat(grey[..., None], 3, axis=-1).clip(0, 1)


def _see_through(cmap, alpha: float):
    """`cmap` with an opacity that rises from `alpha / 3` (least attended) to `alpha` (most), so that the grey photo
    stays visible where the model does not look; the colour bar is drawn with the same colours over the same grey."""
    from matplotlib.colors import ListedColormap

    colours = cmap(np.linspace(0.0, 1.0, 256))
    colours[:, 3] = alpha * (1.0 + 2.0 * np.linspace(0.0, 1.0, 256)) / 3.0
    return ListedColormap(colours, name=f"{cmap.name}_see_through")


def _shorten(text: str, limit: int = 20) -> str:
    """Keep a panel title within its panel: long texts lose their middle."""
    return text if len(text) <= limit else text[: limit // 2 - 1] + "..." + text[-(limit - limit // 2 - 2):]


def attention_map_figure(model, images, path, processor=None, names=None, cell_inches: float = 3.0,
                         dpi: int = 100, alpha: float = 0.75, cmap: str = "inferno", dim: float = 0.5) -> Path:
    """Write the attention-map figure to the PNG `path` and return its path.

    One row per image, three columns: the main-stream input view in colour (its title gives the file name and
    GLIANet's score on the checkpoint's scale), then GLIANet's last-block CLS attention and the plain frozen ViT's, each
    drawn over a grey, dimmed copy of the view (so the photo's own colours do not compete with the map), and one
    colour bar for all maps (each map is min-max scaled on its own: the bar runs from a map's least to its most
    attended patch). The image is `3 * cell_inches * dpi` pixels wide and
    `rows * cell_inches * dpi` high.

    Args:
        model, images, processor: as in `compute_attention_maps`.
        path: where to write the PNG (folders are created).
        names: a label per image for the row titles (default: file names for paths, else `image 1`, ...).
        cell_inches, dpi: size of each panel and resolution.
        alpha: opacity of the most attended places (the least attended get a third of it).
        cmap: the colour map of the attention (perceptually uniform by default).
        dim: how much the grey photo under the maps is flattened towards mid-grey (0: full contrast, 1: flat grey).
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    image_list = images if isinstance(images, (list, tuple)) else [images]
    if names is None:
        names = [Path(image).name if isinstance(image, (str, os.PathLike)) else f"image {i + 1}"
                 for i, image in enumerate(image_list)]
    maps = compute_attention_maps(model, image_list, processor=processor)
    colour_map = _see_through(matplotlib.colormaps[cmap], alpha)
    config = model.config
    scale = f"{config.score_min:g}-{config.score_max:g}"
    rows = len(maps.views)
    height = rows * cell_inches
    font = max(5.0, 8.0 * cell_inches / 3.0)  # 8 pt in 3-inch panels, smaller with them
    figure = Figure(figsize=(3 * cell_inches, height), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, 3, squeeze=False)
    for row in range(rows):
        view = maps.views[row]
        size = view.shape[:2]
        backdrop = _backdrop(view, dim)
        panels = (
            (None, f"score {maps.scores[row]:.2f} (scale {scale})", f"{_shorten(names[row])}, {maps.view_name}"),
            (maps.glia[row], "GLIANet attention", "CLS token, last block"),
            (maps.vit[row], "plain frozen ViT attention", "CLS token, last block"),
        )
        for column, (attention, title, subtitle) in enumerate(panels):
            axis = axes[row][column]
            if attention is None:
                axis.imshow(view, interpolation="nearest")
            else:
                axis.imshow(backdrop, interpolation="nearest")
                axis.imshow(_overlay_map(attention, size), cmap=colour_map, vmin=0.0, vmax=1.0, interpolation="nearest")
            axis.set_title(f"{title}\n{subtitle}", fontsize=font,
                           fontweight="bold" if column == 0 else "normal")
            axis.set_axis_off()
    title_inches = 2.9 * font / 72 + 0.08  # two lines of title and their padding
    top = 1 - title_inches / height
    figure.subplots_adjust(left=0.01, right=0.915, bottom=0.01, top=top, wspace=0.04,
                           hspace=(title_inches + 0.05) / (0.9 * cell_inches))
    bar_axis = figure.add_axes((0.93, 0.01 + 0.1 * (top - 0.01), 0.016, 0.8 * (top - 0.01)))
    bar_axis.set_facecolor(str(0.5))  # the mid-grey the maps are drawn over
    bar = figure.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=colour_map), cax=bar_axis, ticks=[0.0, 1.0])
    bar.ax.set_yticklabels(["least", "most"], fontsize=0.8 * font)
    bar.ax.set_title("attention", fontsize=0.8 * font, loc="right")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=dpi)
    return path


#: The figure's caption (also the command's description).
FIGURE_CAPTION = (
    "Last-block CLS attention of GLIANet and of its plain frozen ViT, side by side (after the paper's Fig. 3). "
    "DEIQT, which the paper's Fig. 3 also shows, is not included: this repository does not implement it."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m eval.attention_maps",
        description=FIGURE_CAPTION,
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
