"""qwenlite_course/exercises/nb03_vision_block.py: each correct answer, worked out here with transformers or
qwen-vl-utils, passes; each plausible wrong answer fails with a hint that does not contain the correct value."""

from __future__ import annotations

import torch
from helpers import fails_without_giving_away, passes
from transformers.vision_utils import get_vision_window_index


def test_window_count_1_54_86(capsys):
    _, cu = get_vision_window_index(torch.tensor([[1, 54, 86]]), spatial_merge_size=2, window_size=112, patch_size=14)
    correct = len(torch.unique_consecutive(cu)) - 1
    name = "window_count_1_54_86"
    passes(capsys, name, correct)
    fails_without_giving_away(capsys, name, (54 // 8) * (86 // 8), correct, "partial windows")  # whole windows only
    fails_without_giving_away(capsys, name, -(-54 // 4) * -(-86 // 4), correct, "8 patches")  # 4-patch windows


def test_segments_video_3_12_28(capsys):
    from transformers.vision_utils import get_vision_cu_seqlens

    grid = torch.tensor([[3, 12, 28]])
    full = len(get_vision_cu_seqlens(grid)) - 1
    _, cu = get_vision_window_index(grid, spatial_merge_size=2, window_size=112, patch_size=14)
    windowed = len(torch.unique_consecutive(cu)) - 1
    correct = [full, windowed]
    name = "segments_video_3_12_28"
    passes(capsys, name, tuple(correct))
    passes(capsys, name, torch.tensor(correct))
    fails_without_giving_away(capsys, name, (windowed, full), correct, "swapped")
    fails_without_giving_away(capsys, name, (1, windowed), correct, "never across time")
    fails_without_giving_away(capsys, name, (full, windowed // 3), correct, "its own windows")
    fails_without_giving_away(capsys, name, (full, 3 * (6 // 4) * (14 // 4)), correct, "partial windows")
    fails_without_giving_away(capsys, name, (full, 3 * 12 * 28 // 16), correct, "too many")  # 4x4-patch windows
    fails_without_giving_away(capsys, name, windowed, correct, "in a list or tuple")


def test_rotary_ids_1_4_6(capsys):
    from transformers.vision_utils import get_vision_position_ids

    correct = get_vision_position_ids(torch.tensor([[1, 4, 6]]), 2)
    name = "rotary_ids_1_4_6"
    passes(capsys, name, correct)
    passes(capsys, name, correct.tolist())
    hh, ww = torch.meshgrid(torch.arange(4), torch.arange(6), indexing="ij")
    row_major = torch.stack([hh.flatten(), ww.flatten()], -1)  # the plain raster order, no 2x2 groups
    fails_without_giving_away(capsys, name, row_major, None, "wrong order")
    fails_without_giving_away(capsys, name, correct.flip(-1), None, "swapped")
    fails_without_giving_away(capsys, name, correct // 2, None, "count patches")  # merged-token coordinates
    fails_without_giving_away(capsys, name, correct.view(4, 6, 2), None, "expected shape (24, 2)")
    fails_without_giving_away(capsys, name, correct + 0.5, None, "whole numbers")
