"""qwenlite_course/exercises/nb01_preprocessing.py: each correct answer, worked out here with transformers or
qwen-vl-utils, passes; each plausible wrong answer fails with a hint that does not contain the correct value."""

from __future__ import annotations

import numpy as np
import torch
from helpers import fails_without_giving_away, passes


def test_pad_tokens_1920x1080(capsys, hf_processor):
    photo = np.zeros((1080, 1920, 3), np.uint8)  # height x width
    grid = hf_processor.image_processor(images=[photo], return_tensors="pt")["image_grid_thw"][0]
    correct = int(grid.prod()) // 4
    passes(capsys, "pad_tokens_1920x1080", correct)
    passes(capsys, "pad_tokens_1920x1080", torch.tensor(correct))
    name = "pad_tokens_1920x1080"
    fails_without_giving_away(capsys, name, int(grid.prod()), correct, "patches instead of merged tokens")
    fails_without_giving_away(capsys, name, 1920 * 1080 // 28**2, correct, "smart_resize rounds")  # not resized
    fails_without_giving_away(capsys, name, 1920 * 1080 / 28**2, correct, "whole number")  # a fraction of a token


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


def test_temporal_patches_sample_video(capsys, sample_video_grid):
    correct, _ = sample_video_grid
    name = "temporal_patches_sample_video"
    passes(capsys, name, correct)
    fails_without_giving_away(capsys, name, 2 * correct, correct, "sampled frames")
    fails_without_giving_away(capsys, name, 32, correct, "the file's frames")
