"""Building blocks shared by the vision tower and the decoder: RMSNorm, the SwiGLU MLP, rotary embeddings.

Mirrors transformers' `Qwen2_5_VLRMSNorm`, `Qwen2_5_VLMLP` / `Qwen2MLP`, `rotate_half` and the
`x * cos + rotate_half(x) * sin` of its `apply_rotary_pos_emb` / `apply_rotary_pos_emb_vision`
in `models/qwen2_5_vl/modeling_qwen2_5_vl.py`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "gelu": F.gelu,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
}


class RMSNorm(nn.Module):
    """x / rms(x) * weight, with no mean subtraction and no bias."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """weight * x / sqrt(mean(x^2) + eps), the mean over the last axis."""
        # parity: computed in float32 and cast back before the weight is applied (transformers' Qwen2RMSNorm)
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)

    def extra_repr(self) -> str:
        return f"({self.weight.shape[0]},), eps={self.eps}"


class MLP(nn.Module):
    """SwiGLU: down(act(gate(x)) * up(x)). The vision blocks use biases, the decoder does not."""

    def __init__(self, dim: int, hidden: int, act: str = "silu", bias: bool = False) -> None:
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown hidden_act {act!r}; known: {sorted(ACTIVATIONS)}")
        self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(ACTIVATIONS[self.act](self.gate_proj(x)) * self.up_proj(x))


def rope_inv_freq(dim: int, theta: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Rotation speed of each of the dim/2 pairs: theta ** (-2i / dim). Cheap, so computed on use (no buffers)."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float, device=device) / dim))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the last axis: the 'i *' of rotary embeddings in real arithmetic."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate every (i, i + Dh/2) pair of x by the angle whose cos/sin are given (broadcast over heads)."""
    return x * cos + rotate_half(x) * sin
