"""Pictures and an explorer for notebook 01 (preprocessing): patch grids, one patch, a video's temporal patches."""

from __future__ import annotations

import json
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from qwenlite.grounding import parse_boxes, to_original, to_resized, to_thousandths
from qwenlite.preprocessing import (
    CLIP_MEAN,
    CLIP_STD,
    FACTOR,
    MAX_PIXELS,
    MERGE_SIZE,
    PATCH_SIZE,
    Patches,
    resize,
    smart_resize,
)
from qwenlite.video_io import Video

# the frame drawn around sampled frames inside the marker's seconds: cyan, so the clip's red marker stays visible
MARKER_FRAME_COLOUR = "#00d0ff"


def _hwc(frame: torch.Tensor) -> np.ndarray:
    """(3, H, W) uint8 tensor -> (H, W, 3) array for imshow."""
    return frame.permute(1, 2, 0).numpy()


TOKEN_LINE = {"color": "yellow", "lw": 0.8, "alpha": 0.75}  # every 28 px: one merged token, one LLM token
PATCH_LINE = {"color": "white", "lw": 0.7, "ls": ":", "alpha": 0.9}  # every 14 px: one patch


def _draw_grid_lines(
    ax, frame: torch.Tensor, patch: int = PATCH_SIZE, merge: int = MERGE_SIZE, title: str = ""
) -> None:
    """The resized image with thin dotted white lines every 14 px (patches) and thick yellow ones every 28 px
    (LLM tokens): two colours and two styles, so the two grids stay apart at any size."""
    h, w = frame.shape[-2:]
    ax.imshow(_hwc(frame), extent=(0, w, h, 0))
    for x in range(0, w + 1, patch):
        ax.axvline(x, **(TOKEN_LINE if x % (patch * merge) == 0 else PATCH_LINE))
    for y in range(0, h + 1, patch):
        ax.axhline(y, **(TOKEN_LINE if y % (patch * merge) == 0 else PATCH_LINE))
    ax.set_xlabel(f"width {w} px = {w // patch} patches")
    ax.set_ylabel(f"height {h} px = {h // patch} patches")
    ax.set_title(
        title or f"{h}x{w}: {h // patch}x{w // patch} patches -> {(h // patch) * (w // patch) // merge**2} tokens"
    )


def draw_patch_grid(frame: torch.Tensor, original: torch.Tensor | None = None, zoom: int | None = None):
    """Original next to resized-with-grid; `zoom` crops the top-left zoom x zoom pixels so lines stay visible."""
    panels = 2 if original is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 5.2), squeeze=False)
    if original is not None:
        axes[0, 0].imshow(_hwc(original))
        axes[0, 0].set_title(f"original {original.shape[1]}x{original.shape[2]} (H x W)")
        axes[0, 0].set_xlabel("x (px)")
        axes[0, 0].set_ylabel("y (px)")
    ax = axes[0, -1]
    _draw_grid_lines(ax, frame)
    if zoom:  # the labels describe the crop, not the whole image
        h, w = frame.shape[-2:]
        ax.set_xlim(0, zoom)
        ax.set_ylim(zoom, 0)
        shown = f"px shown = {zoom // PATCH_SIZE} patches = {zoom // FACTOR} tokens"
        ax.set_xlabel(f"x (px): {zoom} of {w} {shown}")
        ax.set_ylabel(f"y (px): {zoom} of {h} {shown}")
        for line in ax.lines:  # a few lines across the crop: draw them thicker
            line.set_linewidth(line.get_linewidth() * 2.5)
        ax.set_title(
            f"top-left {zoom}x{zoom} px of the {h}x{w} resized image\n"
            "(white dotted: 14 px patch, yellow: 28 px = 1 token)"
        )
    fig.tight_layout()
    return fig


def draw_patch(row: torch.Tensor, index: int, grid_thw: torch.Tensor, merge: int = MERGE_SIZE):
    """One 1176-vector as what it is: (C=3, Tp=2, 14, 14), drawn as its two 14x14 RGB frames (de-normalised)."""
    patch = row.view(3, 2, PATCH_SIZE, PATCH_SIZE)  # (C, Tp, P, P)
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1, 1)
    rgb = ((patch * std + mean).clamp(0, 1) * 255).round().byte()  # back to 0..255
    t, h, w = (int(v) for v in grid_thw)
    # where patch `index` sits: its 2x2 block, then its place inside the block (the reference order)
    block, inner = divmod(index % (h * w), merge * merge)
    row_pos = (block // (w // merge)) * merge + inner // merge
    col_pos = (block % (w // merge)) * merge + inner % merge
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4), gridspec_kw={"width_ratios": [1, 1, 1.6]})
    for k in range(2):
        axes[k].imshow(_hwc(rgb[:, k]), interpolation="nearest")
        axes[k].set_title(f"temporal slot {k}: (3, 14, 14)")
        axes[k].set_xticks([0, 13])
        axes[k].set_yticks([0, 13])
        axes[k].set_xlabel("x in the patch (px)")
        axes[k].set_ylabel("y (px)")
    axes[2].bar(range(row.numel()), row.numpy(), width=1.0, color="tab:gray")
    for c, name in enumerate("RGB"):
        axes[2].axvspan(c * 392, (c + 1) * 392, color="rgb"[c], alpha=0.08)
        axes[2].text(c * 392 + 196, 1.01, name, ha="center", va="bottom", transform=axes[2].get_xaxis_transform())
    axes[2].set_title(f"row {index} of pixel_values: 1176 numbers", pad=16)
    axes[2].set_xlabel("position in the row (C, Tp, 14, 14 flattened)")
    axes[2].set_ylabel("normalised value")
    fig.suptitle(f"patch {index}: grid row {row_pos}, column {col_pos} (t = {index // (h * w)})")
    fig.tight_layout()
    return fig


def draw_video_patches(video: Video, patches: Patches, marker_seconds: tuple[float, float] | None = None):
    """Sampled frames in columns of 2 (one temporal patch each), with frame numbers and timestamps."""
    tp = patches.frames.shape[0] // int(patches.grid_thw[0])
    grid_t = int(patches.grid_thw[0])
    fig, axes = plt.subplots(tp, grid_t, figsize=(2.6 * grid_t, 2.3 * tp + 0.6), squeeze=False)
    stamps = video.timestamps + [video.timestamps[-1]] * (patches.frames.shape[0] - len(video.timestamps))
    indices = video.indices + [video.indices[-1]] * (patches.frames.shape[0] - len(video.indices))
    for g in range(grid_t):
        start = g * patches.second_per_grid_t
        for k in range(tp):
            i = g * tp + k
            ax = axes[k, g]
            ax.imshow(_hwc(patches.frames[i]))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"frame {indices[i]}, at {stamps[i]:.3f} s", fontsize=9)
            marked = marker_seconds is not None and marker_seconds[0] <= stamps[i] < marker_seconds[1]
            if marked:
                for side in ax.spines.values():
                    side.set_edgecolor(MARKER_FRAME_COLOUR)
                    side.set_linewidth(4)
        axes[0, g].annotate(
            f"temporal patch {g}\n[{start:.2f}, {start + patches.second_per_grid_t:.2f}) s",
            xy=(0.5, 1.32),
            xycoords="axes fraction",
            ha="center",
            fontsize=10,
            weight="bold",
        )
    title = (
        f"{len(video.indices)} sampled frames at {video.sampled_fps:g} fps -> grid_t = {grid_t}, "
        f"second_per_grid_t = {patches.second_per_grid_t:g} s"
    )
    if marker_seconds is not None:
        title += f"; cyan frame: inside [{marker_seconds[0]:g}, {marker_seconds[1]:g}) s"
    fig.suptitle(title, y=1.02)
    fig.tight_layout()
    return fig


def resize_view(height: int, width: int, min_pixels: int, max_pixels: int) -> tuple[float, float]:
    """(height, width) in px that draw_resize shows: the input and the resized box, with a 5% margin.

    The view follows the boxes' own shape, so a 300x4000 panorama fills a wide panel instead of a square one.
    """
    rh, rw = smart_resize(height, width, FACTOR, min_pixels, max_pixels)
    return max(height, rh) * 1.05, max(width, rw) * 1.05


def draw_resize(height: int, width: int, min_pixels: int, max_pixels: int, ax=None) -> str:
    """The explorer's picture: the input box, the resized box with its 28-px token grid, and a one-line summary."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5))
    try:
        rh, rw = smart_resize(height, width, FACTOR, min_pixels, max_pixels)
    except ValueError as err:
        ax.text(0.5, 0.5, textwrap.fill(str(err), 40), ha="center", va="center", color="red", transform=ax.transAxes)
        ax.set_axis_off()
        return str(err)
    ax.add_patch(
        plt.Rectangle((0, 0), width, height, fill=False, ec="tab:blue", lw=2, ls="--", label=f"input {height}x{width}")
    )
    ax.add_patch(
        plt.Rectangle(
            (0, 0), rw, rh, fill=True, fc="tab:orange", alpha=0.15, ec="tab:orange", lw=2, label=f"resized {rh}x{rw}"
        )
    )
    if rh // FACTOR * rw // FACTOR <= 2500:  # draw the token grid while it stays readable
        for x in range(0, rw + 1, FACTOR):
            ax.plot([x, x], [0, rh], color="tab:orange", lw=0.5)
        for y in range(0, rh + 1, FACTOR):
            ax.plot([0, rw], [y, y], color="tab:orange", lw=0.5)
    view_h, view_w = resize_view(height, width, min_pixels, max_pixels)
    ax.set_xlim(0, view_w)
    ax.set_ylim(view_h, 0)
    ax.set_aspect("equal")  # 1 px across = 1 px down: shapes compare at a glance
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=10, title="H x W (px)")
    grid = (1, rh // PATCH_SIZE, rw // PATCH_SIZE)
    summary = (
        f"{height}x{width} -> {rh}x{rw}  |  grid_thw {grid}  |  {grid[1] * grid[2]} patches  |  "
        f"{grid[1] * grid[2] // 4} LLM tokens"
    )
    ax.set_title(
        f"{height}x{width} -> {rh}x{rw} (H x W)\ngrid_thw {grid}: {grid[1] * grid[2]} patches, "
        f"{grid[1] * grid[2] // 4} LLM tokens",
        fontsize=11,
    )
    return summary


def resize_explorer(height: int = 600, width: int = 512):
    """ipywidgets: image size and min/max pixels -> resized size, grid and token count, drawn live."""
    import ipywidgets as widgets

    from . import live

    def draw(height: int, width: int, min_tokens: int, max_tokens: int):
        try:  # a figure shaped like the view: a panorama gets a wide, short one
            view_h, view_w = resize_view(height, width, min_tokens * FACTOR**2, max_tokens * FACTOR**2)
            panel = min(max(6.0 * view_h / view_w, 1.2), 5.0)
        except ValueError:
            panel = 3.0
        fig, ax = plt.subplots(figsize=(8.5, panel + 1.5), layout="constrained")
        draw_resize(height, width, min_tokens * FACTOR**2, max_tokens * FACTOR**2, ax)
        return fig

    return live(
        draw,
        height=widgets.IntSlider(value=height, min=1, max=4000, step=1, description="height"),
        width=widgets.IntSlider(value=width, min=1, max=4000, step=1, description="width"),
        min_tokens=widgets.IntSlider(value=4, min=1, max=1024, description="min tokens"),
        max_tokens=widgets.IntSlider(value=1280, min=1, max=16384, description="max tokens"),
    )


def cost_rows(cost, configs: dict, dtype: torch.dtype = torch.bfloat16) -> list[tuple[str, str]]:
    """(what, how much) lines for one input's `costs.Cost`: sizes and counts, then memory for each named model."""
    from ..costs import memory

    t, h, w = cost.grid_thw
    rows = [
        (
            "resized (H x W)",
            f"{cost.height} x {cost.width} px" + (f", {cost.frames} frames" if cost.kind == "video" else ""),
        ),
        ("grid (t, h, w)", f"({t}, {h}, {w}) patches of 14 px"),
        ("patches (tower rows)", f"{cost.patches:,}"),
        ("windows (112 px)", f"{cost.windows:,}"),
        ("attention pairs / head / block", f"{cost.window_pairs:,} windowed, {cost.full_pairs:,} full"),
        ("LLM tokens for it", f"{cost.tokens:,}"),
    ]
    for name, config in configs.items():
        m = memory(cost, config, dtype)
        rows.append((f"{name}: KV cache (+128 new)", f"{m['kv_cache'] / 2**20:,.0f} MiB"))
        rows.append((f"{name}: at least, beside weights", f"{m['peak_floor'] / 2**20:,.0f} MiB"))
    scores = m["eager_scores"]
    size = f"{scores / 2**30:,.1f} GiB" if scores >= 2**30 else f"{scores / 2**20:,.0f} MiB"
    rows.append(("eager full-attention scores", f"{size} at once (SDPA: none)"))
    return rows


def draw_cost(cost, configs: dict, dtype: torch.dtype = torch.bfloat16, ax=None):
    """The rows of cost_rows as a table, one per line, readable on a projector."""
    rows = cost_rows(cost, configs, dtype)
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 0.42 * len(rows) + 0.8))
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=("", f"{cost.kind}, {str(dtype).replace('torch.', '')}"), loc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(11)
    table.scale(1, 1.5)
    for (row, col), cell in table.get_celld().items():
        cell.set_edgecolor("0.85")
        cell.set_text_props(ha="left" if col == 0 else "right", weight="bold" if row == 0 else "normal")
    return ax.figure


def cost_explorer(configs: dict, height: int = 1080, width: int = 1920):
    """ipywidgets: an image or video's size, pixel limit and length -> what it costs (costs.image_cost, video_cost)."""
    import ipywidgets as widgets

    from ..costs import image_cost, video_cost
    from . import live

    def draw(kind: str, height: int, width: int, max_tokens: int, seconds: float, fps: float):
        if kind == "image":
            cost = image_cost(height, width, max_pixels=max_tokens * FACTOR**2)
        else:
            cost = video_cost(height, width, seconds, fps=fps, max_pixels=max_tokens * FACTOR**2)
        return draw_cost(cost, configs)

    return live(
        draw,
        kind=widgets.ToggleButtons(options=["image", "video"], value="image", description="input"),
        height=widgets.IntSlider(value=height, min=28, max=4320, step=2, description="H (px)"),
        width=widgets.IntSlider(value=width, min=28, max=7680, step=2, description="W (px)"),
        max_tokens=widgets.IntSlider(value=16384, min=4, max=16384, description="max tokens"),
        seconds=widgets.FloatSlider(value=60.0, min=1.0, max=3600.0, step=1.0, description="video s"),
        fps=widgets.FloatSlider(value=2.0, min=0.5, max=8.0, step=0.5, description="sample fps"),
    )


def cost_curves(config, sides, max_pixels: int | None = None, dtype: torch.dtype = torch.bfloat16) -> dict:
    """What a square image of each side costs (costs.image_cost, costs.memory for `config`), as arrays.

    Keys: "side" (px, the input's), "tokens" (LLM tokens for it), "kv_cache" and "eager_scores" (bytes).
    """
    from ..costs import image_cost, memory

    rows = []
    for side in (int(s) for s in sides):
        cost = image_cost(side, side, max_pixels=max_pixels)
        m = memory(cost, config, dtype)
        rows.append((side, cost.tokens, m["kv_cache"], m["eager_scores"]))
    columns = np.array(rows, dtype=float).T
    return dict(zip(("side", "tokens", "kv_cache", "eager_scores"), columns, strict=True))


def draw_cost_curves(
    config,
    name: str = "3B",
    marks: dict | None = None,
    max_pixels: int | None = None,
    dtype: torch.dtype = torch.bfloat16,
):
    """Log-log: LLM tokens (left) and memory (right) of a square image against its side (notebook 10 section 1).

    config: the model's QwenLiteConfig; marks: {label: (H, W)} inputs drawn as points at the side of the square
    of the same area, sqrt(H W); max_pixels: the processor's limit (the hub's unless given), drawn as the side
    where the resize stops growing. Tokens and the KV cache grow with the area (slope 2 on log-log axes), the
    scores an eager full-attention block holds with its square (slope 4); both flatten past the limit.
    """
    from ..costs import image_cost, memory

    marks = marks or {}
    limit = max_pixels or MAX_PIXELS
    curves = cost_curves(config, np.geomspace(112, 8192, 80).round(), max_pixels, dtype)
    gb = 1e9
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2), layout="constrained")
    left.loglog(curves["side"], curves["tokens"], color="C0", lw=2.5, label="LLM tokens (~ area)")
    right.loglog(
        curves["side"], curves["kv_cache"] / gb, color="C0", lw=2.5, label=f"{name} KV cache (~ area, + the prompt)"
    )
    right.loglog(
        curves["side"], curves["eager_scores"] / gb, color="C3", lw=2.5, label="eager scores, one block (~ area$^2$)"
    )
    for level, what in ((16, "a 16 GB card"), (80, "an 80 GB card")):
        right.axhline(level, color="0.4", ls=":", lw=1.5)
        right.text(120, level * 1.15, what, fontsize=10, color="0.3", va="bottom")
    for (label, (h, w)), marker in zip(marks.items(), "osD^v", strict=False):
        cost = image_cost(h, w, max_pixels=max_pixels)
        m = memory(cost, config, dtype)
        side = (h * w) ** 0.5
        style = {"marker": marker, "ms": 9, "mec": "k", "ls": "none"}
        left.plot(side, cost.tokens, color="k", label=f"{label}: {cost.tokens:,} tokens", **style)
        right.plot(side, m["kv_cache"] / gb, color="C0", **style)
        scores = f"{label}: {m['eager_scores'] / gb:,.1f} GB of scores"
        right.plot(side, m["eager_scores"] / gb, color="C3", label=scores, **style)
    for ax in (left, right):
        ax.axvline(limit**0.5, color="0.5", ls="--", lw=1.2)
        ax.set_xlabel("side of a square image (px, before resizing; a mark: $\\sqrt{H W}$)")
        ax.grid(True, which="major", color="0.9")
    left.text(
        limit**0.5 * 0.95,
        curves["tokens"].max() * 0.06,
        f"max_pixels\n= {limit:,}",
        ha="right",
        fontsize=9,
        color="0.35",
    )
    left.set_ylabel("LLM tokens for the image")
    right.set_ylabel(f"GB (10$^9$ bytes), {str(dtype).replace('torch.', '')}")
    left.set_title("tokens: the area / 28$^2$", fontsize=12, loc="left")
    right.set_title(f"memory beside the weights, {name}", fontsize=12, loc="left")
    left.legend(loc="lower right", fontsize=10)
    right.legend(loc="lower right", fontsize=10)
    return fig


# the box drawn on the photo: yellow, visible on the pale face and on the dark jacket alike
BOX_COLOUR = "#ffd400"
MARGIN_GREY = "0.78"  # draw_box_frames: the part of a panel outside its picture


def draw_box_frames(image: torch.Tensor, box, resized_hw: tuple[int, int], label: str = ""):
    """One box in the three frames it is written in, side by side (notebook 10 section 2).

    image: (3, H, W) uint8; box: (x1, y1, x2, y2) in the image's pixels (top-left, then bottom-right corner);
    resized_hw: (H', W'), the size smart_resize makes of it (qwenlite.grounding.model_frame).
    Left: the original in its pixels. Middle: the resized image (the processor's bicubic resize) in its pixels,
    the frame Qwen2.5-VL writes boxes in; the first two panels share one pixel scale, so a smaller frame looks
    smaller. Right: the 0-1000 grid of each side that Qwen2-VL and Qwen3-VL write, on the undistorted photo.
    Each panel's rectangle is the box in that frame, from qwenlite.grounding (to_resized, to_thousandths).
    """
    h, w = (int(v) for v in image.shape[-2:])
    rh, rw = (int(v) for v in resized_hw)
    in_model = to_resized(box, (h, w), (rh, rw))
    grid = to_thousandths(box, (h, w))
    qwen2 = f"\n<|box_start|>({grid[0]},{grid[1]}),({grid[2]},{grid[3]})<|box_end|>"  # long: a line of its own
    panels = [  # (picture, extent, box in this frame, title, axis unit)
        (
            image,
            (0, w, h, 0),
            tuple(box),
            f"original, {h} x {w} px (H x W)\nthe box you measure: {tuple(box)}",
            "px of the original",
        ),
        (
            resize(image, rh, rw),
            (0, rw, rh, 0),
            in_model,
            f"resized by smart_resize, {rh} x {rw} px\nQwen2.5-VL writes {json.dumps({'bbox_2d': list(in_model)})}",
            "px of the resized image",
        ),
        (
            image,
            (0, 1000, 1000, 0),
            grid,
            f"0-1000 of each side\nQwen3-VL writes {json.dumps({'bbox_2d': list(grid)})}\nQwen2-VL writes {qwen2}",
            "thousandths of the side",
        ),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(16, 6.6), layout="constrained")
    for ax, (picture, extent, (x1, y1, x2, y2), title, unit) in zip(axes, panels, strict=True):
        ax.imshow(_hwc(picture), extent=extent)
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=BOX_COLOUR, lw=3))
        if label:
            ax.text(x1, y1, f" {label} ", va="bottom", fontsize=11, color="black", backgroundcolor=BOX_COLOUR)
        ax.set_title(title, fontsize=11, loc="left")
        ax.set_xlabel(f"x ({unit})")
        ax.set_ylabel(f"y ({unit})")
    for ax, (hh, ww) in zip(axes[:2], ((h, w), (rh, rw)), strict=True):
        # one pixel scale for both: the resized frame's true size beside the original's; grey has no pixels
        ax.set_facecolor(MARGIN_GREY)
        ax.set_xlim(0, max(w, rw))
        ax.set_ylim(max(h, rh), 0)
        if (hh, ww) != (max(h, rh), max(w, rw)):  # a margin shows: say what it is
            # an empty fill: drawn nowhere, but in this legend and in any legend a caller adds to the panel later
            ax.fill_between([], [], color=MARGIN_GREY, ec="0.45", label=f"outside this {hh} x {ww} px frame: no pixels")
            ax.legend(loc="lower right", fontsize=10, framealpha=0.95)
    axes[2].set_aspect(h / w)  # 1000 thousandths down are H px, 1000 across are W px: the photo keeps its shape
    axes[2].set_xticks(range(0, 1001, 250))
    axes[2].set_yticks(range(0, 1001, 250))
    return fig


def draw_points_back(originals: list[torch.Tensor], answers: list[str], frame_hw: tuple[int, int], truths) -> Figure:
    """A model's point answers carried back to the pictures it was given (notebook 10 section 2).

    originals: (3, H, W) uint8 pictures as sent; answers: the model's text, read with parse_boxes; frame_hw: the
    resized frame the processor made (qwenlite.grounding.model_frame) and the model answered in; truths: (x, y)
    of each object in the originals' pixels. Each panel is an original in its own pixels: + the object, a cyan x
    the answer converted with to_original (right), a red x the same numbers read as the original's pixels (the
    476-on-448 mistake).
    """
    fig, axes = plt.subplots(1, len(originals), figsize=(3.6 * len(originals), 4.0), squeeze=False)
    for ax, image, text, truth in zip(axes[0], originals, answers, truths, strict=True):
        h, w = (int(v) for v in image.shape[-2:])
        (found,) = parse_boxes(text)
        point = found["point_2d"]
        back = to_original(point, frame_hw, (h, w))
        ax.imshow(_hwc(image), extent=(0, w, h, 0))
        ax.plot(*truth, marker="+", color=BOX_COLOUR, ms=16, mew=2.5, ls="none", label="the shape's centre")
        ax.plot(*back, marker="x", color="cyan", ms=13, mew=3, ls="none", label="answer -> to_original")
        ax.plot(*point, marker="x", color="red", ms=13, mew=3, ls="none", label="answer read as these pixels")
        ax.set_title(
            f"answer {point} in the {frame_hw[0]} x {frame_hw[1]} frame\n-> ({back[0]:g}, {back[1]:g}) px here",
            fontsize=10,
        )
        ax.set_xlabel(f"x (px of the {h} x {w} original)")
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
    axes[0][0].set_ylabel("y (px)")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))  # the legend below the panels, off the pictures
    return fig
