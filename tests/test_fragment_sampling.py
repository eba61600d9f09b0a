"""The grid-fragment sampler against the paper's Eq. 1-2."""

import torch
import pytest

from glia_hf.fragment_sampling import fit_to_grid, fragment_offsets, sample_fragments, tile_fragments


def coordinate_image(height, width):
    """An image whose pixels encode their own position: channel 0 = row, channel 1 = column."""
    rows = torch.arange(height, dtype=torch.float64)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=torch.float64)[None, :].expand(height, width)
    return torch.stack([rows, cols, torch.zeros(height, width, dtype=torch.float64)])


def fragment_origins(tiled, grid, frag):
    """Top-left source coordinates of every tile, read back from a coordinate image."""
    (nh, nw), (fh, fw) = grid, frag
    return [[(int(tiled[0, i * fh, j * fw]), int(tiled[1, i * fh, j * fw])) for j in range(nw)] for i in range(nh)]


@pytest.mark.parametrize("height,width", [(224, 224), (480, 640), (1023, 769), (300, 1000)])
@pytest.mark.parametrize("random", [False, True])
def test_every_tile_is_the_source_at_an_offset_inside_its_cell(height, width, random):
    grid, frag = (7, 7), (32, 32)
    image = coordinate_image(height, width)
    tiled = sample_fragments(image, grid, frag, random=random, generator=torch.Generator().manual_seed(0))
    assert tiled.shape == (3, 224, 224)
    gh, gw = height // 7, width // 7
    for i, row in enumerate(fragment_origins(tiled, grid, frag)):
        for j, (top, left) in enumerate(row):
            assert 0 <= top - i * gh <= gh - 32 and 0 <= left - j * gw <= gw - 32
            expected = image[:, top : top + 32, left : left + 32]
            assert torch.equal(tiled[:, i * 32 : (i + 1) * 32, j * 32 : (j + 1) * 32], expected)


def test_centred_offsets_in_evaluation():
    rows, cols = fragment_offsets(480, 640, (7, 7), (32, 32), random=False)
    gh, gw = 480 // 7, 640 // 7
    assert torch.equal(rows[:, 0], torch.arange(7) * gh + (gh - 32) // 2)
    assert torch.equal(cols[0], torch.arange(7) * gw + (gw - 32) // 2)


def test_random_offsets_reach_both_ends_of_the_cell():
    # A cell of 34 rows leaves offsets 0, 1, 2: the last one must be reachable (FAST-VQA's code never draws it).
    height = 7 * 34
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(50):
        rows, _ = fragment_offsets(height, height, (7, 7), (32, 32), random=True, generator=generator)
        seen.update((rows - torch.arange(7)[:, None] * 34).flatten().tolist())
    assert seen == {0, 1, 2}


def test_exact_fit_has_a_single_offset():
    rows, cols = fragment_offsets(224, 224, (7, 7), (32, 32), random=True)
    assert torch.equal(rows[:, 0], torch.arange(7) * 32) and torch.equal(cols[0], torch.arange(7) * 32)


@pytest.mark.parametrize("height,width", [(100, 90), (1, 1), (50, 400), (223, 224)])
def test_small_images_are_upscaled_keeping_aspect_ratio(height, width):
    image = torch.rand(3, height, width)
    fitted = fit_to_grid(image, (7, 7), (32, 32))
    assert fitted.shape[1] >= 224 and fitted.shape[2] >= 224
    assert min(fitted.shape[1] - 224, fitted.shape[2] - 224) <= 1  # the smallest scale that fits
    assert abs(fitted.shape[1] / fitted.shape[2] - height / width) < 0.02 * max(1, height / width)
    assert sample_fragments(image).shape == (3, 224, 224)


def test_large_enough_images_are_not_resized():
    image = torch.rand(3, 224, 300)
    assert fit_to_grid(image, (7, 7), (32, 32)) is image


def test_non_square_grid_and_fragments():
    image = coordinate_image(200, 600)
    tiled = sample_fragments(image, grid_size=(2, 4), fragment_size=(48, 64))
    assert tiled.shape == (3, 96, 256)
    origins = fragment_origins(tiled, (2, 4), (48, 64))
    assert origins[1][3] == (100 + (100 - 48) // 2, 450 + (150 - 64) // 2)


def test_offsets_reject_cells_smaller_than_fragments():
    with pytest.raises(ValueError, match="too small"):
        fragment_offsets(100, 100, (7, 7), (32, 32))


def test_tile_fragments_keeps_dtype():
    image = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    rows, cols = fragment_offsets(64, 64, (2, 2), (16, 16))
    assert tile_fragments(image, rows, cols, (16, 16)).dtype == torch.uint8
