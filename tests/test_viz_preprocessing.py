"""qwenlite_course.viz.preprocessing: the patch grid, one patch, a video's temporal patches and the resize explorer
draw what qwenlite.preprocessing computes: patch positions are read back through `unpatchify`, sizes are checked
against transformers' smart_resize."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

from qwenlite.image_io import load_image
from qwenlite.preprocessing import FACTOR, preprocess_image, preprocess_video, unpatchify
from qwenlite.video_io import Video
from qwenlite_course.viz import preprocessing as vp


@pytest.fixture(scope="module")
def small_video() -> tuple[Video, object]:
    """5 flat frames (frame k filled with 40 k + 20), sampled at 2 fps: padded to 6 frames, grid (3, 4, 6)."""
    frames = (torch.arange(5) * 40 + 20).to(torch.uint8).view(5, 1, 1, 1).expand(5, 3, 56, 84).clone()
    video = Video(frames, [0, 3, 6, 9, 12], video_fps=6.0, total_frames=15, source="flat frames")
    return video, preprocess_video(video, min_pixels=56 * 56, max_pixels=56 * 84)


def patch_place(pixel_values: torch.Tensor, grid_thw, index: int) -> tuple[int, int, int]:
    """(frame group, grid row, grid column) of row `index`, found by unpatchify: mark the row, see where it lands."""
    marked = torch.zeros_like(pixel_values)
    marked[index] = 1
    frames = unpatchify(marked, grid_thw)  # (T, C, H, W)
    t, _, y, x = (int(i.min()) for i in frames.nonzero(as_tuple=True))
    return t // 2, y // 14, x // 14


def titled_place(fig) -> tuple[int, int, int]:
    """(t, row, column) as draw_patch's title states them."""
    row, col, t = re.fullmatch(r"patch \d+: grid row (\d+), column (\d+) \(t = (\d+)\)", fig.get_suptitle()).groups()
    return int(t), int(row), int(col)


@pytest.mark.parametrize("index", [2, 111])  # each figure draws 1176 bars: ~0.7 s
def test_patch_title_and_pixels_are_where_unpatchify_puts_the_row(photo, index):
    """draw_patch's "grid row r, column c" is where unpatchify puts that row of pixel_values, its two 14x14
    pictures are that crop of the resized photo (de-normalised) and its bars are the row's 1176 numbers."""
    patches = preprocess_image(photo, max_pixels=224 * 224)
    row = patches.pixel_values[index]
    fig = vp.draw_patch(row, index, patches.grid_thw)
    try:
        t, r, c = titled_place(fig)
        assert (t, r, c) == patch_place(patches.pixel_values, patches.grid_thw, index)
        crop = patches.frames[0, :, 14 * r : 14 * r + 14, 14 * c : 14 * c + 14].permute(1, 2, 0).int().numpy()
        for ax in fig.axes[:2]:
            drawn = np.asarray(ax.images[0].get_array()).astype(int)
            assert np.abs(drawn - crop).max() <= 1  # normalise and back: at most one grey level of rounding
        heights = [bar.get_height() for bar in fig.axes[2].containers[0]]
        assert np.allclose(heights, row.numpy())
    finally:
        plt.close(fig)


def test_patch_title_follows_the_video_frame_groups(small_video):
    """A video's row in its second frame group: the title says t = 1 and the place unpatchify gives (row 2,
    column 1: the second patch of the frame's fourth 2x2 block, the first of the second block row)."""
    video, patches = small_video
    _, h, w = patches.grid_thw.tolist()
    index = h * w + 13
    fig = vp.draw_patch(patches.pixel_values[index], index, patches.grid_thw)
    assert titled_place(fig) == patch_place(patches.pixel_values, patches.grid_thw, index) == (1, 2, 1)
    plt.close(fig)


def test_patch_title_check_fails_on_raster_order(photo):
    """Mutation: a figure that numbered patches row by row (merge 1, no 2x2 blocks) names the wrong place."""
    patches = preprocess_image(photo, max_pixels=224 * 224)
    fig = vp.draw_patch(patches.pixel_values[2], 2, patches.grid_thw, merge=1)
    assert titled_place(fig) != patch_place(patches.pixel_values, patches.grid_thw, 2)
    plt.close(fig)


def test_patch_grid_is_the_resized_image_and_its_token_count(photo):
    """draw_patch_grid draws preprocess_image's resized frame; thick lines every 28 px, thin every 14 px; the
    title's token count is the number of merged tokens the processor makes of it."""
    patches = preprocess_image(photo, max_pixels=224 * 224)
    frame = patches.frames[0]
    _, gh, gw = patches.grid_thw.tolist()
    original = load_image(photo)
    fig = vp.draw_patch_grid(frame, original)
    try:
        assert np.array_equal(np.asarray(fig.axes[0].images[0].get_array()), original.permute(1, 2, 0).numpy())
        ax = fig.axes[1]
        assert np.array_equal(np.asarray(ax.images[0].get_array()), frame.permute(1, 2, 0).numpy())
        title = re.fullmatch(r"(\d+)x(\d+): (\d+)x(\d+) patches -> (\d+) tokens", ax.get_title())
        assert [int(g) for g in title.groups()] == [14 * gh, 14 * gw, gh, gw, patches.num_tokens()]
        upright = [line for line in ax.lines if line.get_xdata()[0] == line.get_xdata()[1]]  # the axvlines
        thick = [line.get_xdata()[0] for line in upright if line.get_color() == "yellow"]
        thin = [line.get_xdata()[0] for line in upright if line.get_color() == "white" and line.get_linestyle() == ":"]
        assert thick == list(range(0, 14 * gw + 1, 28)) and thin == list(range(14, 14 * gw, 28))
    finally:
        plt.close(fig)


def test_video_columns_are_the_temporal_patches(small_video):
    """Each column is one temporal patch: its two frames are preprocess_video's frames 2g and 2g + 1, each titled
    with the source frame it shows (a flat frame's grey level names it; the padded sixth repeats the fifth),
    inside the seconds its header announces; frames in the marked seconds, and only those, get a coloured frame."""
    video, patches = small_video
    fig = vp.draw_video_patches(video, patches, marker_seconds=(1.0, 2.0))
    plain = matplotlib.colors.to_rgba(matplotlib.rcParams["axes.edgecolor"])  # an unmarked frame's edge
    try:
        grid_t = int(patches.grid_thw[0])
        axes = np.array(fig.axes).reshape(2, grid_t)
        assert f"grid_t = {grid_t}, second_per_grid_t = 1 s" in fig.get_suptitle()
        for g in range(grid_t):
            header = axes[0, g].texts[0].get_text()
            start, end = (float(s) for s in re.search(r"\[([\d.]+), ([\d.]+)\) s", header).groups())
            assert (start, end) == (g * patches.second_per_grid_t, (g + 1) * patches.second_per_grid_t)
            for k in range(2):
                ax = axes[k, g]
                drawn = np.asarray(ax.images[0].get_array())
                assert np.array_equal(drawn, patches.frames[2 * g + k].permute(1, 2, 0).numpy())
                number, stamp = re.fullmatch(r"frame (\d+), at ([\d.]+) s", ax.get_title()).groups()
                source = (int(drawn[0, 0, 0]) - 20) // 40  # which of the 5 flat frames this is
                assert int(number) == video.indices[source] and float(stamp) == pytest.approx(
                    video.timestamps[source], abs=1e-3
                )
                assert start <= float(stamp) < end
                framed = ax.spines["top"].get_edgecolor() != plain
                assert framed == (1.0 <= float(stamp) < 2.0)
    finally:
        plt.close(fig)


RESIZE_CASES = [
    (600, 512, 3136, 12845056),
    (10, 10, 3136, 12845056),
    (300, 4000, 3136, 256 * 784),
    (999, 57, 0.5, 9e5),
    (3000, 3000, 3136, 12845056),  # 11449 tokens: too many to draw the grid
]


@pytest.mark.parametrize("case", RESIZE_CASES, ids=str)
def test_resize_picture_is_transformers_smart_resize(case):
    """The explorer's orange box, token grid and summary are transformers' smart_resize of the input size."""
    height, width, low, high = case
    rh, rw = hf_smart_resize(height, width, FACTOR, low, high)
    fig, ax = plt.subplots()
    summary = vp.draw_resize(height, width, low, high, ax)
    try:
        assert summary == (
            f"{height}x{width} -> {rh}x{rw}  |  grid_thw (1, {rh // 14}, {rw // 14})  |  "
            f"{rh * rw // 196} patches  |  {rh * rw // 784} LLM tokens"
        )
        given, resized = ax.patches[:2]
        assert (given.get_width(), given.get_height()) == (width, height)
        assert (resized.get_width(), resized.get_height()) == (rw, rh)
        tokens = rh * rw // 784
        assert len(ax.lines) == (rh // 28 + rw // 28 + 2 if tokens <= 2500 else 0)  # one line per token edge
    finally:
        plt.close(fig)


def test_resize_check_fails_on_an_off_by_one_token_size(monkeypatch):
    """Mutation: a picture whose resize is one token taller than the model's no longer matches transformers."""
    real = vp.smart_resize
    monkeypatch.setattr(vp, "smart_resize", lambda h, w, *a: (real(h, w, *a)[0] + FACTOR, real(h, w, *a)[1]))
    fig, ax = plt.subplots()
    summary = vp.draw_resize(600, 512, 3136, 12845056, ax)
    plt.close(fig)
    rh, rw = hf_smart_resize(600, 512, FACTOR, 3136, 12845056)
    assert not summary.startswith(f"600x512 -> {rh}x{rw} ")


@pytest.mark.parametrize(
    ("height", "width", "low", "high"), [(1, 400, 3136, 12845056), (600, 512, 5000, 4000)], ids=["ratio", "limits"]
)
def test_resize_picture_shows_the_models_refusal(height, width, low, high):
    """Sizes smart_resize refuses are not drawn: the picture shows (and returns) the model's own message."""
    with pytest.raises(ValueError) as refused:
        vp.smart_resize(height, width, FACTOR, low, high)
    fig, ax = plt.subplots()
    shown = vp.draw_resize(height, width, low, high, ax)
    try:
        assert shown == str(refused.value) and "smart_resize" in shown
        assert not ax.patches and ax.texts[0].get_color() == "red"
        assert ax.texts[0].get_text().replace("\n", " ") == shown
    finally:
        plt.close(fig)


def test_resize_explorer_turns_tokens_into_pixels(monkeypatch):
    """The explorer's token sliders reach draw_resize as pixels (tokens x 28 x 28), once at start and on change."""
    calls = []
    real = vp.draw_resize

    def recording(*args, **kwargs):
        calls.append(args[:4])
        return real(*args, **kwargs)

    monkeypatch.setattr(vp, "draw_resize", recording)
    box = vp.resize_explorer(300, 400)
    assert calls == [(300, 400, 4 * 784, 1280 * 784)] and len(box.children[1].outputs) == 1
    height, width, min_tokens, max_tokens = box.children[0].children
    max_tokens.value = 10
    assert calls[-1] == (300, 400, 4 * 784, 10 * 784) and len(box.children[1].outputs) == 1


def test_cost_table_prints_the_costs_of_the_input_it_is_given():
    from helpers import DATA

    from qwenlite import QwenLiteConfig
    from qwenlite_course.costs import memory, video_cost
    from qwenlite_course.viz.preprocessing import cost_rows, draw_cost

    configs = {"3B": QwenLiteConfig.from_pretrained(DATA / "configs" / "qwen2_5_vl_3b_instruct.config.json")}
    cost = video_cost(1080, 1920, seconds=600)
    rows = dict(cost_rows(cost, configs))
    assert rows["LLM tokens for it"] == f"{cost.tokens:,}" and rows["patches (tower rows)"] == f"{cost.patches:,}"
    assert rows["resized (H x W)"].startswith(f"{cost.height} x {cost.width} px, {cost.frames} frames")
    assert rows["3B: KV cache (+128 new)"] == f"{memory(cost, configs['3B'])['kv_cache'] / 2**20:,.0f} MiB"
    fig = draw_cost(cost, configs)
    cells = {cell.get_text().get_text() for cell in fig.axes[0].tables[0].get_celld().values()}
    assert {text for row in rows.items() for text in row} <= cells
    plt.close(fig)


def drawn_boxes(fig) -> list[tuple[float, float, float, float]]:
    """(x1, y1, x2, y2) of the one rectangle in each panel, read back from the figure."""
    boxes = []
    for ax in fig.axes:
        (rect,) = ax.patches
        x, y = rect.get_xy()
        boxes.append((x, y, x + rect.get_width(), y + rect.get_height()))
    return boxes


@pytest.mark.parametrize("max_tokens", [16384, 320], ids=["hub limits", "448 px wide"])
def test_box_frames_are_groundings_boxes(photo, max_tokens):
    """draw_box_frames's rectangles, read back, are the box, grounding.to_resized of it and grounding.to_thousandths
    of it; the middle picture is the processor's resized photo, in the frame transformers' smart_resize gives;
    each title writes the numbers its rectangle has."""
    import json

    from qwenlite import grounding

    image = load_image(photo)
    hw, limit = tuple(image.shape[1:]), max_tokens * 784
    resized = grounding.model_frame(hw, max_pixels=limit)
    assert resized == tuple(hf_smart_resize(*hw, FACTOR, 3136, limit))
    box = (170, 155, 350, 340)
    fig = vp.draw_box_frames(image, box, resized, label="face")
    try:
        in_model, grid = grounding.to_resized(box, hw, resized), grounding.to_thousandths(box, hw)
        assert drawn_boxes(fig) == [box, in_model, grid]
        middle = fig.axes[1].images[0]
        assert list(middle.get_extent()) == [0, resized[1], resized[0], 0]
        frame = preprocess_image(photo, max_pixels=limit).frames[0]
        assert np.array_equal(np.asarray(middle.get_array()), frame.permute(1, 2, 0).numpy())
        titles = [ax.get_title(loc="left") for ax in fig.axes]
        assert str(box) in titles[0] and json.dumps({"bbox_2d": list(in_model)}) in titles[1]
        assert json.dumps({"bbox_2d": list(grid)}) in titles[2]
        assert f"<|box_start|>({grid[0]},{grid[1]}),({grid[2]},{grid[3]})<|box_end|>" in titles[2]
    finally:
        plt.close(fig)


def test_box_frames_check_fails_on_sizes_given_as_w_h(photo, monkeypatch):
    """Mutation: a figure that passed sizes as (W, H) (PIL's order) draws the middle box off grounding's."""
    from qwenlite import grounding

    monkeypatch.setattr(vp, "to_resized", lambda box, hw, rhw: grounding.to_resized(box, hw[::-1], rhw[::-1]))
    image = load_image(photo)
    hw = tuple(image.shape[1:])
    resized = grounding.model_frame(hw, max_pixels=320 * 784)
    fig = vp.draw_box_frames(image, (170, 155, 350, 340), resized)
    assert drawn_boxes(fig)[1] != grounding.to_resized((170, 155, 350, 340), hw, resized)
    plt.close(fig)


def test_points_back_are_to_original_of_the_parsed_answer_and_the_raw_numbers():
    """Each panel is the original at its own pixels; the cyan cross is grounding.to_original of the answer's
    point, the red one the same numbers read as the original's pixels, the + the object. Mutation: drawing the
    raw numbers as the converted point (the 476-on-448 mistake) fails."""
    from qwenlite import grounding

    originals = [torch.zeros(3, 448, 336, dtype=torch.uint8), torch.zeros(3, 448, 336, dtype=torch.uint8)]
    frame_hw = (112, 84)
    answers = ['{"point_2d": [42, 70]}', '```json\n[{"point_2d": [14, 98], "label": "shape"}]\n```']
    truths = [(170, 278), (55, 390)]
    fig = vp.draw_points_back(originals, answers, frame_hw, truths)
    try:
        for ax, text, truth in zip(fig.axes, answers, truths, strict=True):
            assert ax.images[0].get_extent() == [0, 336, 448, 0]
            marks = {line.get_color(): (line.get_xdata()[0], line.get_ydata()[0]) for line in ax.lines}
            point = grounding.parse_boxes(text)[0]["point_2d"]
            assert marks["cyan"] == grounding.to_original(point, frame_hw, (448, 336))
            assert marks["red"] == tuple(point)
            assert marks[vp.BOX_COLOUR] == truth
            assert marks["cyan"] != marks["red"]
    finally:
        plt.close(fig)


@pytest.mark.parametrize("max_tokens", [None, 1024], ids=["hub limits", "1024 tokens"])
def test_cost_curves_are_the_costs_of_square_images(max_tokens):
    """draw_cost_curves's lines, read back, are each square image's tokens, KV cache and eager scores, worked out
    here from transformers' smart_resize and the written formulas (2 x L x Hkv x Dh x 2 B a position, with the 20
    prompt tokens and 128 new; heads x patches^2 x 2 B): a curve drawn as area / 28^2 without the resize's rounding
    and cap, or with the scores of the tokens instead of the patches, fails at these sides."""
    from helpers import DATA

    from qwenlite import QwenLiteConfig
    from qwenlite.preprocessing import MAX_PIXELS

    config = QwenLiteConfig.from_pretrained(DATA / "configs" / "qwen2_5_vl_3b_instruct.config.json")
    text, vision = config.text_config, config.vision_config
    limit = max_tokens * 784 if max_tokens else MAX_PIXELS
    fig = vp.draw_cost_curves(config, marks={"scan": (2600, 3300)}, max_pixels=max_tokens and limit)
    try:
        left, right = fig.axes
        lines = {line.get_label(): line for line in left.lines + right.lines}
        tokens = lines["LLM tokens (~ area)"]
        kv = next(line for label, line in lines.items() if "KV cache" in label)
        scores = next(line for label, line in lines.items() if label.startswith("eager scores"))
        sides = tokens.get_xdata()
        assert sides.min() <= 150 and sides.max() >= 5000  # past the hub's cap, 3584 px a side
        for side in (130, 1000, 2929, 5000):
            i = int(np.argmin(np.abs(sides - side)))
            h, w = hf_smart_resize(int(sides[i]), int(sides[i]), 28, 3136, limit)
            n_tokens, patches = (h // 28) * (w // 28), (h // 14) * (w // 14)
            per_position = 2 * text.num_hidden_layers * text.num_key_value_heads * text.head_dim * 2
            assert tokens.get_ydata()[i] == n_tokens
            assert kv.get_ydata()[i] == pytest.approx(per_position * (n_tokens + 20 + 128 - 1) / 1e9)
            assert scores.get_ydata()[i] == pytest.approx(vision.num_heads * patches**2 * 2 / 1e9)
        (scan,) = [line for line in left.lines if line.get_label().startswith("scan")]
        h, w = hf_smart_resize(2600, 3300, 28, 3136, limit)
        assert scan.get_xdata()[0] == pytest.approx((2600 * 3300) ** 0.5)
        assert scan.get_ydata()[0] == (h // 28) * (w // 28) and f"{(h // 28) * (w // 28):,} tokens" in scan.get_label()
    finally:
        plt.close(fig)


def test_box_frames_name_the_grey_margin(photo):
    """The grey outside a smaller frame has a legend entry naming that frame's size; the original, the larger
    picture here, has none."""
    from qwenlite import grounding

    image = load_image(photo)
    resized = grounding.model_frame(tuple(image.shape[1:]), max_pixels=320 * 784)
    fig = vp.draw_box_frames(image, (170, 155, 350, 340), resized)
    try:
        left, middle, _ = fig.axes
        assert left.get_legend() is None
        (text,) = [t.get_text() for t in middle.get_legend().get_texts()]
        assert f"outside this {resized[0]} x {resized[1]} px frame" in text
    finally:
        plt.close(fig)
