"""Exercises of notebook 02_patch_embed (`exercises.describe` / `exercises.check` find them by name)."""

from __future__ import annotations

from typing import Any

import torch

from .grading import _call, _count_hint, _graded_function, _sizes, _whole_number, exercise


@exercise(
    "patch_embed_matmul",
    """Write patch_embed(pixel_values, weight) -> embeddings with one matrix product, for patches written frame
    by frame: pixel_values is (N, 1176), each row a flattened (Tp, C, P, P) = (2, 3, 14, 14) patch (both frames'
    red, green and blue planes one after the other, as some other codebases store clips), NOT the processor's
    (C, Tp, P, P) order; weight is the Conv3d's (D, 3, 2, 14, 14) kernel, embeddings (N, D). No convolution and
    no reordering of pixel_values: rearrange the weight and multiply. Pass the function itself:
    check("patch_embed_matmul", patch_embed) compares it with qwenlite's PatchEmbed (a Conv3d with kernel =
    stride = (2, 14, 14)) on the same patches in the processor's order, on random weights.""",
)
@_graded_function
def _patch_embed_matmul(fn: Any) -> str | None:
    from dataclasses import replace

    from qwenlite.config import VisionConfig
    from qwenlite.vision import PatchEmbed

    from ..reference import tolerance

    generator = torch.Generator().manual_seed(0)
    for n, width in ((4, 16), (12, 40)):
        module = PatchEmbed(replace(VisionConfig(), hidden_size=width))
        weight = torch.randn(module.proj.weight.shape, generator=generator)
        module.proj.weight.data.copy_(weight)
        pixel_values = torch.randn(n, weight[0].numel(), generator=generator)  # the processor's (C, Tp, P, P) rows
        with torch.no_grad():
            expected = module(pixel_values)
        frame_major = pixel_values.view(n, 3, 2, 14, 14).transpose(1, 2).reshape(n, -1)  # (Tp, C, P, P) rows
        out = _call(fn, f"on {n} patches and D = {width}", frame_major, weight.clone())
        if not isinstance(out, torch.Tensor):
            return f"expected a tensor, got a {type(out).__name__}"
        if tuple(out.shape) != tuple(expected.shape):
            return f"wrong shape: {n} patches and D = {width} gave {tuple(out.shape)}; expected (N, D)"
        if not out.is_floating_point() or (out.float() - expected).abs().max() > tolerance(expected):
            return (
                "the numbers differ from the Conv3d's: each row here is (Tp, C, P, P) flattened, so the weight "
                "of one output must be flattened in that same order (the kernel is (D, C, Tp, P, P)), and the "
                "product is rows @ weight^T."
            )
    return None


def _patch_embed_weights_16px() -> int:
    from dataclasses import replace

    from qwenlite.vision import PatchEmbed

    with torch.device("meta"):
        vision = replace(_sizes("3b").vision_config, patch_size=16)
        return sum(p.numel() for p in PatchEmbed(vision).parameters())


@exercise(
    "patch_embed_weights_16px",
    """A variant of Qwen2.5-VL-3B cuts 16 x 16-pixel patches instead of 14 x 14 and keeps everything else of
    data/configs/qwen2_5_vl_3b_instruct.config.json (3 channels, 2 frames per patch, the vision width). How many
    weights does its patch embedding (model.visual.patch_embed) hold?""",
    answer=_patch_embed_weights_16px,
)
def _patch_embed_weights(answer: Any) -> str | None:
    vision = _sizes("3b").vision_config
    expected = _patch_embed_weights_16px()
    value = _whole_number(answer, "weights")
    if isinstance(value, int) and value == expected + vision.hidden_size:
        return "the patch embedding's Conv3d has no bias (bias=False)."
    return _count_hint(
        answer,
        expected,
        "weights",
        {
            1 / 2: "did you leave out the temporal kernel? Each patch spans temporal_patch_size = 2 frames.",
            1 / 3: "did you leave out the channels? Each patch has 3 (RGB).",
            1 / 6: "a patch is 3 channels x 2 frames x 16 x 16 pixels, not one 16 x 16 plane.",
            1 / 4: "one weight per pixel of a 16 x 16 patch, not of the 8 x 8 you get by halving.",
            (14 * 14) / (16 * 16): "this variant's patches are 16 x 16 pixels, not the config's 14 x 14.",
        },
        "vision width x (3 channels x 2 frames x 16 x 16 pixels), and no bias.",
    )
