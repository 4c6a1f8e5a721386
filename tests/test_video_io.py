"""qwenlite.video_io: frames read from a file, a folder or a list, against qwen-vl-utils' real fetch_video.

qwen-vl-utils' fetch_video runs with a PyAV frame reader plugged in (this environment has none of its decoders):
see qwenlite_course.reference.qwen_vl_utils_fetch_video.

Hostile inputs live here too: unreadable files, frame folders in numeric order, non-finite or non-positive
rates, nframes on frame lists, variable frame rate files, video_start / video_end trimming (checked against
qwen-vl-utils' own calculate_video_frame_range through its decord reader, with a PyAV stand-in for decord).
"""

from __future__ import annotations

import math
import re
import shutil
import sys
import types
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from qwenlite import preprocessing as pp
from qwenlite.preprocessing import preprocess_video
from qwenlite.video_io import load_video


@pytest.fixture
def qwen_fetch_video():
    """qwen-vl-utils' real fetch_video with PyAV frames (qwenlite_course.reference.qwen_vl_utils_fetch_video)."""
    from qwenlite_course.reference import qwen_vl_utils_fetch_video

    return qwen_vl_utils_fetch_video


SAMPLING = [
    {"fps": 2.0},
    {"fps": 4.0},
    {"fps": 1.0},
    {"fps": 0.5},  # below min_frames: 4 frames
    {"fps": 8.0, "max_frames": 10},
    {"fps": 8.0},  # every frame
    {"nframes": 6},
    {"nframes": 5},  # rounds to 4
    {"nframes": 7},  # rounds to 8
    {"nframes": 3},  # round(1.5) = 2: 4
    {"nframes": 9},  # round(4.5) = 4 (halves to even): 8
    {"nframes": 11},  # round(5.5) = 6: 12
    {"nframes": 33},  # round(16.5) = 16: 32, every frame of the clip
    {"fps": 2.0, "min_frames": 6},
]


@pytest.mark.parametrize("options", SAMPLING, ids=[str(o) for o in SAMPLING])
def test_frame_indices_and_sizes_equal_qwen_vl_utils(options, video_path, qwen_fetch_video):
    video, meta, sample_fps = qwen_fetch_video(video_path, **options)
    ours = load_video(video_path, **options)
    assert len(ours.indices) == video.shape[0] and len(ours.indices) % 2 == 0  # the count is even in both
    assert ours.indices == torch.as_tensor(meta["frames_indices"]).tolist()
    assert ours.total_frames == meta["total_num_frames"] and ours.video_fps == meta["fps"]
    assert ours.sampled_fps == pytest.approx(sample_fps, rel=1e-12)
    patches = preprocess_video(ours)
    assert tuple(patches.frames.shape) == tuple(video.shape)  # same frame count and resized size


def test_sample_video_marker_lands_in_temporal_patch_2(video_path):
    """At 2 fps the clip gives frames [0, 4, 9, 13, 18, 22, 27, 31]; the red marker (seconds [2, 3)) is in 18, 22."""
    video = load_video(video_path)
    assert video.indices == [0, 4, 9, 13, 18, 22, 27, 31]
    red = [bool(f[0, :24, :24].float().mean() > 200 and f[1:, :24, :24].float().mean() < 60) for f in video.frames]
    assert [i for i, r in zip(video.indices, red, strict=True) if r] == [18, 22]
    patches = preprocess_video(video)
    assert patches.grid_thw.tolist()[0] == 4 and patches.second_per_grid_t == 1.0


@pytest.mark.slow
def test_video_from_folder_and_from_frame_list(video_path, tmp_path):
    with av.open(str(video_path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"frame_{i:03d}.png")  # lossless
    from_file = load_video(video_path)
    from_folder = load_video(tmp_path, video_fps=8.0)
    from_list = load_video(frames, video_fps=8.0)
    for other in (from_folder, from_list):
        assert other.indices == from_file.indices and other.sampled_fps == from_file.sampled_fps
        assert torch.equal(other.frames, from_file.frames)
    already_sampled = load_video(frames[:6], sample_fps=4.0)  # no video_fps: the frames are taken as they are
    assert already_sampled.indices == list(range(6)) and already_sampled.sampled_fps == 4.0


def test_write_video_is_lossless_and_load_video_reads_it_back(tmp_path):
    from qwenlite.video_io import write_video

    frames = torch.randint(0, 256, (6, 3, 56, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    video = load_video(write_video(frames, tmp_path / "clip.mp4", fps=3), nframes=6)
    assert torch.equal(video.frames, frames) and video.video_fps == 3 and video.indices == list(range(6))


def test_write_video_names_wrong_frames(tmp_path):
    from qwenlite.video_io import write_video

    with pytest.raises(ValueError, match=r"frames must be \(T, 3, H, W\) uint8, got torch.float32 \(2, 3, 8, 8\)"):
        write_video(torch.zeros(2, 3, 8, 8), tmp_path / "x.mp4", fps=2)


# ---------------------------------------------------------------- unreadable files and bad requests


def _naming(name: str, rule: str) -> str:
    """A regex for a message that names the file and states the rule, in either order."""
    return rf"{re.escape(name)}.*{rule}|{rule}.*{re.escape(name)}"


def _write_mp4(path: Path, frames: int) -> None:
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=8)
    stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
    container.start_encoding()
    for _ in range(frames):
        frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


@pytest.mark.parametrize(
    "name, kind, error, message",
    [
        ("text.mp4", "text", ValueError, "not a video file, or truncated/corrupt"),
        ("half.mp4", "half", ValueError, "not a video file, or truncated/corrupt"),
        ("zero.mp4", "zero", ValueError, r"is empty \(0 bytes\)"),
        ("noframes.mp4", "no frames", ValueError, "(is empty: .*no frames|ends before its first frame: empty)"),
        ("noframes.mkv", "no frames", ValueError, "(is empty: .*no frames|ends before its first frame: empty)"),
        ("photo.mp4", "photo", ValueError, r"1 frame\(s\), fewer than the 2 that one temporal patch"),
        ("one.mp4", "one frame", ValueError, r"1 frame\(s\), fewer than the 2 that one temporal patch"),
        ("missing.mp4", "missing", FileNotFoundError, "video file not found"),
    ],
    ids=[
        "text-as-mp4",
        "truncated",
        "zero-bytes",
        "no-frames-mp4",
        "no-frames-mkv",
        "jpg-as-mp4",
        "one-frame",
        "missing",
    ],
)
def test_unreadable_or_too_short_video_files_are_named(name, kind, error, message, tmp_path, video_path, photo_path):
    path = tmp_path / name
    if kind == "text":
        path.write_text("hello")
    elif kind == "half":
        data = video_path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "zero":
        path.write_bytes(b"")
    elif kind == "no frames":
        _write_mp4(path, 0)
    elif kind == "photo":  # FFmpeg reads a JPEG as a video of one frame
        shutil.copy(photo_path, path)
    elif kind == "one frame":
        _write_mp4(path, 1)
    with pytest.raises(error, match=_naming(name, message)):
        load_video(path)


TINY = [np.zeros((28, 28, 3), np.uint8)] * 6  # six blank frames

BAD_REQUESTS = {
    "empty-list": (lambda v, tmp: load_video([]), "load_video: the list of frames is empty"),
    "empty-folder": (lambda v, tmp: load_video(tmp), "video folder .* holds no frame files"),
    "too-many": (lambda v, tmp: load_video(v, nframes=40), r"cannot sample 40 frames from a video of 32 frames"),
    "fps-and-nframes": (
        lambda v, tmp: load_video(v, fps=2.0, nframes=4),
        r"give either fps \(2.0\) or nframes \(4\), not both",
    ),
    "sizes": (
        lambda v, tmp: load_video([np.zeros((28, 28, 3), np.uint8), np.zeros((56, 28, 3), np.uint8)]),
        "all frames must have one size",
    ),
    "one-frame": (
        lambda v, tmp: load_video([np.zeros((28, 28, 3), np.uint8)], video_fps=8.0),
        r"1 frame\(s\), fewer than the 2 that one temporal patch",
    ),
    "limits": (
        lambda v, tmp: pp.preprocess_video(load_video(v), min_pixels=700000, max_pixels=600000),
        r"min_pixels \(700000\) must not exceed max_pixels",
    ),
    "type": (lambda v, tmp: load_video(42), "load_video: expected a file, a folder or a list of frames, got int"),
    "url": (lambda v, tmp: load_video("https://example.com/clip.mp4"), "is a URL: qwenlite never downloads"),
    "video_fps-on-a-file": (lambda v, tmp: load_video(v, video_fps=8.0), r"video_fps=8.0 is for frame lists; the file"),
    "sample_fps-on-a-file": (lambda v, tmp: load_video(v, sample_fps=2.0), "sample_fps=2.0 is for frame lists"),
    "two-rates": (
        lambda v, tmp: load_video(TINY, video_fps=8.0, sample_fps=2.0),
        r"give the list's rate once: video_fps \(8.0\) or sample_fps \(2.0\)",
    ),
    "fps-on-a-list": (
        lambda v, tmp: load_video(TINY, fps=4.0),
        r"fps=4.0 on a list of frames is ambiguous \(qwen-vl-utils 0.0.10 .* 0.0.14 ignores it\): pass sample_fps",
    ),
    "end-before-start": (
        lambda v, tmp: load_video(v, video_start=3.0, video_end=1.0),
        r"video_end \(1.0\) must come after video_start \(3.0\)",
    ),
    "range-of-one-frame": (
        lambda v, tmp: load_video(v, video_start=3.95, video_end=3.99),
        r"video_start=3.95, video_end=3.99 select frames 32..31, fewer than two, of a video of 4.00 s",
    ),
    "start-after-the-end": (
        lambda v, tmp: load_video(v, video_start=10.0),
        r"video_start=10.0, video_end=None select frames 32..31",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_video_requests(case, video_path, tmp_path):
    call, message = BAD_REQUESTS[case]
    with pytest.raises((ValueError, TypeError), match=message):
        call(video_path, tmp_path)


RATES = [-2.0, 0, 0.0, math.nan, math.inf, -math.inf, "2", True]


@pytest.mark.parametrize("source", ["file", "list"])
@pytest.mark.parametrize("value", RATES, ids=[repr(v) for v in RATES])
def test_non_positive_or_non_finite_fps_is_refused(value, source, video_path):
    """fps=-2 ran time ids backwards, fps=nan gave ids near -9.2e18, fps=0 divided by zero (frame lists)."""
    key = "fps" if source == "file" else "sample_fps"
    with pytest.raises(ValueError, match=rf"{key} must be a finite number of frames per second > 0, got {value!r}"):
        load_video(video_path if source == "file" else TINY, **{key: value})


@pytest.mark.parametrize("value", [-2.0, 0.0, math.nan, math.inf], ids=repr)
def test_non_positive_or_non_finite_video_fps_is_refused(value):
    with pytest.raises(ValueError, match=rf"video_fps must be a finite number of frames per second > 0, got {value}"):
        load_video(TINY, video_fps=value)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"nframes": 0}, "nframes must be an integer >= 1, got 0"),
        ({"nframes": -4}, "nframes must be an integer >= 1, got -4"),
        ({"nframes": 2.5}, "nframes must be an integer >= 1, got 2.5"),
        ({"min_frames": 0}, "min_frames must be an integer >= 1, got 0"),
        ({"max_frames": math.nan}, "max_frames must be an integer >= 1, got nan"),
        ({"video_start": -1.0}, r"video_start must be a finite time in seconds >= 0, got -1.0"),
        ({"video_start": math.nan}, r"video_start must be a finite time in seconds >= 0, got nan"),
        ({"video_end": math.inf}, r"video_end must be a finite time in seconds >= 0, got inf"),
    ],
    ids=str,
)
def test_bad_counts_and_times_are_refused(options, message, video_path):
    with pytest.raises(ValueError, match=message):
        load_video(video_path, **options)


# ---------------------------------------------------------------- frame folders and frame lists


@pytest.mark.parametrize(
    "names",
    [
        [f"frame{i}.png" for i in range(1, 13)],  # frame1, frame10, frame11, frame12, frame2 ... as strings
        [f"img_{i}_a.png" for i in (0, 5, 9, 10, 50, 100)],
        ["9.png", "10.png", "11.png", "100.png"],
    ],
    ids=["frame1-12", "inner-number", "bare-numbers"],
)
def test_a_folder_of_frames_is_read_in_numeric_order(names, tmp_path):
    for shade, name in enumerate(names):  # each frame's shade is its place in numeric order
        Image.fromarray(np.full((28, 28, 3), 10 * shade, np.uint8)).save(tmp_path / name)
    shuffled = sorted(names)  # what a string sort gives: the test fails if the loader sorts this way
    assert shuffled != names
    video = load_video(tmp_path)
    assert [int(f[0, 0, 0]) // 10 for f in video.frames] == list(range(len(names)))


@pytest.mark.parametrize("nframes", [2, 4, 5, 6, 7, 9, 12])
def test_nframes_on_a_frame_list_is_honoured_with_qwen_vl_utils_rule(nframes):
    """qwen-vl-utils rounds nframes to even and spreads the frames by round(linspace); 0.0.14 ignores it on lists."""
    from qwen_vl_utils.vision_process import smart_nframes as q_smart_nframes

    frames = [np.full((28, 28, 3), 20 * i, np.uint8) for i in range(12)]
    video = load_video(frames, nframes=nframes)
    n = q_smart_nframes({"nframes": nframes}, total_frames=12, video_fps=2.0)
    expected = torch.linspace(0, 11, n).round().long().tolist()
    assert video.indices == expected and len(video.indices) == n
    assert [int(f[0, 0, 0]) // 20 for f in video.frames] == expected
    assert video.sampled_fps == n / 12 * 2.0 and video.timestamps == [i / 2.0 for i in expected]


LIST_CASES = [
    ((64, 64), {}),
    ((480, 640), {}),
    ((480, 640), {"min_pixels": 3136, "max_pixels": 50000}),
    ((480, 640), {"max_pixels": 200000}),
    ((100, 150), {"min_pixels": 3136, "max_pixels": 50000}),
    ((37, 300), {}),
    ((720, 1280), {"max_pixels": 200000}),
    ((500, 333), {"total_pixels": 20 * 28 * 28 * 8}),
    ((240, 320), {"sample_fps": 4.0}),
]


@pytest.mark.parametrize("size, options", LIST_CASES, ids=[f"{s[0]}x{s[1]}-{o}" for s, o in LIST_CASES])
def test_frame_lists_follow_qwen_vl_utils_0_0_14(size, options):
    """Sizes, frame count and sample rate equal qwen-vl-utils 0.0.14's fetch_video on the same list of frames."""
    import qwen_vl_utils.vision_process as vp

    frames = [Image.fromarray(np.full((*size, 3), 40 * i, np.uint8)) for i in range(5)]  # odd: padded to 6
    theirs, sample_fps = vp.fetch_video({"video": frames, **options}, return_video_sample_fps=True)
    sampling = {k: v for k, v in options.items() if k == "sample_fps"}
    sizing = {k: v for k, v in options.items() if k != "sample_fps"}
    video = load_video(frames, **sampling)
    ours = preprocess_video(video, **sizing)
    assert tuple(ours.frames.shape) == tuple(theirs.shape)  # frame count after padding, height, width
    assert video.sampled_fps == sample_fps and ours.second_per_grid_t == 2 / sample_fps


# ---------------------------------------------------------------- variable frame rate


def _write_timed_video(path: Path, times: list[float]) -> None:
    """An mp4 whose frame i is shown at times[i] seconds (pts in milliseconds): PyAV writes the chosen pts."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 25 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@pytest.mark.parametrize(
    "times",
    [
        [0.0, 0.125, 0.25, 0.375, 6.0, 6.125, 6.25, 6.375],  # a pause: four frames, six seconds, four frames
        [0.0, 0.125, 0.25, 0.375, 0.5, 1.25, 2.0, 2.75, 3.5, 4.25],  # 8 fps, then 1.33 fps
    ],
    ids=["pause", "slows-down"],
)
def test_variable_frame_rate_video_is_refused_naming_vfr(times, tmp_path):
    path = tmp_path / "vfr.mp4"
    _write_timed_video(path, times)
    with pytest.raises(ValueError, match=r"vfr.mp4 has a variable frame rate \(VFR\): frame \d+ is shown at"):
        load_video(path)


def test_constant_frame_rate_written_with_pts_is_read(tmp_path):
    path = tmp_path / "cfr.mp4"
    _write_timed_video(path, [i / 8 for i in range(8)])
    assert load_video(path, nframes=8).indices == list(range(8))


# ---------------------------------------------------------------- video_start / video_end against qwen-vl-utils


@pytest.fixture
def qwen_decord(monkeypatch):
    """qwen-vl-utils' decord reader (which trims with calculate_video_frame_range) over a PyAV stand-in for decord."""
    import qwen_vl_utils.vision_process as vp

    class VideoReader:
        def __init__(self, path: str) -> None:
            with av.open(path) as container:
                stream = container.streams.video[0]
                self.frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
                self.fps = float(stream.average_rate)

        def __len__(self) -> int:
            return len(self.frames)

        def get_avg_fps(self) -> float:
            return self.fps

        def get_batch(self, idx: list[int]) -> types.SimpleNamespace:
            return types.SimpleNamespace(asnumpy=lambda: np.stack([self.frames[i] for i in idx]))

    monkeypatch.setitem(sys.modules, "decord", types.SimpleNamespace(VideoReader=VideoReader))
    monkeypatch.setattr(vp, "get_video_reader_backend", lambda: "decord")

    def fetch(path: Path, **options):
        ele = {"type": "video", "video": str(path), **options}
        (video, meta), sample_fps = vp.fetch_video(ele, return_video_sample_fps=True, return_video_metadata=True)
        return video, meta, sample_fps

    return fetch


TRIMS = [
    {"video_start": 1.0},
    {"video_end": 2.5},
    {"video_start": 1.0, "video_end": 3.0},
    {"video_start": 0.5, "video_end": 2.0, "fps": 4.0},
    {"video_start": 1.0, "video_end": 3.9, "nframes": 6},
    {"video_start": 0.3, "video_end": 3.7, "nframes": 7},
    {"video_end": 100.0},  # clamped to the duration
    {"video_start": 0.0, "video_end": 4.0, "fps": 8.0},
    {"video_start": 2.2, "min_frames": 6},
]


@pytest.mark.parametrize("options", TRIMS, ids=[str(o) for o in TRIMS])
def test_video_start_and_end_equal_qwen_vl_utils(options, video_path, qwen_decord):
    theirs, meta, sample_fps = qwen_decord(video_path, **options)
    video = load_video(video_path, **options)
    assert video.indices == list(meta["frames_indices"])
    assert video.total_frames == meta["total_num_frames"] and video.video_fps == meta["fps"]
    assert video.sampled_fps == sample_fps
    assert video.timestamps == [i / meta["fps"] for i in meta["frames_indices"]]
    assert tuple(preprocess_video(video).frames.shape) == tuple(theirs.shape)


def test_video_start_and_end_on_a_frame_list_trim_it(video_path):
    with av.open(str(video_path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    from_file = load_video(video_path, video_start=1.0, video_end=3.0)
    from_list = load_video(frames, video_fps=8.0, video_start=1.0, video_end=3.0)
    assert from_list.indices == from_file.indices and torch.equal(from_list.frames, from_file.frames)
    kept = load_video(frames[:8], sample_fps=2.0, video_start=1.0, video_end=2.5)  # already sampled: every frame
    assert kept.indices == [2, 3, 4, 5] and kept.sampled_fps == 2.0
