"""The vision tower against transformers' `Qwen2_5_VisionTransformerPretrainedModel` on the same checkpoint.

Inputs come from transformers' processor: the real photo, frames of the sample video, several images
at once, and sizes whose merged grid is not a multiple of the 4x4-token window. Every intermediate
(patch embed, rotary tables, window index, each block, merger, features) is compared; index results
exactly, floats within the float32 tolerances. Property tests need no reference.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids, get_vision_window_index

from qwenlite.config import VisionConfig
from qwenlite.layers import MLP
from qwenlite.reference import capture, tolerance
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
from qwenlite.viz import vision as vv


def assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str = "") -> None:
    """max |ours - ref| within the repository's tolerance policy (`reference.tolerance`: float32 1e-4 x
    max(1, max |ref|)), with the shapes checked first."""
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} vs {tuple(ref.shape)}"
    if ours.numel() == 0:
        return
    diff, bound = float((ours - ref).abs().max()), tolerance(ref)
    assert diff <= bound, f"{what}: max |diff| {diff:.2e} > the policy's {bound:.1e}"


# ------------------------------------------------------------------ inputs (built by transformers' processor)


@pytest.fixture(scope="session")
def photo(photo_path) -> Image.Image:
    return Image.open(photo_path).convert("RGB")


@pytest.fixture(scope="session")
def video_frames(video_path) -> np.ndarray:
    with av.open(str(video_path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])  # (T, H, W, 3)


@pytest.fixture(scope="session")
def vision_inputs(hf_processor, photo, video_frames) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """name -> (pixel_values, grid_thw). Merged grids: photo 21x18, video 4 x 9x12, odd 7x5 (none a multiple of 4)."""

    def images(imgs):
        out = hf_processor.image_processor(images=imgs, return_tensors="pt")
        return out["pixel_values"], out["image_grid_thw"]

    video = hf_processor.video_processor(
        videos=[video_frames[:8]], return_tensors="pt", do_sample_frames=False, cap_pixels_per_frame=True
    )
    return {
        "photo": images([photo]),
        "video": (video["pixel_values_videos"], video["video_grid_thw"]),
        "three_images": images([photo, photo.resize((140, 196)), photo.crop((0, 0, 448, 448))]),
        "odd_size": images([photo.resize((140, 196))]),
    }


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
    from qwenlite.reference import reference_model

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


# ------------------------------------------------------------------ the pictures draw what the tower computes


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


# ------------------------------------------------------------------ errors


# ------------------------------------------------------------------ inputs sized for a real checkpoint


def test_demo_inputs_are_smaller_on_a_real_checkpoint(ckpt, monkeypatch):
    """02-04 take the whole photo on the twin and smaller inputs on a real checkpoint (CI never has one).
    The expected sizes are transformers' smart_resize of the photo (600 x 512) and the clip (252 x 336)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

    from qwenlite import checkpoint
    from qwenlite.reference import run_settings

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
