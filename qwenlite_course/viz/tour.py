"""Pictures for the tour notebook (00_tour): the pipeline at a glance, the photo's patch grid, the
prompt's tokens with their 3-D positions, and where the parameters of the 3B and 7B models live.

Every function takes measured tensors or counts and returns a matplotlib Figure; nothing here computes
a result that a check relies on, except `parameter_split`, which groups any model's parameters by name.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch
from PIL import Image
from torch import nn

from qwenlite.config import VisionConfig
from qwenlite.tokens import token_kinds
from qwenlite.weights import to_hub_key

from . import drawable
from .decoder import AXIS_COLOURS  # t, h, w: one colour each in every figure
from .fusion import KIND_COLOURS

# stage -> (box title, notebook that rebuilds it, (column, row) in the diagram, lane)
STAGES: dict[str, tuple[str, str, tuple[float, float], str]] = {
    "photo": ("image or video file", "", (0, 2), "image"),
    "pixel_values": ("processor: pixels", "01_preprocessing", (1, 2), "image"),
    "patch_embed": ("patch embed", "02_patch_embed", (2, 2), "image"),
    "blocks": ("vision blocks", "03_vision_block", (3, 2), "image"),
    "merger": ("patch merger", "04_merger", (4, 2), "image"),
    "chat": ("chat message", "", (0, 1), "text"),
    "input_ids": ("processor: tokens", "01_preprocessing", (1, 1), "text"),
    "embed_tokens": ("embed_tokens", "05_token_fusion", (2, 1), "text"),
    "fusion": ("token fusion", "05_token_fusion", (4, 1), "lm"),
    "rope_index": ("get_rope_index", "06_rope_index", (2, 0), "lm"),
    "decoder": ("decoder + lm_head", "07_decoder_generation", (4, 0), "lm"),
    "generate": ("generate (KV cache)", "07_decoder_generation", (5, 0), "lm"),
    "text": ("answer text", "", (5, 1), "lm"),
}
ARROWS: list[tuple[str, str, str]] = [
    ("photo", "pixel_values", ""),
    ("pixel_values", "patch_embed", ""),
    ("patch_embed", "blocks", ""),
    ("blocks", "merger", ""),
    ("chat", "input_ids", ""),
    ("input_ids", "embed_tokens", ""),
    ("embed_tokens", "fusion", "text rows"),
    ("merger", "fusion", "vision rows"),
    ("input_ids", "rope_index", "ids + grid_thw"),
    ("rope_index", "decoder", "position_ids"),
    ("fusion", "decoder", "inputs_embeds"),
    ("decoder", "generate", ""),
    ("generate", "text", ""),
]
NOTEBOOK_VERBS = {  # else: rebuilds
    "08_video_end_to_end": "runs",
    "09_training": "trains through",
    "10_costs_and_boxes": "reads sizes and answers from",
    "11_appendix": "tells the history of",
}
LANE_COLOURS = {"image": "#dbe9f6", "text": "#fde6cf", "lm": "#dcefd9"}
PART_COLOURS = {
    "vision tower": "#4c78a8",
    "merger": "#9ecae9",
    "embeddings": "#f58518",
    "decoder layers": "#54a24b",
    "lm_head": "#e45756",
}


# notebooks that are not one box: the stages they walk through
NOTEBOOK_STAGES = {
    "00_tour": tuple(STAGES),
    "08_video_end_to_end": tuple(STAGES),  # the whole pass again, for a video file
    "09_training": ("patch_embed", "blocks", "merger", "fusion", "decoder", "text"),  # trained: all but embed_tokens
    "10_costs_and_boxes": ("pixel_values", "blocks", "generate", "text"),  # tokens, windows and cache; answers
    "11_appendix": ("input_ids", "rope_index", "decoder"),  # key maps, position ids and their history
}


def stages_of(notebook: str) -> tuple[str, ...]:
    """The diagram's boxes that a notebook rebuilds (by the notebook names in STAGES, or NOTEBOOK_STAGES)."""
    found = NOTEBOOK_STAGES.get(notebook) or tuple(s for s, (_, nb, _, _) in STAGES.items() if nb == notebook)
    if not found:
        known = sorted({nb for _, nb, _, _ in STAGES.values() if nb} | set(NOTEBOOK_STAGES))
        raise ValueError(f"no stage of the diagram belongs to notebook {notebook!r}; known: {known}")
    return found


def draw_journey(
    shapes: Mapping[str, str] | None = None,
    title: str = "From file to text: one pass through Qwen2.5-VL",
    highlight: str | None = None,
) -> Figure:
    """Boxes and arrows of the pipeline; `shapes[stage]` is the text under each box title (measured shapes).

    highlight: a notebook name ("03_vision_block"): its boxes get a thick purple edge, the others fade, so each
    notebook opens with this same map and where it stands on it.
    """
    shapes = shapes or {}
    lit = set(stages_of(highlight)) if highlight else set(STAGES)
    fig, ax = plt.subplots(figsize=(15, 6.4))
    w, h = 0.84, 0.62
    for stage, (label, notebook, (x, y), lane) in STAGES.items():
        on = stage in lit
        edge = ("#7b3294", 3.2) if highlight and on else ("0.3", 1.2)
        ax.add_patch(
            FancyBboxPatch(
                (x - w / 2, y - h / 2),
                w,
                h,
                boxstyle="round,pad=0.02",
                fc=LANE_COLOURS[lane],
                ec=edge[0],
                lw=edge[1],
                alpha=1.0 if on else 0.3,
            )
        )
        ink = 1.0 if on else 0.35
        ax.text(x, y + 0.19, label, ha="center", va="center", fontsize=11.5, weight="bold", alpha=ink)
        shown = drawable(shapes.get(stage, ""))  # a shape, or the model's own text (the answer box)
        ax.text(x, y - 0.02, shown, ha="center", va="center", fontsize=10, family="monospace")
        if notebook:
            ax.text(
                x,
                y - 0.23,
                notebook,
                ha="center",
                va="center",
                fontsize=9.5,
                color="#7b3294",
                style="italic",
                alpha=ink,
            )
    for a, b, label in ARROWS:
        (xa, ya), (xb, yb) = STAGES[a][2], STAGES[b][2]
        start, end = _box_edge((xa, ya), (xb, yb), w, h), _box_edge((xb, yb), (xa, ya), w, h)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=16, lw=1.4, color="0.25"))
        if label:
            mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
            diagonal = xa != xb and ya != yb
            ha = "right" if diagonal else "left" if xa == xb else "center"
            ax.text(
                mx + (-0.06 if diagonal else 0.03),
                my + (-0.04 if diagonal else 0.05),
                label,
                fontsize=9.5,
                color="0.2",
                ha=ha,
            )
    handles = [
        Patch(fc=LANE_COLOURS["image"], ec="0.3", label="vision side"),
        Patch(fc=LANE_COLOURS["text"], ec="0.3", label="text side"),
        Patch(fc=LANE_COLOURS["lm"], ec="0.3", label="language model"),
    ]
    ax.legend(handles=handles, loc="lower left", fontsize=10, frameon=False, title="purple: notebook that rebuilds it")
    ax.set_xlim(-0.5, 5.5)
    ax.set_ylim(-0.45, 2.45)
    ax.set_aspect("auto")
    ax.axis("off")
    framed = "box" if len(lit) == 1 else "boxes"
    verb = NOTEBOOK_VERBS.get(highlight or "", "rebuilds")
    ax.set_title(title if not highlight else f"{title}: {highlight} {verb} the framed {framed}", fontsize=14)
    fig.tight_layout()
    return fig


def _box_edge(a: tuple[float, float], b: tuple[float, float], w: float, h: float) -> tuple[float, float]:
    """Where the segment from box centre a towards b leaves box a."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    scale = min(
        (w / 2 + 0.03) / abs(dx) if dx else np.inf,
        (h / 2 + 0.03) / abs(dy) if dy else np.inf,
    )
    return a[0] + dx * scale, a[1] + dy * scale


def draw_photo_patch_grid(
    image: Image.Image,
    grid_thw: torch.Tensor,
    patch_size: int = VisionConfig.patch_size,
    merge_size: int = VisionConfig.spatial_merge_size,
) -> Figure:
    """The photo as the model sees it: resized to the processor's grid, 14-px patches, 28-px merged tokens."""
    _, gh, gw = (int(v) for v in grid_thw)
    height, width = gh * patch_size, gw * patch_size
    resized = image.convert("RGB").resize((width, height), Image.BICUBIC)  # display only: the processor resizes too
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.6))
    axes[0].imshow(image)
    axes[0].set_title(f"file: {image.height} x {image.width} (H x W)", fontsize=12)
    axes[1].imshow(resized)
    for x in range(0, width + 1, patch_size):
        axes[1].axvline(x - 0.5, color="white", lw=0.4, alpha=0.7)
    for y in range(0, height + 1, patch_size):
        axes[1].axhline(y - 0.5, color="white", lw=0.4, alpha=0.7)
    step = patch_size * merge_size
    for x in range(0, width + 1, step):
        axes[1].axvline(x - 0.5, color="yellow", lw=1.0)
    for y in range(0, height + 1, step):
        axes[1].axhline(y - 0.5, color="yellow", lw=1.0)
    axes[1].set_title(
        f"resized {height} x {width} (H x W): {gh} rows x {gw} cols = {gh * gw} patches of {patch_size} px\n"
        f"yellow: {gh // merge_size} x {gw // merge_size} = {gh * gw // merge_size**2} merged tokens of {step} px",
        fontsize=11,
    )
    for ax in axes:
        ax.set_xlabel("x (pixels)")
        ax.set_ylabel("y (pixels)")
    fig.tight_layout()
    return fig


def draw_tokens_and_positions(input_ids: torch.Tensor, position_ids: torch.Tensor, config) -> Figure:
    """Top: one row of the prompt, coloured by token kind (`tokens.token_kinds`, as in notebook 05's strips).
    Bottom: its t, h, w position ids against token index."""
    ids = input_ids.reshape(-1)
    kinds = token_kinds(ids.tolist(), config)
    names = list(KIND_COLOURS)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(12, 5.8), sharex=True, gridspec_kw={"height_ratios": [1, 5]}, constrained_layout=True
    )
    cmap = ListedColormap([KIND_COLOURS[n] for n in names])
    codes = np.array([names.index(k) for k in kinds])
    top.imshow(codes[None], aspect="auto", cmap=cmap, vmin=0, vmax=len(names) - 1, interpolation="nearest")
    top.set_yticks([])
    counts = ", ".join(f"{kinds.count(n)} {n}" for n in names if n in kinds)
    top.set_title(f"{len(ids)} prompt tokens: {counts}", fontsize=12)
    meaning = {"chat": "chat: <|im_start|>, <|im_end|>", "vision": "vision: <|vision_start|>, <|vision_end|>"}
    meaning |= {"image": "image: <|image_pad|>", "video": "video: <|video_pad|>", "text": "text: words"}
    handles = [Patch(color=KIND_COLOURS[n], label=meaning.get(n, n)) for n in names if n in kinds]
    top.legend(handles=handles, fontsize=9, loc="center left", bbox_to_anchor=(1.005, 0.5), frameon=False)
    pos = position_ids.reshape(3, -1).numpy()
    for row, axis, name in zip(pos, "thw", ("t (time)", "h (row)", "w (column)"), strict=True):
        bottom.plot(row, color=AXIS_COLOURS[axis], lw=1.4, label=name)  # t, h, w as in every figure
    top_id = int(pos.max())
    bottom.annotate(
        f"last id {top_id} < {len(ids)} tokens:\nrope_deltas = {top_id} + 1 - {len(ids)} = {top_id + 1 - len(ids)}",
        xy=(len(ids) - 1, top_id),
        xytext=(0.62, 0.18),
        textcoords="axes fraction",
        fontsize=11,
        arrowprops={"arrowstyle": "->", "color": "0.3"},
    )
    bottom.set_xlabel("token index in the prompt")
    bottom.set_ylabel("position id")
    bottom.legend(fontsize=11, loc="upper left")
    bottom.grid(alpha=0.3)
    bottom.set_title(
        "M-RoPE ids: text counts up on all three axes; inside the image t is constant, h steps per row, "
        "w sweeps each row",
        fontsize=11,
    )
    return fig


def parameter_split(model: nn.Module) -> dict[str, int]:
    """Parameters by part, grouped by hub key names (works for QwenLiteVL and transformers' model alike).

    A tied lm_head is one tensor with embed_tokens, so `named_parameters()` lists it once and it counts 0 here.
    """
    parts = dict.fromkeys(PART_COLOURS, 0)
    for name, p in model.named_parameters():
        key = to_hub_key(name)
        if key.startswith("visual.merger."):
            part = "merger"
        elif key.startswith("visual."):
            part = "vision tower"
        elif key.startswith("model.embed_tokens."):
            part = "embeddings"
        elif key.startswith(("model.layers.", "model.norm.")):
            part = "decoder layers"
        elif key.startswith("lm_head."):
            part = "lm_head"
        else:
            raise KeyError(f"parameter {name} ({key}) belongs to no known part")
        parts[part] += p.numel()
    return parts


def draw_parameter_bars(splits: Mapping[str, Mapping[str, int]]) -> Figure:
    """One horizontal stacked bar per model, segments = parts, in billions of parameters."""
    fig, ax = plt.subplots(figsize=(11, 1.2 + 1.1 * len(splits)))
    names = list(splits)
    largest = {part: max(s.get(part, 0) for s in splits.values()) / 1e9 for part in PART_COLOURS}
    for i, name in enumerate(names):
        left = 0.0
        for part, colour in PART_COLOURS.items():
            n = splits[name].get(part, 0) / 1e9
            thin = f"{part} (under 0.1 B: too thin to see)" if largest[part] < 0.1 else part  # in every model
            ax.barh(i, n, left=left, color=colour, edgecolor="white", label=thin if i == 0 else None)
            if n > 0.4:  # a label fits in the segment
                ax.text(left + n / 2, i, f"{n:.2f}", ha="center", va="center", fontsize=10.5, color="white")
            left += n
        tied = " (lm_head tied to embeddings)" if splits[name].get("lm_head", 0) == 0 else ""
        ax.text(left + 0.05, i, f"{left:.3f} B{tied}", va="center", fontsize=11)
    ax.set_yticks(range(len(names)), names, fontsize=12)
    ax.invert_yaxis()
    ax.set_xlabel("parameters (billions)")
    ax.set_xlim(0, max(sum(s.values()) for s in splits.values()) / 1e9 * 1.3)
    ax.legend(ncol=5, fontsize=10, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
