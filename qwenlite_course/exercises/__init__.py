"""Exercises for the notebooks: `describe(name)` gives the question, `check(name, answer)` says if it is right.

Each expected answer is computed when checking, from the package's own functions and modules (`smart_resize`,
`get_window_index`, `vision_layout`, `vision_rotary_ids`, `get_rope_index`, `decode_position_ids`, `patchify`,
`PatchEmbed`, `PatchMerger`, `fuse`, `KVCache`, `penalise_repeats`, `load_video`, `QwenLiteVL` on the meta
device), so it stays true when the package changes. A wrong answer gets a hint that says what looks wrong,
never the answer. Each notebook ends with two or three of them; a placeholder answer (None, or a function
that still raises NotImplementedError) gets "not yet", never an exception.

    from qwenlite_course import exercises
    print(exercises.describe("pad_tokens_3024x4032_max1280"))
    exercises.check("pad_tokens_3024x4032_max1280", 1234)   # prints "correct" or a hint; returns True / False
"""

from __future__ import annotations

# one module per notebook; importing them registers their exercises
from . import (  # noqa: F401
    nb00_tour,
    nb01_preprocessing,
    nb02_patch_embed,
    nb03_vision_block,
    nb04_merger,
    nb05_token_fusion,
    nb06_rope_index,
    nb07_decoder_generation,
    nb08_video_end_to_end,
    nb09_training,
    nb10_costs_and_boxes,
    nb11_appendix,
)
from .grading import EXERCISES, check, describe

__all__ = ["EXERCISES", "check", "describe"]
