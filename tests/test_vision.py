"""The vision tower against transformers' `Qwen2_5_VisionTransformerPretrainedModel` on the same checkpoint.

Inputs come from transformers' processor: the real photo, frames of the sample video, several images
at once, and sizes whose merged grid is not a multiple of the 4x4-token window. Every intermediate
(patch embed, rotary tables, window index, each block, merger, features) is compared; index results
exactly, floats within the float32 tolerances. Property tests need no reference.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids, get_vision_window_index

from qwenlite.config import VisionConfig
from qwenlite.layers import MLP
from qwenlite.vision import (
    PatchEmbed,
    VisionTransformer,
    full_attention_seqlens,
    get_window_index,
    segment_attention,
    segment_ids,
    vision_layout,
    vision_rotary_ids,
)
from qwenlite_course.reference import capture, tolerance


def assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str = "") -> None:
    """max |ours - ref| within the repository's tolerance policy (`reference.tolerance`: float32 1e-4 x
    max(1, max |ref|)), with the shapes checked first."""
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} vs {tuple(ref.shape)}"
    if ours.numel() == 0:
        return
    diff, bound = float((ours - ref).abs().max()), tolerance(ref)
    assert diff <= bound, f"{what}: max |diff| {diff:.2e} > the policy's {bound:.1e}"


# ------------------------------------------------------------------ inputs (built by transformers' processor)


INPUTS = ["photo", "video", "three_images", "odd_size"]


def test_inputs_cover_windows_that_do_not_tile(vision_inputs):
    """The inputs are chosen so that edge windows are partial: at least one merged side is not a multiple of 4."""
    for name in ["photo", "video", "odd_size"]:
        grid = vision_inputs[name][1]
        assert ((grid[:, 1:] // 2) % 4 != 0).any(), name
    assert int(vision_inputs["video"][1][0, 0]) == 4  # 8 frames -> 4 temporal patches


# ------------------------------------------------------------------ names and weights


def test_module_tree_has_the_checkpoint_names(ours, ref):
    """Every parameter of transformers' tower exists in ours under the same key with the same shape and value."""
    mine = ours.visual.state_dict()
    theirs = ref.model.visual.state_dict()
    assert sorted(mine) == sorted(theirs)
    for key, value in theirs.items():
        assert torch.equal(mine[key], value), key


# ------------------------------------------------------------------ index bookkeeping: exact


GRIDS = [[[1, 2, 2]], [[1, 16, 16]], [[1, 42, 36]], [[4, 18, 24]], [[1, 10, 14], [2, 8, 6], [1, 32, 32]], [[3, 6, 22]]]


@pytest.mark.parametrize("grid", GRIDS, ids=str)
def test_index_functions_equal_transformers(grid):
    g = torch.tensor(grid)
    ids = vision_rotary_ids(g, 2)
    assert torch.equal(ids, get_vision_position_ids(g, 2))
    wi, cu = get_window_index(g, 112, 14, 2)
    rwi, rcu = get_vision_window_index(g, spatial_merge_size=2, window_size=112, patch_size=14)
    assert torch.equal(wi, rwi) and wi.dtype == rwi.dtype
    assert torch.equal(cu, rcu) and cu.dtype == rcu.dtype
    assert torch.equal(full_attention_seqlens(g), get_vision_cu_seqlens(g))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.integers(1, 13), st.integers(1, 13)), min_size=1, max_size=3))
def test_window_index_equals_transformers_on_random_grids(grids):
    g = torch.tensor([[t, 2 * h, 2 * w] for t, h, w in grids])
    wi, cu = get_window_index(g, 112, 14, 2)
    rwi, rcu = get_vision_window_index(g, spatial_merge_size=2, window_size=112, patch_size=14)
    assert torch.equal(wi, rwi) and torch.equal(cu, rcu)
    assert torch.equal(torch.sort(wi).values, torch.arange(len(wi)))  # a permutation of all merged tokens


def test_docstring_examples():
    """The worked examples in vision.py's docstrings."""
    assert vision_rotary_ids(torch.tensor([[1, 2, 4]])).T.tolist() == [
        [0, 0, 1, 1, 0, 0, 1, 1],
        [0, 1, 0, 1, 2, 3, 2, 3],
    ]
    wi, cu = get_window_index(torch.tensor([[1, 4, 12]]))
    assert wi.tolist() == [0, 1, 2, 3, 6, 7, 8, 9, 4, 5, 10, 11] and cu.tolist() == [0, 32, 48]
    assert full_attention_seqlens(torch.tensor([[2, 2, 2]])).tolist() == [0, 4, 8]
    assert segment_ids(torch.tensor([0, 3, 5])).tolist() == [0, 0, 0, 1, 1]
    layout = vision_layout(torch.tensor([[1, 4, 12]]), VisionConfig())
    assert layout.window_index.tolist() == [0, 1, 2, 3, 6, 7, 8, 9, 4, 5, 10, 11]
    assert layout.patch_order[:8].tolist() == list(range(8)) and layout.patch_order[16:20].tolist() == [24, 25, 26, 27]
    assert layout.rotary_ids[:4].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert layout.rotary_ids[16:20].tolist() == [[2, 0], [2, 1], [3, 0], [3, 1]]
    assert layout.cu_windows.tolist() == [0, 32, 48] and layout.cu_frames.tolist() == [0, 48]


@pytest.mark.parametrize("grid", GRIDS, ids=str)
def test_vision_layout_equals_transformers(grid):
    """The one layout that the tower, its pictures and these tests read, against transformers' own helpers and the
    permutation its forward applies (hidden states and position ids reshaped to merge groups, indexed by
    window_index). Catches a patch order that moves single patches instead of whole 2x2 groups, rotary ids left in
    processor order, or a restore that is not the inverse permutation."""
    g = torch.tensor(grid)
    layout = vision_layout(g, VisionConfig())
    window_index, cu_windows = get_vision_window_index(g, spatial_merge_size=2, window_size=112, patch_size=14)
    n = int(g.prod(-1).sum())
    assert torch.equal(layout.window_index, window_index) and torch.equal(layout.cu_windows, cu_windows)
    assert torch.equal(layout.cu_frames, get_vision_cu_seqlens(g))
    assert torch.equal(layout.patch_order, torch.arange(n).reshape(-1, 4)[window_index].flatten())
    assert torch.equal(layout.rotary_ids, get_vision_position_ids(g, 2).reshape(-1, 4, 2)[window_index].flatten(0, 1))
    assert torch.equal(layout.window_index[layout.restore], torch.arange(n // 4))


# ------------------------------------------------------------------ components against transformers


@pytest.mark.parametrize("name", INPUTS)
def test_patch_embed_and_rotary_tables(ours, ref, vision_inputs, name):
    pixels, grid = vision_inputs[name]
    with torch.no_grad():
        assert_close(ours.visual.patch_embed(pixels), ref.model.visual.patch_embed(pixels), what="patch_embed")
        cos, sin = ours.visual.rotary_pos_emb(vision_rotary_ids(grid, 2))
        ref_cos, ref_sin = ref.model.visual.rotary_pos_emb(pixels, get_vision_position_ids(grid, 2))
    assert_close(cos, ref_cos, what="cos")
    assert_close(sin, ref_sin, what="sin")


@pytest.mark.parametrize("name", INPUTS)
def test_every_block_merger_and_features(ours, ref, vision_inputs, name):
    """Forward hooks on both towers: each block's output, the merger's output, and the final features."""
    pixels, grid = vision_inputs[name]
    mine, theirs = ours.visual, ref.model.visual
    names = [f"blocks.{i}" for i in range(len(mine.blocks))] + ["merger"]
    with torch.no_grad(), capture({n: mine.get_submodule(n) for n in names}) as got:
        features = mine(pixels, grid)
    with torch.no_grad(), capture({n: theirs.get_submodule(n) for n in names}) as want:
        ref_features = theirs(pixels, grid).pooler_output
    for n in names:
        assert_close(got[n], want[n], what=n)
    assert_close(features, ref_features, what="features")


def test_image_and_video_features_are_per_item(ours, ref, vision_inputs):
    pixels, grid = vision_inputs["three_images"]
    with torch.no_grad():
        mine = ours.get_image_features(pixels, grid)
        theirs = ref.get_image_features(pixel_values=pixels, image_grid_thw=grid).pooler_output
    assert len(mine) == len(theirs) == 3
    for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
        assert a.shape[0] == int(grid[i].prod()) // 4
        assert_close(a, b, what=f"image {i}")
    pixels, grid = vision_inputs["video"]
    with torch.no_grad():
        (mine,) = ours.get_video_features(pixels, grid)
        (theirs,) = ref.get_video_features(pixel_values_videos=pixels, video_grid_thw=grid).pooler_output
    assert_close(mine, theirs, what="video")


@pytest.mark.slow
@torch.no_grad()
def test_bfloat16_tower_is_as_close_to_float32_as_transformers_bfloat16(ours, ref, ckpt, vision_inputs):
    """Both towers loaded in bfloat16 from the same checkpoint: qwenlite's features are no further from
    transformers' float32 features than transformers' own bfloat16 features are (max |x - ref| / max |ref|,
    with 1.5x slack). A rounding step that transformers avoids (a table or a sum kept in bfloat16) fails it."""
    from qwenlite import QwenLiteVL
    from qwenlite_course.reference import reference_model

    mine_bf16 = QwenLiteVL.from_pretrained(ckpt, dtype=torch.bfloat16).visual
    theirs_bf16 = reference_model(ckpt, dtype=torch.bfloat16).model.visual
    assert mine_bf16.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    for name in ["photo", "video"]:
        pixels, grid = vision_inputs[name]
        truth = ref.model.visual(pixels, grid).pooler_output  # float32
        mine, theirs = (
            float((features.float() - truth).abs().max() / truth.abs().max())
            for features in (mine_bf16(pixels, grid), theirs_bf16(pixels, grid).pooler_output)
        )
        assert 0 < theirs < 0.05 and mine <= 1.5 * theirs, (name, mine, theirs)


# ------------------------------------------------------------------ properties


def test_conv3d_is_a_matmul_on_flattened_patches(ours, vision_inputs):
    """PatchEmbed's matmul on 1176-vectors equals transformers-style Conv3d on (3, 2, 14, 14) cubes."""
    pixels, _ = vision_inputs["photo"]
    embed: PatchEmbed = ours.visual.patch_embed
    with torch.no_grad():
        conv = embed.proj(pixels.view(-1, 3, 2, 14, 14)).flatten(1)  # (N, D, 1, 1, 1) -> (N, D)
        assert_close(embed(pixels), conv, what="matmul vs conv3d")


def test_mlp_equals_transformers_mlp():
    """SwiGLU down(silu(gate(x)) * up(x)) on transformers' own MLP weights, with a batch axis."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLMLP

    torch.manual_seed(0)
    theirs = Qwen2_5_VLMLP(SimpleNamespace(hidden_size=8, intermediate_size=24, hidden_act="silu"), bias=True)
    mine = MLP(8, 24, "silu", bias=True)
    mine.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 7, 8)
    with torch.no_grad():
        assert_close(mine(x), theirs(x), what="MLP")


def _variant(ours, **changes) -> VisionTransformer:
    config = dataclasses.replace(ours.visual.config, **changes)
    with torch.device("meta"):
        tower = VisionTransformer(config)
    tower.load_state_dict(ours.visual.state_dict(), assign=True)
    return tower.eval()


def test_a_window_covering_the_image_equals_full_attention(ours, vision_inputs):
    """Windows as big as the image, versus full attention in every block (on the usual window order)."""
    pixels, grid = vision_inputs["three_images"]
    side = int(grid[:, 1:].max()) * 14  # pixels: one window per image
    depth = ours.visual.config.depth
    with torch.no_grad():
        one_window = _variant(ours, window_size=side)(pixels, grid)
        all_full = _variant(ours, fullatt_block_indexes=tuple(range(depth)))(pixels, grid)
        windowed = ours.visual(pixels, grid)
    assert_close(one_window, all_full, what="one window vs full attention")
    assert (windowed - all_full).abs().max() > 1e-3  # the real windows do change the result: the test can fail


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=8), st.integers(1, 3))
def test_segment_attention_equals_block_diagonal_masked_attention(lengths, heads):
    n = sum(lengths)
    cu = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32)
    q, k, v = torch.randn(3, max(n, 1), heads, 8)[:, :n].unbind(0)
    segment = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    mask = segment[:, None] == segment[None, :]  # (N, N) block diagonal
    dense = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask)
    assert_close(segment_attention(q, k, v, cu), dense.transpose(0, 1), what="segments vs mask")


def test_window_order_is_restored_against_a_raster_order_reference(ours, vision_inputs):
    """With full attention in every block the window permutation is the only reordering, so the tower must equal
    the same blocks run by hand in raster (processor) order. Fails if forward skips the final argsort."""
    depth = ours.visual.config.depth
    tower = _variant(ours, fullatt_block_indexes=tuple(range(depth)))
    for name in ["photo", "three_images", "video"]:
        pixels, grid = vision_inputs[name]
        with torch.no_grad():
            x = tower.patch_embed(pixels)  # (N, D), raster order: no window permutation anywhere
            cos, sin = tower.rotary_pos_emb(vision_rotary_ids(grid, 2))
            cu = full_attention_seqlens(grid)
            for block in tower.blocks:
                x = block(x, cu, cos, sin)
            by_hand = tower.merger(x)
            features = tower(pixels, grid)
        assert_close(features, by_hand, what=f"{name}: tower vs raster order by hand")
        window_index, _ = get_window_index(grid, 112, 14, 2)
        assert not torch.equal(window_index, torch.arange(len(window_index)))  # windows do reorder: can fail
        assert (by_hand[window_index] - by_hand).abs().max() > 1e-3, name  # a missing argsort would show


def test_images_in_a_batch_do_not_interact(ours, vision_inputs):
    """Each image's features are the same whether it runs with the others, alone, or with the batch reversed."""
    pixels, grid = vision_inputs["three_images"]
    parts = pixels.split(grid.prod(-1).tolist())
    with torch.no_grad():
        together = ours.get_image_features(pixels, grid)
        alone = [ours.visual(p, g[None]) for p, g in zip(parts, grid, strict=True)]
        reversed_batch = ours.get_image_features(torch.cat(parts[::-1]), grid.flip(0))[::-1]
    for a, b, c in zip(together, alone, reversed_batch, strict=True):
        assert_close(a, b, what="batched vs alone")
        assert_close(c, b, what="reversed batch vs alone")
