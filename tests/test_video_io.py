"""qwenlite.video_io: frames read from a file, a folder or a list, against qwen-vl-utils' real fetch_video.

qwen-vl-utils' fetch_video runs with a PyAV frame reader plugged in (this environment has none of its decoders):
see qwenlite.reference.qwen_vl_utils_fetch_video.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from PIL import Image

from qwenlite.preprocessing import preprocess_video
from qwenlite.video_io import load_video


@pytest.fixture
def qwen_fetch_video():
    """qwen-vl-utils' real fetch_video, reading frames with PyAV (see qwenlite.reference.qwen_vl_utils_fetch_video)."""
    from qwenlite.reference import qwen_vl_utils_fetch_video

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
    already_sampled = load_video(frames[:6], fps=2.0)  # no video_fps: the frames are taken as they are
    assert already_sampled.indices == list(range(6)) and already_sampled.sampled_fps == 2.0


def _empty_mp4(path):
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=8)
    stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
    container.start_encoding()
    container.close()


@pytest.mark.parametrize("kind", ["truncated", "not a video", "empty mp4", "empty mkv", "missing"])
def test_unreadable_or_empty_video_files_raise_naming_the_file(kind, tmp_path, video_path):
    path = tmp_path / ("clip.mkv" if kind == "empty mkv" else "clip.mp4")
    if kind == "truncated":
        path.write_bytes(video_path.read_bytes()[:3000])
    elif kind == "not a video":
        path.write_text("hello")
    elif kind.startswith("empty"):
        _empty_mp4(path)
    error = FileNotFoundError if kind == "missing" else ValueError
    with pytest.raises(error, match=str(path.name)):
        load_video(path)


def test_bad_video_requests_raise(video_path, tmp_path):
    with pytest.raises(ValueError, match="frames is empty"):
        load_video([])
    with pytest.raises(ValueError, match="holds no frame files"):
        load_video(tmp_path)
    with pytest.raises(ValueError, match=r"cannot sample 40 frames from a video of 32 frames"):
        load_video(video_path, nframes=40)
    with pytest.raises(ValueError, match="either fps"):
        load_video(video_path, fps=2.0, nframes=4)
    with pytest.raises(ValueError, match="one size"):
        load_video([np.zeros((28, 28, 3), np.uint8), np.zeros((56, 28, 3), np.uint8)])


def test_write_video_is_lossless_and_load_video_reads_it_back(tmp_path):
    from qwenlite.video_io import write_video

    frames = torch.randint(0, 256, (6, 3, 56, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    video = load_video(write_video(frames, tmp_path / "clip.mp4", fps=3), nframes=6)
    assert torch.equal(video.frames, frames) and video.video_fps == 3 and video.indices == list(range(6))


def test_write_video_names_wrong_frames(tmp_path):
    from qwenlite.video_io import write_video

    with pytest.raises(ValueError, match=r"frames must be \(T, 3, H, W\) uint8, got torch.float32 \(2, 3, 8, 8\)"):
        write_video(torch.zeros(2, 3, 8, 8), tmp_path / "x.mp4", fps=2)
