"""qwenlite_course.viz.rope: the t/h/w id pictures, the id rows along a prompt, the two rules side by side and the
layout explorer of notebook 06 draw what get_rope_index computes, checked against transformers' get_rope_index."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import to_hex
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

from qwenlite.rope_index import get_rope_index
from qwenlite.tokens import mm_token_type_ids
from qwenlite_course.viz import rope as vr

WORD = 9707  # an ordinary text token


def prompt(config, image_grid=None, video_grid=None) -> torch.Tensor:
    """(1, L) ids: 3 words, an image, 2 words, a video, 4 words (each span only when its grid is given)."""
    merge = config.vision_config.spatial_merge_size
    ids = [WORD] * 3
    for grid, pad in ((image_grid, config.image_token_id), (video_grid, config.video_token_id)):
        if grid is not None:
            n = int(np.prod(grid)) // merge**2
            ids += [config.vision_start_token_id, *[pad] * n, config.vision_end_token_id] + [WORD] * 2
    return torch.tensor([ids + [WORD] * 2])


def transformers_ids(ref, config, ids, image_grid=None, video_grid=None, seconds=None) -> torch.Tensor:
    """transformers' get_rope_index on the same prompt: (3, 1, L)."""
    positions, _ = ref.model.get_rope_index(
        ids,
        mm_token_type_ids=mm_token_type_ids(ids, config),
        image_grid_thw=None if image_grid is None else torch.tensor([image_grid]),
        video_grid_thw=None if video_grid is None else torch.tensor([video_grid]),
        second_per_grid_ts=None if seconds is None else torch.tensor([seconds]),
    )
    return positions


def cell_values(ax) -> dict[tuple[int, int], int]:
    """{(row, column): id} written in the cells of an id picture."""
    return {(int(t.get_position()[1]), int(t.get_position()[0])): int(t.get_text()) for t in ax.texts}


def test_image_id_picture_writes_transformers_ids_on_their_cells(config, ref):
    """Over a 4 x 6 merged grid, the cell at row r, column c of each panel holds the t, h, w id transformers gives
    the image's (r * 6 + c)-th pad token: t = s, h = s + r, w = s + c."""
    grid = (1, 8, 12)
    ids = prompt(config, image_grid=grid)
    pads = (ids[0] == config.image_token_id).nonzero().flatten()
    theirs = transformers_ids(ref, config, ids, image_grid=grid)[:, 0, pads]  # (3, 24)
    start = int(theirs[0, 0])
    fig = vr.draw_image_ids(np.zeros((112, 168, 3), np.uint8), theirs, grid)
    try:
        for ax, axis, row in zip(fig.axes, "thw", theirs, strict=True):
            cells = cell_values(ax)
            assert len(cells) == 24 and ax.get_title() == f"{axis} ids"
            for (r, c), value in cells.items():
                assert value == int(row[r * 6 + c]) == start + {"t": 0, "h": r, "w": c}[axis]
    finally:
        plt.close(fig)


def test_image_id_check_fails_on_swapped_rows(config, ref):
    """Mutation: ids handed over with h and w swapped put the wrong numbers in the h panel."""
    grid = (1, 8, 12)
    ids = prompt(config, image_grid=grid)
    pads = (ids[0] == config.image_token_id).nonzero().flatten()
    theirs = transformers_ids(ref, config, ids, image_grid=grid)[:, 0, pads]
    fig = vr.draw_image_ids(np.zeros((112, 168, 3), np.uint8), theirs[[0, 2, 1]], grid)
    cells = cell_values(fig.axes[1])
    plt.close(fig)
    assert any(value != int(theirs[0, 0]) + r for (r, _), value in cells.items())


def test_video_id_picture_has_one_column_per_temporal_patch(config, ref):
    """Column g shows group g's first frame; its t cells all hold transformers' t id of that group,
    s + floor(g * tokens_per_second * second_per_grid_t) (1.5 ids per group here: 0, 1, 3), as its title says."""
    grid, seconds = (4, 4, 6), 0.75
    ids = prompt(config, video_grid=grid)
    pads = (ids[0] == config.video_token_id).nonzero().flatten()
    theirs = transformers_ids(ref, config, ids, video_grid=grid, seconds=seconds)[:, 0, pads]
    start = int(theirs[0, 0])
    frames = (np.arange(4) * 50 + 10).astype(np.uint8)[:, None, None, None].repeat(56, 1).repeat(84, 2).repeat(3, 3)
    fig = vr.draw_video_ids(frames, theirs, grid, [0.0, 0.75, 1.5, 2.25], max_groups=3)
    try:
        axes = np.array(fig.axes).reshape(3, 3)
        for g in range(3):
            step = int(g * config.vision_config.tokens_per_second * seconds)
            assert step == [0, 1, 3][g]
            t_cells, h_cells, w_cells = (cell_values(axes[row, g]) for row in range(3))
            assert set(t_cells.values()) == {start + step} == {int(theirs[0, g * 6])}
            assert all(v == start + r for (r, _), v in h_cells.items())
            assert all(v == start + c for (_, c), v in w_cells.items())
            assert axes[0, g].get_title().endswith(f"t = {start + step}")
            assert f"first frame at {[0.0, 0.75, 1.5][g]:.2f} s" in axes[0, g].get_title()
            assert np.array_equal(np.asarray(axes[0, g].images[0].get_array()), frames[g])
        merge = config.vision_config.spatial_merge_size
        assert f" {grid[2] // merge} columns of merged tokens" in fig.get_supxlabel()  # 3 columns
        assert f" {grid[1] // merge} rows of merged tokens" in fig.get_supylabel()  # 2 rows
    finally:
        plt.close(fig)


def shaded_runs(ax) -> list[tuple[str, int, int]]:
    """(kind, first token, end) of each shaded band of a sequence plot."""
    kinds = {colour: kind for kind, colour in vr.KIND_COLOURS.items()}
    return [
        (kinds[to_hex(p.get_facecolor())], round(p.get_x() + 0.5), round(p.get_x() + p.get_width() + 0.5))
        for p in ax.patches
    ]


def pad_runs(ids: torch.Tensor, config) -> list[tuple[str, int, int]]:
    types = mm_token_type_ids(ids, config).tolist()
    runs, k = [], 0
    while k < len(types):
        j = k
        while j < len(types) and types[j] == types[k]:
            j += 1
        if types[k]:
            runs.append(({1: "image", 2: "video"}[types[k]], k, j))
        k = j
    return runs


def test_id_budget_draws_transformers_ids_beside_the_token_index(config, ref):
    """An image prompt: the t, h, w points are transformers' ids of it, the dashed line is id = token index from 0
    to L - 1, and the two labels give the last token's id under each rule: L - 1, and transformers' last id."""
    grid = (1, 8, 12)  # 4 x 6 merged tokens: 24 pads that take 6 positions
    ids = prompt(config, image_grid=grid)
    theirs = transformers_ids(ref, config, ids, image_grid=grid)[:, 0]
    fig = vr.draw_id_budget(theirs, ids[0], config)
    try:
        (ax,) = fig.axes
        *points, diagonal = ax.lines
        assert [list(line.get_ydata()) for line in points] == theirs.tolist()
        last = ids.shape[1] - 1
        assert list(diagonal.get_xdata()) == list(diagonal.get_ydata()) == [0, last]
        labels = {t.get_text() for t in ax.texts if ":" in t.get_text()}
        assert labels == {f"1-D: {last}", f"M-RoPE: {int(theirs[:, -1].max())}"}
        assert int(theirs.max()) == last - 24 + 6
    finally:
        plt.close(fig)


def test_id_budget_check_fails_on_one_d_ids(config, ref):
    """Mutation: 1-D ids (t = h = w = index) drawn instead of transformers' make the M-RoPE label read L - 1."""
    ids = prompt(config, image_grid=(1, 8, 12))
    theirs = transformers_ids(ref, config, ids, image_grid=(1, 8, 12))[:, 0]
    fig = vr.draw_id_budget(torch.arange(ids.shape[1]).expand(3, -1), ids[0], config)
    labels = {t.get_text() for t in fig.axes[0].texts if ":" in t.get_text()}
    plt.close(fig)
    assert f"M-RoPE: {int(theirs[:, -1].max())}" not in labels


def test_rules_side_by_side_draws_both_libraries_and_where_they_part(config, ref):
    """A video with 2 ids per temporal patch outruns its 2 x 3 merged grid: the top panel is qwenlite's
    get_rope_index, the middle transformers', the bottom their difference; the zoom names the first token after
    the video and both libraries' ids there, and qwenlite's is the largest id before it + 1 (the released rule)."""
    image_grid, video_grid = (1, 4, 8), (4, 4, 6)
    ids = prompt(config, image_grid, video_grid)
    ours, _ = get_rope_index(ids, torch.tensor([image_grid]), torch.tensor([video_grid]), [1.0], config=config)
    theirs = transformers_ids(ref, config, ids, image_grid, video_grid, 1.0)
    fig = vr.draw_rules_side_by_side(ours[:, 0], theirs[:, 0], ids[0], config)
    try:
        top, middle, bottom, zoom = fig.axes
        for ax, expected in ((top, ours[:, 0]), (middle, theirs[:, 0]), (bottom, ours[:, 0] - theirs[:, 0])):
            assert [list(line.get_ydata()) for line in ax.lines] == expected.tolist()
        assert shaded_runs(top) == shaded_runs(middle) == pad_runs(ids[0], config)
        first = pad_runs(ids[0], config)[-1][2]  # the <|vision_end|> closing the video
        assert int(re.search(r"\(index (\d+)\)", zoom.get_title(loc="left")).group(1)) == first
        notes = {t.get_text().split(":")[0]: int(t.get_text().split(":")[1]) for t in zoom.texts if ":" in t.get_text()}
        largest = int(ours[0, 0, :first].max())
        assert notes == {
            "largest id before": largest,
            "qwenlite": int(ours[0, 0, first]),
            "transformers": int(theirs[0, 0, first]),
        }
        assert notes["qwenlite"] == largest + 1 != notes["transformers"]
    finally:
        plt.close(fig)


def test_rules_side_by_side_has_no_zoom_where_the_rules_agree(config, ref):
    """With an image only the two libraries agree: the difference is 0 everywhere and no zoom is drawn."""
    ids = prompt(config, image_grid=(1, 4, 8))
    ours, _ = get_rope_index(ids, torch.tensor([[1, 4, 8]]), config=config)
    theirs = transformers_ids(ref, config, ids, image_grid=(1, 4, 8))
    fig = vr.draw_rules_side_by_side(ours[:, 0], theirs[:, 0], ids[0], config)
    try:
        assert len(fig.axes) == 3
        assert all(not any(line.get_ydata()) for line in fig.axes[2].lines)
    finally:
        plt.close(fig)


def transformers_rope_index(ref, config):
    """notebook 06's `reference`: transformers' get_rope_index with the token types it needs."""

    def reference(input_ids, image_grid_thw=None, video_grid_thw=None, second_per_grid_ts=None, attention_mask=None):
        return ref.model.get_rope_index(
            input_ids,
            mm_token_type_ids=mm_token_type_ids(input_ids, config),
            image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw,
            second_per_grid_ts=second_per_grid_ts,
            attention_mask=attention_mask,
        )

    return reference


LAYOUT = dict(layout="text video image text", image_width=84, image_height=140, frames=6, fps=1.0)


def layout_positions(processor, config):
    """The layout's prompt rebuilt here: image and frame sizes from transformers' smart_resize, the processor's ids
    (pads counted against those grids) and qwenlite's get_rope_index on them."""
    inputs = vr.build_layout(["text", "video", "image", "text"], processor, (140, 84), 6, 1.0)
    limits = (processor.config.min_pixels, processor.config.max_pixels)
    image_hw = [s // 14 for s in hf_smart_resize(140, 84, 28, *limits)]
    frame_hw = [s // 14 for s in hf_smart_resize(112, 168, 28, *limits)]
    assert inputs["image_grid_thw"].tolist() == [[1, *image_hw]]
    assert inputs["video_grid_thw"].tolist() == [[3, *frame_hw]]
    assert inputs["second_per_grid_ts"].tolist() == [2.0]  # 2 frames per temporal patch at 1 fps
    ids = inputs["input_ids"]
    assert int((ids == config.image_token_id).sum()) == np.prod(image_hw) // 4
    assert int((ids == config.video_token_id).sum()) == 3 * np.prod(frame_hw) // 4
    positions, deltas = get_rope_index(
        ids, inputs["image_grid_thw"], inputs["video_grid_thw"], inputs["second_per_grid_ts"], config=config
    )
    return inputs, positions, deltas, image_hw, frame_hw


def test_layout_picture_is_get_rope_index_of_the_processors_prompt(processor, config, ref):
    """draw_layout rebuilds the prompt through the processor: its title gives the grids transformers' smart_resize
    makes of the chosen sizes, L and qwenlite's rope_deltas; its top panel is qwenlite's ids and its middle panel
    transformers' ids of that same prompt."""
    inputs, positions, deltas, image_hw, frame_hw = layout_positions(processor, config)
    reference = transformers_rope_index(ref, config)
    theirs, _ = reference(
        inputs["input_ids"], inputs["image_grid_thw"], inputs["video_grid_thw"], inputs["second_per_grid_ts"]
    )
    fig = vr.draw_layout(processor, config, **LAYOUT, reference=reference)
    try:
        assert fig.get_suptitle() == (
            f"text video image text: image grid [1, {image_hw[0]}, {image_hw[1]}], "
            f"video grid [3, {frame_hw[0]}, {frame_hw[1]}], 2.00 s per group; L = {inputs['input_ids'].shape[1]}, "
            f"rope_deltas = {int(deltas)}"
        )
        top, middle = fig.axes[:2]
        assert [list(line.get_ydata()) for line in top.lines] == positions[:, 0].tolist()
        assert [list(line.get_ydata()) for line in middle.lines] == theirs[:, 0].tolist()
        assert shaded_runs(top) == pad_runs(inputs["input_ids"][0], config)
    finally:
        plt.close(fig)


def test_layout_check_fails_when_the_picture_shifts_the_ids(processor, config, monkeypatch):
    """Mutation: a picture whose get_rope_index moved every t id up by one no longer draws qwenlite's ids."""
    _, positions, _, _, _ = layout_positions(processor, config)

    def shifted(*args, **kwargs):
        ids, deltas = get_rope_index(*args, **kwargs)
        return ids + torch.tensor([1, 0, 0]).view(3, 1, 1), deltas

    monkeypatch.setattr(vr, "get_rope_index", shifted)
    fig = vr.draw_layout(processor, config, **LAYOUT)
    drawn = [list(line.get_ydata()) for line in fig.axes[0].lines]
    plt.close(fig)
    assert drawn != positions[:, 0].tolist()


def test_explorer_redraws_the_layout_from_its_controls(processor, config, monkeypatch):
    """The explorer draws once at start with its defaults and again on every change, passing the reference on."""
    calls = []

    def recording(*args):
        calls.append(args)
        return plt.figure()

    def reference(*args, **kwargs):
        raise AssertionError("the recorder draws nothing")

    monkeypatch.setattr(vr, "draw_layout", recording)
    box = vr.layout_explorer(processor, config, reference)
    layout, height, width, frames, fps = box.children[0].children  # H x W: height first
    assert list(layout.options) == list(vr.LAYOUTS)
    assert calls == [(processor, config, "text image text video text", 308, 224, 8, 2.0, reference)]
    fps.value, layout.value = 4.0, "video text"
    assert calls[1][2:7] == ("text image text video text", 308, 224, 8, 4.0)
    assert calls[2][2:7] == ("video text", 308, 224, 8, 4.0) and len(calls) == 3
    assert width.step == height.step == processor.config.factor
    assert (height.description, width.description) == ("image h px", "image w px")
