"""Exercises of notebook 07_decoder_generation (`exercises.describe` / `exercises.check` find them by name)."""

from __future__ import annotations

from typing import Any

import torch

from .grading import DATA, _call, _count_hint, _graded_function, _whole_number, exercise

BUDGET = 4 * 2**30  # bytes set aside for the cache


def _kv_bytes_per_token_7b() -> int:
    """What one token adds to the 7B's bfloat16 cache, measured on qwenlite's KVCache (meta tensors, no memory)."""
    from qwenlite.config import QwenLiteConfig
    from qwenlite.decoder import KVCache

    text = QwenLiteConfig.from_pretrained(DATA / "configs" / "qwen2_5_vl_7b_instruct.config.json").text_config
    cache = KVCache()
    shape = (1, text.num_key_value_heads, 1, text.head_dim)  # one token
    for layer in range(text.num_hidden_layers):
        keys = values = torch.empty(shape, dtype=torch.bfloat16, device="meta")
        cache.update(layer, keys, values)
    return cache.nbytes


def _kv_cache_tokens_7b_4gib() -> int:
    return BUDGET // _kv_bytes_per_token_7b()  # whole tokens


@exercise(
    "kv_cache_tokens_7b_4gib_bf16",
    """A server sets aside 4 GiB (4 * 2**30 bytes) for the KV cache of Qwen2.5-VL-7B in bfloat16. How many tokens
    of one sequence (batch 1) fit, at most, as a whole number? Read the sizes from
    data/configs/qwen2_5_vl_7b_instruct.config.json (qwenlite.QwenLiteConfig.from_pretrained). Every decoder layer
    keeps a key and a value per token.""",
    answer=_kv_cache_tokens_7b_4gib,
)
def _kv_tokens(answer: Any) -> str | None:
    from qwenlite.config import QwenLiteConfig

    text = QwenLiteConfig.from_pretrained(DATA / "configs" / "qwen2_5_vl_7b_instruct.config.json").text_config
    expected, per_token = _kv_cache_tokens_7b_4gib(), _kv_bytes_per_token_7b()
    groups = text.num_attention_heads // text.num_key_value_heads
    slips = {  # what a common slip gives -> its hint
        BUDGET // (per_token * groups): "the cache stores the key/value heads, not every query head (grouped-query "
        "attention).",
        BUDGET // (per_token * 2): "did you count 4 bytes per number (float32)? bfloat16 takes 2.",
        BUDGET // (per_token // 2): "did you count both the keys and the values, at 2 bytes each?",
        expected + 1: "the last token would not fit: round down.",
    }
    value = _whole_number(answer, "tokens")
    if isinstance(value, int) and value in slips:
        return slips[value]
    return _count_hint(
        answer,
        expected,
        "tokens",
        {},
        "a token costs 2 (key and value) x layers x key/value heads x head dim x 2 bytes; divide, round down.",
    )


@exercise(
    "greedy_with_repetition_penalty",
    """Write next_token(logits, sequence, penalty) -> token ids: logits (B, V) float, sequence (B, S) the
    token ids so far (prompt included), penalty > 0. Apply transformers' repetition penalty to every token
    id that occurs in that row's sequence (a positive logit is divided by the penalty, a negative one
    multiplied by it), then take the argmax. Return a (B,) long tensor and leave logits unchanged.
    Pass the function itself: check("greedy_with_repetition_penalty", next_token).""",
)
@_graded_function
def _greedy(fn: Any) -> str | None:
    from qwenlite.generation import penalise_repeats

    for case, (logits, sequence, penalty) in _penalty_cases().items():
        expected = penalise_repeats(logits, sequence, penalty).argmax(-1)
        given = logits.clone()
        out = _call(fn, f"on the case '{case}'", given, sequence.clone(), penalty)
        if not torch.equal(given, logits):
            return "your function changed the logits tensor in place: work on a copy (the caller may reuse it)"
        if not isinstance(out, torch.Tensor):
            return f"expected a ({logits.shape[0]},) tensor of token ids, got a {type(out).__name__}"
        if tuple(out.shape) != tuple(expected.shape):
            return f"expected one token id per row, a ({logits.shape[0]},) tensor, got shape {tuple(out.shape)}"
        if not torch.equal(out.long(), expected):
            return PENALTY_HINTS[case]
    return None


PENALTY_HINTS = {
    "positive": "wrong token when a seen token has the largest (positive) logit: is the penalty applied at all?",
    "negative": "wrong token when every logit is negative: what does dividing a negative logit by a penalty "
    "above 1 do? The penalty must make a seen token less likely.",
    "repeated": "wrong token when a token occurs twice in the sequence: is it penalised twice? Each seen token "
    "id is penalised once, however often it occurs.",
    "below one": "wrong token with a penalty below 1, which makes a seen token more likely: does your code "
    "always lower a seen logit? The same rule (divide if positive, multiply if negative) holds for any penalty.",
    "batch": "wrong token in a batch whose rows have different sequences: is each row penalised by its own "
    "sequence only?",
}


def _penalty_cases() -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """Cases where one plausible mistake changes the argmax; V = 10 tokens, 2 rows each."""
    generator = torch.Generator().manual_seed(0)
    cases = {}
    logits = torch.rand(2, 10, generator=generator)  # values in [0, 1)
    logits[:, 3], logits[:, 7] = 2.0, 1.95  # token 3 seen: 2.0 / 1.05 = 1.90 falls below token 7
    cases["positive"] = (logits, torch.tensor([[3, 1], [3, 5]]), 1.05)
    logits = -1.5 - torch.rand(2, 10, generator=generator)  # all negative
    logits[:, 3], logits[:, 7] = -1.0, -1.02  # token 3 seen: -1.0 * 1.05 = -1.05 falls below token 7
    cases["negative"] = (logits, torch.tensor([[3, 1], [3, 5]]), 1.05)
    logits = torch.rand(2, 10, generator=generator)
    logits[:, 3], logits[:, 7] = 2.0, 1.85  # token 3 seen twice: once 1.905 (stays first), twice 1.81
    cases["repeated"] = (logits, torch.tensor([[3, 3, 1], [3, 3, 5]]), 1.05)
    logits = torch.rand(2, 10, generator=generator)
    logits[:, 3], logits[:, 7], logits[:, 5] = 1.0, 1.5, -0.2  # penalty 0.5: token 3 doubles to 2.0
    cases["below one"] = (logits, torch.tensor([[3, 5], [3, 5]]), 0.5)
    logits = torch.rand(2, 10, generator=generator)
    logits[0, 3], logits[0, 7], logits[1, 3], logits[1, 7] = 2.0, 1.95, 1.95, 2.0  # row 0 saw 3, row 1 saw 7
    cases["batch"] = (logits, torch.tensor([[3, 1], [7, 1]]), 1.05)
    return cases
