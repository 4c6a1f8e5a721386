"""qwenlite_course/exercises/nb06_rope_index.py: each correct answer, worked out here with transformers or
qwen-vl-utils, passes; each plausible wrong answer fails with a hint that does not contain the correct value."""

from __future__ import annotations

import torch
from helpers import fails_without_giving_away, passes


def test_rope_deltas_layout(capsys, ref, config):
    ids = torch.tensor([[100, 101, 102] + [config.image_token_id] * 6 + [103, 104, 105, 106, 107]])
    types = (ids == config.image_token_id).long()
    _, deltas = ref.model.get_rope_index(ids, mm_token_type_ids=types, image_grid_thw=torch.tensor([[1, 4, 6]]))
    correct = int(deltas)
    name = "rope_deltas_layout"
    passes(capsys, name, correct)
    passes(capsys, name, deltas)
    fails_without_giving_away(capsys, name, -correct, correct, "wrong sign")
    fails_without_giving_away(capsys, name, 0, correct, "fewer positions than it has tokens")
    fails_without_giving_away(capsys, name, correct - 15, correct, "one token per patch")  # a pad token per patch


def test_video_t_ids_1_5_fps(capsys, ref, config):
    ids = torch.full((1, 5), config.video_token_id)
    positions, _ = ref.model.get_rope_index(
        ids,
        mm_token_type_ids=torch.full_like(ids, 2),
        video_grid_thw=torch.tensor([[5, 2, 2]]),
        second_per_grid_ts=torch.tensor([2 / 1.5]),
    )
    correct = positions[0, 0].tolist()
    name = "video_t_ids_1_5_fps"
    passes(capsys, name, correct)
    passes(capsys, name, positions[0, 0])
    fails_without_giving_away(capsys, name, [0, 1, 2, 3, 4], correct, "counts time")
    fails_without_giving_away(capsys, name, [0, 2, 4, 6, 8], correct, "1 s per temporal patch")
    fails_without_giving_away(capsys, name, [round(k * 2 * 2 / 1.5) for k in range(5)], correct, "rounded")
    fails_without_giving_away(capsys, name, [k * 2 * 2 / 1.5 for k in range(5)], correct, "whole numbers")
    fails_without_giving_away(capsys, name, correct[:4], correct, "expected 5 numbers")


class _CacheOfLength:
    """Stands in for a KV cache that holds `length` tokens: all transformers' position rule asks of it."""

    def __init__(self, length: int) -> None:
        self.length = length

    def get_seq_length(self) -> int:
        return self.length


def test_decode_position_3rd_token(capsys, ref, config):
    ids = torch.tensor([[100, 101, 102] + [config.image_token_id] * 6 + [103, 104, 105, 106, 107]])
    types = (ids == config.image_token_id).long()
    _, deltas = ref.model.get_rope_index(ids, mm_token_type_ids=types, image_grid_thw=torch.tensor([[1, 4, 6]]))
    saved, ref.model.rope_deltas = ref.model.rope_deltas, deltas
    try:  # transformers' decode step: the 3rd new token, with 14 + 2 tokens in the cache
        embeds = torch.zeros(1, 1, ref.config.text_config.hidden_size)
        position = ref.model.compute_3d_position_ids(
            None, None, None, inputs_embeds=embeds, attention_mask=None, cache=_CacheOfLength(ids.shape[1] + 2)
        )
    finally:
        ref.model.rope_deltas = saved
    assert position.shape == (3, 1, 1) and len(set(position.flatten().tolist())) == 1
    correct = int(position[0, 0, 0])
    name = "decode_position_3rd_token"
    passes(capsys, name, correct)
    fails_without_giving_away(capsys, name, ids.shape[1] + 2, correct, "index in the sequence")
    fails_without_giving_away(capsys, name, ids.shape[1] + 2 - int(deltas), correct, "wrong sign")
    fails_without_giving_away(capsys, name, correct - 1, correct, "off by one")
    fails_without_giving_away(capsys, name, correct + 1, correct, "off by one")
