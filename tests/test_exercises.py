"""qwenlite.exercises: each correct answer, worked out here with transformers or qwen-vl-utils, passes; each
plausible wrong answer fails with a hint that does not contain the correct value."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Qwen2_5_VLConfig, RepetitionPenaltyLogitsProcessor
from transformers.vision_utils import get_vision_window_index

from qwenlite import exercises

DATA = Path(__file__).resolve().parents[1] / "data"


def _fails_without_giving_away(capsys, name: str, answer, correct: int | list[int] | None, hint: str) -> None:
    """check() must refuse the answer and print a hint that holds `hint` and not the correct value
    (correct None: the exercise asks for a function, whose right outputs the hint must not list either).
    An answer of several numbers: none of them may appear in the hint as a number, unless the question
    itself has that number (a hint may repeat the question's data)."""
    assert exercises.check(name, answer) is False
    printed = capsys.readouterr().out
    assert printed.startswith("not yet: ") and hint in printed, printed
    if isinstance(correct, int):
        assert str(correct) not in printed, printed
    elif correct is not None:
        question = exercises.describe(name)
        for number in correct:
            word = rf"(?<![\d.]){number}(?![\d.])"
            assert not re.search(word, printed) or re.search(word, question), (number, printed)


def _passes(capsys, name: str, answer) -> None:
    assert exercises.check(name, answer) is True
    assert capsys.readouterr().out == "correct\n"


def test_every_exercise_has_a_text_and_is_tested_here():
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    for name in exercises.EXERCISES:
        assert len(exercises.describe(name)) > 80, name
        assert name in tested, f"exercise {name} has no test_{name} here"


def test_unknown_exercises_are_named():
    with pytest.raises(ValueError, match=r"unknown exercise 'pad_tokens': the exercises are \["):
        exercises.check("pad_tokens", 1)
    with pytest.raises(ValueError, match="unknown exercise 'nope'"):
        exercises.describe("nope")


def test_pad_tokens_1920x1080(capsys, hf_processor):
    photo = np.zeros((1080, 1920, 3), np.uint8)  # height x width
    grid = hf_processor.image_processor(images=[photo], return_tensors="pt")["image_grid_thw"][0]
    correct = int(grid.prod()) // 4
    _passes(capsys, "pad_tokens_1920x1080", correct)
    _passes(capsys, "pad_tokens_1920x1080", torch.tensor(correct))
    name = "pad_tokens_1920x1080"
    _fails_without_giving_away(capsys, name, int(grid.prod()), correct, "patches instead of merged tokens")
    _fails_without_giving_away(capsys, name, 1920 * 1080 // 28**2, correct, "smart_resize rounds")  # not resized
    _fails_without_giving_away(capsys, name, 1920 * 1080 / 28**2, correct, "whole number")  # a fraction of a token


def test_window_count_1_30_44(capsys):
    _, cu = get_vision_window_index(torch.tensor([[1, 30, 44]]), spatial_merge_size=2, window_size=112, patch_size=14)
    correct = len(torch.unique_consecutive(cu)) - 1
    name = "window_count_1_30_44"
    _passes(capsys, name, correct)
    _fails_without_giving_away(capsys, name, (30 // 8) * (44 // 8), correct, "partial windows")  # whole windows only
    _fails_without_giving_away(capsys, name, -(-30 // 4) * -(-44 // 4), correct, "8 patches")  # 4-patch windows


def test_rope_deltas_layout(capsys, ref, config):
    ids = torch.tensor([[100, 101, 102] + [config.image_token_id] * 6 + [103, 104, 105, 106, 107]])
    types = (ids == config.image_token_id).long()
    _, deltas = ref.model.get_rope_index(ids, mm_token_type_ids=types, image_grid_thw=torch.tensor([[1, 4, 6]]))
    correct = int(deltas)
    name = "rope_deltas_layout"
    _passes(capsys, name, correct)
    _passes(capsys, name, deltas)
    _fails_without_giving_away(capsys, name, -correct, correct, "wrong sign")
    _fails_without_giving_away(capsys, name, 0, correct, "fewer positions than it has tokens")
    _fails_without_giving_away(capsys, name, correct - 15, correct, "one token per patch")  # a pad token per patch


def _learner_unpatchify(pixel_values: torch.Tensor, grid_thw) -> torch.Tensor:
    """A learner's answer, written from the processor's row order (patch 14, merge 2, temporal patch 2)."""
    t, h, w = grid_thw
    x = pixel_values.view(t, h // 2, w // 2, 2, 2, 3, 2, 14, 14)  # which patch, then (C, Tp, P, P)
    x = x.permute(0, 6, 5, 1, 3, 7, 2, 4, 8)  # (t, Tp, C, h/2, 2, P, w/2, 2, P)
    return x.reshape(t * 2, 3, h * 14, w * 14)


def test_unpatchify(capsys):
    name = "unpatchify"
    _passes(capsys, name, _learner_unpatchify)

    def swapped_blocks(pixel_values, grid_thw):  # the 2x2 block axes in the wrong order: only a square grid survives
        t, h, w = grid_thw
        x = pixel_values.view(t, h // 2, w // 2, 2, 2, 3, 2, 14, 14).permute(0, 6, 5, 2, 3, 7, 1, 4, 8)
        return x.reshape(t * 2, 3, h * 14, w * 14)

    _fails_without_giving_away(capsys, name, swapped_blocks, None, "wrong places")
    _fails_without_giving_away(capsys, name, lambda pv, g: pv.reshape(g[0], 3, g[1] * 14, g[2] * 14), None, "raised")
    _fails_without_giving_away(capsys, name, lambda pv, g: pv.reshape(-1), None, "wrong shape")
    _fails_without_giving_away(capsys, name, lambda pv, g: _learner_unpatchify(pv * 2, g), None, "values differ")


def test_kv_cache_bytes_7b_8k_bf16(capsys):
    text = Qwen2_5_VLConfig.from_pretrained(DATA / "configs" / "qwen2_5_vl_7b_instruct.config.json").text_config
    per_token = 2 * text.num_hidden_layers * text.num_key_value_heads * (text.hidden_size // text.num_attention_heads)
    correct = per_token * 8192 * 2  # keys and values of every layer, 2 bytes each
    name = "kv_cache_bytes_7b_8k_bf16"
    _passes(capsys, name, correct)
    all_heads = correct // text.num_key_value_heads * text.num_attention_heads
    _fails_without_giving_away(capsys, name, all_heads, correct, "key/value heads, not every query head")
    _fails_without_giving_away(capsys, name, correct * 2, correct, "float32")
    _fails_without_giving_away(capsys, name, correct // 2, correct, "both the keys and the values")


def _learner_next_token(logits: torch.Tensor, sequence: torch.Tensor, penalty: float) -> torch.Tensor:
    return RepetitionPenaltyLogitsProcessor(penalty)(sequence, logits.clone()).argmax(-1)


def test_greedy_with_repetition_penalty(capsys):
    name = "greedy_with_repetition_penalty"
    _passes(capsys, name, _learner_next_token)

    def divide_all(logits, sequence, penalty):  # divides negative logits too
        seen = logits.gather(1, sequence)
        return logits.scatter(1, sequence, seen / penalty).argmax(-1)

    def per_occurrence(logits, sequence, penalty):  # a token seen twice is penalised twice
        logits = logits.clone()
        for b, row in enumerate(sequence.tolist()):
            for token in row:
                value = logits[b, token]
                logits[b, token] = value / penalty if value > 0 else value * penalty
        return logits.argmax(-1)

    def always_lower(logits, sequence, penalty):  # right for penalty > 1, wrong below 1
        seen = logits.gather(1, sequence)
        return logits.scatter(1, sequence, torch.minimum(seen / penalty, seen * penalty)).argmax(-1)

    def shared_rows(logits, sequence, penalty):  # every row penalised by the tokens of all rows
        return _learner_next_token(logits, sequence.flatten()[None].expand(logits.shape[0], -1), penalty)

    def in_place(logits, sequence, penalty):  # right tokens, but the caller's logits are changed
        seen = logits.gather(1, sequence)
        return logits.scatter_(1, sequence, torch.where(seen < 0, seen * penalty, seen / penalty)).argmax(-1)

    for wrong, hint in [
        (lambda logits, sequence, penalty: logits.argmax(-1), "is the penalty applied at all"),
        (divide_all, "every logit is negative"),
        (per_occurrence, "penalised twice"),
        (always_lower, "penalty below 1"),
        (shared_rows, "its own sequence"),
        (in_place, "in place"),
        (lambda logits, sequence, penalty: _learner_next_token(logits, sequence, penalty)[:1], "one token id per row"),
    ]:
        _fails_without_giving_away(capsys, name, wrong, None, hint)


@pytest.fixture(scope="module")
def sample_video_grid() -> tuple[int, int]:
    """(temporal patches, video pad tokens) from qwen-vl-utils' own sampling and resizing at fps 2."""
    from qwenlite.reference import qwen_vl_utils_fetch_video

    frames, _, _ = qwen_vl_utils_fetch_video(DATA / "sample_video.mp4", fps=2.0)  # (T, C, H, W), resized
    t, _, h, w = frames.shape
    return t // 2, t // 2 * (h // 28) * (w // 28)


def test_temporal_patches_sample_video(capsys, sample_video_grid):
    correct, _ = sample_video_grid
    name = "temporal_patches_sample_video"
    _passes(capsys, name, correct)
    _fails_without_giving_away(capsys, name, 2 * correct, correct, "sampled frames")
    _fails_without_giving_away(capsys, name, 32, correct, "the file's frames")


def test_video_pad_tokens_sample_video(capsys, sample_video_grid):
    _, correct = sample_video_grid
    name = "video_pad_tokens_sample_video"
    _passes(capsys, name, correct)
    _fails_without_giving_away(capsys, name, 4 * correct, correct, "patches instead of merged tokens")
    _fails_without_giving_away(capsys, name, 2 * correct, correct, "instead of temporal patches")
    _fails_without_giving_away(capsys, name, 4 * (336 // 28) * (252 // 28), correct, "resized first")  # not resized


# ---------------------------------------------------------------- placeholders (what each notebook's cells pass)


def _stub(*args):
    raise NotImplementedError


def _unwritten(*args):
    """A body of ... : returns None."""
    ...


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(exercises.EXERCISES))
def test_placeholders_are_not_yet_and_do_not_raise(capsys, name):
    """A notebook's placeholder answer (None, or a stub function) prints a hint and returns False, never raises."""
    _fails_without_giving_away(capsys, name, None, None, "no answer given")
    if "Pass the function itself" in exercises.describe(name):
        _fails_without_giving_away(capsys, name, _stub, None, "still a stub")
        _fails_without_giving_away(capsys, name, _unwritten, None, "returned None")
        _fails_without_giving_away(capsys, name, 3, None, "expected your function itself")
    else:
        assert exercises.check(name, _stub) is False  # a function where a value is asked: a hint, no exception
        assert capsys.readouterr().out.startswith("not yet: ")


# ---------------------------------------------------------------- 00 tour: parameter counts


@pytest.fixture(scope="module")
def hf_counts() -> dict[str, dict[str, int]]:
    """Parameter counts of the real 3B and 7B from transformers' own model, built on the meta device."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    counts = {}
    for size in ("3b", "7b"):
        config = Qwen2_5_VLConfig.from_pretrained(DATA / "configs" / f"qwen2_5_vl_{size}_instruct.config.json")
        with torch.device("meta"):
            model = Qwen2_5_VLForConditionalGeneration(config)
        visual = model.model.visual
        counts[size] = {
            "vision": sum(p.numel() for p in visual.parameters()),
            "merger": sum(p.numel() for p in visual.merger.parameters()),
            "all": sum(p.numel() for p in model.parameters()),  # a tied lm_head is yielded once
            "table": config.text_config.vocab_size * config.text_config.hidden_size,
        }
    return counts


@pytest.mark.slow
def test_vision_params_3b(capsys, hf_counts):
    counts = hf_counts["3b"]
    correct = counts["vision"]
    name = "vision_params_3b"
    _passes(capsys, name, correct)
    _fails_without_giving_away(capsys, name, correct - counts["merger"], correct, "without its merger")
    _fails_without_giving_away(capsys, name, hf_counts["7b"]["vision"], correct, "the 7B's tower")
    _fails_without_giving_away(capsys, name, counts["all"], correct, "the whole model")
    _fails_without_giving_away(capsys, name, correct - 32 * 1280, correct, "close, but not equal")  # one bias missed


@pytest.mark.slow
def test_language_model_params_3b(capsys, hf_counts):
    counts = hf_counts["3b"]
    correct = counts["all"] - counts["vision"]
    name = "language_model_params_3b"
    _passes(capsys, name, correct)
    _fails_without_giving_away(capsys, name, correct + counts["table"], correct, "counted twice")  # untied lm_head
    _fails_without_giving_away(capsys, name, correct - counts["table"], correct, "embedding table")
    _fails_without_giving_away(capsys, name, counts["all"], correct, "the whole model")


# ---------------------------------------------------------------- 02 patch embedding


def _learner_patch_embed(pixel_values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return pixel_values @ weight.reshape(weight.shape[0], -1).T  # (N, 1176) @ (1176, D)


def test_patch_embed_matmul(capsys):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionPatchEmbed

    def by_transformers(pixel_values, weight):  # transformers' own Conv3d module, given the weight
        module = Qwen2_5_VisionPatchEmbed(patch_size=14, temporal_patch_size=2, in_channels=3, embed_dim=len(weight))
        module.proj.weight.data.copy_(weight)
        with torch.no_grad():
            return module(pixel_values)

    name = "patch_embed_matmul"
    _passes(capsys, name, _learner_patch_embed)
    _passes(capsys, name, by_transformers)
    for wrong, hint in [
        (lambda pv, w: pv @ w.transpose(1, 2).reshape(len(w), -1).T, "differ from the Conv3d"),  # (Tp, C) order
        (lambda pv, w: pv @ w.reshape(-1, len(w)), "differ from the Conv3d"),  # reshape instead of transpose
        (lambda pv, w: pv @ w.reshape(len(w), -1), "raised"),  # no transpose: shapes do not match
        (lambda pv, w: _learner_patch_embed(pv, w).T, "wrong shape"),
        (lambda pv, w: _learner_patch_embed(pv, w) * (1 + 1e-3), "differ from the Conv3d"),  # mutation: 0.1% off
    ]:
        _fails_without_giving_away(capsys, name, wrong, None, hint)


def test_patch_embed_weights_3b(capsys):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionPatchEmbed

    vision = Qwen2_5_VLConfig.from_pretrained(DATA / "configs" / "qwen2_5_vl_3b_instruct.config.json").vision_config
    with torch.device("meta"):
        module = Qwen2_5_VisionPatchEmbed(
            vision.patch_size, vision.temporal_patch_size, vision.in_channels, vision.hidden_size
        )
    correct = sum(p.numel() for p in module.parameters())
    name = "patch_embed_weights_3b"
    _passes(capsys, name, correct)
    _fails_without_giving_away(capsys, name, correct // 2, correct, "temporal kernel")
    _fails_without_giving_away(capsys, name, correct // 3, correct, "channels")
    _fails_without_giving_away(capsys, name, correct + vision.hidden_size, correct, "no bias")


# ---------------------------------------------------------------- 03 vision block


def test_segments_video_3_12_28(capsys):
    from transformers.vision_utils import get_vision_cu_seqlens

    grid = torch.tensor([[3, 12, 28]])
    full = len(get_vision_cu_seqlens(grid)) - 1
    _, cu = get_vision_window_index(grid, spatial_merge_size=2, window_size=112, patch_size=14)
    windowed = len(torch.unique_consecutive(cu)) - 1
    correct = [full, windowed]
    name = "segments_video_3_12_28"
    _passes(capsys, name, tuple(correct))
    _passes(capsys, name, torch.tensor(correct))
    _fails_without_giving_away(capsys, name, (windowed, full), correct, "swapped")
    _fails_without_giving_away(capsys, name, (1, windowed), correct, "never across time")
    _fails_without_giving_away(capsys, name, (full, windowed // 3), correct, "its own windows")
    _fails_without_giving_away(capsys, name, (full, 3 * (6 // 4) * (14 // 4)), correct, "partial windows")
    _fails_without_giving_away(capsys, name, (full, 3 * 12 * 28 // 16), correct, "too many")  # 4x4-patch windows
    _fails_without_giving_away(capsys, name, windowed, correct, "in a list or tuple")


def test_rotary_ids_1_4_6(capsys):
    from transformers.vision_utils import get_vision_position_ids

    correct = get_vision_position_ids(torch.tensor([[1, 4, 6]]), 2)
    name = "rotary_ids_1_4_6"
    _passes(capsys, name, correct)
    _passes(capsys, name, correct.tolist())
    hh, ww = torch.meshgrid(torch.arange(4), torch.arange(6), indexing="ij")
    row_major = torch.stack([hh.flatten(), ww.flatten()], -1)  # the plain raster order, no 2x2 groups
    _fails_without_giving_away(capsys, name, row_major, None, "wrong order")
    _fails_without_giving_away(capsys, name, correct.flip(-1), None, "swapped")
    _fails_without_giving_away(capsys, name, correct // 2, None, "count patches")  # merged-token coordinates
    _fails_without_giving_away(capsys, name, correct.view(4, 6, 2), None, "expected shape (24, 2)")
    _fails_without_giving_away(capsys, name, correct + 0.5, None, "whole numbers")


# ---------------------------------------------------------------- 04 merger


@pytest.fixture(scope="module")
def hf_merger_3b():
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLPatchMerger

    vision = Qwen2_5_VLConfig.from_pretrained(DATA / "configs" / "qwen2_5_vl_3b_instruct.config.json").vision_config
    with torch.device("meta"):
        return Qwen2_5_VLPatchMerger(vision.out_hidden_size, vision.hidden_size, vision.spatial_merge_size), vision


def test_merger_output_shape_1_30_44(capsys, hf_merger_3b):
    merger, vision = hf_merger_3b
    correct = list(merger(torch.empty(30 * 44, vision.hidden_size, device="meta")).shape)
    rows, width = correct
    name = "merger_output_shape_1_30_44"
    _passes(capsys, name, tuple(correct))
    _passes(capsys, name, torch.Size(correct))
    _fails_without_giving_away(capsys, name, (4 * rows, width), correct, "did you count patches")
    _fails_without_giving_away(capsys, name, (rows, vision.hidden_size), correct, "that is the vision width")
    _fails_without_giving_away(capsys, name, (rows, 4 * vision.hidden_size), correct, "the MLP's inside")
    _fails_without_giving_away(capsys, name, rows, correct, "in a list or tuple")


def test_merger_input_width_3b(capsys, hf_merger_3b):
    merger, vision = hf_merger_3b
    correct = merger.mlp[0].in_features
    name = "merger_input_width_3b"
    _passes(capsys, name, correct)
    _fails_without_giving_away(capsys, name, vision.hidden_size, correct, "side by side")
    _fails_without_giving_away(capsys, name, vision.out_hidden_size, correct, "output width")
    _fails_without_giving_away(capsys, name, 4 * vision.out_hidden_size, correct, "not the text's")


# ---------------------------------------------------------------- 05 fusion


def _learner_fuse(inputs_embeds, input_ids, features, token_id):
    return inputs_embeds.masked_scatter((input_ids == token_id)[..., None], features)  # the mask broadcasts over D


def test_fuse_masked_scatter(capsys):
    def by_index(inputs_embeds, input_ids, features, token_id):  # boolean indexing also takes reading order
        out = inputs_embeds.clone()
        out[input_ids == token_id] = features
        return out

    def per_prompt(inputs_embeds, input_ids, features, token_id):  # every prompt starts from feature row 0
        rows = [
            e.masked_scatter((i == token_id)[:, None], features) for e, i in zip(inputs_embeds, input_ids, strict=True)
        ]
        return torch.stack(rows)

    def in_place(inputs_embeds, input_ids, features, token_id):
        return inputs_embeds.masked_scatter_((input_ids == token_id)[..., None], features)

    name = "fuse_masked_scatter"
    _passes(capsys, name, _learner_fuse)
    _passes(capsys, name, by_index)
    for wrong, hint in [
        (per_prompt, "reading order across the whole batch"),
        (in_place, "in place"),
        (lambda e, i, f, t: _learner_fuse(e, i, f.T.contiguous(), t), "each pad position takes one whole"),
        (lambda e, i, f, t: _learner_fuse(e, i, f, t)[0], "expected the embeddings' shape"),
        (lambda e, i, f, t: e.masked_scatter((i >= t)[..., None], f), "'other pads'"),  # all pad-like ids >= t
    ]:
        _fails_without_giving_away(capsys, name, wrong, None, hint)


# ---------------------------------------------------------------- 06 positions


def test_video_t_ids_1_5_fps(capsys, ref, config):
    ids = torch.full((1, 5), config.video_token_id)
    positions, _ = ref.model.get_rope_index(
        ids,
        mm_token_type_ids=torch.full_like(ids, 2),
        video_grid_thw=torch.tensor([[5, 2, 2]]),
        second_per_grid_ts=torch.tensor([2 / 1.5]),
    )
    correct = positions[0, 0].tolist()
    name = "video_t_ids_1_5_fps"
    _passes(capsys, name, correct)
    _passes(capsys, name, positions[0, 0])
    _fails_without_giving_away(capsys, name, [0, 1, 2, 3, 4], correct, "counts time")
    _fails_without_giving_away(capsys, name, [0, 2, 4, 6, 8], correct, "1 s per temporal patch")
    _fails_without_giving_away(capsys, name, [round(k * 2 * 2 / 1.5) for k in range(5)], correct, "rounded")
    _fails_without_giving_away(capsys, name, [k * 2 * 2 / 1.5 for k in range(5)], correct, "whole numbers")
    _fails_without_giving_away(capsys, name, correct[:4], correct, "expected 5 numbers")


class _CacheOfLength:
    """Stands in for a KV cache that holds `length` tokens: all transformers' position rule asks of it."""

    def __init__(self, length: int) -> None:
        self.length = length

    def get_seq_length(self) -> int:
        return self.length


def test_decode_position_3rd_token(capsys, ref, config):
    ids = torch.tensor([[100, 101, 102] + [config.image_token_id] * 6 + [103, 104, 105, 106, 107]])
    types = (ids == config.image_token_id).long()
    _, deltas = ref.model.get_rope_index(ids, mm_token_type_ids=types, image_grid_thw=torch.tensor([[1, 4, 6]]))
    saved, ref.model.rope_deltas = ref.model.rope_deltas, deltas
    try:  # transformers' decode step: the 3rd new token, with 14 + 2 tokens in the cache
        embeds = torch.zeros(1, 1, ref.config.text_config.hidden_size)
        position = ref.model.compute_3d_position_ids(
            None, None, None, inputs_embeds=embeds, attention_mask=None, cache=_CacheOfLength(ids.shape[1] + 2)
        )
    finally:
        ref.model.rope_deltas = saved
    assert position.shape == (3, 1, 1) and len(set(position.flatten().tolist())) == 1
    correct = int(position[0, 0, 0])
    name = "decode_position_3rd_token"
    _passes(capsys, name, correct)
    _fails_without_giving_away(capsys, name, ids.shape[1] + 2, correct, "index in the sequence")
    _fails_without_giving_away(capsys, name, ids.shape[1] + 2 - int(deltas), correct, "wrong sign")
    _fails_without_giving_away(capsys, name, correct - 1, correct, "off by one")
    _fails_without_giving_away(capsys, name, correct + 1, correct, "off by one")


# ---------------------------------------------------------------- 08 video end to end


def test_marker_patch_sample_video_fps3(capsys, ref):
    """The marker found in qwen-vl-utils' own frames (red pixels), its t offset from transformers' get_rope_index."""
    from qwenlite.reference import qwen_vl_utils_fetch_video

    frames, _, sample_fps = qwen_vl_utils_fetch_video(DATA / "sample_video.mp4", fps=3.0)  # (T, C, H, W), resized
    corner = frames[:, :, :4, :4].float().mean((2, 3))  # (T, C): the top-left corner's colour
    red = (corner[:, 0] > 200) & (corner[:, 1] < 60) & (corner[:, 2] < 60)
    first = int(red.nonzero()[0])
    patch = first // 2
    t, _, h, w = frames.shape
    grid = torch.tensor([[t // 2, h // 14, w // 14]])
    ids = torch.full((1, int(grid.prod()) // 4), ref.config.video_token_id)
    positions, _ = ref.model.get_rope_index(
        ids,
        mm_token_type_ids=torch.full_like(ids, 2),
        video_grid_thw=grid,
        second_per_grid_ts=torch.tensor([2 / sample_fps]),
    )
    t_ids = positions[0, 0].unique_consecutive()
    correct = [patch, int(t_ids[patch] - t_ids[0])]
    name = "marker_patch_sample_video_fps3"
    _passes(capsys, name, tuple(correct))
    _fails_without_giving_away(capsys, name, (first, correct[1]), correct, "sampled frame's index")
    _fails_without_giving_away(capsys, name, (17 // 2, correct[1]), correct, "not the file's 32 frames")
    _fails_without_giving_away(capsys, name, (patch, patch), correct, "not one per temporal patch")
    _fails_without_giving_away(capsys, name, (patch, 2 * patch), correct, "1 s per temporal patch")


def test_windows_sample_video_fps4(capsys):
    from qwenlite.reference import qwen_vl_utils_fetch_video

    frames, _, _ = qwen_vl_utils_fetch_video(DATA / "sample_video.mp4", fps=4.0)  # (T, C, H, W), resized
    t, _, h, w = frames.shape

    def windows(grid):
        _, cu = get_vision_window_index(torch.tensor([grid]), spatial_merge_size=2, window_size=112, patch_size=14)
        return len(torch.unique_consecutive(cu)) - 1

    correct = windows([t // 2, h // 14, w // 14])
    name = "windows_sample_video_fps4"
    _passes(capsys, name, correct)
    _fails_without_giving_away(capsys, name, 2 * correct, correct, "every sampled frame")
    _fails_without_giving_away(capsys, name, windows([1, h // 14, w // 14]), correct, "one temporal patch's")
    _fails_without_giving_away(capsys, name, t // 2 * (h // 112) * (w // 112), correct, "partial windows")
    _fails_without_giving_away(capsys, name, windows([t // 2, 252 // 14, 336 // 14]), correct, "resize the frames")


# ---------------------------------------------------------------- the notebooks' exercise cells


def _exercise_cells() -> dict[str, list[str]]:
    """Notebook name -> the sources of the code cells after its '## Exercises' heading (the notebook's end)."""
    import json

    found = {}
    for path in sorted((DATA.parent / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        heads = [i for i, c in enumerate(cells) if "".join(c["source"]).startswith("## Exercises")]
        assert len(heads) == 1 and cells[heads[0]]["cell_type"] == "markdown", f"{path.name}: one '## Exercises'"
        after = cells[heads[0] + 1 :]
        assert all(c["cell_type"] == "code" for c in after), f"{path.name}: only exercise cells after the heading"
        found[path.stem] = ["".join(c["source"]) for c in after]
    return found


def test_every_notebook_ends_with_two_or_three_exercises():
    cells = _exercise_cells()
    assert len(cells) == 10, sorted(cells)
    used = []
    for notebook, sources in cells.items():
        assert 2 <= len(sources) <= 3, f"{notebook} has {len(sources)} exercises"
        for source in sources:
            (name,) = set(re.findall(r'exercises\.check\("(\w+)"', source))
            assert f'print(exercises.describe("{name}"))' in source, (notebook, source)
            assert "from qwenlite import exercises" in source, (notebook, source)
            # the placeholder the learner replaces: None for a value, a stub for a function
            assert "answer = None" in source or "raise NotImplementedError" in source, (notebook, source)
            used.append(name)
    assert sorted(used) == sorted(exercises.EXERCISES), "each exercise appears in exactly one notebook"


def test_exercise_cells_run_and_say_not_yet(capsys):
    """Each cell as the notebook holds it prints the question and 'not yet', and raises nothing (nbmake passes)."""
    for notebook, sources in _exercise_cells().items():
        for source in sources:
            exec(compile(source, f"{notebook} exercise cell", "exec"), {})
            printed = capsys.readouterr().out
            assert "\nnot yet: " in printed and "correct\n" not in printed, (notebook, printed)


# ---------------------------------------------------------------- 09 training


@pytest.mark.slow
def test_labelled_tokens_point_answer(capsys, hf_processor):
    correct = len(hf_processor.tokenizer('{"point_2d": [9, 8]}<|im_end|>', add_special_tokens=False)["input_ids"])
    name = "labelled_tokens_point_answer"
    _passes(capsys, name, correct)
    _fails_without_giving_away(capsys, name, correct - 1, correct, "<|im_end|>")
    _fails_without_giving_away(capsys, name, correct + 1, correct, "the newline")
    _fails_without_giving_away(capsys, name, len('{"point_2d": [9, 8]}'), correct, "every digit")  # characters


def test_adamw_bytes_3b_language_model(capsys, hf_counts):
    counts = hf_counts["3b"]
    trainable = counts["all"] - counts["vision"]
    correct = 16 * trainable
    name = "adamw_bytes_3b_language_model"
    _passes(capsys, name, correct)
    _fails_without_giving_away(capsys, name, 12 * trainable, correct, "two numbers per parameter")
    _fails_without_giving_away(capsys, name, 8 * trainable, correct, "both of AdamW's moments")
    _fails_without_giving_away(capsys, name, 16 * counts["all"], correct, "vision tower is frozen")
