"""Grid-fragment sampling: the detail stream's view of an image (GLIANet paper, Eq. 1-2; FAST-VQA's fragments).

An image of size `H x W` is cut into an `nh x nw` grid of cells of `gh = floor(H / nh)` by `gw = floor(W / nw)` pixels.
From cell `(i, j)` one `fh x fw` fragment is taken at full resolution, starting at `(i * gh + oh, j * gw + ow)` with
`0 <= oh <= gh - fh` and `0 <= ow <= gw - fw` (both ends included). The fragments are tiled in grid order into a single
`(nh * fh) x (nw * fw)` image, which the ViT patch embedding reads like any other image.

Offsets are either centred (`oh = (gh - fh) // 2`, evaluation) or drawn uniformly per cell (training and test-time
averaging). Everything here works on one `(C, H, W)` tensor at a time, so a fragment never depends on the other
images of a batch.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F


def fits_grid(height: int, width: int, grid_size, fragment_size) -> bool:
    """Whether every grid cell of a `height x width` image holds a whole fragment: `H >= nh * fh` and `W >= nw * fw`."""
    (nh, nw), (fh, fw) = grid_size, fragment_size
    return height >= nh * fh and width >= nw * fw


def fit_to_grid(image: torch.Tensor, grid_size, fragment_size) -> torch.Tensor:
    """Upscale `image` (C, H, W), keeping its aspect ratio, until every grid cell holds a whole fragment.

    An image is large enough when `H >= nh * fh` and `W >= nw * fw`. A smaller one is enlarged with bicubic
    interpolation by the smallest factor that satisfies both; a large enough one is returned unchanged.
    """
    (nh, nw), (fh, fw) = grid_size, fragment_size
    height, width = image.shape[-2:]
    if fits_grid(height, width, grid_size, fragment_size):
        return image
    scale = max(nh * fh / height, nw * fw / width)
    new_size = (max(nh * fh, math.ceil(height * scale)), max(nw * fw, math.ceil(width * scale)))
    resized = F.interpolate(image[None].float(), size=new_size, mode="bicubic", align_corners=False)[0]
    return resized.clamp(0, 1) if image.is_floating_point() else resized.round().clamp(0, 255).to(image.dtype)


def fragment_offsets(
    height: int,
    width: int,
    grid_size,
    fragment_size,
    random: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corners of the fragments of an `height x width` image, as two `(nh, nw)` integer tensors (rows, cols).

    With `random=False` each fragment is centred in its cell; with `random=True` each cell draws its own offset
    uniformly from `0 .. g - f` inclusive, using `generator` when given.
    """
    (nh, nw), (fh, fw) = grid_size, fragment_size
    cell_h, cell_w = height // nh, width // nw
    if cell_h < fh or cell_w < fw:
        raise ValueError(
            f"A {height}x{width} image has {cell_h}x{cell_w} grid cells, too small for {fh}x{fw} fragments; "
            "call fit_to_grid first."
        )
    if random:
        offset_h = torch.randint(0, cell_h - fh + 1, (nh, nw), generator=generator)
        offset_w = torch.randint(0, cell_w - fw + 1, (nh, nw), generator=generator)
    else:
        offset_h = torch.full((nh, nw), (cell_h - fh) // 2)
        offset_w = torch.full((nh, nw), (cell_w - fw) // 2)
    rows = torch.arange(nh)[:, None] * cell_h + offset_h
    cols = torch.arange(nw)[None, :] * cell_w + offset_w
    return rows, cols


def tile_fragments(image, rows: torch.Tensor, cols: torch.Tensor, fragment_size) -> torch.Tensor:
    """Cut the `fh x fw` fragments whose top-left corners are `rows`, `cols` out of `image` (C, H, W) and tile them.

    A plain copy, bit for bit; on the CPU the `nh * nw` slices are NumPy's (a tenth of the cost of torch's per-slice
    overhead, which dominated a data-loader worker's time). `image` may also be a NumPy array of any strides (e.g. a
    flipped or transposed view of an `(H, W, C)` array, never copied whole); the result is then a tensor too.
    """
    fh, fw = fragment_size
    nh, nw = rows.shape
    if isinstance(image, np.ndarray):
        on_host, source = True, image
    else:
        on_host = image.device.type == "cpu" and not image.requires_grad and image.dtype != torch.bfloat16
        source = image.numpy() if on_host else image
    tiled = np.empty((image.shape[0], nh * fh, nw * fw), dtype=source.dtype) if on_host else image.new_empty(
        image.shape[0], nh * fh, nw * fw)
    for i, (tops, lefts) in enumerate(zip(rows.tolist(), cols.tolist())):
        for j, (top, left) in enumerate(zip(tops, lefts)):
            tiled[:, i * fh : (i + 1) * fh, j * fw : (j + 1) * fw] = source[:, top : top + fh, left : left + fw]
    return torch.from_numpy(tiled) if on_host else tiled


def sample_fragments(
    image: torch.Tensor,
    grid_size=(7, 7),
    fragment_size=(32, 32),
    random: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The detail-stream view of one image: its grid fragments tiled into one `(C, nh*fh, nw*fw)` image.

    Args:
        image: a `(C, H, W)` tensor. An image smaller than `nh*fh` by `nw*fw` is first upscaled (aspect ratio
            kept) by [`fit_to_grid`] so that every cell holds a whole fragment. A NumPy array of any strides large
            enough for the grid (see [`fits_grid`]) is cut as it is (see [`tile_fragments`]).
        grid_size: `(nh, nw)`, the number of grid cells.
        fragment_size: `(fh, fw)`, the size of each fragment in pixels.
        random: draw each cell's offset uniformly (training, test-time averaging) instead of centring it.
        generator: the random number generator for `random=True`.
    """
    image = fit_to_grid(image, grid_size, fragment_size)
    rows, cols = fragment_offsets(*image.shape[-2:], grid_size, fragment_size, random=random, generator=generator)
    return tile_fragments(image, rows, cols, fragment_size)


__all__ = ["fits_grid", "fit_to_grid", "fragment_offsets", "tile_fragments", "sample_fragments"]
