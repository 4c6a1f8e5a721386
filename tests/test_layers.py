"""qwenlite.layers against transformers' own modules, one at a time, on tiny widths (no checkpoint on disk).

RMSNorm against `Qwen2_5_VLRMSNorm`, the SwiGLU MLP against `Qwen2_5_VLMLP` (vision, with biases) and `Qwen2MLP`
(decoder), and the rotary maths (`rope_inv_freq`, `rotate_half`, `apply_rotary`) against transformers'
`rotate_half` and `apply_rotary_pos_emb_vision`, with the vision tower's 2-D angles from its
`Qwen2_5_VLVisionRotaryEmbedding`. Each comparison also shows that a plausible bug breaks it.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import transformers.models.qwen2_5_vl.modeling_qwen2_5_vl as hf

from qwenlite.layers import MLP, RMSNorm, apply_rotary, rope_inv_freq, rotate_half
from qwenlite.vision import VisionRotaryEmbedding
from qwenlite_course.reference import Row, check_table

DTYPES = [torch.float32, torch.bfloat16]


@torch.no_grad()
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rmsnorm_equals_transformers(dtype):
    ours, theirs = RMSNorm(48, eps=1e-6), hf.Qwen2_5_VLRMSNorm(48, eps=1e-6)
    weight = 1 + 0.1 * torch.randn(48)
    ours.weight.copy_(weight), theirs.weight.copy_(weight)
    ours, theirs = ours.to(dtype), theirs.to(dtype)
    x = (3 * torch.randn(2, 5, 48)).to(dtype)
    check_table([Row(f"RMSNorm {dtype}", ours(x), theirs(x))])
    assert torch.equal(ours(x), theirs(x))  # the same operations in the same order: the same bits
    # a plausible bug: the weight applied before the cast back (in bfloat16 that rounds differently)
    wrong = (ours.weight.float() * x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)).to(dtype)
    assert dtype == torch.float32 or not torch.equal(wrong, theirs(x))
    assert not Row("no eps, mean of |x|", ours.weight * x / x.abs().mean(-1, keepdim=True), theirs(x)).ok()


@torch.no_grad()
@pytest.mark.parametrize(("bias", "act"), [(True, "silu"), (False, "silu"), (True, "gelu")], ids=str)
def test_mlp_equals_transformers(bias, act):
    config = SimpleNamespace(hidden_size=32, intermediate_size=80, hidden_act=act)
    theirs = hf.Qwen2_5_VLMLP(config, bias=bias) if bias else hf.Qwen2MLP(config)
    ours = MLP(32, 80, act, bias=bias)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(3, 7, 32)
    check_table([Row(f"MLP bias={bias} {act}", ours(x), theirs(x))])
    # a plausible bug: gate and up swapped (act(up) * gate)
    swapped = ours.down_proj(torch.nn.functional.silu(ours.up_proj(x)) * ours.gate_proj(x))
    assert not Row("gate and up swapped", swapped, theirs(x)).ok()


def test_rotate_half_and_inv_freq_equal_transformers():
    x = torch.randn(4, 3, 16)
    assert torch.equal(rotate_half(x), hf.rotate_half(x))
    assert not torch.equal(rotate_half(x), torch.cat(x.chunk(2, -1)[::-1], -1))  # swap without the minus sign
    config = SimpleNamespace(rope_parameters={"rope_theta": 10000.0, "rope_type": "axial"}, head_dim=32)
    theirs, _ = hf.Qwen2_5_VLVisionRotaryEmbedding.compute_axial_rope_parameters(config)
    assert torch.equal(rope_inv_freq(16, 10000.0), theirs)  # the vision tower: Dh/4 frequencies for h and for w


@torch.no_grad()
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_vision_rotary_equals_transformers(dtype):
    """2-D angles from (h, w) ids, then q and k rotated: cos/sin and the rotated tensors against transformers."""
    head_dim, heads, n = 32, 2, 12
    vision = SimpleNamespace(head_dim=head_dim, rope_theta=10000.0)
    config = SimpleNamespace(rope_parameters={"rope_theta": 10000.0, "rope_type": "axial"}, head_dim=head_dim)
    hw = torch.stack([torch.arange(n) // 4, torch.arange(n) % 4], dim=-1)  # (N, 2): a 3 x 4 grid of patches
    cos, sin = VisionRotaryEmbedding(vision)(hw)
    ref_cos, ref_sin = hf.Qwen2_5_VLVisionRotaryEmbedding(config)(torch.zeros(1), hw)
    assert torch.equal(cos, ref_cos) and torch.equal(sin, ref_sin)
    q, k = torch.randn(n, heads, head_dim, dtype=dtype), torch.randn(n, heads, head_dim, dtype=dtype)
    ref_q, ref_k = hf.apply_rotary_pos_emb_vision(q, k, ref_cos, ref_sin)
    # qwenlite's tower rotates in float32 and casts back, as transformers does (vision.VisionAttention.rotated_qkv)
    ours_q, ours_k = (apply_rotary(t.float(), cos[:, None], sin[:, None]).to(dtype) for t in (q, k))
    check_table([Row(f"rotated q {dtype}", ours_q, ref_q), Row(f"rotated k {dtype}", ours_k, ref_k)])
    # a plausible bug: h and w swapped in the ids (the tower would read the picture transposed)
    wrong_cos, wrong_sin = VisionRotaryEmbedding(vision)(hw.flip(-1))
    wrong_q = apply_rotary(q.float(), wrong_cos[:, None], wrong_sin[:, None]).to(dtype)
    assert not Row("h and w swapped", wrong_q, ref_q).ok()
