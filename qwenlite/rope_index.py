"""3-D M-RoPE position ids for a prompt of text, images and videos, and the decode-time rule.

Mirrors transformers' `Qwen2_5_VLModel.get_rope_index` (and `get_vision_position_ids`), with one
deliberate difference: after a video, the next text starts at max(all positions so far) + 1, the
rule of the released model (transformers v4.5x, vLLM). transformers 5.x advances by
max(h, w) / merge only, so text after a video can restart below the video's largest temporal id.
For images the two rules agree. Vision spans are found from the token ids themselves.
Shapes: B batch, L tokens, N vision tokens of one span, 3 axes (t, h, w).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

from .config import QwenLiteConfig
from .tokens import IMAGE, MODALITY_NAMES, TEXT, VIDEO, mm_token_type_ids


def vision_position_ids(
    start: int,
    grid_thw: torch.Tensor | Sequence[int],
    merge_size: int,
    time_interval: float | torch.Tensor = 1,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(3, N) ids of one image/video span whose first token sits at text position `start`.

    t = floor(frame_group * time_interval) + start, h = row + start, w = col + start, where
    time_interval = tokens_per_second * second_per_grid_t for a video and 1 for an image.
    Image grid (1, 4, 6), start 5 -> t all 5, h = [5,5,5, 6,6,6], w = [5,6,7, 5,6,7].
    Video grid (3, 2, 2) with time_interval 2.0 -> t = [5, 7, 9]; with 0.5 -> t = [5, 5, 6].
    """
    t, h, w = (int(v) for v in grid_thw)
    # parity: the product is taken in floating point before truncation (v4.5x cast 0.5 s to 0 first)
    tt = (torch.arange(t, device=device) * time_interval).long()  # (T,)
    hh = torch.arange(h // merge_size, device=device)  # (H/m,)
    ww = torch.arange(w // merge_size, device=device)  # (W/m,)
    grid = torch.stack(torch.meshgrid(tt, hh, ww, indexing="ij")).reshape(3, -1)  # (3, N) frame-major, row-major
    return grid + start


def token_spans(token_types: Sequence[int]) -> list[tuple[int, int, int]]:
    """Runs of one modality (0 text, 1 image pad, 2 video pad) as (modality, start, end), like transformers' groupby.

    [0, 0, 1, 1, 1, 1, 0] -> [(0, 0, 2), (1, 2, 6), (0, 6, 7)]. Two items of one modality with no text
    between them form one run here; row_position_ids splits it by their grids.
    """
    spans, start = [], 0
    for modality, run in itertools.groupby(token_types):
        end = start + len(list(run))
        spans.append((modality, start, end))
        start = end
    return spans


class VisionItems:
    """The grids of a batch's images and videos, handed out in reading order (row by row, like the features).

    Each item comes with its time interval: 1 for an image, tokens_per_second * second_per_grid_t for a video.
    """

    def __init__(
        self,
        image_grid_thw: torch.Tensor | None,
        video_grid_thw: torch.Tensor | None,
        second_per_grid_ts: torch.Tensor | Sequence[float] | None,
        tokens_per_second: float,
    ) -> None:
        self.grids = {IMAGE: _grid_list(image_grid_thw, "image"), VIDEO: _grid_list(video_grid_thw, "video")}
        seconds = _seconds_per_grid(second_per_grid_ts, len(self.grids[VIDEO]))
        self.intervals: dict[int, list[float]] = {
            IMAGE: [1.0] * len(self.grids[IMAGE]),
            VIDEO: [tokens_per_second * s for s in seconds],
        }
        self.used = {IMAGE: 0, VIDEO: 0}

    def take(self, modality: int, row: int) -> tuple[int, torch.Tensor, float]:
        """The next item of this modality: (its index, its grid (t, h, w), its time interval)."""
        k, name = self.used[modality], MODALITY_NAMES[modality]
        if k >= len(self.grids[modality]):
            raise ValueError(
                f"row {row}: input_ids hold more {name} spans than the {len(self.grids[modality])} rows "
                f"of {name}_grid_thw"
            )
        self.used[modality] += 1
        return k, self.grids[modality][k], self.intervals[modality][k]

    def check_all_used(self) -> None:
        for modality in (IMAGE, VIDEO):
            name, n = MODALITY_NAMES[modality], len(self.grids[modality])
            if self.used[modality] != n:
                raise ValueError(f"{name}_grid_thw has {n} rows but input_ids hold {self.used[modality]} {name} spans")


def row_position_ids(
    token_types: Sequence[int], items: VisionItems, merge_size: int, row: int = 0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(3, L) ids of one row's real tokens: text counts up on all three axes, each vision span gets its grid.

    Every piece starts at max(all ids so far) + 1, the released rule (the previous piece holds that max:
    each piece starts above every earlier id). token types [0, 0, 1, 1, 1, 1, 0] with one image of grid
    (1, 4, 4) -> t = [0,1, 2,2,2,2, 4], h = [0,1, 2,2,3,3, 4], w = [0,1, 2,3,2,3, 4].
    """
    pieces: list[torch.Tensor] = []  # (3, length of the piece) each
    next_pos = 0
    for modality, start, end in token_spans(token_types):
        if modality == TEXT:
            pieces.append(torch.arange(next_pos, next_pos + end - start, device=device).expand(3, -1))
            next_pos = int(pieces[-1].max()) + 1
            continue
        name = MODALITY_NAMES[modality]
        while start < end:  # a run of pads may hold several items of one modality: each takes its grid's count
            k, grid, interval = items.take(modality, row)
            count = int(torch.as_tensor(grid).prod()) // merge_size**2
            if end - start < count:
                raise ValueError(
                    f"row {row}: {name} span at token {start} has {end - start} <|{name}_pad|> tokens, "
                    f"but {name}_grid_thw[{k}] = {[int(g) for g in grid]} needs {count}"
                )
            pieces.append(vision_position_ids(next_pos, grid, merge_size, interval, device))
            next_pos = int(pieces[-1].max()) + 1
            start += count
    if not pieces:
        return torch.zeros(3, 0, dtype=torch.long, device=device)
    return torch.cat(pieces, dim=1)


def get_rope_index(
    input_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    second_per_grid_ts: torch.Tensor | Sequence[float] | None = None,
    attention_mask: torch.Tensor | None = None,
    *,
    config: QwenLiteConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Position ids (3, B, L) and rope_deltas (B, 1) = max position + 1 - number of real tokens.

    Text tokens get the same id on all three axes, counting up. An image or video span (a run of
    <|image_pad|> / <|video_pad|> tokens, as many as its grid has merged tokens) gets a (t, h, w)
    grid of ids offset by the position where it starts; the text after it continues at
    max(all ids so far) + 1. Padding (attention_mask 0) gets id 0 and is not counted.
    Grids are used in reading order across the whole batch, like the features they describe.
    "ab<img 2x2 merged>c" -> t = [0,1, 2,2,2,2, 4], h = [0,1, 2,2,3,3, 4], w = [0,1, 2,3,2,3, 4]; delta = 5 - 7.
    """
    if config is None:
        raise ValueError("get_rope_index needs config= (token ids, merge size, tokens_per_second)")
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask {tuple(attention_mask.shape)} must have the shape of input_ids {tuple(input_ids.shape)}"
        )
    vision = config.vision_config
    items = VisionItems(image_grid_thw, video_grid_thw, second_per_grid_ts, vision.tokens_per_second)
    device = input_ids.device
    positions = torch.zeros(3, *input_ids.shape, dtype=torch.long, device=device)
    deltas = torch.zeros(input_ids.shape[0], 1, dtype=torch.long, device=device)
    for row in range(input_ids.shape[0]):
        keep = torch.ones_like(input_ids[row], dtype=torch.bool) if attention_mask is None else attention_mask[row]
        keep = keep.bool().to(device)
        types = mm_token_type_ids(input_ids[row][keep], config).tolist()
        ids = row_position_ids(types, items, vision.spatial_merge_size, row, device)  # (3, real tokens)
        if ids.shape[1]:
            positions[:, row, keep] = ids
            deltas[row] = int(ids.max()) + 1 - ids.shape[1]
    items.check_all_used()
    return positions, deltas


def decode_position_ids(
    rope_deltas: torch.Tensor, past: int, new: int, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """(3, B, new) ids for tokens generated after a prefill: text positions shifted by rope_deltas.

    Without a mask this is transformers v4.5x's rule `arange(new) + past + rope_deltas` (past = cache_position[0]).
    With left padding a row's text position counts only its real tokens (attention_mask.cumsum - 1),
    matching rope_deltas = max + 1 - real tokens, so every row's first new token lands at its max
    prefill id + 1. Prompt "ab<img 2x2>c" (delta -2), past 7 -> the next token gets 7 - 2 = 5 on all axes.
    """
    if attention_mask is None:
        text = torch.arange(past, past + new, device=rope_deltas.device).expand(rope_deltas.shape[0], -1)  # (B, new)
    else:
        if attention_mask.shape[1] < past + new:
            raise ValueError(f"attention_mask covers {attention_mask.shape[1]} tokens, but past + new = {past} + {new}")
        text = (attention_mask.long().cumsum(-1) - 1)[:, past : past + new]  # (B, new)
    return (text + rope_deltas).expand(3, -1, -1)


def _grid_list(grid_thw: torch.Tensor | None, modality: str) -> list[torch.Tensor]:
    if grid_thw is None:
        return []
    grid_thw = torch.as_tensor(grid_thw)
    if grid_thw.ndim != 2 or grid_thw.shape[1] != 3:
        raise ValueError(
            f"{modality}_grid_thw must be (num_{modality}s, 3) rows of (t, h, w), got {tuple(grid_thw.shape)}"
        )
    return list(grid_thw)


def _seconds_per_grid(second_per_grid_ts: torch.Tensor | Sequence[float] | None, n_videos: int) -> list[float]:
    if second_per_grid_ts is None:
        return [1.0] * n_videos  # parity: transformers assumes 1 s per temporal patch when none is given
    # parity: float32 like the processor's tensor, so floor(t * interval) rounds the same way (host-side numbers)
    seconds = torch.as_tensor(second_per_grid_ts, dtype=torch.float32, device="cpu").reshape(-1)
    if len(seconds) != n_videos:
        raise ValueError(f"second_per_grid_ts has {len(seconds)} entries but video_grid_thw has {n_videos} rows")
    bad = [v for v in seconds.tolist() if not math.isfinite(v) or v < 0]
    if bad:  # NaN would floor to -9.2e18, a negative interval would run time backwards
        raise ValueError(f"second_per_grid_ts must be finite seconds >= 0 per temporal patch, got {bad[0]}")
    return seconds.tolist()
