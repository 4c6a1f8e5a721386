"""Exercises of notebook 10_costs_and_boxes (`exercises.describe` / `exercises.check` find them by name)."""

from __future__ import annotations

from typing import Any

from .grading import _count_hint, _whole_number, _whole_numbers, exercise

CLIP_HW, CLIP_SECONDS, CLIP_FPS = (960, 1280), 240, 30.0  # a 4-minute 4:3 recording, H x W


def _video_tokens() -> int:
    from qwenlite_course.costs import video_cost

    return video_cost(*CLIP_HW, seconds=CLIP_SECONDS, video_fps=CLIP_FPS).tokens


@exercise(
    "video_tokens_960x1280_4min",
    f"""A {CLIP_SECONDS // 60}-minute recording of {CLIP_HW[0]} x {CLIP_HW[1]} pixels (H x W) at {CLIP_FPS:g} fps
    is sent as a video with qwen-vl-utils' defaults: 2 frames a second, at most 768 tokens a frame pair, and one
    pixel budget for the whole video, 90% of a 128000-token context (128000 x 28 x 28 x 0.9 pixels, shared by
    the sampled frames: each frame pair may use total / frames x 2 of them). How many <|video_pad|> tokens does
    it become? Work it out by hand first (a calculator and smart_resize's rule), then check with code: count the
    frames, find each frame's pixel limit, resize with smart_resize, then count merged tokens over the temporal
    patches.""",
    answer=_video_tokens,
)
def _video_tokens_grade(answer: Any) -> str | None:
    from qwenlite_course.costs import video_cost

    alone = video_cost(*CLIP_HW, seconds=CLIP_SECONDS, video_fps=CLIP_FPS, total_pixels=float("inf")).tokens
    if _whole_number(answer, "tokens") == alone:
        return (
            "that is each frame pair at its own 768-token limit; the whole video shares one pixel budget, "
            "so with this many frames each frame gets less."
        )
    return _count_hint(
        answer,
        _video_tokens(),
        "tokens",
        {
            2: "did you count sampled frames instead of temporal patches? Two frames make one temporal patch.",
            4: "did you count patches instead of merged tokens? Each 2x2 block of patches is one token.",
            8: "did you count the patches of every sampled frame? Two frames make one temporal patch, and 2x2 "
            "patches one token.",
        },
        "the per-frame limit is min(768 x 28 x 28, total / frames x 2); smart_resize shrinks both sides by the "
        "same factor and rounds each down to a multiple of 28.",
    )


SCREEN_HW = (1080, 1920)  # a Full-HD screenshot, H x W
SCREEN_CAP = 500  # the deployment's max_pixels, in tokens (x 28 x 28)
SCREEN_ANSWER = (290, 96, 505, 371)  # the model's bbox_2d, in the frame it saw


def _box_on_screen() -> list[int]:
    from qwenlite import grounding

    frame = grounding.model_frame(SCREEN_HW, max_pixels=SCREEN_CAP * 28 * 28)
    return [round(v) for v in grounding.to_original(SCREEN_ANSWER, frame, SCREEN_HW)]


@exercise(
    "box_on_screenshot_max500",
    f"""A {SCREEN_HW[0]} x {SCREEN_HW[1]} screenshot (H x W) goes to Qwen2.5-VL through a processor with the hub's
    min_pixels and max_pixels = {SCREEN_CAP} x 28 x 28. Asked to locate the search field, the model answers
    {{"bbox_2d": {list(SCREEN_ANSWER)}, "label": "search field"}}. Where is that box on the screenshot, in its own
    pixels? Answer [x1, y1, x2, y2], each rounded to a whole pixel. Find the frame the model saw first.""",
    answer=_box_on_screen,
)
def _box_on_screen_grade(answer: Any) -> str | None:
    from qwenlite import grounding

    value = _whole_numbers(answer, 4, "coordinates")
    if isinstance(value, str):
        return value
    if value == _box_on_screen():
        return None
    frame = grounding.model_frame(SCREEN_HW, max_pixels=SCREEN_CAP * 28 * 28)
    uncapped = grounding.model_frame(SCREEN_HW)
    if value == list(SCREEN_ANSWER):
        return "those are pixels of the frame the model saw (the resized screenshot), not of the screenshot."
    if value == [round(v) for v in grounding.from_thousandths(SCREEN_ANSWER, SCREEN_HW)]:
        return "that reads the answer on a 0-1000 grid (Qwen2-VL's and Qwen3-VL's); Qwen2.5-VL writes absolute pixels."
    if value == [round(v) for v in grounding.to_original(SCREEN_ANSWER, uncapped, SCREEN_HW)]:
        return "that is the frame at the hub's max_pixels; this processor caps it lower, so the frame is smaller."
    if value == list(grounding.to_resized(SCREEN_ANSWER, SCREEN_HW, frame)):
        return "that carries the box into the model's frame; the answer is already there, carry it back out."
    swapped = [round(v) for v in grounding.to_original(SCREEN_ANSWER, frame[::-1], SCREEN_HW[::-1])]
    if value == swapped:
        return "x runs across and scales with widths, y runs down and scales with heights."
    return "x = x' W / W' and y = y' H / H', with H' x W' = smart_resize(H, W) at this processor's limits."
