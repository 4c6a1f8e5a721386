"""Pictures for notebook 09: the training examples, the loss curve, what the answer attends to, and how fast the
rotary pairs turn (why the twin cannot say where).

Every figure draws what qwenlite.train computes: the examples come from `make_example`, the attention maps
from the model's own `output_attentions` on `make_batch`'s rows, the evidence boxes from `Example.evidence`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import patheffects
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, Patch, Rectangle

from qwenlite import grounding
from qwenlite import train as T
from qwenlite.layers import rope_inv_freq

from .decoder import AXIS_COLOURS, pair_axes  # t, h, w: one colour each in every figure
from .preprocessing import _hwc

HIGHLIGHT = "#00d0ff"  # cyan: contrasts with the red, green and blue shapes it frames
OUTLINE = [patheffects.withStroke(linewidth=4, foreground="black")]  # keeps a cyan mark visible on green or noise
TASK_COLOURS = {"when": "#1f77b4", "where": "#ff7f0e", "colour": "#2ca02c"}


def draw_examples(examples: Sequence[T.Example]) -> Figure:
    """One row per example: a clip's 8 frames (its marker's temporal patch framed) or the picture with its answer."""
    fig, axes = plt.subplots(len(examples), T.FRAMES, figsize=(1.4 * T.FRAMES, 2.0 * len(examples)), squeeze=False)
    for row, ex in zip(axes, examples, strict=True):
        for ax in row:
            ax.axis("off")
        caption = f"{T.QUESTIONS[ex.task]}  ->  {ex.answer}"
        if ex.modality == "video":
            for f, ax in enumerate(row):
                ax.imshow(_hwc(ex.pixels[f]))
                ax.set_title(f"frame {f}, patch {f // 2}", fontsize=7)
                if f // 2 == ex.truth:
                    ax.add_patch(Rectangle((0, 0), T.SIZE - 1, T.SIZE - 1, fill=False, ec=HIGHLIGHT, lw=3))
            row[0].text(
                0,
                1.3,
                f"{caption}   (the marker's temporal patch framed; patches count from 0, answers from first)",
                transform=row[0].transAxes,
                fontsize=9,
            )
            continue
        ax = row[0]
        ax.imshow(_hwc(ex.pixels))
        for k in range(1, T.SIZE // 28):  # the merged tokens' 28 px grid
            ax.axhline(28 * k - 0.5, color="white", lw=0.5)
            ax.axvline(28 * k - 0.5, color="white", lw=0.5)
        if ex.task == "where":  # the answer's point: the centre of the merged token that holds the shape
            ax.plot(
                *T.parse_answer("where", ex.answer), marker="+", color=HIGHLIGHT, ms=14, mew=2, path_effects=OUTLINE
            )
        note = "(+ marks the answer's point; white lines: 28 px merged tokens)" if ex.task == "where" else ""
        row[1].text(0.05, 0.5, f"{caption}\n{note}", transform=row[1].transAxes, va="center", fontsize=9)
    fig.subplots_adjust(hspace=0.7, wspace=0.1, left=0.02, right=0.98, top=0.88, bottom=0.02)
    return fig


def draw_loss(logs: Mapping[str, Sequence[Mapping]], smooth: int = 10) -> Figure:
    """Training loss per task (a moving mean over `smooth` of its steps), one line per run and task."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for (run, log), style in zip(logs.items(), itertools.cycle(("-", ":", "--", "-."))):  # every run, styles repeat
        for task in T.TASKS:
            points = [(r["step"], r["loss"]) for r in log if r["task"] == task]
            if not points:
                continue
            steps, losses = map(np.array, zip(*points, strict=True))
            k = min(smooth, len(losses))
            mean = np.convolve(losses, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1 :], mean, style, color=TASK_COLOURS[task], label=f"{task} ({run})")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (nats per answer token)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


@torch.no_grad()
def draw_points(examples: Sequence[T.Example], answers: Sequence[str]) -> Figure:
    """The model's answers to "Point to the shape." on its pictures: each answer read with
    `qwenlite.grounding.parse_boxes` (as any Qwen2.5-VL answer is), drawn as a cross in the picture's own pixels,
    with the shape's centre (+), the 28 px circle within which a point counts as right, and the merged-token grid."""
    fig, axes = plt.subplots(1, len(examples), figsize=(2.3 * len(examples), 2.7), squeeze=False)
    for ax, ex, text in zip(axes[0], examples, answers, strict=True):
        ax.imshow(_hwc(ex.pixels), extent=(0, T.SIZE, T.SIZE, 0))
        for k in range(1, T.SIZE // 28):
            ax.axhline(28 * k, color="white", lw=0.5)
            ax.axvline(28 * k, color="white", lw=0.5)
        ax.add_patch(Circle(ex.truth, 28, fill=False, ec=HIGHLIGHT, lw=1.8, ls="--"))
        try:
            point = grounding.parse_boxes(text.split("<|im_end|>")[0])[0]["point_2d"]
        except (ValueError, KeyError):
            point = None
        if point is None:
            ax.set_title(f"{text[:18]!r}\nnot a point", fontsize=8)
        else:
            ax.plot(*point, marker="x", color="white", ms=11, mew=3.5)
            ax.plot(*point, marker="x", color="black", ms=10, mew=1.8)
            right = T.is_correct("where", ex.truth, tuple(point))
            miss = float(np.hypot(point[0] - ex.truth[0], point[1] - ex.truth[1]))
            verdict = "right" if right else "wrong"
            ax.set_title(f"[{point[0]:g}, {point[1]:g}]: {verdict}, {miss:.0f} px off", fontsize=8)
        ax.plot(
            *ex.truth, marker="+", color=HIGHLIGHT, ms=16, mew=2.2, zorder=5, path_effects=OUTLINE
        )  # on top: often 1-2 px from the x
        ax.set_xlim(0, T.SIZE)
        ax.set_ylim(T.SIZE, 0)
        ax.set_xticks([0, 56, 112])
        ax.set_yticks([0, 56, 112])
        ax.tick_params(labelsize=7)
    axes[0][0].set_xlabel("x (px)", fontsize=8)
    axes[0][0].set_ylabel("y (px)", fontsize=8)
    fig.suptitle(
        "Point to the shape: x = the answer's point_2d, + = the shape's centre, dashed = right within 28 px",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def answer_attention(model, processor, example: T.Example, layer: int) -> torch.Tensor:
    """(t, h, w) over the example's merged tokens: the share of the answer queries' attention (heads averaged,
    then the queries averaged), one layer of `train.answer_attention`."""
    ((_, att),) = T.answer_attention(model, processor, [example])  # (layers, answer queries, vision tokens)
    return att[layer].mean(0).float().reshape(example.evidence.shape)


def draw_attention_before_after(
    models: Mapping[str, torch.nn.Module], processor, example: T.Example, layer: int
) -> Figure:
    """The answer's attention over the picture (or each temporal patch) for each model, evidence framed."""
    maps = {name: answer_attention(m, processor, example, layer) for name, m in models.items()}
    t = example.evidence.shape[0]
    frames = example.pixels[::2] if example.modality == "video" else example.pixels[None]
    width = max(2.4 * t, 4.2) + 1.4  # room for the colour bar and its label beside one picture too
    fig, axes = plt.subplots(len(maps), t, figsize=(width, 2.5 * len(maps) + 0.6), squeeze=False, layout="constrained")
    vmax = max(float(m.max()) for m in maps.values())
    for row, (name, heat) in zip(axes, maps.items(), strict=True):
        for k, ax in enumerate(row):
            ax.imshow(_hwc(frames[k]))  # the picture at full strength, the heat over it: the shape shows through
            extent = (0, T.SIZE, T.SIZE, 0)
            image = ax.imshow(heat[k].numpy(), cmap="magma", vmin=0, vmax=vmax, alpha=0.6, extent=extent)
            for i, j in example.evidence[k].nonzero().tolist():
                ax.add_patch(Rectangle((28 * j, 28 * i), 28, 28, fill=False, ec=HIGHLIGHT, lw=2))
            ax.set_xticks([])
            ax.set_yticks([])
            share = float(heat[k].sum())
            ax.set_title(f"{name}" + (f", patch {k}: {share:.2f}" if t > 1 else ""), fontsize=8)
    bar = fig.colorbar(image, ax=axes, shrink=0.8)
    bar.set_label("share of the answer's whole\nattention (text included)", fontsize=8)
    fig.suptitle(f"layer {layer}: {T.QUESTIONS[example.task]}\n-> {example.answer}   (evidence framed)", fontsize=9)
    return fig


def draw_evidence_ratios(ratios: Mapping[str, Mapping[str, Sequence[float]]]) -> Figure:
    """Bars: evidence attention / uniform, per task and decoder layer, for each model (seeded, trained)."""
    tasks = list(ratios)
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 2.8), sharey=True, squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        runs = ratios[task]
        width = 0.8 / len(runs)
        for i, (name, values) in enumerate(runs.items()):
            ax.bar(np.arange(len(values)) + i * width, values, width, label=name)
        ax.axhline(1, color="grey", lw=1, ls=":")
        ax.axhline(3, color="black", lw=1, ls="--")
        ax.text(0.02, 3, "3x: looks", transform=ax.get_yaxis_transform(), va="bottom", fontsize=8)
        ax.set_xticks(np.arange(len(values)) + width * (len(runs) - 1) / 2, [f"layer {k}" for k in range(len(values))])
        ax.set_title(task)
    axes[0][0].set_ylabel("x uniform (1 = no preference)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _theta(theta: float) -> str:
    """1000000.0 -> '1e6', 2.0 -> '2': rope_theta as the text writes it."""
    return f"{theta:g}".replace("e+0", "e").replace("e+", "e")


def draw_pair_rotation(
    head_dim: int, mrope_section: Sequence[int], thetas: Sequence[float], rows: int = T.SIZE // 28
) -> Figure:
    """The angle each rotary pair turns per position step, rope_inv_freq(head_dim, theta), for each rope_theta:
    one marker per pair (shape: the rope_theta; colour: the axis t, h or w that drives it, by mrope_section), log
    scale. The dashed line is 1 rad over the `rows` - 1 steps from a picture's first row of tokens to its last:
    a pair below it barely tells them apart. The fastest h and the fastest w pair of each rope_theta are labelled."""
    axes_of = pair_axes(mrope_section)
    assert len(axes_of) == head_dim // 2, (mrope_section, head_dim)
    fig, ax = plt.subplots(figsize=(10, 4.6))
    markers = itertools.cycle("sodD")  # one shape per rope_theta; later ones smaller, drawn on top
    handles = []
    lowest = 1.0
    for k, (theta, marker) in enumerate(zip(thetas, markers, strict=False)):  # shapes repeat past four
        speed = rope_inv_freq(head_dim, theta).numpy()
        lowest = min(lowest, float(speed.min()))
        size = max(11 - 3 * k, 5)
        for axis in "thw":
            idx = [i for i, a in enumerate(axes_of) if a == axis]
            ax.plot(
                idx,
                speed[idx],
                marker,
                ls="none",
                ms=size,
                color=AXIS_COLOURS[axis],
                mec="0.15",
                mew=0.7,
                zorder=3 + k,
                label=f"{axis} pairs, rope_theta {_theta(theta)}",
            )
            if axis in "hw":
                first = idx[0]
                ax.annotate(
                    f"fastest {axis}: {speed[first]:.2g}",
                    (first, speed[first]),
                    xytext=(8, 5),
                    textcoords="offset points",
                    fontsize=10,
                    color="0.1",
                )
        handles.append(
            Line2D(
                [], [], marker=marker, ls="none", ms=size, color="0.75", mec="0.15", label=f"rope_theta {_theta(theta)}"
            )
        )
    ax.axhline(1 / (rows - 1), color="0.3", ls="--", lw=1)
    ax.text(
        head_dim // 2 - 0.5,
        0.85 / (rows - 1),
        f"1 rad from a picture's first row of tokens to its last ({rows} rows)",
        ha="right",
        va="top",
        fontsize=10,
        color="0.3",
    )
    handles += [Patch(color=AXIS_COLOURS[a], label=f"driven by {a}") for a in "thw"]
    ax.legend(handles=handles, fontsize=10, loc="lower left", ncol=2)
    ax.set_yscale("log")
    ax.set_ylim(lowest / 4, 4)
    ax.set_xlim(-0.7, head_dim // 2 - 0.3)
    ax.set_xticks(range(head_dim // 2))
    ax.set_xlabel(f"rotary pair i (turns dims i and i + {head_dim // 2}); mrope_section {tuple(mrope_section)}")
    ax.set_ylabel("angle per position step (rad)")
    ax.set_title(f"How far each rotary pair turns when its position id grows by 1 (head_dim {head_dim})", fontsize=11)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def draw_theta_tradeoff(runs: Mapping[str, Mapping]) -> Figure:
    """The rope_theta ablation's record (benchmarks/twin_report.py ablation_theta): per text rope_theta, in order and
    evenly spaced, held-out accuracy per question (left) and the answer's attention on the evidence, x uniform, in
    its better layer (right)."""
    names = sorted(runs, key=lambda name: float(name.split()[0]))
    x = np.arange(len(names))
    labels = [_theta(float(n.split()[0])) + (" (shipped)" if "shipped" in n else "") for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), sharex=True)
    styles = {"when": ("o--", 9), "where": ("s-", 6), "colour": ("^-", 6)}  # when under colour at 100%: keep it seen
    for task in T.TASKS:
        style, size = styles.get(task, ("o-", 6))
        left.plot(x, [100 * runs[n][task] for n in names], style, ms=size, color=TASK_COLOURS[task], label=task)
        best = [max(runs[n][f"{task} attention"]) for n in names]
        right.plot(x, best, style, ms=size, color=TASK_COLOURS[task], label=task)
    left.set_ylabel("held-out accuracy (%)")
    left.set_ylim(0, 105)
    right.axhline(3, color="black", lw=1, ls="--")
    right.axhline(1, color="grey", lw=1, ls=":")
    right.set_ylabel("evidence attention, better layer\n(x uniform; dashed: 3x)")
    for ax in (left, right):
        ax.set_xticks(x, labels)
        ax.set_xlabel("the text decoder's rope_theta (one training run each)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    left.set_title("what it answers right", fontsize=10)
    right.set_title("what its answer looks at", fontsize=10)
    fig.tight_layout()
    return fig
