"""qwenlite_course/exercises/nb02_patch_embed.py: each correct answer, worked out here with transformers or
qwen-vl-utils, passes; each plausible wrong answer fails with a hint that does not contain the correct value."""

from __future__ import annotations

import torch
from helpers import DATA, fails_without_giving_away, passes
from transformers import Qwen2_5_VLConfig


def _learner_patch_embed(pixel_values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Rows flattened (Tp, C, P, P): the kernel (D, C, Tp, P, P) flattened in the same order."""
    return pixel_values @ weight.transpose(1, 2).reshape(weight.shape[0], -1).T  # (N, 1176) @ (1176, D)


def test_patch_embed_matmul(capsys):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionPatchEmbed

    def by_transformers(frame_major, weight):  # transformers' own Conv3d module, on the rows put back in (C, Tp) order
        module = Qwen2_5_VisionPatchEmbed(patch_size=14, temporal_patch_size=2, in_channels=3, embed_dim=len(weight))
        module.proj.weight.data.copy_(weight)
        with torch.no_grad():
            return module(
                frame_major.view(len(frame_major), 2, 3, 14, 14).transpose(1, 2).reshape(len(frame_major), -1)
            )

    name = "patch_embed_matmul"
    passes(capsys, name, _learner_patch_embed)
    passes(capsys, name, by_transformers)
    for wrong, hint in [
        (lambda pv, w: pv @ w.reshape(len(w), -1).T, "differ from the Conv3d"),  # the processor's (C, Tp) order
        (lambda pv, w: pv @ w.reshape(-1, len(w)), "differ from the Conv3d"),  # reshape instead of transpose
        (lambda pv, w: pv @ w.reshape(len(w), -1), "raised"),  # no transpose: shapes do not match
        (lambda pv, w: _learner_patch_embed(pv, w).T, "wrong shape"),
        (lambda pv, w: _learner_patch_embed(pv, w) * (1 + 1e-3), "differ from the Conv3d"),  # mutation: 0.1% off
    ]:
        fails_without_giving_away(capsys, name, wrong, None, hint)


def test_patch_embed_weights_16px(capsys):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionPatchEmbed

    vision = Qwen2_5_VLConfig.from_pretrained(DATA / "configs" / "qwen2_5_vl_3b_instruct.config.json").vision_config
    with torch.device("meta"):
        module = Qwen2_5_VisionPatchEmbed(16, vision.temporal_patch_size, vision.in_channels, vision.hidden_size)
    correct = sum(p.numel() for p in module.parameters())
    name = "patch_embed_weights_16px"
    passes(capsys, name, correct)
    fails_without_giving_away(capsys, name, correct // 2, correct, "temporal kernel")
    fails_without_giving_away(capsys, name, correct // 3, correct, "channels")
    fails_without_giving_away(capsys, name, correct + vision.hidden_size, correct, "no bias")
    fails_without_giving_away(capsys, name, correct * 196 // 256, correct, "16 x 16 pixels, not")
