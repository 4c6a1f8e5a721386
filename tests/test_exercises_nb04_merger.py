"""qwenlite_course/exercises/nb04_merger.py: each correct answer, worked out here with transformers or
qwen-vl-utils, passes; each plausible wrong answer fails with a hint that does not contain the correct value."""

from __future__ import annotations

import torch
from helpers import DATA, fails_without_giving_away, passes
from transformers import Qwen2_5_VLConfig


def _hf_merger(size: str):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLPatchMerger

    path = DATA / "configs" / f"qwen2_5_vl_{size}_instruct.config.json"
    vision = Qwen2_5_VLConfig.from_pretrained(path).vision_config
    with torch.device("meta"):
        return Qwen2_5_VLPatchMerger(vision.out_hidden_size, vision.hidden_size, vision.spatial_merge_size), vision


def test_merger_output_numbers_7b_1_30_44(capsys):
    merger, vision = _hf_merger("7b")
    rows, width = merger(torch.empty(30 * 44, vision.hidden_size, device="meta")).shape
    correct = rows * width
    _, vision_3b = _hf_merger("3b")
    name = "merger_output_numbers_7b_1_30_44"
    passes(capsys, name, correct)
    passes(capsys, name, torch.tensor(correct))
    fails_without_giving_away(capsys, name, 4 * correct, correct, "did you count patches")
    fails_without_giving_away(capsys, name, (rows + 2) * width, correct, "one row per merged token")
    fails_without_giving_away(capsys, name, rows * vision.hidden_size, correct, "that width is the vision width")
    fails_without_giving_away(capsys, name, rows * 4 * vision.hidden_size, correct, "the MLP's inside")
    fails_without_giving_away(capsys, name, rows * vision_3b.out_hidden_size, correct, "the 3B's text hidden size")
    fails_without_giving_away(capsys, name, (rows, width), correct, "whole number")


def test_merger_multiply_adds_7b(capsys):
    merger, vision = _hf_merger("7b")
    first, second = merger.mlp[0], merger.mlp[2]
    correct = first.in_features * first.out_features + second.in_features * second.out_features
    merger_3b, _ = _hf_merger("3b")
    name = "merger_multiply_adds_7b"
    passes(capsys, name, correct)
    passes(capsys, name, torch.tensor(correct))
    fails_without_giving_away(capsys, name, sum(p.numel() for p in merger.parameters()), correct, "parameter count")
    with_biases = correct + first.out_features + second.out_features
    fails_without_giving_away(capsys, name, with_biases, correct, "biases are additions")
    fails_without_giving_away(capsys, name, vision.hidden_size * vision.out_hidden_size, correct, "one patch")
    fails_without_giving_away(capsys, name, second.weight.numel(), correct, "second Linear alone")
    fails_without_giving_away(capsys, name, first.weight.numel(), correct, "first Linear alone")
    products_3b = sum(m.weight.numel() for m in (merger_3b.mlp[0], merger_3b.mlp[2]))
    fails_without_giving_away(capsys, name, products_3b, correct, "the 3B's merger")
    fails_without_giving_away(capsys, name, 2 * correct, correct, "in x out products each")
    fails_without_giving_away(capsys, name, 1.5, correct, "no fraction")
