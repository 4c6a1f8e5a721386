"""qwenlite_course/exercises/nb00_tour.py: each correct answer, worked out here with transformers or
qwen-vl-utils, passes; each plausible wrong answer fails with a hint that does not contain the correct value."""

from __future__ import annotations

import pytest
from helpers import fails_without_giving_away, passes


@pytest.mark.slow
def test_vision_params_7b(capsys, hf_counts):
    counts = hf_counts["7b"]
    correct = counts["vision"]
    name = "vision_params_7b"
    passes(capsys, name, correct)
    fails_without_giving_away(capsys, name, correct - counts["merger"], correct, "without its merger")
    fails_without_giving_away(capsys, name, hf_counts["3b"]["vision"], correct, "the 3B's tower")
    fails_without_giving_away(capsys, name, counts["all"], correct, "the whole model")
    fails_without_giving_away(capsys, name, correct - 32 * 1280, correct, "close, but not equal")  # one bias missed


@pytest.mark.slow
def test_language_model_params_3b(capsys, hf_counts):
    counts = hf_counts["3b"]
    correct = counts["all"] - counts["vision"]
    name = "language_model_params_3b"
    passes(capsys, name, correct)
    fails_without_giving_away(capsys, name, correct + counts["table"], correct, "counted twice")  # untied lm_head
    fails_without_giving_away(capsys, name, correct - counts["table"], correct, "embedding table")
    fails_without_giving_away(capsys, name, counts["all"], correct, "the whole model")
