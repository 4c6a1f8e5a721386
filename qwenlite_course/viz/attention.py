"""Attention from text tokens to the image and video tokens of a prompt, drawn over the pixels (07 and 08).

The decoder returns its attention probabilities when asked (`model(**inputs, output_attentions=True)`:
one (B, H, L, S) tensor per layer). A vision span's tokens are the merger's output in (t, row, column)
order, the order `get_rope_index` gives them ids in, so one query's row over a span reshapes to
(grid_t, h / merge, w / merge): one heat map per temporal patch, one cell per merged 28 x 28 px token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from qwenlite.config import QwenLiteConfig
from qwenlite.rope_index import token_spans
from qwenlite.tokens import IMAGE, VIDEO, mm_token_type_ids

from . import drawable


@dataclass(frozen=True)
class VisionSpan:
    """One image or video in a prompt row: its columns [start, end) and its grid (t, h, w) of patches."""

    modality: str  # "image" or "video"
    start: int
    end: int
    grid_thw: tuple[int, int, int]
    merge_size: int

    @property
    def token_grid(self) -> tuple[int, int, int]:
        """(grid_t, h / merge, w / merge): how the span's tokens fold back onto its frames."""
        t, h, w = self.grid_thw
        return t, h // self.merge_size, w // self.merge_size


def vision_spans(
    input_ids: torch.Tensor,
    config: QwenLiteConfig,
    image_grid_thw: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
) -> list[VisionSpan]:
    """The image and video spans of one prompt row (L,), in prompt order, each with its own grid.

    The runs of pad tokens come from `rope_index.token_spans`, as `get_rope_index` finds them; a run is cut
    into items by their grids, consumed in order (images from image_grid_thw, videos from video_grid_thw).
    A run that its grids do not fill exactly is an error (the prompt and the grids do not belong together).
    """
    names = {IMAGE: "image", VIDEO: "video"}
    grids = {
        IMAGE: iter([] if image_grid_thw is None else image_grid_thw.tolist()),
        VIDEO: iter([] if video_grid_thw is None else video_grid_thw.tolist()),
    }
    merge = config.vision_config.spatial_merge_size
    spans = []
    for modality, first, end in token_spans(mm_token_type_ids(input_ids[None], config)[0].tolist()):
        start = first
        while modality in names and start < end:
            grid = next(grids[modality], None)
            size = 0 if grid is None else math.prod(grid) // merge**2
            if grid is None or start + size > end:
                raise ValueError(
                    f"{names[modality]} pads at columns [{first}, {end}): {end - first} tokens, but the "
                    f"{names[modality]} grids cover {start - first}" + ("" if grid is None else f" + {size}")
                )
            spans.append(VisionSpan(names[modality], start, start + size, tuple(grid), merge))
            start += size
    return spans


def attention_to_span(
    weights: torch.Tensor, queries: Sequence[int], span: VisionSpan, head: int | None = None
) -> torch.Tensor:
    """One row's attention (H, L, S) from the query columns to a span: (grid_t, h/merge, w/merge).

    head None averages over heads; the queries are always averaged. Each cell is a probability mass,
    so the map sums to the share of attention the queries give this span.
    """
    rows = weights[:, list(queries), span.start : span.end].float()  # (H, Q, span tokens)
    rows = rows.mean(0) if head is None else rows[head]
    return rows.mean(0).reshape(span.token_grid).cpu()


def _overlay(ax, picture: torch.Tensor, heat: np.ndarray, vmax: float, title: str) -> None:
    """picture (3, H, W) uint8 with heat (h, w) stretched over it."""
    ax.imshow(picture.permute(1, 2, 0).cpu().numpy())
    height, width = picture.shape[1:]
    ax.imshow(heat, cmap="magma", alpha=0.5, vmin=0, vmax=vmax, extent=(0, width, height, 0), interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_attention_over_image(
    picture: torch.Tensor, heat: torch.Tensor, title: str = "", evidence: torch.Tensor | None = None
) -> Figure:
    """An image (3, H, W) uint8 as fed to the model, and a (1, h, w) map of one span over it.

    evidence: (h, w) bool, merged tokens to frame in cyan (where the answer's evidence is), if given.
    """
    fig, ax = plt.subplots(figsize=(5.2, 4.2 * picture.shape[1] / picture.shape[2] + 0.5))
    total = float(heat.sum())  # of the queries' whole attention (1 = all of it), the part on the picture
    _overlay(ax, picture, heat[0].numpy(), float(heat.max()), f"{title}\non the picture: {total:.3f} of all attention")
    bar = fig.colorbar(ax.images[-1], ax=ax, shrink=0.8)
    bar.set_label("share of the queries' attention\n(each merged token)", fontsize=8)
    if evidence is not None:
        cell_h, cell_w = picture.shape[1] / heat.shape[1], picture.shape[2] / heat.shape[2]
        for i, j in evidence.nonzero().tolist():
            ax.add_patch(plt.Rectangle((j * cell_w, i * cell_h), cell_w, cell_h, fill=False, ec="#00d0ff", lw=2))
    fig.tight_layout()
    return fig


def draw_attention_over_frames(
    frames: torch.Tensor,
    heat: torch.Tensor,
    seconds_per_patch: float,
    marker_seconds: tuple[float, float] | None = None,
    title: str = "",
    timestamps: Sequence[float] | None = None,
) -> Figure:
    """A strip of temporal patches: the first of each patch's frames (T frames, 3, H, W) with its (h, w) map.

    heat (grid_t, h, w); all panels share one colour scale, so a brighter patch holds more attention.
    The patch covering marker_seconds, if given, is framed in cyan (the marker itself is red). timestamps: when
    each frame was shown (the titles then name the patch's frames; else the patch's nominal [start, end) seconds).
    """
    grid_t = heat.shape[0]
    frames_per_patch = frames.shape[0] // grid_t
    fig, axes = plt.subplots(1, grid_t, figsize=(2.5 * grid_t, 2.5 * frames.shape[2] / frames.shape[3] + 1.0))
    axes = np.atleast_1d(axes)
    vmax = float(heat.max())
    for k, ax in enumerate(axes):
        start = k * seconds_per_patch
        _overlay(
            ax,
            frames[k * frames_per_patch],
            heat[k].numpy(),
            vmax,
            (
                f"patch {k}: [{start:g}, {start + seconds_per_patch:g}) s"
                if timestamps is None
                else f"patch {k}: frames at "
                + ", ".join(f"{s:.2f}" for s in timestamps[k * frames_per_patch :][:frames_per_patch])
                + " s"
            )
            + f"\nshare {float(heat[k].sum()):.3f}",  # fmt: skip
        )
        if marker_seconds is not None and start < marker_seconds[1] and marker_seconds[0] < start + seconds_per_patch:
            for side in ax.spines.values():
                side.set_edgecolor("#00d0ff")
                side.set_linewidth(3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    scale = plt.cm.ScalarMappable(norm=plt.Normalize(0, vmax), cmap="magma")  # the one scale of every panel
    fig.colorbar(
        scale, cax=fig.add_axes((0.915, 0.12, 0.012, 0.7)), label="share of attention (a token)", format="%.3f"
    )
    return fig


def attention_explorer(
    attentions: Sequence[torch.Tensor],
    span: VisionSpan,
    pictures: torch.Tensor,
    queries: Sequence[int],
    labels: Sequence[str],
    seconds_per_patch: float | None = None,
    marker_seconds: tuple[float, float] | None = None,
):
    """Sliders for layer, head (-1 = mean over heads) and query token; draws that token's attention to the span.

    attentions: one (B, H, L, S) tensor per layer (row 0 is drawn); pictures: the span's frames (T, 3, H, W)
    uint8 as fed to the model (one frame for an image); queries: prompt columns to choose from, with labels.
    """
    import ipywidgets as widgets

    from . import live

    heads = attentions[0].shape[1]

    def draw(layer: int, head: int, token: int) -> Figure:
        heat = attention_to_span(attentions[layer][0], [queries[token]], span, None if head < 0 else head)
        who = "mean of heads" if head < 0 else f"head {head}"
        title = f"layer {layer}, {who}: token {drawable(labels[token])!r} (column {queries[token]})"
        if span.modality == "image":
            return draw_attention_over_image(pictures[0], heat, title)
        return draw_attention_over_frames(pictures, heat, seconds_per_patch, marker_seconds, title)

    return live(
        draw,
        layer=widgets.IntSlider(value=len(attentions) - 1, min=0, max=len(attentions) - 1, description="layer"),
        head=widgets.IntSlider(value=-1, min=-1, max=heads - 1, description="head (-1 mean)"),
        token=widgets.IntSlider(value=0, min=0, max=len(queries) - 1, description="token"),
    )


def draw_share_by_layer(
    attentions: Sequence[torch.Tensor],
    queries: Sequence[int],
    span: VisionSpan,
    seconds_per_patch: float | None = None,
    marker_seconds: tuple[float, float] | None = None,
) -> Figure:
    """Layers x temporal patches: the share of the queries' attention (mean over heads) each patch receives.

    Columns are named "patch k", with the seconds it covers below when `seconds_per_patch` is given.

    The last column is everything else the queries read (text of the prompt and the answer, other spans), so
    each row sums to 1.
    """
    shares = torch.stack(
        [attention_to_span(a[0], queries, span).sum(dim=(1, 2)) for a in attentions]
    )  # (layers, grid_t)
    table = torch.cat([shares, 1 - shares.sum(1, keepdim=True)], dim=1).numpy()
    grid_t = shares.shape[1]
    step = seconds_per_patch
    # the temporal patch's index, as the tables and text name it, and the seconds it covers
    names = [f"patch {k}" if step is None else f"patch {k}\n({k * step:g}-{(k + 1) * step:g} s)" for k in range(grid_t)]
    fig, ax = plt.subplots(figsize=(1.6 * (grid_t + 1) + 2.5, 0.45 * len(attentions) + 1.8))
    image = ax.imshow(table, cmap="magma", aspect="auto", vmin=0)
    ax.set_xticks(range(grid_t + 1), [*names, "text (prompt\nand answer)"], fontsize=11)
    for (row, col), value in np.ndenumerate(table):  # the numbers too: the text column can dwarf the patches
        dark = value < 0.5 * table.max()  # magma is dark at the bottom of its scale
        ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=11, color="white" if dark else "black")
    ax.set_yticks(range(len(attentions)))
    ax.set_ylabel("decoder layer", fontsize=11)
    for k in range(grid_t):
        start = k * (seconds_per_patch or 0)
        if marker_seconds is not None and start < marker_seconds[1] and marker_seconds[0] < start + seconds_per_patch:
            ax.add_patch(
                plt.Rectangle((k - 0.5, -0.5), 1, len(attentions), fill=False, edgecolor="#00d0ff", linewidth=2.5)
            )
    fig.colorbar(image, ax=ax, label="share of attention")
    who = "1 query token looks" if len(queries) == 1 else f"{len(queries)} query tokens look"
    ax.set_title(f"where {who}, per layer (mean over heads; each row sums to 1)", fontsize=12)
    fig.tight_layout()
    return fig
