"""Exercises for the notebooks: `describe(name)` gives the question, `check(name, answer)` says if it is right.

Each expected answer is computed when checking, from the package's own functions (`smart_resize`,
`get_window_index`, `get_rope_index`, `patchify`, `KVCache`, `penalise_repeats`, `load_video`), so it stays
true when the package changes. A wrong answer gets a hint that says what looks wrong, never the answer.

    from qwenlite import exercises
    print(exercises.describe("pad_tokens_1920x1080"))
    exercises.check("pad_tokens_1920x1080", 1234)   # prints "correct" or a hint; returns True / False
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

DATA = Path(__file__).resolve().parents[1] / "data"  # the repository's data/ folder (an editable install)


@dataclass(frozen=True)
class Exercise:
    text: str  # the question, as a notebook prints it
    grade: Callable[[Any], str | None]  # answer -> None when right, else a hint that does not give the answer


EXERCISES: dict[str, Exercise] = {}


def exercise(name: str, text: str) -> Callable:
    def register(grade: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
        EXERCISES[name] = Exercise(" ".join(text.split()), grade)
        return grade

    return register


def describe(name: str) -> str:
    return _get(name).text


def check(name: str, answer: Any) -> bool:
    """Print "correct", or what is wrong with the answer; return whether it is right."""
    hint = _get(name).grade(answer)
    print("correct" if hint is None else f"not yet: {hint}")
    return hint is None


def _get(name: str) -> Exercise:
    if name not in EXERCISES:
        raise ValueError(f"unknown exercise {name!r}: the exercises are {sorted(EXERCISES)}")
    return EXERCISES[name]


# ---------------------------------------------------------------- hints for counts


def _whole_number(answer: Any, what: str) -> int | str:
    """The answer as an int (a one-element tensor will do), or a hint saying why it is not one."""
    if isinstance(answer, torch.Tensor):
        if answer.numel() != 1:
            return f"expected one number of {what}, got a tensor of shape {tuple(answer.shape)}"
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        return f"expected a whole number of {what}, got {type(answer).__name__}"
    if answer != int(answer):
        return f"expected a whole number of {what}, got {answer}: a count has no fraction"
    return int(answer)


def _count_hint(answer: Any, expected: int, what: str, factors: dict[float, str], close: str) -> str | None:
    """None if answer == expected. Else a hint: a known factor's own question, 'close' within 30%, or the size of
    the miss as a factor rounded to one significant figure (not enough to recover the answer)."""
    value = _whole_number(answer, what)
    if isinstance(value, str):
        return value
    if value == expected:
        return None
    if value <= 0:
        return f"a number of {what} is positive, got {value}"
    ratio = value / expected
    for factor, question in factors.items():
        if abs(ratio / factor - 1) < 1e-9:
            size = f"{factor:g}" if factor >= 1 else f"1/{1 / factor:g}"
            return f"off by a factor of {size}: {question}"
    if 0.7 < ratio < 1.3:
        return f"close, but not equal: {close}"
    direction = "large" if ratio > 1 else "small"
    return f"too {direction} by a factor of about {float(f'{max(ratio, 1 / ratio):.0g}'):g}: {close}"


# ---------------------------------------------------------------- images


@exercise(
    "pad_tokens_1920x1080",
    """A 1920x1080 photo (width x height) goes through the processor with its default settings
    (min_pixels 3136, max_pixels 12845056). How many <|image_pad|> tokens does it become in the prompt?
    Resize first (qwenlite.smart_resize), then count 14-pixel patches, then merge 2x2 patches into one token.""",
)
def _pad_tokens(answer: Any) -> str | None:
    from .preprocessing import PreprocessorConfig, smart_resize

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
    "window_count_1_30_44",
    """The vision tower's windowed blocks attend inside windows of 112x112 pixels. For one image of grid
    (t, h, w) = (1, 30, 44) patches of 14 pixels, how many windows are there? Work it out from the rule:
    a window is 112 / 14 = 8 patches, or 4 merged tokens, on a side; the merged grid is padded up to whole
    windows, and the padding is dropped. (qwenlite.vision.get_window_index applies the rule.)""",
)
def _window_count(answer: Any) -> str | None:
    from .config import VisionConfig
    from .vision import get_window_index

    c = VisionConfig()
    _, cu_seqlens = get_window_index(torch.tensor([[1, 30, 44]]), c.window_size, c.patch_size, c.spatial_merge_size)
    expected = len(cu_seqlens) - 1
    value = _whole_number(answer, "windows")
    if isinstance(value, int) and 0 < value < expected:
        return (
            "too few: did you drop the partial windows? 30 and 44 patches are not whole numbers of windows; "
            "the windows on the bottom and right edges are smaller, but each one counts."
        )
    return _count_hint(
        answer, expected, "windows", {}, "a window is 8 patches (4 merged tokens) on a side, partial ones included."
    )


# ---------------------------------------------------------------- positions


@exercise(
    "rope_deltas_layout",
    """One prompt (batch 1): 3 text tokens, then an image of grid (t, h, w) = (1, 4, 6) patches (its
    <|image_pad|> tokens: t*h*w / 4 of them), then 5 text tokens. What is its rope_deltas, the number that
    decoding adds to a new token's plain text position (its index in the sequence) to get its M-RoPE
    position? Answer with an int (or the (1, 1) tensor that qwenlite.get_rope_index returns).""",
)
def _rope_deltas(answer: Any) -> str | None:
    from .config import QwenLiteConfig, TextConfig, VisionConfig
    from .rope_index import get_rope_index

    config = QwenLiteConfig(TextConfig(), VisionConfig())
    image_tokens = 1 * 4 * 6 // config.vision_config.spatial_merge_size**2
    ids = torch.tensor([[100, 101, 102] + [config.image_token_id] * image_tokens + [103, 104, 105, 106, 107]])
    _, deltas = get_rope_index(ids, image_grid_thw=torch.tensor([[1, 4, 6]]), config=config)
    expected = int(deltas)
    value = _whole_number(answer, "positions")
    if isinstance(value, str):
        return value
    if value == expected:
        return None
    if value == -expected:
        return "wrong sign: an image span takes fewer positions than it has tokens, so positions fall behind."
    if value == 0:
        return "not 0: an image span takes fewer positions than it has tokens (its ids form a small grid)."
    if value > 0:
        return "rope_deltas = (largest position + 1) - (number of tokens); is your largest position right?"
    return (
        "not that far behind: did you give the image one token per patch? It has t*h*w/4 merged tokens, and "
        "its positions follow the merged grid (h/2 rows, w/2 columns)."
    )


# ---------------------------------------------------------------- patches


@exercise(
    "unpatchify",
    """Write unpatchify(pixel_values, grid_thw) -> frames, the inverse of qwenlite.preprocessing.patchify
    with patch 14, merge 2 and temporal patch 2: pixel_values is (N, 3*2*14*14) with rows in the processor's
    order, grid_thw the (t, h, w) tuple patchify returns, frames a (T, C, H, W) tensor. Pass the function
    itself: check("unpatchify", unpatchify) tries it on random frames of a few sizes.""",
)
def _unpatchify(fn: Any) -> str | None:
    from .preprocessing import patchify

    if not callable(fn):
        return f"expected your function itself (a callable), got {fn!r}"
    generator = torch.Generator().manual_seed(0)
    for shape in ((2, 3, 28, 28), (2, 3, 56, 84), (4, 3, 84, 56)):
        frames = torch.rand(shape, generator=generator)
        pixel_values, grid = patchify(frames)
        try:
            out = fn(pixel_values.clone(), grid)
        except Exception as err:  # a learner's bug: report it as a hint
            return f"on frames of shape {shape} (grid {grid}) your function raised {type(err).__name__}: {err}"
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


# ---------------------------------------------------------------- memory


@exercise(
    "kv_cache_bytes_7b_8k_bf16",
    """How many bytes does the KV cache of Qwen2.5-VL-7B hold after 8192 tokens of one sequence (batch 1)
    in bfloat16? Read the sizes from data/configs/qwen2_5_vl_7b_instruct.config.json
    (qwenlite.QwenLiteConfig.from_pretrained). Every decoder layer keeps a key and a value per token.""",
)
def _kv_bytes(answer: Any) -> str | None:
    from .config import QwenLiteConfig
    from .decoder import KVCache

    text = QwenLiteConfig.from_pretrained(DATA / "configs" / "qwen2_5_vl_7b_instruct.config.json").text_config
    cache = KVCache()  # filled with meta tensors: the shapes and dtype the decoder stores, and no memory
    shape = (1, text.num_key_value_heads, 8192, text.head_dim)
    for layer in range(text.num_hidden_layers):
        keys = values = torch.empty(shape, dtype=torch.bfloat16, device="meta")
        cache.update(layer, keys, values)
    kv_groups = text.num_attention_heads // text.num_key_value_heads
    return _count_hint(
        answer,
        cache.nbytes,
        "bytes",
        {
            kv_groups: "the cache stores the key/value heads, not every query head (grouped-query attention).",
            2: "did you count 4 bytes per number (float32)? bfloat16 takes 2.",
            1 / 2: "did you count both the keys and the values, at 2 bytes each?",
            8: "did you count bits? A byte is 8 of them.",
            2 * kv_groups: "count key/value heads (not query heads), at 2 bytes each.",
        },
        "2 (key and value) x layers x key/value heads x head dim x tokens x 2 bytes.",
    )


# ---------------------------------------------------------------- decoding


@exercise(
    "greedy_with_repetition_penalty",
    """Write next_token(logits, sequence, penalty) -> token ids: logits (B, V) float, sequence (B, S) the
    token ids so far (prompt included), penalty > 0. Apply transformers' repetition penalty to every token
    id that occurs in that row's sequence (a positive logit is divided by the penalty, a negative one
    multiplied by it), then take the argmax. Return a (B,) long tensor and leave logits unchanged.
    Pass the function itself: check("greedy_with_repetition_penalty", next_token).""",
)
def _greedy(fn: Any) -> str | None:
    from .model import penalise_repeats

    if not callable(fn):
        return f"expected your function itself (a callable), got {fn!r}"
    for case, (logits, sequence, penalty) in _penalty_cases().items():
        expected = penalise_repeats(logits, sequence, penalty).argmax(-1)
        given = logits.clone()
        try:
            out = fn(given, sequence.clone(), penalty)
        except Exception as err:  # a learner's bug: report it as a hint
            return f"on the case '{case}' your function raised {type(err).__name__}: {err}"
        if not torch.equal(given, logits):
            return "your function changed the logits tensor in place: work on a copy (the caller may reuse it)"
        out = torch.as_tensor(out)
        if tuple(out.shape) != tuple(expected.shape):
            return f"expected one token id per row, a ({logits.shape[0]},) tensor, got shape {tuple(out.shape)}"
        if not torch.equal(out.long(), expected):
            return PENALTY_HINTS[case]
    return None


PENALTY_HINTS = {
    "positive": "wrong token when a seen token has the largest (positive) logit: is the penalty applied at all?",
    "negative": "wrong token when every logit is negative: what does dividing a negative logit by a penalty "
    "above 1 do? The penalty must make a seen token less likely.",
    "repeated": "wrong token when a token occurs twice in the sequence: is it penalised twice? Each seen token "
    "id is penalised once, however often it occurs.",
    "below one": "wrong token with a penalty below 1, which makes a seen token more likely: does your code "
    "always lower a seen logit? The same rule (divide if positive, multiply if negative) holds for any penalty.",
    "batch": "wrong token in a batch whose rows have different sequences: is each row penalised by its own "
    "sequence only?",
}


def _penalty_cases() -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """Cases where one plausible mistake changes the argmax; V = 10 tokens, 2 rows each."""
    generator = torch.Generator().manual_seed(0)
    cases = {}
    logits = torch.rand(2, 10, generator=generator)  # values in [0, 1)
    logits[:, 3], logits[:, 7] = 2.0, 1.95  # token 3 seen: 2.0 / 1.05 = 1.90 falls below token 7
    cases["positive"] = (logits, torch.tensor([[3, 1], [3, 5]]), 1.05)
    logits = -1.5 - torch.rand(2, 10, generator=generator)  # all negative
    logits[:, 3], logits[:, 7] = -1.0, -1.02  # token 3 seen: -1.0 * 1.05 = -1.05 falls below token 7
    cases["negative"] = (logits, torch.tensor([[3, 1], [3, 5]]), 1.05)
    logits = torch.rand(2, 10, generator=generator)
    logits[:, 3], logits[:, 7] = 2.0, 1.85  # token 3 seen twice: once 1.905 (stays first), twice 1.81
    cases["repeated"] = (logits, torch.tensor([[3, 3, 1], [3, 3, 5]]), 1.05)
    logits = torch.rand(2, 10, generator=generator)
    logits[:, 3], logits[:, 7], logits[:, 5] = 1.0, 1.5, -0.2  # penalty 0.5: token 3 doubles to 2.0
    cases["below one"] = (logits, torch.tensor([[3, 5], [3, 5]]), 0.5)
    logits = torch.rand(2, 10, generator=generator)
    logits[0, 3], logits[0, 7], logits[1, 3], logits[1, 7] = 2.0, 1.95, 1.95, 2.0  # row 0 saw 3, row 1 saw 7
    cases["batch"] = (logits, torch.tensor([[3, 1], [7, 1]]), 1.05)
    return cases


# ---------------------------------------------------------------- video

_SAMPLE_VIDEO_TEXT = """data/sample_video.mp4 (32 frames at 8 fps: 4 seconds of 336x252 pixels) is sampled at
    2 frames per second by qwen-vl-utils' rule (qwenlite.video_io.load_video(path, fps=2.0)), and its
    frames are resized within the video pixel limits (preprocess_video: at least VIDEO_MIN_PIXELS per frame)."""


def _sample_video_grid() -> tuple[int, int]:
    """(temporal patches, video pad tokens) of the sample video at fps 2, from the package's video path."""
    from .preprocessing import preprocess_video
    from .video_io import load_video

    patches = preprocess_video(load_video(DATA / "sample_video.mp4", fps=2.0))
    return int(patches.grid_thw[0]), patches.num_tokens()


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


@exercise(
    "video_pad_tokens_sample_video",
    _SAMPLE_VIDEO_TEXT + " How many <|video_pad|> tokens does it become in the prompt?",
)
def _video_tokens(answer: Any) -> str | None:
    _, expected = _sample_video_grid()
    return _count_hint(
        answer,
        expected,
        "tokens",
        {
            2: "did you count sampled frames instead of temporal patches (2 frames each)?",
            4: "did you count patches instead of merged tokens? Each 2x2 block of patches is one token.",
            8: "count temporal patches (2 frames each) and merged tokens (2x2 patches each).",
        },
        "the frames are resized first: 336x252 is below the video minimum of pixels per frame, so they grow.",
    )
