"""qwenlite_course/exercises/nb07_decoder_generation.py: each correct answer, worked out here with transformers or
qwen-vl-utils, passes; each plausible wrong answer fails with a hint that does not contain the correct value."""

from __future__ import annotations

import torch
from helpers import DATA, fails_without_giving_away, passes
from transformers import Qwen2_5_VLConfig, RepetitionPenaltyLogitsProcessor


def test_kv_cache_tokens_7b_4gib_bf16(capsys):
    text = Qwen2_5_VLConfig.from_pretrained(DATA / "configs" / "qwen2_5_vl_7b_instruct.config.json").text_config
    per_token = 2 * text.num_hidden_layers * text.num_key_value_heads * (text.hidden_size // text.num_attention_heads)
    correct = 4 * 2**30 // (per_token * 2)  # keys and values of every layer, 2 bytes each
    name = "kv_cache_tokens_7b_4gib_bf16"
    passes(capsys, name, correct)
    all_heads = 4 * 2**30 // (per_token * 2 // text.num_key_value_heads * text.num_attention_heads)
    fails_without_giving_away(capsys, name, all_heads, correct, "key/value heads, not every query head")
    fails_without_giving_away(capsys, name, correct // 2, correct, "float32")
    fails_without_giving_away(capsys, name, correct * 2, correct, "both the keys and the values")
    fails_without_giving_away(capsys, name, correct + 1, correct, "round down")


def _learner_next_token(logits: torch.Tensor, sequence: torch.Tensor, penalty: float) -> torch.Tensor:
    return RepetitionPenaltyLogitsProcessor(penalty)(sequence, logits.clone()).argmax(-1)


def test_greedy_with_repetition_penalty(capsys):
    name = "greedy_with_repetition_penalty"
    passes(capsys, name, _learner_next_token)

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
        fails_without_giving_away(capsys, name, wrong, None, hint)
