"""3-D M-RoPE position ids for a prompt of text, images and videos, and the decode-time rule.

Mirrors transformers' `Qwen2_5_VLModel.get_rope_index` (and `get_vision_position_ids`), with one
deliberate difference: after a video, the next text starts at max(all positions so far) + 1, the
rule of the released model (transformers 4.5x, vLLM). transformers 5.24 advances by
max(h, w) / merge only, so text after a video can restart below the video's largest temporal id.
For images the two rules agree. Vision spans are found from the token ids themselves.
"""

from __future__ import annotations

import torch

from .config import QwenLiteConfig


def vision_position_ids(
    start: int, grid_thw: torch.Tensor, merge_size: int = 2, time_interval: float | torch.Tensor = 1
) -> torch.Tensor:
    """(3, T*H/m*W/m) ids of one image/video span whose first token sits at text position `start`.

    t = floor(frame_group * time_interval) + start, h = row + start, w = col + start.
    Image grid (1, 4, 6), start 5 -> t all 5, h = [5,5,5, 6,6,6], w = [5,6,7, 5,6,7].
    Video grid (3, 2, 2) with second_per_grid_t 1.0 and tokens_per_second 2 -> t = [5, 7, 9].
    """
    t, h, w = (int(v) for v in grid_thw)
    # parity: the product is taken in floating point before truncation (4.5x cast 0.5 s to 0 first)
    tt = (torch.arange(t) * time_interval).long()
    hh = torch.arange(h // merge_size)
    ww = torch.arange(w // merge_size)
    grid = torch.stack(torch.meshgrid(tt, hh, ww, indexing="ij")).reshape(3, -1)
    return grid + start


def get_rope_index(
    input_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    second_per_grid_ts: torch.Tensor | list[float] | None = None,
    attention_mask: torch.Tensor | None = None,
    config: QwenLiteConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Position ids (3, B, L) and rope_deltas (B, 1) = max position + 1 - number of real tokens.

    Text tokens get the same id on all three axes, counting up. An image or video span gets a
    (t, h, w) grid of ids offset by the position where it starts; the text after it continues at
    max(all ids so far) + 1. Padding (attention_mask 0) gets id 0 and is not counted.
    "ab<img 2x2 merged>c" -> t = [0,1, 2,2,2,2, 4], h = [0,1, 2,2,3,3, 4], w = [0,1, 2,3,2,3, 4]; delta = 5 - 7.
    """
    if config is None:
        raise ValueError("get_rope_index needs config= (token ids, merge size, tokens_per_second)")
    v = config.vision_config
    images = iter(image_grid_thw if image_grid_thw is not None else [])
    videos = iter(video_grid_thw if video_grid_thw is not None else [])
    if second_per_grid_ts is None:
        seconds = iter([1.0] * (len(video_grid_thw) if video_grid_thw is not None else 0))
    else:
        seconds = iter(torch.as_tensor(second_per_grid_ts, dtype=torch.float32))  # parity: float32 like the processor
    b, n = input_ids.shape
    positions = torch.zeros(3, b, n, dtype=torch.long)
    deltas = torch.zeros(b, 1, dtype=torch.long)
    unit = v.spatial_merge_size**2

    for row in range(b):
        keep = attention_mask[row].bool() if attention_mask is not None else torch.ones(n, dtype=torch.bool)
        ids = input_ids[row][keep].tolist()
        parts: list[torch.Tensor] = []
        i, next_pos = 0, 0
        while i < len(ids):
            token = ids[i]
            if token in (config.image_token_id, config.video_token_id):
                is_image = token == config.image_token_id
                kind = "image" if is_image else "video"
                grid = next(images if is_image else videos, None)
                if grid is None:
                    raise ValueError(f"row {row}: more {kind} spans in input_ids than entries in {kind}_grid_thw")
                count = int(grid.prod()) // unit
                span = ids[i : i + count]
                if len(span) != count or any(t != token for t in span):
                    run = next((j for j, t in enumerate(span) if t != token), len(span))
                    raise ValueError(
                        f"row {row}: {kind} span at token {i} has {run} <|{kind}_pad|> tokens, "
                        f"but its grid {grid.tolist()} needs {count}"
                    )
                interval = 1 if is_image else v.tokens_per_second * next(seconds)
                parts.append(vision_position_ids(next_pos, grid, v.spatial_merge_size, interval))
                i += count
            else:
                j = i
                while j < len(ids) and ids[j] not in (config.image_token_id, config.video_token_id):
                    j += 1
                parts.append(torch.arange(next_pos, next_pos + j - i).expand(3, -1))
                i = j
            next_pos = int(parts[-1].max()) + 1  # the released rule: continue after the largest id so far
        if parts:
            ids_row = torch.cat(parts, dim=1)
            positions[:, row, keep] = ids_row
            deltas[row] = next_pos - len(ids)
    for kind, left in (("image", images), ("video", videos)):
        if next(left, None) is not None:
            raise ValueError(f"{kind}_grid_thw has more entries than {kind} spans in input_ids")
    return positions, deltas


def decode_position_ids(
    rope_deltas: torch.Tensor, past: int, new: int, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """(3, B, new) ids for tokens generated after a prefill: text positions shifted by rope_deltas.

    Without padding this is the seed's rule `arange(new) + past + rope_deltas`. With left padding
    a row's text position counts only its real tokens (attention_mask.cumsum - 1), matching the
    rope_deltas above, so the first new token of every row lands at its max prefill id + 1.
    """
    if attention_mask is None:
        text = torch.arange(past, past + new).expand(rope_deltas.shape[0], -1)
    else:
        text = (attention_mask.long().cumsum(-1) - 1)[:, past : past + new]
    return (text + rope_deltas).expand(3, -1, -1)
