"""Pictures for 07_decoder_generation: how mrope_section splits the rotary pairs between t, h and w, the
cos table over a prompt with an image, causal and padding masks, the KV cache growing, prefill vs decode time.

Every function draws measured tensors or numbers handed to it and returns a matplotlib Figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

AXIS_COLOURS = {"t": "#4c78a8", "h": "#f58518", "w": "#54a24b"}


def pair_axes(mrope_section: Sequence[int]) -> list[str]:
    """Which position axis turns each rotary pair: (2, 1, 1) -> ['t', 't', 'h', 'w']."""
    return [axis for axis, n in zip("thw", mrope_section, strict=True) for _ in range(n)]


def draw_mrope_sections(sections: Mapping[str, Sequence[int]], rope_theta: float | Mapping[str, float] = 1e6) -> Figure:
    """One panel per model: the rotation speed theta^(-2i/Dh) of each of its Dh/2 rotary pairs (log scale),
    on a background coloured by the axis (t, h, w) whose position id turns the pair. rope_theta: one for all
    panels, or one per model name (the twin's is not the real model's)."""
    fig, axes = plt.subplots(len(sections), 1, figsize=(11, 2.9 * len(sections)), squeeze=False)
    for ax, (name, section) in zip(axes[:, 0], sections.items(), strict=True):
        labels = pair_axes(section)
        half = len(labels)
        theta = rope_theta[name] if isinstance(rope_theta, Mapping) else rope_theta
        inv_freq = theta ** (-2 * np.arange(half) / (2 * half))
        start = 0
        for axis, n in zip("thw", section, strict=True):
            ax.axvspan(start - 0.5, start + n - 0.5, color=AXIS_COLOURS[axis], alpha=0.22, lw=0)
            ax.text(
                start + n / 2 - 0.5,
                3.0,
                f"{axis}: {n} pairs",
                ha="center",
                va="bottom",
                fontsize=12,
                color=AXIS_COLOURS[axis],
                weight="bold",
            )
            start += n
        ax.plot(np.arange(half), inv_freq, "o", color="0.15", ms=4 if half > 40 else 6)
        ax.set_yscale("log")
        ax.set_ylim(inv_freq.min() / 3, 30)
        ax.set_xlim(-0.5, half - 0.5)
        ax.set_ylabel("radians per\nposition step")
        ax.set_xlabel("rotary pair i  (turns dims i and i + Dh/2)")
        ax.set_title(
            f"{name}: mrope_section {tuple(section)}, Dh = {2 * half}, rope_theta {theta:g}",
            fontsize=12,
            loc="left",
        )
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def draw_mrope_cos(
    position_ids: torch.Tensor, angles: torch.Tensor, mrope_section: Sequence[int], span: tuple[int, int]
) -> Figure:
    """position_ids (3, L) of one prompt, each pair's angle (L, Dh/2), the image span [start, end) of tokens.

    Top: the t, h, w ids per token. Middle: cos of every pair's angle. Bottom: the angle itself, each pair's
    row scaled to its own range, so even the slow pairs show which position id drives them.
    """
    pos = position_ids.numpy()
    a = angles.T.numpy()  # (Dh/2, L)
    lo, hi = a.min(1, keepdims=True), a.max(1, keepdims=True)
    scaled = (a - lo) / np.where(hi - lo > 0, hi - lo, 1)
    n_tok = pos.shape[1]
    fig, axes = plt.subplots(3, 1, figsize=(12, 9.5), height_ratios=[1.1, 1.6, 1.6], sharex=True)
    for i, (axis, lw) in enumerate(zip("thw", (4.5, 2.8, 1.4), strict=True)):
        axes[0].step(np.arange(n_tok), pos[i], where="mid", color=AXIS_COLOURS[axis], lw=lw, label=axis)
    axes[0].axvspan(span[0] - 0.5, span[1] - 0.5, color="0.5", alpha=0.15, lw=0)
    axes[0].set_ylabel("position id")
    axes[0].legend(ncol=3, fontsize=10, loc="upper left")
    axes[0].set_title("3-D position ids of the prompt (shaded: the image's tokens)", fontsize=12)
    images = [
        axes[1].imshow(np.cos(a), aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest"),
        axes[2].imshow(scaled, aspect="auto", cmap="viridis", interpolation="nearest"),
    ]
    axes[1].set_title("cos(angle) per rotary pair (how fast each turns: rope_theta)", fontsize=12)
    axes[2].set_title("the angle, each pair's row scaled to its own range: which position id drives it", fontsize=12)
    for ax, im, label in zip(axes[1:], images, ("cos(angle)", "angle, scaled per pair"), strict=True):
        start = 0
        for axis, n in zip("thw", mrope_section, strict=True):
            ax.axhline(start - 0.5, color="white", lw=2)
            ax.text(
                n_tok + 0.5,
                start + n / 2 - 0.5,
                axis,
                color=AXIS_COLOURS[axis],
                fontsize=14,
                weight="bold",
                va="center",
            )
            start += n
        for edge in span:
            ax.axvline(edge - 0.5, color="black", lw=1.2, ls="--")
        ax.set_ylabel("rotary pair i")
        fig.colorbar(im, ax=ax, pad=0.03, fraction=0.025).set_label(label)
    fig.colorbar(images[0], ax=axes[0], pad=0.03, fraction=0.025).ax.set_visible(False)  # keep the x axes aligned
    axes[2].set_xlabel("token index in the prompt (dashed: the image's tokens)")
    fig.tight_layout()
    return fig


def draw_mask_panels(panels: Mapping[str, torch.Tensor], tokens: Mapping[str, Sequence[str]] | None = None) -> Figure:
    """Boolean masks (L, S), True = the query may attend to that key, side by side, token labels optional."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.8), squeeze=False)
    cmap = ListedColormap(["#2b2b2b", "#fdd49e"])
    for ax, (title, allowed) in zip(axes[0], panels.items(), strict=True):
        a = allowed.numpy().astype(float)
        ax.imshow(a, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("key (what is read)")
        ax.set_ylabel("query (who reads)")
        labels = (tokens or {}).get(title)
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=9)
            ax.set_yticks(range(len(labels)), labels, fontsize=9)
        ax.set_xticks(np.arange(a.shape[1] + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(a.shape[0] + 1) - 0.5, minor=True)
        ax.grid(which="minor", color="white", lw=0.5)
        ax.tick_params(which="minor", length=0)
    fig.legend(
        handles=[Patch(color="#fdd49e", label="attends"), Patch(color="#2b2b2b", label="masked")],
        loc="lower center",
        ncol=2,
        fontsize=10,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def draw_cache_growth(lengths: Sequence[int], nbytes: Sequence[int], group: int, dtype: str = "float32") -> Figure:
    """Left: cached tokens after the prefill (step 0) and each decode step, as stacked bars from 0: the prompt's
    tokens (red) and those the decode steps added (blue). Right: KiB held by the cache (in `dtype`), and what
    caching all H heads (no grouping: `group` = H / Hkv times more) would hold."""
    steps = np.arange(len(lengths))
    prompt = np.full(len(lengths), lengths[0])
    added = np.asarray(lengths) - lengths[0]
    kib = np.asarray(nbytes) / 1024
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    axes[0].bar(steps, prompt, color="#e45756", label=f"the prompt: {lengths[0]} tokens (prefill)")
    axes[0].bar(steps, added, bottom=prompt, color="#4c78a8", label="one more per decode step")
    axes[0].set_ylim(0, max(lengths) * 1.3)
    axes[0].set_xlabel("step (0 = prefill)")
    axes[0].set_ylabel("cached tokens S")
    axes[0].legend(fontsize=9, loc="upper left")
    axes[0].set_title("the cache: the prompt, then one token per step", fontsize=11)
    axes[1].plot(steps, kib * group, "s--", color="0.55", label=f"if all H heads were cached (x{group})")
    axes[1].plot(steps, kib, "o-", color="#4c78a8", label="grouped-query: Hkv heads (this cache)")
    axes[1].set_ylim(0, kib.max() * group * 1.15)
    axes[1].set_xlabel("step (0 = prefill)")
    axes[1].set_ylabel(f"KiB held (this checkpoint, {dtype})")
    axes[1].legend(fontsize=9, loc="lower right")
    axes[1].set_title("k and v: 2 x layers x Hkv x Dh numbers per token", fontsize=11)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def draw_prefill_vs_decode(lengths: Sequence[int], prefill_s: Sequence[float], step_s: Sequence[float]) -> Figure:
    """Measured seconds: the whole prompt of L tokens at once (prefill, also what a step without a cache costs)
    vs one decode step reading L cached tokens, on log-log axes with slope guides through the last prefill."""
    L = np.asarray(lengths, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4.4))
    ax.loglog(L, np.asarray(prefill_s) * 1e3, "o-", color="#e45756", label="prefill L tokens (= a step with no cache)")
    ax.loglog(L, np.asarray(step_s) * 1e3, "o-", color="#4c78a8", label="one decode step, L tokens cached")
    ax.loglog(L, prefill_s[-1] * 1e3 * (L / L[-1]) ** 2, ":", color="0.4", label="slope of L^2")
    ax.loglog(L, prefill_s[-1] * 1e3 * (L / L[-1]), "--", color="0.6", label="slope of L")
    ax.set_xticks(L, [str(int(n)) for n in L])  # the measured lengths, as plain numbers
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_xlabel("tokens L")
    ax.set_ylabel("milliseconds (fastest run)")
    ax.set_title("decoder only, this checkpoint, CPU", fontsize=11)
    ax.legend(fontsize=9)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig
