"""Pictures and an explorer for 06_rope_index: t/h/w position ids drawn over an image and over video frames,
the three rows of ids along a whole prompt (and beside 1-D positions), qwenlite's rule beside transformers 5.x's,
and an ipywidgets explorer that rebuilds a prompt through the processor from image size, frame count, fps and
layout and redraws the ids.

Every function draws tensors handed to it (or computes them with qwenlite.get_rope_index) and returns a Figure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import transformers
from matplotlib import patheffects
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from qwenlite.config import QwenLiteConfig, VisionConfig
from qwenlite.preprocessing import preprocess_image, preprocess_video
from qwenlite.processor import Processor
from qwenlite.rope_index import get_rope_index
from qwenlite.tokens import IMAGE_PAD, VIDEO_PAD, VISION_END, VISION_START, token_kinds
from qwenlite.video_io import Video

from .decoder import AXIS_COLOURS  # t, h, w: one colour each in every figure
from .fusion import KIND_COLOURS


def _ids_over(ax, picture: np.ndarray, ids: np.ndarray, cmap: str, vmin: int, vmax: int) -> None:
    """A picture (h, w, 3) with one translucent cell per merged token, coloured and labelled by its id (gh, gw)."""
    gh, gw = ids.shape
    ax.imshow(picture, extent=(0, gw, gh, 0))
    ax.imshow(ids, cmap=cmap, vmin=vmin, vmax=max(vmax, vmin + 1), alpha=0.55, extent=(0, gw, gh, 0))
    for (r, c), v in np.ndenumerate(ids):
        ax.text(
            c + 0.5,
            r + 0.5,
            str(v),
            ha="center",
            va="center",
            fontsize=9 if gw <= 10 else 7,
            weight="bold",
            path_effects=[patheffects.withStroke(linewidth=2.5, foreground="white")],  # readable on dark cells too
        )
    ax.set_xticks(np.arange(gw + 1), [])
    ax.set_yticks(np.arange(gh + 1), [])
    ax.grid(color="white", linewidth=0.6)
    ax.tick_params(length=0)


def draw_image_ids(
    picture: np.ndarray,
    ids: torch.Tensor,
    grid_thw: Sequence[int],
    merge_size: int = VisionConfig.spatial_merge_size,
) -> Figure:
    """Three panels over the resized image: its t, h and w ids (3, N), one cell per merged token."""
    _, h, w = (int(v) for v in grid_thw)
    gh, gw = h // merge_size, w // merge_size
    grids = ids.reshape(3, gh, gw).numpy()
    lo, hi = int(grids.min()), int(grids.max())
    fig, axes = plt.subplots(1, 3, figsize=(13, 13 / 3 * gh / gw + 0.8))
    for ax, axis, grid, cmap in zip(axes, "thw", grids, ("Blues", "Oranges", "Greens"), strict=True):
        _ids_over(ax, picture, grid, cmap, lo, hi)
        ax.set_title(f"{axis} ids", fontsize=13, color=AXIS_COLOURS[axis])
    axes[0].set_ylabel(f"{gh} rows of merged tokens", fontsize=10)
    axes[1].set_xlabel(f"{gw} columns of merged tokens (one per 28x28 px)", fontsize=10)
    fig.tight_layout()
    return fig


def draw_video_ids(
    frames: np.ndarray,
    ids: torch.Tensor,
    grid_thw: Sequence[int],
    seconds: Sequence[float],
    merge_size: int = VisionConfig.spatial_merge_size,
    max_groups: int = 4,
) -> Figure:
    """A column per temporal group (its first frame, shown at `seconds`), rows t, h and w: only t changes in time.
    Every panel is the frame's grid of merged tokens, gh rows by gw columns, as the figure's axis labels say."""
    t, h, w = (int(v) for v in grid_thw)
    gh, gw = h // merge_size, w // merge_size
    grids = ids.reshape(3, t, gh, gw).numpy()
    lo, hi = int(grids.min()), int(grids.max())
    shown = min(t, max_groups)
    fig, axes = plt.subplots(3, shown, figsize=(3.3 * shown, 3 * 2.9 * gh / gw + 1.0), squeeze=False)
    for g in range(shown):
        for row, (axis, cmap) in enumerate(zip("thw", ("Blues", "Oranges", "Greens"), strict=True)):
            ax = axes[row, g]
            _ids_over(ax, frames[g], grids[row, g], cmap, lo, hi)
            if row == 0:
                ax.set_title(
                    f"temporal patch {g}: first frame at {seconds[g]:.2f} s\nt = {grids[0, g, 0, 0]}", fontsize=10
                )
            if g == 0:
                ax.set_ylabel(f"{axis} ids", fontsize=13, color=AXIS_COLOURS[axis])
    fig.supxlabel(f"each panel: {gw} columns of merged tokens (one per 28x28 px)", fontsize=10)
    fig.supylabel(f"each panel: {gh} rows of merged tokens", fontsize=10)
    fig.tight_layout()
    return fig


def _shade_spans(ax, kinds: Sequence[str], label: bool = True) -> None:
    k = 0
    while k < len(kinds):
        if kinds[k] in ("image", "video"):
            j = k
            while j < len(kinds) and kinds[j] == kinds[k]:
                j += 1
            ax.axvspan(k - 0.5, j - 0.5, color=KIND_COLOURS[kinds[k]], alpha=0.18, linewidth=0)
            if label:
                ax.text(
                    (k + j) / 2,
                    0.98,
                    kinds[k],
                    transform=ax.get_xaxis_transform(),
                    ha="center",
                    va="top",
                    fontsize=10,
                    color=KIND_COLOURS[kinds[k]],
                    clip_on=True,
                )
            k = j
        else:
            k += 1


def draw_sequence(
    positions: torch.Tensor,
    input_ids: torch.Tensor,
    config: QwenLiteConfig,
    title: str = "",
    ax=None,
) -> Figure:
    """The three rows (t, h, w) of one prompt's (3, L) ids against the token index, vision spans shaded."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(13, 3.6))
    x = np.arange(positions.shape[-1])
    for axis, row, marker in zip("thw", positions, ("o", "s", "^"), strict=True):
        ax.plot(x, row.numpy(), marker, ms=3.2, color=AXIS_COLOURS[axis], label=axis, alpha=0.85)
    _shade_spans(ax, token_kinds(input_ids.tolist(), config))
    ax.set_xlabel("token index in the prompt", fontsize=11)
    ax.set_ylabel("position id", fontsize=11)
    ax.legend(loc="center left", fontsize=10, markerscale=2)
    ax.set_title(title, fontsize=12, loc="left")
    ax.grid(alpha=0.3)
    if fig is not None:
        fig.tight_layout()
    return ax.figure


def draw_id_budget(positions: torch.Tensor, input_ids: torch.Tensor, config: QwenLiteConfig, title: str = "") -> Figure:
    """One prompt's t, h, w ids (as draw_sequence) beside the 1-D rule, a dashed line id = token index (what a
    text-only model would give the same tokens); the last token's id under each rule is labelled."""
    fig = draw_sequence(positions, input_ids, config, title)
    ax = fig.axes[0]
    last = positions.shape[-1] - 1
    ax.plot([0, last], [0, last], "--", color="grey", lw=1.3, label="1-D: id = token index")
    m = int(positions[:, last].max())
    for y, text, colour in ((last, f"1-D: {last}", "dimgrey"), (m, f"M-RoPE: {m}", AXIS_COLOURS["t"])):
        ax.annotate(text, (last, y), xytext=(-8, 8), textcoords="offset points", ha="right", fontsize=11, color=colour)
    ax.set_ylim(top=1.15 * last + 2)  # room for the 1-D label
    ax.legend(loc="center left", fontsize=10, markerscale=2)
    return fig


def draw_rules_side_by_side(
    ours: torch.Tensor, theirs: torch.Tensor, input_ids: torch.Tensor, config: QwenLiteConfig
) -> Figure:
    """qwenlite (released rule) and transformers 5.x on the same (3, L) prompt, ours − theirs below them, and,
    on the right, a zoom on the first token where they part (the t row of both, the video's largest t dashed)."""
    diff = (ours - theirs).numpy()
    parted = np.flatnonzero(diff.any(0))
    fig = plt.figure(figsize=(15, 8.5))
    grid = fig.add_gridspec(3, 2, width_ratios=[2.2, 1], height_ratios=[1, 1, 0.6])
    top = fig.add_subplot(grid[0, 0])
    middle = fig.add_subplot(grid[1, 0], sharex=top, sharey=top)
    bottom = fig.add_subplot(grid[2, 0], sharex=top)
    draw_sequence(
        ours, input_ids, config, "qwenlite = released rule: text after a span starts at max so far + 1", ax=top
    )
    theirs_name = f"transformers {transformers.__version__}"
    rule = f"{theirs_name}: text after a span starts at start + max(h, w)/2"
    draw_sequence(theirs, input_ids, config, rule, ax=middle)
    for ax in (top, middle):
        ax.set_xlabel("")
    for axis, row in zip("thw", diff, strict=True):
        bottom.step(np.arange(len(row)), row, where="mid", color=AXIS_COLOURS[axis], label=axis, alpha=0.8)
    _shade_spans(bottom, token_kinds(input_ids.tolist(), config))
    bottom.set_ylabel("ours − theirs", fontsize=11)
    bottom.set_xlabel("token index in the prompt", fontsize=11)
    bottom.set_ylim(-0.5, max(int(diff.max()), 1) + 0.8)
    bottom.grid(alpha=0.3)
    if len(parted):
        zoom = fig.add_subplot(grid[:, 1])
        first = int(parted[0])
        lo, hi = max(first - 14, 0), min(first + 8, ours.shape[1])
        x = np.arange(lo, hi)
        _shade_spans(zoom, token_kinds(input_ids.tolist(), config), label=False)
        zoom.plot(x, ours[0, lo:hi].numpy(), "o", ms=8, color=AXIS_COLOURS["t"], label="t, qwenlite")
        zoom.plot(
            x, theirs[0, lo:hi].numpy(), "o", ms=11, mfc="none", mec="crimson", mew=1.6, label=f"t, {theirs_name}"
        )
        top_t = int(ours[0, :first].max())
        zoom.axhline(top_t, ls="--", color="grey")
        zoom.annotate(
            f"largest id before: {top_t}",
            (first - 0.5, top_t),
            xytext=(-4, -10),
            textcoords="offset points",
            fontsize=10,
            color="dimgrey",
            ha="right",
            va="top",
        )
        zoom.annotate(
            f"qwenlite: {int(ours[0, first])}",
            (first, int(ours[0, first])),
            xytext=(-12, 6),
            textcoords="offset points",
            fontsize=11,
            color=AXIS_COLOURS["t"],
            weight="bold",
            ha="right",
        )
        zoom.annotate(
            f"transformers: {int(theirs[0, first])}",
            (first, int(theirs[0, first])),
            xytext=(-12, -6),
            textcoords="offset points",
            fontsize=11,
            color="crimson",
            weight="bold",
            ha="right",
            va="top",
        )
        zoom.set_xlim(lo - 0.5, hi - 0.5)
        zoom.xaxis.set_major_locator(MaxNLocator(integer=True))
        zoom.yaxis.set_major_locator(MaxNLocator(integer=True))
        zoom.set_title(f"zoom: first token after the video (index {first})", fontsize=12, loc="left")
        zoom.set_xlabel("token index in the prompt", fontsize=11)
        zoom.set_ylabel("t id", fontsize=11)
        zoom.legend(loc="upper left", fontsize=10)
        zoom.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- explorer

LAYOUTS = {
    "text image text video text": ["text", "image", "text", "video", "text"],
    "video text": ["video", "text"],
    "image image text": ["image", "image", "text"],
    "text video image text": ["text", "video", "image", "text"],
}


def build_layout(
    layout: Sequence[str],
    processor: Processor,
    image_hw: tuple[int, int] = (224, 308),
    frames: int = 8,
    fps: float = 2.0,
    frame_hw: tuple[int, int] = (112, 168),
    text_len: int = 3,
) -> dict[str, Any]:
    """A prompt with the given items, built by the processor itself from blank pixels of the chosen sizes:
    the prompt text, and the processor's input_ids, image_grid_thw, video_grid_thw, second_per_grid_ts.

    Images are resized by smart_resize and videos get second_per_grid_t = temporal_patch_size / fps, both
    inside preprocess_image / preprocess_video; the processor then expands each pad to its token count. Frames
    use the image limits of the checkpoint's preprocessor_config (not qwen-vl-utils' larger video minimum), so
    the frames keep about the size asked for. A text item is `text_len` tokens ("x x x").
    """
    limits = {"min_pixels": processor.config.min_pixels, "max_pixels": processor.config.max_pixels}
    image = preprocess_image(np.zeros((*image_hw, 3), dtype=np.uint8), processor.config)
    blank = torch.zeros(frames, 3, *frame_hw, dtype=torch.uint8)
    video = preprocess_video(Video(blank, list(range(frames)), fps, frames, "blank"), processor.config, **limits)
    pieces = {
        "text": " ".join(["x"] * text_len),
        "image": VISION_START + IMAGE_PAD + VISION_END,  # what the chat template writes for an image item
        "video": VISION_START + VIDEO_PAD + VISION_END,
    }
    text = "".join(pieces[item] for item in layout)
    inputs = processor(
        text=text,
        images=[image] * layout.count("image"),
        videos=[video] * layout.count("video"),
    )
    keys = ("input_ids", "image_grid_thw", "video_grid_thw", "second_per_grid_ts")
    return {"text": text} | {key: inputs[key] for key in keys if key in inputs}


def draw_layout(
    processor: Processor,
    config: QwenLiteConfig,
    layout: str = "text image text video text",
    image_width: int = 308,
    image_height: int = 224,
    frames: int = 8,
    fps: float = 2.0,
    reference: Callable | None = None,
) -> Figure:
    """Rebuild a prompt and draw its ids; with `reference` (transformers' get_rope_index on the same ids),
    draw both rules side by side."""
    inputs = build_layout(LAYOUTS.get(layout, layout.split()), processor, (image_height, image_width), frames, fps)
    inputs.pop("text")
    inputs.setdefault("image_grid_thw", None)
    inputs.setdefault("video_grid_thw", None)
    ours, deltas = get_rope_index(**inputs, config=config)
    if reference is None:
        fig = draw_sequence(ours[:, 0], inputs["input_ids"][0], config)
    else:
        theirs, _ = reference(**inputs)
        fig = draw_rules_side_by_side(ours[:, 0], theirs[:, 0], inputs["input_ids"][0], config)
    grids = []
    if inputs["image_grid_thw"] is not None:
        grids.append(f"image grid {inputs['image_grid_thw'][0].tolist()}")
    if inputs["video_grid_thw"] is not None:
        seconds = float(inputs["second_per_grid_ts"][0])
        grids.append(f"video grid {inputs['video_grid_thw'][0].tolist()}, {seconds:.2f} s per group")
    fig.suptitle(
        f"{layout}: {', '.join(grids)}; L = {inputs['input_ids'].shape[1]}, rope_deltas = {int(deltas)}",
        fontsize=12,
        x=0.01,
        ha="left",
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def layout_explorer(processor: Processor, config: QwenLiteConfig, reference: Callable | None = None):
    """ipywidgets sliders for image size, frame count, fps and layout; redraws draw_layout live."""
    import ipywidgets as widgets

    from . import live

    def draw(layout: str, image_width: int, image_height: int, frames: int, fps: float):
        return draw_layout(processor, config, layout, image_width, image_height, frames, fps, reference)

    factor = processor.config.factor  # sizes the processor keeps as they are
    return live(
        draw,
        layout=widgets.Dropdown(options=list(LAYOUTS), description="layout"),
        image_height=widgets.IntSlider(  # H x W: height first
            value=224, min=2 * factor, max=24 * factor, step=factor, description="image h px"
        ),
        image_width=widgets.IntSlider(
            value=308, min=2 * factor, max=24 * factor, step=factor, description="image w px"
        ),
        frames=widgets.IntSlider(value=8, min=2, max=32, step=2, description="frames"),
        fps=widgets.FloatSlider(value=2.0, min=0.5, max=8.0, step=0.5, description="fps"),
    )
