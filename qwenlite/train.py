"""Teaching the tiny twin to see: synthetic questions, answer-only labels, the loss, and an AdamW loop.

Read it top to bottom like nanoGPT's train.py: 1) examples drawn from a seed (a picture or a clip, a question,
the answer and where the evidence is), 2) a batch through the real Processor and chat template, with labels
that keep only the answer's tokens and the closing <|im_end|>, 3) the loss transformers computes for
`Qwen2_5_VLForConditionalGeneration(..., labels=...)` (`ForCausalLMLoss`), 4) AdamW with warm-up and a cosine
decay, 5) greedy answers scored on held-out examples.
Shapes: B examples, L tokens (left-padded), V vocabulary.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .model import QwenLiteVL
from .processor import Processor
from .tokens import mm_token_type_ids

IGNORE = -100  # label of a token the loss skips (transformers' ignore_index)
SIZE = 112  # px: a picture is 4 x 4 merged tokens (28 px each), a clip's frame the same
FRAMES = 8  # a clip's frames: 4 temporal patches of 2 frames
COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 230)}
ORDINALS = ("first", "second", "third", "fourth")
QUESTIONS = {
    "when": "In which temporal patch does the red square appear?",
    "where": "Point to the shape.",
    "colour": "What colour is the shape?",
}
TASKS = tuple(QUESTIONS)
SIZE_WHERE = 20  # px: the smallest "where" shape; up to 24 px it stays inside its 28 px token (centre +-2 px)


# ---------------------------------------------------------------- 1) examples


@dataclass
class Example:
    """One question about one synthetic picture or clip, with its answer and where the evidence is."""

    task: str  # "when", "where" or "colour"
    pixels: torch.Tensor  # (3, H, W) picture or (T, 3, H, W) clip, uint8
    answer: str  # the text the model should say
    truth: object  # what the answer means: a temporal patch, an (x, y) point in pixels, a colour name
    evidence: torch.Tensor = field(repr=False)  # (t, h, w) bool over merged tokens: where the answer's evidence is

    @property
    def modality(self) -> str:
        return "video" if self.pixels.ndim == 4 else "image"

    def messages(self) -> list[dict]:
        """The user's turn: the picture or clip, then the question (the Qwen2.5-VL chat format)."""
        item: dict[str, object] = {"type": self.modality, self.modality: _as_input(self.pixels)}
        if self.modality == "video":  # keep the clip at 112 px: qwen-vl-utils' video default would upscale it
            item |= {"min_pixels": SIZE * SIZE, "max_pixels": SIZE * SIZE, "sample_fps": 2.0}
        return [{"role": "user", "content": [item, {"type": "text", "text": QUESTIONS[self.task]}]}]


def _as_input(pixels: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
    return list(pixels) if pixels.ndim == 4 else pixels


def noise(shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """Grey noise in [64, 192): a background with no shape in it."""
    return torch.randint(64, 192, tuple(shape), generator=generator, dtype=torch.uint8)


def draw_shape(picture: torch.Tensor, colour: str, x: int, y: int, size: int, round_: bool) -> torch.Tensor:
    """A square, or a disc when round_, of side `size` px centred on (x, y), painted into picture (3, H, W)."""
    ys, xs = torch.meshgrid(torch.arange(picture.shape[1]), torch.arange(picture.shape[2]), indexing="ij")
    if round_:
        inside = (xs - x + 0.5) ** 2 + (ys - y + 0.5) ** 2 <= (size / 2) ** 2
    else:
        inside = ((xs - x + 0.5).abs() <= size / 2) & ((ys - y + 0.5).abs() <= size / 2)
    out = picture.clone()
    out[:, inside] = torch.tensor(COLOURS[colour], dtype=torch.uint8)[:, None]
    return out


def merged_cells(x0: float, y0: float, x1: float, y1: float) -> torch.Tensor:
    """(4, 4) bool: the merged tokens (28 x 28 px) that a box [x0, x1) x [y0, y1) overlaps."""
    cells = torch.arange(SIZE // 28) * 28
    rows = (cells < y1) & (cells + 28 > y0)
    cols = (cells < x1) & (cells + 28 > x0)
    return rows[:, None] & cols[None, :]


def make_example(task: str, generator: torch.Generator) -> Example:
    """One example of a task, drawn from the generator (the same seed gives the same example everywhere).

    "where" puts its shape inside one merged token (4 x 4 tokens of 28 px) and answers that token's centre, at
    most 2 px from the shape's: the decoder sees one vector per token, so a token is the twin's unit of place.
    With the shape anywhere, pointing stayed at 23-44% held out after 200-300 steps (benchmarks/README.md has
    the runs).
    """

    def pick(n: int) -> int:
        return int(torch.randint(n, (1,), generator=generator))

    if task == "when":  # a red square in both frames of one temporal patch of 8 noise frames
        patch, size = pick(4), 20 + pick(9)
        x, y = 14 + pick(SIZE - 28), 14 + pick(SIZE - 28)
        frames = noise((FRAMES, 3, SIZE, SIZE), generator)
        for f in (2 * patch, 2 * patch + 1):
            frames[f] = draw_shape(frames[f], "red", x, y, size, round_=False)
        evidence = torch.zeros(4, 4, 4, dtype=torch.bool)
        evidence[patch] = merged_cells(x - size / 2, y - size / 2, x + size / 2, y + size / 2)
        return Example(task, frames, ORDINALS[patch], patch, evidence)
    if task == "where":  # a square or disc inside one merged token: centred within 2 px of the token's centre
        colour, size, round_ = list(COLOURS)[pick(3)], SIZE_WHERE + pick(5), bool(pick(2))
        row, column = pick(4), pick(4)
        x, y = 28 * column + 12 + pick(4), 28 * row + 12 + pick(4)
        picture = draw_shape(noise((3, SIZE, SIZE), generator), colour, x, y, size, round_)
        evidence = merged_cells(x - size / 2, y - size / 2, x + size / 2, y + size / 2)[None]
        point = (28 * column + 14, 28 * row + 14)  # the token's centre, 2 px or less from the shape's
        # Qwen2.5-VL's grounding format: absolute pixels of the (resized) picture, here to one merged token
        return Example(task, picture, f'{{"point_2d": [{point[0]}, {point[1]}]}}', (x, y), evidence)
    if task == "colour":  # one red, green or blue square or disc anywhere on noise
        colour, size, round_ = list(COLOURS)[pick(3)], 16 + pick(13), bool(pick(2))
        x, y = size // 2 + pick(SIZE - size), size // 2 + pick(SIZE - size)
        picture = draw_shape(noise((3, SIZE, SIZE), generator), colour, x, y, size, round_)
        evidence = merged_cells(x - size / 2, y - size / 2, x + size / 2, y + size / 2)[None]
        return Example(task, picture, colour, colour, evidence)
    raise ValueError(f"unknown task {task!r}; known: {TASKS}")


# ---------------------------------------------------------------- 2) a batch with labels


def make_batch(processor: Processor, examples: Sequence[Example], with_answers: bool = True) -> dict:
    """Examples -> model inputs (left-padded), and with_answers: `labels` that score only each answer.

    Every row is a chat: system, user (picture or clip, question), then the assistant's answer. Its labels are
    IGNORE (-100) everywhere except the answer's tokens and the <|im_end|> that closes it, so the model learns
    to answer and to stop, and never to predict the prompt. Left padding puts every answer at the row's end.
    """
    conversations = []
    for ex in examples:
        chat = ex.messages()
        if with_answers:
            chat = [*chat, {"role": "assistant", "content": ex.answer}]
        conversations.append(chat)
    inputs = processor.from_messages(conversations, add_generation_prompt=not with_answers)
    if with_answers:
        inputs["labels"] = answer_labels(processor, inputs["input_ids"], [ex.answer for ex in examples])
    return inputs


def answer_labels(processor: Processor, input_ids: torch.Tensor, answers: Sequence[str]) -> torch.Tensor:
    """(B, L) labels: each row's answer tokens and <|im_end|> keep their ids, every other token is IGNORE.

    The chat template ends a finished turn with "<answer><|im_end|>\\n", so the labelled tokens are the k + 1
    before the last one (k = the answer's tokens). Checked, not assumed: a row whose end differs raises.
    """
    labels = torch.full_like(input_ids, IGNORE)
    for row, answer in enumerate(answers):
        ids = processor.tokenizer(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
        end = input_ids.shape[1] - 1  # the final "\n"
        found = input_ids[row, end - len(ids) : end].tolist()
        if found != ids:
            raise ValueError(f"row {row}: the tokens before the last are {found}, not the answer {answer!r} = {ids}")
        labels[row, end - len(ids) : end] = input_ids[row, end - len(ids) : end]
    return labels


# ---------------------------------------------------------------- 3) the loss


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of next-token prediction over the labelled tokens (transformers' `ForCausalLMLoss`).

    loss = -1/|A| * sum over (b, i) in A of log softmax(logits[b, i - 1])[labels[b, i]],   A = {labels != -100}:
    the logits at position i - 1 predict token i, so labels are shifted left by one; ignored tokens (prompt,
    padding) count neither in the sum nor in |A|. logits (B, K, V) may be the last K positions only, with labels
    (B, L) cut to match: the same sum, as long as the first labelled token is after the first kept position.
    """
    labels = labels[:, -logits.shape[1] :]
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE)


def labelled_span(labels: torch.Tensor) -> int:
    """How many last positions hold every labelled token's prediction: L - (first labelled column) + 1."""
    columns = (labels != IGNORE).any(0).nonzero()
    if len(columns) == 0:
        raise ValueError("labels hold no labelled token (all are -100): nothing to learn from")
    return labels.shape[1] - int(columns[0]) + 1


def answer_loss(model: QwenLiteVL, batch: dict) -> torch.Tensor:
    """The batch's loss, with logits computed only for the last positions that predict an answer token.

    The same number as full logits give (causal_lm_loss ignores the rest), for 1/10 of the lm_head's work:
    its 151,936 rows are most of a step at the twin's widths.
    """
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, logits_to_keep=labelled_span(batch["labels"])).logits  # (B, K, V)
    return causal_lm_loss(logits, batch["labels"])


# ---------------------------------------------------------------- 4) training


@dataclass
class TrainSettings:
    """The recipe. Defaults: the one that trained the shipped twin (see train_twin)."""

    steps: int = 330
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 20
    betas: tuple[float, float] = (0.9, 0.98)
    clip: float = 1.0
    seed: int = 0
    tasks: tuple[str, ...] = ("where", "when", "where", "colour")  # one task per step, in turn: where is the slowest
    logit_scale: float = 5.0  # the final norm's weight is multiplied by this before training (see prepare)


def prepare(model: QwenLiteVL, settings: TrainSettings) -> None:
    """The recipe's starting point: the seeded twin with its final norm's weight times settings.logit_scale.

    Why: the frozen embedding's rows (tied to lm_head) have norm ~1.1, the final RMSNorm's output has norm
    sqrt(D) x weight ~ 11, so the best logit is ~13, while 151,936 random logits have a logsumexp of ~12.6:
    no answer can get a probability much above 1/2 until the weight grows, and AdamW at lr 1e-3 grows it by
    ~1e-3 a step. Starting at 5x lets the loss reach 0.001 (notebook 09 measures both).
    """
    with torch.no_grad():
        model.model.norm.weight.mul_(settings.logit_scale)


def trainable(model: QwenLiteVL) -> list[torch.nn.Parameter]:
    """Everything but the token embedding (tied to lm_head): 0.6 M numbers instead of 20 M.

    The embedding table stays at its seeded values: 151,936 rows of which an answer uses a dozen.
    """
    model.model.embed_tokens.weight.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def lr_at(step: int, settings: TrainSettings) -> float:
    """Linear warm-up to lr, then a cosine decay to lr / 10."""
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return settings.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model: QwenLiteVL, processor: Processor, settings: TrainSettings, progress: bool = True) -> list[dict]:
    """AdamW on fresh synthetic batches (never the same example twice). Returns the log: one dict per step."""
    generator = torch.Generator().manual_seed(settings.seed)
    params = trainable(model)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, betas=settings.betas, weight_decay=0.0)
    model.train()
    log = []
    bar = _progress(settings.steps, progress)
    start = time.perf_counter()
    for step in range(settings.steps):
        task = settings.tasks[step % len(settings.tasks)]  # one task per batch, in turn
        batch = make_batch(processor, [make_example(task, generator) for _ in range(settings.batch_size)])
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, settings)
        loss = answer_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.clip)
        optimizer.step()
        log.append({"step": step, "task": task, "loss": loss.item(), "seconds": time.perf_counter() - start})
        if bar is not None:
            bar.set_postfix(task=task, loss=f"{loss.item():.3f}")
            bar.update()
    if bar is not None:
        bar.close()
    model.eval()
    return log


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm  # a dependency of transformers' tokenizer

    return tqdm(total=total, desc="training")


# ---------------------------------------------------------------- 5) held-out answers


def held_out(task: str, n: int, seed: int = 10_000) -> list[Example]:
    """n examples from a seed that training never uses (training seeds are small)."""
    generator = torch.Generator().manual_seed(seed + TASKS.index(task))
    return [make_example(task, generator) for _ in range(n)]


def parse_answer(task: str, text: str) -> object:
    """The model's text -> what it means (None when it does not parse): a temporal patch, a point, a colour."""
    text = text.strip()
    if task == "when":
        return ORDINALS.index(text) if text in ORDINALS else None
    if task == "where":
        m = re.fullmatch(r'\{"point_2d": \[(\d+), (\d+)\]\}', text)
        return (int(m[1]), int(m[2])) if m else None
    return text if text in COLOURS else None


def is_correct(task: str, truth: object, answer: object) -> bool:
    """Exact for "when" and "colour"; a point within one merged token (28 px) of the shape's centre for "where"."""
    if answer is None:
        return False
    if task == "where":
        return math.dist(truth, answer) <= 28  # type: ignore[arg-type]  # both (x, y) points here
    return answer == truth


@torch.no_grad()
def answer(model, processor: Processor, examples: Sequence[Example], max_new_tokens: int = 16) -> list[str]:
    """Greedy answers (text) of any model with qwenlite's or transformers' generate, one batch."""
    inputs = make_batch(processor, examples, with_answers=False)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, repetition_penalty=1.0)
    return processor.batch_decode(out[:, inputs["input_ids"].shape[1] :])


def accuracy(model, processor: Processor, examples: Sequence[Example], batch_size: int = 64) -> float:
    """Share of examples answered correctly by greedy decoding."""
    right = 0
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        for ex, text in zip(chunk, answer(model, processor, chunk), strict=True):
            right += is_correct(ex.task, ex.truth, parse_answer(ex.task, text))
    return right / len(examples)


# ---------------------------------------------------------------- 6) what the answer looks at


def answer_queries(labels: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: the positions whose logits say the answer (each one before a labelled token)."""
    queries = torch.zeros_like(labels, dtype=torch.bool)
    queries[:, :-1] = labels[:, 1:] != IGNORE
    return queries


def answer_attention(
    model: QwenLiteVL, processor: Processor, examples: Sequence[Example], batch_size: int = 32
) -> Iterator[tuple[Example, torch.Tensor]]:
    """Each example with its answer's attention to its picture or clip: (layers, answer queries, vision tokens).

    Teacher-forced on its own answer, in batches: the rows of the queries that predict the answer's tokens (the
    first one says the answer's first token), averaged over heads, over the picture's or clip's merged tokens in
    (t, h, w) order. The part of a query's attention on the text is left out: a row sums to the picture's share.
    """
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            chunk = examples[i : i + batch_size]
            batch = make_batch(processor, chunk)
            queries = answer_queries(batch.pop("labels"))
            out = model(**batch, output_attentions=True, logits_to_keep=1)
            pads = mm_token_type_ids(batch["input_ids"], model.config) > 0  # the picture's or clip's tokens
            for row, example in enumerate(chunk):
                vision = pads[row].nonzero().flatten()
                rows = [probs[row].double().mean(0)[queries[row]][:, vision] for probs in out.attentions]
                yield example, torch.stack(rows)


def evidence_attention(
    model: QwenLiteVL, processor: Processor, examples: Sequence[Example], batch_size: int = 32, per_query: bool = False
) -> torch.Tensor:
    """(layers,) how much more of the answer's attention to the picture lands on the evidence than uniform would.

    For each example (`answer_attention`): the queries that predict the answer's tokens give A_ev (attention on
    the evidence's merged tokens) and A_vis (on all the picture's or clip's tokens). The ratio
    (A_ev / A_vis) / (n_ev / n_vis) is 1 when the answer looks at the picture uniformly, and x when the evidence
    gets x times its share. Averaged over the answer's queries, then over the examples.
    per_query: (layers, answer queries) instead, each query's own ratio (every answer must be equally long).
    """
    per_example = []  # each example's (layers,) or (layers, answer queries) ratios
    for example, att in answer_attention(model, processor, examples, batch_size):
        on_evidence = example.evidence.flatten()  # (vision tokens,) bool, in the same (t, h, w) order
        share = float(on_evidence.double().mean())
        ratio = att[..., on_evidence].sum(-1) / att.sum(-1) / share  # (layers, answer queries)
        per_example.append(ratio if per_query else ratio.mean(-1))
    return torch.stack(per_example).mean(0)


def attention_peaks(
    model: QwenLiteVL, processor: Processor, examples: Sequence[Example], batch_size: int = 32
) -> torch.Tensor:
    """(examples, layers) for clips: the temporal patch that gets the most of the answer's first query's attention.

    From `answer_attention`: the first answer query, heads averaged, its attention summed over each temporal
    patch's merged tokens. Compare with `Example.truth`: a layer that looks at the marker peaks on the truth; a
    layer that peaks on one patch whatever the clip does not.
    """
    for example in examples:
        if example.modality != "video":
            raise ValueError(f"attention_peaks: a {example.task!r} example holds a picture; it needs a clip")
    peaks = []
    for example, att in answer_attention(model, processor, examples, batch_size):
        per_patch = att[:, 0].reshape(att.shape[0], example.evidence.shape[0], -1).sum(-1)  # (layers, patches)
        peaks.append(per_patch.argmax(-1))
    return torch.stack(peaks)


# ---------------------------------------------------------------- 7) the shipped twin


def trained_state(model: QwenLiteVL) -> dict[str, torch.Tensor]:
    """What training changed: every tensor but the frozen embedding (and lm_head, which is tied to it)."""
    frozen = {"model.embed_tokens.weight", "lm_head.weight"}
    return {k: v.detach().float().contiguous() for k, v in model.state_dict().items() if k not in frozen}
