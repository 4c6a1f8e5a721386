"""qwenlite_course.viz.vision: the window and attention pictures draw what the tower computes (the same functions), and
the demo inputs shrink on a real checkpoint."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from qwenlite.vision import (
    VisionTransformer,
    vision_layout,
)
from qwenlite_course.reference import capture, tolerance
from qwenlite_course.viz import vision as vv


def window_map_by_hand(grid_hw: tuple[int, int], side: int = 112 // 14) -> torch.Tensor:
    """The window rule written without the layout: side x side patch tiles of one frame, numbered row by row."""
    rows, cols = torch.meshgrid(torch.arange(grid_hw[0]), torch.arange(grid_hw[1]), indexing="ij")
    return (rows // side) * -(-grid_hw[1] // side) + cols // side


@pytest.mark.parametrize("grid_hw", [(16, 16), (12, 20), (42, 36), (6, 22)], ids=str)
def test_window_picture_is_the_tower_windows(grid_hw):
    """viz.vision.window_ids (the coloured tiles of notebooks 03 and 04) equals the window rule written by hand."""
    assert torch.equal(vv.window_ids(grid_hw), window_map_by_hand(grid_hw))


def test_window_picture_check_fails_on_a_picture_that_forgets_the_window_order(monkeypatch):
    """Mutation: a picture that reads segment ids as if the tower kept processor order draws the wrong tiles."""
    real = vv.vision_layout
    monkeypatch.setattr(
        vv, "vision_layout", lambda g, c: dataclasses.replace(real(g, c), patch_order=torch.arange(int(g.prod())))
    )
    assert not torch.equal(vv.window_ids((12, 20)), window_map_by_hand((12, 20)))


def attention_picture_error(tower: VisionTransformer, pixels: torch.Tensor, grid: torch.Tensor, layer: int):
    """The attention picture's probabilities, applied to the block's own v and proj, against the block's output."""
    block = tower.blocks[layer]
    probs = vv.attention_probs(tower, pixels, grid, layer)  # (H, N, N), window order
    with torch.no_grad(), capture({"x": block.norm1, "out": block.attn}) as got:
        tower(pixels, grid)
    with torch.no_grad():
        cos, sin = tower.rotary_pos_emb(vision_layout(grid, tower.config).rotary_ids)
        _, _, v = block.attn.rotated_qkv(got["x"], cos, sin)  # v has no rotary: cos, sin only fill the call
        redrawn = block.attn.proj(torch.einsum("hqk,khd->qhd", probs, v).flatten(1))
    return float((redrawn - got["out"]).abs().max()), tolerance(got["out"])


def test_attention_picture_is_what_each_block_computes(ours, vision_inputs):
    """softmax(q k^T) drawn in notebook 03, times the block's v and through its proj, gives the block's own
    attention output: for a windowed and a full-attention block, on a frame whose edge windows are partial."""
    tower = ours.visual
    pixels, grid = vision_inputs["odd_size"]
    for layer in (0, tower.config.fullatt_block_indexes[0]):
        error, bound = attention_picture_error(tower, pixels, grid, layer)
        assert error <= bound, (layer, error, bound)


def test_attention_picture_check_fails_on_a_picture_without_the_segment_mask(ours, vision_inputs, monkeypatch):
    """Mutation: a picture that forgets the windows (every patch may attend to every patch) no longer reproduces
    a windowed block's output."""
    monkeypatch.setattr(vv, "segment_mask", lambda cu: torch.ones(int(cu[-1]), int(cu[-1]), dtype=torch.bool))
    pixels, grid = vision_inputs["odd_size"]
    error, bound = attention_picture_error(ours.visual, pixels, grid, 0)
    assert error > bound, (error, bound)


def test_demo_inputs_are_smaller_on_a_real_checkpoint(ckpt, monkeypatch):
    """02-04 take the whole photo on the twin and smaller inputs on a real checkpoint (CI never has one).
    The expected sizes are transformers' smart_resize of the photo (600 x 512) and the clip (252 x 336)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

    from qwenlite_course import checkpoint
    from qwenlite_course.reference import run_settings

    settings = run_settings()
    twin = vv.demo_inputs(ckpt, settings)
    assert tuple(twin.frame.shape) == (3, 588, 504) and twin.video_grid.tolist() == [[4, 20, 28]]
    monkeypatch.setattr(checkpoint, "is_tiny_twin", lambda path: False)
    real = vv.demo_inputs(ckpt, settings)
    assert real.frame.shape[1] * real.frame.shape[2] <= vv.REAL_PHOTO_MAX_PIXELS
    h, w = hf_smart_resize(600, 512, 28, 56 * 56, vv.REAL_PHOTO_MAX_PIXELS)
    assert tuple(real.frame.shape) == (3, h, w) and real.grid.tolist() == [[1, h // 14, w // 14]]
    fh, fw = hf_smart_resize(252, 336, 28, *vv.REAL_VIDEO_PIXELS)
    assert real.video_grid.tolist() == [[4, fh // 14, fw // 14]] == [[4, 8, 10]]  # 112 x 140 px frames
    assert real.pixels.shape[0] == 24 * 22 and real.video_pixels.shape[0] == 4 * 8 * 10


def test_attention_maps_share_one_colour_scale(ours, vision_inputs):
    """Notebook 03 draws a windowed and a full-attention map side by side on one logarithmic norm, so their colours
    compare (their weights are many times apart)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    tower = ours.visual
    pixels, grid = vision_inputs["odd_size"]
    full = tower.config.fullatt_block_indexes[-1]
    probs = {b: vv.attention_probs(tower, pixels, grid, b) for b in (0, full)}
    h, w = (int(v) for v in grid[0, 1:])
    frame = torch.zeros(3, h * 14, w * 14, dtype=torch.uint8)
    fig = vv.draw_attention_maps(frame, probs, grid, 0, (1, 1), tower.config)
    try:
        norms = [ax.get_images()[-1].norm for ax in fig.axes[1:3]]
        assert all(isinstance(n, LogNorm) for n in norms) and norms[0] is norms[1]
    finally:
        plt.close(fig)


def _numbers_in_reading_order(ax) -> list[int]:
    """The numbers written on a panel, row by row, left to right (arrows and labels left out)."""
    cells = [(t.get_position()[1], t.get_position()[0], t.get_text()) for t in ax.texts]
    return [int(text) for _, _, text in sorted(cells) if text.isdigit()]


def test_window_order_picture_lists_window_index():
    """Notebook 04's right panel writes window_index out one window per row: read back in order, its numbers are
    the tower's window_index, and the middle panel's numbers (each token's tower position) are argsort of it."""
    import matplotlib.pyplot as plt

    grid_hw = (12, 20)
    layout = vision_layout(torch.tensor([[1, *grid_hw]]), vv.VisionConfig())
    fig = vv.draw_window_order(grid_hw)
    try:
        assert _numbers_in_reading_order(fig.axes[2]) == layout.window_index.tolist()
        assert _numbers_in_reading_order(fig.axes[1]) == layout.restore.tolist()
        assert _numbers_in_reading_order(fig.axes[0]) == list(range(len(layout.window_index)))
    finally:
        plt.close(fig)


def _merge_picture_cells(grid_hw: tuple[int, int]) -> dict[int, tuple[int, int]]:
    """Notebook 04's merge picture, left panel: the row of pixel_values written on each patch -> its (h, w)."""
    import matplotlib.pyplot as plt

    frame = torch.zeros(3, grid_hw[0] * 14, grid_hw[1] * 14, dtype=torch.uint8)
    fig = vv.draw_merge_groups(frame, grid_hw, tokens=6)
    try:
        cells = {int(t.get_text()): t.get_position() for t in fig.axes[0].texts if t.get_text().isdigit()}
        labels = [t.get_text() for t in sorted(fig.axes[1].texts, key=lambda t: t.get_position()[::-1])]
    finally:
        plt.close(fig)
    assert labels == [f"row {r}" for r in range(24)]  # right panel: token k holds rows 4k .. 4k+3, in order
    return {r: (int(y - 0.5), int(x - 0.5)) for r, (x, y) in cells.items()}


def rows_by_hand(grid_hw: tuple[int, int], rows: int) -> dict[int, tuple[int, int]]:
    """The processor's order written out: 2x2 groups row by row, each group's 4 patches row by row."""
    groups_per_row = grid_hw[1] // 2
    return {r: (r // 4 // groups_per_row * 2 + r % 4 // 2, r // 4 % groups_per_row * 2 + r % 2) for r in range(rows)}


def test_merge_picture_puts_each_row_on_its_patch():
    """Each number on notebook 04's left panel sits on the patch that row of pixel_values holds."""
    cells = _merge_picture_cells((6, 8))  # 4 tokens per patch-row pair: the 6 tokens wrap onto a second pair
    assert cells == rows_by_hand((6, 8), 24)


def test_merge_picture_check_fails_on_raster_order(monkeypatch):
    """Mutation: a picture that numbers patches row by row (no 2x2 groups) puts the rows on the wrong patches."""

    def raster(grid_thw, merge_size=2):
        h, w = (int(v) for v in grid_thw[0, 1:])
        hh, ww = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        return torch.stack([hh.flatten(), ww.flatten()], -1)

    monkeypatch.setattr(vv, "vision_rotary_ids", raster)
    assert _merge_picture_cells((6, 8)) != rows_by_hand((6, 8), 24)
