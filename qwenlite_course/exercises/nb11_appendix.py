"""Exercises of notebook 11_appendix (`exercises.describe` / `exercises.check` find them by name)."""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from .grading import _whole_number, _whole_numbers, exercise


def _t_ids_at_0_6_fps(cast: bool) -> list[int]:
    """t ids of 6 <|video_pad|> tokens, grid (6, 2, 2) at 0.6 fps: with int(second_per_grid_t) (cast) or without."""
    from qwenlite.config import QwenLiteConfig, TextConfig, VisionConfig
    from qwenlite.rope_index import get_rope_index

    config = QwenLiteConfig(TextConfig(), VisionConfig())
    seconds = config.vision_config.temporal_patch_size / 0.6
    ids = torch.full((1, 6), config.video_token_id)
    grid = torch.tensor([[6, 2, 2]])
    seconds_per_patch = [math.trunc(seconds) if cast else seconds]
    positions, _ = get_rope_index(ids, video_grid_thw=grid, second_per_grid_ts=seconds_per_patch, config=config)
    return positions[0, 0].tolist()


def _t_ids_int_cast() -> list[int]:
    return _t_ids_at_0_6_fps(cast=True)


@exercise(
    "t_ids_int_cast_0_6_fps",
    """Late v4.5x releases, and 5.x until PR #48669, multiplied by int(second_per_grid_t): the seconds a
    temporal patch lasts, cast to a whole number first. A video sampled at 0.6 frames per second
    (second_per_grid_t = 2 frames / 0.6 fps = 3.33 s) has grid (t, h, w) = (6, 2, 2): six temporal patches, one
    merged token each; the prompt is just its 6 <|video_pad|> tokens. Which t ids did those releases give them?
    Answer a list of 6 ids (tokens_per_second = 2). Then compare with the released rule,
    t = floor(k x second_per_grid_t x tokens_per_second).""",
    answer=_t_ids_int_cast,
)
def _int_cast(answer: Any) -> str | None:
    value = _whole_numbers(answer, 6, "t ids")
    if isinstance(value, str):
        return value
    if value == _t_ids_int_cast():
        return None
    if value == _t_ids_at_0_6_fps(cast=False):
        return "that is the released rule (floor of the real product); those releases cast the seconds to int first."
    if value == [0] * 6:
        return "int() truncates 3.33 to 3: the ids still grow, only more slowly than the clock."
    return "with the cast: t = k x int(second_per_grid_t) x tokens_per_second for patch k; int() truncates."


@functools.cache
def _text_after_video_5x() -> int:
    """The position transformers 5.x gives <|vision_end|> in the prompt of text_after_video_5x."""
    from qwenlite.config import QwenLiteConfig, TextConfig, VisionConfig

    ids, types = _video_prompt(QwenLiteConfig(TextConfig(), VisionConfig()))
    return int(_transformers_rope_index(ids, types)[0, 0, -2])


@exercise(
    "text_after_video_5x",
    """A prompt: 2 words, <|vision_start|>, a video of grid (t, h, w) = (4, 4, 4) at 1 s per temporal patch
    (its 4 x 2 x 2 = 16 <|video_pad|> tokens), <|vision_end|>, then 1 word. The released model (transformers
    v4.5x, vLLM, qwenlite) gives <|vision_end|> the position max(all ids so far) + 1. Which position does
    transformers 5.x's get_rope_index give <|vision_end|> (the same on t, h and w)? Run it, or read its code.""",
    answer=_text_after_video_5x,
)
def _text_after_video(answer: Any) -> str | None:
    from qwenlite.config import QwenLiteConfig, TextConfig, VisionConfig
    from qwenlite.rope_index import get_rope_index

    config = QwenLiteConfig(TextConfig(), VisionConfig())
    ids, _ = _video_prompt(config)
    theirs = _text_after_video_5x()
    ours = int(get_rope_index(ids, video_grid_thw=torch.tensor([[4, 4, 4]]), config=config)[0][0, 0, -2])
    value = _whole_number(answer, "positions")
    if isinstance(value, str):
        return value
    if value == theirs:
        return None
    if value == ours:
        return "that is the released rule (max + 1); the newer code advances by the video's height or width only."
    return "the newer code starts the text after a video at its start + max(h, w) / merge, whatever its t ids reached."


def _video_prompt(config) -> tuple[torch.Tensor, torch.Tensor]:
    """2 words, <|vision_start|>, 16 <|video_pad|>, <|vision_end|>, 1 word: ids and mm_token_type_ids (1, 21)."""
    word = 100
    ids = [word, word, config.vision_start_token_id, *[config.video_token_id] * 16, config.vision_end_token_id, word]
    ids_tensor = torch.tensor([ids])
    return ids_tensor, (ids_tensor == config.video_token_id).long() * 2


def _transformers_rope_index(ids: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
    """transformers' own Qwen2_5_VLModel.get_rope_index (built on the meta device: it reads no weights)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLModel

    with torch.device("meta"):
        model = Qwen2_5_VLModel(
            Qwen2_5_VLConfig(
                text_config={"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
                vision_config={
                    "depth": 1,
                    "hidden_size": 32,
                    "out_hidden_size": 64,
                    "num_heads": 2,
                    "tokens_per_second": 2,
                },
            )
        )
    positions, _ = model.get_rope_index(
        ids, mm_token_type_ids=types, video_grid_thw=torch.tensor([[4, 4, 4]]), second_per_grid_ts=torch.tensor([1.0])
    )
    return positions
