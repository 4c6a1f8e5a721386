"""Exercises of notebook 01_preprocessing (`exercises.describe` / `exercises.check` find them by name)."""

from __future__ import annotations

from typing import Any

import torch

from .grading import _SAMPLE_VIDEO_TEXT, _call, _count_hint, _graded_function, _sample_video_grid, exercise


@exercise(
    "pad_tokens_1920x1080",
    """A 1920x1080 photo (width x height) goes through the processor with its default settings
    (min_pixels 3136, max_pixels 12845056). How many <|image_pad|> tokens does it become in the prompt?
    Resize first (qwenlite.smart_resize), then count 14-pixel patches, then merge 2x2 patches into one token.""",
)
def _pad_tokens(answer: Any) -> str | None:
    from qwenlite.preprocessing import PreprocessorConfig, smart_resize

    config = PreprocessorConfig()
    height, width = smart_resize(1080, 1920, config.factor, config.min_pixels, config.max_pixels)
    expected = (height // config.patch_size) * (width // config.patch_size) // config.merge_size**2
    return _count_hint(
        answer,
        expected,
        "tokens",
        {
            4: "did you count patches instead of merged tokens? Each 2x2 block of patches is one token.",
            8: "did you count the patches of both frames of the temporal patch? A still image has grid_t = 1.",
            2: "a still image is repeated to fill the temporal patch, but that adds no tokens: grid_t is 1.",
        },
        "smart_resize rounds each side to the nearest multiple of 28 before anything is counted.",
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


@exercise(
    "temporal_patches_sample_video",
    _SAMPLE_VIDEO_TEXT + " How many temporal patches (grid_t) does it give?",
)
def _temporal_patches(answer: Any) -> str | None:
    expected, _ = _sample_video_grid()
    return _count_hint(
        answer,
        expected,
        "temporal patches",
        {
            2: "did you count sampled frames? One temporal patch holds temporal_patch_size = 2 frames.",
            8: "did you count the file's frames? Sample at fps 2 first, then 2 frames make one temporal patch.",
        },
        "frames sampled = duration x fps (qwen-vl-utils' smart_nframes), then 2 frames per temporal patch.",
    )
