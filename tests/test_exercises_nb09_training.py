"""qwenlite_course/exercises/nb09_training.py: each correct answer, worked out here with transformers or
qwen-vl-utils, passes; each plausible wrong answer fails with a hint that does not contain the correct value."""

from __future__ import annotations

import pytest
from helpers import fails_without_giving_away, passes


@pytest.mark.slow
def test_labelled_tokens_point_answer(capsys, hf_processor):
    correct = len(hf_processor.tokenizer('{"point_2d": [9, 8]}<|im_end|>', add_special_tokens=False)["input_ids"])
    name = "labelled_tokens_point_answer"
    passes(capsys, name, correct)
    fails_without_giving_away(capsys, name, correct - 1, correct, "<|im_end|>")
    fails_without_giving_away(capsys, name, correct + 1, correct, "the newline")
    fails_without_giving_away(capsys, name, len('{"point_2d": [9, 8]}'), correct, "every digit")  # characters


def test_adamw_bytes_3b_language_model(capsys, hf_counts):
    counts = hf_counts["3b"]
    trainable = counts["all"] - counts["vision"]
    correct = 16 * trainable
    name = "adamw_bytes_3b_language_model"
    passes(capsys, name, correct)
    fails_without_giving_away(capsys, name, 12 * trainable, correct, "two numbers per parameter")
    fails_without_giving_away(capsys, name, 8 * trainable, correct, "both of AdamW's moments")
    fails_without_giving_away(capsys, name, 16 * counts["all"], correct, "vision tower is frozen")
