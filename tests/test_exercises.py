"""qwenlite.exercises: each correct answer, worked out here with transformers or qwen-vl-utils, passes; each
plausible wrong answer fails with a hint that does not contain the correct value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Qwen2_5_VLConfig, RepetitionPenaltyLogitsProcessor
from transformers.vision_utils import get_vision_window_index

from qwenlite import exercises

DATA = Path(__file__).resolve().parents[1] / "data"


def _fails_without_giving_away(capsys, name: str, answer, correct: int | None, hint: str) -> None:
    """check() must refuse the answer and print a hint that holds `hint` and not the correct value
    (correct None: the exercise asks for a function, whose right outputs the hint must not list either)."""
    assert exercises.check(name, answer) is False
    printed = capsys.readouterr().out
    assert printed.startswith("not yet: ") and hint in printed, printed
    if correct is not None:
        assert str(correct) not in printed, printed


def _passes(capsys, name: str, answer) -> None:
    assert exercises.check(name, answer) is True
    assert capsys.readouterr().out == "correct\n"


def test_every_exercise_has_a_text_and_is_tested_here():
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    for name in exercises.EXERCISES:
        assert len(exercises.describe(name)) > 80, name
        assert name in tested, f"exercise {name} has no test_{name} here"


def test_unknown_exercises_are_named():
    with pytest.raises(ValueError, match=r"unknown exercise 'pad_tokens': the exercises are \["):
        exercises.check("pad_tokens", 1)
    with pytest.raises(ValueError, match="unknown exercise 'nope'"):
        exercises.describe("nope")


def test_pad_tokens_1920x1080(capsys, hf_processor):
    photo = np.zeros((1080, 1920, 3), np.uint8)  # height x width
    grid = hf_processor.image_processor(images=[photo], return_tensors="pt")["image_grid_thw"][0]
    correct = int(grid.prod()) // 4
    _passes(capsys, "pad_tokens_1920x1080", correct)
    _passes(capsys, "pad_tokens_1920x1080", torch.tensor(correct))
    name = "pad_tokens_1920x1080"
    _fails_without_giving_away(capsys, name, int(grid.prod()), correct, "patches instead of merged tokens")
    _fails_without_giving_away(capsys, name, 1920 * 1080 // 28**2, correct, "smart_resize rounds")  # not resized
    _fails_without_giving_away(capsys, name, 1920 * 1080 / 28**2, correct, "whole number")  # a fraction of a token


def test_window_count_1_30_44(capsys):
    _, cu = get_vision_window_index(torch.tensor([[1, 30, 44]]), spatial_merge_size=2, window_size=112, patch_size=14)
    correct = len(torch.unique_consecutive(cu)) - 1
    name = "window_count_1_30_44"
    _passes(capsys, name, correct)
    _fails_without_giving_away(capsys, name, (30 // 8) * (44 // 8), correct, "partial windows")  # whole windows only
    _fails_without_giving_away(capsys, name, -(-30 // 4) * -(-44 // 4), correct, "8 patches")  # 4-patch windows


def test_rope_deltas_layout(capsys, ref, config):
    ids = torch.tensor([[100, 101, 102] + [config.image_token_id] * 6 + [103, 104, 105, 106, 107]])
    types = (ids == config.image_token_id).long()
    _, deltas = ref.model.get_rope_index(ids, mm_token_type_ids=types, image_grid_thw=torch.tensor([[1, 4, 6]]))
    correct = int(deltas)
    name = "rope_deltas_layout"
    _passes(capsys, name, correct)
    _passes(capsys, name, deltas)
    _fails_without_giving_away(capsys, name, -correct, correct, "wrong sign")
    _fails_without_giving_away(capsys, name, 0, correct, "fewer positions than it has tokens")
    _fails_without_giving_away(capsys, name, correct - 15, correct, "one token per patch")  # a pad token per patch


def _learner_unpatchify(pixel_values: torch.Tensor, grid_thw) -> torch.Tensor:
    """A learner's answer, written from the processor's row order (patch 14, merge 2, temporal patch 2)."""
    t, h, w = grid_thw
    x = pixel_values.view(t, h // 2, w // 2, 2, 2, 3, 2, 14, 14)  # which patch, then (C, Tp, P, P)
    x = x.permute(0, 6, 5, 1, 3, 7, 2, 4, 8)  # (t, Tp, C, h/2, 2, P, w/2, 2, P)
    return x.reshape(t * 2, 3, h * 14, w * 14)


def test_unpatchify(capsys):
    name = "unpatchify"
    _passes(capsys, name, _learner_unpatchify)

    def swapped_blocks(pixel_values, grid_thw):  # the 2x2 block axes in the wrong order: only a square grid survives
        t, h, w = grid_thw
        x = pixel_values.view(t, h // 2, w // 2, 2, 2, 3, 2, 14, 14).permute(0, 6, 5, 2, 3, 7, 1, 4, 8)
        return x.reshape(t * 2, 3, h * 14, w * 14)

    _fails_without_giving_away(capsys, name, swapped_blocks, None, "wrong places")
    _fails_without_giving_away(capsys, name, lambda pv, g: pv.reshape(g[0], 3, g[1] * 14, g[2] * 14), None, "raised")
    _fails_without_giving_away(capsys, name, lambda pv, g: pv.reshape(-1), None, "wrong shape")
    _fails_without_giving_away(capsys, name, lambda pv, g: _learner_unpatchify(pv * 2, g), None, "values differ")


def test_kv_cache_bytes_7b_8k_bf16(capsys):
    text = Qwen2_5_VLConfig.from_pretrained(DATA / "configs" / "qwen2_5_vl_7b_instruct.config.json").text_config
    per_token = 2 * text.num_hidden_layers * text.num_key_value_heads * (text.hidden_size // text.num_attention_heads)
    correct = per_token * 8192 * 2  # keys and values of every layer, 2 bytes each
    name = "kv_cache_bytes_7b_8k_bf16"
    _passes(capsys, name, correct)
    all_heads = correct // text.num_key_value_heads * text.num_attention_heads
    _fails_without_giving_away(capsys, name, all_heads, correct, "key/value heads, not every query head")
    _fails_without_giving_away(capsys, name, correct * 2, correct, "float32")
    _fails_without_giving_away(capsys, name, correct // 2, correct, "both the keys and the values")


def _learner_next_token(logits: torch.Tensor, sequence: torch.Tensor, penalty: float) -> torch.Tensor:
    return RepetitionPenaltyLogitsProcessor(penalty)(sequence, logits.clone()).argmax(-1)


def test_greedy_with_repetition_penalty(capsys):
    name = "greedy_with_repetition_penalty"
    _passes(capsys, name, _learner_next_token)

    def divide_all(logits, sequence, penalty):  # divides negative logits too
        seen = logits.gather(1, sequence)
        return logits.scatter(1, sequence, seen / penalty).argmax(-1)

    def per_occurrence(logits, sequence, penalty):  # a token seen twice is penalised twice
        logits = logits.clone()
        for b, row in enumerate(sequence.tolist()):
            for token in row:
                value = logits[b, token]
                logits[b, token] = value / penalty if value > 0 else value * penalty
        return logits.argmax(-1)

    def always_lower(logits, sequence, penalty):  # right for penalty > 1, wrong below 1
        seen = logits.gather(1, sequence)
        return logits.scatter(1, sequence, torch.minimum(seen / penalty, seen * penalty)).argmax(-1)

    def shared_rows(logits, sequence, penalty):  # every row penalised by the tokens of all rows
        return _learner_next_token(logits, sequence.flatten()[None].expand(logits.shape[0], -1), penalty)

    def in_place(logits, sequence, penalty):  # right tokens, but the caller's logits are changed
        seen = logits.gather(1, sequence)
        return logits.scatter_(1, sequence, torch.where(seen < 0, seen * penalty, seen / penalty)).argmax(-1)

    for wrong, hint in [
        (lambda logits, sequence, penalty: logits.argmax(-1), "is the penalty applied at all"),
        (divide_all, "every logit is negative"),
        (per_occurrence, "penalised twice"),
        (always_lower, "penalty below 1"),
        (shared_rows, "its own sequence"),
        (in_place, "in place"),
        (lambda logits, sequence, penalty: _learner_next_token(logits, sequence, penalty)[:1], "one token id per row"),
    ]:
        _fails_without_giving_away(capsys, name, wrong, None, hint)


@pytest.fixture(scope="module")
def sample_video_grid() -> tuple[int, int]:
    """(temporal patches, video pad tokens) from qwen-vl-utils' own sampling and resizing at fps 2."""
    from qwenlite.reference import qwen_vl_utils_fetch_video

    frames, _, _ = qwen_vl_utils_fetch_video(DATA / "sample_video.mp4", fps=2.0)  # (T, C, H, W), resized
    t, _, h, w = frames.shape
    return t // 2, t // 2 * (h // 28) * (w // 28)


def test_temporal_patches_sample_video(capsys, sample_video_grid):
    correct, _ = sample_video_grid
    name = "temporal_patches_sample_video"
    _passes(capsys, name, correct)
    _fails_without_giving_away(capsys, name, 2 * correct, correct, "sampled frames")
    _fails_without_giving_away(capsys, name, 32, correct, "the file's frames")


def test_video_pad_tokens_sample_video(capsys, sample_video_grid):
    _, correct = sample_video_grid
    name = "video_pad_tokens_sample_video"
    _passes(capsys, name, correct)
    _fails_without_giving_away(capsys, name, 4 * correct, correct, "patches instead of merged tokens")
    _fails_without_giving_away(capsys, name, 2 * correct, correct, "instead of temporal patches")
    _fails_without_giving_away(capsys, name, 4 * (336 // 28) * (252 // 28), correct, "resized first")  # not resized
