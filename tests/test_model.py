"""The whole model: module tree and parameter counts at full size (meta device), logits and generation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import hf_chat_inputs, random_image, random_video

from qwenlite import QwenLiteConfig, QwenLiteVL, weights
from qwenlite.decoder import KVCache
from qwenlite_course.reference import Row, check_table, reference_rope_index

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "configs"
FULL_SIZE = {  # meta-device counts with transformers 5.x (Qwen2_5_VLForConditionalGeneration on the meta device)
    "qwen2_5_vl_3b_instruct": 3_754_622_976,
    "qwen2_5_vl_7b_instruct": 8_292_166_656,
}


IMG, VID, VS, VE = 151655, 151656, 151652, 151653


def _meta_pair(name: str):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    file = CONFIGS / f"{name}.config.json"
    with torch.device("meta"):
        return QwenLiteVL(QwenLiteConfig.from_pretrained(file)), Qwen2_5_VLForConditionalGeneration(
            Qwen2_5_VLConfig.from_pretrained(file)
        )


@pytest.mark.parametrize("name", sorted(FULL_SIZE))
def test_full_size_tree_equals_transformers_without_weights(name):
    ours, theirs = _meta_pair(name)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) == FULL_SIZE[name]
    # the vision tower alone, against transformers' tower (a parameter moved between tower and decoder keeps the
    # total but breaks this split)
    assert sum(p.numel() for p in ours.visual.parameters()) == sum(p.numel() for p in theirs.model.visual.parameters())
    if name == "qwen2_5_vl_3b_instruct":
        assert sum(p.numel() for p in ours.visual.parameters()) == 668_684_288
    # the checkpoint keys and shapes qwenlite expects are exactly transformers' in hub layout
    theirs_keys = {weights.to_hub_key(k): v.shape for k, v in theirs.state_dict().items()}
    if theirs.config.tie_word_embeddings:
        theirs_keys.pop("lm_head.weight")
    assert ours.expected_keys() == theirs_keys


def test_tree_has_the_shapes_transformers_prints():
    ours, _ = _meta_pair("qwen2_5_vl_3b_instruct")
    assert tuple(ours.visual.patch_embed.proj.weight.shape) == (1280, 3, 2, 14, 14)
    assert ours.visual.patch_embed.proj.bias is None
    assert tuple(ours.visual.blocks[0].attn.qkv.weight.shape) == (3840, 1280)
    assert tuple(ours.visual.merger.mlp[0].weight.shape) == (5120, 5120)
    assert tuple(ours.visual.merger.mlp[2].weight.shape) == (2048, 5120)
    assert tuple(ours.model.layers[0].self_attn.k_proj.weight.shape) == (256, 2048)
    assert len(ours.visual.blocks) == 32 and len(ours.model.layers) == 36
    assert ours.lm_head.weight is ours.model.embed_tokens.weight  # 3B ties lm_head


@pytest.fixture(scope="module")
def image_video_inputs(hf_processor):
    content = [{"type": "image"}, {"type": "text", "text": "and"}, {"type": "video"}, {"type": "text", "text": "?"}]
    return hf_chat_inputs(
        hf_processor, content, images=[random_image(1, (196, 140))], videos=[random_video(4, (112, 84))]
    )


@torch.no_grad()
def test_logits_equal_transformers_on_the_photo(ours, ref, photo_inputs):
    from qwenlite_course.reference import Row, check_table

    check_table([Row("logits", ours(**photo_inputs).logits, ref(**photo_inputs).logits)])


@torch.no_grad()
def test_logits_equal_transformers_on_image_and_video(ours, ref, image_video_inputs):
    """Positions differ after a video (see 06_rope_index), so compare up to the end of the video span."""
    from qwenlite_course.reference import Row, check_table

    ids = image_video_inputs["input_ids"][0]
    end = int((ids == ours.config.video_token_id).nonzero().max()) + 1
    ours_logits = ours(**image_video_inputs).logits[:, :end]
    ref_logits = ref(**image_video_inputs).logits[:, :end]
    check_table([Row("logits up to the video's end", ours_logits, ref_logits)])


@pytest.mark.slow
@torch.no_grad()
def test_bfloat16_is_as_close_to_float32_as_transformers_bfloat16(ours, ref, ckpt, photo_inputs):
    """dtype=torch.bfloat16 runs end to end (image, decoder, generate), and rounds no worse than transformers:
    both bf16 models' logits are measured against their own float32 run on the same weights and inputs."""
    from qwenlite_course.reference import reference_model

    ours_bf16 = QwenLiteVL.from_pretrained(ckpt, dtype=torch.bfloat16)
    ref_bf16 = reference_model(ckpt, dtype=torch.bfloat16)
    mine = (ours_bf16(**photo_inputs).logits.float() - ours(**photo_inputs).logits).abs().max()
    theirs = (ref_bf16(**photo_inputs).logits.float() - ref(**photo_inputs).logits).abs().max()
    assert mine <= 1.5 * theirs + 1e-3, (float(mine), float(theirs))
    assert ours_bf16.generate(**photo_inputs, max_new_tokens=2).shape[1] == photo_inputs["input_ids"].shape[1] + 2


@torch.no_grad()
def test_logits_to_keep_equals_transformers(ours, ref, photo_inputs):
    from qwenlite_course.reference import Row, check_table

    mine = ours(**photo_inputs, logits_to_keep=3).logits
    theirs = ref(**photo_inputs, logits_to_keep=3).logits
    assert mine.shape[1] == 3
    check_table([Row("last 3 logits", mine, theirs)])


@torch.no_grad()
@pytest.mark.parametrize("prompt", ["photo_inputs", "video_inputs"], ids=["image", "video"])
def test_cached_decoding_equals_full_recomputation(ours, request, prompt):
    """After a video the decode positions (text position + rope_deltas) must continue from max + 1 as well."""
    from qwenlite.decoder import KVCache

    inputs = request.getfixturevalue(prompt)
    ids = ours.generate(**inputs, max_new_tokens=4)
    vision = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    full = ours(ids, torch.ones_like(ids), **vision).logits
    cache = KVCache()
    prompt_len = inputs["input_ids"].shape[1]
    out = ours(**inputs, cache=cache)
    steps = [out.logits[:, -1]]
    for i in range(prompt_len, ids.shape[1] - 1):
        out = ours(ids[:, i : i + 1], torch.ones(1, i + 1, dtype=torch.long), cache=cache, rope_deltas=out.rope_deltas)
        steps.append(out.logits[:, -1])
    cached = torch.stack(steps, dim=1)
    check_table([Row("cached decode steps vs full recompute", cached, full[:, prompt_len - 1 : -1])])


@torch.no_grad()
def test_logits_after_a_video_equal_transformers_given_the_same_positions(ours, ref, hf_processor):
    """The only difference after a video is the position rule: hand transformers our ids and every logit agrees."""
    from helpers import chat_inputs

    from qwenlite_course.reference import Row, check_table

    # 8 frames, 1 s per temporal patch: t ids 0, 2, 4, 6 outrun the 4x3 merged grid, so the two rules differ
    image_video_inputs = chat_inputs(
        hf_processor,
        [["image", "text", "video", "text"]],
        [random_image(1, (196, 140))],
        [random_video(8, (112, 84))],
        [1.0],
    )
    out = ours(**image_video_inputs)
    # the released rule, built from transformers' own ids: after the video, every id is higher by the gap between
    # the video's largest t + 1 and transformers' advance of max(h, w) / merge (written out by hand)
    inputs = image_video_inputs
    theirs_ids, _ = reference_rope_index(ref, inputs)
    t, h, w = inputs["video_grid_thw"][0].tolist()
    seconds = np.float32(float(inputs["second_per_grid_ts"][0]))
    gap = math.floor(np.float32(t - 1) * np.float32(2) * seconds) + 1 - max(h, w) // 2  # tokens_per_second 2
    assert gap > 0  # the clip is one where the two rules differ
    after_video = int((inputs["input_ids"][0] == ours.config.video_token_id).nonzero().max()) + 1
    released = theirs_ids.clone()
    released[:, :, after_video:] += gap
    assert torch.equal(out.position_ids, released)
    theirs = ref(**image_video_inputs, position_ids=released).logits
    check_table([Row("all logits, released positions", out.logits, theirs)])
    default = ref(**image_video_inputs).logits  # transformers' own 5.x rule after the video
    assert (out.logits - default).abs().max() > 1e-3, "the rules differ after a video, so these logits must too"


def test_weights_read_in_bfloat16_equal_transformers_bfloat16(ckpt):
    """The float32 twin read with a cast (one tensor at a time) gives transformers' own bfloat16 weights."""
    from qwenlite_course.reference import reference_model

    ours = QwenLiteVL.from_pretrained(ckpt, dtype=torch.bfloat16)
    theirs = {k: v for k, v in reference_model(ckpt, dtype=torch.bfloat16).state_dict().items()}
    from qwenlite.weights import to_hub_key

    theirs = {to_hub_key(k): v for k, v in theirs.items()}
    for name, p in ours.state_dict().items():
        assert p.dtype == torch.bfloat16 and torch.equal(p, theirs[name]), name


# ---------------------------------------------------------------- attention maps and hidden states


@pytest.fixture(scope="module")
def ref_eager(ckpt):
    """transformers' model with its eager attention: the kernel that returns attention probabilities."""
    from qwenlite_course.reference import reference_model

    return reference_model(ckpt, attn_implementation="eager")


@pytest.fixture(scope="module")
def text_inputs(hf_processor):
    from helpers import chat_inputs

    return chat_inputs(hf_processor, [["text"]])


def _both(ours, ref, inputs, **flags):
    """qwenlite and transformers on one prompt; transformers gets qwenlite's position ids when a video is in it
    (the only difference after a video is the position rule:
    test_logits_after_a_video_equal_transformers_given_the_same_positions)."""
    out = ours(**inputs, **flags)
    given = {"position_ids": out.position_ids} if "pixel_values_videos" in inputs else {}
    return out, ref(**inputs, **given, **flags)


def _per_layer(name, mine, theirs, index=slice(None)):
    """One row per entry of two per-layer tuples (attentions, hidden_states), each entry cut to index."""
    return [Row(f"{name}[{i}]", a[index], b[index]) for i, (a, b) in enumerate(zip(mine, theirs, strict=True))]


PROMPTS = ["text_inputs", "photo_inputs", "video_inputs", "image_video_inputs"]


@pytest.mark.slow
@torch.no_grad()
@pytest.mark.parametrize("prompt", PROMPTS, ids=["text", "image", "video", "image+video"])
def test_attentions_and_hidden_states_equal_transformers_eager(ours, ref_eager, request, prompt):
    inputs = request.getfixturevalue(prompt)
    n = len(ours.model.layers)
    out, theirs = _both(ours, ref_eager, inputs, output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == len(theirs.attentions) == n
    assert len(out.hidden_states) == len(theirs.hidden_states) == n + 1  # the embeddings, then each layer
    sdpa = ours(**inputs, output_hidden_states=True)  # the default kernel, the same hidden states
    assert sdpa.attentions is None
    rows = _per_layer("attentions", out.attentions, theirs.attentions)
    rows += _per_layer("hidden_states", out.hidden_states, theirs.hidden_states)
    rows += _per_layer("hidden_states (SDPA)", sdpa.hidden_states, theirs.hidden_states)
    rows += [Row("logits, eager path", out.logits, theirs.logits), Row("logits, SDPA", sdpa.logits, theirs.logits)]
    check_table(rows)
    # the last entry is after the final norm: it is what the language-model head reads
    assert torch.equal(ours.lm_head(sdpa.hidden_states[-1]), sdpa.logits)


@torch.no_grad()
@pytest.mark.parametrize("bug", ["softmax without the mask", "kv heads tiled"])
def test_attention_check_catches_a_plausible_bug(ours, ref_eager, image_video_inputs, monkeypatch, bug):
    import qwenlite.decoder as decoder

    if bug == "softmax without the mask":
        right = decoder.attention_weights
        every_key = lambda q, k, mask: right(q, k, torch.ones(q.shape[2], k.shape[2], dtype=torch.bool))  # noqa: E731
        monkeypatch.setattr(decoder, "attention_weights", every_key)
    else:  # h0 h1 h0 h1 instead of h0 h0 h1 h1: query head j would read kv head j % Hkv
        monkeypatch.setattr(decoder, "repeat_kv", lambda x, n_rep: x.repeat(1, n_rep, 1, 1))
    out, theirs = _both(ours, ref_eager, image_video_inputs, output_attentions=True)
    with pytest.raises(AssertionError, match="outside tolerance"):
        check_table(_per_layer("attentions", out.attentions, theirs.attentions))


@torch.no_grad()
def test_chosen_attention_layers_and_nothing_when_off(ours, ref_eager, photo_inputs, monkeypatch):
    import qwenlite.decoder as decoder

    n = len(ours.model.layers)
    last = n - 1  # the layers before it run SDPA, so its input is not the all-eager run's to the bit
    chosen = ours(**photo_inputs, output_attentions=[last])
    theirs = ref_eager(**photo_inputs, output_attentions=True)
    assert len(chosen.attentions) == n and all(a is None for a in chosen.attentions[:last])
    every = ours(**photo_inputs, output_attentions=True).attentions
    check_table(
        [
            Row(f"attentions[{last}] alone vs transformers", chosen.attentions[last], theirs.attentions[last]),
            Row(f"attentions[{last}] alone vs all layers kept", chosen.attentions[last], every[last]),
        ]
    )
    with pytest.raises(ValueError, match=rf"layer index {n} is not a layer of this decoder, which has {n} layers"):
        ours(**photo_inputs, output_attentions=[0, n])
    # off by default: no layer computes a map (SDPA runs), and asking for one layer computes exactly one
    calls = []
    right = decoder.attention_weights
    monkeypatch.setattr(decoder, "attention_weights", lambda *a: calls.append(1) or right(*a))
    out = ours(**photo_inputs)
    assert out.attentions is None and out.hidden_states is None and calls == []
    ours(**photo_inputs, output_attentions=[last])
    assert calls == [1]


def _image_and_video_batch(hf_processor):
    """A left-padded batch: an image prompt and (shorter, so padded) a video prompt; and each prompt alone."""
    from helpers import chat_inputs

    image, clip = random_image(2, (280, 224)), random_video(8, (112, 84))
    batch = chat_inputs(hf_processor, [["image", "text"], ["video", "text"]], [image], [clip], seconds=[1.0])
    alone = [
        chat_inputs(hf_processor, [["image", "text"]], [image]),
        chat_inputs(hf_processor, [["video", "text"]], clips=[clip], seconds=[1.0]),
    ]
    return batch, alone


@pytest.mark.slow
@torch.no_grad()
def test_left_padded_image_and_video_batch_equals_each_prompt_alone(ours, ref_eager, hf_processor):
    """Padding changes nothing: logits at real tokens, attention maps and generated ids equal each prompt run alone;
    the batch also equals transformers given the same positions (the two rules differ only after the video)."""
    batch, alone = _image_and_video_batch(hf_processor)
    mask = batch["attention_mask"].bool()
    assert mask[0].all() and not mask[1].all()  # the video row is the left-padded one
    out, theirs = _both(ours, ref_eager, batch, output_attentions=True)
    rows = [
        Row(f"row {r} vs transformers, real tokens", out.logits[r, mask[r]], theirs.logits[r, mask[r]])
        for r in range(2)
    ]
    rows += _per_layer("attentions (padding queries too)", out.attentions, theirs.attentions)
    for r in range(2):
        real = mask[r]
        single = ours(**alone[r], output_attentions=True)
        rows.append(Row(f"row {r} vs alone, real tokens", out.logits[r, real], single.logits[0]))
        at_real = [a[r][:, real][..., real] for a in out.attentions]  # (H, real queries, real keys)
        rows += _per_layer(f"row {r} attentions vs alone", at_real, [b[0] for b in single.attentions])
    check_table(rows)
    # probabilities: every real query's row sums to 1, and future and padding keys get exactly 0 (a padding query
    # sees no key at all: its row is uniform, in transformers too, and nothing reads it)
    n = mask.shape[1]
    forbidden = ~(torch.ones(n, n, dtype=torch.bool).tril() & mask[:, None, :]) & mask[:, :, None]  # (B, L, S)
    for probs in out.attentions:
        sums = probs.sum(-1).transpose(1, 2)[mask]  # (real queries, H)
        check_table([Row("row sums, real queries", sums, torch.ones_like(sums))])
        assert forbidden.any() and torch.all(probs.masked_select(forbidden[:, None]) == 0)
    new = 6
    batched = ours.generate(**batch, max_new_tokens=new, eos_token_id=[-1])
    for r in range(2):
        single = ours.generate(**alone[r], max_new_tokens=new, eos_token_id=[-1])
        assert torch.equal(batched[r, -new:], single[0, -new:]), (
            r,
            batched[r, -new:].tolist(),
            single[0, -new:].tolist(),
        )


@torch.no_grad()
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_pixels_are_refused_where_they_enter(ours, config, value):
    """Not discovered as NaN logits and token 0 forever: the pixels are named."""
    vs, img, ve = config.vision_start_token_id, config.image_token_id, config.vision_end_token_id
    ids = torch.tensor([[1, vs, img, img, img, img, ve]])
    pixels = torch.zeros(16, 1176)
    pixels[3, 5] = value
    with pytest.raises(ValueError, match="pixel_values holds 1 NaN or infinite values: the pixels must be finite"):
        ours(ids, pixel_values=pixels, image_grid_thw=torch.tensor([[1, 4, 4]]))


# ---------------------------------------------------------------- bad input: refused by name


@torch.no_grad()
@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda x: {**x, "pixel_values": torch.zeros(24, 100)}, r"pixel_values must be \(num_patches, 1176\), got"),
        (lambda x: {**x, "pixel_values": x["pixel_values"][None]}, r"pixel_values must be \(num_patches, 1176\)"),
        (
            lambda x: {**x, "pixel_values": (x["pixel_values"] * 50 + 128).to(torch.uint8)},
            r"pixel_values must be floating point \(normalised patches from the processor\), got torch.uint8",
        ),
        (
            lambda x: {**x, "image_grid_thw": torch.tensor([[1, 4, 4]])},
            r"image_grid_thw \[\[1, 4, 4\]\] describes 16 patches \(sum of t \* h \* w\), pixel_values has 24 rows",
        ),
        (
            lambda x: {**x, "image_grid_thw": torch.tensor([[1, 3, 8]])},
            "image_grid_thw h and w must be multiples of spatial_merge_size 2",
        ),
        (
            lambda x: {**x, "image_grid_thw": torch.tensor([1, 4, 6])},
            r"image_grid_thw must be \(num_items, 3\) rows of \(t, h, w\), got \(3,\)",
        ),
        (lambda x: {**x, "image_grid_thw": x["image_grid_thw"].float()}, "image_grid_thw must hold integers"),
        (lambda x: {**x, "image_grid_thw": torch.tensor([[0, 4, 6]])}, "image_grid_thw entries must be >= 1 patch"),
        (lambda x: {**x, "image_grid_thw": None}, "pixel_values was given without image_grid_thw"),
    ],
    ids=["width", "batch-axis", "uint8", "product", "odd-h", "1-d-grid", "float-grid", "zero-grid", "no-grid"],
)
def test_bad_image_inputs_to_the_model(ours, array_inputs, edit, message):
    with pytest.raises(ValueError, match=message):
        ours(**edit(array_inputs))


@torch.no_grad()
def test_bad_video_inputs_are_named_as_videos(ours):
    with pytest.raises(ValueError, match=r"pixel_values_videos must be \(num_patches, 1176\), got \(8, 100\)"):
        ours.get_video_features(torch.zeros(8, 100), torch.tensor([[2, 2, 2]]))
    with pytest.raises(ValueError, match="pixel_values_videos must be floating point"):
        ours.get_video_features(torch.zeros(8, 1176, dtype=torch.int64), torch.tensor([[2, 2, 2]]))
    with pytest.raises(ValueError, match=r"video_grid_thw \[\[1, 2, 2\]\] describes 4 patches .* has 8 rows"):
        ours.get_video_features(torch.zeros(8, 1176), torch.tensor([[1, 2, 2]]))
    ids = torch.tensor([[VS, VID, VID, VE]])
    with pytest.raises(ValueError, match="pixel_values_videos was given without video_grid_thw"):
        ours(ids, pixel_values_videos=torch.zeros(8, 1176))


@torch.no_grad()
def test_bad_token_ids(ours):
    with pytest.raises(ValueError, match=r"input_ids must be \(batch, length\) integer token ids, got torch.float32"):
        ours(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"input_ids must be \(batch, length\) .* of shape \(3,\)"):
        ours(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"input_ids hold token id 200000, outside the vocabulary \[0, 151936\)"):
        ours(torch.tensor([[1, 2, 200000]]))
    with pytest.raises(ValueError, match=r"input_ids hold token id -1, outside the vocabulary"):
        ours(torch.tensor([[1, -1]]))


@torch.no_grad()
def test_decoding_with_a_cache_takes_tokens_and_rope_deltas(ours, array_inputs):
    cache = KVCache()
    ours(**array_inputs, cache=cache)
    with pytest.raises(ValueError, match="decoding with a cache needs the rope_deltas returned by the prefill"):
        ours(array_inputs["input_ids"][:, :1], cache=cache)
    with pytest.raises(ValueError, match="pixel_values / pixel_values_videos go with the prefill; decoding with a"):
        ours(
            array_inputs["input_ids"][:, :1],
            cache=cache,
            pixel_values=array_inputs["pixel_values"],
            rope_deltas=torch.zeros(1, 1),
        )
