"""qwenlite_course/exercises/nb09_training.py: each correct answer, worked out here with transformers or
qwen-vl-utils, passes; each plausible wrong answer fails with a hint that does not contain the correct value."""

from __future__ import annotations

import math

import pytest
from helpers import fails_without_giving_away, passes


@pytest.mark.slow
def test_labelled_tokens_box_answer(capsys, hf_processor):
    answer = (
        '```json\n[\n\t{"bbox_2d": [168, 280, 252, 364], "label": "green square"},\n'
        '\t{"bbox_2d": [56, 196, 112, 252], "label": "blue disc"},\n'
        '\t{"bbox_2d": [336, 28, 420, 112], "label": "red square"}\n]\n```'
    )
    correct = len(hf_processor.tokenizer(answer + "<|im_end|>", add_special_tokens=False)["input_ids"])
    name = "labelled_tokens_box_answer"
    passes(capsys, name, correct)
    fails_without_giving_away(capsys, name, correct - 1, correct, "<|im_end|>")
    fails_without_giving_away(capsys, name, correct + 1, correct, "the newline")
    fails_without_giving_away(capsys, name, len(answer), correct, "every digit")  # characters


def test_adamw_bytes_3b_language_model(capsys, hf_counts):
    counts = hf_counts["3b"]
    trainable = counts["all"] - counts["vision"]
    correct = 16 * trainable
    name = "adamw_bytes_3b_language_model"
    passes(capsys, name, correct)
    fails_without_giving_away(capsys, name, 12 * trainable, correct, "two numbers per parameter")
    fails_without_giving_away(capsys, name, 8 * trainable, correct, "both of AdamW's moments")
    fails_without_giving_away(capsys, name, 16 * counts["all"], correct, "vision tower is frozen")


def test_rope_theta_slow_columns(capsys):
    """Worked out from transformers' own rotary frequencies: the w section starts after t and h (4 + 6 = pair 10);
    the smallest whole rope_theta whose pair 10 turns under 0.02 rad."""
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRotaryEmbedding

    def pair_10(theta: float) -> float:
        config = Qwen2_5_VLConfig(
            text_config={
                "hidden_size": 128,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "rope_parameters": {"rope_type": "default", "mrope_section": [4, 6, 6], "rope_theta": theta},
            }
        ).text_config
        return float(Qwen2_5_VLRotaryEmbedding(config).inv_freq[10])

    correct = math.ceil(0.02 ** (-32 / 20))  # rope_theta ** (-20 / 32) = 0.02, then the next whole number
    assert pair_10(correct) < 0.02 <= pair_10(correct - 1)  # transformers' own frequencies agree
    name = "rope_theta_slow_columns"
    passes(capsys, name, correct)
    fails_without_giving_away(capsys, name, correct - 1, correct, "round up")
    fails_without_giving_away(
        capsys, name, 23, correct, "first pair after the t and h sections"
    )  # 2i/16: pair 10 as 20
    fails_without_giving_away(capsys, name, 6_250_000, correct, "first pair after the t and h sections")  # the h pair 4
