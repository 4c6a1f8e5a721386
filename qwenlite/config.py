"""Configuration of Qwen2.5-VL as three frozen dataclasses, read from a checkpoint's config.json.

Mirrors transformers' `Qwen2_5_VLConfig`, `Qwen2_5_VLTextConfig` and `Qwen2_5_VLVisionConfig`
and keeps their field names. Both on-disk styles are accepted: the hub's 4.x style (text fields
at the top level, `rope_scaling: {type: mrope}`) and the 5.x style (`text_config`, `rope_parameters`).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeGuard

from . import tokens
from .layers import ACTIVATIONS


@dataclass(frozen=True)
class VisionConfig:
    depth: int = 32  # number of vision blocks
    hidden_size: int = 1280  # width D of the vision tower
    hidden_act: str = "silu"  # activation of the SwiGLU MLP in each block
    intermediate_size: int = 3420  # MLP width of each block
    num_heads: int = 16  # attention heads; head dim = hidden_size // num_heads
    in_channels: int = 3  # RGB
    patch_size: int = 14  # spatial patch side in pixels
    spatial_merge_size: int = 2  # the merger joins merge x merge patches into one LLM token
    temporal_patch_size: int = 2  # frames per temporal patch (a still image is repeated to fill it)
    tokens_per_second: float = 2  # temporal position ids advance this much per second of video
    window_size: int = 112  # window side in pixels for windowed attention (8x8 patches)
    out_hidden_size: int = 2048  # merger output width = text hidden size
    fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)  # blocks with full (per-frame) attention
    rope_theta: float = 10000.0  # base of the vision 2-D rotary embedding

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 151936  # tokens in the embedding table
    hidden_size: int = 2048  # width of the decoder
    intermediate_size: int = 11008  # SwiGLU MLP width
    num_hidden_layers: int = 36  # decoder layers
    num_attention_heads: int = 16  # query heads
    num_key_value_heads: int = 2  # key/value heads (grouped-query attention)
    hidden_act: str = "silu"  # MLP activation
    max_position_embeddings: int = 128000  # longest position the model was trained for
    rms_norm_eps: float = 1e-6  # epsilon of every RMSNorm in the decoder
    rope_theta: float = 1000000.0  # base of the M-RoPE frequencies
    mrope_section: tuple[int, ...] = (16, 24, 24)  # rotary pairs given to the t, h, w position ids
    bos_token_id: int | None = tokens.ENDOFTEXT_ID  # <|endoftext|>
    eos_token_id: int | tuple[int, ...] | None = tokens.IM_END_ID  # <|im_end|>

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass(frozen=True)
class QwenLiteConfig:
    text_config: TextConfig  # the language model
    vision_config: VisionConfig  # the vision tower and merger
    image_token_id: int = tokens.IMAGE_PAD_ID  # <|image_pad|>
    video_token_id: int = tokens.VIDEO_PAD_ID  # <|video_pad|>
    vision_start_token_id: int = tokens.VISION_START_ID  # <|vision_start|>
    vision_end_token_id: int = tokens.VISION_END_ID  # <|vision_end|>
    vision_token_id: int = tokens.VISION_PAD_ID  # <|vision_pad|>
    tie_word_embeddings: bool = False  # lm_head shares the embedding matrix (3B: yes, 7B: no)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> QwenLiteConfig:
        """Read `config.json` from a checkpoint folder (or the file itself)."""
        path = Path(path)
        file = path / "config.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no config.json at {file}: expected a Qwen2.5-VL checkpoint folder")
        return cls.from_dict(read_json(file), source=str(file))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> QwenLiteConfig:
        _check_object(raw, source, "the top level")
        model_type = raw.get("model_type")
        if model_type != "qwen2_5_vl":
            raise ValueError(
                f"{source}: model_type is {model_type!r} (architectures {raw.get('architectures')}), expected "
                "'qwen2_5_vl' (Qwen2_5_VLForConditionalGeneration): qwenlite builds only Qwen2.5-VL"
            )
        if "vision_config" not in raw:
            raise ValueError(f"{source}: no 'vision_config' section")

        # 5.x nests the text fields under text_config; 4.x keeps them at the top level.
        text_raw = dict(_check_object(raw.get("text_config") or raw, source, "text_config"))
        rope = text_raw.get("rope_parameters") or text_raw.get("rope_scaling") or raw.get("rope_scaling") or {}
        rope = dict(_check_object(rope, source, "rope_scaling / rope_parameters"))
        text_raw.setdefault("rope_theta", rope.get("rope_theta", raw.get("rope_theta", 1000000.0)))
        if "mrope_section" not in rope:
            raise ValueError(f"{source}: no mrope_section in rope_scaling / rope_parameters")
        text_raw["mrope_section"] = _int_list(rope["mrope_section"], source, "mrope_section")
        if isinstance(text_raw.get("eos_token_id"), list):
            text_raw["eos_token_id"] = tuple(text_raw["eos_token_id"])
        text = TextConfig(**_known(TextConfig, text_raw))

        vision_raw = dict(_check_object(raw["vision_config"], source, "vision_config"))
        vision_raw.setdefault("in_channels", vision_raw.get("in_chans", 3))
        vision_rope = _check_object(vision_raw.get("rope_parameters") or {}, source, "vision_config.rope_parameters")
        vision_raw["rope_theta"] = vision_rope.get("rope_theta", 10000.0)
        vision_raw["fullatt_block_indexes"] = _int_list(
            vision_raw.get("fullatt_block_indexes", []), source, "vision fullatt_block_indexes"
        )
        vision = VisionConfig(**_known(VisionConfig, vision_raw))

        top = _known(cls, raw)
        top.pop("text_config", None)
        top.pop("vision_config", None)
        config = cls(text_config=text, vision_config=vision, **top)
        config.validate(source)
        return config

    def validate(self, source: str = "config") -> None:
        """Every number of the right type and range first, then the rules that tie them together.

        The type checks come first so that a string, a zero or a NaN is named here, not met later as a
        formatting error, a ZeroDivisionError or NaN logits.
        """
        text, vision = self.text_config, self.vision_config
        for name in TEXT_SIZES:
            _positive_int(getattr(text, name), source, f"text {name}")
        for name in VISION_SIZES:
            _positive_int(getattr(vision, name), source, f"vision {name}")
        for name in ("rms_norm_eps", "rope_theta"):
            _positive_finite(getattr(text, name), source, f"text {name}")
        for name in ("rope_theta", "tokens_per_second"):
            _positive_finite(getattr(vision, name), source, f"vision {name}")
        for part, act in (("text", text.hidden_act), ("vision", vision.hidden_act)):
            if act not in ACTIVATIONS:
                raise ValueError(f"{source}: {part} hidden_act is {act!r}, not one of {sorted(ACTIVATIONS)}")
        for value in text.mrope_section:
            _positive_int(value, source, f"an entry of mrope_section {text.mrope_section}")
        for value in vision.fullatt_block_indexes:
            if type(value) is not int or not 0 <= value < vision.depth:
                raise ValueError(
                    f"{source}: vision fullatt_block_indexes {vision.fullatt_block_indexes} must be block "
                    f"numbers in [0, depth {vision.depth}), got {value!r}"
                )
        for name in TOKEN_ID_FIELDS:
            _token_id(getattr(self, name), source, name, text.vocab_size)
        for name in ("bos_token_id", "eos_token_id"):
            value = getattr(text, name)
            for token in value if isinstance(value, tuple) else () if value is None else (value,):
                _token_id(token, source, name, text.vocab_size)
        if not isinstance(self.tie_word_embeddings, bool):
            raise ValueError(f"{source}: tie_word_embeddings must be true or false, got {self.tie_word_embeddings!r}")
        if text.hidden_size % text.num_attention_heads:
            raise ValueError(
                f"{source}: hidden_size {text.hidden_size} not divisible by {text.num_attention_heads} heads"
            )
        if text.num_attention_heads % text.num_key_value_heads:
            raise ValueError(
                f"{source}: {text.num_attention_heads} query heads not divisible by {text.num_key_value_heads} kv heads"
            )
        if sum(text.mrope_section) * 2 != text.head_dim:
            raise ValueError(
                f"{source}: mrope_section {text.mrope_section} must sum to head_dim/2 = {text.head_dim // 2}"
            )
        if vision.hidden_size % vision.num_heads:
            raise ValueError(
                f"{source}: vision hidden_size {vision.hidden_size} not divisible by {vision.num_heads} heads"
            )
        if vision.head_dim % 4:
            raise ValueError(
                f"{source}: vision head_dim {vision.head_dim} (hidden_size / num_heads) must be a multiple of 4: "
                "the 2-D rotary embedding gives a quarter of it to each of h and w, twice"
            )
        if vision.out_hidden_size != text.hidden_size:
            raise ValueError(
                f"{source}: vision out_hidden_size {vision.out_hidden_size} != text hidden_size {text.hidden_size}"
            )
        if vision.window_size % (vision.patch_size * vision.spatial_merge_size):
            raise ValueError(f"{source}: window_size {vision.window_size} is not a multiple of patch * merge")


# sizes that must be positive integers (a string, a float, 0 or a negative number is refused by name)
TEXT_SIZES = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
)
VISION_SIZES = (
    "depth",
    "hidden_size",
    "intermediate_size",
    "num_heads",
    "in_channels",
    "patch_size",
    "spatial_merge_size",
    "temporal_patch_size",
    "window_size",
    "out_hidden_size",
)
TOKEN_ID_FIELDS = (
    "image_token_id",
    "video_token_id",
    "vision_start_token_id",
    "vision_end_token_id",
    "vision_token_id",
)


def _check_object(value: Any, source: str, what: str) -> dict[str, Any]:
    """A section of config.json must be a JSON object: a list or a number there is named, not an AttributeError."""
    if not isinstance(value, dict):
        raise ValueError(f"{source}: {what} must be a JSON object ({{...}}), got {type(value).__name__}: {value!r:.80}")
    return value


def _int_list(value: Any, source: str, what: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{source}: {what} must be a list of integers, got {value!r}")
    return tuple(value)


def _positive_int(value: Any, source: str, what: str) -> None:
    # bool is an int to Python, and 128.0 or "128" would break the arithmetic later: only a JSON integer will do
    if type(value) is not int or value <= 0:
        raise ValueError(f"{source}: {what} must be a positive integer, got {value!r} ({type(value).__name__})")


def read_json(file: str | Path) -> Any:
    """A checkpoint's JSON file (config, index, generation config, tokenizer config), or a ValueError that names
    the file: json's own error says neither which file nor, for bytes that are not UTF-8, that it is text."""
    try:
        return json.loads(Path(file).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{file} is not valid JSON: {err}") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"{file} is not valid JSON: not UTF-8 text ({err})") from err


def finite_number(value: object) -> TypeGuard[float]:
    """A real number (numpy's included, bool not) that is neither NaN nor infinite: the one rule every
    argument and config number that must be finite is checked with."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _positive_finite(value: Any, source: str, what: str) -> None:
    if not finite_number(value) or value <= 0:
        raise ValueError(f"{source}: {what} must be a finite number > 0, got {value!r} ({type(value).__name__})")


def _token_id(value: Any, source: str, what: str, vocab_size: int) -> None:
    if type(value) is not int or not 0 <= value < vocab_size:
        raise ValueError(f"{source}: {what} must be a token id in [0, vocab_size {vocab_size}), got {value!r}")


def _known(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    """Keep only the keys that `cls` declares (config.json carries many bookkeeping fields)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in raw.items() if k in names}


# ---------------------------------------------------------------- the config's token ids against the tokenizer's


def tokenizer_file_ids(folder: str | Path) -> tuple[dict[str, int], Path | None]:
    """(token -> id of the special tokens in tokens.CONFIG_TOKENS, the file read) from a checkpoint's tokenizer files.

    Read without building the tokenizer: tokenizer_config.json's added_tokens_decoder (small), else
    tokenizer.json's added_tokens. ({}, None) when the folder has neither (a checkpoint without a tokenizer).
    """
    folder = Path(folder)
    wanted = set(tokens.CONFIG_TOKENS.values())
    for name in ("tokenizer_config.json", "tokenizer.json"):
        file = folder / name
        if not file.is_file():
            continue
        raw = read_json(file)
        if not isinstance(raw, dict):
            raise ValueError(f"{file} must be a JSON object, got {type(raw).__name__}")
        if isinstance(decoder := raw.get("added_tokens_decoder"), dict):
            pairs = [(entry.get("content"), key) for key, entry in decoder.items() if isinstance(entry, dict)]
        elif isinstance(added := raw.get("added_tokens"), list):
            pairs = [(entry.get("content"), entry.get("id")) for entry in added if isinstance(entry, dict)]
        else:
            continue
        found = {}
        for content, token_id in pairs:
            if content in wanted:
                try:
                    found[content] = int(token_id)
                except (TypeError, ValueError) as err:
                    raise ValueError(f"{file}: token {content} has id {token_id!r}, not an integer") from err
        return found, file
    return {}, None


def check_config_ids(
    config: Mapping[str, object] | object,
    token_ids: Mapping[str, int | None],
    config_source: str,
    tokenizer_source: str,
) -> None:
    """The config's special-token ids (image_token_id, ...) must be the tokenizer's ids of those tokens.

    Otherwise the processor marks one id as image pads and the model fuses features into another: refused at
    load, naming both ids, instead of an error about mm_token_type_ids (or wrong positions) at the first call.
    config: a QwenLiteConfig, or the raw config.json dict.
    """
    for field, token in tokens.CONFIG_TOKENS.items():
        ours = config.get(field) if isinstance(config, Mapping) else getattr(config, field, None)
        theirs = token_ids.get(token)
        if ours is not None and theirs is not None and ours != theirs:
            raise ValueError(
                f"{config_source} has {field} = {ours!r}, but the tokenizer ({tokenizer_source}) gives {token} "
                f"the id {theirs}: the two files must agree (the processor writes the tokenizer's id, the model "
                f"looks for the config's)"
            )
