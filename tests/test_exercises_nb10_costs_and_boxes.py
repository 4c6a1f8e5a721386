"""qwenlite_course/exercises/nb10_costs_and_boxes.py: each correct answer, worked out here with transformers'
smart_resize and qwen-vl-utils' written rules, passes; each plausible wrong answer fails with a hint that does not
contain the correct value."""

from __future__ import annotations

import torch
from helpers import fails_without_giving_away, passes
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

MIN_PIXELS, MAX_PIXELS = 3136, 12845056  # the hub's preprocessor_config.json


def test_video_tokens_960x1280_4min(capsys):
    # qwen-vl-utils 0.0.x (Qwen2.5-VL's): 2 fps, frames rounded to an even count; each frame's limit is
    # max(min(768 tokens, total / frames x 2), 1.05 x 128 tokens) in pixels, total = 90% of 128000 tokens
    from qwen_vl_utils.vision_process import smart_nframes

    frames = smart_nframes({"fps": 2.0}, total_frames=240 * 30, video_fps=30.0)  # 4 minutes at 30 fps
    total = 128000 * 28 * 28 * 0.9
    limit = max(min(768 * 28 * 28, total / frames * 2), int(128 * 28 * 28 * 1.05))
    height, width = smart_resize(960, 1280, 28, 128 * 28 * 28, limit)
    correct = frames // 2 * (height // 14) * (width // 14) // 4
    unshared = smart_resize(960, 1280, 28, 128 * 28 * 28, 768 * 28 * 28)
    name = "video_tokens_960x1280_4min"
    passes(capsys, name, correct)
    passes(capsys, name, torch.tensor(correct))
    fails_without_giving_away(
        capsys, name, frames // 2 * (unshared[0] // 14) * (unshared[1] // 14) // 4, correct, "shares"
    )
    fails_without_giving_away(capsys, name, 2 * correct, correct, "temporal patches")
    fails_without_giving_away(capsys, name, 4 * correct, correct, "merged tokens")
    fails_without_giving_away(capsys, name, correct + 2000, correct, "rounds each down")


def test_box_on_screenshot_max500(capsys):
    frame_h, frame_w = smart_resize(1080, 1920, 28, MIN_PIXELS, 500 * 28 * 28)  # the frame the model saw
    answer = (290, 96, 505, 371)
    scale = (1920 / frame_w, 1080 / frame_h) * 2  # x with widths, y with heights
    correct = [round(v * s) for v, s in zip(answer, scale, strict=True)]
    name = "box_on_screenshot_max500"
    passes(capsys, name, correct)
    passes(capsys, name, tuple(correct))
    passes(capsys, name, torch.tensor(correct))
    fails_without_giving_away(capsys, name, list(answer), correct, "frame the model saw")
    thousandths = [round(v * s / 1000) for v, s in zip(answer, (1920, 1080) * 2, strict=True)]
    fails_without_giving_away(capsys, name, thousandths, correct, "0-1000 grid")
    hub_h, hub_w = smart_resize(1080, 1920, 28, MIN_PIXELS, MAX_PIXELS)
    uncapped = [round(v * s) for v, s in zip(answer, (1920 / hub_w, 1080 / hub_h) * 2, strict=True)]
    fails_without_giving_away(capsys, name, uncapped, correct, "hub's max_pixels")
    inward = [round(v / s) for v, s in zip(answer, scale, strict=True)]
    fails_without_giving_away(capsys, name, inward, correct, "carry it back out")
    swapped = [round(v * s) for v, s in zip(answer, (1080 / frame_h, 1920 / frame_w) * 2, strict=True)]
    fails_without_giving_away(capsys, name, swapped, correct, "scales with widths")
    fails_without_giving_away(capsys, name, correct[:3], correct, "expected 4 numbers")
    fails_without_giving_away(capsys, name, [c + 9 for c in correct], correct, "smart_resize(H, W)")
