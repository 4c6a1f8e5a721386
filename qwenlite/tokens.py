"""Special tokens of Qwen2.5-VL, the modality of each token, and its kind for pictures of a prompt.

The ids are the Qwen2 tokenizer's (the same in the 3B and 7B checkpoints) and the `*_token_id` fields of
transformers' `Qwen2_5_VLConfig`. A token's modality is text, image or video: the `mm_token_type_ids` that
`Qwen2_5_VLProcessor` writes (0, 1, 2). Its kind, used only to colour pictures, also tells chat tokens,
vision start/end and padding apart. The config's defaults, the processor, fusion, get_rope_index and the
pictures all read these from here; this module imports nothing from qwenlite.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import torch

ENDOFTEXT_ID = 151643  # <|endoftext|>: also the tokenizer's padding token
IM_START_ID = 151644  # <|im_start|>: opens a chat turn
IM_END_ID = 151645  # <|im_end|>: closes a chat turn (the instruct model's end of sequence)
VISION_START_ID = 151652  # <|vision_start|>: opens an image or video span
VISION_END_ID = 151653  # <|vision_end|>: closes it
VISION_PAD_ID = 151654  # <|vision_pad|>: unused by the processor
IMAGE_PAD_ID = 151655  # <|image_pad|>: one per merged image token
VIDEO_PAD_ID = 151656  # <|video_pad|>: one per merged video token

VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
VISION_PAD = "<|vision_pad|>"
CHAT_IDS = (ENDOFTEXT_ID, IM_START_ID, IM_END_ID)
# the config's field for each special token the model fuses or positions by id
CONFIG_TOKENS = {
    "image_token_id": IMAGE_PAD,
    "video_token_id": VIDEO_PAD,
    "vision_start_token_id": VISION_START,
    "vision_end_token_id": VISION_END,
    "vision_token_id": VISION_PAD,
}

# modality codes of mm_token_type_ids
TEXT, IMAGE, VIDEO = 0, 1, 2
MODALITY_NAMES = {TEXT: "text", IMAGE: "image", VIDEO: "video"}


class PadTokenIds(Protocol):
    """Anything that knows the two pad ids: a QwenLiteConfig (from config.json) or a Processor (from its tokenizer)."""

    image_token_id: int
    video_token_id: int


def mm_token_type_ids(input_ids: torch.Tensor, config: PadTokenIds) -> torch.Tensor:
    """(B, L) modality of every token, as transformers' processor writes it: 0 text, 1 image pad, 2 video pad.

    ids [<|vision_start|>, <|image_pad|>, <|image_pad|>, <|vision_end|>, "a"] -> [0, 1, 1, 0, 0].
    """
    return IMAGE * (input_ids == config.image_token_id).long() + VIDEO * (input_ids == config.video_token_id).long()


class SpecialTokenIds(PadTokenIds, Protocol):
    vision_start_token_id: int
    vision_end_token_id: int


def token_kinds(ids: Sequence[int], config: SpecialTokenIds, attention_mask: Sequence[int] | None = None) -> list[str]:
    """One word per token, for pictures of a prompt: text, chat, vision (start/end), image, video or padding.

    [<|im_start|>, "a", <|vision_start|>, <|image_pad|>, <|vision_end|>] -> [chat, text, vision, image, vision].
    """
    vision = (config.vision_start_token_id, config.vision_end_token_id)
    kinds = []
    for k, t in enumerate(ids):
        if attention_mask is not None and not attention_mask[k]:
            kinds.append("padding")
        elif t == config.image_token_id:
            kinds.append("image")
        elif t == config.video_token_id:
            kinds.append("video")
        elif t in vision:
            kinds.append("vision")
        elif t in CHAT_IDS:
            kinds.append("chat")
        else:
            kinds.append("text")
    return kinds


def tokenizer_file_ids(folder: str | Path) -> tuple[dict[str, int], Path | None]:
    """(token -> id of the special tokens in CONFIG_TOKENS, the file read) from a checkpoint's tokenizer files.

    Read without building the tokenizer: tokenizer_config.json's added_tokens_decoder (small), else
    tokenizer.json's added_tokens. ({}, None) when the folder has neither (a checkpoint without a tokenizer).
    """
    folder = Path(folder)
    wanted = set(CONFIG_TOKENS.values())
    for name in ("tokenizer_config.json", "tokenizer.json"):
        file = folder / name
        if not file.is_file():
            continue
        try:
            raw = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{file} is not valid JSON: {err}") from err
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
    for field, token in CONFIG_TOKENS.items():
        ours = config.get(field) if isinstance(config, Mapping) else getattr(config, field, None)
        theirs = token_ids.get(token)
        if ours is not None and theirs is not None and ours != theirs:
            raise ValueError(
                f"{config_source} has {field} = {ours!r}, but the tokenizer ({tokenizer_source}) gives {token} "
                f"the id {theirs}: the two files must agree (the processor writes the tokenizer's id, the model "
                f"looks for the config's)"
            )
