"""qwenlite_course/exercises/nb04_merger.py: each correct answer, worked out here with transformers or
qwen-vl-utils, passes; each plausible wrong answer fails with a hint that does not contain the correct value."""

from __future__ import annotations

import pytest
import torch
from helpers import DATA, fails_without_giving_away, passes
from transformers import Qwen2_5_VLConfig


@pytest.fixture(scope="module")
def hf_merger_3b():
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLPatchMerger

    vision = Qwen2_5_VLConfig.from_pretrained(DATA / "configs" / "qwen2_5_vl_3b_instruct.config.json").vision_config
    with torch.device("meta"):
        return Qwen2_5_VLPatchMerger(vision.out_hidden_size, vision.hidden_size, vision.spatial_merge_size), vision


def test_merger_output_shape_1_30_44(capsys, hf_merger_3b):
    merger, vision = hf_merger_3b
    correct = list(merger(torch.empty(30 * 44, vision.hidden_size, device="meta")).shape)
    rows, width = correct
    name = "merger_output_shape_1_30_44"
    passes(capsys, name, tuple(correct))
    passes(capsys, name, torch.Size(correct))
    fails_without_giving_away(capsys, name, (4 * rows, width), correct, "did you count patches")
    fails_without_giving_away(capsys, name, (rows, vision.hidden_size), correct, "that is the vision width")
    fails_without_giving_away(capsys, name, (rows, 4 * vision.hidden_size), correct, "the MLP's inside")
    fails_without_giving_away(capsys, name, rows, correct, "in a list or tuple")


def _hf_merger(size: str):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLPatchMerger

    path = DATA / "configs" / f"qwen2_5_vl_{size}_instruct.config.json"
    vision = Qwen2_5_VLConfig.from_pretrained(path).vision_config
    with torch.device("meta"):
        return Qwen2_5_VLPatchMerger(vision.out_hidden_size, vision.hidden_size, vision.spatial_merge_size), vision


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
