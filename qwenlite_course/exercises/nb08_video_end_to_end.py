"""Exercises of notebook 08_video_end_to_end (`exercises.describe` / `exercises.check` find them by name)."""

from __future__ import annotations

import functools
from typing import Any

from .grading import DATA, _count_hint, _whole_number, _whole_numbers, exercise

MARKER_FPS = 4.5  # a rate whose temporal patches notebook 08 never prints: 2 sampled frames last 2 / 4.5 s


@functools.cache
def _marker_video() -> Any:
    """data/sample_video.mp4 sampled at 4.5 fps (a qwenlite.video_io.Video)."""
    from qwenlite.video_io import load_video

    return load_video(DATA / "sample_video.mp4", fps=MARKER_FPS)


def _marker_frame() -> int:
    """The first sampled frame that shows the marker."""
    start, _ = _marker_seconds()
    return next(k for k, time in enumerate(_marker_video().timestamps) if time >= start)


def _marker_patch_fps4_5() -> list[int]:
    from qwenlite.config import VisionConfig
    from qwenlite.preprocessing import preprocess_video
    from qwenlite.rope_index import vision_position_ids

    vision = VisionConfig()
    patch = _marker_frame() // vision.temporal_patch_size
    patches = preprocess_video(_marker_video())
    interval = vision.tokens_per_second * patches.second_per_grid_t
    grid_t = int(patches.grid_thw[0])
    t_ids = vision_position_ids(0, patches.grid_thw, vision.spatial_merge_size, interval)[0].reshape(grid_t, -1)
    return [patch, int(t_ids[patch, 0])]  # the t id of that patch's tokens (two patches may share one)


@exercise(
    "marker_patch_sample_video_fps4_5",
    """data/sample_video.mp4 (32 frames at 8 fps) shows a red square in its top-left corner during seconds
    [2, 3) (frames 16..23, see data/sample_video.json). Sample it at 4.5 frames per second
    (qwenlite.video_io.load_video(path, fps=4.5): Video.indices, Video.timestamps). Which temporal patch (0 for
    the first pair of sampled frames) is the first to show the marker, and what is its t id offset from the
    video's first t id? Answer (patch, t offset).""",
    answer=_marker_patch_fps4_5,
)
def _marker_patch(answer: Any) -> str | None:
    from qwenlite.config import VisionConfig

    start, _ = _marker_seconds()
    video, frame, vision = _marker_video(), _marker_frame(), VisionConfig()
    expected = _marker_patch_fps4_5()
    value = _whole_numbers(answer, 2, "patch, t offset")
    if isinstance(value, str):
        return value
    if value == expected:
        return None
    hints = []
    if value[0] != expected[0]:
        if value[0] == frame:
            hints.append("patch: that is the sampled frame's index; a temporal patch holds 2 sampled frames")
        elif value[0] == video.indices[frame] // vision.temporal_patch_size:
            hints.append("patch: count the sampled frames (Video.indices), not the file's 32 frames")
        else:
            hints.append("patch: find the first sampled frame whose time is in [2, 3) s, then its pair")
    if value[1] != expected[1]:
        if value[1] == round(start * vision.tokens_per_second) and value[0] == expected[0]:
            hints.append(
                "t offset: that is the marker's own start time in half seconds; a temporal patch's t comes from "
                "the patch, not the marker: floor(patch x second_per_grid_t x 2), the patch's start in half seconds"
            )
        elif value[1] == value[0]:
            hints.append("t offset: t counts time, 2 ids per second of video, not one per temporal patch")
        elif value[1] == 2 * value[0]:
            hints.append("t offset: that is 1 s per temporal patch; at 4.5 fps a patch of 2 frames lasts 2/4.5 s")
        else:
            hints.append("t offset: floor(patch x second_per_grid_t x 2), second_per_grid_t = 2 frames / 4.5 fps")
    return "; ".join(hints) + "."


def _marker_seconds() -> tuple[float, float]:
    import json

    return tuple(json.loads((DATA / "sample_video.json").read_text())["marker_seconds"])


PHONE_CLIP_HW, PHONE_CLIP_SECONDS = (720, 1080), 8  # a 3:2 clip, H x W, at 30 fps


def _phone_clip():
    """What the phone clip costs at qwen-vl-utils' defaults (2 fps, the video pixel limits): grid and windows."""
    from ..costs import video_cost

    return video_cost(*PHONE_CLIP_HW, seconds=PHONE_CLIP_SECONDS, video_fps=30.0)


def _windows_phone_clip() -> int:
    return _phone_clip().windows


@exercise(
    "windows_720x1080_8s",
    f"""A clip of {PHONE_CLIP_SECONDS} seconds at 30 fps, {PHONE_CLIP_HW[0]} x {PHONE_CLIP_HW[1]} pixels (H x W), is
    sent with qwen-vl-utils' defaults: sampled at 2 frames per second, each frame resized by smart_resize within
    the video limits (at most 768 x 28 x 28 pixels a frame here: the clip is short, so the whole-video budget
    does not bind). How many windows (segments of the windowed blocks) does the vision tower cut it into?
    Work it out by hand first: frames, temporal patches, the resized frame, patches, then windows of 112 x 112
    pixels per temporal patch, partial ones at the edges included.""",
    answer=_windows_phone_clip,
)
def _phone_clip_windows(answer: Any) -> str | None:
    from qwenlite.config import VisionConfig
    from qwenlite.preprocessing import smart_resize

    vision = VisionConfig()
    expected = _windows_phone_clip()
    side = vision.window_size // vision.patch_size  # patches per window side
    value = _whole_number(answer, "windows")
    if isinstance(value, int) and value != expected:
        t, h, w = _phone_clip().grid_thw
        if value == t * (h // side) * (w // side):
            return "too few: the partial windows on the bottom and right edges count too."
        if value * t == expected:
            return "that is one temporal patch's windows: each temporal patch is cut into its own."
        rounded = smart_resize(*PHONE_CLIP_HW, 28, 3136, 10**9)  # to multiples of 28 only, not shrunk
        if value == t * -(-rounded[0] // 14 // side) * -(-rounded[1] // 14 // side):
            return "resize the frames first: 720 x 1080 is above the per-frame limit of a video."
    return _count_hint(
        answer,
        expected,
        "windows",
        {
            2: "did you cut windows in every sampled frame? A temporal patch (2 frames) is cut once.",
        },
        "smart_resize each frame (both sides shrink by one factor, then round down to multiples of 28), then "
        "windows of 8 x 8 patches per temporal patch, partial ones included.",
    )
