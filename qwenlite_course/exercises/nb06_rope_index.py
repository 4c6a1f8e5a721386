"""Exercises of notebook 06_rope_index (`exercises.describe` / `exercises.check` find them by name)."""

from __future__ import annotations

from typing import Any

import torch

from .grading import _whole_number, _whole_numbers, exercise


def _layout_prompt() -> tuple[torch.Tensor, torch.Tensor]:
    """The prompt of rope_deltas_layout (3 text tokens, an image of grid (1, 4, 6), 5 text tokens): its ids (1, 14)
    and its rope_deltas (1, 1)."""
    from qwenlite.config import QwenLiteConfig, TextConfig, VisionConfig
    from qwenlite.rope_index import get_rope_index

    config = QwenLiteConfig(TextConfig(), VisionConfig())
    image_tokens = 1 * 4 * 6 // config.vision_config.spatial_merge_size**2
    ids = torch.tensor([[100, 101, 102] + [config.image_token_id] * image_tokens + [103, 104, 105, 106, 107]])
    _, deltas = get_rope_index(ids, image_grid_thw=torch.tensor([[1, 4, 6]]), config=config)
    return ids, deltas


def _layout_deltas() -> int:
    return int(_layout_prompt()[1])


@exercise(
    "rope_deltas_layout",
    """One prompt (batch 1): 3 text tokens, then an image of grid (t, h, w) = (1, 4, 6) patches (its
    <|image_pad|> tokens: t*h*w / 4 of them), then 5 text tokens. What is its rope_deltas, the number that
    decoding adds to a new token's plain text position (its index in the sequence) to get its M-RoPE
    position? Answer with an int (or the (1, 1) tensor that qwenlite.get_rope_index returns).""",
    answer=_layout_deltas,
)
def _rope_deltas(answer: Any) -> str | None:
    expected = _layout_deltas()
    value = _whole_number(answer, "positions")
    if isinstance(value, str):
        return value
    if value == expected:
        return None
    if value == -expected:
        return "wrong sign: an image span takes fewer positions than it has tokens, so positions fall behind."
    if value == 0:
        return "not 0: an image span takes fewer positions than it has tokens (its ids form a small grid)."
    if value > 0:
        return "rope_deltas = (largest position + 1) - (number of tokens); is your largest position right?"
    return (
        "not that far behind: did you give the image one token per patch? It has t*h*w/4 merged tokens, and "
        "its positions follow the merged grid (h/2 rows, w/2 columns)."
    )


def _video_t_ids_1_5_fps() -> list[int]:
    from qwenlite.config import QwenLiteConfig, TextConfig, VisionConfig
    from qwenlite.rope_index import get_rope_index

    config = QwenLiteConfig(TextConfig(), VisionConfig())
    seconds = config.vision_config.temporal_patch_size / 1.5
    ids = torch.full((1, 5), config.video_token_id)
    positions, _ = get_rope_index(
        ids, video_grid_thw=torch.tensor([[5, 2, 2]]), second_per_grid_ts=[seconds], config=config
    )
    return positions[0, 0].tolist()


@exercise(
    "video_t_ids_1_5_fps",
    """A video sampled at 1.5 frames per second has grid (t, h, w) = (5, 2, 2): five temporal patches of two
    frames, one merged token each. The prompt is just its 5 <|video_pad|> tokens. What are their t position
    ids (get_rope_index with second_per_grid_ts = temporal_patch_size / fps)? Answer a list of 5 ids.
    The rule: t = floor(patch index x second_per_grid_t x tokens_per_second), tokens_per_second = 2.""",
    answer=_video_t_ids_1_5_fps,
)
def _video_t_ids(answer: Any) -> str | None:
    from qwenlite.config import VisionConfig

    seconds = VisionConfig().temporal_patch_size / 1.5
    expected = _video_t_ids_1_5_fps()
    value = _whole_numbers(answer, 5, "t ids") if not _has_fraction(answer) else "ids are whole numbers: t is floored"
    if isinstance(value, str):
        return value
    if value == expected:
        return None
    steps = {value[k + 1] - value[k] for k in range(4)}
    if steps == {1}:
        return "t does not count temporal patches: it counts time, tokens_per_second = 2 ids per second of video."
    if steps == {2}:
        return (
            "that is 1 s per temporal patch (the default when no second_per_grid_ts is given); at 1.5 fps a "
            "patch of 2 frames lasts longer."
        )
    if value == [int(torch.tensor(k * 2 * seconds).round()) for k in range(5)]:
        return "rounded to the nearest id; the rule floors (truncates) the product."
    return "t = floor(k x second_per_grid_t x 2) for patch k, with second_per_grid_t = 2 frames / 1.5 fps."


def _has_fraction(answer: Any) -> bool:
    values = answer.tolist() if isinstance(answer, torch.Tensor) and answer.ndim == 1 else answer
    return isinstance(values, (list, tuple)) and any(isinstance(v, float) and v != int(v) for v in values)


def _decode_position_3rd() -> int:
    from qwenlite.rope_index import decode_position_ids

    ids, deltas = _layout_prompt()
    return int(decode_position_ids(deltas, past=ids.shape[1] + 2, new=1)[0, 0, 0])


@exercise(
    "decode_position_3rd_token",
    """The prompt of rope_deltas_layout (3 text tokens, an image of grid (1, 4, 6), 5 text tokens: 14 tokens)
    is prefilled, then the model generates tokens one at a time. What M-RoPE position (the same on t, h and w)
    does the 3rd generated token get? (qwenlite.rope_index.decode_position_ids applies the rule: text position
    + rope_deltas.)""",
    answer=_decode_position_3rd,
)
def _decode_position(answer: Any) -> str | None:
    ids, deltas = _layout_prompt()
    length = ids.shape[1]
    expected = _decode_position_3rd()
    value = _whole_number(answer, "positions")
    if isinstance(value, str):
        return value
    if value == expected:
        return None
    if value == length + 2:
        return "that is the token's index in the sequence; decoding adds rope_deltas to it."
    if value == length + 2 - int(deltas):
        return "rope_deltas has the wrong sign: the image takes fewer positions than tokens, so positions fall behind."
    if abs(value - expected) == 1:
        return "off by one: the 1st generated token sits right after the prompt's largest position (max + 1)."
    return "find the prompt's largest position (the image's ids form a small grid), then count on from it."
