"""Exercises of notebook 00_tour (`exercises.describe` / `exercises.check` find them by name)."""

from __future__ import annotations

from typing import Any

from .grading import _count_hint, _parameter_counts, _sizes, _whole_number, exercise


def _vision_params_7b() -> int:
    return _parameter_counts("7b")["vision"]


@exercise(
    "vision_params_7b",
    """How many parameters does the vision tower of Qwen2.5-VL-7B hold, the patch merger included? Read the
    sizes from data/configs/qwen2_5_vl_7b_instruct.config.json (qwenlite.QwenLiteConfig.from_pretrained), then
    count: build qwenlite.QwenLiteVL(config) inside `with torch.device("meta"):` (shapes, no memory) and add up
    the numel() of model.visual's parameters, or work it out by hand from the widths.""",
    answer=_vision_params_7b,
)
def _vision_params(answer: Any) -> str | None:
    counts = _parameter_counts("7b")
    value = _whole_number(answer, "parameters")
    if isinstance(value, int):
        if value == counts["vision"] - counts["merger"]:
            return "that is the tower without its merger (ln_q and the two-layer MLP): count the merger too."
        if value == _parameter_counts("3b")["vision"]:
            return "that is the 3B's tower: the 7B's merger maps to its wider text hidden size."
        if value == counts["all"]:
            return "that is the whole model: count only model.visual."
    return _count_hint(
        answer,
        _vision_params_7b(),
        "parameters",
        {},
        "32 blocks (two RMSNorms, qkv and proj with biases, a SwiGLU MLP with biases), the patch embedding "
        "(no bias) and the merger (RMSNorm, Linear 4D -> 4D, Linear 4D -> text hidden, both with biases).",
    )


def _language_params_3b() -> int:
    return _parameter_counts("3b")["language"]


@exercise(
    "language_model_params_3b",
    """How many parameters of Qwen2.5-VL-3B are outside the vision tower: the embedding table, the 36 decoder
    layers, the final norm and lm_head? In the 3B lm_head is tied to the embedding table (one matrix, counted
    once). Count as in vision_params_7b (qwenlite.QwenLiteVL on the meta device: model.parameters() yields a
    tied matrix once). Divide by the whole model's count to see the decoder's share.""",
    answer=_language_params_3b,
)
def _language_params(answer: Any) -> str | None:
    counts = _parameter_counts("3b")
    text = _sizes("3b").text_config
    table = text.vocab_size * text.hidden_size
    value = _whole_number(answer, "parameters")
    if isinstance(value, int):
        if value == counts["language"] + table:
            return "lm_head is counted twice: in the 3B it is the embedding table itself (tie_word_embeddings)."
        if value == counts["language"] - table:
            return "the embedding table (vocab x hidden) is missing: it is a large share of a 3B model."
        if value == counts["all"]:
            return "that is the whole model: leave out the vision tower (model.visual)."
    return _count_hint(
        answer,
        _language_params_3b(),
        "parameters",
        {},
        "embedding table + 36 x (two RMSNorms, q/k/v with biases and o without, grouped-query k/v of 2 heads, "
        "a SwiGLU MLP without biases) + the final norm.",
    )
