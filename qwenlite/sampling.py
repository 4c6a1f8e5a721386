"""Video frame sampling: how many frames to take from a video, and which ones.

Mirrors qwen-vl-utils (`vision_process.smart_nframes` and its readers' `linspace(...).round()`), the helper
Qwen's model card uses before calling the transformers processor: about 2 frames per second, a count that is a
multiple of temporal_patch_size within [4, 768]. Pure functions on integers: no video is read here.
"""

from __future__ import annotations

import math

import torch

from .config import VisionConfig

VIDEO_FPS = 2.0  # frames sampled per second of video
VIDEO_MIN_FRAMES = 4
VIDEO_MAX_FRAMES = 768
FRAME_FACTOR = VisionConfig.temporal_patch_size  # frame counts are multiples of the Conv3d's temporal kernel (2)


def smart_nframes(
    total_frames: int,
    video_fps: float,
    fps: float | None = VIDEO_FPS,
    nframes: int | None = None,
    min_frames: int = VIDEO_MIN_FRAMES,
    max_frames: int | None = None,
    frame_factor: int = FRAME_FACTOR,
) -> int:
    """How many frames to sample: mirrors qwen_vl_utils.vision_process.smart_nframes.

    A fixed `nframes` is rounded to a multiple of 2 (Python's round: 5 -> 4, 7 -> 8). Otherwise
    nframes = duration * fps, clamped to [min_frames, max_frames] (min rounded up, max rounded down to a
    multiple of 2; max_frames defaults to min(768, total_frames)), capped by total_frames, rounded down to a
    multiple of 2. 32 frames at 8 fps, fps 2 -> 8 frames; 10 frames at 30 fps -> 4 (the minimum).
    """
    if total_frames <= 0:
        raise ValueError(f"the video has no frames (total_frames = {total_frames})")
    if total_frames < frame_factor:
        raise ValueError(
            f"the video has {total_frames} frame(s), fewer than the {frame_factor} that one temporal patch "
            "(temporal_patch_size) needs"
        )
    if nframes is not None:
        n = round(nframes / frame_factor) * frame_factor
    else:
        if fps is None or fps <= 0 or video_fps <= 0:
            raise ValueError(f"sampling at fps needs positive fps and video_fps, got fps={fps}, video_fps={video_fps}")
        lo = math.ceil(min_frames / frame_factor) * frame_factor
        hi = max_frames if max_frames is not None else min(VIDEO_MAX_FRAMES, total_frames)
        hi = math.floor(hi / frame_factor) * frame_factor
        wanted = min(max(total_frames / video_fps * fps, lo), hi, total_frames)  # frames at fps, within bounds
        n = math.floor(wanted / frame_factor) * frame_factor
    if not frame_factor <= n <= total_frames:
        raise ValueError(
            f"cannot sample {n} frames from a video of {total_frames} frames: the count must lie in "
            f"[{frame_factor}, {total_frames}] (asked for nframes={nframes}, fps={fps}, min_frames={min_frames}, "
            f"max_frames={max_frames})"
        )
    return n


def sample_frame_indices(total_frames: int, nframes: int, first: int = 0) -> list[int]:
    """nframes evenly spread frame numbers over total_frames frames starting at `first` (a trimmed range):
    round(linspace(first, first + total - 1, nframes)).

    As qwen-vl-utils' readers do (torch.linspace(...).round(): halves go to even).
    32 frames -> 8: [0, 4, 9, 13, 18, 22, 27, 31].
    """
    return torch.linspace(first, first + total_frames - 1, nframes).round().long().tolist()
