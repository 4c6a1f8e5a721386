"""Special tokens of Qwen2.5-VL, the modality of each token, and its kind for pictures of a prompt.

The ids are the Qwen2 tokenizer's (the same in the 3B and 7B checkpoints) and the `*_token_id` fields of
transformers' `Qwen2_5_VLConfig`. A token's modality is text, image or video: the `mm_token_type_ids` that
`Qwen2_5_VLProcessor` writes (0, 1, 2). Its kind, used only to colour pictures, also tells chat tokens,
vision start/end and padding apart. The config's defaults, the processor, fusion, get_rope_index and the
pictures all read these from here; this module imports nothing from qwenlite.
"""

from __future__ import annotations

from collections.abc import Sequence
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

    @property
    def image_token_id(self) -> int: ...
    @property
    def video_token_id(self) -> int: ...


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
