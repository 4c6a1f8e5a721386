"""Exercises for the notebooks: `describe(name)` gives the question, `check(name, answer)` says if it is right.

Each expected answer is computed when checking, from the package's own functions and modules (`smart_resize`,
`get_window_index`, `vision_layout`, `vision_rotary_ids`, `get_rope_index`, `decode_position_ids`, `patchify`,
`PatchEmbed`, `PatchMerger`, `fuse`, `KVCache`, `penalise_repeats`, `load_video`, `QwenLiteVL` on the meta
device), so it stays true when the package changes. A wrong answer gets a hint that says what looks wrong,
never the answer. Each notebook ends with two or three of them; a placeholder answer (None, or a function
that still raises NotImplementedError) gets "not yet", never an exception.

    from qwenlite import exercises
    print(exercises.describe("pad_tokens_1920x1080"))
    exercises.check("pad_tokens_1920x1080", 1234)   # prints "correct" or a hint; returns True / False
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .viz import data_dir

DATA = data_dir()  # the repository's data/ folder (photo, sample video, configs)


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
    """The question, wrapped to 100 columns for a notebook's output."""
    return textwrap.fill(_get(name).text, 100)


def check(name: str, answer: Any) -> bool:
    """Print "correct", or what is wrong with the answer; return whether it is right.

    A notebook's placeholder (None, or a function that still raises NotImplementedError) is "not yet" too:
    check never raises on an answer, only on an unknown exercise name.
    """
    exercise = _get(name)
    hint = "no answer given: replace None with your answer" if answer is None else exercise.grade(answer)
    print("correct" if hint is None else f"not yet: {hint}")
    return hint is None


def _get(name: str) -> Exercise:
    if name not in EXERCISES:
        raise ValueError(f"unknown exercise {name!r}: the exercises are {sorted(EXERCISES)}")
    return EXERCISES[name]


# ---------------------------------------------------------------- calling a learner's function


class _NotYet(Exception):
    """The learner's function could not be graded; the message is the hint."""


def _call(fn: Any, case: str, *args: Any) -> Any:
    """fn(*args), or _NotYet with a hint: not a function, not written yet (a stub), raised, or returned None."""
    if not callable(fn):
        raise _NotYet(f"expected your function itself (a callable), got {fn!r}")
    try:
        out = fn(*args)
    except NotImplementedError:
        raise _NotYet("your function is still a stub: replace `raise NotImplementedError` with your code") from None
    except Exception as err:  # a learner's bug: report it as a hint
        raise _NotYet(f"{case} your function raised {type(err).__name__}: {err}") from None
    if out is None or out is Ellipsis:
        raise _NotYet(f"your function returned {out!r}: is it written yet (a body of `...` returns None)?")
    return out


def _graded_function(grade: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    """A grader of a function answer, with _NotYet turned into its hint."""

    def run(fn: Any) -> str | None:
        try:
            return grade(fn)
        except _NotYet as not_yet:
            return str(not_yet)

    return run


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
@_graded_function
def _unpatchify(fn: Any) -> str | None:
    from .preprocessing import patchify

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
@_graded_function
def _greedy(fn: Any) -> str | None:
    from .model import penalise_repeats

    for case, (logits, sequence, penalty) in _penalty_cases().items():
        expected = penalise_repeats(logits, sequence, penalty).argmax(-1)
        given = logits.clone()
        out = _call(fn, f"on the case '{case}'", given, sequence.clone(), penalty)
        if not torch.equal(given, logits):
            return "your function changed the logits tensor in place: work on a copy (the caller may reuse it)"
        if not isinstance(out, torch.Tensor):
            return f"expected a ({logits.shape[0]},) tensor of token ids, got a {type(out).__name__}"
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


# ---------------------------------------------------------------- hints for several numbers


def _whole_numbers(answer: Any, count: int, what: str) -> list[int] | str:
    """The answer as a list of `count` ints (a list, a tuple or a 1-D tensor will do), or a hint why it is not."""
    if isinstance(answer, torch.Tensor):
        if answer.ndim != 1:
            return f"expected {count} numbers ({what}) in a list, got a tensor of shape {tuple(answer.shape)}"
        answer = answer.tolist()
    if not isinstance(answer, (list, tuple)):
        return f"expected {count} numbers ({what}) in a list or tuple, got {type(answer).__name__}"
    if len(answer) != count:
        return f"expected {count} numbers ({what}), got {len(answer)}"
    values = []
    for value in answer:
        value = _whole_number(value, what)
        if isinstance(value, str):
            return value
        values.append(value)
    return values


def _sizes(model_size: str) -> Any:
    """The QwenLiteConfig of the real 3B or 7B, from data/configs/ (the hub's config.json files)."""
    from .config import QwenLiteConfig

    return QwenLiteConfig.from_pretrained(DATA / "configs" / f"qwen2_5_vl_{model_size}_instruct.config.json")


def _parameter_counts(model_size: str) -> dict[str, int]:
    """Parameters of the real model's parts, counted on the meta device (shapes only, no memory).

    A tied lm_head is the embedding matrix itself, so it is counted once, with the language model.
    """
    from .model import QwenLiteVL

    with torch.device("meta"):
        model = QwenLiteVL(_sizes(model_size))
    vision = {id(p) for p in model.visual.parameters()}
    return {
        "vision": sum(p.numel() for p in model.visual.parameters()),
        "merger": sum(p.numel() for p in model.visual.merger.parameters()),
        "language": sum(p.numel() for p in model.parameters() if id(p) not in vision),
        "all": sum(p.numel() for p in model.parameters()),
    }


# ---------------------------------------------------------------- 00 tour: where the parameters live


@exercise(
    "vision_params_3b",
    """How many parameters does the vision tower of Qwen2.5-VL-3B hold, the patch merger included? Read the
    sizes from data/configs/qwen2_5_vl_3b_instruct.config.json (qwenlite.QwenLiteConfig.from_pretrained), then
    count: build qwenlite.QwenLiteVL(config) inside `with torch.device("meta"):` (shapes, no memory) and add up
    the numel() of model.visual's parameters, or work it out by hand from the widths.""",
)
def _vision_params(answer: Any) -> str | None:
    counts = _parameter_counts("3b")
    value = _whole_number(answer, "parameters")
    if isinstance(value, int):
        if value == counts["vision"] - counts["merger"]:
            return "that is the tower without its merger (ln_q and the two-layer MLP): count the merger too."
        if value == _parameter_counts("7b")["vision"]:
            return "that is the 7B's tower: its merger maps to the 7B's wider text hidden size."
        if value == counts["all"]:
            return "that is the whole model: count only model.visual."
    return _count_hint(
        answer,
        counts["vision"],
        "parameters",
        {},
        "32 blocks (two RMSNorms, qkv and proj with biases, a SwiGLU MLP with biases), the patch embedding "
        "(no bias) and the merger (RMSNorm, Linear 4D -> 4D, Linear 4D -> text hidden, both with biases).",
    )


@exercise(
    "language_model_params_3b",
    """How many parameters of Qwen2.5-VL-3B are outside the vision tower: the embedding table, the 36 decoder
    layers, the final norm and lm_head? In the 3B lm_head is tied to the embedding table (one matrix, counted
    once). Count as in vision_params_3b (qwenlite.QwenLiteVL on the meta device: model.parameters() yields a
    tied matrix once). Divide by the whole model's count to see the decoder's share.""",
)
def _language_params(answer: Any) -> str | None:
    counts = _parameter_counts("3b")
    text = _sizes("3b").text_config
    table = text.vocab_size * text.hidden_size
    value = _whole_number(answer, "parameters")
    if isinstance(value, int):
        if value == counts["language"] + table:
            return "lm_head is counted twice: in the 3B it is the embedding table itself (tie_word_embeddings)."
        if value == counts["language"] - table:
            return "the embedding table (vocab x hidden) is missing: it is a large share of a 3B model."
        if value == counts["all"]:
            return "that is the whole model: leave out the vision tower (model.visual)."
    return _count_hint(
        answer,
        counts["language"],
        "parameters",
        {},
        "embedding table + 36 x (two RMSNorms, q/k/v with biases and o without, grouped-query k/v of 2 heads, "
        "a SwiGLU MLP without biases) + the final norm.",
    )


# ---------------------------------------------------------------- 02 patch embedding


@exercise(
    "patch_embed_matmul",
    """Write patch_embed(pixel_values, weight) -> embeddings with one matrix product: pixel_values is (N, 1176),
    rows as the processor writes them (each row a flattened (C, Tp, P, P) = (3, 2, 14, 14) patch), weight the
    Conv3d's (D, 3, 2, 14, 14) kernel, embeddings (N, D). No convolution: reshape the weight and multiply.
    Pass the function itself: check("patch_embed_matmul", patch_embed) compares it with qwenlite's PatchEmbed
    (a Conv3d with kernel = stride = (2, 14, 14)) on random weights.""",
)
@_graded_function
def _patch_embed_matmul(fn: Any) -> str | None:
    from dataclasses import replace

    from .config import VisionConfig
    from .reference import tolerance
    from .vision import PatchEmbed

    generator = torch.Generator().manual_seed(0)
    for n, width in ((4, 16), (12, 40)):
        module = PatchEmbed(replace(VisionConfig(), hidden_size=width))
        weight = torch.randn(module.proj.weight.shape, generator=generator)
        module.proj.weight.data.copy_(weight)
        pixel_values = torch.randn(n, weight[0].numel(), generator=generator)
        with torch.no_grad():
            expected = module(pixel_values)
        out = _call(fn, f"on {n} patches and D = {width}", pixel_values.clone(), weight.clone())
        if not isinstance(out, torch.Tensor):
            return f"expected a tensor, got a {type(out).__name__}"
        if tuple(out.shape) != tuple(expected.shape):
            return f"wrong shape: {n} patches and D = {width} gave {tuple(out.shape)}; expected (N, D)"
        if not out.is_floating_point() or (out.float() - expected).abs().max() > tolerance(expected):
            return (
                "the numbers differ from the Conv3d's: a row of pixel_values is (C, Tp, P, P) flattened, so the "
                "weight of one output must be flattened in that same order, and the product is rows @ weight^T."
            )
    return None


@exercise(
    "patch_embed_weights_3b",
    """How many weights does the patch embedding of Qwen2.5-VL-3B hold (model.visual.patch_embed)? Its Conv3d
    maps each 3-channel patch of 2 frames x 14 x 14 pixels to the vision width; read the sizes from
    data/configs/qwen2_5_vl_3b_instruct.config.json.""",
)
def _patch_embed_weights(answer: Any) -> str | None:
    from .vision import PatchEmbed

    vision = _sizes("3b").vision_config
    with torch.device("meta"):
        expected = sum(p.numel() for p in PatchEmbed(vision).parameters())
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
            1 / 6: "a patch is 3 channels x 2 frames x 14 x 14 pixels, not one 14 x 14 plane.",
            1 / 4: "one weight per pixel of a 14 x 14 patch (patch_size), not of the 7 x 7 you get by halving.",
        },
        "vision width x (3 channels x 2 frames x 14 x 14 pixels), and no bias.",
    )


# ---------------------------------------------------------------- 03 vision block


@exercise(
    "segments_video_3_12_28",
    """A video of grid (t, h, w) = (3, 12, 28) patches goes through the vision tower. Attention runs inside
    segments of the packed patches: in the full-attention blocks (7, 15, 23, 31) a segment is one temporal
    patch (a frame pair), in the other blocks one window of 112 x 112 pixels (8 x 8 patches, edge windows
    smaller). How many segments does each kind of block see? Answer (full, windowed), e.g. (1, 2).
    (qwenlite.vision.vision_layout gives the segments as cu_frames and cu_windows.)""",
)
def _segments(answer: Any) -> str | None:
    from .config import VisionConfig
    from .vision import vision_layout

    grid = (3, 12, 28)
    layout = vision_layout(torch.tensor([grid]), VisionConfig())
    expected = [len(layout.cu_frames) - 1, len(layout.cu_windows) - 1]
    value = _whole_numbers(answer, 2, "segments: full, windowed")
    if isinstance(value, str):
        return value
    full, windowed = value
    if value == expected:
        return None
    if value == expected[::-1]:
        return "the two are swapped: answer (full-attention segments, windowed segments)."
    hints = []
    if full != expected[0]:
        hints.append(
            "full attention: one segment per temporal patch (a frame pair attends to itself, never across time)"
            if full == 1
            else "full attention: each temporal patch is one segment"
        )
    if windowed != expected[1]:
        per_patch = expected[1] // grid[0]
        if windowed == per_patch:
            hints.append("windowed: every temporal patch is cut into its own windows")
        elif windowed < expected[1]:
            hints.append("windowed: too few; the partial windows on the bottom and right edges count too")
        else:
            hints.append("windowed: too many; a window is 8 x 8 patches (4 x 4 merged tokens)")
    return "; ".join(hints) + "."


@exercise(
    "rotary_ids_1_4_6",
    """Write down the 2-D rotary ids of an image of grid (t, h, w) = (1, 4, 6): a (24, 2) tensor of long with
    one (h, w) pair per patch, the patch's row and column in the patch grid, in the order the processor emits
    the patches (each 2 x 2 group of patches that becomes one token is consecutive, groups row by row).
    Answer the tensor (torch.tensor([[0, 0], [0, 1], ...])).""",
)
def _rotary_ids(answer: Any) -> str | None:
    from .config import VisionConfig
    from .vision import vision_rotary_ids

    expected = vision_rotary_ids(torch.tensor([[1, 4, 6]]), VisionConfig.spatial_merge_size)
    if not isinstance(answer, torch.Tensor):
        try:
            answer = torch.tensor(answer)
        except (TypeError, ValueError, RuntimeError):
            return f"expected a (24, 2) tensor of whole numbers, got {type(answer).__name__}"
    if tuple(answer.shape) != tuple(expected.shape):
        return f"expected shape (24, 2): one (h, w) pair per patch; got {tuple(answer.shape)}"
    if answer.is_floating_point() and not torch.equal(answer, answer.round()):
        return "ids are whole numbers (a patch's row and column)"
    answer = answer.long()
    if torch.equal(answer, expected):
        return None
    if torch.equal(answer, expected.flip(-1)):
        return "the columns are swapped: each pair is (h, w), the row first."
    as_rows = {tuple(r) for r in answer.tolist()}
    if as_rows == {tuple(r) for r in expected.tolist()} and len(as_rows) == len(expected):
        return (
            "the right pairs in the wrong order: the processor does not go row by row over patches; each 2 x 2 "
            "group of patches (one merged token) comes as 4 consecutive rows."
        )
    if torch.equal(answer, expected // VisionConfig.spatial_merge_size):
        return "the ids count patches (4 rows, 6 columns), not merged tokens."
    return "some pairs are not the (row, column) of any patch of a 4 x 6 grid, or appear twice."


# ---------------------------------------------------------------- 04 merger


@exercise(
    "merger_output_shape_1_30_44",
    """An image of grid (t, h, w) = (1, 30, 44) patches leaves the vision tower of Qwen2.5-VL-3B through the
    patch merger. What is the shape of the merger's output? Answer (rows, width). Read the widths from
    data/configs/qwen2_5_vl_3b_instruct.config.json.""",
)
def _merger_shape(answer: Any) -> str | None:
    from .vision import PatchMerger

    vision = _sizes("3b").vision_config
    with torch.device("meta"):
        merger = PatchMerger(vision)
        expected = list(merger(torch.empty(1 * 30 * 44, vision.hidden_size)).shape)
    value = _whole_numbers(answer, 2, "rows, width")
    if isinstance(value, str):
        return value
    rows, width = value
    if value == expected:
        return None
    hints = []
    if rows != expected[0]:
        hints.append(
            "rows: did you count patches? The merger joins each 2 x 2 group of patches into one row"
            if rows == 4 * expected[0]
            else "rows: one per merged token (t x h x w / 4)"
        )
    if width != expected[1]:
        hints.append(
            "width: that is the vision width; the merger maps to the text hidden size (out_hidden_size)"
            if width == vision.hidden_size
            else "width: that is the MLP's inside; its last Linear maps to the text hidden size"
            if width == vision.hidden_size * 4
            else "width: the merger's output feeds the decoder, so it is the text hidden size"
        )
    return "; ".join(hints) + "."


@exercise(
    "merger_input_width_3b",
    """What is the input width of the merger MLP's first Linear in Qwen2.5-VL-3B (model.visual.merger.mlp[0])?
    Read the sizes from data/configs/qwen2_5_vl_3b_instruct.config.json; think of what one row is after the
    merger's view.""",
)
def _merger_width(answer: Any) -> str | None:
    from .vision import PatchMerger

    vision = _sizes("3b").vision_config
    with torch.device("meta"):
        expected = PatchMerger(vision).mlp[0].in_features
    value = _whole_number(answer, "features")
    if isinstance(value, int):
        if value == vision.out_hidden_size:
            return "that is the merger's output width (the text hidden size); the input comes from the tower."
        if value == 4 * vision.out_hidden_size:
            return "4 x the text hidden size: the four patches side by side carry the vision width, not the text's."
    return _count_hint(
        answer,
        expected,
        "features",
        {1 / 4: "one row of the MLP's input holds the 2 x 2 = 4 patches of one token side by side."},
        "spatial_merge_size**2 patches side by side, each of the vision width.",
    )


# ---------------------------------------------------------------- 05 fusion


@exercise(
    "fuse_masked_scatter",
    """Write fuse(inputs_embeds, input_ids, features, token_id) -> embeddings: inputs_embeds (B, L, D), input_ids
    (B, L), features (F, D) with F the number of pads (input_ids == token_id). Return a new tensor in which the
    pad positions, in reading order (row by row through the batch, left to right), hold the feature rows, and
    every other position its embedding; use masked_scatter. Leave inputs_embeds unchanged. Pass the function
    itself: check("fuse_masked_scatter", fuse) compares it with qwenlite.fusion.fuse on random inputs.""",
)
@_graded_function
def _fuse(fn: Any) -> str | None:
    from .fusion import fuse

    for case, (embeds, ids, features, token_id) in _fusion_cases().items():
        expected = fuse(embeds, ids, features, token_id, "image")
        given = embeds.clone()
        out = _call(fn, f"on the case '{case}'", given, ids.clone(), features.clone(), token_id)
        if not torch.equal(given, embeds):
            return "your function changed inputs_embeds in place: use masked_scatter (not masked_scatter_)"
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(embeds.shape):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            return f"expected the embeddings' shape (B, L, D) = {tuple(embeds.shape)}, got {shape}"
        if not torch.equal(out, expected):
            return FUSION_HINTS[case]
    return None


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


# ---------------------------------------------------------------- 06 positions


@exercise(
    "video_t_ids_1_5_fps",
    """A video sampled at 1.5 frames per second has grid (t, h, w) = (5, 2, 2): five temporal patches of two
    frames, one merged token each. The prompt is just its 5 <|video_pad|> tokens. What are their t position
    ids (get_rope_index with second_per_grid_ts = temporal_patch_size / fps)? Answer a list of 5 ids.
    The rule: t = floor(patch index x second_per_grid_t x tokens_per_second), tokens_per_second = 2.""",
)
def _video_t_ids(answer: Any) -> str | None:
    from .config import QwenLiteConfig, TextConfig, VisionConfig
    from .rope_index import get_rope_index

    config = QwenLiteConfig(TextConfig(), VisionConfig())
    seconds = config.vision_config.temporal_patch_size / 1.5
    ids = torch.full((1, 5), config.video_token_id)
    positions, _ = get_rope_index(
        ids, video_grid_thw=torch.tensor([[5, 2, 2]]), second_per_grid_ts=[seconds], config=config
    )
    expected = positions[0, 0].tolist()
    value = _whole_numbers(answer, 5, "t ids") if not _has_fraction(answer) else "ids are whole numbers: t is floored"
    if isinstance(value, str):
        return value
    if value == expected:
        return None
    steps = {value[k + 1] - value[k] for k in range(4)}
    if steps == {1}:
        return "t does not count temporal patches: it counts time, tokens_per_second = 2 ids per second of video."
    if steps == {2}:
        return (
            "that is 1 s per temporal patch (the default when no second_per_grid_ts is given); at 1.5 fps a "
            "patch of 2 frames lasts longer."
        )
    if value == [int(torch.tensor(k * 2 * seconds).round()) for k in range(5)]:
        return "rounded to the nearest id; the rule floors (truncates) the product."
    return "t = floor(k x second_per_grid_t x 2) for patch k, with second_per_grid_t = 2 frames / 1.5 fps."


def _has_fraction(answer: Any) -> bool:
    values = answer.tolist() if isinstance(answer, torch.Tensor) and answer.ndim == 1 else answer
    return isinstance(values, (list, tuple)) and any(isinstance(v, float) and v != int(v) for v in values)


@exercise(
    "decode_position_3rd_token",
    """The prompt of rope_deltas_layout (3 text tokens, an image of grid (1, 4, 6), 5 text tokens: 14 tokens)
    is prefilled, then the model generates tokens one at a time. What M-RoPE position (the same on t, h and w)
    does the 3rd generated token get? (qwenlite.rope_index.decode_position_ids applies the rule: text position
    + rope_deltas.)""",
)
def _decode_position(answer: Any) -> str | None:
    from .config import QwenLiteConfig, TextConfig, VisionConfig
    from .rope_index import decode_position_ids, get_rope_index

    config = QwenLiteConfig(TextConfig(), VisionConfig())
    ids = torch.tensor([[100, 101, 102] + [config.image_token_id] * 6 + [103, 104, 105, 106, 107]])
    _, deltas = get_rope_index(ids, image_grid_thw=torch.tensor([[1, 4, 6]]), config=config)
    length = ids.shape[1]
    expected = int(decode_position_ids(deltas, past=length + 2, new=1)[0, 0, 0])
    value = _whole_number(answer, "positions")
    if isinstance(value, str):
        return value
    if value == expected:
        return None
    if value == length + 2:
        return "that is the token's index in the sequence; decoding adds rope_deltas to it."
    if value == length + 2 - int(deltas):
        return "rope_deltas has the wrong sign: the image takes fewer positions than tokens, so positions fall behind."
    if abs(value - expected) == 1:
        return "off by one: the 1st generated token sits right after the prompt's largest position (max + 1)."
    return "find the prompt's largest position (the image's ids form a small grid), then count on from it."


# ---------------------------------------------------------------- 08 video end to end


@exercise(
    "marker_patch_sample_video_fps3",
    """data/sample_video.mp4 (32 frames at 8 fps) shows a red square in its top-left corner during seconds
    [2, 3) (frames 16..23, see data/sample_video.json). Sample it at 3 frames per second
    (qwenlite.video_io.load_video(path, fps=3.0): Video.indices, Video.timestamps). Which temporal patch (0 for
    the first pair of sampled frames) is the first to show the marker, and what is its t id offset from the
    video's first t id? Answer (patch, t offset).""",
)
def _marker_patch(answer: Any) -> str | None:
    from .config import VisionConfig
    from .preprocessing import preprocess_video
    from .rope_index import vision_position_ids
    from .video_io import load_video

    start, _ = _marker_seconds()
    video = load_video(DATA / "sample_video.mp4", fps=3.0)
    frame = next(k for k, time in enumerate(video.timestamps) if time >= start)  # first sampled frame with it
    vision = VisionConfig()
    patch = frame // vision.temporal_patch_size
    patches = preprocess_video(video)
    interval = vision.tokens_per_second * patches.second_per_grid_t
    t_ids = vision_position_ids(0, patches.grid_thw, vision.spatial_merge_size, interval)[0].unique_consecutive()
    expected = [patch, int(t_ids[patch])]
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
        if value[1] == value[0]:
            hints.append("t offset: t counts time, 2 ids per second of video, not one per temporal patch")
        elif value[1] == 2 * value[0]:
            hints.append("t offset: that is 1 s per temporal patch; at 3 fps a patch of 2 frames lasts 2/3 s")
        else:
            hints.append("t offset: floor(patch x second_per_grid_t x 2), second_per_grid_t = 2 frames / 3 fps")
    return "; ".join(hints) + "."


def _marker_seconds() -> tuple[float, float]:
    import json

    return tuple(json.loads((DATA / "sample_video.json").read_text())["marker_seconds"])


@exercise(
    "windows_sample_video_fps4",
    _SAMPLE_VIDEO_TEXT
    + """ Sample it at 4 frames per second instead (load_video(path, fps=4.0)): how many windows
    (segments of the windowed blocks) does the vision tower cut it into? (qwenlite.vision.get_window_index on
    its grid_thw applies the rule.)""",
)
def _sample_video_windows(answer: Any) -> str | None:
    from .config import VisionConfig
    from .preprocessing import preprocess_video
    from .video_io import load_video
    from .vision import get_window_index

    vision = VisionConfig()
    grid = preprocess_video(load_video(DATA / "sample_video.mp4", fps=4.0)).grid_thw
    _, cu = get_window_index(grid[None], vision.window_size, vision.patch_size, vision.spatial_merge_size)
    expected = len(cu) - 1
    side = vision.window_size // vision.patch_size  # patches per window side
    value = _whole_number(answer, "windows")
    if isinstance(value, int) and value != expected:
        t, h, w = grid.tolist()
        if value == t * (h // side) * (w // side):
            return "too few: the partial windows on the bottom and right edges count too."
        if value * t == expected:
            return "that is one temporal patch's windows: each temporal patch is cut into its own."
    return _count_hint(
        answer,
        expected,
        "windows",
        {
            2: "did you cut windows in every sampled frame? A temporal patch (2 frames) is cut once.",
        },
        "resize the frames first (336x252 is below the video minimum of pixels per frame), then windows of "
        "4 x 4 merged tokens per temporal patch, partial ones included.",
    )


# ---------------------------------------------------------------- 09 training


@exercise(
    "labelled_tokens_point_answer",
    """The twin answers "Point to the shape." in Qwen2.5-VL's format, e.g. {"point_2d": [9, 8]} for a shape
    centred at x = 9, y = 8 px. In that training row, how many tokens carry a label (are not -100)? Use the
    twin's tokenizer (processor.tokenizer) and the rule of qwenlite.train.answer_labels.""",
)
def _labelled_tokens(answer: Any) -> str | None:
    expected = len(_twin_tokenizer()('{"point_2d": [9, 8]}<|im_end|>', add_special_tokens=False)["input_ids"])
    value = _whole_number(answer, "tokens")
    if isinstance(value, int) and value == expected - 1:
        return "one short: the <|im_end|> that closes the answer is labelled too (the model must learn to stop)."
    if isinstance(value, int) and value == expected + 1:
        return "one too many: the newline after <|im_end|> belongs to the template, not to the answer."
    return _count_hint(
        answer,
        expected,
        "tokens",
        {},
        "the Qwen2 tokenizer writes every digit as its own token; count the JSON's pieces with "
        "processor.tokenizer.tokenize(...).",
    )


def _twin_tokenizer():
    from . import checkpoint
    from .processor import Processor

    return Processor.from_pretrained(checkpoint.tiny_twin()).tokenizer


@exercise(
    "adamw_bytes_3b_language_model",
    """Full fine-tuning of Qwen2.5-VL-3B with AdamW in float32, the vision tower (model.visual, merger
    included) frozen: how many bytes do the trainable parameters need for their weights, their gradients and
    AdamW's two moments together? (4 bytes per number; the tied lm_head is the embedding, counted once.)""",
)
def _adamw_bytes(answer: Any) -> str | None:
    counts = _parameter_counts("3b")
    trainable = counts["all"] - counts["vision"]
    return _count_hint(
        answer,
        16 * trainable,
        "bytes",
        {
            0.75: "AdamW keeps two numbers per parameter (the mean and the mean square of its gradient).",
            0.5: "count the weights, the gradients and both of AdamW's moments.",
            counts["all"] / trainable: "the vision tower is frozen: it needs no gradient and no AdamW state.",
        },
        "4 numbers per trainable parameter (weight, gradient, first and second moment), 4 bytes each; "
        "count the parameters on the meta device.",
    )
