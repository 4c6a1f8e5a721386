"""Exercises of notebook 03_vision_block (`exercises.describe` / `exercises.check` find them by name)."""

from __future__ import annotations

from typing import Any

import torch

from .grading import _count_hint, _whole_number, _whole_numbers, exercise

WINDOW_GRID = (1, 54, 86)


def _window_count_1_54_86() -> int:
    from qwenlite.config import VisionConfig
    from qwenlite.vision import get_window_index

    c = VisionConfig()
    _, cu_seqlens = get_window_index(torch.tensor([WINDOW_GRID]), c.window_size, c.patch_size, c.spatial_merge_size)
    return len(cu_seqlens) - 1


@exercise(
    "window_count_1_54_86",
    """The vision tower's windowed blocks attend inside windows of 112x112 pixels. For one image of grid
    (t, h, w) = (1, 54, 86) patches of 14 pixels (756 x 1204 px, H x W), how many windows are there? Predict
    it by hand, on paper, before you run anything: a window is 112 / 14 = 8 patches, or 4 merged tokens, on a
    side; the merged grid is padded up to whole windows, and the padding is dropped. Then check your number
    with the rule written in section 3.""",
    answer=_window_count_1_54_86,
)
def _window_count(answer: Any) -> str | None:
    expected = _window_count_1_54_86()
    value = _whole_number(answer, "windows")
    if isinstance(value, int) and 0 < value < expected:
        return (
            "too few: did you drop the partial windows? 54 and 86 patches are not whole numbers of windows; "
            "the windows on the bottom and right edges are smaller, but each one counts."
        )
    return _count_hint(
        answer, expected, "windows", {}, "a window is 8 patches (4 merged tokens) on a side, partial ones included."
    )


SEGMENTS_GRID = (3, 12, 28)


def _segments_3_12_28() -> list[int]:
    from qwenlite.config import VisionConfig
    from qwenlite.vision import vision_layout

    layout = vision_layout(torch.tensor([SEGMENTS_GRID]), VisionConfig())
    return [len(layout.cu_frames) - 1, len(layout.cu_windows) - 1]


@exercise(
    "segments_video_3_12_28",
    """A video of grid (t, h, w) = (3, 12, 28) patches goes through the vision tower. Attention runs inside
    segments of the packed patches: in the full-attention blocks (7, 15, 23, 31) a segment is one temporal
    patch (a frame pair), in the other blocks one window of 112 x 112 pixels (8 x 8 patches, edge windows
    smaller). How many segments does each kind of block see? Answer (full, windowed), e.g. (1, 2).""",
    answer=_segments_3_12_28,
)
def _segments(answer: Any) -> str | None:
    expected = _segments_3_12_28()
    value = _whole_numbers(answer, 2, "segments: full, windowed")
    if isinstance(value, str):
        return value
    full, windowed = value
    if value == expected:
        return None
    if value == expected[::-1]:
        return "the two are swapped: answer (full-attention segments, windowed segments)."
    hints = []
    if full != expected[0]:
        hints.append(
            "full attention: one segment per temporal patch (a frame pair attends to itself, never across time)"
            if full == 1
            else "full attention: each temporal patch is one segment"
        )
    if windowed != expected[1]:
        per_patch = expected[1] // SEGMENTS_GRID[0]
        if windowed == per_patch:
            hints.append("windowed: every temporal patch is cut into its own windows")
        elif windowed < expected[1]:
            hints.append("windowed: too few; the partial windows on the bottom and right edges count too")
        else:
            hints.append("windowed: too many; a window is 8 x 8 patches (4 x 4 merged tokens)")
    return "; ".join(hints) + "."


@exercise(
    "rotary_ids_1_4_6",
    """Write down the 2-D rotary ids of an image of grid (t, h, w) = (1, 4, 6): a (24, 2) tensor of long with
    one (h, w) pair per patch, the patch's row and column in the patch grid, in the order the processor emits
    the patches (each 2 x 2 group of patches that becomes one token is consecutive, groups row by row).
    Write it by hand: sketch the 4 x 6 grid, number the patches in the processor's order, and read off the
    pairs; run section 2's code only to check. Answer the tensor (torch.tensor([[0, 0], [0, 1], ...])).""",
)
def _rotary_ids(answer: Any) -> str | None:
    from qwenlite.config import VisionConfig
    from qwenlite.vision import vision_rotary_ids

    expected = vision_rotary_ids(torch.tensor([[1, 4, 6]]), VisionConfig.spatial_merge_size)
    if not isinstance(answer, torch.Tensor):
        try:
            answer = torch.tensor(answer)
        except (TypeError, ValueError, RuntimeError):
            return f"expected a (24, 2) tensor of whole numbers, got {type(answer).__name__}"
    if tuple(answer.shape) != tuple(expected.shape):
        return f"expected shape (24, 2): one (h, w) pair per patch; got {tuple(answer.shape)}"
    if answer.is_floating_point() and not torch.equal(answer, answer.round()):
        return "ids are whole numbers (a patch's row and column)"
    answer = answer.long()
    if torch.equal(answer, expected):
        return None
    if torch.equal(answer, expected.flip(-1)):
        return "the columns are swapped: each pair is (h, w), the row first."
    as_rows = {tuple(r) for r in answer.tolist()}
    if as_rows == {tuple(r) for r in expected.tolist()} and len(as_rows) == len(expected):
        return (
            "the right pairs in the wrong order: the processor does not go row by row over patches; each 2 x 2 "
            "group of patches (one merged token) comes as 4 consecutive rows."
        )
    if torch.equal(answer, expected // VisionConfig.spatial_merge_size):
        return "the ids count patches (4 rows, 6 columns), not merged tokens."
    return "some pairs are not the (row, column) of any patch of a 4 x 6 grid, or appear twice."
