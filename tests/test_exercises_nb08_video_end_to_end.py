"""qwenlite_course/exercises/nb08_video_end_to_end.py: each correct answer, worked out here with transformers or
qwen-vl-utils, passes; each plausible wrong answer fails with a hint that does not contain the correct value."""

from __future__ import annotations

import torch
from helpers import DATA, fails_without_giving_away, passes
from transformers.vision_utils import get_vision_window_index


def test_marker_patch_sample_video_fps4_5(capsys, ref):
    """The marker found in qwen-vl-utils' own frames (red pixels), its t offset from transformers' get_rope_index."""
    from qwenlite_course.reference import qwen_vl_utils_fetch_video

    frames, _, sample_fps = qwen_vl_utils_fetch_video(DATA / "sample_video.mp4", fps=4.5)  # (T, C, H, W), resized
    corner = frames[:, :, :4, :4].float().mean((2, 3))  # (T, C): the top-left corner's colour
    red = (corner[:, 0] > 200) & (corner[:, 1] < 60) & (corner[:, 2] < 60)
    first = int(red.nonzero()[0])
    patch = first // 2
    t, _, h, w = frames.shape
    grid = torch.tensor([[t // 2, h // 14, w // 14]])
    ids = torch.full((1, int(grid.prod()) // 4), ref.config.video_token_id)
    positions, _ = ref.model.get_rope_index(
        ids,
        mm_token_type_ids=torch.full_like(ids, 2),
        video_grid_thw=grid,
        second_per_grid_ts=torch.tensor([2 / sample_fps]),
    )
    t_per_patch = positions[0, 0].reshape(t // 2, -1)[:, 0]  # at 4.5 fps two patches can share a t id
    correct = [patch, int(t_per_patch[patch] - t_per_patch[0])]
    assert correct[1] != 2 * 2 and correct[1] not in (patch, 2 * patch)  # the mistakes below are all distinct
    name = "marker_patch_sample_video_fps4_5"
    passes(capsys, name, tuple(correct))
    fails_without_giving_away(capsys, name, (first, correct[1]), correct, "sampled frame's index")
    fails_without_giving_away(capsys, name, (17 // 2, correct[1]), correct, "not the file's 32 frames")
    fails_without_giving_away(capsys, name, (first, first), correct, "not one per temporal patch")
    fails_without_giving_away(capsys, name, (patch, 2 * 2), correct, "the marker's own start time")
    fails_without_giving_away(capsys, name, (patch, 2 * patch), correct, "1 s per temporal patch")
    fails_without_giving_away(capsys, name, (patch, correct[1] + 2), correct, "second_per_grid_t = 2 frames / 4.5")


def test_windows_sample_video_fps4(capsys):
    from qwenlite_course.reference import qwen_vl_utils_fetch_video

    frames, _, _ = qwen_vl_utils_fetch_video(DATA / "sample_video.mp4", fps=4.0)  # (T, C, H, W), resized
    t, _, h, w = frames.shape

    def windows(grid):
        _, cu = get_vision_window_index(torch.tensor([grid]), spatial_merge_size=2, window_size=112, patch_size=14)
        return len(torch.unique_consecutive(cu)) - 1

    correct = windows([t // 2, h // 14, w // 14])
    name = "windows_sample_video_fps4"
    passes(capsys, name, correct)
    fails_without_giving_away(capsys, name, 2 * correct, correct, "every sampled frame")
    fails_without_giving_away(capsys, name, windows([1, h // 14, w // 14]), correct, "one temporal patch's")
    fails_without_giving_away(capsys, name, t // 2 * (h // 112) * (w // 112), correct, "partial windows")
    fails_without_giving_away(capsys, name, windows([t // 2, 252 // 14, 336 // 14]), correct, "resize the frames")
