"""The language model: M-RoPE, grouped-query attention with a KV cache, decoder layers.

Mirrors transformers' `Qwen2_5_VLTextModel`, `Qwen2_5_VLDecoderLayer`, `Qwen2_5_VLAttention`,
`Qwen2MLP` and `Qwen2_5_VLRotaryEmbedding` (whose `mrope_section` splits the rotary pairs
between the temporal, height and width position ids); `attention_weights` and `repeat_kv` mirror
its `eager_attention_forward` and `repeat_kv`, used when the attention maps are asked for.

Shapes: B batch, L new tokens, S cached + new tokens, D hidden, H query heads,
Hkv key/value heads, Dh head dim.
"""

from __future__ import annotations

from collections.abc import Collection
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .config import TextConfig
from .layers import MLP, RMSNorm, apply_rotary, rope_inv_freq


def mrope_cos_sin(
    position_ids: torch.Tensor, inv_freq: torch.Tensor, mrope_section: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin (B, L, Dh) for 3-D positions (3, B, L): pairs [0, s0) follow t, [s0, s0+s1) h, the rest w.

    With mrope_section (1, 1, 2) and Dh = 8: pair 0 turns with t, pair 1 with h, pairs 2-3 with w.
    Text tokens have t = h = w, so for text this is ordinary 1-D RoPE.
    """
    angles = position_ids[..., None].float() * inv_freq  # (3, B, L, Dh/2)
    chunks = angles.split(list(mrope_section), dim=-1)
    angles = torch.cat([chunk[i % 3] for i, chunk in enumerate(chunks)], dim=-1)  # (B, L, Dh/2)
    angles = torch.cat([angles, angles], dim=-1)  # (B, L, Dh)
    return angles.cos(), angles.sin()


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, Hkv, S, Dh) -> (B, Hkv * n_rep, S, Dh), each kv head repeated n_rep times in place: h0 h0 h1 h1.

    Query head j then sits beside kv head j // n_rep, as in grouped-query attention (not h0 h1 h0 h1).
    """
    return x.repeat_interleave(n_rep, dim=1)


def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Attention probabilities (B, H, L, S) = softmax over keys of q k^T / sqrt(Dh), masked.

    q (B, H, L, Dh), k (B, Hkv, S, Dh), mask from `causal_mask` (bool, True = may read) or None (causal, no
    padding). Row l of head h says how much query l reads each key; masked keys (future, padding) get exactly 0
    and every row sums to 1. A padding query sees no key at all: every score is at the mask's minimum, so its
    row is uniform (as in transformers' eager attention). This path builds the (L, S) scores and mask: it runs
    only when the maps are asked for (`output_attentions`).
    """
    s = k.shape[2]
    if mask is None:
        mask = torch.ones(q.shape[2], s, dtype=torch.bool, device=q.device).tril(diagonal=s - q.shape[2])
    k = repeat_kv(k, q.shape[1] // k.shape[1])  # (B, H, S, Dh)
    scores = torch.matmul(q, k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, L, S) in the activations' dtype
    # parity: transformers' eager attention adds a mask of 0 / the dtype's minimum, takes the softmax in float32,
    # then casts back
    additive = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, torch.finfo(q.dtype).min)
    return torch.softmax(scores + additive, dim=-1, dtype=torch.float32).to(q.dtype)


def attention_layers(output_attentions: bool | Collection[int], num_layers: int) -> frozenset[int]:
    """The decoder layers whose attention maps to keep: True = all, False = none, or the given indices.

    attention_layers([0, 35], 36) -> {0, 35}; attention_layers(True, 3) -> {0, 1, 2}.
    """
    if isinstance(output_attentions, bool):
        return frozenset(range(num_layers)) if output_attentions else frozenset()
    if isinstance(output_attentions, (int, str)) or not isinstance(output_attentions, Collection):
        raise TypeError(
            f"output_attentions must be True, False or a collection of layer indices (e.g. [0, {num_layers - 1}]), "
            f"got {output_attentions!r}"
        )
    for i in output_attentions:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < num_layers:
            raise ValueError(
                f"output_attentions: layer index {i!r} is not a layer of this decoder, which has {num_layers} layers "
                f"(0 to {num_layers - 1})"
            )
    return frozenset(output_attentions)


class KVCache:
    """Keys and values of every layer for the tokens seen so far: list of (B, Hkv, S, Dh) pairs.

    Mirrors transformers' `DynamicCache`: a decode step appends one token's k/v per layer, so its
    attention reads S cached keys instead of recomputing them (O(S) work per step, not O(S^2)).
    """

    def __init__(self) -> None:
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __len__(self) -> int:
        return self.layers[0][0].shape[2] if self.layers else 0

    @property
    def nbytes(self) -> int:
        """Memory held: 2 (k and v) x layers x B x Hkv x S x Dh x bytes per number."""
        return sum(k.nbytes + v.nbytes for k, v in self.layers)

    def update(self, i: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append layer i's new keys/values (B, Hkv, L, Dh); return all of them so far (B, Hkv, S, Dh)."""
        if i > len(self.layers):
            raise IndexError(f"KVCache: layer {i} updated before layer {len(self.layers)}")
        if i == len(self.layers):
            self.layers.append((k, v))
        else:
            past_k, past_v = self.layers[i]
            self.layers[i] = (torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2))
        return self.layers[i]


class Attention(nn.Module):
    """Grouped-query attention with M-RoPE: H query heads share Hkv key/value heads.

    Query head j reads kv head j // (H / Hkv) (transformers' `repeat_kv`; SDPA's enable_gqa does the
    same without copying), so the cache stores Hkv heads, H / Hkv times less than full multi-head.
    """

    def __init__(self, config: TextConfig, layer_idx: int) -> None:
        super().__init__()
        d, dh = config.hidden_size, config.head_dim
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, dh
        self.q_proj = nn.Linear(d, self.num_heads * dh, bias=True)
        self.k_proj = nn.Linear(d, self.num_kv_heads * dh, bias=True)
        self.v_proj = nn.Linear(d, self.num_kv_heads * dh, bias=True)
        self.o_proj = nn.Linear(self.num_heads * dh, d, bias=False)
        self.eager = False  # True: return the probabilities too (output_attentions); see inspect_decoder

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(output (B, L, D), probabilities (B, H, L, S) or None), as transformers' attention returns them.

        With `self.eager` set (`inspect_decoder` sets it when the maps are asked for) the output is computed from
        the probabilities, probs @ v, transformers' eager path; otherwise SDPA runs and no map exists.
        """
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, Dh)
        k = self.k_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, L, Dh)
        v = self.v_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos[:, None], sin[:, None]), apply_rotary(k, cos[:, None], sin[:, None])
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, Hkv, S, Dh)
        probs = None
        if not self.eager:
            # mask None: plain causal attention, which SDPA computes without any (L, S) matrix in memory
            causal = mask is None and n > 1
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True)
        else:
            probs = attention_weights(q, k, mask)  # (B, H, L, S)
            out = torch.matmul(probs, repeat_kv(v, self.num_heads // self.num_kv_heads))  # (B, H, L, Dh)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1)), probs


class DecoderLayer(nn.Module):
    """Pre-norm block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: TextConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = Attention(config, layer_idx)
        self.mlp = MLP(config.hidden_size, config.intermediate_size, config.hidden_act, bias=False)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None, cache=None
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)[0]
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x


class TextModel(nn.Module):
    """Embedding table, decoder layers and the final norm (the hub names them model.*)."""

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """The last hidden state (B, L, D), after the final norm. What happens inside (each layer's input, the
        attention maps) is read from outside with `inspect_decoder`, as transformers records its outputs."""
        config = self.config
        if position_ids.shape != (3, *inputs_embeds.shape[:2]):
            raise ValueError(
                f"position_ids must be (3 axes t/h/w, batch, new tokens) = {(3, *inputs_embeds.shape[:2])}, "
                f"got {tuple(position_ids.shape)}"
            )
        if position_ids.numel() and (top := int(position_ids.max())) >= config.max_position_embeddings:
            raise ValueError(
                f"position id {top} is beyond max_position_embeddings = {config.max_position_embeddings}: the prompt "
                "(with the tokens generated so far) is longer than the positions the model was trained for"
            )
        inv_freq = rope_inv_freq(config.head_dim, config.rope_theta, inputs_embeds.device)
        cos, sin = mrope_cos_sin(position_ids, inv_freq, config.mrope_section)
        # parity: angles in float32, cos/sin then cast to the activations' dtype (as transformers' rotary does)
        cos, sin = cos.to(inputs_embeds.dtype), sin.to(inputs_embeds.dtype)
        mask = causal_mask(inputs_embeds, attention_mask, past=len(cache) if cache is not None else 0)
        x = inputs_embeds
        for layer in self.layers:
            x = layer(x, cos, sin, mask, cache)
        return self.norm(x)


@dataclass
class Inspection:
    """What `inspect_decoder` saw during one forward, in transformers' `output_hidden_states` /
    `output_attentions` layout.

    hidden_states: num_hidden_layers + 1 entries (B, L, D): the input embeddings, the output of every layer but
        the last, then the last layer's output after the final norm (the decoder's return value).
    attentions: one entry per layer, attentions[i] = layer i's probabilities (B, H, L, S) if it was kept, else None.
    """

    hidden_states: list[torch.Tensor] = field(default_factory=list)
    attentions: list[torch.Tensor | None] = field(default_factory=list)


@contextmanager
def inspect_decoder(model: TextModel, hidden_states: bool, keep_attentions: Collection[int]):
    """Record each layer's input and the kept layers' attention maps through forward hooks, for one forward.

    The kept layers run the eager path (probabilities, then probs @ v); the others keep SDPA. After the call,
    append the decoder's return value to `.hidden_states` (it is after the final norm, as in transformers).
    """
    seen = Inspection(attentions=[None] * len(model.layers))
    handles = []
    layers = cast(list[DecoderLayer], list(model.layers))
    for i, layer in enumerate(layers):
        if hidden_states:
            handles.append(layer.register_forward_pre_hook(lambda _, args: seen.hidden_states.append(args[0])))
        if i in keep_attentions:
            layer.self_attn.eager = True
            handles.append(layer.self_attn.register_forward_hook(partial(_keep_map, seen.attentions, i)))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()
        for i in keep_attentions:
            layers[i].self_attn.eager = False


def _keep_map(attentions: list, i: int, module: nn.Module, args, output: tuple) -> None:
    attentions[i] = output[1]


def causal_mask(x: torch.Tensor, attention_mask: torch.Tensor | None, past: int) -> torch.Tensor | None:
    """Which keys each query may read: bool (B, 1, L, S), True where a query sees an earlier key that is not padding.

    None when that is plain causal attention (no padding, and nothing cached or a single new token): then SDPA's
    `is_causal` does the same without a mask, and memory stays linear in the length. A (L, S) mask for a 24k-token
    prompt would be 576 MB as bool and 2.3 GB as float32 (transformers also skips it: `_ignore_causal_mask_sdpa`).
    """
    b, n = x.shape[:2]
    s = past + n
    if attention_mask is not None and attention_mask.shape != (b, s):
        raise ValueError(f"attention_mask must be (batch, cached + new) = {(b, s)}, got {tuple(attention_mask.shape)}")
    padded = attention_mask is not None and not bool(attention_mask.all())
    if not padded and (past == 0 or n == 1):
        return None
    allowed = torch.ones(n, s, dtype=torch.bool, device=x.device).tril(diagonal=past)[None, None]  # (1, 1, L, S)
    if padded and attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, None, :]
    return allowed
