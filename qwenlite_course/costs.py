"""What an input costs: an image or a video's size -> patches, windows, LLM tokens, KV-cache bytes, memory.

Every count comes from the model package's own rules, the ones the processor and the tower run:
`image_size` and `video_frame_size` (the pixel budgets), `smart_nframes` (how many frames), `get_window_index`
(the tower's windows), `kv_cache_bytes` and `prefill_floor_bytes` (the decoder's memory). Nothing is decoded or
run, so a 4K hour of video costs a millisecond to price; tests/test_costs.py checks each count against what the
processor and the model produce.

    image_cost(1080, 1920)               # a 1080p photo at the hub's defaults
    video_cost(1080, 1920, seconds=600)  # ten minutes of 1080p at 30 fps, sampled at 2 fps
    memory(cost, config_3b)              # bytes, for the 3B, in bfloat16
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qwenlite.config import QwenLiteConfig
from qwenlite.generation import kv_cache_bytes, prefill_floor_bytes
from qwenlite.preprocessing import VIDEO_TOTAL_PIXELS, PreprocessorConfig, image_size, video_frame_size
from qwenlite.sampling import VIDEO_FPS, smart_nframes
from qwenlite.vision import get_window_index

PROMPT_TEXT_TOKENS = 20  # the chat template around one picture and a short question: system turn, tags, words


@dataclass(frozen=True)
class Cost:
    """What one image or video becomes before the model runs (sizes H x W, in pixels after resizing)."""

    kind: str  # "image" or "video"
    height: int
    width: int
    frames: int  # sampled frames (an image: temporal_patch_size copies of itself)
    grid_thw: tuple[int, int, int]  # temporal patches, patch rows, patch columns
    patches: int  # rows of pixel_values: what the vision tower reads
    windows: int  # segments of the tower's windowed blocks (112 x 112 px each, smaller at the edges)
    tokens: int  # <|image_pad|> / <|video_pad|> tokens: what the language model reads for it
    window_pairs: int  # query-key pairs per head in one windowed block (each window attends within itself)

    @property
    def full_pairs(self) -> int:
        """Query-key pairs per head in one full-attention block (each frame's patches attend to each other)."""
        t, h, w = self.grid_thw
        return t * (h * w) ** 2


def _cost(kind: str, height: int, width: int, frames: int, config: PreprocessorConfig) -> Cost:
    tp, p, m = config.temporal_patch_size, config.patch_size, config.merge_size
    grid = (frames // tp, height // p, width // p)
    _, cu = get_window_index(torch.tensor([grid]), patch_size=p, merge_size=m)
    lengths = (cu[1:] - cu[:-1]).long()  # patches per window
    patches = grid[0] * grid[1] * grid[2]
    pairs = int((lengths**2).sum())
    return Cost(kind, height, width, frames, grid, patches, len(lengths), patches // (m * m), pairs)


def image_cost(
    height: int,
    width: int,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    config: PreprocessorConfig | None = None,
) -> Cost:
    """An H x W image at the processor's pixel limits (preprocessor_config.json's, unless given)."""
    config = config or PreprocessorConfig()
    resized_h, resized_w = image_size(height, width, config, min_pixels, max_pixels)
    return _cost("image", resized_h, resized_w, config.temporal_patch_size, config)


def video_cost(
    height: int,
    width: int,
    seconds: float,
    video_fps: float = 30.0,
    fps: float | None = VIDEO_FPS,
    nframes: int | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    total_pixels: float = VIDEO_TOTAL_PIXELS,
    config: PreprocessorConfig | None = None,
) -> Cost:
    """An H x W video file of `seconds` at `video_fps`, sampled as qwen-vl-utils does (fps, or nframes)."""
    config = config or PreprocessorConfig()
    total = round(seconds * video_fps)
    frames = smart_nframes(total, video_fps, fps=fps, nframes=nframes)
    resized_h, resized_w = video_frame_size(height, width, frames, config, min_pixels, max_pixels, total_pixels)
    return _cost("video", resized_h, resized_w, frames + -frames % config.temporal_patch_size, config)


def memory(
    cost: Cost,
    config: QwenLiteConfig,
    dtype: torch.dtype = torch.bfloat16,
    text_tokens: int = PROMPT_TEXT_TOKENS,
    new_tokens: int = 128,
) -> dict[str, int]:
    """Bytes beside the weights for one prompt holding this input, in `dtype`, for the model `config` describes.

    kv_cache: every layer's keys and values for the prompt and the new tokens (the decoder's KV cache);
    prefill_floor: that cache plus one decoder layer's activations over the prompt, the least a generation must
    hold at once (`generation.prefill_floor_bytes`, the bound `generate` refuses by);
    tower_block: one vision block's residual stream, normed copy and MLP products over all patches (the
    tower's own activations: it runs before the decoder, so the peak is the larger of the two, not the sum);
    eager_scores: the largest score matrices a full-attention block holds at once if they are materialised, as an
    "eager" attention does: heads x (one segment's patches)^2, since transformers 5.x and qwenlite attend one
    segment (an image, or a temporal patch of two frames) at a time. SDPA's fused kernels never hold them; for
    one large image they are most of a machine's memory.
    """
    text, vision = config.text_config, config.vision_config
    length = cost.tokens + text_tokens
    itemsize = torch.finfo(dtype).bits // 8
    tower = cost.patches * (2 * vision.hidden_size + 2 * vision.intermediate_size) * itemsize
    floor = prefill_floor_bytes(text, 1, length, new_tokens, dtype)
    return {
        "llm_tokens": length,
        "kv_cache": kv_cache_bytes(text, 1, length + new_tokens - 1, dtype),
        "prefill_floor": floor,
        "tower_block": tower,
        "peak_floor": max(floor, tower),
        "eager_scores": vision.num_heads * (cost.patches // cost.grid_thw[0]) ** 2 * itemsize,
    }
