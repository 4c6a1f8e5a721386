"""qwenlite_course.viz.tour: the tour's patch grid, token strip with positions and parameter bars draw what the
processor, get_rope_index and the models hold, checked against transformers (processor, get_rope_index, modules)."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from helpers import DATA
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from torch import nn
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

from qwenlite import QwenLiteConfig, QwenLiteVL
from qwenlite.rope_index import get_rope_index
from qwenlite_course.viz import tour as vt


def test_journey_boxes_hold_their_shapes_and_arrows_join_their_stages():
    """One box per stage with the measured shape written inside it; each arrow leaves its source's box towards its
    target and stops at the target's box (both ends just outside the box edges, on the line between centres)."""
    shapes = {stage: f"shape of {stage}" for stage in vt.STAGES}
    fig = vt.draw_journey(shapes)
    try:
        (ax,) = fig.axes
        boxes = [p for p in ax.patches if isinstance(p, FancyBboxPatch)]
        assert len(boxes) == len(vt.STAGES)
        for box, (stage, (_, _, (x, y), _)) in zip(boxes, vt.STAGES.items(), strict=True):
            assert (box.get_x() + box.get_width() / 2, box.get_y() + box.get_height() / 2) == pytest.approx((x, y))
            (text,) = [t for t in ax.texts if t.get_text() == shapes[stage]]
            tx, ty = text.get_position()
            assert abs(tx - x) < box.get_width() / 2 and abs(ty - y) < box.get_height() / 2
        arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
        assert len(arrows) == len(vt.ARROWS)
        w, h = boxes[0].get_width(), boxes[0].get_height()
        for arrow, (a, b, _) in zip(arrows, vt.ARROWS, strict=True):
            (xa, ya), (xb, yb) = vt.STAGES[a][2], vt.STAGES[b][2]
            for (px, py), (cx, cy), (ox, oy) in zip(
                arrow._posA_posB, ((xa, ya), (xb, yb)), ((xb, yb), (xa, ya)), strict=True
            ):
                outside = max(abs(px - cx) - w / 2, abs(py - cy) - h / 2)
                assert 0 < outside <= 0.03 + 1e-9  # just off the box edge
                assert (px - cx) * (oy - cy) == pytest.approx((py - cy) * (ox - cx))  # on the centre line
                assert (px - cx) * (ox - cx) + (py - cy) * (oy - cy) > 0  # on the side facing the other box
    finally:
        plt.close(fig)


def test_journey_draws_a_noise_answer_without_missing_glyphs():
    """The twin's answer to the photo is CJK and markup noise: the answer box shows its first characters with
    the glyphs the font lacks as middle dots (matplotlib would warn once per missing glyph), the rest as given."""
    import warnings

    answer = "につ桫_GT_GT Checklist"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing glyph is a UserWarning at draw time
        fig = vt.draw_journey({"text": answer})
        fig.canvas.draw()
    try:
        texts = [t.get_text() for t in fig.axes[0].texts]
        assert "\N{MIDDLE DOT}" * 3 + "_GT_GT Checklist" in texts
    finally:
        plt.close(fig)


def test_patch_grid_title_counts_what_transformers_processor_makes(hf_processor, photo):
    """The tour's grid of the photo: the processor's grid_thw, the size transformers' smart_resize gives, one yellow
    line per 28 px token edge, and as many merged tokens as the processor writes <|image_pad|> tokens."""
    out = hf_processor(text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[photo], return_tensors="pt")
    grid = out["image_grid_thw"][0]
    _, gh, gw = grid.tolist()
    pads = int((out["mm_token_type_ids"] == 1).sum())
    fig = vt.draw_photo_patch_grid(photo, grid)
    try:
        ax = fig.axes[1]
        size = hf_processor.image_processor.size  # the checkpoint's limits, as transformers reads them
        height, width = hf_smart_resize(photo.height, photo.width, 28, size.shortest_edge, size.longest_edge)
        assert (14 * gh, 14 * gw) == (height, width)
        assert np.asarray(ax.images[0].get_array()).shape == (height, width, 3)
        numbers = [int(n) for n in re.findall(r"\d+", ax.get_title())]
        assert numbers == [height, width, gh, gw, gh * gw, 14, gh // 2, gw // 2, pads, 28]  # H x W
        yellow = [line for line in ax.lines if line.get_color() == "yellow"]
        assert len(yellow) == gh // 2 + gw // 2 + 2
    finally:
        plt.close(fig)


def kinds_from_transformers(ids, types, tokenizer) -> list[str]:
    """Each token's kind from transformers' processor (mm_token_type_ids) and tokenizer (special token ids)."""
    vision = set(tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>"]))
    chat = set(tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>", "<|endoftext|>"]))
    return [
        {1: "image", 2: "video"}.get(t) or ("vision" if i in vision else "chat" if i in chat else "text")
        for i, t in zip(ids, types, strict=True)
    ]


def test_tokens_and_positions_are_transformers_token_types_and_ids(hf_processor, ref, config, photo):
    """The strip's colours are transformers' token types, the three curves transformers' get_rope_index, and the
    note's rope_deltas is the one both libraries return."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Who is this?"}]}]
    text = hf_processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    out = hf_processor(text=[text], images=[photo.resize((112, 140))], return_tensors="pt")
    ids, grid = out["input_ids"], out["image_grid_thw"]
    theirs, their_deltas = ref.model.get_rope_index(ids, out["mm_token_type_ids"], grid)
    _, our_deltas = get_rope_index(ids, grid, config=config)
    fig = vt.draw_tokens_and_positions(ids, theirs, config)
    try:
        top, bottom = fig.axes
        names = list(vt.KIND_COLOURS)
        drawn = [names[c] for c in np.asarray(top.images[0].get_array())[0]]
        expected = kinds_from_transformers(
            ids[0].tolist(), out["mm_token_type_ids"][0].tolist(), hf_processor.tokenizer
        )
        assert drawn == expected and "image" in drawn
        counts = ", ".join(f"{expected.count(n)} {n}" for n in names if n in expected)
        assert top.get_title() == f"{ids.shape[1]} prompt tokens: {counts}"
        assert [list(line.get_ydata()) for line in bottom.lines] == theirs[:, 0].tolist()
        (note,) = bottom.texts
        assert int(note.get_text().rsplit("=", 1)[1]) == int(their_deltas) == int(our_deltas) < 0
    finally:
        plt.close(fig)


def module_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_split_is_transformers_module_tree(ours, ref, config):
    """Both models split alike, and each part is the size of transformers' own module: visual minus its merger,
    the merger, embed_tokens, the decoder layers with the final norm; the twin's lm_head is tied (0 here)."""
    split = vt.parameter_split(ours)
    assert split == vt.parameter_split(ref)
    language = ref.model.language_model
    assert split == {
        "vision tower": module_count(ref.model.visual) - module_count(ref.model.visual.merger),
        "merger": module_count(ref.model.visual.merger),
        "embeddings": module_count(language.embed_tokens),
        "decoder layers": module_count(language.layers) + module_count(language.norm),
        "lm_head": 0,
    }
    assert config.tie_word_embeddings and sum(split.values()) == module_count(ref) == module_count(ours)


def test_parameter_split_check_fails_without_hub_names(ref, monkeypatch):
    """Mutation: without to_hub_key, transformers' in-memory names (model.visual.*, model.language_model.*) fit no
    part, and the split says which parameter."""
    monkeypatch.setattr(vt, "to_hub_key", lambda name: name)
    with pytest.raises(KeyError, match=r"parameter model\.visual\.\S+ \(model\.visual\.\S+\) belongs to no known part"):
        vt.parameter_split(ref)


def test_parameter_split_refuses_a_parameter_of_no_known_part(ours):
    """A model with a part the split does not know (a projector) is refused, by name, instead of miscounted."""
    model = nn.Module()
    model.visual = ours.visual
    model.projector = nn.Linear(2, 2)
    with pytest.raises(KeyError, match=r"parameter projector\.weight \(projector\.weight\) belongs to no known part"):
        vt.parameter_split(model)


def test_parameter_split_of_the_3b_and_7b_is_transformers_counts(hf_counts):
    """At full size (meta device): qwenlite's 3B and 7B split into transformers' vision tower, merger and table
    sizes, and sum to its totals (the 3B ties lm_head, the 7B does not)."""
    for size in ("3b", "7b"):
        config = QwenLiteConfig.from_pretrained(DATA / "configs" / f"qwen2_5_vl_{size}_instruct.config.json")
        with torch.device("meta"):
            split = vt.parameter_split(QwenLiteVL(config))
        counts = hf_counts[size]
        assert split["vision tower"] + split["merger"] == counts["vision"] and split["merger"] == counts["merger"]
        assert split["embeddings"] == counts["table"] and sum(split.values()) == counts["all"]
        assert split["lm_head"] == (0 if size == "3b" else counts["table"])


def test_parameter_bars_stack_each_models_parts(ours):
    """One stacked bar per model: segment widths are the parts in billions, in PART_COLOURS order, each starting
    where the previous ended; the label gives the total and says when lm_head is tied."""
    twin = vt.parameter_split(ours)
    untied = {"vision tower": 6.0e8, "merger": 4.5e7, "embeddings": 5.4e8, "decoder layers": 6.5e9, "lm_head": 5.4e8}
    fig = vt.draw_parameter_bars({"twin": twin, "untied": untied})
    try:
        (ax,) = fig.axes
        bars = iter(ax.patches)
        for row, split in enumerate((twin, untied)):
            left = 0.0
            for part, colour in vt.PART_COLOURS.items():
                bar = next(bars)
                assert bar.get_width() == pytest.approx(split[part] / 1e9) and bar.get_x() == pytest.approx(left)
                assert bar.get_y() + bar.get_height() / 2 == pytest.approx(row)
                assert matplotlib.colors.to_hex(bar.get_facecolor()) == colour
                left += split[part] / 1e9
            total = [t.get_text() for t in ax.texts if t.get_position()[1] == row and " B" in t.get_text()]
            tied = " (lm_head tied to embeddings)" if split["lm_head"] == 0 else ""
            assert total == [f"{sum(split.values()) / 1e9:.3f} B{tied}"]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["twin", "untied"]
    finally:
        plt.close(fig)
