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


def test_merger_input_width_3b(capsys, hf_merger_3b):
    merger, vision = hf_merger_3b
    correct = merger.mlp[0].in_features
    name = "merger_input_width_3b"
    passes(capsys, name, correct)
    fails_without_giving_away(capsys, name, vision.hidden_size, correct, "side by side")
    fails_without_giving_away(capsys, name, vision.out_hidden_size, correct, "output width")
    fails_without_giving_away(capsys, name, 4 * vision.out_hidden_size, correct, "not the text's")
