"""Processor: chat messages (or text) with images and videos -> the model's input tensors.

Mirrors transformers' `Qwen2_5_VLProcessor`: render the Qwen2.5-VL chat template, load and preprocess every
image and video (qwenlite.image_io, video_io, preprocessing), expand each `<|image_pad|>` / `<|video_pad|>` to
grid_t*grid_h*grid_w / merge**2 copies, tokenize with the checkpoint's own tokenizer (transformers'
AutoTokenizer: the BPE is not rebuilt here), and return transformers' key names, so one dict feeds both
`qwenlite.QwenLiteVL` and the transformers model.
Shapes: B prompts, L tokens (left-padded), N patches, 1176 = 3*2*14*14 numbers per patch.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from .config import check_config_ids, finite_number, read_json
from .image_io import ImageSource
from .preprocessing import (
    VIDEO_TOTAL_PIXELS,
    Patches,
    PreprocessorConfig,
    preprocess_image,
    preprocess_video,
)
from .tokens import CONFIG_TOKENS, IMAGE_PAD, VIDEO_PAD, mm_token_type_ids
from .video_io import Video, load_video

if TYPE_CHECKING:
    from jinja2 import Template
from .weights import all_finite

Message = dict[str, Any]  # {"role": "user", "content": "text" or [{"type": "image", "image": ...}, ...]}

# keys of a video content item that choose frames, and those that size them (qwen-vl-utils' names)
_VIDEO_SAMPLING_KEYS = (
    "fps",
    "nframes",
    "min_frames",
    "max_frames",
    "video_fps",
    "sample_fps",
    "video_start",
    "video_end",
)
_VIDEO_SIZE_KEYS = ("min_pixels", "max_pixels", "total_pixels")


class Processor:
    """Build model inputs for Qwen2.5-VL.

    processor = Processor.from_pretrained(path)
    inputs = processor.from_messages(messages)                      # chat messages, images/videos inline
    inputs = processor(text=prompt, images=[...], videos=[...])     # text that already holds one pad per item
    text = processor.apply_chat_template(messages)                  # the prompt string, one pad per item
    """

    def __init__(self, tokenizer: Any, chat_template: str, config: PreprocessorConfig | None = None) -> None:
        self.tokenizer = tokenizer  # a transformers tokenizer (AutoTokenizer of the checkpoint)
        self.chat_template = chat_template  # Jinja source of the Qwen2.5-VL chat template
        self.config = config or PreprocessorConfig()
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)  # 151655
        self.video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_PAD)  # 151656

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Processor:
        """Read a checkpoint folder: tokenizer files, chat_template.jinja (or .json), preprocessor_config.json."""
        from transformers import AutoTokenizer

        path = Path(path)
        if not any((path / name).is_file() for name in ("tokenizer.json", "vocab.json")):
            raise FileNotFoundError(f"{path} has no tokenizer files (tokenizer.json, or vocab.json and merges.txt)")
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (ValueError, OSError, TypeError, KeyError) as err:  # JSONDecodeError is a ValueError
            raise ValueError(f"cannot read the tokenizer files in {path}: {type(err).__name__}: {err}") from err
        processor = cls(tokenizer, _read_chat_template(path, tokenizer), PreprocessorConfig.from_pretrained(path))
        if (config := path / "config.json").is_file():  # the model reads its ids there: they must be these
            try:
                raw = read_json(config)
            except ValueError:
                raw = None  # the model's loader names a broken config.json; the processor does not need it
            if isinstance(raw, dict):
                ids = {token: cast(int, tokenizer.convert_tokens_to_ids(token)) for token in CONFIG_TOKENS.values()}
                check_config_ids(raw, ids, str(config), f"tokenizer files in {path}")
        return processor

    # ------------------------------------------------------------ text

    def apply_chat_template(
        self,
        messages: Sequence[Message],
        add_generation_prompt: bool = True,
        add_vision_id: bool = False,
        tokenize: bool = False,
    ) -> str:
        """Render one conversation to the prompt string (before pad expansion).

        Each image item becomes <|vision_start|><|image_pad|><|vision_end|>, each video item the same with
        <|video_pad|>; a default system prompt is added when the first message is not a system message.
        Rendered as transformers does: a sandboxed Jinja environment with trim_blocks and lstrip_blocks.
        """
        if tokenize:  # accepted so transformers-style calls read the same; tokens come from from_messages / __call__
            raise ValueError("apply_chat_template returns the prompt string; use from_messages(messages) for tensors")
        return _compiled(self.chat_template).render(
            messages=list(messages), add_generation_prompt=add_generation_prompt, add_vision_id=add_vision_id
        )

    def decode(self, token_ids: torch.Tensor | Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences: torch.Tensor, skip_special_tokens: bool = True) -> list[str]:
        return self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------ messages -> inputs

    def from_messages(
        self,
        messages: Sequence[Message] | Sequence[Sequence[Message]],
        add_generation_prompt: bool = True,
        padding_side: str = "left",
    ) -> dict[str, torch.Tensor]:
        """One conversation, or a list of conversations (a batch), -> model inputs.

        Content items: {"type": "text", "text": ...}; {"type": "image", "image": path | PIL | array} with optional
        "min_pixels", "max_pixels"; {"type": "video", "video": file | folder | list of frames | Video} with
        optional "fps" or "nframes", "min_frames", "max_frames", "video_start", "video_end" (seconds),
        "video_fps" or "sample_fps" (frame lists), "min_pixels", "max_pixels", "total_pixels" (qwen-vl-utils'
        keys and defaults; see load_video for frame lists).
        """
        one = bool(messages) and isinstance(messages[0], dict)
        conversations = cast(list[Sequence[Message]], [messages] if one else list(messages))
        texts, images, videos = [], [], []
        for conversation in conversations:
            texts.append(self.apply_chat_template(conversation, add_generation_prompt))
            for item in _vision_items(conversation):
                if _is_video_item(item):
                    videos.append(self._video_item(item))
                else:
                    source = item.get("image", item.get("image_url"))
                    if source is None:
                        raise ValueError(
                            f"image content item {item} has no 'image' (a path, PIL image or array) or 'image_url'"
                        )
                    images.append(preprocess_image(source, self.config, item.get("min_pixels"), item.get("max_pixels")))
        return self(text=texts, images=images or None, videos=videos or None, padding_side=padding_side)

    def _video_item(self, item: Message) -> Patches:
        source = item.get("video")
        if source is None:
            raise ValueError(f"video content item {item} has no 'video' (a file, a folder, frames or a Video)")
        video = source if isinstance(source, Video) else load_video(source, **_pick(item, _VIDEO_SAMPLING_KEYS))
        return preprocess_video(video, self.config, **_pick(item, _VIDEO_SIZE_KEYS))

    # ------------------------------------------------------------ text + pixels -> inputs

    def __call__(
        self,
        text: str | Sequence[str],
        images: Sequence[ImageSource | Patches] | None = None,
        videos: Sequence[str | Path | Sequence[ImageSource] | Video | Patches] | None = None,
        padding_side: str = "left",
        return_tensors: str = "pt",
        min_pixels: int | None = None,
        max_pixels: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Prompt text(s) holding one <|image_pad|> per image and one <|video_pad|> per video, in order.

        images: paths, PIL images, arrays, or `Patches` from preprocess_image. videos: files, folders, frame lists,
        `Video` (from load_video: frames already chosen) or `Patches` (from preprocess_video).
        Several texts are padded on the left by default (what generation needs: every prompt ends at the last
        column). Returns input_ids, attention_mask, mm_token_type_ids (0 text, 1 image, 2 video) and, when given,
        pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw, second_per_grid_ts.
        min_pixels / max_pixels (call-time, as transformers' processor takes them) size the images and videos given
        here as files, arrays or frames: images as transformers' image processor (its `size` override), videos as
        qwen-vl-utils' per-video keys (the per-frame budget). Items already given as `Patches` keep their size.
        """
        texts = _check_texts(text)
        if return_tensors != "pt":
            raise ValueError(f"return_tensors={return_tensors!r}: qwenlite returns torch tensors only ('pt')")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        image_patches = [
            _checked(x, "image") if isinstance(x, Patches) else preprocess_image(x, self.config, min_pixels, max_pixels)
            for x in images or []
        ]
        video_patches = [self._as_video_patches(x, min_pixels, max_pixels) for x in videos or []]
        # 1) each pad token -> as many copies as the item has LLM tokens, in reading order across the batch
        merge = self.config.merge_size
        texts = _expand(texts, IMAGE_PAD, [p.num_tokens(merge) for p in image_patches], "image")
        texts = _expand(texts, VIDEO_PAD, [p.num_tokens(merge) for p in video_patches], "video")
        # 2) tokenize (the pads are special tokens: one id each)
        enc = self.tokenizer(texts, padding=True, padding_side=padding_side, return_tensors="pt")
        input_ids = enc["input_ids"]  # (B, L)
        out = {
            "input_ids": input_ids,
            "attention_mask": enc["attention_mask"],
            "mm_token_type_ids": mm_token_type_ids(input_ids, self),  # a Processor knows both pad ids
        }
        # 3) pixels: every item's patches one after another, with its grid
        if image_patches:
            out["pixel_values"] = torch.cat([p.pixel_values for p in image_patches])  # (N_img, 1176)
            out["image_grid_thw"] = torch.stack([p.grid_thw for p in image_patches])  # (num_images, 3)
        if video_patches:
            out["pixel_values_videos"] = torch.cat([p.pixel_values for p in video_patches])  # (N_vid, 1176)
            out["video_grid_thw"] = torch.stack([p.grid_thw for p in video_patches])  # (num_videos, 3)
            out["second_per_grid_ts"] = torch.tensor([p.second_per_grid_t for p in video_patches])  # (num_videos,)
        return out

    def _as_video_patches(self, x: Any, min_pixels: int | None, max_pixels: int | None) -> Patches:
        if isinstance(x, Patches):
            if x.second_per_grid_t is None:
                raise ValueError("a video's Patches need second_per_grid_t: build them with preprocess_video")
            return _checked(x, "video")
        video = x if isinstance(x, Video) else load_video(x)
        return preprocess_video(video, self.config, min_pixels, max_pixels, VIDEO_TOTAL_PIXELS)


def _checked(patches: Patches, what: str) -> Patches:
    """Patches handed in are refused if they hold NaN or inf: they would end as NaN logits, not an error."""
    if not all_finite(patches.pixel_values):
        bad = int((~torch.isfinite(patches.pixel_values)).sum())
        raise ValueError(f"{what} Patches: pixel_values hold {bad} NaN or infinite value(s); pixels must be finite")
    second = patches.second_per_grid_t
    if second is not None and (not finite_number(second) or second <= 0):
        raise ValueError(f"{what} Patches: second_per_grid_t must be a finite number of seconds > 0, got {second}")
    return patches


def _expand(texts: list[str], pad: str, counts: list[int], what: str) -> list[str]:
    """Replace the k-th occurrence of `pad` (counting across all texts) by counts[k] copies of it."""
    found = sum(t.count(pad) for t in texts)
    if found != len(counts):
        raise ValueError(
            f"the text holds {found} {pad} token(s) but {len(counts)} {what}(s) were given: each {what} needs "
            f"exactly one {pad} in the text (apply_chat_template writes them)"
        )
    remaining = iter(counts)
    expanded = []
    for t in texts:
        first, *rest = t.split(pad)
        expanded.append(first + "".join(pad * next(remaining) + part for part in rest))
    return expanded


def _vision_items(conversation: Sequence[Message]) -> list[Message]:
    """Image and video content items in reading order (the order of the pads the template writes)."""
    items = []
    for message in conversation:
        if isinstance(message.get("content"), list):
            items += [c for c in message["content"] if _is_video_item(c) or _is_image_item(c)]
    return items


def _is_image_item(item: Message) -> bool:
    return item.get("type") == "image" or "image" in item or "image_url" in item  # the template's test


def _is_video_item(item: Message) -> bool:
    # the template's test, after the image test (an item that is both counts as an image)
    return not _is_image_item(item) and (item.get("type") == "video" or "video" in item)


def _pick(item: Message, keys: Sequence[str]) -> dict[str, Any]:
    return {k: item[k] for k in keys if k in item}


@functools.lru_cache(maxsize=8)
def _compiled(chat_template: str) -> Template:
    """The chat template compiled once (compiling takes 60 ms, rendering 0.1 ms; transformers caches it too)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(chat_template)


def _read_chat_template(path: Path, tokenizer: Any) -> str:
    """chat_template.jinja, else chat_template.json (older hub layout), else the tokenizer's own template."""
    if (jinja := path / "chat_template.jinja").is_file():
        return jinja.read_text()
    if (js := path / "chat_template.json").is_file():
        return json.loads(js.read_text())["chat_template"]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    raise FileNotFoundError(f"{path} has no chat template (chat_template.jinja, chat_template.json or tokenizer's)")


def _check_texts(text: object) -> list[str]:
    """text: one prompt (str) or a non-empty list of them, none empty (an empty row has no token to start from)."""
    texts = [text] if isinstance(text, str) else text
    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"text must be a str or a list of str (the prompts), got {type(text).__name__}: {text!r:.80}")
    if not texts:
        raise ValueError("text is an empty list: give at least one prompt")
    empty = [i for i, t in enumerate(texts) if not t]
    if empty:
        raise ValueError(f"text {empty} is the empty string: a prompt needs at least one token")
    return list(texts)
