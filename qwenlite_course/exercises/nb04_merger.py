"""Exercises of notebook 04_merger (`exercises.describe` / `exercises.check` find them by name)."""

from __future__ import annotations

from typing import Any

import torch

from .grading import _count_hint, _sizes, _whole_number, _whole_numbers, exercise


@exercise(
    "merger_output_shape_1_30_44",
    """An image of grid (t, h, w) = (1, 30, 44) patches leaves the vision tower of Qwen2.5-VL-3B through the
    patch merger. What is the shape of the merger's output? Answer (rows, width). Read the widths from
    data/configs/qwen2_5_vl_3b_instruct.config.json.""",
)
def _merger_shape(answer: Any) -> str | None:
    from qwenlite.vision import PatchMerger

    vision = _sizes("3b").vision_config
    with torch.device("meta"):
        merger = PatchMerger(vision)
        expected = list(merger(torch.empty(1 * 30 * 44, vision.hidden_size)).shape)
    value = _whole_numbers(answer, 2, "rows, width")
    if isinstance(value, str):
        return value
    rows, width = value
    if value == expected:
        return None
    hints = []
    if rows != expected[0]:
        hints.append(
            "rows: did you count patches? The merger joins each 2 x 2 group of patches into one row"
            if rows == 4 * expected[0]
            else "rows: one per merged token (t x h x w / 4)"
        )
    if width != expected[1]:
        hints.append(
            "width: that is the vision width; the merger maps to the text hidden size (out_hidden_size)"
            if width == vision.hidden_size
            else "width: that is the MLP's inside; its last Linear maps to the text hidden size"
            if width == vision.hidden_size * 4
            else "width: the merger's output feeds the decoder, so it is the text hidden size"
        )
    return "; ".join(hints) + "."


@exercise(
    "merger_input_width_3b",
    """What is the input width of the merger MLP's first Linear in Qwen2.5-VL-3B (model.visual.merger.mlp[0])?
    Read the sizes from data/configs/qwen2_5_vl_3b_instruct.config.json; think of what one row is after the
    merger's view.""",
)
def _merger_width(answer: Any) -> str | None:
    from qwenlite.vision import PatchMerger

    vision = _sizes("3b").vision_config
    with torch.device("meta"):
        expected = PatchMerger(vision).mlp[0].in_features
    value = _whole_number(answer, "features")
    if isinstance(value, int):
        if value == vision.out_hidden_size:
            return "that is the merger's output width (the text hidden size); the input comes from the tower."
        if value == 4 * vision.out_hidden_size:
            return "4 x the text hidden size: the four patches side by side carry the vision width, not the text's."
    return _count_hint(
        answer,
        expected,
        "features",
        {1 / 4: "one row of the MLP's input holds the 2 x 2 = 4 patches of one token side by side."},
        "spatial_merge_size**2 patches side by side, each of the vision width.",
    )
