"""Loading a video: a file (PyAV), a folder of frames or a list of frames -> the sampled frames, with their times.

Frames are chosen by qwenlite.sampling (qwen-vl-utils' rules) and decoded once; a `Video` keeps the frame
numbers and the source's frame rate, from which preprocess_video gets second_per_grid_t. Mirrors qwen-vl-utils'
`fetch_video` readers (file, or a list of frames). Shapes: T frames, 3 channels, H x W pixels, uint8.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .image_io import ImageSource, load_image
from .sampling import VIDEO_FPS, VIDEO_MIN_FRAMES, sample_frame_indices, smart_nframes


@dataclass
class Video:
    """Frames chosen from a video, at their original size (uint8), with where and when they came from."""

    frames: torch.Tensor  # (T, 3, H, W) uint8, the sampled frames
    indices: list[int]  # frame number of each sampled frame in the source
    video_fps: float  # frame rate of the source
    total_frames: int  # frames in the source
    source: str = ""  # where the frames came from, for error messages

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
) -> Video:
    """Read a video and choose its frames (either `fps` or `nframes`, as in qwen-vl-utils).

    `fps` defaults to 2.0 when `nframes` is not given.
    `source`: a video file (decoded with PyAV), a folder of image files (sorted by name), or a list of frames
    (anything `load_image` takes). A file knows its own frame rate. For a folder or a list, pass `video_fps`
    (the rate the frames were captured at) to sample them like a file; without it the frames are taken as
    already sampled, all of them, at `fps` frames per second (qwen-vl-utils' rule for frame lists).
    """
    if nframes is not None and fps is not None:
        raise ValueError(f"load_video: give either fps ({fps}) or nframes ({nframes}), not both")
    if nframes is None and fps is None:
        fps = VIDEO_FPS
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        folder = Path(source)
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise ValueError(f"video folder {folder} holds no frame files")
        return _video_from_frames(
            [load_image(p) for p in files], str(folder), fps, nframes, min_frames, max_frames, video_fps
        )
    if isinstance(source, (str, Path)):
        return _read_video_file(Path(source), fps, nframes, min_frames, max_frames)
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        if len(source) == 0:
            raise ValueError("load_video: the list of frames is empty")
        return _video_from_frames(
            [load_image(f) for f in source], "<frames>", fps, nframes, min_frames, max_frames, video_fps
        )
    raise TypeError(f"load_video: expected a file, a folder or a list of frames, got {type(source).__name__}")


def _video_from_frames(
    frames: list[torch.Tensor],
    name: str,
    fps: float | None,
    nframes: int | None,
    min_frames: int,
    max_frames: int | None,
    video_fps: float | None,
) -> Video:
    sizes = {tuple(f.shape) for f in frames}
    if len(sizes) > 1:
        raise ValueError(f"video {name}: all frames must have one size, found {sorted(sizes)}")
    if video_fps is None:  # already sampled: keep every frame (qwen-vl-utils' list-of-frames rule)
        rate = fps if fps is not None else VIDEO_FPS
        return Video(torch.stack(frames), list(range(len(frames))), rate, len(frames), name)
    n = smart_nframes(len(frames), video_fps, fps, nframes, min_frames, max_frames)
    idx = sample_frame_indices(len(frames), n)
    return Video(torch.stack([frames[i] for i in idx]), idx, video_fps, len(frames), name)


def _read_video_file(
    path: Path, fps: float | None, nframes: int | None, min_frames: int, max_frames: int | None
) -> Video:
    import av  # PyAV: FFmpeg in a wheel

    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"video file {path} is empty (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"video {path} is empty: it holds no video stream, so no frames")
            stream = container.streams.video[0]
            # 1) count the frames without decoding them (the container's count, else count packets)
            total = stream.frames or sum(1 for p in container.demux(stream) if p.size)
            if total == 0:
                raise ValueError(f"video {path} is empty: its video stream has no frames")
            rate = float(stream.average_rate) if stream.average_rate else total / float(container.duration / 1e6)
            # 2) choose the frames, then decode once and keep only those
            try:
                n = smart_nframes(total, rate, fps, nframes, min_frames, max_frames)
            except ValueError as err:
                raise ValueError(f"video {path}: {err}") from None
            idx = sample_frame_indices(total, n)
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
    return Video(torch.stack([kept[i] for i in idx]), idx, rate, total, str(path))


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
