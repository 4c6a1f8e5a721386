"""get_rope_index and decode positions against transformers 5.x, hand-worked examples and random layouts.

Where the two rules agree (no video whose temporal ids outgrow its spatial extent) qwenlite equals
transformers exactly. After such a video they differ by a gap that these tests compute by hand.
Random layouts are built from token ids directly: <|vision_start|>, N pad tokens, <|vision_end|>.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import chat_inputs
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from qwenlite import Processor, get_rope_index
from qwenlite.fusion import mm_token_type_ids
from qwenlite.rope_index import decode_position_ids, vision_position_ids

PAD = 151643  # <|endoftext|>, the tokenizer's padding token
VS, VE, IMG, VID = 151652, 151653, 151655, 151656
WORD = 9707  # any ordinary text token
SECONDS = [0.5, 1.0, 2.0, 0.25, 2 / 3, 1 / 12, 0.1, 1.5, 4 / 3]  # second_per_grid_t = 2 / fps for assorted fps


# ----------------------------------------------------------------------------- helpers


def transformers_rope_index(ref, config, ids, mask=None, images=None, videos=None, seconds=None):
    return ref.model.get_rope_index(
        ids,
        mm_token_type_ids=mm_token_type_ids(ids, config),
        image_grid_thw=images,
        video_grid_thw=videos,
        second_per_grid_ts=seconds,
        attention_mask=mask,
    )


def encode(rows: list[tuple[list[tuple], int]]) -> tuple[torch.Tensor, torch.Tensor, list, list, list]:
    """Rows of segments ("text", n) / ("image", (t, h, w)) / ("video", (t, h, w), s) with left padding -> tensors."""
    seqs, images, videos, seconds = [], [], [], []
    for segments, _ in rows:
        ids = []
        for seg in segments:
            if seg[0] == "text":
                ids += [WORD + k for k in range(seg[1])]
            else:
                t, h, w = seg[1]
                ids += [VS] + [IMG if seg[0] == "image" else VID] * (t * h * w // 4) + [VE]
                (images if seg[0] == "image" else videos).append(list(seg[1]))
                if seg[0] == "video":
                    seconds.append(seg[2])
        seqs.append(ids)
    length = max(len(s) + pad for s, (_, pad) in zip(seqs, rows, strict=True))
    ids = torch.tensor([[PAD] * (length - len(s)) + s for s in seqs])
    mask = torch.tensor([[0] * (length - len(s)) + [1] * len(s) for s in seqs])
    return ids, mask, images, videos, seconds


def as_grid(rows: list) -> torch.Tensor | None:
    return torch.tensor(rows) if rows else None


def oracle(ids: torch.Tensor, mask: torch.Tensor, images, videos, seconds, tokens_per_second=2) -> list[list]:
    """The released rule token by token: per row, a list of (t, h, w) for the real tokens, written without grids."""
    pending_images, pending_videos = iter(images), iter(zip(videos, seconds, strict=True))
    rows = []
    for row, keep in zip(ids.tolist(), mask.tolist(), strict=True):
        real = [tok for tok, k in zip(row, keep, strict=True) if k]
        out, top, i = [], -1, 0
        while i < len(real):
            if real[i] in (IMG, VID):
                if real[i] == IMG:
                    (t, h, w), interval = next(pending_images), np.float32(1)
                else:
                    (t, h, w), s = next(pending_videos)
                    interval = np.float32(tokens_per_second) * np.float32(s)  # float32, like the processor
                h, w, start = h // 2, w // 2, top + 1
                for k in range(t * h * w):
                    frame, r, c = k // (h * w), (k // w) % h, k % w
                    out.append((start + math.floor(np.float32(frame) * interval), start + r, start + c))
                    top = max(top, *out[-1])
                i += t * h * w
            else:
                top += 1
                out.append((top, top, top))
                i += 1
        rows.append(out)
    return rows


def video_gaps(grid, seconds: float, tokens_per_second: float = 2) -> int:
    """How far the released rule puts the next text above transformers 5.x's, for one video (0 if they agree)."""
    t, h, w = grid
    t_max = math.floor(np.float32(t - 1) * np.float32(tokens_per_second) * np.float32(seconds))
    return max(t_max + 1 - max(h, w) // 2, 0)


# ----------------------------------------------------------------------------- hand-worked examples


def test_vision_position_ids_docstring_examples():
    ids = vision_position_ids(5, torch.tensor([1, 4, 6]), 2)
    assert ids.tolist() == [[5] * 6, [5, 5, 5, 6, 6, 6], [5, 6, 7, 5, 6, 7]]
    assert vision_position_ids(5, [3, 2, 2], 2, 2.0)[0].tolist() == [5, 7, 9]
    assert vision_position_ids(5, [3, 2, 2], 2, 0.5)[0].tolist() == [5, 5, 6]


def test_image_prompt_worked_example(config, ref):
    """'ab<img 2x2 merged>c': the docstring example, equal to transformers (images: the rules agree)."""
    ids = torch.tensor([[WORD, WORD + 1, IMG, IMG, IMG, IMG, WORD + 2]])
    grid = torch.tensor([[1, 4, 4]])
    pos, delta = get_rope_index(ids, grid, config=config)
    assert pos[:, 0].tolist() == [[0, 1, 2, 2, 2, 2, 4], [0, 1, 2, 2, 3, 3, 4], [0, 1, 2, 3, 2, 3, 4]]
    assert delta.tolist() == [[5 - 7]]
    theirs, their_delta = transformers_rope_index(ref, config, ids, images=grid)
    assert torch.equal(pos, theirs) and torch.equal(delta, their_delta)


def test_text_after_a_video_released_rule_vs_transformers(config, ref):
    """'a <vs> video(t=3, 2x2 merged, 1 s per grid) <ve> b': the exact ids of both rules, written out by hand.

    Video ids start at 2: t = 2 + floor(k * 2 tokens/s * 1 s) = 2, 4, 6; h = 2 + [0,0,1,1]; w = 2 + [0,1,0,1].
    Released rule: <ve> = max(6) + 1 = 7, b = 8, rope_deltas = 9 - 16 = -7.
    transformers 5.x: <ve> = 2 + max(2, 2) = 4, b = 5 (below the video's t = 6), rope_deltas = 7 - 16 = -9.
    """
    ids = torch.tensor([[WORD, VS] + [VID] * 12 + [VE, WORD + 1]])
    grid, seconds = torch.tensor([[3, 4, 4]]), torch.tensor([1.0])
    video_t = [2] * 4 + [4] * 4 + [6] * 4
    video_h, video_w = [2, 2, 3, 3] * 3, [2, 3, 2, 3] * 3
    released = [[0, 1, *video_t, 7, 8], [0, 1, *video_h, 7, 8], [0, 1, *video_w, 7, 8]]
    transformers_524 = [[0, 1, *video_t, 4, 5], [0, 1, *video_h, 4, 5], [0, 1, *video_w, 4, 5]]

    pos, delta = get_rope_index(ids, video_grid_thw=grid, second_per_grid_ts=seconds, config=config)
    theirs, their_delta = transformers_rope_index(ref, config, ids, videos=grid, seconds=seconds)
    assert pos[:, 0].tolist() == released and delta.tolist() == [[-7]]
    assert theirs[:, 0].tolist() == transformers_524 and their_delta.tolist() == [[-9]]
    # the difference: identical up to the end of the video, then transformers restarts 3 lower
    assert (pos - theirs)[:, 0].tolist() == [[0] * 14 + [3, 3]] * 3
    assert video_gaps([3, 4, 4], 1.0) == 3


@pytest.mark.parametrize(
    ("seconds", "expected_t"),
    [(0.5, [0, 1, 2, 3]), (0.25, [0, 0, 1, 1]), (2 / 3, [0, 1, 2, 4]), (1 / 12, [0, 0, 0, 0]), (2.0, [0, 4, 8, 12])],
)
def test_absolute_time_is_floored_in_floating_point(seconds, expected_t, config, ref):
    """t = floor(k * second_per_grid_t * tokens_per_second); 0.5 s is one step per group, not 0 (v4.5x's int cast)."""
    ids = torch.tensor([[VID] * 4])  # grid (4, 2, 2): one merged token per temporal group
    grid = torch.tensor([[4, 2, 2]])
    spg = torch.tensor([seconds], dtype=torch.float32)
    pos, _ = get_rope_index(ids, video_grid_thw=grid, second_per_grid_ts=spg, config=config)
    assert pos[0, 0].tolist() == expected_t
    theirs, _ = transformers_rope_index(ref, config, ids, videos=grid, seconds=spg)
    assert torch.equal(pos[0], theirs[0])  # inside the first span both rules agree


def test_text_only_and_left_padding_match_transformers(config, ref):
    ids, mask, *_ = encode([([("text", 5)], 0), ([("text", 2)], 0)])
    pos, delta = get_rope_index(ids, attention_mask=mask, config=config)
    assert pos[:, 1].tolist() == [[0, 0, 0, 0, 1]] * 3  # padding gets 0, the real tokens count from 0
    assert delta.tolist() == [[0], [0]]
    theirs, their_delta = transformers_rope_index(ref, config, ids, mask)
    assert torch.equal(pos, theirs) and torch.equal(delta, their_delta)


# ----------------------------------------------------------------------------- processor-built prompts


@pytest.fixture(scope="module")
def photos(photo_path) -> list[Image.Image]:
    photo = Image.open(photo_path).convert("RGB")
    return [photo.resize((112, 84)), photo.crop((100, 50, 400, 350)).resize((56, 84)), photo.resize((84, 140))]


def clip(frames: int, width: int, height: int) -> np.ndarray:
    """A tiny synthetic clip: a bright square that moves 6 px to the right per frame."""
    video = np.zeros((frames, height, width, 3), dtype=np.uint8)
    for f in range(frames):
        video[f, 10:30, 10 + 6 * f : 30 + 6 * f] = 255
    return video


PROMPTS = {
    "text only, left padded": ([["text"], ["text", "text"]], 0, []),
    "one image": ([["image", "text"]], 1, []),
    "three images": ([["image", "text", "image", "image", "text"]], 3, []),
    "images, left padded": ([["image", "text"], ["text", "image", "image"]], 3, []),
    # video grid (4, 4, 6) -> merged 2x3 per frame group; t ids 0,0,1,2 (1/3 s) and 0,1 (0.5 s) stay below 3
    "videos within their spatial extent": ([["video", "text", "image", "video"]], 1, [(8, 1 / 3), (4, 0.5)]),
}


@pytest.mark.parametrize("case", PROMPTS)
def test_processor_prompts_match_transformers(case, config, ref, hf_processor, photos):
    prompts, n_images, videos = PROMPTS[case]
    clips = [clip(n, 84, 56) for n, _ in videos]
    inputs = chat_inputs(hf_processor, prompts, photos[:n_images], clips, [s for _, s in videos])
    args = [inputs.get(k) for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts", "attention_mask")]
    if args[1] is not None:  # the videos really are ones where the two rules agree
        assert all(video_gaps(g, float(s)) == 0 for g, s in zip(args[1].tolist(), args[2], strict=True))
    pos, delta = get_rope_index(inputs["input_ids"], *args, config=config)
    theirs, their_delta = ref.model.get_rope_index(
        inputs["input_ids"],
        mm_token_type_ids=inputs["mm_token_type_ids"],
        image_grid_thw=args[0],
        video_grid_thw=args[1],
        second_per_grid_ts=args[2],
        attention_mask=args[3],
    )
    assert torch.equal(pos, theirs)
    assert torch.equal(delta, their_delta)


# ----------------------------------------------------------------------------- random layouts

even = st.integers(1, 4).map(lambda a: 2 * a)
segment = st.one_of(
    st.tuples(st.just("text"), st.integers(1, 5)),
    st.tuples(st.just("image"), st.tuples(st.just(1), even, even)),
    st.tuples(st.just("video"), st.tuples(st.integers(1, 5), even, even), st.sampled_from(SECONDS)),
)
layouts = st.lists(st.tuples(st.lists(segment, min_size=1, max_size=5), st.integers(0, 3)), min_size=1, max_size=3)


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(layouts)
def test_random_layouts(config, ref, rows):
    ids, mask, images, videos, seconds = encode(rows)
    grids = (as_grid(images), as_grid(videos), torch.tensor(seconds) if seconds else None)
    pos, delta = get_rope_index(ids, *grids, attention_mask=mask, config=config)
    theirs, their_delta = transformers_rope_index(ref, config, ids, mask, *grids)
    expected = oracle(ids, mask, images, videos, seconds, config.vision_config.tokens_per_second)

    assert pos.shape == (3, *ids.shape) and delta.shape == (ids.shape[0], 1)
    assert (pos[:, mask == 0] == 0).all()  # padding gets 0
    pending_images, pending_videos = iter(images), iter(zip(videos, seconds, strict=True))
    for b in range(ids.shape[0]):
        real = mask[b].bool()
        row, row_ids, row_theirs = pos[:, b, real], ids[b, real], theirs[:, b, real]
        # 1) the independent token-by-token oracle
        assert row.T.tolist() == [list(p) for p in expected[b]]
        # 2) rope_deltas = max + 1 - number of real tokens
        assert int(delta[b]) == int(row.max()) + 1 - int(real.sum())
        # 3) text: one id on all axes, equal to the max of everything before it + 1 (0 for the first token)
        running = torch.cat([torch.tensor([-1]), row.max(0).values.cummax(0).values[:-1]])
        text = (row_ids != IMG) & (row_ids != VID)
        assert (row[0, text] == row[1, text]).all() and (row[1, text] == row[2, text]).all()
        assert torch.equal(row[0, text], running[text] + 1)
        # 4) vs transformers 5.x: equal until a video outgrows its spatial extent, then lower by the summed gaps
        offsets, gap, i = [], 0, 0
        while i < len(row_ids):
            token = int(row_ids[i])
            if token == IMG:
                n, extra = math.prod(next(pending_images)) // 4, 0
            elif token == VID:
                grid, s = next(pending_videos)
                n, extra = math.prod(grid) // 4, video_gaps(grid, s, config.vision_config.tokens_per_second)
            else:
                n, extra = 1, 0
            offsets += [gap] * n  # a span starts where the previous gap left it; only later tokens see its own gap
            gap += extra
            i += n
        assert (row - row_theirs).tolist() == [offsets] * 3
    if not any(video_gaps(g, s) for g, s in zip(videos, seconds, strict=True)):
        assert torch.equal(pos, theirs) and torch.equal(delta, their_delta)


# ----------------------------------------------------------------------------- decode positions


@settings(max_examples=60, deadline=None)
@given(layouts, st.integers(1, 4))
def test_decode_continues_the_prefill(config, rows, new):
    """Prefill ids then decode ids = get_rope_index of the prompt followed by `new` text tokens, padded or not."""
    ids, mask, images, videos, seconds = encode(rows)
    grids = (as_grid(images), as_grid(videos), torch.tensor(seconds) if seconds else None)
    pos, delta = get_rope_index(ids, *grids, attention_mask=mask, config=config)
    longer = torch.cat([ids, torch.full((ids.shape[0], new), WORD)], dim=1)
    longer_mask = torch.cat([mask, torch.ones(ids.shape[0], new, dtype=mask.dtype)], dim=1)
    whole, _ = get_rope_index(longer, *grids, attention_mask=longer_mask, config=config)
    past = ids.shape[1]
    decode = decode_position_ids(delta, past, new, longer_mask)
    assert torch.equal(decode, whole[:, :, past:])
    assert torch.equal(decode[:, :, 0], pos.amax(dim=(0, 2))[None].expand(3, -1) + 1)  # first new = max + 1
    steps = torch.cat([decode_position_ids(delta, past + k, 1, longer_mask) for k in range(new)], dim=2)
    assert torch.equal(steps, decode)  # one token at a time gives the same ids
    if bool(mask.all()):  # no padding: transformers v4.5x's rule arange(new) + cache_position + rope_deltas
        assert torch.equal(decode_position_ids(delta, past, new), decode)


@settings(max_examples=60, deadline=None)
@given(layouts, st.integers(1, 4))
def test_the_4_5x_decode_rule_is_right_with_its_own_deltas(config, rows, new):
    """docs/the_reading.md, claim 11: transformers v4.5x took rope_deltas against the padded length (max + 1 - len(row))
    and decoded with arange(new) + cache_position + rope_deltas, which lands on qwenlite's ids on every row, padded
    or not. The same rule with qwenlite's real-token deltas overshoots each row by its number of pads."""
    ids, mask, images, videos, seconds = encode(rows)
    grids = (as_grid(images), as_grid(videos), torch.tensor(seconds) if seconds else None)
    pos, delta = get_rope_index(ids, *grids, attention_mask=mask, config=config)
    past = ids.shape[1]
    longer_mask = torch.cat([mask, torch.ones(ids.shape[0], new, dtype=mask.dtype)], dim=1)
    ours = decode_position_ids(delta, past, new, longer_mask)
    deltas_4_5x = pos.amax(dim=(0, 2))[:, None] + 1 - past  # (B, 1) padding ids are 0, so the max is the real one
    assert torch.equal(decode_position_ids(deltas_4_5x, past, new), ours)
    pads = (mask == 0).sum(1)  # (B,)
    assert torch.equal(decode_position_ids(delta, past, new) - ours, pads.view(1, -1, 1).expand_as(ours))


def _record_positions(module, sink: list, index: int | None = None):
    def grab(_module, args, kwargs):
        p = kwargs["position_ids"] if index is None else args[index]
        sink.append(p.detach().clone())

    return module.register_forward_pre_hook(grab, with_kwargs=True)


@pytest.mark.parametrize("batch", ["one image", "left-padded batch of two"])
def test_generate_matches_transformers_on_image_prompts(batch, ours, ref, hf_processor, photos, config):
    if batch == "one image":
        inputs = chat_inputs(hf_processor, [["image", "text"]], photos[:1])
    else:
        inputs = chat_inputs(hf_processor, [["image", "text"], ["text", "image", "image", "text"]], photos[:3])
        assert (inputs["attention_mask"][0] == 0).any()  # the first prompt really is left padded
    mine_positions: list[torch.Tensor] = []
    theirs_positions: list[torch.Tensor] = []
    handles = [
        _record_positions(ours.model, mine_positions, index=1),
        _record_positions(ref.model.language_model, theirs_positions),
    ]
    try:
        theirs = ref.generate(**inputs, max_new_tokens=10, do_sample=False, repetition_penalty=1.0)
        mine = ours.generate(**inputs, max_new_tokens=10)
    finally:
        for handle in handles:
            handle.remove()
    assert torch.equal(mine, theirs)
    # the ids each library fed its decoder (prefill, then one token per step) on the real tokens: for images the
    # two rules agree, so transformers' are the reference (catches rope_deltas off by one, or padding counted)
    used = torch.cat(mine_positions, dim=2)  # (3, B, tokens fed)
    theirs_used = torch.cat([p[1:] for p in theirs_positions], dim=2)  # generate adds a text row on top of (t, h, w)
    steps = min(used.shape[2], theirs_used.shape[2])
    assert steps > inputs["input_ids"].shape[1] + 1  # the prefill and at least two decode steps
    fed = mine[:, :steps]
    fed_mask = torch.cat([inputs["attention_mask"], torch.ones_like(fed[:, inputs["input_ids"].shape[1] :])], dim=1)
    real = fed_mask.bool()
    assert torch.equal(used[:, :, :steps][:, real], theirs_used[:, :, :steps][:, real])
    # and they are get_rope_index of everything fed: decoding continues the prefill
    whole, _ = get_rope_index(fed, inputs["image_grid_thw"], attention_mask=fed_mask, config=config)
    assert torch.equal(used[:, :, :steps][:, real], whole[:, real])


def test_video_decode_positions_differ_from_transformers(ours, ref, hf_processor, config):
    """transformers 5.x decodes from its own (restarted) last text id + 1; qwenlite from max + 1. Both shown."""
    seconds = 1.0  # grid (4, 4, 6): t = 0, 2, 4, 6 but max(h, w) / 2 = 3 -> gap 7 - 3 = 4
    inputs = chat_inputs(hf_processor, [["video", "text"]], clips=[clip(8, 84, 56)], seconds=[seconds])
    grid = inputs["video_grid_thw"][0].tolist()
    assert grid == [4, 4, 6]
    gap = video_gaps(grid, seconds)
    assert gap == 4
    theirs_seen: list[torch.Tensor] = []
    mine_seen: list[torch.Tensor] = []
    handles = [_record_positions(ref.model.language_model, theirs_seen), _record_positions(ours.model, mine_seen, 1)]
    try:
        ref.generate(**inputs, max_new_tokens=4, do_sample=False, repetition_penalty=1.0)
        ours.generate(**inputs, max_new_tokens=4)
    finally:
        for h in handles:
            h.remove()
    theirs_ids = torch.cat([p[1:] for p in theirs_seen], dim=2)  # generate adds a text row on top of (t, h, w)
    mine_ids = torch.cat(mine_seen, dim=2)
    n = inputs["input_ids"].shape[1]
    steps = min(theirs_ids.shape[2], mine_ids.shape[2]) - n  # decode steps both ran
    their_decode, my_decode = theirs_ids[:, 0, n : n + steps], mine_ids[:, 0, n : n + steps]
    assert steps >= 2
    # transformers: one more than its last prefill id; qwenlite: one more than the largest prefill id
    assert torch.equal(their_decode[:, 0], theirs_ids[:, 0, n - 1] + 1)
    assert torch.equal(my_decode[:, 0], mine_ids[:, 0, :n].amax(dim=1) + 1)
    assert (my_decode - their_decode == gap).all()
    assert (their_decode.diff(dim=1) == 1).all() and (my_decode.diff(dim=1) == 1).all()


# ----------------------------------------------------------------------------- the explorer's prompts


@pytest.mark.slow
@pytest.mark.parametrize(
    ("layout", "image_hw", "frames", "fps"),
    [("text image text video text", (224, 308), 8, 2.0), ("text video image text", (140, 196), 12, 1.0)],
)
def test_explorer_prompts_equal_transformers_processor(layout, image_hw, frames, fps, ckpt, config, hf_processor):
    """notebook 06's explorer builds its prompt with qwenlite's processor; transformers' processor, given the same
    text and blank pixels, writes the same ids and grids. Catches an explorer that counts pad tokens, sizes or
    seconds per group its own way (e.g. grid_t = frames instead of frames / 2, or 1 / fps seconds per group)."""
    from qwenlite_course.viz.rope import build_layout

    items = layout.split()
    ours = build_layout(items, Processor.from_pretrained(ckpt), image_hw, frames, fps)
    text = ours.pop("text")
    theirs = hf_processor(
        text=[text],
        images=[np.zeros((*image_hw, 3), dtype=np.uint8)] * items.count("image") or None,
        videos=[np.zeros((frames, 112, 168, 3), dtype=np.uint8)] * items.count("video") or None,
        video_metadata=[{"fps": fps, "total_num_frames": frames}] * items.count("video"),
        do_sample_frames=False,
        return_tensors="pt",
    )
    for key, value in ours.items():
        assert torch.equal(value, theirs[key].to(value.dtype)), key
    pos, delta = get_rope_index(**ours, config=config)
    assert pos.shape == (3, *ours["input_ids"].shape) and int(delta) < 0  # the vision spans really are there


# ----------------------------------------------------------------------------- sizes for a real checkpoint


@pytest.mark.slow
def test_notebook_08_real_clip_keeps_the_two_rules_together(ckpt, config, ref, video_path):
    """08 shrinks the clip on a real checkpoint (CI never runs that path) and then asserts, as on the twin,
    that qwenlite's positions equal transformers' after the video: the shrunk size must keep that true."""
    from qwenlite.video_io import load_video
    from qwenlite_course.viz.vision import REAL_CLIP_LIMITS

    clip = load_video(video_path, fps=2.0)
    content = [{"type": "video", "video": clip, **REAL_CLIP_LIMITS}, {"type": "text", "text": "When?"}]
    batch = Processor.from_pretrained(ckpt).from_messages([{"role": "user", "content": content}])
    assert batch["video_grid_thw"].tolist() == [[4, 12, 16]]  # 168 x 224 px frames, as 08's text says
    args = [batch[k] for k in ("video_grid_thw", "second_per_grid_ts", "attention_mask")]
    pos, delta = get_rope_index(batch["input_ids"], None, *args, config=config)
    theirs, their_delta = transformers_rope_index(ref, config, batch["input_ids"], args[2], None, args[0], args[1])
    assert torch.equal(pos, theirs) and torch.equal(delta, their_delta)
    # the limits of 02-04 would not do for 08: 112 x 140 px frames, 5 tokens wide, the rules 2 ids apart
    small = [{"type": "video", "video": clip, "min_pixels": 56 * 56, "max_pixels": 112 * 168}]
    batch = Processor.from_pretrained(ckpt).from_messages([{"role": "user", "content": small}])
    args = [batch[k] for k in ("video_grid_thw", "second_per_grid_ts", "attention_mask")]
    pos, _ = get_rope_index(batch["input_ids"], None, *args, config=config)
    theirs, _ = transformers_rope_index(ref, config, batch["input_ids"], args[2], None, args[0], args[1])
    assert batch["video_grid_thw"].tolist() == [[4, 8, 10]] and int((pos - theirs).max()) == 2


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), -1.0], ids=["nan", "inf", "negative"])
def test_second_per_grid_ts_must_be_finite_and_not_negative(config, seconds):
    """NaN floors to -9.2e18 and a negative interval runs time backwards: both refused where they enter."""
    ids, mask, _, videos, _ = encode([([("text", 2), ("video", (2, 4, 4), 1.0), ("text", 1)], 0)])
    with pytest.raises(ValueError, match=rf"second_per_grid_ts must be finite seconds >= 0 .*got {seconds}"):
        get_rope_index(ids, None, as_grid(videos), [seconds], mask, config=config)
    get_rope_index(ids, None, as_grid(videos), [0.0], mask, config=config)  # 0 is allowed: flat t ids (09's ablation)


# ---------------------------------------------------------------- bad input: refused by name


@pytest.mark.parametrize(
    ("ids", "grids", "message"),
    [
        ([VS, IMG, IMG, IMG, VE], {"image_grid_thw": [[1, 4, 4]]}, r"has 3 <\|image_pad\|> tokens, .* needs 4"),
        ([VS, IMG, IMG, IMG, IMG, VE], {}, r"more image spans than the 0 rows of image_grid_thw"),
        ([VS, IMG, IMG, IMG, IMG, VE], {"image_grid_thw": [[1, 4, 4], [1, 2, 2]]}, r"has 2 rows but .* 1 image"),
        (
            [VS, VID, VID, VE],
            {"video_grid_thw": [[2, 2, 2]], "second_per_grid_ts": [1.0, 2.0]},
            r"second_per_grid_ts has 2 entries but video_grid_thw has 1 rows",
        ),
        ([1, 2], {"second_per_grid_ts": [0.5]}, r"second_per_grid_ts has 1 entries but video_grid_thw has 0 rows"),
        ([VS, IMG, VE], {"image_grid_thw": [1, 2, 2]}, r"image_grid_thw must be \(num_images, 3\) rows of \(t, h, w\)"),
    ],
    ids=["short-span", "no-grid", "extra-grid", "seconds-length", "seconds-without-video", "1-d-grid"],
)
def test_bad_layouts_for_get_rope_index(ids, grids, message, config):
    kwargs = {k: torch.tensor(v) for k, v in grids.items()}
    with pytest.raises(ValueError, match=message):
        get_rope_index(torch.tensor([ids]), config=config, **kwargs)


def test_get_rope_index_arguments(config):
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'config'"):
        get_rope_index(torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match=r"get_rope_index needs config= \(token ids, merge size"):
        get_rope_index(torch.tensor([[1, 2]]), config=None)
    with pytest.raises(ValueError, match=r"input_ids must be \(batch, length\), got shape \(2,\)"):
        get_rope_index(torch.tensor([1, 2]), config=config)
    with pytest.raises(ValueError, match=r"attention_mask \(1, 3\) must have the shape of input_ids \(1, 2\)"):
        get_rope_index(torch.tensor([[1, 2]]), attention_mask=torch.ones(1, 3), config=config)
