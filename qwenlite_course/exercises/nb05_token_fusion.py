"""Exercises of notebook 05_token_fusion (`exercises.describe` / `exercises.check` find them by name)."""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import torch

from .grading import DATA, _call, _count_hint, _graded_function, _whole_number, exercise

CLIP_FPS = 3.0  # the sampling rate asked (notebooks 01 and 08 sample the clip at 2 fps and print its tokens)


@functools.cache
def _video_tokens_at(fps: float) -> int:
    from qwenlite.preprocessing import preprocess_video
    from qwenlite.video_io import load_video

    return preprocess_video(load_video(DATA / "sample_video.mp4", fps=fps)).num_tokens()


def _video_tokens_fps3() -> int:
    return _video_tokens_at(CLIP_FPS)


@exercise(
    "video_pad_tokens_sample_video_fps3",
    f"""data/sample_video.mp4 (32 frames at 8 fps: 4 seconds of 252 x 336 pixels, height x width) is sampled at
    {CLIP_FPS:g} frames per second by qwen-vl-utils' rule (qwenlite.video_io.load_video(path, fps={CLIP_FPS})), and
    its frames are resized within the video pixel limits (qwenlite.preprocessing.preprocess_video with its
    defaults: at least VIDEO_MIN_PIXELS per frame). How many <|video_pad|> tokens does it become in the prompt?""",
    answer=_video_tokens_fps3,
)
def _video_tokens(answer: Any) -> str | None:
    if _whole_number(answer, "tokens") == _video_tokens_at(2.0):
        return (
            f"that is the count at 2 frames per second; at {CLIP_FPS:g} fps the 4 s clip gives more sampled "
            "frames, so more temporal patches."
        )
    return _count_hint(
        answer,
        _video_tokens_fps3(),
        "tokens",
        {
            2: "did you count sampled frames instead of temporal patches (2 frames each)?",
            4: "did you count patches instead of merged tokens? Each 2x2 block of patches is one token.",
            8: "count temporal patches (2 frames each) and merged tokens (2x2 patches each).",
        },
        "the frames are resized first: 252 x 336 px is below the video minimum of pixels per frame, so they grow.",
    )


@exercise(
    "fuse_by_positions",
    """Write fuse(inputs_embeds, input_ids, features, token_id) -> embeddings WITHOUT masked_scatter, straight from
    section 3's equation E'[p_k] = F[k]: inputs_embeds (B, L, D), input_ids (B, L), features (n_F, D) with n_F the
    number of pads (input_ids == token_id). Return a new tensor in which the k-th pad position in reading order
    (row by row through the batch, left to right) holds feature row k, and every other position its embedding.
    Leave inputs_embeds unchanged. Pass the function itself: check("fuse_by_positions", fuse) compares it with
    qwenlite.fusion.fuse (which uses masked_scatter) on random inputs, with masked_scatter switched off while
    your function runs.""",
)
@_graded_function
def _fuse(fn: Any) -> str | None:
    from qwenlite.fusion import fuse

    for case, (embeds, ids, features, token_id) in _fusion_cases().items():
        expected = fuse(embeds, ids, features, token_id, "image")
        given = embeds.clone()
        with _without_masked_scatter():
            out = _call(fn, f"on the case '{case}'", given, ids.clone(), features.clone(), token_id)
        if not torch.equal(given, embeds):
            return "your function changed inputs_embeds in place: write into a copy (inputs_embeds.clone())"
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(embeds.shape):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            return f"expected the embeddings' shape (B, L, D) = {tuple(embeds.shape)}, got {shape}"
        if not torch.equal(out, expected):
            return FUSION_HINTS[case]
    return None


_SCATTERS = ("masked_scatter", "masked_scatter_")


@contextlib.contextmanager
def _without_masked_scatter():
    """torch's masked_scatter (method, in-place method and function) raise while the learner's function runs."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("this exercise asks for fusion without masked_scatter: use the pad positions p_k")

    saved = {(owner, n): getattr(owner, n) for owner in (torch.Tensor, torch) for n in _SCATTERS if hasattr(owner, n)}
    try:
        for owner, name in saved:
            setattr(owner, name, refuse)
        yield
    finally:
        for (owner, name), original in saved.items():
            setattr(owner, name, original)


FUSION_HINTS = {
    "one row": "wrong rows at the pad positions of a single prompt: each pad position takes one whole feature "
    "row, the first pad the first row; is the mask expanded over D, and are the features taken row by row?",
    "batch": "wrong in a batch of two prompts: the feature rows are taken in reading order across the whole "
    "batch (row 0's pads first), not from feature row 0 again in every prompt.",
    "other pads": "wrong when the prompt holds other special tokens too: replace only the positions where "
    "input_ids == token_id.",
}


def _fusion_cases() -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]:
    """Random embeddings (D = 5) and ids with pads (id 9) placed so that each plausible mistake shows."""
    generator = torch.Generator().manual_seed(0)
    pad, other = 9, 10  # like <|image_pad|> and <|video_pad|>: neighbouring ids
    cases = {}
    for case, ids in {
        "one row": [[1, pad, pad, pad, 2, 3]],
        "batch": [[1, pad, pad, 2, 3, 4], [pad, pad, pad, 5, 6, 7]],
        "other pads": [[1, other, pad, pad, other, 2], [other, pad, 3, 4, pad, other]],
    }.items():
        ids = torch.tensor(ids)
        embeds = torch.randn(*ids.shape, 5, generator=generator)
        features = torch.randn(int((ids == pad).sum()), 5, generator=generator)
        cases[case] = (embeds, ids, features, pad)
    return cases
