"""qwenlite_course/exercises/nb01_preprocessing.py: each correct answer, worked out here with transformers or
qwen-vl-utils, passes; each plausible wrong answer fails with a hint that does not contain the correct value."""

from __future__ import annotations

import numpy as np
import torch
from helpers import fails_without_giving_away, passes


def test_pad_tokens_3024x4032_max1280(capsys, hf_processor):
    photo = np.zeros((3024, 4032, 3), np.uint8)  # height x width
    limits = {"shortest_edge": 3136, "longest_edge": 1280 * 28 * 28}  # min_pixels, max_pixels
    grid = hf_processor.image_processor(images=[photo], size=limits, return_tensors="pt")["image_grid_thw"][0]
    uncapped = hf_processor.image_processor(images=[photo], return_tensors="pt")["image_grid_thw"][0]  # hub limits
    correct = int(grid.prod()) // 4
    name = "pad_tokens_3024x4032_max1280"
    passes(capsys, name, correct)
    passes(capsys, name, torch.tensor(correct))
    fails_without_giving_away(capsys, name, int(grid.prod()), correct, "patches instead of merged tokens")
    fails_without_giving_away(capsys, name, 1280, correct, "a ceiling")  # the limit itself
    fails_without_giving_away(capsys, name, int(uncapped.prod()) // 4, correct, "shrinks both sides")  # no cap
    rounded = [round(side / 28 / (3024 * 4032 / (1280 * 784)) ** 0.5) for side in (3024, 4032)]  # round, not floor
    fails_without_giving_away(capsys, name, rounded[0] * rounded[1], correct, "down (floor)")
    fails_without_giving_away(capsys, name, 3024 * 4032 / 1003520, correct, "whole number")  # pixels / max_pixels


def _learner_unpatchify(pixel_values: torch.Tensor, grid_thw) -> torch.Tensor:
    """A learner's answer, written from the processor's row order (patch 14, merge 2, temporal patch 2)."""
    t, h, w = grid_thw
    x = pixel_values.view(t, h // 2, w // 2, 2, 2, 3, 2, 14, 14)  # which patch, then (C, Tp, P, P)
    x = x.permute(0, 6, 5, 1, 3, 7, 2, 4, 8)  # (t, Tp, C, h/2, 2, P, w/2, 2, P)
    return x.reshape(t * 2, 3, h * 14, w * 14)


def test_unpatchify(capsys):
    name = "unpatchify"
    passes(capsys, name, _learner_unpatchify)

    def swapped_blocks(pixel_values, grid_thw):  # the 2x2 block axes in the wrong order: only a square grid survives
        t, h, w = grid_thw
        x = pixel_values.view(t, h // 2, w // 2, 2, 2, 3, 2, 14, 14).permute(0, 6, 5, 2, 3, 7, 1, 4, 8)
        return x.reshape(t * 2, 3, h * 14, w * 14)

    fails_without_giving_away(capsys, name, swapped_blocks, None, "wrong places")
    fails_without_giving_away(capsys, name, lambda pv, g: pv.reshape(g[0], 3, g[1] * 14, g[2] * 14), None, "raised")
    fails_without_giving_away(capsys, name, lambda pv, g: pv.reshape(-1), None, "wrong shape")
    fails_without_giving_away(capsys, name, lambda pv, g: _learner_unpatchify(pv * 2, g), None, "values differ")


def test_temporal_patches_10min_clip(capsys):
    from qwen_vl_utils.vision_process import smart_nframes

    total, video_fps = 10 * 60 * 30, 30.0  # 10 minutes at 30 fps
    frames = smart_nframes({"fps": 2.0}, total_frames=total, video_fps=video_fps)  # qwen-vl-utils' own rule
    correct = frames // 2  # temporal_patch_size = 2 frames per temporal patch
    name = "temporal_patches_10min_clip"
    passes(capsys, name, correct)
    passes(capsys, name, torch.tensor(correct))
    fails_without_giving_away(capsys, name, frames, correct, "sampled frames")
    fails_without_giving_away(capsys, name, 10 * 60 * 2 // 2, correct, "clamps the frame count")  # no upper bound
    fails_without_giving_away(capsys, name, 10 * 60 * 2, correct, "clamps the frame count")
    fails_without_giving_away(capsys, name, total // 2, correct, "frames sampled = duration x fps")  # the file's frames
