"""Pictures for 05_token_fusion: the prompt as a coloured token strip, one <|image_pad|> becoming N tokens,
and masked_scatter filling pad rows with feature rows on a small example.

Every function draws the tensors handed to it and returns a matplotlib Figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Polygon, Rectangle

from qwenlite.config import QwenLiteConfig
from qwenlite.tokens import token_kinds

KIND_COLOURS = {  # one colour per word of qwenlite.tokens.token_kinds
    "text": "#c6dbef",
    "chat": "#6b6b6b",  # <|im_start|>, <|im_end|>, <|endoftext|>
    "vision": "#fdae6b",  # <|vision_start|>, <|vision_end|>
    "image": "#31a354",  # <|image_pad|>
    "video": "#756bb1",  # <|video_pad|>
    "padding": "#f0f0f0",  # attention_mask 0
}


def _short(label: str, width: int = 9) -> str:
    """A token's text for a small cell: special tokens without <| |>, long ones on two lines, newline as ↵."""
    label = label.replace("\n", "↵").replace("<|", "").replace("|>", "").strip() or "␣"
    if len(label) > width and "_" in label:
        head, tail = label.split("_", 1)
        return f"{head[:width]}\n_{tail[: width - 1]}"
    return label if len(label) <= width else label[: width - 1] + "…"


def _two_lines(label: str) -> str:
    """A token's text for a narrow cell: at most two short lines, a long word split in two, nothing cut
    below 11 characters (special tokens as in _short)."""
    label = label.replace("\n", "↵").replace("<|", "").replace("|>", "").strip() or "␣"
    if len(label) <= 5:
        return label
    if "_" in label:
        return _short(label, 6)
    half = -(-len(label) // 2)
    return f"{label[:half]}\n{label[half:]}" if len(label) <= 10 else f"{label[:5]}\n{label[5:9]}…"


def _legend(ax, kinds: Sequence[str], **kwargs) -> None:
    present = [k for k in KIND_COLOURS if k in kinds]
    ax.legend(
        handles=[Patch(facecolor=KIND_COLOURS[k], edgecolor="grey", label=k) for k in present],
        ncol=len(present),
        frameon=False,
        fontsize=10,
        **kwargs,
    )


def draw_token_strip(
    ids: Sequence[int],
    config: QwenLiteConfig,
    labels: Sequence[str] | None = None,
    attention_mask: Sequence[int] | None = None,
    per_row: int = 24,
    title: str = "",
) -> Figure:
    """The prompt as coloured cells, `per_row` tokens a line, each labelled with its text when labels are given."""
    ids = list(ids)
    kinds = token_kinds(ids, config, attention_mask)
    rows = -(-len(ids) // per_row)
    cell_w = 0.62 if labels is not None else 0.3
    fig, ax = plt.subplots(figsize=(min(per_row * cell_w + 0.6, 16), 0.48 * rows + 0.9))
    for k, kind in enumerate(kinds):
        r, c = divmod(k, per_row)
        ax.add_patch(Rectangle((c, -r - 1), 0.94, 0.86, facecolor=KIND_COLOURS[kind], edgecolor="white"))
        if labels is not None:
            dark = kind in ("chat", "image", "video")
            ax.text(
                c + 0.47,
                -r - 0.57,
                _short(labels[k]),
                ha="center",
                va="center",
                fontsize=7.5,
                linespacing=0.9,
                color="white" if dark else "black",
            )
    ax.set_xlim(0, per_row)
    ax.set_ylim(-rows - 0.1, 0.05)
    ax.axis("off")
    ax.set_title(title or f"{len(ids)} tokens, {per_row} per line", fontsize=12, loc="left")
    _legend(ax, kinds, loc="upper left", bbox_to_anchor=(0, 0))
    fig.tight_layout()
    return fig


def draw_expansion(
    before_ids: Sequence[int],
    before_labels: Sequence[str],
    after_ids: Sequence[int],
    config: QwenLiteConfig,
    counts: dict[str, Sequence[str]] | None = None,
) -> Figure:
    """Top: the template's prompt, one pad per image/video. Bottom: the processor's prompt, each pad repeated
    t*h*w/merge^2 times. A fan joins every pad to the run it became; `counts` adds a caption per modality."""
    before_ids, after_ids = list(before_ids), list(after_ids)
    nb, na = len(before_ids), len(after_ids)
    kinds_b, kinds_a = token_kinds(before_ids, config), token_kinds(after_ids, config)
    fig, ax = plt.subplots(figsize=(15, 3.4))
    wb, wa = 1.0 / nb, 1.0 / na
    upright = nb <= 40  # cells wide enough (0.36 in or more) for upright labels at a legible size
    cell_pt = fig.get_figwidth() * 72 * 0.95 / nb  # a top cell's width in points
    for k, kind in enumerate(kinds_b):
        ax.add_patch(Rectangle((k * wb, 1.0), wb * 0.95, 0.36, facecolor=KIND_COLOURS[kind], edgecolor="white"))
        label = _two_lines(before_labels[k]) if upright else _short(before_labels[k], 6)
        widest = max(len(line) for line in label.split("\n"))
        ax.text(
            (k + 0.47) * wb,
            1.18,
            label,
            ha="center",
            va="center",
            fontsize=min(10.0, 0.9 * cell_pt / (0.62 * widest)) if upright else 6.5,
            rotation=0 if upright else 90,
            linespacing=0.9,
            color="white" if kind in ("chat", "image", "video") else "black",
        )
    for k, kind in enumerate(kinds_a):
        ax.add_patch(Rectangle((k * wa, 0.0), wa, 0.32, facecolor=KIND_COLOURS[kind], edgecolor="none"))
    # each pad token in the top row maps to the next run of pads of its kind below
    runs: dict[str, list[tuple[int, int]]] = {"image": [], "video": []}
    k = 0
    while k < na:
        if kinds_a[k] in runs:
            j = k
            while j < na and after_ids[j] == after_ids[k]:
                j += 1
            runs[kinds_a[k]].append((k, j))
            k = j
        else:
            k += 1
    seen = {"image": 0, "video": 0}
    for k, kind in enumerate(kinds_b):
        if kind not in runs:
            continue
        start, end = runs[kind][seen[kind]]
        seen[kind] += 1
        fan = Polygon(
            [(k * wb, 1.0), ((k + 0.95) * wb, 1.0), (end * wa, 0.32), (start * wa, 0.32)],
            facecolor=KIND_COLOURS[kind],
            alpha=0.35,
            edgecolor=KIND_COLOURS[kind],
        )
        ax.add_patch(fan)
        ax.text(
            (start + end) / 2 * wa,
            -0.12,
            f"{end - start} × <|{kind}_pad|>",
            ha="center",
            va="top",
            fontsize=10,
            color=KIND_COLOURS[kind],
            weight="bold",
        )
    ax.text(0, 1.4, f"chat template: {nb} tokens, one pad per image / video", fontsize=11, va="bottom")
    ax.text(0, 0.4, f"after expansion: {na} tokens", fontsize=11, va="bottom")
    if counts:
        ax.text(1.0, -0.4, "   ".join(f"{m}: {', '.join(c)}" for m, c in counts.items()), ha="right", fontsize=10)
    ax.set_xlim(-0.005, 1.005)
    ax.set_ylim(-0.5, 1.55)
    ax.axis("off")
    _legend(ax, kinds_b + kinds_a, loc="upper right", bbox_to_anchor=(1, 1.12))
    fig.tight_layout()
    return fig


def draw_masked_scatter(
    input_ids: torch.Tensor,
    inputs_embeds: torch.Tensor,
    features: torch.Tensor,
    fused: torch.Tensor,
    token_id: int,
) -> Figure:
    """Three small matrices with their numbers (two decimals): the token embeddings (B*L rows), the feature rows
    (n_F, D) and the result. Pad rows are framed; each is labelled with the feature row that filled it."""
    b, n, d = inputs_embeds.shape
    mask = (input_ids == token_id).reshape(-1)
    before = inputs_embeds.reshape(-1, d).detach().float().cpu().numpy()
    after = fused.reshape(-1, d).detach().float().cpu().numpy()
    feats = features.detach().float().cpu().numpy()
    vmax = float(max(np.abs(before).max(), np.abs(feats).max()))
    fig, axes = plt.subplots(1, 3, figsize=(13, 0.42 * b * n + 1.6), width_ratios=[1, 1, 1])
    row_names = [f"b{r // n} pos{r % n}" for r in range(b * n)]
    panels = [
        (axes[0], before, row_names, "E = inputs_embeds (B·L, D)\nrows of pad tokens framed"),
        (axes[1], feats, [f"f{k}" for k in range(len(feats))], f"F = features ({len(feats)}, D)\nrow k = fk"),
        (axes[2], after, row_names, "E' = E.masked_scatter(mask, F)\nthe k-th pad row takes fk"),
    ]
    for ax, m, names, title in panels:
        ax.imshow(m, cmap="coolwarm", vmin=-vmax, vmax=vmax, aspect="auto")
        for (r, c), v in np.ndenumerate(m):
            text = "0.00" if round(float(v), 2) == 0 else f"{v:+.2f}"  # no "-0.00"
            ax.text(c, r, text, ha="center", va="center", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=9)
        ax.set_xticks(range(d), [f"d{c}" for c in range(d)], fontsize=9)
        ax.set_title(title, fontsize=11)
    k = 0
    for r in range(b * n):
        if mask[r]:
            for ax in (axes[0], axes[2]):
                ax.add_patch(Rectangle((-0.5, r - 0.5), d, 1, fill=False, edgecolor="black", linewidth=2))
            axes[2].text(d - 0.4, r, f" ← f{k}", va="center", fontsize=10, weight="bold")
            k += 1
    fig.tight_layout()
    return fig


def _per_column(values: np.ndarray) -> np.ndarray:
    """(D, L) values, each column (token) divided by its root mean square."""
    rms = np.sqrt((values**2).mean(0))
    return values / np.where(rms > 0, rms, 1.0)


def draw_fused_heatmap(fused: torch.Tensor, input_ids: Sequence[int], config: QwenLiteConfig) -> Figure:
    """The fused (L, D) embeddings of one prompt, tokens along x: the token-kind strip on top, the heat map of each
    column divided by its own RMS (so a small text row shows its pattern beside a large vision row), and below,
    each token's norm on a log axis, coloured by kind: the scale the heat map divides out."""
    kinds = token_kinds(list(input_ids), config)
    values = fused.detach().T.float().cpu().numpy()  # (D, L)
    scaled = _per_column(values)
    norms = np.linalg.norm(values, axis=0)
    vmax = float(np.quantile(np.abs(scaled), 0.99))
    fig, (strip, ax, low) = plt.subplots(3, 1, figsize=(13, 5.6), sharex=True, height_ratios=[0.12, 1, 0.7])
    for k, kind in enumerate(kinds):
        strip.add_patch(Rectangle((k - 0.5, 0), 1, 1, facecolor=KIND_COLOURS[kind], edgecolor="none"))
    strip.set_ylim(0, 1)
    strip.set_yticks([])
    strip.set_title(
        "fused inputs_embeds: one column per token (token kinds above), each column divided by its RMS",
        fontsize=12,
        loc="left",
    )
    image = ax.imshow(scaled, aspect="auto", cmap="coolwarm", vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set_ylabel("hidden dim", fontsize=11)
    fig.colorbar(image, cax=ax.inset_axes((1.01, 0, 0.015, 1)), label="value / RMS\nof its column")
    x = np.arange(len(kinds))
    for kind in dict.fromkeys(kinds):
        at = [k for k, kd in enumerate(kinds) if kd == kind]
        low.scatter(x[at], norms[at], s=10, color=KIND_COLOURS[kind], edgecolor="grey", linewidth=0.3, label=kind)
    low.set_yscale("log")
    low.set_ylabel("‖row‖ (log)", fontsize=11)
    low.set_xlabel("token index", fontsize=11)
    low.grid(alpha=0.3, which="both")
    _legend(low, kinds, loc="upper center", bbox_to_anchor=(0.5, -0.4))
    return fig
