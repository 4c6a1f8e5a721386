"""Greedy decoding with a KV cache: the prefill, then one token at a time, as transformers' greedy search.

QwenLiteVL gets `generate` from `GenerationMixin` (transformers' models get theirs from a class of that name);
`GenerationSettings` are the defaults a checkpoint's generation_config.json gives. Refused up front, by name:
right padding, a max_new_tokens that would pass max_position_embeddings, a non-finite repetition penalty.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .config import QwenLiteConfig, TextConfig, finite_number
from .decoder import KVCache
from .rope_index import get_rope_index


@dataclass(frozen=True)
class GenerationSettings:
    """What `generate` uses when not told otherwise: the checkpoint's generation_config.json, if any.

    The hub's file for Qwen2.5-VL says do_sample with top_k 1, temperature 0.1, top_p 0.001 and
    repetition_penalty 1.05. Sampling from the top 1 token is taking the argmax, so those settings
    are greedy decoding with a repetition penalty of 1.05; temperature and top_p change nothing.
    """

    eos_token_id: tuple[int, ...]
    pad_token_id: int | None = None
    repetition_penalty: float = 1.0

    @classmethod
    def from_json(cls, settings: dict, config: QwenLiteConfig, source: str = "generation_config") -> GenerationSettings:
        """The settings of a generation_config.json, each checked where it enters (source names the file)."""
        if not isinstance(settings, dict):
            raise ValueError(f"{source} must be a JSON object, got {type(settings).__name__}")
        vocab = config.text_config.vocab_size
        eos = settings.get("eos_token_id", config.text_config.eos_token_id)
        pad = settings.get("pad_token_id")
        for name, ids in (("eos_token_id", eos), ("pad_token_id", pad)):
            listed = ids if isinstance(ids, list | tuple) else () if ids is None else (ids,)
            if not all(type(i) is int and 0 <= i < vocab for i in listed):
                raise ValueError(f"{source}: {name} must be token ids in [0, vocab_size {vocab}), got {ids!r}")
        if isinstance(pad, list | tuple):
            raise ValueError(f"{source}: pad_token_id must be one token id, got {pad!r}")
        penalty = checked_penalty(settings.get("repetition_penalty", 1.0), f"{source}: ")
        return cls(_as_tuple(eos), pad, penalty)


class GenerationMixin(nn.Module):
    """`generate` for QwenLiteVL: calls the model's forward (self(...)) with a KVCache."""

    config: QwenLiteConfig  # what QwenLiteVL sets; named here for the type checker
    generation_config: GenerationSettings
    lm_head: nn.Linear

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        second_per_grid_ts: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        *,
        max_new_tokens: int = 16,
        eos_token_id: int | list[int] | None = None,
        pad_token_id: int | None = None,
        repetition_penalty: float | None = None,
    ) -> torch.Tensor:
        """Greedy decoding with a KV cache. Returns (B, L + new): the prompt followed by the new tokens.

        Rows that have produced an end-of-sequence token are filled with pad_token_id afterwards,
        and decoding stops once every row has ended (as transformers' greedy search does).
        Settings left None come from the checkpoint's generation_config.json (`self.generation_config`).
        repetition_penalty p (transformers' `RepetitionPenaltyLogitsProcessor`): before each argmax, the
        logit of every token already in the sequence, prompt included, is divided by p if positive and
        multiplied by p if negative, so repeats become less likely; 1.0 turns it off.
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1 (tokens to generate), got {max_new_tokens!r}")
        settings = self.generation_config
        device = input_ids.device
        eos_ids = _as_tuple(eos_token_id) if eos_token_id is not None else settings.eos_token_id
        eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
        if pad_token_id is None:
            # pad fills the rows that are done; with no stop tokens (eos_token_id=[]) no row ever is
            fallback = eos_ids[0] if eos_ids else settings.eos_token_id[0]
            pad_token_id = settings.pad_token_id if settings.pad_token_id is not None else fallback
        penalty = settings.repetition_penalty if repetition_penalty is None else checked_penalty(repetition_penalty)
        b = input_ids.shape[0]
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        check_left_padded(mask)
        self._check_room(input_ids, mask, image_grid_thw, video_grid_thw, second_per_grid_ts, max_new_tokens)
        check_memory(self.config.text_config, b, input_ids.shape[1], max_new_tokens, self.lm_head.weight)
        vision_inputs = {
            "pixel_values": pixel_values,
            "image_grid_thw": image_grid_thw,
            "pixel_values_videos": pixel_values_videos,
            "video_grid_thw": video_grid_thw,
            "second_per_grid_ts": second_per_grid_ts,
            "mm_token_type_ids": mm_token_type_ids,
        }
        cache = KVCache()
        # 1) prefill: the whole prompt at once; only the last position's logits pick the next token
        out = self(input_ids, mask, cache=cache, logits_to_keep=1, **vision_inputs)
        sequence, done = input_ids, torch.zeros(b, dtype=torch.bool, device=device)
        for step in range(max_new_tokens):
            logits = out.logits[:, -1].float()  # (B, V) parity: transformers scores in float32
            if penalty != 1.0:
                logits = penalise_repeats(logits, sequence, penalty)
            token = logits.argmax(-1)  # (B,)
            token = torch.where(done, torch.full_like(token, pad_token_id), token)
            sequence = torch.cat([sequence, token[:, None]], dim=1)
            done = done | torch.isin(token, eos)
            if done.all() or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = self(token[:, None], mask, cache=cache, rope_deltas=out.rope_deltas)  # 2) one token at a time
        return sequence

    def _check_room(self, input_ids, mask, image_grid_thw, video_grid_thw, second_per_grid_ts, new: int) -> None:
        """Refuse up front, not after hours of decoding, a generation whose positions would pass the model's range.

        The prompt's largest position id p comes from get_rope_index (integers, no model); new tokens are fed at
        p + 1 ... p + new - 1 (the last one is only produced), each below max_position_embeddings.
        """
        limit = self.config.text_config.max_position_embeddings
        if video_grid_thw is None and input_ids.shape[1] + new <= limit:
            return  # without a video no position id passes its token's index (a video's t ids can: slow fps)
        positions, _ = get_rope_index(
            input_ids, image_grid_thw, video_grid_thw, second_per_grid_ts, mask, config=self.config
        )
        top = int(positions.max())
        if top + new - 1 >= limit:
            raise ValueError(
                f"max_new_tokens={new} would feed position ids up to {top + new - 1}, beyond max_position_embeddings"
                f" = {limit} (the prompt's largest is {top}): ask for at most {limit - top} new tokens"
            )


def checked_penalty(value: object, where: str = "") -> float:
    """A repetition penalty must be a finite number > 0 (1.0 = off): NaN would make every logit NaN."""
    if not finite_number(value) or value <= 0:
        raise ValueError(f"{where}repetition_penalty must be a finite number > 0 (1.0 = off), got {value!r}")
    return float(value)


def kv_cache_bytes(config: TextConfig, batch: int, positions: int, dtype: torch.dtype) -> int:
    """What the KV cache holds after `positions` tokens: k and v, every layer, each row, each kv head, Dh numbers.

    2 x layers x B x Hkv x S x Dh x bytes: the real 3B (36 layers, 2 kv heads of 128) in bfloat16 keeps
    36 KiB a token, 1.2 GB for 32k tokens (grouped-query attention: 8x less than 16 full heads would).
    """
    itemsize = torch.finfo(dtype).bits // 8
    return 2 * config.num_hidden_layers * batch * config.num_key_value_heads * positions * config.head_dim * itemsize


def prefill_floor_bytes(config: TextConfig, batch: int, length: int, new: int, dtype: torch.dtype) -> int:
    """The least a generation must hold at once beside the weights: the KV cache of every position it feeds,
    and, while the prefill runs one decoder layer, the residual stream, its normed copy and the MLP's gate and up
    products (B x L x (2 D + 2 I) numbers). A lower bound: what it needs is never less."""
    itemsize = torch.finfo(dtype).bits // 8
    activations = batch * length * (2 * config.hidden_size + 2 * config.intermediate_size) * itemsize
    return kv_cache_bytes(config, batch, length + new - 1, dtype) + activations


def available_bytes(device: torch.device) -> int | None:
    """Memory free for this process: CUDA's free bytes on a GPU, Linux's MemAvailable on the CPU, else None."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(config: TextConfig, batch: int, length: int, new: int, weight: torch.Tensor) -> None:
    """Refuse up front, with the numbers, a generation whose lower bound does not fit in the free memory, instead of
    an out-of-memory kill part-way (a 16 GB laptop with the real 3B and a long video is where this happens)."""
    need = prefill_floor_bytes(config, batch, length, new, weight.dtype)
    free = available_bytes(weight.device)
    if free is not None and need > free:
        cache = kv_cache_bytes(config, batch, length + new - 1, weight.dtype)
        raise MemoryError(
            f"this generation needs at least {need / 2**30:.2f} GiB beside the weights ({cache / 2**30:.2f} GiB of "
            f"KV cache for {length + new - 1} positions x {batch} rows in {weight.dtype}, the rest one layer's "
            f"activations over the {length}-token prompt) but {free / 2**30:.2f} GiB are free on {weight.device}: "
            "use fewer frames or pixels (fps, max_pixels), a smaller batch or a lower max_new_tokens"
        )


def check_left_padded(attention_mask: torch.Tensor) -> None:
    """generate appends each new token at the end of every row: a row with padding at its end (right padding)
    would have its answer written after the pads, a different input than the prompt alone (transformers only
    warns). Refused, naming the rows."""
    if attention_mask.ndim != 2:
        raise ValueError(f"attention_mask must be (batch, length), got shape {tuple(attention_mask.shape)}")
    real = attention_mask.bool()
    right_padded = (~real[:, -1] & real.any(1)).nonzero().flatten().tolist()
    if right_padded:
        raise ValueError(
            f"rows {right_padded} end in padding (attention_mask 0 in the last column): generate needs left "
            "padding, so that every prompt ends at the last column (Processor(..., padding_side='left'), the default)"
        )


def penalise_repeats(logits: torch.Tensor, sequence: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits (B, V) with every token id in sequence (B, S) made less likely: / penalty if > 0, else * penalty."""
    seen = logits.gather(1, sequence)  # (B, S), a token seen twice is penalised once
    return logits.scatter(1, sequence, torch.where(seen < 0, seen * penalty, seen / penalty))


def _as_tuple(ids: int | list[int] | tuple[int, ...] | None) -> tuple[int, ...]:
    if ids is None:
        return ()
    return tuple(ids) if isinstance(ids, (list, tuple)) else (int(ids),)
