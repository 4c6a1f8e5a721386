"""Exercises of notebook 09_training (`exercises.describe` / `exercises.check` find them by name)."""

from __future__ import annotations

import functools
from typing import Any

from .grading import _count_hint, _parameter_counts, _whole_number, exercise


@functools.cache
def _point_answer_labels() -> int:
    return len(_twin_tokenizer()('{"point_2d": [9, 8]}<|im_end|>', add_special_tokens=False)["input_ids"])


@exercise(
    "labelled_tokens_point_answer",
    """The twin answers "Point to the shape." in Qwen2.5-VL's format, e.g. {"point_2d": [9, 8]} for a shape
    centred at x = 9, y = 8 px. In that training row, how many tokens carry a label (are not -100)? Use the
    twin's tokenizer (processor.tokenizer) and the rule of qwenlite.train.answer_labels.""",
    answer=_point_answer_labels,
)
def _labelled_tokens(answer: Any) -> str | None:
    expected = _point_answer_labels()
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
