"""QwenLiteVL: the whole Qwen2.5-VL model: vision tower, token fusion, M-RoPE decoder, greedy generation.

Mirrors transformers' `Qwen2_5_VLForConditionalGeneration` (and `Qwen2_5_VLModel`). The module tree
uses the hub checkpoint's names (`visual.*`, `model.*`, `lm_head`), so every key of a checkpoint
maps to one parameter. Shapes: B batch, L tokens, V vocab, D text hidden.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
from torch import nn

from .config import QwenLiteConfig
from .decoder import KVCache, TextModel, attention_layers, inspect_decoder
from .fusion import fuse
from .generation import GenerationMixin, GenerationSettings
from .rope_index import decode_position_ids, get_rope_index
from .tokens import mm_token_type_ids
from .vision import VisionTransformer
from .weights import PretrainedWeights, all_finite

# what each modality's two inputs are called (transformers' names), for errors that name them
VISION_INPUTS = {"image": ("pixel_values", "image_grid_thw"), "video": ("pixel_values_videos", "video_grid_thw")}


@dataclass
class VLOutput:
    """What `QwenLiteVL.forward` returns; hidden_states and attentions mean what they do in transformers' output."""

    logits: torch.Tensor  # (B, L, V)
    cache: KVCache | None  # keys/values for decoding, when asked for
    position_ids: torch.Tensor  # (3, B, L) the M-RoPE ids used
    rope_deltas: torch.Tensor  # (B, 1) what decode positions add to text positions
    hidden_states: tuple[torch.Tensor, ...] | None = None  # layers + 1 of (B, L, D), with output_hidden_states
    attentions: tuple[torch.Tensor | None, ...] | None = None  # one (B, H, L, S) per layer, with output_attentions


class QwenLiteVL(PretrainedWeights, GenerationMixin, nn.Module):
    def __init__(self, config: QwenLiteConfig) -> None:
        super().__init__()
        self.config = config
        self.visual = VisionTransformer(config.vision_config)
        self.model = TextModel(config.text_config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.generation_config = GenerationSettings.from_json({}, config)

    # ------------------------------------------------------------ vision

    def get_image_features(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One (tokens_i, D) tensor per image, tokens_i = t * h * w / merge**2."""
        return self._split(self._features(pixel_values, image_grid_thw, "image"), image_grid_thw)

    def get_video_features(
        self, pixel_values_videos: torch.Tensor, video_grid_thw: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """One (tokens_i, D) tensor per video."""
        return self._split(self._features(pixel_values_videos, video_grid_thw, "video"), video_grid_thw)

    def _features(self, pixels: torch.Tensor, grid: torch.Tensor | None, modality: str) -> torch.Tensor:
        """The vision tower on one modality's inputs, after checks that name them as the caller does."""
        pixels_name, grid_name = VISION_INPUTS[modality]
        if grid is None:
            raise ValueError(f"{pixels_name} was given without {grid_name}")
        if pixels.is_floating_point() and not all_finite(pixels):  # else: NaN logits and token 0 forever
            bad = int((~torch.isfinite(pixels)).sum())
            raise ValueError(f"{pixels_name} holds {bad} NaN or infinite values: the pixels must be finite numbers")
        return self.visual(pixels, grid, (pixels_name, grid_name))  # the tower checks their shapes (check_grid)

    def _split(self, features: torch.Tensor, grid_thw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        sizes = (grid_thw.prod(-1) // self.config.vision_config.spatial_merge_size**2).tolist()
        return features.split(sizes)

    # ------------------------------------------------------------ forward

    def embed(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings (B, L, D) with image and video features scattered into their pad tokens."""
        check_token_ids(input_ids, self.config.text_config.vocab_size)
        x = self.model.embed_tokens(input_ids)
        pad_ids = {"image": self.config.image_token_id, "video": self.config.video_token_id}
        for pixels, grid, modality in (
            (pixel_values, image_grid_thw, "image"),
            (pixel_values_videos, video_grid_thw, "video"),
        ):
            features = None if pixels is None else self._features(pixels, grid, modality)  # (pad tokens, D), in order
            x = fuse(x, input_ids, features, pad_ids[modality], modality)  # pads without pixels raise here
        return x

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        second_per_grid_ts: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        rope_deltas: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        output_attentions: bool | Collection[int] = False,
        output_hidden_states: bool = False,
    ) -> VLOutput:
        """Logits for every token, or for the last logits_to_keep only (as in transformers; 0 = all).
        With a non-empty cache, input_ids are the new tokens only.

        output_hidden_states: `.hidden_states`, as transformers': the input embeddings (vision features fused),
        the output of each decoder layer but the last, then the last one after the final norm: layers + 1.
        output_attentions: `.attentions`, one entry per decoder layer: the attention probabilities (B, H, L, S)
        (softmax over keys, after the causal and padding mask; computed as transformers' eager attention, and
        the layer's output is computed from them). True keeps every layer; a collection of layer indices,
        e.g. [0, 35], keeps those only, and the others are None, so attentions[i] is always layer i. Off by
        default, and then every layer runs SDPA and nothing is kept.
        """
        keep = attention_layers(output_attentions, len(self.model.layers))
        past = len(cache) if cache is not None else 0
        if past == 0 and mm_token_type_ids is not None:
            self._check_token_types(input_ids, mm_token_type_ids)
        if past == 0:  # prefill
            # 1) embed tokens and fuse vision features into the pad positions
            x = self.embed(input_ids, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw)
            # 2) 3-D positions from the prompt's layout
            position_ids, rope_deltas = get_rope_index(
                input_ids, image_grid_thw, video_grid_thw, second_per_grid_ts, attention_mask, config=self.config
            )
        else:  # decode: new tokens are text (a generated pad token is an ordinary token, as in transformers)
            if pixel_values is not None or pixel_values_videos is not None:
                raise ValueError(
                    "pixel_values / pixel_values_videos go with the prefill; "
                    "decoding with a cache takes new tokens only"
                )
            if rope_deltas is None:
                raise ValueError("decoding with a cache needs the rope_deltas returned by the prefill")
            check_token_ids(input_ids, self.config.text_config.vocab_size)
            x = self.model.embed_tokens(input_ids)  # 1) embed
            position_ids = decode_position_ids(rope_deltas, past, input_ids.shape[1], attention_mask)  # 2) text + delta
        # 3) decoder and the language-model head
        with inspect_decoder(self.model, output_hidden_states, keep) as seen:  # no hooks when nothing is asked
            hidden = self.model(x, position_ids, attention_mask, cache)  # (B, L, D)
        return VLOutput(
            self.lm_head(hidden[:, -logits_to_keep:]),
            cache,
            position_ids,
            rope_deltas,
            (*seen.hidden_states, hidden) if output_hidden_states else None,
            tuple(seen.attentions) if output_attentions is not False else None,
        )

    def _check_token_types(self, input_ids: torch.Tensor, given: torch.Tensor) -> None:
        """mm_token_type_ids, when given, must agree with the pad tokens in input_ids."""
        derived = mm_token_type_ids(input_ids, self.config)
        if not torch.equal(derived, given.long().to(derived.device)):
            bad = (derived != given.to(derived.device)).nonzero()[:5].tolist()
            raise ValueError(f"mm_token_type_ids disagree with the pad tokens in input_ids at (row, col) {bad}")


def check_token_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    """input_ids must be (B, L) integer ids inside the embedding table."""
    if input_ids.ndim != 2 or input_ids.is_floating_point() or input_ids.dtype == torch.bool:
        raise ValueError(
            f"input_ids must be (batch, length) integer token ids, got {input_ids.dtype} of shape "
            f"{tuple(input_ids.shape)}"
        )
    if input_ids.numel():
        low, high = (int(v) for v in input_ids.aminmax())
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"input_ids hold token id {low if low < 0 else high}, outside the vocabulary [0, {vocab_size})"
            )
