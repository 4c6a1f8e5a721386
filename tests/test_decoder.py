"""The language model (qwenlite.decoder): RMSNorm, M-RoPE, GQA attention, decoder layers, mask and KV cache.

Components are compared with transformers' `Qwen2_5_VLTextModel` on the same checkpoint and the same
inputs; properties (padding, GQA, text-only M-RoPE, cached decoding) are checked on qwenlite itself.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from PIL import Image

from qwenlite import QwenLiteVL
from qwenlite.decoder import KVCache, attention_layers, attention_weights, causal_mask, mrope_cos_sin
from qwenlite.layers import rope_inv_freq
from qwenlite_course.reference import Row, capture, check_table


def _prompt(hf_processor, question: str) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return hf_processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


@pytest.fixture(scope="module")
def photo(photo_path) -> Image.Image:
    return Image.open(photo_path).convert("RGB").resize((196, 224))  # grid 16 x 14 patches: h != w


@pytest.fixture(scope="module")
def photo_inputs(hf_processor, photo) -> dict[str, torch.Tensor]:
    text = _prompt(hf_processor, "Who is this?")
    return dict(hf_processor(text=[text], images=[photo], return_tensors="pt"))


@pytest.fixture(scope="module")
def ref_decoder_inputs(ref, photo_inputs) -> dict[str, torch.Tensor]:
    """What transformers' text model receives for the photo prompt: fused embeddings and 3-D position ids."""
    seen = {}

    def record(_module, args, kwargs):
        seen["inputs_embeds"] = (args[0] if args else kwargs["hidden_states"]).detach()

    handle = ref.model.language_model.layers[0].register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            ref(**photo_inputs)
    finally:
        handle.remove()
    i = photo_inputs
    position_ids, _ = ref.model.get_rope_index(
        i["input_ids"], i["mm_token_type_ids"], i["image_grid_thw"], attention_mask=i["attention_mask"]
    )
    return {"inputs_embeds": seen["inputs_embeds"], "position_ids": position_ids}


@torch.no_grad()
def test_rms_norm_equals_transformers(ours, ref):
    x = 3 * torch.randn(2, 7, ours.config.text_config.hidden_size)
    rows = [
        Row("model.norm", ours.model.norm(x), ref.model.language_model.norm(x)),
        Row(
            "layers.0.input_layernorm",
            ours.model.layers[0].input_layernorm(x),
            ref.model.language_model.layers[0].input_layernorm(x),
        ),
    ]
    check_table(rows)


@torch.no_grad()
def test_mrope_cos_sin_equals_transformers_on_image_positions(ours, ref, ref_decoder_inputs):
    pos = ref_decoder_inputs["position_ids"]  # (3, 1, L)
    assert not torch.equal(pos[0], pos[1]) and not torch.equal(pos[1], pos[2])  # t, h, w really differ
    c = ours.config.text_config
    cos, sin = mrope_cos_sin(pos, rope_inv_freq(c.head_dim, c.rope_theta), c.mrope_section)
    ref_cos, ref_sin = ref.model.language_model.rotary_emb(ref_decoder_inputs["inputs_embeds"], pos)
    check_table([Row("cos", cos, ref_cos), Row("sin", sin, ref_sin)])


def test_mrope_sections_follow_t_h_w():
    """Pair j turns with the axis whose section holds j: a property that fails if sections are mixed up."""
    section, dh = (1, 1, 2), 8
    pos = torch.tensor([[[3]], [[5]], [[11]]])  # t, h, w of one token
    inv = rope_inv_freq(dh, 10000.0)
    cos, _ = mrope_cos_sin(pos, inv, section)
    axis_of_pair = torch.tensor([0, 1, 2, 2])
    expected = (pos[axis_of_pair, 0, 0].float() * inv).cos()
    torch.testing.assert_close(cos[0, 0], torch.cat([expected, expected]), atol=0, rtol=0)


def test_mrope_on_text_positions_is_ordinary_rope(config):
    c = config.text_config
    inv = rope_inv_freq(c.head_dim, c.rope_theta)
    p = torch.tensor([[0, 1, 2, 7, 100, 4000]])  # (B, L)
    cos, sin = mrope_cos_sin(p.expand(3, -1, -1), inv, c.mrope_section)
    angles = p[..., None].float() * inv  # (B, L, Dh/2): 1-D RoPE
    angles = torch.cat([angles, angles], dim=-1)
    torch.testing.assert_close(cos, angles.cos(), atol=0, rtol=0)
    torch.testing.assert_close(sin, angles.sin(), atol=0, rtol=0)


@torch.no_grad()
def test_each_decoder_layer_equals_transformers_on_an_image_prompt(ours, ref, ref_decoder_inputs):
    """Both decoders get transformers' fused embeddings and position ids, so vision drift is not counted."""
    n = len(ours.model.layers)
    mine = {f"layers.{i}": ours.model.layers[i] for i in range(n)} | {"norm": ours.model.norm}
    theirs = {f"layers.{i}": ref.model.language_model.layers[i] for i in range(n)}
    theirs["norm"] = ref.model.language_model.norm
    x, pos = ref_decoder_inputs["inputs_embeds"], ref_decoder_inputs["position_ids"]
    with capture(mine) as a, capture(theirs) as b:
        ours.model(x, pos)
        ref.model.language_model(inputs_embeds=x, position_ids=pos)
    assert set(a) == set(b) == set(mine)
    check_table([Row(f"{k} output", a[k], b[k]) for k in mine])


@torch.no_grad()
def test_each_layer_alone_equals_transformers_given_the_same_input(ours, ref, ref_decoder_inputs):
    """Layer i fed transformers' own input to layer i: no error carried over from earlier layers."""
    n = len(ours.model.layers)
    inputs: dict[int, torch.Tensor] = {}

    def record(i):
        def hook(_module, args, kwargs):
            inputs[i] = (args[0] if args else kwargs["hidden_states"]).detach()

        return hook

    handles = [
        ref.model.language_model.layers[i].register_forward_pre_hook(record(i), with_kwargs=True) for i in range(n)
    ]
    x, pos = ref_decoder_inputs["inputs_embeds"], ref_decoder_inputs["position_ids"]
    try:
        with capture({i: ref.model.language_model.layers[i] for i in range(n)}) as outputs:
            ref.model.language_model(inputs_embeds=x, position_ids=pos)
    finally:
        for h in handles:
            h.remove()
    c = ours.config.text_config
    cos, sin = mrope_cos_sin(pos, rope_inv_freq(c.head_dim, c.rope_theta), c.mrope_section)
    mask = causal_mask(x, None, past=0)
    rows = [Row(f"layer {i} alone", ours.model.layers[i](inputs[i], cos, sin, mask), outputs[i]) for i in range(n)]
    check_table(rows)


def test_causal_mask_semantics():
    x = torch.zeros(2, 3, 4)
    pad = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])  # 2 cached + 3 new, row 0 left-padded
    allowed = causal_mask(x, pad, past=2)[:, 0]  # (B, L, S)
    # query i (absolute position 2 + i) sees keys 0..2+i, minus padding
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(allowed[1], expected)
    assert torch.equal(allowed[0], expected & pad[0].bool())


@torch.no_grad()
def test_left_padded_row_gives_the_logits_of_the_unpadded_prompt(ours, hf_processor, photo):
    small = photo.resize((112, 112))
    texts = [_prompt(hf_processor, "Hi"), _prompt(hf_processor, "Who is this woman, and what is she wearing?")]
    batch = dict(
        hf_processor(text=texts, images=[small, small], return_tensors="pt", padding=True, padding_side="left")
    )
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][1].all()  # row 0 is left-padded
    padded = ours(**batch).logits
    for row, text in enumerate(texts):
        alone = dict(hf_processor(text=[text], images=[small], return_tensors="pt"))
        real = batch["attention_mask"][row].bool()
        check_table([Row(f"row {row} real tokens", padded[row, real], ours(**alone).logits[0])])


def test_gqa_equals_attention_with_repeated_kv_heads(ours):
    """Query head j uses kv head j // (H / Hkv): repeating each kv head that many times gives plain MHA."""
    attn = ours.model.layers[0].self_attn
    h, hkv, dh = attn.num_heads, attn.num_kv_heads, attn.head_dim
    assert hkv < h
    mha = copy.deepcopy(attn)
    mha.num_kv_heads = h
    for proj in ("k_proj", "v_proj"):
        old = getattr(attn, proj)
        new = torch.nn.Linear(old.in_features, h * dh, bias=True)
        new.weight.data = old.weight.data.view(hkv, dh, -1).repeat_interleave(h // hkv, dim=0).reshape(h * dh, -1)
        new.bias.data = old.bias.data.view(hkv, dh).repeat_interleave(h // hkv, dim=0).reshape(h * dh)
        setattr(mha, proj, new)
    x = torch.randn(2, 9, ours.config.text_config.hidden_size)
    c = ours.config.text_config
    pos = torch.arange(9).expand(3, 2, -1)
    cos, sin = mrope_cos_sin(pos, rope_inv_freq(dh, c.rope_theta), c.mrope_section)
    mask = causal_mask(x, None, past=0)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, cos, sin, mask)[0], mha(x, cos, sin, mask)[0], atol=1e-6, rtol=0)
        # repeating with .repeat (head order h0 h1 h0 h1) instead is a different model: the check can fail
        wrong = copy.deepcopy(mha)
        wrong.k_proj.weight.data = attn.k_proj.weight.data.view(hkv, dh, -1).repeat(h // hkv, 1, 1).reshape(h * dh, -1)
        assert not torch.allclose(attn(x, cos, sin, mask)[0], wrong(x, cos, sin, mask)[0], atol=1e-3)


@torch.no_grad()
@pytest.mark.parametrize("padded", [False, True], ids=["one-row", "left-padded-batch"])
def test_prefill_then_single_steps_equals_one_full_forward(ours, hf_processor, photo, photo_inputs, padded):
    """Prefill n tokens (with the image), then feed the rest one at a time: the same logits as all at once.

    The trailing prompt tokens are text after the image, so the decode positions (text position +
    rope_deltas) must land where get_rope_index puts them.
    """
    if padded:
        small = photo.resize((112, 112))
        texts = [_prompt(hf_processor, "Hi"), _prompt(hf_processor, "Who is this woman, and what is she wearing?")]
        inputs = dict(
            hf_processor(text=texts, images=[small, small], return_tensors="pt", padding=True, padding_side="left")
        )
    else:
        inputs = photo_inputs
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    vision = {"pixel_values": inputs["pixel_values"], "image_grid_thw": inputs["image_grid_thw"]}
    full = ours(ids, mask, **vision).logits
    n, k = ids.shape[1] - 6, 6
    cache = KVCache()
    out = ours(ids[:, :n], mask[:, :n], cache=cache, **vision)
    steps = [out.logits]
    for i in range(n, n + k):
        out = ours(ids[:, i : i + 1], mask[:, : i + 1], cache=cache, rope_deltas=out.rope_deltas)
        steps.append(out.logits)
    assert len(cache) == n + k
    cached = torch.cat(steps, dim=1)
    real = mask.bool()
    check_table([Row("prefill + 6 steps vs full", cached[real], full[real])])


def test_attention_weights_equal_transformers_eager_attention():
    """attention_weights on GQA heads with a padded causal mask, against transformers' eager_attention_forward."""
    from types import SimpleNamespace

    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import eager_attention_forward

    b, h, hkv, n, past, dh = 2, 4, 2, 5, 3, 16
    q, k, v = torch.randn(b, h, n, dh), torch.randn(b, hkv, past + n, dh), torch.randn(b, hkv, past + n, dh)
    pad = torch.ones(b, past + n, dtype=torch.long)
    pad[0, :2] = 0  # row 0 is left-padded
    mask = causal_mask(q.new_zeros(b, n, 1), pad, past=past)
    additive = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)  # what transformers takes
    module = SimpleNamespace(num_key_value_groups=h // hkv, training=False)
    ref_out, ref_probs = eager_attention_forward(module, q, k, v, additive, scaling=dh**-0.5)
    probs = attention_weights(q, k, mask)
    check_table([Row("attention_weights", probs, ref_probs)])
    assert torch.all(probs[0, :, :, :2] == 0)  # padding keys get exactly 0
    # a plausible bug: kv heads tiled (h0 h1 h0 h1) instead of repeated in place (h0 h0 h1 h1)
    tiled = attention_weights(q, k.repeat(1, h // hkv, 1, 1), mask)  # already H heads: nothing repeated
    assert not Row("tiled", tiled, ref_probs).ok()


@torch.no_grad()
def test_eager_attention_path_equals_sdpa(ours):
    """Asking for the maps switches a layer to probs @ v; its output is the SDPA output, up to rounding."""
    attn = ours.model.layers[0].self_attn
    c = ours.config.text_config
    x = torch.randn(2, 9, c.hidden_size)
    pos = torch.arange(9).expand(3, 2, -1)
    cos, sin = mrope_cos_sin(pos, rope_inv_freq(c.head_dim, c.rope_theta), c.mrope_section)
    pad = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 9])
    mask = causal_mask(x, pad, past=0)
    sdpa, nothing = attn(x, cos, sin, mask)
    attn.eager = True
    try:
        eager, probs = attn(x, cos, sin, mask)
    finally:
        attn.eager = False
    assert nothing is None and probs.shape == (2, attn.num_heads, 9, 9)
    real = pad.bool()  # a padding query reads nothing: eager averages every value, SDPA gives 0 (so transformers)
    check_table([Row("eager vs SDPA attention output, real queries", eager[real], sdpa[real])])
    assert torch.all(sdpa[~real] == 0)


def test_attention_layers_are_checked():
    assert attention_layers(True, 3) == {0, 1, 2} and attention_layers(False, 3) == set()
    assert attention_layers([0, 2], 3) == {0, 2} and attention_layers((), 3) == set()
    with pytest.raises(ValueError, match=r"layer index 3 is not a layer of this decoder, which has 3 layers"):
        attention_layers([0, 3], 3)
    with pytest.raises(ValueError, match=r"layer index -1 .* 3 layers \(0 to 2\)"):
        attention_layers([-1], 3)
    with pytest.raises(TypeError, match="output_attentions must be True, False or a collection"):
        attention_layers(1, 3)


@torch.no_grad()
def test_plain_causal_attention_needs_no_mask_and_equals_the_explicit_one(ours):
    """Without padding a prefill passes no mask (SDPA's is_causal): no (L, S) matrix, the same output."""
    x = torch.zeros(2, 5, 4)
    assert causal_mask(x, None, past=0) is None and causal_mask(x, torch.ones(2, 5), past=0) is None
    assert causal_mask(x[:, :1], torch.ones(2, 9), past=8) is None  # one new token reads every cached key
    # with a cache and several new tokens is_causal would align the triangle top-left: an explicit mask is kept
    assert causal_mask(x, torch.ones(2, 9), past=4).shape == (1, 1, 5, 9)
    attn = ours.model.layers[0].self_attn
    c = ours.config.text_config
    x = torch.randn(2, 9, c.hidden_size)
    cos, sin = mrope_cos_sin(torch.arange(9).expand(3, 2, -1), rope_inv_freq(c.head_dim, c.rope_theta), c.mrope_section)
    explicit = torch.ones(9, 9, dtype=torch.bool).tril()[None, None]
    check_table([Row("is_causal vs explicit causal mask", attn(x, cos, sin, None)[0], attn(x, cos, sin, explicit)[0])])
    everything = torch.ones(1, 1, 9, 9, dtype=torch.bool)  # a plausible bug: no causal mask at all
    assert not Row("no mask", attn(x, cos, sin, everything)[0], attn(x, cos, sin, explicit)[0]).ok()


# ---------------------------------------------------------------- bad input: refused by name


@torch.no_grad()
def test_prompts_longer_than_the_positions_are_refused(ours):
    text = dataclasses.replace(ours.config.text_config, max_position_embeddings=8)
    short = QwenLiteVL(dataclasses.replace(ours.config, text_config=text))  # the same weights, 8 positions
    short.load_checkpoint(ours.state_dict())
    assert short(torch.arange(1, 9)[None]).logits.shape[1] == 8  # 8 tokens: positions 0..7 fit
    with pytest.raises(ValueError, match="position id 8 is beyond max_position_embeddings = 8: the prompt"):
        short(torch.arange(1, 10)[None])
    with pytest.raises(ValueError, match="position id 8 is beyond max_position_embeddings = 8"):  # while decoding
        cache = KVCache()
        out = short(torch.arange(1, 9)[None], cache=cache)
        short(torch.tensor([[9]]), torch.ones(1, 9), cache=cache, rope_deltas=out.rope_deltas)


@torch.no_grad()
def test_decoder_shapes_are_named(ours):
    x = torch.zeros(1, 4, ours.config.text_config.hidden_size)
    with pytest.raises(ValueError, match=r"position_ids must be \(3 axes t/h/w, batch, new tokens\) = \(3, 1, 4\)"):
        ours.model(x, torch.arange(4)[None])  # 1-D text positions instead of (3, B, L)
    with pytest.raises(ValueError, match=r"attention_mask must be \(batch, cached \+ new\) = \(2, 5\), got \(2, 4\)"):
        causal_mask(torch.zeros(2, 3, 4), torch.ones(2, 4), past=2)
