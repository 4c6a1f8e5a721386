"""Make ``data/sample_video.mp4``: a tiny clip whose timing is known exactly.

The clip is built from real pixels of ``data/grace_hopper.jpg`` (512x600) so
that a vision encoder sees a natural image, but everything about it is
deterministic and documented, which makes it a good test input for
Qwen2.5-VL's video path (frame sampling, temporal patches, M-RoPE time ids):

* 32 frames at 8 fps -> exactly 4.0 seconds; frame ``i`` is shown at
  ``t = i / 8`` seconds.
* Each frame is a 336x252 crop of the photo. The crop window slides
  left -> right by exactly 5 pixels per frame: ``x0 = 5 * i``, ``y0 = 80``
  (so the last frame, i = 31, starts at x0 = 155).
* A pure red 24x24 square is painted in the top-left corner
  (rows 0..23, columns 0..23) only while ``2.0 <= t < 3.0``, i.e. in frames
  16..23. If all 32 frames are fed to Qwen2.5-VL (temporal patch size 2),
  those frames form temporal patches 8..11. 336 and 252 happen to be
  multiples of 28 (12 x 9 merged patches of 28x28 pixels).

It also writes ``data/sample_video.json`` with these facts.

Run from the repository root::

    python data/make_sample_video.py
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

DATA_DIR: Path = Path(__file__).resolve().parent
PHOTO_PATH: Path = DATA_DIR / "grace_hopper.jpg"
VIDEO_PATH: Path = DATA_DIR / "sample_video.mp4"
FACTS_PATH: Path = DATA_DIR / "sample_video.json"

FPS: int = 8
NUM_FRAMES: int = 32  # 4 seconds
WIDTH: int = 336
HEIGHT: int = 252
PAN_STEP_PX: int = 5  # crop window moves this many pixels right per frame
CROP_Y0: int = 80  # fixed top edge of the crop window (keeps the face in view)
MARKER_SIZE: int = 24
MARKER_RGB: tuple[int, int, int] = (255, 0, 0)
MARKER_SECONDS: tuple[float, float] = (2.0, 3.0)  # shown for t in [start, end)


def crop_x0(frame_index: int) -> int:
    """Left edge of the crop window for a frame (linear pan)."""
    return PAN_STEP_PX * frame_index


def has_marker(frame_index: int) -> bool:
    """True if the red marker is drawn in this frame."""
    t = frame_index / FPS
    return MARKER_SECONDS[0] <= t < MARKER_SECONDS[1]


def make_frame(photo: np.ndarray, frame_index: int) -> np.ndarray:
    """Return the RGB uint8 frame (HEIGHT, WIDTH, 3) for ``frame_index``."""
    x0 = crop_x0(frame_index)
    frame = photo[CROP_Y0 : CROP_Y0 + HEIGHT, x0 : x0 + WIDTH].copy()
    if has_marker(frame_index):
        frame[:MARKER_SIZE, :MARKER_SIZE] = MARKER_RGB
    return frame


def pick_codec() -> str:
    """Prefer H.264 (libx264); fall back to MPEG-4 part 2 if unavailable."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def write_video(photo: np.ndarray, path: Path) -> str:
    """Encode all frames to ``path``; return the codec name used."""
    codec = pick_codec()
    # "+bitexact" keeps library version strings out of the file; a track
    # timescale of FPS makes the stored time base exactly 1/FPS seconds.
    muxer_options = {"fflags": "+bitexact", "video_track_timescale": str(FPS)}
    with av.open(str(path), mode="w", options=muxer_options) as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width = WIDTH
        stream.height = HEIGHT
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, FPS)
        # One thread + fixed quality settings -> identical bytes on every run.
        if codec == "libx264":
            stream.options = {
                "crf": "20",
                "preset": "medium",
                "threads": "1",
                "flags": "+bitexact",
            }
        else:
            stream.options = {"b": "400k", "threads": "1", "flags": "+bitexact"}
        for i in range(NUM_FRAMES):
            frame = av.VideoFrame.from_ndarray(make_frame(photo, i), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts = i  # in units of 1/FPS seconds
            frame.time_base = Fraction(1, FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):  # flush the encoder
            container.mux(packet)
    return codec


def write_facts(codec: str, path: Path) -> None:
    """Write the clip's ground-truth facts as JSON."""
    marker_frames = [i for i in range(NUM_FRAMES) if has_marker(i)]
    facts = {
        "file": VIDEO_PATH.name,
        "source_image": PHOTO_PATH.name,
        "codec": codec,
        "pix_fmt": "yuv420p",
        "fps": FPS,
        "num_frames": NUM_FRAMES,
        "width": WIDTH,
        "height": HEIGHT,
        "duration_s": NUM_FRAMES / FPS,
        "frame_time_s": "t = i / fps  (i = 0 .. num_frames - 1)",
        "pan": {
            "description": (
                "Each frame is a width x height crop of the photo; the crop window slides linearly left to right."
            ),
            "crop_x0_formula": f"x0 = {PAN_STEP_PX} * i",
            "crop_y0": CROP_Y0,
            "crop_x0_first": crop_x0(0),
            "crop_x0_last": crop_x0(NUM_FRAMES - 1),
            "pixels_per_frame": PAN_STEP_PX,
            "pixels_per_second": PAN_STEP_PX * FPS,
        },
        "marker": {
            "description": "pure red square in the top-left corner",
            "rgb": list(MARKER_RGB),
            "box_xywh": [0, 0, MARKER_SIZE, MARKER_SIZE],
            "frames": marker_frames,
        },
        "marker_seconds": list(MARKER_SECONDS),
    }
    path.write_text(json.dumps(facts, indent=2) + "\n")


def main() -> None:
    photo = np.asarray(Image.open(PHOTO_PATH).convert("RGB"))
    assert crop_x0(NUM_FRAMES - 1) + WIDTH <= photo.shape[1], "pan leaves the photo"
    assert photo.shape[0] >= CROP_Y0 + HEIGHT, "crop leaves the photo"
    codec = write_video(photo, VIDEO_PATH)
    write_facts(codec, FACTS_PATH)
    size_kb = VIDEO_PATH.stat().st_size / 1024
    print(f"wrote {VIDEO_PATH} ({codec}, {size_kb:.1f} KB) and {FACTS_PATH}")


if __name__ == "__main__":
    main()
