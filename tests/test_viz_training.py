"""qwenlite_course.viz.training: notebook 09's examples, loss curves and attention maps draw what qwenlite.train
makes (examples, evidence) and what the model attends to, checked against the pixels and transformers' attention;
the rotary pairs' speeds are rope_inv_freq's, read back from the plot."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.patches import Rectangle

from qwenlite import train as T
from qwenlite.layers import rope_inv_freq
from qwenlite.rope_index import get_rope_index
from qwenlite.tokens import mm_token_type_ids
from qwenlite_course.reference import reference_eager, tolerance
from qwenlite_course.viz import training as vtr
from qwenlite_course.viz.decoder import AXIS_COLOURS


def shape_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """(T, H, W) bool: pixels painted in one of the shape colours (the grey noise never reaches 40 or 220)."""
    frames = pixels if pixels.ndim == 4 else pixels[None]
    found = torch.zeros(frames.shape[0], *frames.shape[2:], dtype=torch.bool)
    for rgb in T.COLOURS.values():
        found |= (frames == torch.tensor(rgb, dtype=torch.uint8).view(1, 3, 1, 1)).all(1)
    return found


def framed(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle) and not p.get_fill()]


@pytest.fixture(scope="module")
def examples() -> list[T.Example]:
    generator = torch.Generator().manual_seed(1)  # notebook 09's examples
    return [T.make_example(task, generator) for task in ("when", "where", "colour")]


def test_examples_frame_the_frames_and_mark_the_point_where_the_shape_is(examples):
    """The clip's row shows its 8 frames and frames exactly those with the red square in them (its temporal patch
    is the answer); the pictures are drawn as made, the "where" cross is the answer's point, within 2 px of the
    shape's centre (in draw_shape's coordinates, where pixel i spans [i, i + 1): half a pixel off imshow's pixel
    centres) and in the same merged token, and the captions give each question and answer."""
    when, where, colour = examples
    fig = vtr.draw_examples(examples)
    try:
        axes = np.array(fig.axes).reshape(3, T.FRAMES)
        has_square = shape_pixels(when.pixels).flatten(1).any(1)
        for f, ax in enumerate(axes[0]):
            assert np.array_equal(np.asarray(ax.images[0].get_array()), when.pixels[f].permute(1, 2, 0).numpy())
            assert bool(framed(ax)) == bool(has_square[f]) and ax.get_title() == f"frame {f}, patch {f // 2}"
        assert has_square.nonzero().flatten().tolist() == [2 * when.truth, 2 * when.truth + 1]
        assert T.ORDINALS[when.truth] == when.answer
        for row, ex in ((1, where), (2, colour)):
            assert np.array_equal(np.asarray(axes[row, 0].images[0].get_array()), ex.pixels.permute(1, 2, 0).numpy())
            caption = " ".join(t.get_text() for ax in axes[row] for t in ax.texts)
            assert f"{T.QUESTIONS[ex.task]}  ->  {ex.answer}" in caption
        ys, xs = shape_pixels(where.pixels)[0].nonzero(as_tuple=True)
        (cross,) = axes[1, 0].lines[-1:]
        x, y = cross.get_xdata()[0], cross.get_ydata()[0]
        assert (x, y) == T.parse_answer("where", where.answer)
        centre = (xs.float().mean() + 0.5, ys.float().mean() + 0.5)  # the shape's centre, from its pixels
        assert abs(centre[0] - x) <= 2.5 and abs(centre[1] - y) <= 2.5
        assert (
            (x // 28, y // 28)
            == (int(centre[0]) // 28, int(centre[1]) // 28)
            == (where.truth[0] // 28, where.truth[1] // 28)
        )
        grid = sorted(
            line.get_xdata()[0] for line in axes[1, 0].lines[:-1] if line.get_xdata()[0] == line.get_xdata()[1]
        )
        assert grid == [27.5, 55.5, 83.5]  # the 28 px merged tokens' edges
    finally:
        plt.close(fig)


def moving_mean(values: list[float], k: int) -> np.ndarray:
    return np.array([np.mean(values[i - k + 1 : i + 1]) for i in range(k - 1, len(values))])


def test_loss_curves_are_each_tasks_moving_mean():
    """One line per run and task: at each of the task's steps from the k-th on, the mean of its last k losses (k =
    smooth, or fewer when the task has fewer steps); a task absent from a log draws no line."""
    rng = np.random.default_rng(0)
    long = [{"step": s, "task": T.TASKS[s % 3], "loss": float(rng.uniform(0.1, 3))} for s in range(30)]
    short = [{"step": s, "task": "colour", "loss": float(rng.uniform(0.1, 3))} for s in range(4)]
    fig = vtr.draw_loss({"live": long, "shipped": short}, smooth=5)
    try:
        lines = {line.get_label(): line for line in fig.axes[0].lines}
        assert list(lines) == [f"{task} (live)" for task in T.TASKS] + ["colour (shipped)"]
        for run, log in (("live", long), ("shipped", short)):
            for task in T.TASKS:
                rows = [r for r in log if r["task"] == task]
                if not rows:
                    continue
                k = min(5, len(rows))
                line = lines[f"{task} ({run})"]
                assert list(line.get_xdata()) == [r["step"] for r in rows][k - 1 :]
                assert np.allclose(line.get_ydata(), moving_mean([r["loss"] for r in rows], k))
                assert line.get_color() == vtr.TASK_COLOURS[task]
    finally:
        plt.close(fig)


def test_loss_curves_draw_every_run_past_the_four_line_styles():
    """Five runs give five lines per task (the line styles repeat): a fifth run was once dropped without a word."""
    logs = {f"run {i}": [{"step": s, "task": "colour", "loss": 1.0 + i + s} for s in range(3)] for i in range(5)}
    fig = vtr.draw_loss(logs, smooth=2)
    try:
        lines = fig.axes[0].lines
        assert [line.get_label() for line in lines] == [f"colour (run {i})" for i in range(5)]
        assert [list(line.get_ydata()) for line in lines] == [[1.5 + i, 2.5 + i] for i in range(5)]
        assert lines[4].get_linestyle() == lines[0].get_linestyle()
    finally:
        plt.close(fig)


def transformers_answer_maps(ref, processor, config, example: T.Example) -> list[torch.Tensor]:
    """Per layer, the answer's attention over the picture from transformers' eager attention: the queries that
    predict the answer's tokens and <|im_end|> (the last k + 1 before the final newline, found by tokenising the
    answer here), heads and queries averaged, over the pad tokens in order, shaped like the evidence."""
    batch = T.make_batch(processor, [example])
    batch.pop("labels")
    ids = batch["input_ids"]
    answer = processor.tokenizer(example.answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
    end = ids.shape[1] - 1
    assert ids[0, end - len(answer) : end].tolist() == answer
    queries = list(range(end - len(answer) - 1, end - 1))  # each predicts the next token
    given = {}
    if example.modality == "video":  # after a video the two libraries' ids differ: give transformers qwenlite's
        given["position_ids"], _ = get_rope_index(
            ids, None, batch["video_grid_thw"], batch["second_per_grid_ts"], batch["attention_mask"], config=config
        )
    probs = reference_eager(ref, batch | {"logits_to_keep": 1}, **given).attentions
    pads = ((ids[0] == config.image_token_id) | (ids[0] == config.video_token_id)).nonzero().flatten()
    return [p[0].float().mean(0)[queries][:, pads].mean(0).reshape(example.evidence.shape) for p in probs]


@pytest.fixture(scope="module")
def reference_maps(ref, processor, config):
    """task -> (its first held-out example, transformers' maps per layer), computed once per task."""
    cache = {}

    def maps(task: str):
        if task not in cache:
            example = T.held_out(task, 1)[0]
            cache[task] = example, transformers_answer_maps(ref, processor, config, example)
        return cache[task]

    return maps


@pytest.mark.parametrize("task", ["where", "when"])
def test_answer_attention_is_transformers_attention_of_the_answer(ours, processor, reference_maps, task):
    """answer_attention, the map the before/after picture draws, equals transformers' eager attention of the same
    example in every layer, read independently (answer queries from the tokenised answer, vision tokens from the
    pad ids): a picture, and a clip whose map has one 4 x 4 grid per temporal patch."""
    example, maps = reference_maps(task)
    for layer, expected in enumerate(maps):
        got = vtr.answer_attention(ours, processor, example, layer)
        assert got.shape == example.evidence.shape == ((4, 4, 4) if task == "when" else (1, 4, 4))
        assert (got - expected).abs().max() <= tolerance(expected), layer


def test_answer_attention_check_fails_on_pads_off_by_one(ours, processor, reference_maps, monkeypatch):
    """Mutation: a map that reads the attention one token to the right of the pads is no longer transformers'."""
    example, (expected, *_) = reference_maps("where")
    monkeypatch.setattr(T, "mm_token_type_ids", lambda ids, cfg: mm_token_type_ids(ids, cfg).roll(1, -1))
    got = vtr.answer_attention(ours, processor, example, 0)
    assert (got - expected).abs().max() > tolerance(expected)


def test_before_after_picture_draws_each_models_map_and_the_evidence(ours, processor):
    """One row per model, one panel per temporal patch: the heat is answer_attention's map of that patch, the
    cyan frames are the evidence cells (the square's 28 px cells, read from the pixels here) and each title gives the
    patch's share of the answer's attention to the clip."""
    example = T.held_out("when", 1)[0]
    heat = vtr.answer_attention(ours, processor, example, 0)
    square = shape_pixels(example.pixels).view(4, 2, 4, 28, 4, 28).any(5).any(3).any(1)  # (t, 4, 4) merged cells
    assert torch.equal(square, example.evidence)
    fig = vtr.draw_attention_before_after({"a": ours, "b": ours}, processor, example, layer=0)
    try:
        axes = np.array(fig.axes[:-1]).reshape(2, 4)  # the last axes is the colour bar
        for name, row in zip("ab", axes, strict=True):
            for k, ax in enumerate(row):
                frame, drawn = ax.images
                assert np.array_equal(np.asarray(frame.get_array()), example.pixels[2 * k].permute(1, 2, 0).numpy())
                assert np.allclose(np.asarray(drawn.get_array()), heat[k].numpy())
                cells = sorted((round(r.get_y()) // 28, round(r.get_x()) // 28) for r in framed(ax))
                assert cells == [tuple(c) for c in square[k].nonzero().tolist()]
                assert ax.get_title() == f"{name}, patch {k}: {float(heat[k].sum()):.2f}"
    finally:
        plt.close(fig)


def test_evidence_ratio_bars_are_the_numbers_per_layer_and_model():
    """Each task's panel: one bar per layer and model at layer + i * width, its height the ratio given; ticks
    centred under each layer's group; the dotted line at 1 (uniform) and the dashed one at 3."""
    ratios = {
        "when": {"seeded": [1.1, 0.9], "trained": [2.5, 4.0]},
        "colour": {"seeded": [1.0, 1.2], "trained": [3.3, 6.1]},
    }
    fig = vtr.draw_evidence_ratios(ratios)
    try:
        for ax, (task, runs) in zip(fig.axes, ratios.items(), strict=True):
            assert ax.get_title() == task
            for i, (container, values) in enumerate(zip(ax.containers, runs.values(), strict=True)):
                assert [bar.get_height() for bar in container] == values
                assert [bar.get_x() + bar.get_width() / 2 for bar in container] == pytest.approx(
                    [layer + i * 0.4 for layer in range(2)]
                )
            assert list(ax.get_xticks()) == pytest.approx([0.2, 1.2])
            assert [t.get_text() for t in ax.get_xticklabels()] == ["layer 0", "layer 1"]
            assert sorted(line.get_ydata()[0] for line in ax.lines) == [1, 3]
    finally:
        plt.close(fig)


def test_theta_tradeoff_plots_each_runs_accuracy_and_best_layer_in_rope_theta_order():
    """Left: accuracy in % per task; right: the larger of the two layers' evidence ratios; x: one place per run, in
    the order of the rope_theta it is named by (a run named "2 (shipped)" is at 2 and says so in its tick); dashed
    at 3x."""

    def run(accuracy, looks):  # per task (when, where, colour): accuracy, and attention in layers 0 and 1
        return dict(zip(T.TASKS, accuracy, strict=True)) | {
            f"{task} attention": list(look) for task, look in zip(T.TASKS, looks, strict=True)
        }

    runs = {
        "1e+06": run((1.0, 0.2, 0.9), ((3.9, 0.9), (1.7, 1.3), (2.1, 1.6))),
        "2 (shipped)": run((1.0, 1.0, 1.0), ((1.4, 0.6), (2.9, 2.4), (1.7, 1.8))),
        "10": run((0.5, 0.45, 1.0), ((2.2, 1.7), (2.9, 1.5), (2.3, 1.0))),
    }
    fig = vtr.draw_theta_tradeoff(runs)
    try:
        left, right = fig.axes
        for task, line_acc, line_att in zip(T.TASKS, left.lines, right.lines[: len(T.TASKS)], strict=True):
            assert list(line_acc.get_xdata()) == [0, 1, 2] == list(line_att.get_xdata())
            order = ("2 (shipped)", "10", "1e+06")
            assert list(line_acc.get_ydata()) == pytest.approx([100 * runs[n][task] for n in order])
            assert list(line_att.get_ydata()) == [max(runs[n][f"{task} attention"]) for n in order]
        assert [t.get_text() for t in right.get_xticklabels()] == ["2 (shipped)", "10", "1e6"]
        assert 3 in [line.get_ydata()[0] for line in right.lines[len(T.TASKS) :]]
    finally:
        plt.close(fig)


def test_pair_rotation_plots_rope_inv_freq_per_axis_and_rope_theta():
    """Each rope_theta and axis is one series: x the pairs mrope_section gives that axis (t first, then h, then w),
    y rope_inv_freq's angle per step for those pairs, coloured by the axis; the dashed line is 1 rad over the
    picture's 4 rows of tokens (3 steps); the labels name the fastest h and w pair of each rope_theta."""
    head_dim, section, thetas = 32, (4, 6, 6), (1e6, 2.0)
    fig = vtr.draw_pair_rotation(head_dim, section, thetas)
    try:
        (ax,) = fig.axes
        series = {line.get_label(): line for line in ax.lines if not line.get_label().startswith("_")}
        assert list(series) == [f"{a} pairs, rope_theta {n}" for n in ("1e6", "2") for a in "thw"]
        pairs = {"t": range(0, 4), "h": range(4, 10), "w": range(10, 16)}
        for theta, name in zip(thetas, ("1e6", "2"), strict=True):
            expected = rope_inv_freq(head_dim, theta).numpy()
            for axis, idx in pairs.items():
                line = series[f"{axis} pairs, rope_theta {name}"]
                assert list(line.get_xdata()) == list(idx)
                assert np.array_equal(np.asarray(line.get_ydata()), expected[list(idx)])
                assert line.get_color() == AXIS_COLOURS[axis]
        (guide,) = [line for line in ax.lines if line.get_linestyle() == "--"]
        assert guide.get_ydata()[0] == pytest.approx(1 / 3)
        labels = [t.get_text() for t in ax.texts]
        assert "fastest h: 0.032" in labels and "fastest w: 0.00018" in labels  # 1e6 ** (-8/32), 1e6 ** (-20/32)
        assert "fastest h: 0.84" in labels and "fastest w: 0.65" in labels  # 2 ** (-8/32), 2 ** (-20/32)
        assert ax.get_yscale() == "log"
    finally:
        plt.close(fig)


def test_pair_rotation_refuses_a_section_that_does_not_cover_the_pairs():
    """mrope_section must hand out exactly head_dim / 2 pairs: (16, 24, 24) with a head_dim of 32 is an error."""
    with pytest.raises(AssertionError):
        vtr.draw_pair_rotation(32, (16, 24, 24), (1e6,))


def test_points_draw_each_answer_where_parse_boxes_reads_it_and_judge_it_as_is_correct():
    """The cross is the answer's point_2d as qwenlite.grounding reads it, the + the shape's centre, the title the
    verdict of train.is_correct; a malformed answer says so. Mutation: a figure that drew the truth as the answer
    would put the wrong answer's cross on the shape."""
    shapes = T.held_out("where", 3)
    (x, y), (x2, y2) = shapes[0].truth, shapes[1].truth
    far = (112 - x2 if abs(112 - 2 * x2) > 40 else (x2 + 56) % 112, y2)  # at least 40 px away, inside the picture
    answers = [
        f'{{"point_2d": [{x + 3}, {y - 2}]}}<|im_end|>',
        f'{{"point_2d": [{far[0]}, {far[1]}]}}',
        "the red square",
    ]
    fig = vtr.draw_points(shapes, answers)
    try:
        for ax, ex, text in zip(fig.axes, shapes, answers, strict=True):
            plus = [line for line in ax.lines if line.get_marker() == "+"]
            assert [(line.get_xdata()[0], line.get_ydata()[0]) for line in plus] == [ex.truth]
            crosses = {(line.get_xdata()[0], line.get_ydata()[0]) for line in ax.lines if line.get_marker() == "x"}
            parsed = T.parse_answer("where", text.split("<|im_end|>")[0])
            if parsed is None:
                assert not crosses and "not a point" in ax.get_title()
                continue
            assert crosses == {parsed}
            verdict = "right" if T.is_correct("where", ex.truth, parsed) else "wrong"
            assert ax.get_title().startswith(f"[{parsed[0]}, {parsed[1]}]: {verdict}")
        assert "right" in fig.axes[0].get_title() and "wrong" in fig.axes[1].get_title()
    finally:
        plt.close(fig)
