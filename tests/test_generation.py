"""qwenlite.generation: greedy decoding with a KV cache against transformers' generate (tokens exactly equal),
generation_config.json defaults, the repetition penalty, and what generate refuses up front."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image

from qwenlite import QwenLiteVL
from qwenlite.decoder import KVCache


@torch.no_grad()
def test_generation_equals_transformers_on_the_photo(ours, ref, photo_inputs):
    new = 10
    mine = ours.generate(**photo_inputs, max_new_tokens=new)
    theirs = ref.generate(**photo_inputs, max_new_tokens=new, do_sample=False, repetition_penalty=1.0)
    assert torch.equal(mine, theirs), (mine[:, -new:].tolist(), theirs[:, -new:].tolist())


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


@pytest.mark.slow
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

    from qwenlite_course.reference import reference_model

    for item in ckpt.iterdir():
        (tmp_path / item.name).symlink_to(item)
    (tmp_path / "generation_config.json").unlink(missing_ok=True)
    settings = {"eos_token_id": [151935], "pad_token_id": 0, "repetition_penalty": 1.4, "do_sample": False}
    (tmp_path / "generation_config.json").write_text(json.dumps(settings))
    ours = QwenLiteVL.from_pretrained(tmp_path)
    assert ours.generation_config.repetition_penalty == 1.4 and ours.generation_config.eos_token_id == (151935,)
    theirs = reference_model(tmp_path).generate(**photo_inputs, max_new_tokens=6)
    assert torch.equal(ours.generate(**photo_inputs, max_new_tokens=6), theirs)


@torch.no_grad()
def test_generation_after_a_video_equals_transformers_stepped_with_the_same_positions(ours, ref, video_inputs):
    """transformers' own generate follows its 5.x rule after a video; stepped by hand with the released positions
    (`reference.greedy_with_positions`: prefill with qwenlite's position_ids, then max + 1, max + 2, ...), it
    picks the same tokens as qwenlite."""
    from qwenlite_course.reference import greedy_with_positions

    new = 8
    mine = ours.generate(**video_inputs, max_new_tokens=new, eos_token_id=[-1])
    positions = ours(**video_inputs).position_ids
    theirs = greedy_with_positions(ref, video_inputs, positions, max_new_tokens=new)
    assert torch.equal(mine, theirs), (mine[:, -new:].tolist(), theirs[:, -new:].tolist())


@torch.no_grad()
def test_right_padded_rows_are_refused_by_generate(ours):
    """transformers only warns: its answer then follows the pads and differs from the prompt alone."""
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with pytest.raises(ValueError, match=r"rows \[1\] end in padding .* generate needs left padding"):
        ours.generate(ids, mask, max_new_tokens=2)
    left = torch.tensor([[1, 2, 3, 4], [0, 0, 5, 6]])
    assert ours.generate(left, mask.flip(1), max_new_tokens=2).shape == (2, 6)  # the same rows, left-padded


@torch.no_grad()
def test_max_new_tokens_beyond_the_positions_is_refused_before_decoding(ours, monkeypatch):
    """max_new_tokens=10**9 would run for days before reaching the limit: refused with the numbers, up front."""
    limit = ours.config.text_config.max_position_embeddings
    calls = []
    monkeypatch.setattr(type(ours), "forward", lambda *a, **k: calls.append(1))  # nothing may run
    with pytest.raises(
        ValueError,
        match=rf"max_new_tokens=1000000000 would feed position ids up to 1000000003, .*"
        rf"= {limit} \(the prompt's largest is 4\): ask for at most {limit - 4} new tokens",
    ):
        ours.generate(torch.arange(1, 6)[None], max_new_tokens=10**9)
    assert calls == []


@torch.no_grad()
def test_max_new_tokens_counts_a_videos_time_ids(ours, config):
    """A slow video's t ids run ahead of its token count: the limit follows the position ids, not the length."""
    text = dataclasses.replace(config.text_config, max_position_embeddings=64)
    short = QwenLiteVL(dataclasses.replace(config, text_config=text))
    vid, vs, ve = config.video_token_id, config.vision_start_token_id, config.vision_end_token_id
    ids = torch.tensor([[1, vs, *[vid] * 8, ve, 2]])  # a video of 2 temporal patches of 2 x 2 merged tokens
    grid = torch.tensor([[2, 4, 4]])
    # 20 s per temporal patch at 2 tokens per second: the video starts at 2, its second patch has t = 2 + 40,
    # <|vision_end|> takes 43 and the last text 44: 12 tokens, but position 44
    seconds = torch.tensor([20.0])
    with pytest.raises(ValueError, match=r"the prompt's largest is 44\): ask for at most 20 new tokens"):
        short.generate(ids, max_new_tokens=21, video_grid_thw=grid, second_per_grid_ts=seconds)


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_kv_cache_bytes_is_what_the_cache_holds(ckpt, dtype):
    """The estimate behind the memory refusal, against the cache itself after a prefill and two decode steps."""
    from qwenlite.generation import kv_cache_bytes

    model = QwenLiteVL.from_pretrained(ckpt, dtype=dtype)
    ids, cache = torch.arange(1, 13).reshape(2, 6), KVCache()
    out = model(ids, cache=cache)
    for step in range(2):
        out = model(ids[:, :1], torch.ones(2, 7 + step), cache=cache, rope_deltas=out.rope_deltas)
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in layer)
    assert held == kv_cache_bytes(model.config.text_config, batch=2, positions=8, dtype=dtype)


@torch.no_grad()
def test_a_generation_that_cannot_fit_is_refused_up_front_with_the_bytes(ours, monkeypatch):
    import qwenlite.generation as generation

    calls = []
    monkeypatch.setattr(generation, "available_bytes", lambda device: 10 * 2**20)  # 10 MiB free
    monkeypatch.setattr(type(ours), "forward", lambda *a, **k: calls.append(1))  # nothing may run
    ids = torch.ones(4, 2000, dtype=torch.long)
    need = generation.prefill_floor_bytes(ours.config.text_config, 4, 2000, 100, torch.float32)
    assert need > 10 * 2**20
    with pytest.raises(MemoryError, match=rf"needs at least {need / 2**30:.2f} GiB .* KV cache for 2099 positions x 4"):
        ours.generate(ids, max_new_tokens=100)
    assert calls == []


# ---------------------------------------------------------------- bad input: refused by name


@torch.no_grad()
def test_generate_refuses_what_it_does_not_do(ours, array_inputs):
    with pytest.raises(TypeError, match="generate.* got an unexpected keyword argument 'do_sample'"):
        ours.generate(**array_inputs, do_sample=True)
    with pytest.raises(TypeError, match="generate.* got an unexpected keyword argument 'num_beams'"):
        ours.generate(**array_inputs, num_beams=2)
    for bad in (0, -3, 1.5):
        with pytest.raises(ValueError, match=rf"max_new_tokens must be an integer >= 1 .*got {bad}"):
            ours.generate(**array_inputs, max_new_tokens=bad)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(
            ValueError, match=rf"repetition_penalty must be a finite number > 0 \(1.0 = off\), got {bad}"
        ):
            ours.generate(**array_inputs, repetition_penalty=bad)


def test_no_stop_tokens_runs_every_step_and_equals_transformers(ours, ref, photo_inputs):
    """eos_token_id=[] (notebook 07's demo on the twin): no token ends a row, so every step runs; the sequence
    is the stopped one continued, and equals transformers' greedy run on the same weights without its stop."""
    stopped = ours.generate(**photo_inputs, max_new_tokens=6, repetition_penalty=1.0)
    every = ours.generate(**photo_inputs, max_new_tokens=6, repetition_penalty=1.0, eos_token_id=[])
    length = photo_inputs["input_ids"].shape[1]
    assert every.shape[1] == length + 6 and torch.equal(every[:, : stopped.shape[1]], stopped)
    with torch.no_grad():
        theirs = ref.generate(
            **photo_inputs, max_new_tokens=6, do_sample=False, repetition_penalty=1.0, min_length=0, eos_token_id=None
        )
    shared = min(theirs.shape[1], every.shape[1])
    assert torch.equal(every[:, :shared], theirs[:, :shared])
