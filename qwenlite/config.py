"""Configuration of Qwen2.5-VL as three frozen dataclasses, read from a checkpoint's config.json.

Mirrors transformers' `Qwen2_5_VLConfig`, `Qwen2_5_VLTextConfig` and `Qwen2_5_VLVisionConfig`
and keeps their field names. Both on-disk styles are accepted: the hub's 4.x style (text fields
at the top level, `rope_scaling: {type: mrope}`) and the 5.x style (`text_config`, `rope_parameters`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from . import tokens


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
        try:
            raw = json.loads(file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{file} is not valid JSON: {err}") from err
        return cls.from_dict(raw, source=str(file))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> QwenLiteConfig:
        model_type = raw.get("model_type")
        if model_type != "qwen2_5_vl":
            raise ValueError(
                f"{source}: model_type is {model_type!r} (architectures {raw.get('architectures')}), expected "
                "'qwen2_5_vl' (Qwen2_5_VLForConditionalGeneration): qwenlite builds only Qwen2.5-VL"
            )
        if "vision_config" not in raw:
            raise ValueError(f"{source}: no 'vision_config' section")

        # 5.x nests the text fields under text_config; 4.x keeps them at the top level.
        text_raw = dict(raw.get("text_config") or raw)
        rope = dict(text_raw.get("rope_parameters") or text_raw.get("rope_scaling") or raw.get("rope_scaling") or {})
        text_raw.setdefault("rope_theta", rope.get("rope_theta", raw.get("rope_theta", 1000000.0)))
        if "mrope_section" not in rope:
            raise ValueError(f"{source}: no mrope_section in rope_scaling / rope_parameters")
        text_raw["mrope_section"] = tuple(rope["mrope_section"])
        if isinstance(text_raw.get("eos_token_id"), list):
            text_raw["eos_token_id"] = tuple(text_raw["eos_token_id"])
        text = TextConfig(**_known(TextConfig, text_raw))

        vision_raw = dict(raw["vision_config"])
        vision_raw.setdefault("in_channels", vision_raw.get("in_chans", 3))
        vision_raw["rope_theta"] = (vision_raw.get("rope_parameters") or {}).get("rope_theta", 10000.0)
        vision_raw["fullatt_block_indexes"] = tuple(vision_raw.get("fullatt_block_indexes", ()))
        vision = VisionConfig(**_known(VisionConfig, vision_raw))

        top = _known(cls, raw)
        top.pop("text_config", None)
        top.pop("vision_config", None)
        config = cls(text_config=text, vision_config=vision, **top)
        config.validate(source)
        return config

    def validate(self, source: str = "config") -> None:
        text, vision = self.text_config, self.vision_config
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
        if vision.out_hidden_size != text.hidden_size:
            raise ValueError(
                f"{source}: vision out_hidden_size {vision.out_hidden_size} != text hidden_size {text.hidden_size}"
            )
        if vision.window_size % (vision.patch_size * vision.spatial_merge_size):
            raise ValueError(f"{source}: window_size {vision.window_size} is not a multiple of patch * merge")


def _known(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    """Keep only the keys that `cls` declares (config.json carries many bookkeeping fields)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in raw.items() if k in names}
