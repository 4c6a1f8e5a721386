"""Pictures and explorers for notebooks 02-04 (the vision tower): patches and their embeddings, 2-D RoPE ids,
windows as coloured tiles, block-diagonal attention masks, attention maps of one patch, 2x2 merge groups.

Tokens inside the tower are in window order; every drawing maps them back to (h, w) patch positions with the
layout the tower itself computes (`qwenlite.vision.vision_layout`), so nothing here is re-derived. Geometry
(patch, merge and window sizes) comes from a VisionConfig: the checkpoint's, or the real model's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap

from qwenlite.config import VisionConfig
from qwenlite.preprocessing import Patches
from qwenlite.vision import VisionTransformer, segment_ids, vision_layout, vision_rotary_ids

from .preprocessing import _hwc


def _tiles_cmap(n: int) -> ListedColormap:
    colors = plt.get_cmap("tab20")(np.arange(20))
    return ListedColormap(colors[np.arange(n) % 20])


def _geometry(vision_config: VisionConfig | None) -> VisionConfig:
    """The checkpoint's vision config, or the real model's geometry (patch 14, merge 2, 112-px windows)."""
    return vision_config if vision_config is not None else VisionConfig()


def _one_frame(grid_hw: tuple[int, int]) -> torch.Tensor:
    return torch.tensor([[1, *grid_hw]])


def to_grid(values: torch.Tensor, grid_hw: tuple[int, int], merge_size: int) -> torch.Tensor:
    """Per-patch values of one frame in processor order (h*w, ...) -> an image-shaped (h, w, ...) tensor."""
    h, w = grid_hw
    ids = vision_rotary_ids(_one_frame(grid_hw), merge_size)  # (h*w, 2)
    out = torch.zeros(h, w, *values.shape[1:], dtype=values.dtype)
    out[ids[:, 0], ids[:, 1]] = values
    return out


# ------------------------------------------------------------------ notebook 02: patches and their embeddings


def show_patches_and_embeddings(
    frame: torch.Tensor,
    pixel_values: torch.Tensor,
    embeddings: torch.Tensor,
    grid_hw: tuple[int, int],
    patch: tuple[int, int] = (10, 10),
    vision_config: VisionConfig | None = None,
):
    """The image with one patch outlined, that patch's 1176 numbers, and all embeddings as an RGB picture (PCA)."""
    config = _geometry(vision_config)
    patch_size, area = config.patch_size, config.patch_size**2
    ids = vision_rotary_ids(_one_frame(grid_hw), config.spatial_merge_size)
    row = int(((ids[:, 0] == patch[0]) & (ids[:, 1] == patch[1])).nonzero()[0, 0])
    pixel_values, embeddings = pixel_values.detach().float().cpu(), embeddings.detach().float().cpu()
    # 3 principal directions of the D-dim embeddings -> RGB, so similar embeddings get similar colours
    e = embeddings - embeddings.mean(0)
    _, _, v = torch.linalg.svd(e, full_matrices=False)
    rgb = e @ v[:3].T
    rgb = (rgb - rgb.min(0).values) / (rgb.max(0).values - rgb.min(0).values)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), gridspec_kw={"width_ratios": [1, 1.4, 1]})
    axes[0].imshow(_hwc(frame))
    y, x = patch[0] * patch_size, patch[1] * patch_size
    axes[0].add_patch(plt.Rectangle((x, y), patch_size, patch_size, fill=False, color="red", lw=2))
    axes[0].set_title(f"patch (h={patch[0]}, w={patch[1]}) = row {row} of pixel_values")
    axes[1].plot(pixel_values[row].numpy(), lw=0.6)
    planes = [f"{c} t{t}" for c in "RGB" for t in range(config.temporal_patch_size)]
    for b in range(1, len(planes)):
        axes[1].axvline(b * area, color="grey", lw=0.5)
    axes[1].set_xticks([area // 2 + area * i for i in range(len(planes))], planes)
    axes[1].set_title("its 1176 numbers: (channel, frame, 14x14)")
    axes[1].set_ylabel("normalised value")
    axes[2].imshow(to_grid(rgb, grid_hw, config.spatial_merge_size).detach().float().cpu().numpy())
    axes[2].set_title(f"{embeddings.shape[1]}-dim embeddings, top-3 PCA as RGB")
    axes[2].set_xlabel("w (patches)")
    axes[2].set_ylabel("h (patches)")
    fig.tight_layout()
    return fig


def show_temporal_kernel(weight: torch.Tensor, channel: int = 0):
    """One output channel of the Conv3d kernel (D, 3, 2, 14, 14): its 3 colour planes at frame 0 and frame 1."""
    k = weight[channel].detach()  # (3, 2, 14, 14)
    lim = float(k.abs().max())
    fig, axes = plt.subplots(2, 3, figsize=(6.5, 4.6))
    for t in range(2):
        for c in range(3):
            im = axes[t, c].imshow(k[c, t].detach().float().cpu().numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
            axes[t, c].set_title(f"{'RGB'[c]}, frame {t}", fontsize=9)
            axes[t, c].set_xticks([])
            axes[t, c].set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.suptitle(f"Conv3d kernel of output channel {channel}: 2 frames x 3 colours x 14x14")
    return fig


# ------------------------------------------------------------------ notebook 03: RoPE ids, windows, masks, attention


def show_hw_ids(frame: torch.Tensor, grid_hw: tuple[int, int], vision_config: VisionConfig | None = None):
    """The h and w rotary ids of every patch drawn over the image, and the order the processor emits patches."""
    config = _geometry(vision_config)
    h, w = grid_hw
    patch_size, merge_size = config.patch_size, config.spatial_merge_size
    ids = vision_rotary_ids(_one_frame(grid_hw), merge_size)
    order = to_grid(torch.arange(h * w), grid_hw, merge_size)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, grid, title in [
        (axes[0], to_grid(ids[:, 0], grid_hw, merge_size), "h id (row) of each patch"),
        (axes[1], to_grid(ids[:, 1], grid_hw, merge_size), "w id (column) of each patch"),
        (axes[2], order, "position in pixel_values (2x2 groups first)"),
    ]:
        ax.imshow(_hwc(frame), extent=(0, w * patch_size, h * patch_size, 0))
        im = ax.imshow(grid.numpy(), cmap="viridis", alpha=0.6, extent=(0, w * patch_size, h * patch_size, 0))
        fig.colorbar(im, ax=ax, shrink=0.75)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("x (px)")
    for i in range(min(h, 4)):
        for j in range(min(w, 4)):
            axes[2].text(
                (j + 0.5) * patch_size,
                (i + 0.5) * patch_size,
                int(order[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white",
            )
    fig.tight_layout()
    return fig


def window_ids(grid_hw: tuple[int, int], vision_config: VisionConfig | None = None) -> torch.Tensor:
    """(h, w) map: which window each patch of one frame attends within, from the tower's own layout."""
    config = _geometry(vision_config)
    layout = vision_layout(_one_frame(grid_hw), config)
    window_of_patch = torch.empty_like(layout.patch_order)
    window_of_patch[layout.patch_order] = segment_ids(layout.cu_windows)  # tower position -> processor order
    return to_grid(window_of_patch, grid_hw, config.spatial_merge_size)


def show_windows(frame: torch.Tensor, grid_hw: tuple[int, int], vision_config: VisionConfig | None = None):
    """Windows as coloured tiles over the image, numbered in the order the tower visits them."""
    config = _geometry(vision_config)
    h, w = grid_hw
    patch_size, side = config.patch_size, config.window_size // config.patch_size
    wid = window_ids(grid_hw, config)
    n = int(wid.max()) + 1
    fig, ax = plt.subplots(figsize=(5.5, 5.5 * h / w))
    ax.imshow(_hwc(frame), extent=(0, w * patch_size, h * patch_size, 0))
    ax.imshow(
        wid.numpy(),
        cmap=_tiles_cmap(n),
        alpha=0.45,
        extent=(0, w * patch_size, h * patch_size, 0),
        interpolation="nearest",
    )
    for k in range(n):
        ys, xs = (wid == k).nonzero(as_tuple=True)
        cy, cx = (ys.float().mean() + 0.5) * patch_size, (xs.float().mean() + 0.5) * patch_size
        ax.text(float(cx), float(cy), f"{k}\n{len(ys)}", ha="center", va="center", fontsize=8, color="black")
    ax.set_title(
        f"{n} windows of up to {side}x{side} patches (number, patches)",
        fontsize=10,
    )
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    fig.tight_layout()
    return fig


def segment_mask(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """(N, N) bool: True where query i may attend to key j (both in the same segment)."""
    segment = segment_ids(cu_seqlens)
    return segment[:, None] == segment[None, :]


def show_masks(grid_thw: torch.Tensor, vision_config: VisionConfig | None = None):
    """The block-diagonal attention masks of a windowed block and of a full-attention block, in window order."""
    layout = vision_layout(grid_thw, _geometry(vision_config))
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4))
    panels = [(axes[0], layout.cu_windows, "windowed blocks"), (axes[1], layout.cu_frames, "full-attention blocks")]
    for ax, cu, title in panels:
        ax.imshow(segment_mask(cu).numpy(), cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
        if len(layout.cu_frames) > 2:  # several temporal patches: mark where one ends and the next begins
            for edge in layout.cu_frames[1:-1].tolist():
                ax.axhline(edge - 0.5, color="tab:red", linewidth=0.8, alpha=0.7)
                ax.axvline(edge - 0.5, color="tab:red", linewidth=0.8, alpha=0.7)
        ax.set_title(f"{title}: {len(cu) - 1} segments", fontsize=10)
        ax.set_xlabel("key (window order)")
        ax.set_ylabel("query (window order)")
    edges = ", red lines: temporal patches" if len(layout.cu_frames) > 2 else ""
    fig.suptitle(f"who attends to whom, grid_thw {grid_thw.tolist()} (black = allowed{edges})", fontsize=10)
    fig.tight_layout()
    return fig


@torch.no_grad()
def attention_probs(
    tower: VisionTransformer, pixel_values: torch.Tensor, grid_thw: torch.Tensor, layer: int
) -> torch.Tensor:
    """softmax(q k^T / sqrt(Dh)) of one block, recomputed from its qkv: (H, N, N) in window order, 0 across segments.

    The block's inputs are captured with a forward pre-hook on its attention module: the output of norm1 and the
    segments, cos and sin the forward handed it; q and k come from `VisionAttention.rotated_qkv`, the same code
    the forward runs. Nothing about the layout is recomputed here.
    """
    block = tower.blocks[layer]
    seen = {}

    def keep_inputs(_module, args) -> None:  # returns None, so the forward's inputs stay as they are
        seen["x"], seen["cu_seqlens"], seen["cos"], seen["sin"] = args

    handle = block.attn.register_forward_pre_hook(keep_inputs)
    try:
        tower(pixel_values, grid_thw)
    finally:
        handle.remove()
    q, k, _ = block.attn.rotated_qkv(seen["x"], seen["cos"], seen["sin"])  # (N, H, Dh)
    q, k = q.float().cpu(), k.float().cpu()  # probabilities to draw: float32 on the CPU, like SDPA's softmax
    scores = torch.einsum("qhd,khd->hqk", q, k) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~segment_mask(seen["cu_seqlens"].cpu()), float("-inf"))
    return scores.softmax(-1)


def attention_of_patch(
    probs: torch.Tensor,
    grid_thw: torch.Tensor,
    head: int,
    patch: tuple[int, int],
    vision_config: VisionConfig | None = None,
) -> torch.Tensor:
    """Where patch (h, w) of the first frame of the first item looks: an (h, w) map of its attention weights."""
    h, w = (int(v) for v in grid_thw[0, 1:])
    layout = vision_layout(grid_thw.cpu(), _geometry(vision_config))
    pos_ids = layout.rotary_ids  # (h, w) of every window-order position
    first = layout.patch_order < h * w  # positions that belong to the first frame of the first item
    query = int(((pos_ids[:, 0] == patch[0]) & (pos_ids[:, 1] == patch[1]) & first).nonzero()[0, 0])
    out = torch.zeros(h, w)
    out[pos_ids[first, 0], pos_ids[first, 1]] = probs[head, query, first]
    return out


def show_attention(
    frame: torch.Tensor,
    probs: torch.Tensor,
    grid_thw: torch.Tensor,
    head: int,
    patch: tuple[int, int],
    layer: int | None = None,
    vision_config: VisionConfig | None = None,
):
    """One patch's attention weights as a heat map over the image."""
    config = _geometry(vision_config)
    patch_size = config.patch_size
    h, w = (int(v) for v in grid_thw[0, 1:])
    amap = attention_of_patch(probs, grid_thw, head, patch, config)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4 * h / w + 0.4))
    ext = (0, w * patch_size, h * patch_size, 0)
    axes[0].imshow(_hwc(frame), extent=ext)
    axes[0].add_patch(
        plt.Rectangle(
            (patch[1] * patch_size, patch[0] * patch_size), patch_size, patch_size, fill=False, color="red", lw=2
        )
    )
    axes[0].set_title(f"query patch (h={patch[0]}, w={patch[1]})", fontsize=10)
    axes[1].imshow(_hwc(frame), extent=ext)
    im = axes[1].imshow(
        amap.detach().float().cpu().numpy(), cmap="magma", alpha=0.75, extent=ext, interpolation="nearest"
    )
    fig.colorbar(im, ax=axes[1], shrink=0.8, label="attention weight")
    axes[1].set_title(f"block {layer}, head {head}: softmax(q k^T / sqrt(Dh)) (sums to 1)", fontsize=10)
    fig.tight_layout()
    return fig


def attention_explorer(
    tower: VisionTransformer,
    pixel_values: torch.Tensor,
    grid_thw: torch.Tensor,
    frame: torch.Tensor,
    layers: list[int] | None = None,
):
    """Widgets: block (default: the full-attention ones), head, query patch row and column."""
    import ipywidgets as widgets

    from . import live

    config = tower.config
    h, w = (int(v) for v in grid_thw[0, 1:])
    layers = list(layers if layers is not None else config.fullatt_block_indexes)
    cache: dict[int, torch.Tensor] = {}

    def draw(layer: int, head: int, row: int, col: int):
        if layer not in cache:
            cache[layer] = attention_probs(tower, pixel_values, grid_thw, layer)
        return show_attention(frame, cache[layer], grid_thw, head, (row, col), layer, config)

    return live(
        draw,
        layer=widgets.Dropdown(options=layers, value=layers[-1], description="block"),
        head=widgets.IntSlider(0, 0, config.num_heads - 1, description="head"),
        row=widgets.IntSlider(h // 2, 0, h - 1, description="patch h"),
        col=widgets.IntSlider(w // 2, 0, w - 1, description="patch w"),
    )


# ------------------------------------------------------------------ notebook 04: the merger


def show_merge_groups(
    frame: torch.Tensor, grid_hw: tuple[int, int], tokens: int = 6, vision_config: VisionConfig | None = None
):
    """The first few LLM tokens: each is 4 consecutive rows of pixel_values, a 2x2 block of patches."""
    config = _geometry(vision_config)
    h, w = grid_hw
    patch_size = config.patch_size
    ids = vision_rotary_ids(_one_frame(grid_hw), config.spatial_merge_size)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.3, 1]})
    crop_h, crop_w = min(h, 6), min(w, 2 * tokens + 2)
    axes[0].imshow(_hwc(frame)[: crop_h * patch_size, : crop_w * patch_size], extent=(0, crop_w, crop_h, 0))
    cmap = plt.get_cmap("tab10")
    for row in range(4 * tokens):
        y, x = (int(v) for v in ids[row])
        if y < crop_h and x < crop_w:
            color = cmap(row // 4 % 10)
            axes[0].add_patch(plt.Rectangle((x, y), 1, 1, color=color, alpha=0.45))
            axes[0].text(x + 0.5, y + 0.5, str(row), ha="center", va="center", fontsize=9)
    axes[0].set_title("rows of pixel_values over the image: 4 rows = one token", fontsize=10)
    axes[0].set_xlabel("w (patches)")
    axes[0].set_ylabel("h (patches)")
    strip = np.repeat(np.arange(4 * tokens)[None] // 4, 3, axis=0)
    axes[1].imshow(strip, cmap=ListedColormap([cmap(i % 10) for i in range(tokens)]), alpha=0.6, aspect="auto")
    for r in range(4 * tokens):
        axes[1].text(r, 1, str(r), ha="center", va="center", fontsize=8)
    axes[1].set_yticks([])
    axes[1].set_xlabel("row of the (N, D) hidden states")
    axes[1].set_title("view(-1, 4D): rows 4k..4k+3 side by side -> token k", fontsize=10)
    fig.tight_layout()
    return fig


def show_window_order(grid_hw: tuple[int, int], vision_config: VisionConfig | None = None):
    """Merged tokens numbered in processor order and in window order, and the restoring permutation."""
    config = _geometry(vision_config)
    merge = config.spatial_merge_size
    layout = vision_layout(_one_frame(grid_hw), config)
    window_index = layout.window_index
    gh, gw = grid_hw[0] // merge, grid_hw[1] // merge
    position_in_tower = layout.restore  # argsort(window_index): the slot each merged token went to
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), gridspec_kw={"width_ratios": [1, 1, 1.3]})
    for ax, values, title in [
        (axes[0], torch.arange(gh * gw).view(gh, gw), "token index in the LLM prompt (raster)"),
        (axes[1], position_in_tower.view(gh, gw), "its position inside the tower (window order)"),
    ]:
        ax.imshow(
            window_ids(grid_hw, config)[::merge, ::merge].numpy(),
            cmap="tab20",
            alpha=0.5,
            interpolation="nearest",
        )
        for i in range(gh):
            for j in range(gw):
                ax.text(j, i, int(values[i, j]), ha="center", va="center", fontsize=6 if gw > 12 else 8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("merged w")
        ax.set_ylabel("merged h")
    axes[2].plot(window_index.numpy(), ".", ms=3, label="window_index[j]: which token sits at tower position j")
    axes[2].plot(layout.restore.numpy(), ".", ms=3, label="argsort: where token i went")
    axes[2].set_xlabel("j (tower position) or i (token)")
    axes[2].legend(fontsize=8, loc="upper left")
    axes[2].set_title("the permutation and its inverse", fontsize=10)
    fig.tight_layout()
    return fig


def show_features(
    frame: torch.Tensor, features: torch.Tensor, grid_hw: tuple[int, int], vision_config: VisionConfig | None = None
):
    """The LLM-width features of one image: as a (tokens x dims) heat map and their norm per token over the image."""
    merge = _geometry(vision_config).spatial_merge_size
    gh, gw = grid_hw[0] // merge, grid_hw[1] // merge
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    lim = float(features.float().abs().quantile(0.99))
    im = axes[0].imshow(
        features.T.detach().float().cpu().numpy(),
        aspect="auto",
        cmap="RdBu_r",
        vmin=-lim,
        vmax=lim,
        interpolation="nearest",
    )
    fig.colorbar(im, ax=axes[0])
    axes[0].set_xlabel("token (prompt order)")
    axes[0].set_ylabel("feature dim")
    axes[0].set_title(f"features {tuple(features.shape)}: one column per <|image_pad|>", fontsize=10)
    axes[1].imshow(_hwc(frame), extent=(0, gw, gh, 0))
    im = axes[1].imshow(
        features.norm(dim=-1).view(gh, gw).detach().float().cpu().numpy(),
        alpha=0.65,
        extent=(0, gw, gh, 0),
        interpolation="nearest",
    )
    fig.colorbar(im, ax=axes[1], label="|feature|")
    axes[1].set_title("feature norm of each 28x28-px token", fontsize=10)
    axes[1].set_xlabel("merged w")
    axes[1].set_ylabel("merged h")
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class DemoInputs:
    """The photo and the clip that notebooks 02-04 feed the vision tower, at the run's dtype and device."""

    photo: Patches  # the photo: pixel_values (N, 1176), grid_thw, the resized frames
    video: Patches  # the sample clip, 8 frames
    pixels: torch.Tensor  # photo.pixel_values, at the run's dtype and device
    grid: torch.Tensor  # (1, 3) photo.grid_thw
    video_pixels: torch.Tensor
    video_grid: torch.Tensor
    frame: torch.Tensor  # the resized photo (3, H, W) uint8
    hw: tuple[int, int]  # the photo's (h, w) in patches


# Sizes that suit the checkpoint: the tiny twin runs the whole photo (600 x 512 px, 1512 patches) and the clip
# at its processor size in a moment; the real tower (32 blocks of width 1280) takes about 25 s per 1500 patches
# in float32 on a 2-core CPU, and these notebooks run it several times, so a real checkpoint gets smaller inputs.
REAL_PHOTO_MAX_PIXELS = 336 * 336  # the photo at 336 x 308 px: 24 x 22 patches
REAL_VIDEO_PIXELS = (56 * 56, 112 * 168)  # min, max per frame: the clip at 112 x 140 px, 8 x 10 patches
# Notebook 08 on a real checkpoint: the sample clip (336 x 252 px) at 224 x 168 px, a third of qwen-vl-utils' size.
# Its frame stays 8 merged tokens wide, more than the clip's t ids climb (s + 6), so the released position rule
# and transformers 5.x still agree after the video (notebook 06). REAL_VIDEO_PIXELS would not: 112 x 140 px,
# 5 tokens wide, the rules 2 ids apart.
REAL_CLIP_LIMITS = {"min_pixels": 56 * 56, "max_pixels": 168 * 224}  # keys of a chat message's video entry


def demo_inputs(path, settings) -> DemoInputs:
    """The photo and the sample clip through qwenlite's processor, sized for the checkpoint; prints their shapes."""
    from qwenlite.preprocessing import PreprocessorConfig, preprocess_image, preprocess_video
    from qwenlite.video_io import load_video

    from .. import checkpoint
    from . import data_dir

    twin = checkpoint.is_tiny_twin(path)
    config = PreprocessorConfig.from_pretrained(path)
    photo = preprocess_image(
        data_dir() / "grace_hopper.jpg", config, max_pixels=None if twin else REAL_PHOTO_MAX_PIXELS
    )
    frames = load_video(data_dir() / "sample_video.mp4", nframes=8)
    video = preprocess_video(frames, config) if twin else preprocess_video(frames, config, *REAL_VIDEO_PIXELS)
    inputs = DemoInputs(
        photo,
        video,
        settings.cast(photo.pixel_values),
        settings.put(photo.grid_thw[None]),
        settings.cast(video.pixel_values),
        settings.put(video.grid_thw[None]),
        photo.frames[0],
        tuple(int(v) for v in photo.grid_thw[1:]),
    )
    size = "full size (the tiny twin)" if twin else "shrunk for the real checkpoint's tower on a CPU"
    print(f"photo: pixel_values {tuple(inputs.pixels.shape)}, grid_thw {inputs.grid.tolist()} ({size})")
    print(f"video: pixel_values {tuple(inputs.video_pixels.shape)}, grid_thw {inputs.video_grid.tolist()}")
    return inputs
