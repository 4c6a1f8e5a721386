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
from matplotlib import patheffects
from matplotlib.colors import ListedColormap
from matplotlib.ticker import MaxNLocator

from qwenlite.config import VisionConfig
from qwenlite.preprocessing import Patches
from qwenlite.vision import VisionTransformer, segment_ids, vision_layout, vision_rotary_ids

from .preprocessing import _hwc

LABEL_BOX = {"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.5}


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


def draw_patches_and_embeddings(
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
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1, 1.4, 1]})
    axes[0].imshow(_hwc(frame))
    y, x = patch[0] * patch_size, patch[1] * patch_size
    # a thick box, plus a ring around it: a 14-px square is a few screen pixels of a projected slide
    axes[0].add_patch(plt.Rectangle((x, y), patch_size, patch_size, fill=False, color="red", lw=3))
    ring = 3 * patch_size
    axes[0].add_patch(plt.Circle((x + patch_size / 2, y + patch_size / 2), ring, fill=False, color="yellow", lw=2.5))
    # inset: the patch itself, enlarged
    inset = axes[0].inset_axes((0.62, 0.62, 0.36, 0.36))
    inset.imshow(_hwc(frame)[y : y + patch_size, x : x + patch_size], interpolation="nearest")
    inset.set_xticks([])
    inset.set_yticks([])
    for side in inset.spines.values():
        side.set_edgecolor("red")
        side.set_linewidth(3)
    inset.set_title("the patch, enlarged", fontsize=8, color="white", backgroundcolor="black", pad=2)
    axes[0].set_title(f"patch (h={patch[0]}, w={patch[1]}) = row {row} of pixel_values")
    axes[0].set_xlabel("x (px)")
    axes[0].set_ylabel("y (px)")
    axes[1].plot(pixel_values[row].numpy(), lw=0.6)
    planes = [f"{c} t{t}" for c in "RGB" for t in range(config.temporal_patch_size)]
    for b in range(1, len(planes)):
        axes[1].axvline(b * area, color="grey", lw=0.5)
    axes[1].set_xticks([area // 2 + area * i for i in range(len(planes))], planes)
    axes[1].set_title(f"its {pixel_values.shape[1]} numbers: (channel, frame, 14x14)")
    axes[1].set_xlabel(f"position in the {pixel_values.shape[1]}-vector (channel, frame blocks)")
    axes[1].set_ylabel("normalised value")
    axes[2].imshow(to_grid(rgb, grid_hw, config.spatial_merge_size).detach().float().cpu().numpy())
    axes[2].set_title(f"{embeddings.shape[1]}-dim embeddings, top-3 PCA as RGB")
    axes[2].set_xlabel("w (patches)")
    axes[2].set_ylabel("h (patches)")
    fig.tight_layout()
    return fig


def draw_temporal_kernel(weight: torch.Tensor, channel: int = 0):
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
    fig.colorbar(im, ax=axes, shrink=0.8, label="weight value")
    fig.suptitle(f"Conv3d kernel of output channel {channel}: 3 colours x 2 frames x 14 x 14")
    return fig


# ------------------------------------------------------------------ notebook 03: RoPE ids, windows, masks, attention


def draw_hw_ids(
    frame: torch.Tensor,
    grid_hw: tuple[int, int],
    vision_config: VisionConfig | None = None,
    zoom: tuple[int, int] = (4, 8),
):
    """The h and w rotary ids of every patch over the image, and, zoomed on the top-left `zoom` = (rows, columns)
    of patches, the order the processor emits them: each cell numbered with its row of pixel_values, 2x2 groups
    (one merged token each) in one colour, an arrow from each patch to the next."""
    config = _geometry(vision_config)
    h, w = grid_hw
    patch_size, merge_size = config.patch_size, config.spatial_merge_size
    ids = vision_rotary_ids(_one_frame(grid_hw), merge_size)
    order = to_grid(torch.arange(h * w), grid_hw, merge_size)  # (h, w): row of pixel_values of each patch
    zh, zw = min(zoom[0], h), min(zoom[1], w)
    ext = (0, w * patch_size, h * patch_size, 0)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4), gridspec_kw={"width_ratios": [1, 1, 1.5]})
    for ax, values, name in [(axes[0], ids[:, 0], "h"), (axes[1], ids[:, 1], "w")]:
        ax.imshow(_hwc(frame), extent=ext)
        im = ax.imshow(to_grid(values, grid_hw, merge_size).numpy(), cmap="viridis", alpha=0.65, extent=ext)
        fig.colorbar(im, ax=ax, shrink=0.75, label=f"{name} id (patches)")
        across = "row: grows downwards" if name == "h" else "column: grows to the right"
        ax.set_title(f"{name} id of each patch ({across})", fontsize=10)
        ax.add_patch(plt.Rectangle((0, 0), zw * patch_size, zh * patch_size, fill=False, color="red", lw=1.5, ls="--"))
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
    ax = axes[2]  # the zoom: a numbered grid, no photo, so every number is legible
    cmap = plt.get_cmap("tab10")
    group = (torch.arange(zh)[:, None] // merge_size) * -(-w // merge_size) + torch.arange(zw)[None] // merge_size
    for i in range(zh):
        for j in range(zw):
            ax.add_patch(plt.Rectangle((j, i), 1, 1, color=cmap(int(group[i, j]) % 10), alpha=0.4, lw=0))
            ax.text(j + 0.3, i + 0.3, int(order[i, j]), ha="center", va="center", fontsize=14, weight="bold")
    shown = sorted((int(order[i, j]), i, j) for i in range(zh) for j in range(zw))
    for (r0, i0, j0), (r1, i1, j1) in zip(shown, shown[1:], strict=False):
        if r1 == r0 + 1:  # consecutive rows of pixel_values, both inside the zoom
            ax.annotate(
                "",
                xy=(j1 + 0.5, i1 + 0.5),
                xytext=(j0 + 0.5, i0 + 0.5),
                arrowprops={"arrowstyle": "-|>", "color": "tab:red", "lw": 2.0, "shrinkA": 14, "shrinkB": 14},
            )
    for k in range(0, zw + 1, merge_size):
        ax.axvline(k, color="black", lw=1.5)
    for k in range(0, zh + 1, merge_size):
        ax.axhline(k, color="black", lw=1.5)
    ax.set_xlim(0, zw)
    ax.set_ylim(zh, 0)
    ax.set_aspect("equal")
    ax.set_xticks(np.arange(zw) + 0.5, range(zw), fontsize=12)
    ax.set_yticks(np.arange(zh) + 0.5, range(zh), fontsize=12)
    ax.set_xlabel("w id (patches)", fontsize=11)
    ax.set_ylabel("h id (patches)", fontsize=11)
    ax.set_title(
        f"zoom on the red {zh} x {zw} patches: each cell's row of pixel_values;\n"
        f"each {merge_size} x {merge_size} group (one merged token) is consecutive",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


def draw_rotary_pairs(rotary, steps: int = 16):
    """cos(theta) of every rotary pair as a patch walks down a column (h = 0..steps-1, w = 0) and along a row
    (h = 0, w = 0..steps-1): the first half of the pairs turns with h only, the second half with w only.

    rotary: the tower's rotary module (`tower.rotary_pos_emb`), (n, 2) long (h, w) ids -> cos, sin of (n, Dh).
    """
    walk = torch.arange(steps)
    zeros = torch.zeros_like(walk)
    walks = {"down a column: h = 0..{}, w = 0": (walk, zeros), "along a row: h = 0, w = 0..{}": (zeros, walk)}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True, layout="constrained")
    for ax, (title, (hh, ww)) in zip(axes, walks.items(), strict=True):
        cos, _ = rotary(torch.stack([hh, ww], -1))
        pairs = cos.shape[-1] // 2
        im = ax.imshow(
            cos[:, :pairs].detach().float().cpu().numpy().T,
            cmap="RdBu_r",
            vmin=-1,
            vmax=1,
            aspect="auto",
            interpolation="nearest",
            origin="lower",
        )
        ax.axhline(pairs / 2 - 0.5, color="black", lw=1.2, ls="--")
        ax.set_title(title.format(steps - 1), fontsize=10)
        ax.set_xlabel("step along the walk (patches)")
        for y, label in [(pairs / 4 - 0.5, "h pairs"), (3 * pairs / 4 - 0.5, "w pairs")]:
            ax.text(steps - 0.8, y, label, ha="right", va="center", fontsize=10, weight="bold", bbox=LABEL_BOX)
    axes[0].set_ylabel(f"rotary pair j (0..{pairs - 1})")
    fig.colorbar(im, ax=axes, shrink=0.9, label=r"$\cos\theta_j$")
    fig.suptitle("which pairs turn: pairs below the dashed line rotate with h, pairs above it with w", fontsize=11)
    return fig


def window_ids(grid_hw: tuple[int, int], vision_config: VisionConfig | None = None) -> torch.Tensor:
    """(h, w) map: which window each patch of one frame attends within, from the tower's own layout."""
    config = _geometry(vision_config)
    layout = vision_layout(_one_frame(grid_hw), config)
    window_of_patch = torch.empty_like(layout.patch_order)
    window_of_patch[layout.patch_order] = segment_ids(layout.cu_windows)  # tower position -> processor order
    return to_grid(window_of_patch, grid_hw, config.spatial_merge_size)


def draw_windows(frame: torch.Tensor, grid_hw: tuple[int, int], vision_config: VisionConfig | None = None):
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
    points = fig.get_figwidth() * 72 / w  # one patch's side in points, for label sizes
    for k in range(n):
        ys, xs = (wid == k).nonzero(as_tuple=True)
        cy, cx = (ys.float().mean() + 0.5) * patch_size, (xs.float().mean() + 0.5) * patch_size
        tile_h = (int(ys.max() - ys.min()) + 1) * points  # the window's height and width in points
        tile_w = (int(xs.max() - xs.min()) + 1) * points
        # two lines (number over patches) where the window is tall enough, else one line
        label = f"{k}\n{len(ys)}" if tile_h >= 2.6 * 12 else f"{k} ({len(ys)})"
        widest = max(len(part) for part in label.split("\n"))
        size = min(12.0, 0.9 * tile_w / (0.62 * widest), 0.75 * tile_h)
        text = ax.text(float(cx), float(cy), label, ha="center", va="center", fontsize=size, color="black")
        text.set_path_effects([patheffects.withStroke(linewidth=2.5, foreground="white")])  # legible on dark tiles
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


def draw_masks(grid_thw: torch.Tensor, vision_config: VisionConfig | None = None):
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
        ax.set_xlabel("key: patch index (window order)")
        ax.set_ylabel("query: patch index (window order)")
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


def draw_attention(
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


def draw_attention_maps(
    frame: torch.Tensor,
    maps: dict[int, torch.Tensor],
    grid_thw: torch.Tensor,
    head: int,
    patch: tuple[int, int],
    vision_config: VisionConfig | None = None,
):
    """One query patch's attention in several blocks, side by side on ONE shared logarithmic colour scale.

    maps: block index -> that block's (H, N, N) probabilities (`attention_probs`). A windowed block spreads the
    query's weight over at most 64 patches, a full-attention block over the whole frame, so their weights differ by
    about the ratio of those counts; a shared log scale keeps both readable and comparable. Each panel's title gives
    how many patches the query sees, the uniform weight 1 / that count, and its largest weight.
    """
    from matplotlib.colors import LogNorm

    config = _geometry(vision_config)
    patch_size = config.patch_size
    h, w = (int(v) for v in grid_thw[0, 1:])
    ext = (0, w * patch_size, h * patch_size, 0)
    amaps = {layer: attention_of_patch(p, grid_thw, head, patch, config).float() for layer, p in maps.items()}
    seen = [a[a > 0] for a in amaps.values()]
    top = max(float(s.max()) for s in seen)
    low = max(min(float(s.min()) for s in seen), top * 1e-3)  # at most 3 decades: fainter weights read as the floor
    norm = LogNorm(vmin=low, vmax=top)
    fig, axes = plt.subplots(
        1, len(amaps) + 1, figsize=(4.4 * (len(amaps) + 1) + 1, 4.4 * h / w + 0.9), layout="constrained"
    )
    axes[0].imshow(_hwc(frame), extent=ext)
    axes[0].add_patch(
        plt.Rectangle(
            (patch[1] * patch_size, patch[0] * patch_size), patch_size, patch_size, fill=False, color="cyan", lw=2
        )
    )
    axes[0].set_title(f"query patch (h={patch[0]}, w={patch[1]}), head {head}", fontsize=10)
    full = set(config.fullatt_block_indexes)
    for ax, (layer, amap) in zip(axes[1:], amaps.items(), strict=True):
        visible = int((amap > 0).sum())
        ax.imshow(_hwc(frame), extent=ext, alpha=0.35)
        shown = np.ma.masked_equal(amap.clamp(min=low).numpy() * (amap > 0).numpy(), 0)  # outside the segment: none
        im = ax.imshow(shown, cmap="magma", norm=norm, alpha=0.85, extent=ext, interpolation="nearest")
        ax.add_patch(
            plt.Rectangle(
                (patch[1] * patch_size, patch[0] * patch_size), patch_size, patch_size, fill=False, color="cyan", lw=1.5
            )
        )
        kind = "full attention" if layer in full else "windowed"
        ax.set_title(
            f"block {layer} ({kind}): sees {visible} patches\nuniform 1/{visible} = {1 / visible:.1e}, "
            f"max {float(amap.max()):.1e}",
            fontsize=10,
        )
    for ax in axes:
        ax.set_xlabel("x (px)")
    axes[0].set_ylabel("y (px)")
    bar = fig.colorbar(im, ax=list(axes[1:]), shrink=0.9)
    bar.set_label(f"attention weight (one log scale for {'both' if len(amaps) == 2 else 'all'} maps)")
    for amap in amaps.values():  # the uniform level of each panel, marked on the shared bar
        bar.ax.axhline(1 / int((amap > 0).sum()), color="cyan", lw=1.5)
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
        return draw_attention(frame, cache[layer], grid_thw, head, (row, col), layer, config)

    return live(
        draw,
        layer=widgets.Dropdown(options=layers, value=layers[-1], description="block"),
        head=widgets.IntSlider(0, 0, config.num_heads - 1, description="head"),
        row=widgets.IntSlider(h // 2, 0, h - 1, description="patch h"),
        col=widgets.IntSlider(w // 2, 0, w - 1, description="patch w"),
    )


# ------------------------------------------------------------------ notebook 04: the merger


def _white_label(ax, x: float, y: float, text: str, size: float) -> None:
    """Bold white text outlined in black, readable on any colour of a projected figure."""
    from matplotlib import patheffects

    outline = [patheffects.withStroke(linewidth=3, foreground="black")]
    ax.text(x, y, text, ha="center", va="center", fontsize=size, weight="bold", color="white", path_effects=outline)


def draw_merge_groups(
    frame: torch.Tensor, grid_hw: tuple[int, int], tokens: int = 6, vision_config: VisionConfig | None = None
):
    """The first few LLM tokens: each is 4 consecutive rows of pixel_values, a 2x2 block of patches (left), and
    after view(-1, 4D) one row of a (tokens, 4D) matrix whose 4 blocks of width D are those 4 patches (right)."""
    config = _geometry(vision_config)
    h, w = grid_hw
    patch_size, unit = config.patch_size, config.spatial_merge_size**2
    ids = vision_rotary_ids(_one_frame(grid_hw), config.spatial_merge_size)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1.25, 1]})
    crop_h, crop_w = min(h, 4), min(w, 2 * tokens + 2)
    axes[0].imshow(_hwc(frame)[: crop_h * patch_size, : crop_w * patch_size], extent=(0, crop_w, crop_h, 0))
    cmap = plt.get_cmap("tab10")
    for row in range(unit * tokens):
        y, x = (int(v) for v in ids[row])
        if y < crop_h and x < crop_w:
            axes[0].add_patch(plt.Rectangle((x, y), 1, 1, color=cmap(row // unit % 10), alpha=0.6))
            _white_label(axes[0], x + 0.5, y + 0.5, str(row), 13)
    for k in range(tokens):  # each token's 2x2 block framed
        y, x = (int(v) for v in ids[unit * k])
        if y < crop_h and x < crop_w:
            axes[0].add_patch(plt.Rectangle((x, y), 2, 2, fill=False, color="white", lw=2))
    axes[0].set_title("rows of pixel_values over the image: 4 rows = one 2 x 2 block = one token", fontsize=11)
    axes[0].set_xlabel("w (patches)")
    axes[0].set_ylabel("h (patches)")
    ax = axes[1]
    for k in range(tokens):
        for p in range(unit):
            ax.add_patch(plt.Rectangle((p, k), 1, 1, color=cmap(k % 10), alpha=0.9, ec="white", lw=3))
            _white_label(ax, p + 0.5, k + 0.5, f"row {unit * k + p}", 12)
    ax.set_xlim(0, unit)
    ax.set_ylim(tokens, 0)
    times_d = ["0", "D"] + [f"{p}D" for p in range(2, unit + 1)]  # 0, D, 2D, ...
    ax.set_xticks(np.arange(unit) + 0.5, [f"{times_d[p]} : {times_d[p + 1]}" for p in range(unit)])
    ax.set_yticks(np.arange(tokens) + 0.5, range(tokens))
    ax.set_xlabel(f"columns of the ({tokens}, 4D) matrix: 4 blocks of D = {config.hidden_size}")
    ax.set_ylabel("token k (raster order)")
    ax.set_title(
        "view(-1, 4D) on the processor's (raster) order: rows 4k .. 4k+3 -> token k\n"
        "(in the tower the window order of §3 moves these groups whole)",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


def draw_window_order(grid_hw: tuple[int, int], vision_config: VisionConfig | None = None):
    """Merged tokens in prompt (raster) order, the path the tower walks them in (window order), and window_index
    written out one window per row: tower position j holds token window_index[j]; argsort undoes it."""
    config = _geometry(vision_config)
    merge = config.spatial_merge_size
    layout = vision_layout(_one_frame(grid_hw), config)
    window_index = layout.window_index
    gh, gw = grid_hw[0] // merge, grid_hw[1] // merge
    windows = window_ids(grid_hw, config)[::merge, ::merge]  # (gh, gw): the window of each merged token
    n = int(windows.max()) + 1
    cmap = _tiles_cmap(n)
    lengths = (layout.cu_windows[1:] - layout.cu_windows[:-1]) // merge**2  # merged tokens per window
    widest = int(lengths.max())
    # two rows, so each panel is wide enough to read on a slide: the two grids on top, window_index below
    fig = plt.figure(figsize=(13, 4.3 + 0.45 * n + 0.9))
    grid = fig.add_gridspec(2, 2, height_ratios=[gh, n * 0.75])
    axes = [fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, :])]
    position = layout.restore.view(gh, gw)  # tower position of each token
    for ax, title in [
        (axes[0], "prompt order: token i (raster, row by row)"),
        (axes[1], "tower order: position j, arrows walk j = 0, 1, 2, ..."),
    ]:
        ax.imshow(windows.numpy(), cmap=cmap, vmin=-0.5, vmax=n - 0.5, alpha=0.55, interpolation="nearest")
        ax.set_xticks(range(gw))
        ax.set_yticks(range(gh))
        ax.set_title(title, fontsize=12)
        ax.set_xlabel("merged w (tokens)", fontsize=11)
        ax.set_ylabel("merged h (tokens)", fontsize=11)
    for i in range(gh):
        for j in range(gw):
            axes[0].text(j, i, int(i * gw + j), ha="center", va="center", fontsize=12)
            axes[1].text(j, i, int(position[i, j]), ha="center", va="center", fontsize=12, weight="bold")
    cells = [(int(t) // gw, int(t) % gw) for t in window_index]  # (row, col) of the token at each tower position
    for (i0, j0), (i1, j1) in zip(cells, cells[1:], strict=False):
        jump = windows[i0, j0] != windows[i1, j1]
        axes[1].annotate(
            "",
            xy=(j1, i1),
            xytext=(j0, i0),
            arrowprops={
                "arrowstyle": "->",
                "color": "tab:red" if jump else "0.3",
                "lw": 1.6 if jump else 1.0,
                "ls": "--" if jump else "-",
                "shrinkA": 9,
                "shrinkB": 9,
                "alpha": 0.8,
            },
        )
    ax = axes[2]
    for k in range(n):
        start = int(layout.cu_windows[k]) // merge**2
        for m in range(int(lengths[k])):
            ax.add_patch(plt.Rectangle((m, k), 1, 1, color=cmap(k), alpha=0.55, lw=0.5, ec="white"))
            ax.text(m + 0.5, k + 0.5, int(window_index[start + m]), ha="center", va="center", fontsize=12)
        ax.text(-0.3, k + 0.5, f"j = {start}", ha="right", va="center", fontsize=12)
    ax.set_xlim(-2.2, widest)
    ax.set_ylim(n, 0)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("window_index, one window per row: the token i at tower positions j, j + 1, ...", fontsize=12)
    fig.text(
        0.5,
        0.01,
        "tokens move window by window (red dashed arrows: next window); restore = argsort(window_index) "
        "puts every token back at its prompt position i",
        ha="center",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def draw_features(
    frame: torch.Tensor,
    features: torch.Tensor,
    grid_hw: tuple[int, int],
    vision_config: VisionConfig | None = None,
    token: tuple[int, int] | None = None,
):
    """What the language model receives for one image, one vector per 28x28-px token: the image cut into those
    tokens, the features' top-3 principal directions as RGB (similar vectors, similar colours), and the cosine
    similarity of every token to one query token (default: the centre of the image)."""
    merge = _geometry(vision_config).spatial_merge_size
    cell = _geometry(vision_config).patch_size * merge
    gh, gw = grid_hw[0] // merge, grid_hw[1] // merge
    token = token if token is not None else (gh // 2, gw // 2)
    f = features.detach().float().cpu()
    centred = f - f.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    rgb = centred @ v[:3].T
    rgb = ((rgb - rgb.min(0).values) / (rgb.max(0).values - rgb.min(0).values)).view(gh, gw, 3)
    unit = torch.nn.functional.normalize(f, dim=-1)
    cosine = (unit @ unit[token[0] * gw + token[1]]).view(gh, gw)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.6 * gh / gw + 0.6))
    axes[0].imshow(_hwc(frame), extent=(0, gw, gh, 0))
    for k in range(gw + 1):
        axes[0].axvline(k, color="white", lw=0.4)
    for k in range(gh + 1):
        axes[0].axhline(k, color="white", lw=0.4)
    axes[0].set_title(f"{gh} x {gw} = {gh * gw} tokens of {cell}x{cell} px", fontsize=10)
    axes[1].imshow(rgb.numpy(), extent=(0, gw, gh, 0), interpolation="nearest")
    axes[1].set_title(f"{f.shape[1]}-dim features, top-3 PCA as RGB", fontsize=10)
    im = axes[2].imshow(cosine.numpy(), extent=(0, gw, gh, 0), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=axes[2], shrink=0.8, label="cosine similarity")
    axes[2].set_title(f"similarity to token (h={token[0]}, w={token[1]}), boxed", fontsize=10)
    for ax in axes:
        ax.add_patch(plt.Rectangle((token[1], token[0]), 1, 1, fill=False, color="lime", lw=2))
        ax.set_xlabel("merged w (tokens)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("merged h (tokens)")
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
    size = "full size: the tiny twin" if twin else "shrunk for the real checkpoint's tower on a CPU"
    print(f"photo: pixel_values {tuple(inputs.pixels.shape)}, grid_thw {inputs.grid.tolist()} ({size})")
    print(f"video: pixel_values {tuple(inputs.video_pixels.shape)}, grid_thw {inputs.video_grid.tolist()}")
    return inputs
