"""qwenlite_course/exercises/nb05_token_fusion.py: each correct answer, worked out here with transformers or
qwen-vl-utils, passes; each plausible wrong answer fails with a hint that does not contain the correct value."""

from __future__ import annotations

import torch
from helpers import DATA, fails_without_giving_away, passes


def _clip_tokens(fps: float) -> int:
    """<|video_pad|> tokens of the sample clip at `fps`, from qwen-vl-utils' own sampling and resizing."""
    from qwenlite_course.reference import qwen_vl_utils_fetch_video

    frames, _, _ = qwen_vl_utils_fetch_video(DATA / "sample_video.mp4", fps=fps)  # (T, C, H, W), resized
    t, _, h, w = frames.shape
    return t // 2 * (h // 28) * (w // 28)  # 2 frames per temporal patch, 2x2 patches of 14 px per token


def test_video_pad_tokens_sample_video_fps3(capsys):
    correct, at_2fps = _clip_tokens(3.0), _clip_tokens(2.0)
    name = "video_pad_tokens_sample_video_fps3"
    passes(capsys, name, correct)
    passes(capsys, name, torch.tensor(correct))
    fails_without_giving_away(capsys, name, 4 * correct, correct, "patches instead of merged tokens")
    fails_without_giving_away(capsys, name, 2 * correct, correct, "instead of temporal patches")
    fails_without_giving_away(capsys, name, 8 * correct, correct, "count temporal patches")
    fails_without_giving_away(capsys, name, at_2fps, correct, "at 2 frames per second")
    temporal_patches = round(4 * 3.0) // 2  # 12 frames in 4 s, 2 per temporal patch
    not_resized = temporal_patches * (252 // 28) * (336 // 28)  # the file's 252 x 336 px frames, not grown
    fails_without_giving_away(capsys, name, not_resized, correct, "resized first")


def _learner_fuse(inputs_embeds, input_ids, features, token_id):
    """E'[p_k] = F[k]: the pad positions of the flattened batch, in reading order, take the feature rows."""
    out = inputs_embeds.clone().flatten(0, 1)  # (B * L, D): the batch read as one list of rows
    positions = (input_ids.flatten() == token_id).nonzero().flatten()  # p_0 < p_1 < ...
    out[positions] = features
    return out.view_as(inputs_embeds)


def _with_masked_scatter(inputs_embeds, input_ids, features, token_id):
    return inputs_embeds.masked_scatter((input_ids == token_id)[..., None], features)  # the notebook's own line


def _by_ge(inputs_embeds, input_ids, features, token_id):
    """Mutation: every pad-like id >= token_id replaced (the <|video_pad|> too), in reading order."""
    out = inputs_embeds.clone()
    mask = input_ids >= token_id
    out[mask] = features.repeat(2, 1)[: int(mask.sum())]
    return out


def test_fuse_by_positions(capsys):
    def by_index(inputs_embeds, input_ids, features, token_id):  # boolean indexing also takes reading order
        out = inputs_embeds.clone()
        out[input_ids == token_id] = features
        return out

    def per_prompt(inputs_embeds, input_ids, features, token_id):  # every prompt starts from feature row 0
        rows = []
        for e, i in zip(inputs_embeds, input_ids, strict=True):
            row = e.clone()
            row[i == token_id] = features[: int((i == token_id).sum())]
            rows.append(row)
        return torch.stack(rows)

    def in_place(inputs_embeds, input_ids, features, token_id):
        inputs_embeds[input_ids == token_id] = features
        return inputs_embeds

    name = "fuse_by_positions"
    passes(capsys, name, _learner_fuse)
    passes(capsys, name, by_index)
    for wrong, hint in [
        (per_prompt, "reading order across the whole batch"),
        (in_place, "in place"),
        (lambda e, i, f, t: _learner_fuse(e, i, f.flip(0), t), "each pad position takes one whole"),  # last first
        (lambda e, i, f, t: _learner_fuse(e, i, f.T.contiguous(), t), "raised"),  # (D, F): does not fit
        (lambda e, i, f, t: _learner_fuse(e, i, f, t)[0], "expected the embeddings' shape"),
        (_by_ge, "other special tokens"),
        (_with_masked_scatter, "without masked_scatter"),  # the notebook's line is not the answer
        (lambda e, i, f, t: torch.masked_scatter(e, (i == t)[..., None], f), "without masked_scatter"),
    ]:
        fails_without_giving_away(capsys, name, wrong, None, hint)
