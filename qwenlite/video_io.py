"""Loading a video: a file (PyAV), a folder of frames or a list of frames -> the sampled frames, with their times.

Frames are chosen by qwenlite.sampling (qwen-vl-utils' rules) and decoded once; a `Video` keeps the frame
numbers and the source's frame rate, from which preprocess_video gets second_per_grid_t. Mirrors qwen-vl-utils'
`fetch_video` readers (file, or a list of frames). Shapes: T frames, 3 channels, H x W pixels, uint8.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import finite_number
from .image_io import URL, ImageSource, load_image
from .sampling import VIDEO_FPS, VIDEO_MIN_FRAMES, sample_frame_indices, smart_nframes


@dataclass
class Video:
    """Frames chosen from a video, at their original size (uint8), with where and when they came from."""

    frames: torch.Tensor  # (T, 3, H, W) uint8, the sampled frames
    indices: list[int]  # frame number of each sampled frame in the source
    video_fps: float  # frame rate of the source
    total_frames: int  # frames in the source, or in its [video_start, video_end] range when trimmed
    source: str = ""  # where the frames came from, for error messages
    frame_list: bool = False  # from a list or folder of frames: sized by qwen-vl-utils 0.0.14's frame-list rule

    @property
    def sampled_fps(self) -> float:
        """Frames per second after sampling (qwen-vl-utils' `sample_fps`): T / total_frames * video_fps."""
        return len(self.indices) / self.total_frames * self.video_fps

    @property
    def timestamps(self) -> list[float]:
        """When each sampled frame is shown, in seconds: index / video_fps."""
        return [i / self.video_fps for i in self.indices]


def load_video(
    source: str | Path | Sequence[ImageSource],
    fps: float | None = None,
    nframes: int | None = None,
    min_frames: int = VIDEO_MIN_FRAMES,
    max_frames: int | None = None,
    video_fps: float | None = None,
    sample_fps: float | None = None,
    video_start: float | None = None,
    video_end: float | None = None,
) -> Video:
    """Read a video and choose its frames (either `fps` or `nframes`, as in qwen-vl-utils).

    `source`: a video file (decoded with PyAV), a folder of image files (in natural order: frame2 before
    frame10), or a list of frames (anything `load_image` takes).
    A file knows its own frame rate: `fps` (default 2.0) or `nframes` choose frames by qwen-vl-utils' rules,
    `video_start` / `video_end` (seconds) trim it first (qwen-vl-utils' calculate_video_frame_range).
    A variable-frame-rate file is refused: times come from index / rate, which such a file breaks.
    A folder or a list follows qwen-vl-utils 0.0.14's frame-list rules: every frame is kept, at `sample_fps`
    (default 2.0) frames per second, and frames are sized as its fetch_video sizes a list. Where 0.0.14 ignores
    an option on a list, qwenlite applies its file rule instead of ignoring it: `nframes` picks that many
    (rounded to even) evenly spread frames, `video_start` / `video_end` trim, both at the list's rate.
    `fps` on a list is refused (0.0.10 read it as the list's rate, 0.0.14 ignores it): pass `sample_fps`, or
    pass `video_fps` (the rate the frames were captured at) to sample the list like a file with `fps`/`nframes`.
    """
    _check_options(fps, nframes, min_frames, max_frames, video_fps, sample_fps, video_start, video_end)
    trim = (video_start, video_end)
    if isinstance(source, (str, Path)) and URL.match(str(source)):
        raise ValueError(f"video {str(source)!r} is a URL: qwenlite never downloads; save the file first")
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        folder = Path(source)
        files = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")), key=natural_key)
        if not files:
            raise ValueError(f"video folder {folder} holds no frame files")
        frames = [load_image(p) for p in files]
        return _video_from_frames(
            frames, str(folder), fps, nframes, min_frames, max_frames, video_fps, sample_fps, trim
        )
    if isinstance(source, (str, Path)):
        for name, value in (("video_fps", video_fps), ("sample_fps", sample_fps)):
            if value is not None:
                raise ValueError(f"load_video: {name}={value} is for frame lists; the file {source} has its own rate")
        return _read_video_file(Path(source), fps, nframes, min_frames, max_frames, trim)
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        if len(source) == 0:
            raise ValueError("load_video: the list of frames is empty")
        frames = [load_image(f) for f in source]
        return _video_from_frames(frames, "<frames>", fps, nframes, min_frames, max_frames, video_fps, sample_fps, trim)
    raise TypeError(f"load_video: expected a file, a folder or a list of frames, got {type(source).__name__}")


def natural_key(path: Path) -> list[int | str]:
    """Sort key that reads digit runs as numbers: frame2 < frame10 (a string sort puts frame10 first)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _check_options(
    fps: float | None,
    nframes: int | None,
    min_frames: int,
    max_frames: int | None,
    video_fps: float | None,
    sample_fps: float | None,
    video_start: float | None,
    video_end: float | None,
) -> None:
    """Refuse, by name, numbers that would give times running backwards, NaN positions or a division by zero."""
    if nframes is not None and fps is not None:
        raise ValueError(f"load_video: give either fps ({fps}) or nframes ({nframes}), not both")
    if video_fps is not None and sample_fps is not None:
        raise ValueError(f"load_video: give the list's rate once: video_fps ({video_fps}) or sample_fps ({sample_fps})")
    for name, value in (("fps", fps), ("video_fps", video_fps), ("sample_fps", sample_fps)):
        if value is not None and (not finite_number(value) or value <= 0):
            raise ValueError(f"load_video: {name} must be a finite number of frames per second > 0, got {value!r}")
    for name, value, least in (("nframes", nframes, 1), ("min_frames", min_frames, 1), ("max_frames", max_frames, 1)):
        if value is not None and (not _is_integer(value) or value < least):
            raise ValueError(f"load_video: {name} must be an integer >= {least}, got {value!r}")
    for name, value in (("video_start", video_start), ("video_end", video_end)):
        if value is not None and (not finite_number(value) or value < 0):
            raise ValueError(f"load_video: {name} must be a finite time in seconds >= 0, got {value!r}")
    if video_start is not None and video_end is not None and video_end <= video_start:
        raise ValueError(f"load_video: video_end ({video_end}) must come after video_start ({video_start})")


def _is_integer(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def frame_range(
    total_frames: int, video_fps: float, video_start: float | None, video_end: float | None, name: str
) -> tuple[int, int]:
    """First and last frame inside [video_start, video_end] seconds: qwen-vl-utils' calculate_video_frame_range.

    Times are clamped to [0, duration]; the first frame is ceil(start * fps), the last floor(end * fps), at most
    the last frame. A range that holds fewer than two frames is refused (qwen-vl-utils: start >= end).
    """
    if video_start is None and video_end is None:
        return 0, total_frames - 1
    duration = total_frames / video_fps
    first = math.ceil(max(0.0, min(video_start, duration)) * video_fps) if video_start is not None else 0
    last = total_frames - 1
    if video_end is not None:
        last = min(math.floor(max(0.0, min(video_end, duration)) * video_fps), total_frames - 1)
    if first >= last:
        raise ValueError(
            f"video {name}: video_start={video_start}, video_end={video_end} select frames {first}..{last}, "
            f"fewer than two, of a video of {duration:.2f} s ({total_frames} frames at {video_fps:g} fps)"
        )
    return first, last


def _choose(
    total: int,
    rate: float,
    fps: float | None,
    nframes: int | None,
    min_frames: int,
    max_frames: int | None,
    trim: tuple[float | None, float | None],
    name: str,
) -> tuple[list[int], int]:
    """Frame numbers to keep, and the frame count they are chosen from (the trimmed range): qwen-vl-utils' readers."""
    first, last = frame_range(total, rate, *trim, name)
    count = last - first + 1
    try:
        n = smart_nframes(count, rate, fps, nframes, min_frames, max_frames)
    except ValueError as err:
        raise ValueError(f"video {name}: {err}") from None
    return sample_frame_indices(count, n, first), count


def _video_from_frames(
    frames: list[torch.Tensor],
    name: str,
    fps: float | None,
    nframes: int | None,
    min_frames: int,
    max_frames: int | None,
    video_fps: float | None,
    sample_fps: float | None,
    trim: tuple[float | None, float | None],
) -> Video:
    sizes = {tuple(f.shape) for f in frames}
    if len(sizes) > 1:
        raise ValueError(f"video {name}: all frames must have one size, found {sorted(sizes)}")
    if video_fps is not None:  # captured at video_fps: sample like a file
        rule = None if nframes is not None else (fps or VIDEO_FPS)
        idx, count = _choose(len(frames), video_fps, rule, nframes, min_frames, max_frames, trim, name)
        return Video(torch.stack([frames[i] for i in idx]), idx, video_fps, count, name, frame_list=True)
    if fps is not None:
        raise ValueError(
            f"video {name}: fps={fps} on a list of frames is ambiguous (qwen-vl-utils 0.0.10 read it as the list's "
            "rate, 0.0.14 ignores it): pass sample_fps= for the rate the frames were sampled at, or video_fps= "
            "(the capture rate) to sample them at fps"
        )
    rate = sample_fps if sample_fps is not None else VIDEO_FPS
    if nframes is None:  # already sampled: keep every frame (in the trimmed range)
        first, last = frame_range(len(frames), rate, *trim, name)
        idx = list(range(first, last + 1))
        return Video(torch.stack([frames[i] for i in idx]), idx, rate, len(idx), name, frame_list=True)
    idx, count = _choose(len(frames), rate, None, nframes, min_frames, max_frames, trim, name)
    return Video(torch.stack([frames[i] for i in idx]), idx, rate, count, name, frame_list=True)


def _read_video_file(
    path: Path,
    fps: float | None,
    nframes: int | None,
    min_frames: int,
    max_frames: int | None,
    trim: tuple[float | None, float | None],
) -> Video:
    import av  # PyAV: FFmpeg in a wheel

    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"video file {path} is empty (0 bytes)")
    if fps is None and nframes is None:
        fps = VIDEO_FPS
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"video {path} is empty: it holds no video stream, so no frames")
            stream = container.streams.video[0]
            # 1) count the frames and read their times without decoding them
            times = _packet_times(container, stream)
            total = stream.frames or len(times)
            if total == 0:
                raise ValueError(f"video {path} is empty: its video stream has no frames")
            if stream.average_rate:
                rate = float(stream.average_rate)
            elif container.duration:
                rate = total / (container.duration / 1e6)
            else:
                raise ValueError(
                    f"video {path} states neither a frame rate nor a duration: its frame times are unknown"
                )
            if len(times) == total:
                _refuse_variable_frame_rate(times, rate, path)
            # 2) choose the frames, then decode once and keep only those
            idx, count = _choose(total, rate, fps, nframes, min_frames, max_frames, trim, str(path))
            wanted, kept = set(idx), {}
            container.seek(0)
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted:
                    kept[i] = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)  # (3, H, W)
                if i >= idx[-1]:
                    break
    except av.error.EOFError as err:
        raise ValueError(f"video {path} ends before its first frame: empty or truncated ({err})") from err
    except av.error.FFmpegError as err:
        raise ValueError(f"cannot read video {path}: not a video file, or truncated/corrupt ({err})") from err
    missing = [i for i in idx if i not in kept]
    if missing:
        raise ValueError(
            f"video {path}: decoding stopped before frames {missing} (the file says {total} frames; "
            "it may be truncated)"
        )
    return Video(torch.stack([kept[i] for i in idx]), idx, rate, count, str(path))


def _packet_times(container: Any, stream: Any) -> list[float]:
    """Presentation time of every frame, in seconds from the first (packet pts * time_base, sorted)."""
    pts = [p.pts for p in container.demux(stream) if p.size]
    if not pts or any(t is None for t in pts) or stream.time_base is None:
        return []  # no timing in the container (raw streams): nothing to check
    pts.sort()
    return [float((t - pts[0]) * stream.time_base) for t in pts]


def _refuse_variable_frame_rate(times: list[float], rate: float, path: Path) -> None:
    """qwenlite (as qwen-vl-utils) times frame i at i / rate; refuse a file whose own timestamps say otherwise."""
    for i, shown in enumerate(times):
        if abs(shown - i / rate) > 0.5 / rate:  # more than half a frame off the constant-rate grid
            raise ValueError(
                f"video {path} has a variable frame rate (VFR): frame {i} is shown at {shown:.2f} s, but its "
                f"average rate {rate:.4g} fps puts it at {i / rate:.2f} s; times come from index / rate here, so "
                "re-encode it at a constant rate first (e.g. ffmpeg -i in.mp4 -fps_mode cfr -r 30 out.mp4)"
            )


def write_video(frames: torch.Tensor, path: str | Path, fps: int) -> Path:
    """Frames (T, 3, H, W) uint8 -> an mp4 file at `fps` frames per second, losslessly (H.264 in RGB, CRF 0),
    so that `load_video(path)` gives back exactly these pixels. Frame i is shown at i / fps seconds."""
    from fractions import Fraction

    import av

    if frames.ndim != 4 or frames.shape[1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"write_video: frames must be (T, 3, H, W) uint8, got {frames.dtype} {tuple(frames.shape)}")
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=fps)
        stream.width, stream.height = frames.shape[3], frames.shape[2]
        stream.pix_fmt = "rgb24"
        stream.options = {"crf": "0", "preset": "medium"}
        stream.time_base = Fraction(1, fps)
        for i, frame in enumerate(frames):
            out = av.VideoFrame.from_ndarray(frame.permute(1, 2, 0).contiguous().numpy(), format="rgb24")
            out.pts = i
            container.mux(stream.encode(out))
        container.mux(stream.encode())
    return path
