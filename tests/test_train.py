"""qwenlite.train: examples, the answer-only labels and the loss, checked against transformers on the same batch.

The loss must equal `Qwen2_5_VLForConditionalGeneration(**inputs, labels=...).loss`, with transformers' labels
stated independently of qwenlite's (from transformers' own processor: what the assistant's turn adds to the
prompt), and every parameter's gradient must agree within the tolerance policy. Four training bugs must fail it.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qwenlite import Processor, get_rope_index
from qwenlite import train as T
from qwenlite_course import checkpoint
from qwenlite_course.reference import BAR, Row, check_table, gradient_rows, load_models, reference_processor, tolerance

pytestmark = pytest.mark.slow  # gradients against transformers and a short training run: about 65 s

# ---------------------------------------------------------------- examples


def test_examples_are_the_same_from_the_same_seed():
    a = [T.make_example(t, torch.Generator().manual_seed(3)) for t in T.TASKS]
    b = [T.make_example(t, torch.Generator().manual_seed(3)) for t in T.TASKS]
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.pixels, y.pixels) and x.answer == y.answer and torch.equal(x.evidence, y.evidence)


def test_the_when_clip_has_its_marker_in_both_frames_of_one_temporal_patch_only():
    g = torch.Generator().manual_seed(1)
    for _ in range(8):
        ex = T.make_example("when", g)
        red = (ex.pixels[:, 0] == T.COLOURS["red"][0]) & (ex.pixels[:, 1] == T.COLOURS["red"][1])  # (T, H, W)
        frames_with_marker = red.flatten(1).sum(1).nonzero().flatten().tolist()
        assert frames_with_marker == [2 * ex.truth, 2 * ex.truth + 1]
        assert ex.answer == T.ORDINALS[ex.truth]
        assert ex.evidence.shape == (4, 4, 4)
        assert ex.evidence.flatten(1).any(1).nonzero().flatten().tolist() == [ex.truth]


def test_the_where_shape_sits_inside_one_merged_token_and_the_answer_is_that_tokens_centre():
    g = torch.Generator().manual_seed(2)
    cells = set()
    for _ in range(32):
        ex = T.make_example("where", g)
        x, y = ex.truth
        coloured = (ex.pixels.int() - ex.pixels[:, y, x].int()[:, None, None]).abs().sum(0) == 0  # (H, W)
        ys, xs = coloured.nonzero().float().mean(0).tolist()
        assert abs(xs + 0.5 - x) <= 1 and abs(ys + 0.5 - y) <= 1  # truth: the centre of the painted pixels
        rows, cols = coloured.nonzero().unbind(1)
        token = (int(cols[0]) // 28, int(rows[0]) // 28)  # (column, row) of the merged token
        assert (cols // 28 == token[0]).all() and (rows // 28 == token[1]).all()  # every painted pixel in it
        assert ex.evidence[0].nonzero().tolist() == [[token[1], token[0]]]  # the evidence: that token alone
        point = T.parse_answer("where", ex.answer)
        assert point == (28 * token[0] + 14, 28 * token[1] + 14)  # the token's centre, in pixels
        assert abs(point[0] - x) <= 2 and abs(point[1] - y) <= 2
        cells.add(token)
    assert len(cells) > 10  # the shapes go all over the 4 x 4 tokens


def test_parse_and_score():
    assert T.parse_answer("when", "third") == 2 and T.parse_answer("when", "3rd") is None
    assert T.parse_answer("colour", "blue") == "blue" and T.parse_answer("colour", "cyan") is None
    assert T.is_correct("where", (50, 50), (70, 50)) and not T.is_correct("where", (50, 50), (70, 71))
    assert not T.is_correct("when", 1, None)


def test_lr_warms_up_then_decays_to_a_tenth():
    s = T.TrainSettings(steps=100, warmup=10, lr=1e-3)
    lrs = [T.lr_at(i, s) for i in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False)) and lrs[-1] == pytest.approx(1e-4, rel=0.01)


# ---------------------------------------------------------------- labels, stated twice


@pytest.fixture(scope="module")
def processors(ckpt):
    return Processor.from_pretrained(ckpt), reference_processor(ckpt)


def examples(kind: str, n: int = 3, seed: int = 0) -> list[T.Example]:
    g = torch.Generator().manual_seed(seed)
    tasks = {"image": ["where", "colour", "colour"], "video": ["when"] * n, "mixed": ["when", "where", "colour"]}[kind]
    return [T.make_example(t, g) for t in tasks[:n]]


def reference_labels(hf_processor, batch: dict, exs: list[T.Example]) -> torch.Tensor:
    """Labels from transformers' processor alone: the tokens a finished assistant turn adds to the prompt, minus the
    template's final newline. Rows are left-padded, so those tokens end one before each row's last column."""
    labels = torch.full_like(batch["input_ids"], T.IGNORE)
    tok = hf_processor.tokenizer
    for row, ex in enumerate(exs):
        chat = ex.messages()
        prompt = hf_processor.apply_chat_template(chat, add_generation_prompt=True)
        full = hf_processor.apply_chat_template([*chat, {"role": "assistant", "content": ex.answer}])
        assert full.startswith(prompt) and full.endswith("\n")
        added = tok(full[len(prompt) : -1], add_special_tokens=False)["input_ids"]  # answer + <|im_end|>
        end = batch["input_ids"].shape[1] - 1
        labels[row, end - len(added) : end] = torch.tensor(added)
    return labels


@pytest.mark.parametrize("kind", ["image", "video", "mixed"])
def test_labels_keep_only_the_answer_and_im_end_as_transformers_processor_states_them(processors, kind):
    ours, hf = processors
    exs = examples(kind)
    batch = T.make_batch(ours, exs)
    assert torch.equal(batch["labels"], reference_labels(hf, batch, exs))
    labelled = batch["labels"] != T.IGNORE
    assert (batch["attention_mask"][labelled] == 1).all()  # never a padding token
    assert (batch["labels"][labelled][-1] == 151645).item()  # the last labelled token closes the turn
    assert batch["attention_mask"][:, 0].min() == 0 or kind == "video"  # the image batches are left-padded


def test_a_row_whose_end_is_not_its_answer_is_refused(processors):
    ours, _ = processors
    batch = T.make_batch(ours, examples("image"))
    with pytest.raises(ValueError, match="not the answer 'purple'"):
        T.answer_labels(ours, batch["input_ids"], ["purple", "red", "blue"])


# ---------------------------------------------------------------- loss and gradients against transformers


@pytest.fixture(scope="module")
def models():
    """Both libraries on the seeded twin, where training starts: its answer loss is ~10 nats, so every gradient
    carries signal. (On the trained twin the loss of "when" and "colour" is ~0.001 and a bfloat16 gradient is
    rounding noise; the float32 check on the checkpoint in use is the last test of this section.)"""
    from qwenlite_course.reference import RunSettings

    pairs = {}
    for dtype in (torch.float32, torch.bfloat16):
        ours, ref = load_models(checkpoint.tiny_twin(), RunSettings(dtype=dtype))
        for model in (ours, ref):
            model.train()
            for name, p in model.named_parameters():
                p.requires_grad_("embed_tokens" not in name)  # the tied embedding stays frozen, as in training
        pairs[dtype] = ours, ref
    return pairs


def losses_and_grads(ours, ref, batch, ref_labels):
    for model in (ours, ref):
        model.zero_grad(set_to_none=True)
    loss = T.answer_loss(ours, batch)
    loss.backward()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    # after a video transformers 5.x numbers the text by its own rule (notebook 06): give it qwenlite's ids,
    # the released model's rule, which the position tests check on their own
    given = {}
    if "pixel_values_videos" in batch:
        keys = ("input_ids", "image_grid_thw", "video_grid_thw", "second_per_grid_ts", "attention_mask")
        given["position_ids"] = get_rope_index(*(batch.get(k) for k in keys), config=ours.config)[0]
    ref_loss = ref(**inputs, **given, labels=ref_labels).loss
    ref_loss.backward()
    return loss.detach(), ref_loss.detach()


def training_rows(ours, ref, batch, ref_labels) -> list[Row]:
    loss, ref_loss = losses_and_grads(ours, ref, batch, ref_labels)
    dtype = next(ours.parameters()).dtype  # the loss is float32, but from bfloat16 logits in a bf16 run
    return [Row("loss", loss, ref_loss, atol=tolerance(ref_loss, dtype)), *gradient_rows(ours, ref)]


@pytest.mark.parametrize("kind", ["image", "video", "mixed"])
def test_loss_and_every_gradient_equal_transformers_in_float32(models, processors, kind):
    ours, ref = models[torch.float32]
    exs = examples(kind)
    batch = T.make_batch(processors[0], exs)
    rows = training_rows(ours, ref, batch, reference_labels(processors[1], batch, exs))
    assert len(rows) > 60 and any("visual.blocks.0" in r.name for r in rows)  # the tower trains too
    check_table(rows, title=f"{kind} batch, float32")


GRAD_SPREAD = 3  # no gradient more than this many times as far from float32 as transformers-bf16's (measured: 1.8)


@pytest.mark.parametrize("kind", ["mixed"])  # a clip and two pictures, left-padded: every path in one batch
def test_bfloat16_gradients_are_as_close_to_float32_as_transformers_are(models, processors, kind):
    """In bfloat16 every gradient is within the policy, and qwenlite-bf16 is about as close to a float32 run as
    transformers-bf16 is. The activations' bar (`float32_bar`, BAR per tensor) is too sharp for gradients: each
    tensor's max |diff| is one sample of the rounding noise of a whole backward pass, and on this batch 2 of 78
    tensors land at 1.6x and 1.8x. So: the median over the parameters of (qwenlite's distance / transformers')
    within BAR, and every one within GRAD_SPREAD. A detached or mis-wired branch is orders of magnitude off."""
    exs = examples(kind)
    batch = T.make_batch(processors[0], exs)
    labels = reference_labels(processors[1], batch, exs)
    ours32, ref32 = models[torch.float32]
    fp32 = training_rows(ours32, ref32, batch, labels)
    ours16, ref16 = models[torch.bfloat16]
    bf16 = training_rows(ours16, ref16, batch, labels)
    check_table(bf16, title=f"{kind} batch, bfloat16")
    ratios = {
        a.name: Row(a.name, a.ours, b.ref).diff() / max(Row(a.name, a.ref, b.ref).diff(), 2**-9)
        for a, b in zip(bf16, fp32, strict=True)
    }
    median, worst = sorted(ratios.values())[len(ratios) // 2], max(ratios, key=ratios.get)
    print(f"distance to float32, qwenlite-bf16 / transformers-bf16: median {median:.2f}, worst {ratios[worst]:.2f}")
    assert median <= BAR and ratios[worst] <= GRAD_SPREAD, (median, worst, ratios[worst])


def test_loss_and_every_gradient_equal_transformers_on_the_checkpoint_in_use(ours, ref, processors):
    exs = examples("mixed", seed=5)
    batch = T.make_batch(processors[0], exs)
    frozen = {}
    try:
        for model in (ours, ref):
            for name, p in model.named_parameters():
                frozen[p] = p.requires_grad
                p.requires_grad_("embed_tokens" not in name)
        check_table(training_rows(ours, ref, batch, reference_labels(processors[1], batch, exs)), "checkpoint in use")
    finally:
        for model in (ours, ref):
            model.zero_grad(set_to_none=True)
        for p, flag in frozen.items():
            p.requires_grad_(flag)


# ---------------------------------------------------------------- four training bugs


def labels_not_shifted(mp):
    def loss(logits, labels):
        labels = labels[:, -logits.shape[1] :]
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=T.IGNORE)

    mp.setattr(T, "causal_lm_loss", loss)


def loss_on_prompt_tokens(mp):
    original = T.answer_labels

    def labels(processor, input_ids, answers):
        out = original(processor, input_ids, answers)
        return torch.where(input_ids != processor.tokenizer.pad_token_id, input_ids, out)

    mp.setattr(T, "answer_labels", labels)


def pad_tokens_counted_in_the_mean(mp):
    original = T.answer_labels

    def labels(processor, input_ids, answers):
        out = original(processor, input_ids, answers)
        return torch.where(input_ids == processor.tokenizer.pad_token_id, input_ids, out)

    mp.setattr(T, "answer_labels", labels)


def vision_tower_detached(mp, model):
    forward = model.visual.forward
    mp.setattr(model.visual, "forward", lambda *a, **k: forward(*a, **k).detach())


@pytest.mark.parametrize(
    "mutation", [labels_not_shifted, loss_on_prompt_tokens, pad_tokens_counted_in_the_mean, vision_tower_detached]
)
def test_each_training_bug_fails_the_check(models, processors, mutation, monkeypatch):
    ours, ref = models[torch.float32]
    exs = examples("mixed")
    if mutation is vision_tower_detached:
        mutation(monkeypatch, ours)
    else:
        mutation(monkeypatch)
    batch = T.make_batch(processors[0], exs)
    with pytest.raises(AssertionError, match="outside tolerance"):
        check_table(training_rows(ours, ref, batch, reference_labels(processors[1], batch, exs)), title="mutated")


# ---------------------------------------------------------------- training runs (CI's smoke test)


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(processors):
    from qwenlite import QwenLiteVL

    model = QwenLiteVL.from_pretrained(checkpoint.tiny_twin())
    settings = T.TrainSettings()
    T.prepare(model, settings)
    params = T.trainable(model)
    assert sum(p.numel() for p in params) < 0.05 * sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(params, lr=settings.lr)
    batch = T.make_batch(processors[0], examples("mixed"))
    losses = []
    for _ in range(6):
        loss = T.answer_loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def _transformers_evidence_ratios(ref, processor, config, example: T.Example, evidence: torch.Tensor) -> torch.Tensor:
    """(layers, answer queries) from transformers' eager attention, found independently of train.py: the queries
    that predict the answer's tokens and <|im_end|> from the tokenised answer, the picture's tokens from the pad id."""
    from qwenlite_course.reference import reference_eager

    batch = T.make_batch(processor, [example])
    batch.pop("labels")
    ids = batch["input_ids"][0]
    answer = processor.tokenizer(example.answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
    end = len(ids) - 1  # the template's final newline
    queries = list(range(end - len(answer) - 1, end - 1))
    pads = (ids == config.image_token_id).nonzero().flatten()
    on = pads[evidence.flatten()]
    rows = []
    for probs in reference_eager(ref, batch | {"logits_to_keep": 1}).attentions:
        att = probs[0].double().mean(0)[queries]
        rows.append(att[:, on].sum(1) / att[:, pads].sum(1) / (len(on) / len(pads)))
    return torch.stack(rows)


def test_evidence_attention_is_transformers_attention_on_the_evidence(ours, ref, processor, config):
    """train.evidence_attention (per query, and its mean over the answer) equals the same ratio computed from
    transformers' eager attention; mutation: the evidence moved one token over gives other numbers."""
    examples = T.held_out("where", 2)
    expected = torch.stack([_transformers_evidence_ratios(ref, processor, config, e, e.evidence) for e in examples])
    got = T.evidence_attention(ours, processor, examples, per_query=True)  # (layers, answer queries)
    assert got.shape == expected.shape[1:]
    assert (got - expected.mean(0)).abs().max() <= tolerance(expected.float())
    mean = T.evidence_attention(ours, processor, examples)  # (layers,)
    assert torch.allclose(mean, expected.mean(-1).mean(0), rtol=1e-4)
    moved = torch.stack(
        [_transformers_evidence_ratios(ref, processor, config, e, e.evidence.roll(1, -1)) for e in examples]
    )
    assert (got - moved.mean(0)).abs().max() > 0.1


def test_attention_peaks_are_transformers_attention_per_temporal_patch(ours, ref, processor, config):
    """train.attention_peaks equals the argmax over temporal patches of transformers' eager attention from the
    answer's first query (the last prompt token), heads averaged, on the released positions; a picture is refused
    by name. (With transformers' own 5.x video positions the peaks differ: the video-position disagreement.)"""
    from qwenlite_course.reference import reference_eager

    examples = T.held_out("when", 4)
    expected = []
    for example in examples:
        batch = T.make_batch(processor, [example])
        batch.pop("labels")
        ids = batch["input_ids"][0]
        answer = processor.tokenizer(example.answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
        query = len(ids) - 1 - len(answer) - 1  # the token before the answer (the template ends in a newline)
        pads = (ids == config.video_token_id).nonzero().flatten()
        t = example.evidence.shape[0]
        released, _ = get_rope_index(  # the released video positions, which the twin learnt with (not tf 5.x's)
            batch["input_ids"], None, batch["video_grid_thw"], batch["second_per_grid_ts"], config=config
        )
        attentions = reference_eager(ref, batch | {"logits_to_keep": 1}, released).attentions
        expected.append([int(p[0].double().mean(0)[query, pads].reshape(t, -1).sum(1).argmax()) for p in attentions])
    assert T.attention_peaks(ours, processor, examples).tolist() == expected
    with pytest.raises(ValueError, match="needs a clip"):
        T.attention_peaks(ours, processor, T.held_out("where", 1))
