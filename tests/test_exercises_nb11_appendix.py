"""qwenlite_course/exercises/nb11_appendix.py: each correct answer, worked out here with transformers or by the
formula, passes; each plausible wrong answer fails with a hint that does not contain the correct value."""

from __future__ import annotations

import math

import torch
from helpers import fails_without_giving_away, passes


def test_t_ids_int_cast_0_6_fps(capsys):
    seconds = 2 / 0.6  # 3.33 s per temporal patch
    correct = [k * math.trunc(seconds) * 2 for k in range(6)]  # v4.5x: int() first, then x tokens_per_second
    right = [math.floor(k * seconds * 2) for k in range(6)]
    name = "t_ids_int_cast_0_6_fps"
    passes(capsys, name, correct)
    passes(capsys, name, torch.tensor(correct))
    fails_without_giving_away(capsys, name, right, correct, "released rule")
    fails_without_giving_away(capsys, name, [0] * 6, correct, "truncates 3.33 to 3")
    fails_without_giving_away(capsys, name, correct[:5], correct, "expected 6 numbers")


def test_text_after_video_5x(capsys, ref, config):
    word = 100
    ids = [word, word, config.vision_start_token_id, *[config.video_token_id] * 16, config.vision_end_token_id, word]
    ids = torch.tensor([ids])
    positions, _ = ref.model.get_rope_index(
        ids,
        mm_token_type_ids=(ids == config.video_token_id).long() * 2,
        video_grid_thw=torch.tensor([[4, 4, 4]]),
        second_per_grid_ts=torch.tensor([1.0]),
    )
    correct = int(positions[0, 0, -2])
    released = 3 + 2 * 3 + 1  # the video starts at 3, its last t id is 3 + floor(3 x 1 s x 2), then max + 1
    assert correct != released
    name = "text_after_video_5x"
    passes(capsys, name, correct)
    fails_without_giving_away(capsys, name, released, correct, "released rule")
    fails_without_giving_away(capsys, name, correct + 7, correct, "max(h, w) / merge")
