"""The vision tower: patch embedding, 2-D rotary, window attention blocks and the patch merger.

Mirrors transformers' `Qwen2_5_VisionTransformerPretrainedModel` and its parts
(`Qwen2_5_VisionPatchEmbed`, `Qwen2_5_VLVisionRotaryEmbedding`, `Qwen2_5_VLVisionAttention`,
`Qwen2_5_VLVisionBlock`, `Qwen2_5_VLPatchMerger`) and `get_vision_window_index`.
The tower works on packed patches of all images/videos at once, with no batch axis.

Shapes: N patches (all images and frames packed), D vision width, H heads, Dh head dim,
M = merge_size**2 patches per LLM token (4), Do output width (= text hidden size).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import VisionConfig
from .layers import MLP, RMSNorm, apply_rotary, rope_inv_freq

# ------------------------------------------------------------------ index bookkeeping


def vision_rotary_ids(grid_thw: torch.Tensor, merge_size: int = VisionConfig.spatial_merge_size) -> torch.Tensor:
    """(h, w) patch coordinates in the order the processor emits patches: merge x merge groups first.

    grid (1, 2, 2) -> [[0, 0], [0, 1], [1, 0], [1, 1]]; grid (1, 2, 4) with merge 2 ->
    h = [0,0,1,1, 0,0,1,1], w = [0,1,0,1, 2,3,2,3] (each 2x2 group is 4 consecutive patches).
    Frames of a video repeat the same coordinates.  Returns (N, 2) long, on grid_thw's device.
    """
    ids, device = [], grid_thw.device
    for t, h, w in grid_thw.tolist():
        hh, ww = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        blocks = (h // merge_size, merge_size, w // merge_size, merge_size)
        hh = hh.reshape(blocks).transpose(1, 2).flatten()
        ww = ww.reshape(blocks).transpose(1, 2).flatten()
        ids.append(torch.stack([hh, ww], dim=-1).repeat(t, 1))
    return torch.cat(ids)


def get_window_index(
    grid_thw: torch.Tensor,
    window_size: int = VisionConfig.window_size,
    patch_size: int = VisionConfig.patch_size,
    merge_size: int = VisionConfig.spatial_merge_size,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Permutation of merged tokens into window order, and cumulative window lengths in patches.

    A window is window_size / patch_size / merge_size merged tokens on a side (112 px -> 4x4).
    Each frame's merged grid is padded up to a multiple of that side, cut into windows row by row,
    and the padding dropped, so windows on the right and bottom edges can be smaller (worked example:
    `vision_layout`). Returns window_index (N/M,) long and cu_window_seqlens (num_windows + 1,) int32, on
    grid_thw's device.
    """
    window_side = window_size // merge_size // patch_size  # merged tokens on a window's side
    patches_per_token = merge_size * merge_size
    index, cu, offset, device = [], [0], 0, grid_thw.device
    for frames, height, width in grid_thw.tolist():  # in patches
        tokens_h, tokens_w = height // merge_size, width // merge_size
        ids = torch.arange(frames * tokens_h * tokens_w, device=device).reshape(frames, tokens_h, tokens_w)
        pad_h, pad_w = -tokens_h % window_side, -tokens_w % window_side
        ids = F.pad(ids, (0, pad_w, 0, pad_h), value=-1)
        windows_h, windows_w = (tokens_h + pad_h) // window_side, (tokens_w + pad_w) // window_side
        ids = ids.reshape(frames, windows_h, window_side, windows_w, window_side).permute(0, 1, 3, 2, 4)
        ids = ids.reshape(frames * windows_h * windows_w, window_side * window_side)  # one row per window
        index.append(ids[ids >= 0] + offset)
        for tokens in (ids >= 0).sum(-1).tolist():
            cu.append(cu[-1] + tokens * patches_per_token)
        offset += frames * tokens_h * tokens_w
    return torch.cat(index), torch.tensor(cu, dtype=torch.int32, device=device)


def full_attention_seqlens(grid_thw: torch.Tensor) -> torch.Tensor:
    """Cumulative lengths for full attention: each frame attends within itself. grid (2, 2, 2) -> [0, 4, 8]."""
    per_frame = torch.repeat_interleave(grid_thw[:, 1] * grid_thw[:, 2], grid_thw[:, 0])
    return F.pad(per_frame.cumsum(0), (1, 0)).to(torch.int32)


def segment_ids(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """(N,) which segment each packed position belongs to. cu_seqlens [0, 3, 5] -> [0, 0, 0, 1, 1]."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    return torch.repeat_interleave(torch.arange(len(lengths), device=cu_seqlens.device), lengths)


@dataclass(frozen=True)
class VisionLayout:
    """Where every patch sits inside the tower, and who attends to whom: what the tower, its pictures and its
    tests all read. Positions inside the tower are in window order; patches in pixel_values are in processor order.
    """

    window_index: torch.Tensor  # (N/M,) long: the merged token (processor order) at each window-order slot
    patch_order: torch.Tensor  # (N,) long: the processor-order patch at each position inside the tower
    rotary_ids: torch.Tensor  # (N, 2) long: (h, w) of the patch at each position inside the tower
    cu_windows: torch.Tensor  # (windows + 1,) int32: segment bounds of windowed blocks, in tower positions
    cu_frames: torch.Tensor  # (frames + 1,) int32: segment bounds of full-attention blocks (one frame each)

    @property
    def restore(self) -> torch.Tensor:
        """(N/M,) long: the permutation that puts merged tokens back in processor (prompt) order."""
        return torch.argsort(self.window_index)


def vision_layout(grid_thw: torch.Tensor, config: VisionConfig) -> VisionLayout:
    """All index bookkeeping of the vision tower for one packed batch of images/videos, on grid_thw's device.

    Worked example, grid (1, 4, 12) with 112-px windows (4x4 merged tokens), merge 2:
    the merged grid is 2x6, cut into a 2x4 window and a 2x2 one;
    window_index = [0,1,2,3,6,7,8,9, 4,5,10,11] (merged tokens, window by window);
    patch_order[:8] = [0,1,2,3, 4,5,6,7] (tokens 0 and 1, 4 patches each), patch_order[16:20] = [24,25,26,27]
    (slot 4 holds token 6: merged row 1, column 0); rotary_ids[:4] = [[0,0], [0,1], [1,0], [1,1]],
    rotary_ids[16:20] = [[2,0], [2,1], [3,0], [3,1]];
    cu_windows = [0, 32, 48]; cu_frames = [0, 48].
    """
    patches_per_token = config.spatial_merge_size**2
    window_index, cu_windows = get_window_index(
        grid_thw, config.window_size, config.patch_size, config.spatial_merge_size
    )
    # whole merge groups move together: merged token j -> its patches j*M .. j*M + M-1
    offsets = torch.arange(patches_per_token, device=grid_thw.device)
    patch_order = (window_index[:, None] * patches_per_token + offsets).flatten()  # (N,)
    rotary_ids = vision_rotary_ids(grid_thw, config.spatial_merge_size)[patch_order]  # (N, 2)
    return VisionLayout(window_index, patch_order, rotary_ids, cu_windows, full_attention_seqlens(grid_thw))


# ------------------------------------------------------------------ modules


class PatchEmbed(nn.Module):
    """Conv3d with kernel = stride = (2, 14, 14): one linear map of each flattened 3*2*14*14 = 1176 patch."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.kernel = (config.temporal_patch_size, config.patch_size, config.patch_size)
        self.proj = nn.Conv3d(config.in_channels, config.hidden_size, self.kernel, stride=self.kernel, bias=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # A kernel that covers its whole input is a matmul; the 1176 axis is already (C, T, P, P) in order.
        weight = self.proj.weight.view(self.proj.out_channels, -1)  # (D, 1176)
        return pixel_values.to(weight.dtype) @ weight.T  # (N, D)


class VisionRotaryEmbedding(nn.Module):
    """2-D RoPE over a head's Dh/2 rotary pairs (i, i + Dh/2): the first half of the pairs turn with h, the second
    half with w (20 and 20 of the 40 pairs in the real model, the same Dh/4 frequencies for both)."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.half_head_dim = config.head_dim // 2  # h and w share one set of Dh/4 frequencies
        self.theta = config.rope_theta

    def forward(self, hw_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = hw_ids[..., None].float() * rope_inv_freq(
            self.half_head_dim, self.theta, hw_ids.device
        )  # (N, 2, Dh/4)
        angles = angles.flatten(1)  # (N, Dh/2): h angles then w angles
        angles = torch.cat([angles, angles], dim=-1)  # (N, Dh): rotate_half pairs i with i + Dh/2
        return angles.cos(), angles.sin()


class VisionAttention(nn.Module):
    """Multi-head attention restricted to segments of a packed sequence: windows, or whole temporal patches (an
    image, or two video frames); no segment spans two temporal patches."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=True)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size, bias=True)

    def rotated_qkv(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q and k with 2-D RoPE applied, and v: each (N, H, Dh). Also used to draw attention maps."""
        q, k, v = self.qkv(x).view(x.shape[0], 3, self.num_heads, -1).unbind(1)  # the checkpoint stacks q, k, v
        # parity: the rotation runs in float32 and is cast back (a no-op in float32)
        q, k = (apply_rotary(t.float(), cos[:, None], sin[:, None]).to(t.dtype) for t in (q, k))
        return q, k, v

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        q, k, v = self.rotated_qkv(x, cos, sin)
        out = segment_attention(q, k, v, cu_seqlens)  # (N, H, Dh)
        return self.proj(out.flatten(1))  # (N, D)


def segment_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(Dh)) v within each segment [cu[i], cu[i+1]) of packed q, k, v (N, H, Dh): a patch
    attends only to the patches of its own window (window blocks) or its own frame (full blocks).

    cu_seqlens [0, 64, 128, 160]: patches 0-63 attend among themselves, 64-127 too, then 128-159.
    As transformers does whenever flash attention is not used: one SDPA call per segment.
    """
    out = torch.empty_like(q)
    for start, end in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist(), strict=True):
        qs, ks, vs = (t[start:end].transpose(0, 1) for t in (q, k, v))  # (H, len, Dh)
        out[start:end] = F.scaled_dot_product_attention(qs, ks, vs).transpose(0, 1)
    return out


class VisionBlock(nn.Module):
    """Pre-norm transformer block: x + attention(RMSNorm(x)) within segments, then x + SwiGLU(RMSNorm(x))."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.norm1 = RMSNorm(config.hidden_size, eps=1e-6)
        self.norm2 = RMSNorm(config.hidden_size, eps=1e-6)
        self.attn = VisionAttention(config)
        self.mlp = MLP(config.hidden_size, config.intermediate_size, config.hidden_act, bias=True)

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cu_seqlens, cos, sin)
        x = x + self.mlp(self.norm2(x))
        return x


class PatchMerger(nn.Module):
    """RMSNorm each patch, put each 2x2 group side by side (4D), and map it to the text width."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.patches_per_token = config.spatial_merge_size**2
        width = config.hidden_size * self.patches_per_token
        self.ln_q = RMSNorm(config.hidden_size, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, config.out_hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_q(x).view(-1, self.patches_per_token * x.shape[-1])  # (N/M, M*D): each 2x2 group side by side
        return self.mlp(x)  # (N/M, Do)


class VisionTransformer(nn.Module):
    """pixel_values (N, 1176) of all images/videos packed, grid_thw (items, 3) -> features (N/M, Do) in prompt order."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        self.rotary_pos_emb = VisionRotaryEmbedding(config)
        self.blocks = nn.ModuleList(VisionBlock(config) for _ in range(config.depth))
        self.merger = PatchMerger(config)

    def forward(
        self, pixel_values: torch.Tensor, grid_thw: torch.Tensor, names: tuple[str, str] = ("pixel_values", "grid_thw")
    ) -> torch.Tensor:
        """names: what the caller calls the two inputs, for the errors (the model says pixel_values_videos...)."""
        check_grid(pixel_values, grid_thw, self.config, names)
        # 1) index bookkeeping: window order, window and frame segments, rotary ids (index tensors live
        #    where the pixels are)
        layout = vision_layout(grid_thw.to(pixel_values.device), self.config)
        cos, sin = self.rotary_pos_emb(layout.rotary_ids)  # (N, Dh)
        # 2) embed patches and put them in window order
        x = self.patch_embed(pixel_values)[layout.patch_order]  # (N, D)
        # 3) blocks: full attention within each frame in fullatt blocks, else within each window
        for i, block in enumerate(self.blocks):
            x = block(x, layout.cu_frames if i in self.config.fullatt_block_indexes else layout.cu_windows, cos, sin)
        # 4) merge 2x2 groups, then undo the window permutation. Frame segments are unions of
        #    windows (the permutation stays inside a frame), so full attention is unaffected by it.
        return self.merger(x)[layout.restore]  # (N/M, Do)


def check_grid(
    pixel_values: torch.Tensor,
    grid_thw: torch.Tensor,
    config: VisionConfig,
    names: tuple[str, str] = ("pixel_values", "grid_thw"),
) -> None:
    """Loud errors for inputs that would otherwise fail deep inside a reshape, or run on the wrong numbers.

    names: what the caller calls the two tensors (the model says pixel_values_videos / video_grid_thw for videos).
    """
    pixels, grid = names
    patch_dim = config.in_channels * config.temporal_patch_size * config.patch_size**2
    if pixel_values.ndim != 2 or pixel_values.shape[1] != patch_dim:
        raise ValueError(f"{pixels} must be (num_patches, {patch_dim}), got {tuple(pixel_values.shape)}")
    if not pixel_values.is_floating_point():  # raw uint8 pixels would run, silently, on unnormalised numbers
        raise ValueError(
            f"{pixels} must be floating point (normalised patches from the processor), got {pixel_values.dtype}"
        )
    if grid_thw.ndim != 2 or grid_thw.shape[1] != 3:
        raise ValueError(f"{grid} must be (num_items, 3) rows of (t, h, w), got {tuple(grid_thw.shape)}")
    if grid_thw.is_floating_point() or grid_thw.is_complex() or grid_thw.dtype == torch.bool:
        raise ValueError(f"{grid} must hold integers (patch counts), got {grid_thw.dtype}")
    if (grid_thw < 1).any():
        raise ValueError(f"{grid} entries must be >= 1 patch, got {grid_thw.tolist()}")
    if (grid_thw[:, 1:] % config.spatial_merge_size).any():
        raise ValueError(
            f"{grid} h and w must be multiples of spatial_merge_size {config.spatial_merge_size} "
            f"(each {config.spatial_merge_size}x{config.spatial_merge_size} patches become one token): "
            f"{grid_thw.tolist()}"
        )
    total = int(grid_thw.prod(-1).sum())
    if total != pixel_values.shape[0]:
        raise ValueError(
            f"{grid} {grid_thw.tolist()} describes {total} patches (sum of t * h * w), "
            f"{pixels} has {pixel_values.shape[0]} rows"
        )
