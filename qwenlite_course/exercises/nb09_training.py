"""Exercises of notebook 09_training (`exercises.describe` / `exercises.check` find them by name)."""

from __future__ import annotations

import functools
import math
from typing import Any

from .grading import _count_hint, _parameter_counts, _whole_number, exercise

# Qwen2.5-VL's answer to "Locate every shape, output bbox coordinates in JSON" on a 448 x 448 picture: a fenced
# JSON list of boxes in absolute pixels (notebook 10, section 2)
BOX_ANSWER = (
    '```json\n[\n\t{"bbox_2d": [168, 280, 252, 364], "label": "green square"},\n'
    '\t{"bbox_2d": [56, 196, 112, 252], "label": "blue disc"},\n'
    '\t{"bbox_2d": [336, 28, 420, 112], "label": "red square"}\n]\n```'
)


@functools.cache
def _box_answer_labels() -> int:
    return len(_twin_tokenizer()(f"{BOX_ANSWER}<|im_end|>", add_special_tokens=False)["input_ids"])


@exercise(
    "labelled_tokens_box_answer",
    f"""Asked "Locate every shape, output bbox coordinates in JSON" about a 448 x 448 picture with three shapes,
    Qwen2.5-VL answers in absolute pixels, in a fenced JSON list (newlines and tabs included; the exact string is
    qwenlite_course.exercises.nb09_training.BOX_ANSWER): {BOX_ANSWER!r}. Trained on that answer, how many
    tokens of the row carry a label (are not -100)? Use the twin's tokenizer (processor.tokenizer) and the rule
    of qwenlite.train.answer_labels.""",
    answer=_box_answer_labels,
)
def _labelled_tokens(answer: Any) -> str | None:
    expected = _box_answer_labels()
    value = _whole_number(answer, "tokens")
    if isinstance(value, int) and value == expected - 1:
        return "one short: the <|im_end|> that closes the answer is labelled too (the model must learn to stop)."
    if isinstance(value, int) and value == expected + 1:
        return "one too many: the newline after <|im_end|> belongs to the template, not to the answer."
    return _count_hint(
        answer,
        expected,
        "tokens",
        {},
        "the Qwen2 tokenizer writes every digit as its own token; count the JSON's pieces with "
        "processor.tokenizer.tokenize(...).",
    )


def _twin_tokenizer():
    from qwenlite.processor import Processor

    from .. import checkpoint

    return Processor.from_pretrained(checkpoint.tiny_twin()).tokenizer


def _adamw_bytes_3b() -> int:
    counts = _parameter_counts("3b")
    return 16 * (counts["all"] - counts["vision"])  # 4 numbers of 4 bytes per trainable parameter


@exercise(
    "adamw_bytes_3b_language_model",
    """Full fine-tuning of Qwen2.5-VL-3B with AdamW in float32, the vision tower (model.visual, merger
    included) frozen: how many bytes do the trainable parameters need for their weights, their gradients and
    AdamW's two moments together? (4 bytes per number; the tied lm_head is the embedding, counted once.)""",
    answer=_adamw_bytes_3b,
)
def _adamw_bytes(answer: Any) -> str | None:
    counts = _parameter_counts("3b")
    trainable = counts["all"] - counts["vision"]
    return _count_hint(
        answer,
        _adamw_bytes_3b(),
        "bytes",
        {
            0.75: "AdamW keeps two numbers per parameter (the mean and the mean square of its gradient).",
            0.5: "count the weights, the gradients and both of AdamW's moments.",
            counts["all"] / trainable: "the vision tower is frozen: it needs no gradient and no AdamW state.",
        },
        "4 numbers per trainable parameter (weight, gradient, first and second moment), 4 bytes each; "
        "count the parameters on the meta device.",
    )


def _slow_column_theta() -> int:
    from qwenlite.layers import rope_inv_freq

    from ..checkpoint import TWIN_CONFIG

    text = TWIN_CONFIG["text_config"]
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    t, h, _ = text["rope_parameters"]["mrope_section"]
    pair = t + h  # the fastest pair that w drives
    theta = math.floor(0.02 ** (-head_dim / (2 * pair))) + 1  # solves rope_theta ** (-2 * pair / head_dim) = 0.02
    assert rope_inv_freq(head_dim, theta)[pair] < 0.02 <= rope_inv_freq(head_dim, theta - 1)[pair]  # the decoder's
    return theta


@exercise(
    "rope_theta_slow_columns",
    """The twin's text heads have head_dim 32 and mrope_section (4, 6, 6); pair i turns rope_theta ** (-2i / 32)
    rad per step of its position id (section 9). What is the smallest whole rope_theta at which the fastest pair
    that the column id w drives turns less than 0.02 rad per column?""",
    answer=_slow_column_theta,
)
def _slow_columns(answer: Any) -> str | None:
    expected = _slow_column_theta()
    value = _whole_number(answer, "rope_theta")
    if isinstance(value, int) and value == expected - 1:
        return "at that rope_theta the pair still turns a little more than 0.02 rad: round up, not down."
    return _count_hint(
        answer,
        expected,
        "rope_theta",
        {},
        "the fastest w pair is the first pair after the t and h sections; solve rope_theta ** (-2i / 32) = 0.02.",
    )
