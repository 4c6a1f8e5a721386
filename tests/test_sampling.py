"""qwenlite.sampling: how many frames and which ones, against qwen-vl-utils' own smart_nframes and readers."""

from __future__ import annotations

import pytest
import torch
from qwen_vl_utils import vision_process

from qwenlite.sampling import sample_frame_indices, smart_nframes
from qwenlite.video_io import load_video


@pytest.fixture
def qwen_fetch_video():
    """qwen-vl-utils' real fetch_video with PyAV frames (qwenlite_course.reference.qwen_vl_utils_fetch_video)."""
    from qwenlite_course.reference import qwen_vl_utils_fetch_video

    return qwen_vl_utils_fetch_video


CASES = [  # (total_frames, video_fps, options)
    (32, 8.0, {"fps": 2.0}),
    (32, 8.0, {"fps": 0.5}),  # below min_frames: 4
    (300, 30.0, {"fps": 2.0}),
    (10, 30.0, {"fps": 2.0}),  # the docstring: 4 (the minimum)
    (2000, 25.0, {"fps": 2.0}),
    (2000, 25.0, {"fps": 2.0, "max_frames": 50}),
    (97, 24.0, {"fps": 3.0, "min_frames": 6}),
    (32, 8.0, {"nframes": 5}),
    (32, 8.0, {"nframes": 9}),  # round(4.5) = 4: halves go to even
    (5000, 30.0, {"fps": 2.0}),  # capped at 768
]


@pytest.mark.parametrize(("total", "video_fps", "options"), CASES, ids=str)
def test_smart_nframes_equals_qwen_vl_utils(total, video_fps, options):
    """The frame count qwen-vl-utils computes for the same video and options (catches a max_frames default of 768
    that ignores total_frames, a round where it floors, or min_frames not rounded up to an even count)."""
    assert smart_nframes(total, video_fps, **options) == vision_process.smart_nframes(dict(options), total, video_fps)


@pytest.mark.parametrize(("total", "nframes"), [(32, 8), (33, 8), (300, 20), (7, 4), (32, 32)])
def test_frame_indices_equal_qwen_vl_utils_readers(total, nframes):
    """Evenly spread from the first frame to the last, rounded as qwen-vl-utils' readers do (halves to even)."""
    expected = torch.linspace(0, total - 1, nframes).round().long().tolist()  # vision_process._read_video_*
    assert sample_frame_indices(total, nframes) == expected
    assert sample_frame_indices(32, 8) == [0, 4, 9, 13, 18, 22, 27, 31]  # the docstring example


@pytest.mark.parametrize("nframes", [1, 40])
def test_impossible_frame_counts_raise_in_both(nframes, video_path, qwen_fetch_video):
    """nframes 1 rounds to 0 (below 2); 40 exceeds the clip's 32 frames."""
    with pytest.raises(ValueError, match="nframes should in interval"):
        qwen_fetch_video(video_path, nframes=nframes)
    with pytest.raises(ValueError, match="cannot sample"):
        load_video(video_path, nframes=nframes)
