"""The appendix's gallery of position-id bugs: each known bug's t, h, w ids next to the right ones.

Every panel draws ids that a function computed (qwenlite's `get_rope_index`, transformers' own code, or the bug
written out in a line); the figure only lays them side by side and marks the tokens where they differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from .decoder import AXIS_COLOURS  # t, h, w: one colour each in every figure
from .rope import _shade_spans


@dataclass
class PositionBug:
    """One known bug: the prompt's token kinds, the right ids and the buggy ids, both (3, L)."""

    title: str  # what goes wrong, in a few words
    where: str  # which release, and the issue or PR
    kinds: Sequence[str]  # one token kind per position (tokens.token_kinds): shades the vision spans
    right: torch.Tensor  # (3, L) t, h, w ids of the released model's rule
    bug: torch.Tensor  # (3, L) what the buggy code gives

    def __post_init__(self) -> None:
        if self.right.shape != self.bug.shape or self.right.shape[0] != 3 or len(self.kinds) != self.right.shape[1]:
            raise ValueError(
                f"{self.title}: right {tuple(self.right.shape)} and bug {tuple(self.bug.shape)} must both be "
                f"(3, L) with L = {len(self.kinds)} token kinds"
            )

    def differs(self) -> torch.Tensor:
        """(L,) bool: the tokens whose (t, h, w) differ."""
        return (self.right != self.bug).any(0)


AXIS_STYLES = {"t": (3.6, "-"), "h": (2.0, "-"), "w": (1.4, "--")}  # line width and dash per axis


def draw_position_bugs(bugs: Sequence[PositionBug]) -> Figure:
    """One row per bug: the right t, h, w ids on the left, the bug's on the right, differing tokens marked."""
    fig, axes = plt.subplots(len(bugs), 2, figsize=(13, 2.7 * len(bugs)), squeeze=False, sharey="row")
    for row, bug in zip(axes, bugs, strict=True):
        wrong = bug.differs()
        for ax, ids, label in ((row[0], bug.right, "right (the released model)"), (row[1], bug.bug, bug.where)):
            _shade_spans(ax, bug.kinds, label=True)  # each vision span named (image, video) in its own colour
            for axis, name in enumerate("thw"):  # t widest and w dashed: where the lines coincide, all stay visible
                width, dash = AXIS_STYLES[name]
                ax.plot(
                    ids[axis].tolist(),
                    color=AXIS_COLOURS[name],
                    lw=width,
                    ls=dash,
                    label=name,
                    drawstyle="steps-mid",
                )
            if ids is bug.bug and bool(wrong.any()):
                where = wrong.nonzero().flatten()
                axis = (bug.right != bug.bug).int().argmax(0)[where]  # the first of t, h, w that differs there
                ax.scatter(where.tolist(), ids[axis, where].tolist(), marker="x", color="crimson", s=18, zorder=3)
            ax.set_title(f"{bug.title}: {label}", fontsize=9.5)
            ax.set_xlabel("token index")
        row[0].set_ylabel("position id")
        for ax in row:
            ax.legend(fontsize=8, loc="upper left", ncol=3)
        row[1].text(
            0.99,
            0.04,
            f"{int(wrong.sum())} of {len(wrong)} tokens differ (x)",
            transform=row[1].transAxes,
            ha="right",
            fontsize=9,
            color="crimson",
        )
    fig.tight_layout()
    return fig
