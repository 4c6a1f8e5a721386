"""qwenlite_course.viz.fusion: the token strips, the pad expansion, masked_scatter and the fused heat map of notebook
05 draw what transformers' processor writes (its mm_token_type_ids and grids) and what qwenlite's fusion computes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from helpers import random_image, random_video
from matplotlib.colors import to_hex
from matplotlib.patches import Polygon, Rectangle

from qwenlite.fusion import fuse
from qwenlite.preprocessing import preprocess_image
from qwenlite_course.viz import fusion as vf

COLOUR_KINDS = {colour: kind for kind, colour in vf.KIND_COLOURS.items()}


@pytest.fixture(scope="module")
def prompts(hf_processor) -> dict:
    """transformers' processor on two chats, left-padded: [image, video, image, text] and a short [text]. Also the
    first chat's template ids (one pad per item), tokenised by transformers' tokenizer."""
    items = [{"type": "image"}, {"type": "video"}, {"type": "image"}, {"type": "text", "text": "Compare them."}]
    chats = [[{"role": "user", "content": items}], [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]]
    texts = [hf_processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats]
    clip = random_video(4, (84, 56))
    out = hf_processor(
        text=texts,
        images=[random_image(1, (112, 56)), random_image(2, (56, 56))],
        videos=[clip],
        video_metadata=[{"fps": 2.0, "total_num_frames": len(clip)}],
        do_sample_frames=False,
        cap_pixels_per_frame=True,
        padding=True,
        padding_side="left",
        return_tensors="pt",
    )
    return dict(out) | {"template_ids": hf_processor.tokenizer(texts[0])["input_ids"]}


def expected_kinds(ids, hf_processor, types, attention_mask=None) -> list[str]:
    """Each token's kind from transformers: its processor's mm_token_type_ids `types` (1 image, 2 video), the
    tokenizer's ids of the vision and chat tokens, the attention mask."""
    tok = hf_processor.tokenizer
    vision = set(tok.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>"]))
    chat = set(tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>", "<|endoftext|>"]))
    kinds = []
    for k, (i, t) in enumerate(zip(ids, types, strict=True)):
        if attention_mask is not None and not attention_mask[k]:
            kinds.append("padding")
        else:
            kinds.append(
                {1: "image", 2: "video"}.get(t) or ("vision" if i in vision else "chat" if i in chat else "text")
            )
    return kinds


def strip_cells(ax) -> list[tuple[tuple[float, float], str]]:
    """(corner, kind) of each coloured cell, in drawing order."""
    return [(p.get_xy(), COLOUR_KINDS[to_hex(p.get_facecolor())]) for p in ax.patches if isinstance(p, Rectangle)]


@pytest.mark.parametrize("row", [0, 1], ids=["image-video-image", "left-padded"])
def test_token_strip_colours_each_token_as_transformers_processor_marks_it(prompts, hf_processor, config, row):
    """Cell k sits at column k % per_row, line k // per_row; its colour is the kind transformers' processor gives
    the token: image / video from its mm_token_type_ids, padding from its attention mask."""
    ids, mask = prompts["input_ids"][row].tolist(), prompts["attention_mask"][row].tolist()
    labels = [hf_processor.tokenizer.decode([i]) for i in ids]
    fig = vf.draw_token_strip(ids, config, labels, attention_mask=mask, per_row=16)
    try:
        (ax,) = fig.axes
        cells = strip_cells(ax)
        assert [kind for _, kind in cells] == expected_kinds(
            ids, hf_processor, prompts["mm_token_type_ids"][row].tolist(), mask
        )
        assert [xy for xy, _ in cells] == [(k % 16, -(k // 16) - 1) for k in range(len(ids))]
        assert [t.get_text() for t in ax.texts] == [vf._short(label) for label in labels]
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend == [k for k in vf.KIND_COLOURS if k in {kind for _, kind in cells}]
    finally:
        plt.close(fig)


def test_token_strip_check_fails_on_kinds_off_by_one(prompts, hf_processor, config, monkeypatch):
    """Mutation: a strip whose kinds are shifted by one token no longer matches transformers' token types."""
    real = vf.token_kinds
    monkeypatch.setattr(vf, "token_kinds", lambda ids, *a: (lambda k: k[1:] + k[:1])(real(ids, *a)))
    ids = prompts["input_ids"][0].tolist()
    fig = vf.draw_token_strip(ids, config)
    kinds = [kind for _, kind in strip_cells(fig.axes[0])]
    plt.close(fig)
    assert kinds != expected_kinds(ids, hf_processor, prompts["mm_token_type_ids"][0].tolist())


def test_expansion_fans_join_each_pad_to_the_run_its_grid_makes(prompts, hf_processor, config):
    """Each fan leaves the template's pad of one item and lands on the run of pads transformers' processor wrote
    for it, in reading order: image 1, the video, image 2, each run t*h*w/4 tokens long, as its caption says."""
    before, after = prompts["template_ids"], prompts["input_ids"][0].tolist()
    labels = [hf_processor.tokenizer.decode([i]) for i in before]
    fig = vf.draw_expansion(before, labels, after, config)
    try:
        (ax,) = fig.axes
        merge = config.vision_config.spatial_merge_size
        image_grids, (video_grid,) = prompts["image_grid_thw"].tolist(), prompts["video_grid_thw"].tolist()
        sizes = [("image", image_grids[0]), ("video", video_grid), ("image", image_grids[1])]
        counts = [(kind, int(np.prod(g)) // merge**2) for kind, g in sizes]
        tok = hf_processor.tokenizer
        pad_ids = {
            "image": tok.convert_tokens_to_ids("<|image_pad|>"),
            "video": tok.convert_tokens_to_ids("<|video_pad|>"),
        }
        types = prompts["mm_token_type_ids"][0].tolist()
        runs, k = [], 0  # (kind, start, end) of the processor's pad runs, read from its mm_token_type_ids
        while k < len(types):
            j = k
            while j < len(types) and types[j] == types[k]:
                j += 1
            if types[k]:
                runs.append(("image" if types[k] == 1 else "video", k, j))
            k = j
        assert [(kind, end - start) for kind, start, end in runs] == counts
        template_pads = sorted(
            [("image", i) for i, t in enumerate(before) if t == pad_ids["image"]]
            + [("video", i) for i, t in enumerate(before) if t == pad_ids["video"]],
            key=lambda p: p[1],
        )
        fans = [p for p in ax.patches if isinstance(p, Polygon)]
        wb, wa = 1 / len(before), 1 / len(after)
        for fan, (kind, start, end), (pad_kind, pad) in zip(fans, runs, template_pads, strict=True):
            (top_left, _), (top_right, _), (bottom_right, _), (bottom_left, _) = fan.get_xy()[:4]
            assert pad_kind == kind and to_hex(fan.get_facecolor()) == vf.KIND_COLOURS[kind]
            assert (round(top_left / wb), round(top_right / wb - 0.95)) == (pad, pad)
            assert (round(bottom_left / wa), round(bottom_right / wa)) == (start, end)
        captions = [t.get_text() for t in ax.texts if "×" in t.get_text()]
        assert captions == [f"{n} × <|{kind}_pad|>" for kind, n in counts]
        assert f"after expansion: {len(after)} tokens" in [t.get_text() for t in ax.texts]
    finally:
        plt.close(fig)


def framed_rows(ax) -> list[int]:
    return [round(p.get_y() + 0.5) for p in ax.patches if isinstance(p, Rectangle) and not p.get_fill()]


# notebook 05's toy: 2 rows of 5 tokens, 4 pads (id 9), embeddings (2, 5, 4) and feature rows f0..f3
TOY_IDS = torch.tensor([[1, 9, 9, 2, 3], [9, 4, 5, 9, 6]])
TOY_EMBEDS = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(0))
TOY_FEATURES = torch.arange(1, 17, dtype=torch.float32).reshape(4, 4) / 4


def arrows(ax) -> dict[int, int]:
    """{row: k} of the ' ← fk' labels of the result panel."""
    return {round(t.get_position()[1]): int(t.get_text().split("f")[1]) for t in ax.texts if "←" in t.get_text()}


def test_masked_scatter_picture_is_qwenlite_fuse():
    """With fuse's result: the right panel is that matrix (its numbers written in the cells), the pad rows are
    framed on both sides, and the row labelled "← fk" holds feature row k: f0..f3 in reading order through the
    batch, every other row the token's own embedding."""
    fused = fuse(TOY_EMBEDS, TOY_IDS, TOY_FEATURES, 9, "image")
    fig = vf.draw_masked_scatter(TOY_IDS, TOY_EMBEDS, TOY_FEATURES, fused, token_id=9)
    try:
        before, feats, after = fig.axes
        drawn = np.asarray(after.images[0].get_array())
        assert np.array_equal(drawn, fused.reshape(-1, 4).numpy())
        assert [t.get_text() for t in feats.texts] == [f"{v:+.2f}" for v in TOY_FEATURES.flatten().tolist()]
        assert "+0.25" in [t.get_text() for t in feats.texts]  # two decimals: 0.25 is not rounded to +0.2
        pads = (TOY_IDS.flatten() == 9).nonzero().flatten().tolist()
        assert framed_rows(before) == framed_rows(after) == pads == [1, 2, 5, 8]
        assert arrows(after) == {1: 0, 2: 1, 5: 2, 8: 3}
        for row in range(10):
            source = TOY_FEATURES[arrows(after)[row]] if row in pads else TOY_EMBEDS.reshape(-1, 4)[row]
            assert np.array_equal(drawn[row], source.numpy())
    finally:
        plt.close(fig)


def test_masked_scatter_check_fails_on_features_in_the_wrong_order():
    """Mutation: a result filled with the features reversed contradicts the "← fk" labels."""
    wrong = fuse(TOY_EMBEDS, TOY_IDS, TOY_FEATURES.flip(0), 9, "image")
    fig = vf.draw_masked_scatter(TOY_IDS, TOY_EMBEDS, TOY_FEATURES, wrong, token_id=9)
    drawn = np.asarray(fig.axes[2].images[0].get_array())
    labelled = arrows(fig.axes[2])
    plt.close(fig)
    assert not all(np.array_equal(drawn[row], TOY_FEATURES[k].numpy()) for row, k in labelled.items())


WORD = 9707  # an ordinary text token


def test_fused_heatmap_shows_the_models_embeddings_and_the_towers_features(ours, config, small_array):
    """The heat map is QwenLiteVL.embed's (L, D) for a prompt with an image, one column per token, each column
    divided by its RMS; the image pads' columns are the vision tower's features, in order; the strip above colours
    exactly those columns as image; the panel below puts each token's norm at its index, on a log axis."""
    patches = preprocess_image(small_array)  # grid (1, 4, 6): 6 merged tokens
    pads = [config.image_token_id] * patches.num_tokens()
    ids = torch.tensor([[WORD, config.vision_start_token_id, *pads, config.vision_end_token_id, WORD]])
    grid = patches.grid_thw[None]
    with torch.no_grad():
        fused = ours.embed(ids, patches.pixel_values, grid)[0]
        (features,) = ours.get_image_features(patches.pixel_values, grid)
    fig = vf.draw_fused_heatmap(fused, ids[0].tolist(), config)
    try:
        strip, ax, low = fig.axes[:3]
        drawn = np.asarray(ax.images[0].get_array())
        rms = fused.pow(2).mean(-1).sqrt()  # (L,)
        assert np.allclose(drawn * rms.numpy(), fused.T.numpy(), rtol=1e-5, atol=1e-7)
        assert np.allclose(drawn[:, 2:8] * rms[2:8].numpy(), features.T.numpy(), atol=1e-6)
        assert np.allclose(np.sqrt((drawn**2).mean(0)), 1.0, atol=1e-5)  # every column at the same scale
        kinds = [COLOUR_KINDS[to_hex(p.get_facecolor())] for p in strip.patches]
        assert kinds == ["text", "vision", *["image"] * 6, "vision", "text"]
        vmax = float(np.quantile(np.abs(drawn), 0.99))
        assert ax.images[0].get_clim() == pytest.approx((-vmax, vmax))
        points = {
            COLOUR_KINDS[to_hex(c.get_facecolor()[0])]: c.get_offsets() for c in low.collections
        }  # kind -> (index, norm) of its tokens
        norms = fused.norm(dim=-1)
        for kind in ("text", "vision", "image"):
            at = [k for k, kd in enumerate(kinds) if kd == kind]
            assert np.array_equal(np.asarray(points[kind])[:, 0], at)
            assert np.allclose(np.asarray(points[kind])[:, 1], norms[at].numpy(), rtol=1e-5)
        assert low.get_yscale() == "log"
    finally:
        plt.close(fig)


def test_fused_heatmap_check_fails_when_rows_are_normalised_instead_of_columns(ours, config, monkeypatch):
    """Mutation: a heat map scaled per hidden dim (the wrong axis) no longer gives every token column RMS 1."""
    ids = torch.tensor([[WORD, config.vision_start_token_id, config.vision_end_token_id, WORD + 1]])
    fused = ours.model.embed_tokens(ids)[0].detach() * torch.tensor([[1.0], [5.0], [0.2], [30.0]])
    wrong = lambda v: v / np.sqrt((v**2).mean(1, keepdims=True))  # per hidden dim: the wrong axis
    monkeypatch.setattr(vf, "_per_column", wrong)
    fig = vf.draw_fused_heatmap(fused, ids[0].tolist(), config)
    drawn = np.asarray(fig.axes[1].images[0].get_array())
    plt.close(fig)
    assert not np.allclose(np.sqrt((drawn**2).mean(0)), 1.0, atol=1e-5)
