"""Exercises of notebook 01_preprocessing (`exercises.describe` / `exercises.check` find them by name)."""

from __future__ import annotations

from typing import Any

import torch

from .grading import _call, _count_hint, _graded_function, _whole_number, exercise

PHONE_PHOTO = (3024, 4032)  # height x width: a 12-megapixel phone photo
TOKEN_LIMIT = 1280  # max_pixels = 1280 tokens x 28 x 28: the default of transformers' own smart_resize function


def _pad_tokens_3024x4032() -> int:
    from qwenlite.preprocessing import PreprocessorConfig, smart_resize

    config = PreprocessorConfig()
    height, width = smart_resize(*PHONE_PHOTO, config.factor, config.min_pixels, TOKEN_LIMIT * config.factor**2)
    return (height // config.patch_size) * (width // config.patch_size) // config.merge_size**2


@exercise(
    "pad_tokens_3024x4032_max1280",
    f"""A 12-megapixel phone photo of {PHONE_PHOTO[0]}x{PHONE_PHOTO[1]} pixels (height x width) goes through the
    processor with min_pixels 3136 and max_pixels = {TOKEN_LIMIT}*28*28 = {TOKEN_LIMIT * 28 * 28} (the default of
    transformers' own smart_resize function, a common way to cap memory). How many <|image_pad|> tokens does it
    become in the prompt? Resize first (qwenlite.smart_resize with those limits), then count 14-pixel patches,
    then merge 2x2 patches into one token.""",
    answer=_pad_tokens_3024x4032,
)
def _pad_tokens(answer: Any) -> str | None:
    from qwenlite.preprocessing import PreprocessorConfig, smart_resize

    config = PreprocessorConfig()
    uncapped = smart_resize(*PHONE_PHOTO, config.factor, config.min_pixels, config.max_pixels)
    value = _whole_number(answer, "tokens")
    if value == TOKEN_LIMIT:
        return (
            "max_pixels is a ceiling, not the result: after shrinking, smart_resize rounds each side down to a "
            "multiple of 28, so the image lands at or below the limit."
        )
    if value == uncapped[0] * uncapped[1] // config.factor**2:
        return "the photo is above max_pixels: smart_resize shrinks both sides by the same factor before rounding."
    return _count_hint(
        answer,
        _pad_tokens_3024x4032(),
        "tokens",
        {
            4: "did you count patches instead of merged tokens? Each 2x2 block of patches is one token.",
            8: "did you count the patches of both frames of the temporal patch? A still image has grid_t = 1.",
            2: "a still image is repeated to fill the temporal patch, but that adds no tokens: grid_t is 1.",
        },
        "above max_pixels, smart_resize divides both sides by beta = sqrt(h w / max_pixels), then rounds each "
        "down (floor) to a multiple of 28.",
    )


@exercise(
    "unpatchify",
    """Write unpatchify(pixel_values, grid_thw) -> frames, the inverse of qwenlite.preprocessing.patchify
    with patch 14, merge 2 and temporal patch 2: pixel_values is (N, 3*2*14*14) with rows in the processor's
    order, grid_thw the (t, h, w) tuple patchify returns, frames a (T, C, H, W) tensor. Pass the function
    itself: check("unpatchify", unpatchify) tries it on random frames of a few sizes.""",
)
@_graded_function
def _unpatchify(fn: Any) -> str | None:
    from qwenlite.preprocessing import patchify

    generator = torch.Generator().manual_seed(0)
    for shape in ((2, 3, 28, 28), (2, 3, 56, 84), (4, 3, 84, 56)):
        frames = torch.rand(shape, generator=generator)
        pixel_values, grid = patchify(frames)
        out = _call(fn, f"on frames of shape {shape} (grid {grid})", pixel_values.clone(), grid)
        if not isinstance(out, torch.Tensor):
            return f"expected a tensor, got a {type(out).__name__}"
        if tuple(out.shape) != shape:
            return f"wrong shape: frames of shape {shape} came back as {tuple(out.shape)}; expected (T, C, H, W)"
        if torch.equal(out, frames):
            continue
        if torch.equal(out.flatten().sort().values, frames.flatten().sort().values):
            return (
                f"the right numbers in the wrong places (frames of shape {shape}): name every axis of a row "
                "before you permute: which patch (t, block row, block column, row and column in the block), "
                "then its content (C, Tp, P, P)."
            )
        return f"the values differ from the frames that were patchified (shape {shape}), not just their order"
    return None


LONG_CLIP = (10 * 60 * 30, 30.0)  # (frames, fps): a 10-minute clip filmed at 30 frames per second


def _temporal_patches_10min() -> int:
    from qwenlite.sampling import VIDEO_FPS, smart_nframes

    return smart_nframes(*LONG_CLIP, VIDEO_FPS) // 2


@exercise(
    "temporal_patches_10min_clip",
    f"""A 10-minute clip filmed at {LONG_CLIP[1]:g} frames per second ({LONG_CLIP[0]} frames) is sampled at
    fps 2 by qwen-vl-utils' rule (section 8; qwenlite.sampling.smart_nframes has it). How many temporal patches
    (grid_t) does it give?""",
    answer=_temporal_patches_10min,
)
def _temporal_patches(answer: Any) -> str | None:
    from qwenlite.sampling import VIDEO_FPS

    total, video_fps = LONG_CLIP
    at_fps = round(total / video_fps * VIDEO_FPS)  # frames at 2 fps before any bound
    if _whole_number(answer, "temporal patches") in (at_fps, at_fps // 2):
        return (
            "duration x fps is only the wish: qwen-vl-utils then clamps the frame count to its bounds "
            "(section 8), and a long clip hits the upper one."
        )
    return _count_hint(
        answer,
        _temporal_patches_10min(),
        "temporal patches",
        {
            2: "did you count sampled frames? One temporal patch holds temporal_patch_size = 2 frames.",
        },
        "frames sampled = duration x fps, clamped to qwen-vl-utils' bounds, then 2 frames per temporal patch.",
    )
