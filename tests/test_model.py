"""The whole model: module tree and parameter counts at full size (meta device), logits and generation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qwenlite import QwenLiteConfig, QwenLiteVL, checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "configs"
FULL_SIZE = {  # meta-device counts with transformers 5.24 (Qwen2_5_VLForConditionalGeneration on the meta device)
    "qwen2_5_vl_3b_instruct": 3_754_622_976,
    "qwen2_5_vl_7b_instruct": 8_292_166_656,
}


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
    if name == "qwen2_5_vl_3b_instruct":
        assert sum(p.numel() for p in ours.visual.parameters()) == 668_684_288
    # the checkpoint keys and shapes qwenlite expects are exactly transformers' in hub layout
    theirs_keys = {checkpoint.to_hub_key(k): v.shape for k, v in theirs.state_dict().items()}
    if theirs.config.tie_word_embeddings:
        theirs_keys.pop("lm_head.weight")
    assert ours.expected_keys() == theirs_keys


def test_tree_reads_like_the_seed():
    ours, _ = _meta_pair("qwen2_5_vl_3b_instruct")
    assert tuple(ours.visual.patch_embed.proj.weight.shape) == (1280, 3, 2, 14, 14)
    assert ours.visual.patch_embed.proj.bias is None
    assert tuple(ours.visual.blocks[0].attn.qkv.weight.shape) == (3840, 1280)
    assert tuple(ours.visual.merger.mlp[0].weight.shape) == (5120, 5120)
    assert tuple(ours.visual.merger.mlp[2].weight.shape) == (2048, 5120)
    assert tuple(ours.model.layers[0].self_attn.k_proj.weight.shape) == (256, 2048)
    assert len(ours.visual.blocks) == 32 and len(ours.model.layers) == 36
    assert ours.lm_head.weight is ours.model.embed_tokens.weight  # 3B ties lm_head


def _image(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _video(frames: int, size: tuple[int, int]) -> list[Image.Image]:
    return [_image(100 + i, size) for i in range(frames)]


def _inputs(hf_processor, content, images=None, videos=None):
    messages = [{"role": "user", "content": content}]
    text = hf_processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    kwargs = {"do_sample_frames": False} if videos else {}
    return dict(hf_processor(text=[text], images=images, videos=videos, return_tensors="pt", **kwargs))


@pytest.fixture(scope="module")
def photo_inputs(hf_processor, photo_path):
    photo = Image.open(photo_path).convert("RGB").resize((280, 336))
    return _inputs(hf_processor, [{"type": "image"}, {"type": "text", "text": "Who is this?"}], images=[photo])


@pytest.fixture(scope="module")
def image_video_inputs(hf_processor):
    content = [{"type": "image"}, {"type": "text", "text": "and"}, {"type": "video"}, {"type": "text", "text": "?"}]
    return _inputs(hf_processor, content, images=[_image(1, (196, 140))], videos=[_video(4, (112, 84))])


@torch.no_grad()
def test_logits_equal_transformers_on_the_photo(ours, ref, photo_inputs):
    from qwenlite.reference import Row, check_table

    check_table([Row("logits", ours(**photo_inputs).logits, ref(**photo_inputs).logits, atol=1e-4)])


@torch.no_grad()
def test_logits_equal_transformers_on_image_and_video(ours, ref, image_video_inputs):
    """Positions differ after a video (see 06_rope_index), so compare up to the end of the video span."""
    from qwenlite.reference import Row, check_table

    ids = image_video_inputs["input_ids"][0]
    end = int((ids == ours.config.video_token_id).nonzero().max()) + 1
    ours_logits = ours(**image_video_inputs).logits[:, :end]
    ref_logits = ref(**image_video_inputs).logits[:, :end]
    check_table([Row("logits up to the video's end", ours_logits, ref_logits, atol=1e-4)])


@torch.no_grad()
def test_generation_equals_transformers_on_the_photo(ours, ref, photo_inputs):
    new = 10
    mine = ours.generate(**photo_inputs, max_new_tokens=new)
    theirs = ref.generate(**photo_inputs, max_new_tokens=new, do_sample=False, repetition_penalty=1.0)
    assert torch.equal(mine, theirs), (mine[:, -new:].tolist(), theirs[:, -new:].tolist())


@torch.no_grad()
def test_bfloat16_is_as_close_to_float32_as_transformers_bfloat16(ours, ref, ckpt, photo_inputs):
    """dtype=torch.bfloat16 runs end to end (image, decoder, generate), and rounds no worse than transformers:
    both bf16 models' logits are measured against their own float32 run on the same weights and inputs."""
    from qwenlite.reference import reference_model

    ours_bf16 = QwenLiteVL.from_pretrained(ckpt, dtype=torch.bfloat16)
    ref_bf16 = reference_model(ckpt, dtype=torch.bfloat16)
    mine = (ours_bf16(**photo_inputs).logits.float() - ours(**photo_inputs).logits).abs().max()
    theirs = (ref_bf16(**photo_inputs).logits.float() - ref(**photo_inputs).logits).abs().max()
    assert mine <= 1.5 * theirs + 1e-3, (float(mine), float(theirs))
    assert ours_bf16.generate(**photo_inputs, max_new_tokens=2).shape[1] == photo_inputs["input_ids"].shape[1] + 2


@torch.no_grad()
def test_logits_to_keep_equals_transformers(ours, ref, photo_inputs):
    from qwenlite.reference import Row, check_table

    mine = ours(**photo_inputs, logits_to_keep=3).logits
    theirs = ref(**photo_inputs, logits_to_keep=3).logits
    assert mine.shape[1] == 3
    check_table([Row("last 3 logits", mine, theirs, atol=1e-4)])


@torch.no_grad()
def test_cached_decoding_equals_full_recomputation(ours, photo_inputs):
    from qwenlite.decoder import KVCache

    ids = ours.generate(**photo_inputs, max_new_tokens=4)
    full = ours(ids, torch.ones_like(ids), photo_inputs["pixel_values"], photo_inputs["image_grid_thw"]).logits
    cache = KVCache()
    prompt_len = photo_inputs["input_ids"].shape[1]
    out = ours(**photo_inputs, cache=cache)
    steps = [out.logits[:, -1]]
    for i in range(prompt_len, ids.shape[1] - 1):
        out = ours(ids[:, i : i + 1], torch.ones(1, i + 1, dtype=torch.long), cache=cache, rope_deltas=out.rope_deltas)
        steps.append(out.logits[:, -1])
    cached = torch.stack(steps, dim=1)
    torch.testing.assert_close(cached, full[:, prompt_len - 1 : -1], atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def padded_batch(hf_processor, photo_path):
    """Two prompts of different lengths (left-padded) with different images."""
    photo = Image.open(photo_path).convert("RGB")
    messages = [
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Who is this?"}]}],
        [{"role": "user", "content": [{"type": "text", "text": "Look closely at"}, {"type": "image"}]}],
    ]
    texts = [hf_processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages]
    images = [photo.resize((112, 140)), photo.crop((100, 100, 400, 400)).resize((84, 84))]
    inputs = hf_processor(text=texts, images=images, padding=True, padding_side="left", return_tensors="pt")
    assert (inputs["attention_mask"] == 0).any(), "the batch should need padding"
    return dict(inputs)


@torch.no_grad()
def test_end_of_sequence_and_padding_equal_transformers(ours, ref, padded_batch):
    """A row that emits the end token is padded afterwards; decoding stops when every row has ended."""
    free = ours.generate(**padded_batch, max_new_tokens=8, eos_token_id=[-1])
    prompt_len = padded_batch["input_ids"].shape[1]
    eos = int(free[0, prompt_len + 2])  # row 0 ends at its 3rd new token
    mine = ours.generate(**padded_batch, max_new_tokens=8, eos_token_id=eos, pad_token_id=0)
    theirs = ref.generate(
        **padded_batch, max_new_tokens=8, eos_token_id=eos, pad_token_id=0, do_sample=False, repetition_penalty=1.0
    )
    assert torch.equal(mine, theirs), (mine[:, prompt_len:].tolist(), theirs[:, prompt_len:].tolist())
    assert (mine[0, prompt_len + 3 :] == 0).all()
    # every row ends: decoding stops at the last row's end token, before max_new_tokens
    both = ours.generate(**padded_batch, max_new_tokens=8, eos_token_id=[eos, int(free[1, prompt_len + 1])])
    assert both.shape[1] <= prompt_len + 3


@torch.no_grad()
def test_logits_after_a_video_equal_transformers_given_the_same_positions(ours, ref, hf_processor):
    """The only difference after a video is the position rule: hand transformers our ids and every logit agrees."""
    from helpers import chat_inputs

    from qwenlite import get_rope_index
    from qwenlite.reference import Row, check_table

    # 8 frames, 1 s per temporal patch: t ids 0, 2, 4, 6 outrun the 4x3 merged grid, so the two rules differ
    image_video_inputs = chat_inputs(
        hf_processor, [["image", "text", "video", "text"]], [_image(1, (196, 140))], [_video(8, (112, 84))], [1.0]
    )
    out = ours(**image_video_inputs)
    released, _ = get_rope_index(
        image_video_inputs["input_ids"],
        image_video_inputs["image_grid_thw"],
        image_video_inputs["video_grid_thw"],
        image_video_inputs["second_per_grid_ts"],
        image_video_inputs["attention_mask"],
        config=ours.config,
    )
    assert torch.equal(out.position_ids, released)
    theirs = ref(**image_video_inputs, position_ids=released).logits
    check_table([Row("all logits, released positions", out.logits, theirs, atol=1e-4)])
    default = ref(**image_video_inputs).logits  # transformers' own 5.24 rule after the video
    assert (out.logits - default).abs().max() > 1e-3, "the rules differ after a video, so these logits must too"


@torch.no_grad()
@pytest.mark.parametrize("penalty", [1.05, 0.5])
def test_repetition_penalty_equals_transformers(ours, ref, padded_batch, penalty):
    """Greedy decoding with transformers' RepetitionPenaltyLogitsProcessor, on a left-padded batch.
    (Below 1 the penalty rewards repeats: on random weights that is what makes it change the tokens.)"""
    new = 10
    mine = ours.generate(**padded_batch, max_new_tokens=new, repetition_penalty=penalty, eos_token_id=[-1])
    theirs = ref.generate(
        **padded_batch, max_new_tokens=new, do_sample=False, repetition_penalty=penalty, eos_token_id=-1
    )
    assert torch.equal(mine, theirs), (mine[:, -new:].tolist(), theirs[:, -new:].tolist())
    if penalty == 0.5:  # the penalty does something here, so the comparison above could fail
        plain = ours.generate(**padded_batch, max_new_tokens=new, repetition_penalty=1.0, eos_token_id=[-1])
        assert not torch.equal(plain, mine)


@torch.no_grad()
def test_hub_sampling_settings_are_greedy_with_a_penalty(ours, ref, photo_inputs):
    """The hub's generation_config.json samples with top_k 1: the same tokens as greedy with the penalty."""
    hub = {"do_sample": True, "top_k": 1, "top_p": 0.001, "temperature": 0.1, "repetition_penalty": 1.05}
    theirs = ref.generate(**photo_inputs, max_new_tokens=8, **hub)
    assert torch.equal(ours.generate(**photo_inputs, max_new_tokens=8, repetition_penalty=1.05), theirs)


@torch.no_grad()
def test_generate_defaults_come_from_generation_config(ckpt, photo_inputs, tmp_path):
    """A checkpoint's generation_config.json sets the defaults, as in transformers; nothing is written to ckpt."""
    import json

    from qwenlite.reference import reference_model

    for item in ckpt.iterdir():
        (tmp_path / item.name).symlink_to(item)
    (tmp_path / "generation_config.json").unlink(missing_ok=True)
    settings = {"eos_token_id": [-1], "pad_token_id": 0, "repetition_penalty": 1.4, "do_sample": False}
    (tmp_path / "generation_config.json").write_text(json.dumps(settings))
    ours = QwenLiteVL.from_pretrained(tmp_path)
    assert ours.generation_config.repetition_penalty == 1.4 and ours.generation_config.eos_token_id == (-1,)
    theirs = reference_model(tmp_path).generate(**photo_inputs, max_new_tokens=6)
    assert torch.equal(ours.generate(**photo_inputs, max_new_tokens=6), theirs)


def test_weights_read_in_bfloat16_equal_transformers_bfloat16(ckpt):
    """The float32 twin read with a cast (one tensor at a time) gives transformers' own bfloat16 weights."""
    from qwenlite.reference import reference_model

    ours = QwenLiteVL.from_pretrained(ckpt, dtype=torch.bfloat16)
    theirs = {k: v for k, v in reference_model(ckpt, dtype=torch.bfloat16).state_dict().items()}
    from qwenlite.checkpoint import to_hub_key

    theirs = {to_hub_key(k): v for k, v in theirs.items()}
    for name, p in ours.state_dict().items():
        assert p.dtype == torch.bfloat16 and torch.equal(p, theirs[name]), name


def test_run_settings_read_the_environment():  # bad values: tests/test_bad_inputs.py
    from qwenlite.reference import RunSettings, run_settings

    assert run_settings({}) == RunSettings(torch.float32, torch.device("cpu"))
    assert run_settings({"QWENLITE_DTYPE": "bfloat16"}).dtype == torch.bfloat16
