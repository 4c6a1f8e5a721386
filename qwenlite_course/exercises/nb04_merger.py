"""Exercises of notebook 04_merger (`exercises.describe` / `exercises.check` find them by name)."""

from __future__ import annotations

import math
from typing import Any

import torch

from .grading import _count_hint, _sizes, _whole_number, exercise

MERGER_GRID = (1, 30, 44)


def _merger_output_shape_7b() -> list[int]:
    from qwenlite.vision import PatchMerger

    vision = _sizes("7b").vision_config
    with torch.device("meta"):
        return list(PatchMerger(vision)(torch.empty(math.prod(MERGER_GRID), vision.hidden_size)).shape)


def _merger_output_numbers_7b() -> int:
    rows, width = _merger_output_shape_7b()
    return rows * width


@exercise(
    "merger_output_numbers_7b_1_30_44",
    """An image of grid (t, h, w) = (1, 30, 44) patches leaves the vision tower of Qwen2.5-VL-7B through the
    patch merger. Work out the shape (rows, width) of the merger's output, then answer how many numbers it holds
    (rows x width). Read the widths from data/configs/qwen2_5_vl_7b_instruct.config.json (vision_config).""",
    answer=_merger_output_numbers_7b,
)
def _merger_output_numbers(answer: Any) -> str | None:
    vision, text_3b = _sizes("7b").vision_config, _sizes("3b").vision_config.out_hidden_size
    rows, width = _merger_output_shape_7b()
    expected = rows * width
    value = _whole_number(answer, "numbers")
    if not isinstance(value, int) or value == expected:
        return value if isinstance(value, str) else None
    if value % width == 0 and value // width != rows:
        return (
            "the width is right, the rows are not: did you count patches? The merger joins each 2 x 2 group of "
            "patches into one row."
            if value == 4 * expected
            else "the width is right, the rows are not: one row per merged token (t x h x w / 4)."
        )
    if value % rows == 0:
        other = value // rows
        if other == vision.hidden_size:
            return "the rows are right; that width is the vision width: the merger maps to the text hidden size."
        if other == 4 * vision.hidden_size:
            return (
                "that is the MLP's inside (or the tower's output before the merger, patches x vision width): "
                "the merger's last Linear maps to the text hidden size."
            )
        if other == text_3b:
            return "the rows are right; that width is the 3B's text hidden size: this is the 7B."
    return _count_hint(
        answer,
        expected,
        "numbers",
        {},
        "rows: one per merged token (t x h x w / 4); width: the text hidden size (out_hidden_size).",
    )


def _merger_multiply_adds_7b() -> int:
    return _merger_products("7b")


@exercise(
    "merger_multiply_adds_7b",
    """How many multiply-adds does the patch merger's MLP of Qwen2.5-VL-7B spend on one LLM token? Count the
    products of its two Linear layers only (a multiply-add is one weight times one input, added to a sum), not
    the biases, the GELU or the RMSNorm. Read the sizes from data/configs/qwen2_5_vl_7b_instruct.config.json
    (vision_config: hidden_size, spatial_merge_size, out_hidden_size); think of what one row is after the
    merger's view.""",
    answer=_merger_multiply_adds_7b,
)
def _merger_multiply_adds(answer: Any) -> str | None:
    from torch import nn

    from qwenlite.vision import PatchMerger

    vision = _sizes("7b").vision_config
    with torch.device("meta"):
        merger = PatchMerger(vision)
    first, second = (m for m in merger.mlp if isinstance(m, nn.Linear))
    expected = _merger_multiply_adds_7b()
    value = _whole_number(answer, "multiply-adds")
    if isinstance(value, int):
        if value == sum(p.numel() for p in merger.parameters()):
            return "that is the merger's parameter count: leave out the biases and the RMSNorm's gain."
        if value == expected + first.out_features + second.out_features:
            return "the biases are additions, not multiply-adds: count the weights' products only."
        if value == vision.hidden_size * vision.out_hidden_size:
            return "that maps one patch, not a token: the MLP's input is the 4 patches of a 2 x 2 group side by side."
        if value == second.in_features * second.out_features:
            return "that is the second Linear alone: the first one (4D -> 4D) runs before it."
        if value == first.in_features * first.out_features:
            return "that is the first Linear alone: add the second one, 4D -> the 7B's text hidden size."
        if value == _merger_products("3b"):
            return "that is the 3B's merger: the 7B's text hidden size is wider."
    return _count_hint(
        answer,
        expected,
        "multiply-adds",
        {},
        "two Linears: 4D -> 4D, then 4D -> out_hidden_size, with D the vision width; in x out products each.",
    )


def _merger_products(model_size: str) -> int:
    """Multiply-adds of a real model's merger MLP per token: in x out of each of its Linears."""
    from torch import nn

    from qwenlite.vision import PatchMerger

    with torch.device("meta"):
        merger = PatchMerger(_sizes(model_size).vision_config)
    return sum(m.in_features * m.out_features for m in merger.mlp if isinstance(m, nn.Linear))
