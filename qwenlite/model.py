"""QwenLiteVL: the whole Qwen2.5-VL model: vision tower, token fusion, M-RoPE decoder, greedy generation.

Mirrors transformers' `Qwen2_5_VLForConditionalGeneration` (and `Qwen2_5_VLModel`). The module tree
uses the hub checkpoint's names (`visual.*`, `model.*`, `lm_head`), so every key of a checkpoint
maps to one parameter. Shapes: B batch, L tokens, V vocab, D text hidden.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import checkpoint
from .config import QwenLiteConfig
from .decoder import KVCache, TextModel, attention_layers, inspect_decoder
from .fusion import fuse
from .rope_index import decode_position_ids, get_rope_index
from .tokens import check_config_ids, mm_token_type_ids, tokenizer_file_ids
from .vision import VisionTransformer

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
        penalty = settings.get("repetition_penalty", 1.0)
        if type(penalty) not in (int, float) or not math.isfinite(penalty) or penalty <= 0:
            raise ValueError(f"{source}: repetition_penalty must be a finite number > 0 (1.0 = off), got {penalty!r}")
        return cls(_as_tuple(eos), pad, float(penalty))


class QwenLiteVL(nn.Module):
    def __init__(self, config: QwenLiteConfig) -> None:
        super().__init__()
        self.config = config
        self.visual = VisionTransformer(config.vision_config)
        self.model = TextModel(config.text_config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.generation_config = GenerationSettings.from_json({}, config)

    # ------------------------------------------------------------ weights

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        tensors: dict[str, torch.Tensor] | None = None,
    ) -> QwenLiteVL:
        """Build the tree on the meta device, then fill every parameter from the checkpoint's safetensors.

        dtype: torch.float32 or torch.bfloat16, or their names "float32" / "bfloat16" (float16 is refused: the
        real 3B's vision tower overflows it). device: "cpu", or "cuda" / "cuda:N" where torch sees that GPU.
        tensors: the checkpoint's tensors as `checkpoint.read_tensors(path, dtype, device)` returns them
        (file keys), to share one read of the weights with another model; read from path when None.
        Everything the folder holds is checked before the model is returned: config numbers, the special
        token ids against the tokenizer files, the weights' keys, shapes and finiteness, generation_config.json.
        """
        dtype, device = checkpoint.load_dtype(dtype), checkpoint.load_device(device)  # before any file is read
        path = Path(path)
        config = QwenLiteConfig.from_pretrained(path)
        token_ids, tokenizer_file = tokenizer_file_ids(path) if path.is_dir() else ({}, None)
        check_config_ids(config, token_ids, str(path / "config.json"), str(tokenizer_file))
        generation = GenerationSettings.from_json({}, config)
        if (gen := path / "generation_config.json").is_file():
            try:
                raw = json.loads(gen.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"{gen} is not valid JSON: {err}") from err
            generation = GenerationSettings.from_json(raw, config, source=str(gen))
        with torch.device("meta"):
            model = cls(config)
        if tensors is None:
            tensors = checkpoint.read_tensors(path, dtype, device)
        state = checkpoint.hub_names(tensors, source=str(path))  # qwenlite's own key map
        model.load_checkpoint(state, dtype=dtype, device=device, source=str(path))
        model.generation_config = generation
        return model.eval()

    def expected_keys(self) -> dict[str, torch.Size]:
        """Checkpoint key -> shape, in hub layout (a tied lm_head is not stored)."""
        shapes = {k: v.shape for k, v in self.state_dict(keep_vars=True).items()}
        if self.config.tie_word_embeddings:
            shapes.pop("lm_head.weight")
        return shapes

    def load_checkpoint(
        self,
        state: dict[str, torch.Tensor],
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        source: str = "",
    ) -> None:
        """Strict load: every expected key present with its shape, nothing unexpected, else one error listing all."""
        expected = self.expected_keys()
        state = dict(state)
        if self.config.tie_word_embeddings and "lm_head.weight" in state:
            lm_head = state.pop("lm_head.weight")
            embed = state.get("model.embed_tokens.weight")
            if embed is None or not torch.equal(lm_head, embed):
                raise ValueError(f"{source}: config ties lm_head to embed_tokens, but lm_head.weight differs")
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(
            f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k])}"
            for k in set(expected) & set(state)
            if state[k].shape != expected[k]
        )
        if missing or unexpected or wrong:
            raise KeyError(
                f"checkpoint {source} does not match the Qwen2.5-VL module tree:\n"
                f"  missing keys ({len(missing)}): {missing}\n"
                f"  unexpected keys ({len(unexpected)}): {unexpected}\n"
                f"  wrong shapes ({len(wrong)}): {wrong}"
            )
        for k, v in state.items():  # one tensor at a time (a no-op when read at this dtype and device)
            state[k] = v.to(device=device, dtype=dtype)
            if not all_finite(state[k]):  # one NaN weight would make every logit NaN
                bad = int((~torch.isfinite(state[k])).sum())
                raise ValueError(
                    f"checkpoint {source}: tensor {k} holds {bad} non-finite value(s) (NaN or inf) in "
                    f"{state[k].numel()}: the weights are damaged"
                )
        self.load_state_dict(state, strict=False, assign=True)
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight  # assign=True replaced the shared tensor

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
        if not output_hidden_states and output_attentions is False:
            hidden = self.model(x, position_ids, attention_mask, cache)  # (B, L, D)
            return VLOutput(self.lm_head(hidden[:, -logits_to_keep:]), cache, position_ids, rope_deltas)
        with inspect_decoder(self.model, output_hidden_states, keep) as seen:
            hidden = self.model(x, position_ids, attention_mask, cache)
        return VLOutput(
            self.lm_head(hidden[:, -logits_to_keep:]),
            cache,
            position_ids,
            rope_deltas,
            (*seen.hidden_states, hidden) if output_hidden_states else None,
            tuple(seen.attentions) if output_attentions is not False else None,
        )

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
            pad_token_id = settings.pad_token_id if settings.pad_token_id is not None else eos_ids[0]
        penalty = settings.repetition_penalty if repetition_penalty is None else float(repetition_penalty)
        if not math.isfinite(penalty) or penalty <= 0:
            raise ValueError(f"repetition_penalty must be a finite number > 0 (1.0 = off), got {penalty}")
        b = input_ids.shape[0]
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        check_left_padded(mask)
        self._check_room(input_ids, mask, image_grid_thw, video_grid_thw, second_per_grid_ts, max_new_tokens)
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

    def _check_token_types(self, input_ids: torch.Tensor, given: torch.Tensor) -> None:
        """mm_token_type_ids, when given, must agree with the pad tokens in input_ids."""
        derived = mm_token_type_ids(input_ids, self.config)
        if not torch.equal(derived, given.long().to(derived.device)):
            bad = (derived != given.to(derived.device)).nonzero()[:5].tolist()
            raise ValueError(f"mm_token_type_ids disagree with the pad tokens in input_ids at (row, col) {bad}")


def all_finite(x: torch.Tensor) -> bool:
    """No NaN or inf in x. aminmax propagates NaN and reads x without a copy: torch.isfinite(x).all() would
    allocate 1.7 bytes per number (1.2 GB for a 267 s video's 154k patches, ~1 GB for the 3B's embedding)."""
    return x.numel() == 0 or bool(torch.isfinite(torch.stack(x.aminmax())).all())


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
