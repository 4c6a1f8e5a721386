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


def test_windows_720x1080_8s(capsys):
    from qwen_vl_utils.vision_process import smart_nframes
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    frames = smart_nframes({"fps": 2.0}, total_frames=8 * 30, video_fps=30.0)  # qwen-vl-utils' own rule
    # qwen-vl-utils 0.0.x: a frame's limit is max(min(768 tokens, total / frames x 2), 1.05 x 128 tokens) in pixels
    limit = max(min(768 * 28 * 28, 128000 * 28 * 28 * 0.9 / frames * 2), int(128 * 28 * 28 * 1.05))
    h, w = smart_resize(720, 1080, 28, 128 * 28 * 28, limit)

    def windows(grid):
        _, cu = get_vision_window_index(torch.tensor([grid]), spatial_merge_size=2, window_size=112, patch_size=14)
        return len(torch.unique_consecutive(cu)) - 1

    t = frames // 2
    correct = windows([t, h // 14, w // 14])
    name = "windows_720x1080_8s"
    passes(capsys, name, correct)
    fails_without_giving_away(capsys, name, 2 * correct, correct, "every sampled frame")
    fails_without_giving_away(capsys, name, windows([1, h // 14, w // 14]), correct, "one temporal patch's")
    fails_without_giving_away(capsys, name, t * (h // 112) * (w // 112), correct, "partial windows")
    fails_without_giving_away(capsys, name, windows([t, 728 // 14, 1092 // 14]), correct, "resize the frames")
