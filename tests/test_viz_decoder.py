"""qwenlite_course.viz.decoder: the M-RoPE, mask and KV-cache pictures of notebook 07 draw what the decoder computes:
which axis turns each rotary pair (`mrope_cos_sin`), the cos it rotates with, the mask `causal_mask` builds and the
cache a real prefill and decode fill."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba

from qwenlite.decoder import KVCache, TextModel, causal_mask, mrope_cos_sin
from qwenlite.layers import rope_inv_freq
from qwenlite.rope_index import get_rope_index
from qwenlite_course.viz import decoder as vd

WORD = 9707  # an ordinary text token
SECTIONS = {"twin": (4, 6, 6), "Qwen2.5-VL 3B and 7B": (16, 24, 24), "uneven": (1, 1, 2)}


def turning_axis(section, theta: float = 1e6) -> list[str]:
    """Which position axis moves each rotary pair in the decoder's own mrope_cos_sin: move one axis at a time."""
    half = sum(section)
    inv_freq = rope_inv_freq(2 * half, theta, "cpu")
    axes = [""] * half
    for a, name in enumerate("thw"):
        positions = torch.zeros(3, 1, 1, dtype=torch.long)
        positions[a] = 1
        _, sin = mrope_cos_sin(positions, inv_freq, section)
        for i in sin[0, 0, :half].nonzero().flatten().tolist():
            axes[i] += name
    return axes


@pytest.mark.parametrize("section", SECTIONS.values(), ids=SECTIONS.keys())
def test_pair_axes_are_the_axes_mrope_turns_each_pair_with(section):
    """pair_axes (the colour of every pair in both figures) is the one axis whose id moves that pair's angle."""
    assert vd.pair_axes(section) == turning_axis(section)


def test_pair_axes_check_fails_on_a_swapped_section():
    """Mutation: a figure that read mrope_section in the order (h, t, w) colours the wrong pairs."""
    assert vd.pair_axes((6, 4, 6)) != turning_axis((4, 6, 6))


def test_section_bars_are_the_decoders_rotation_speeds():
    """Each panel's dots are rope_inv_freq, the speeds TextModel rotates with, and each coloured band covers exactly
    the pairs that mrope_cos_sin turns with that band's axis."""
    fig = vd.draw_mrope_sections(SECTIONS, rope_theta=1e6)
    try:
        for ax, (name, section) in zip(fig.axes, SECTIONS.items(), strict=True):
            half = sum(section)
            assert f"{name}: mrope_section {section}, Dh = {2 * half}" in ax.get_title(loc="left")
            (dots,) = ax.lines
            assert np.allclose(dots.get_ydata(), rope_inv_freq(2 * half, 1e6, "cpu").numpy(), rtol=1e-6, atol=0)
            axes = turning_axis(section)
            for band, label in zip(ax.patches, ax.texts, strict=True):
                covered = [i for i in range(half) if band.get_x() < i < band.get_x() + band.get_width()]
                (axis,) = {axes[i] for i in covered}
                assert label.get_text() == f"{axis}: {len(covered)} pairs"
                assert band.get_facecolor()[:3] == to_rgba(vd.AXIS_COLOURS[axis])[:3]
    finally:
        plt.close(fig)


def test_section_bars_take_each_models_own_rope_theta():
    """With one rope_theta per model (the twin's 2, the real 1e6) each panel's dots are that model's speeds."""
    thetas = dict(zip(SECTIONS, (2.0, 1e6, 10.0), strict=True))
    fig = vd.draw_mrope_sections(SECTIONS, rope_theta=thetas)
    try:
        for ax, (name, section) in zip(fig.axes, SECTIONS.items(), strict=True):
            theta = thetas[name]
            assert ax.get_title(loc="left").endswith(f"rope_theta {theta:g}")
            (dots,) = ax.lines
            assert np.allclose(dots.get_ydata(), rope_inv_freq(2 * sum(section), theta, "cpu").numpy(), rtol=1e-6)
    finally:
        plt.close(fig)


def pair_angles(position_ids: torch.Tensor, inv_freq: torch.Tensor, section) -> torch.Tensor:
    """(L, Dh/2) angle of each pair at its own axis, as notebook 07 gathers it (one row of the batch)."""
    axis_of_pair = torch.arange(3).repeat_interleave(torch.tensor(section))
    angles = position_ids[:, None, :, None].float() * inv_freq  # (3, 1, L, Dh/2)
    return angles.gather(0, axis_of_pair.expand(1, 1, position_ids.shape[1], -1))[0, 0]


@pytest.fixture(scope="module")
def image_prompt(config):
    """3 words, an image of 4 x 6 merged tokens, 2 words: position_ids (3, L), the image's [start, end),
    mrope_section and inv_freq."""
    image = [config.image_token_id] * 24
    ids = torch.tensor([[WORD] * 3 + [config.vision_start_token_id, *image, config.vision_end_token_id] + [WORD] * 2])
    position_ids, _ = get_rope_index(ids, torch.tensor([[1, 8, 12]]), config=config)
    tc = config.text_config
    return position_ids[:, 0], (4, 28), tc.mrope_section, rope_inv_freq(tc.head_dim, tc.rope_theta)


def drawn_cos(position_ids, angles, section, span) -> tuple[np.ndarray, object]:
    fig = vd.draw_mrope_cos(position_ids, angles, section, span)
    return np.asarray(fig.axes[1].images[0].get_array()), fig


def test_cos_heatmap_is_the_cos_the_decoder_rotates_with(image_prompt):
    """The middle panel is cos of mrope_cos_sin on get_rope_index's ids of a prompt with an image; the top panel's
    steps are those ids; the band labels name the axis that turns each pair; dashed lines frame the image."""
    position_ids, span, section, inv_freq = image_prompt
    cos, _ = mrope_cos_sin(position_ids[:, None], inv_freq, section)  # (1, L, Dh): what TextModel uses
    half = sum(section)
    image, fig = drawn_cos(position_ids, pair_angles(position_ids, inv_freq, section), section, span)
    try:
        assert np.allclose(image, cos[0, :, :half].T.numpy(), atol=1e-6)
        for row, line in zip(position_ids, fig.axes[0].lines, strict=True):
            assert np.array_equal(line.get_ydata(), row.numpy())
        ax = fig.axes[1]
        axes = turning_axis(section)
        labels = {round(t.get_position()[1] + 0.5): t.get_text() for t in ax.texts}  # band middle -> axis
        start = 0
        for n in section:
            assert {axes[i] for i in range(start, start + n)} == {labels[round(start + n / 2)]}
            start += n
        dashed = sorted(line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--")
        assert dashed == [span[0] - 0.5, span[1] - 0.5]
        scaled = np.asarray(fig.axes[2].images[0].get_array())
        moving = image.std(1) > 0
        assert np.allclose(scaled[moving].min(1), 0) and np.allclose(scaled[moving].max(1), 1)
    finally:
        plt.close(fig)


def test_cos_heatmap_check_fails_on_angles_of_the_wrong_axes(image_prompt):
    """Mutation: angles gathered with the sections reversed (w pairs turned by t) no longer give the decoder's cos."""
    position_ids, span, section, inv_freq = image_prompt
    cos, _ = mrope_cos_sin(position_ids[:, None], inv_freq, section)
    wrong = pair_angles(position_ids.flip(0), inv_freq, section)
    image, fig = drawn_cos(position_ids, wrong, section, span)
    plt.close(fig)
    assert not np.allclose(image, cos[0, :, : sum(section)].T.numpy(), atol=1e-6)


def test_mask_panels_draw_the_decoders_mask():
    """Each panel is causal_mask's (L, S) for a row of a left-padded batch: a query reads the keys at or before it
    that are not padding. Tick labels are the row's tokens."""
    attention_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    allowed = causal_mask(torch.zeros(2, 5, 8), attention_mask, past=0)[:, 0]  # (B, L, S)
    tokens = {"left-padded": ["<pad>", "<pad>", "Hello", "·the", "re"], "causal": ["The", "·quick", "·b", "rown", "!"]}
    fig = vd.draw_mask_panels({"left-padded": allowed[0], "causal": allowed[1]}, tokens)
    try:
        q, k = torch.meshgrid(torch.arange(5), torch.arange(5), indexing="ij")
        for ax, row, name in zip(fig.axes, attention_mask, tokens, strict=True):
            by_hand = (k <= q) & row.bool()[None, :]
            assert np.array_equal(np.asarray(ax.images[0].get_array()), by_hand.float().numpy())
            assert [t.get_text() for t in ax.get_xticklabels()] == tokens[name]
            assert [t.get_text() for t in ax.get_yticklabels()] == tokens[name]
            assert ax.get_title() == name
    finally:
        plt.close(fig)


def test_cache_growth_draws_the_cache_a_decode_fills(config):
    """Bars from zero: len(KVCache) after a prefill of 6 tokens and 3 decode steps of the checkpoint's decoder (its
    shapes: the weights do not change the cache's size), stacked as the prompt's part and the decode steps' part;
    solid line: its nbytes in KiB; dashed: what caching all H heads would hold, 2 x layers x H x Dh x 4 bytes per
    token (float32), counted here."""
    tc = config.text_config
    decoder = TextModel(tc)
    cache, lengths, nbytes = KVCache(), [], []
    with torch.no_grad():
        for start, new in ((0, 6), (6, 1), (7, 1), (8, 1)):
            x = torch.randn(1, new, tc.hidden_size)
            decoder(x, torch.arange(start, start + new).expand(3, 1, -1), cache=cache)
            lengths.append(len(cache))
            nbytes.append(cache.nbytes)
    group = tc.num_attention_heads // tc.num_key_value_heads
    fig = vd.draw_cache_growth(lengths, nbytes, group, dtype="float32")
    try:
        prompt, added = fig.axes[0].containers
        tops = [a.get_y() + a.get_height() for a in added]
        assert [p.get_height() for p in prompt] == [6] * 4 and [a.get_y() for a in added] == [6] * 4
        assert tops == lengths == [6, 7, 8, 9]  # stacked: the prompt, then what each decode step added
        assert fig.axes[0].get_ylim()[0] == 0  # bars measured from zero
        assert prompt[0].get_facecolor() == to_rgba("#e45756") and added[0].get_facecolor() == to_rgba("#4c78a8")
        assert fig.axes[1].get_ylabel().endswith("float32)")
        all_heads, grouped = fig.axes[1].lines
        assert np.allclose(grouped.get_ydata(), np.array(nbytes) / 1024)
        per_token = 2 * tc.num_hidden_layers * tc.num_attention_heads * tc.head_dim * 4
        assert np.allclose(all_heads.get_ydata(), np.array(lengths) * per_token / 1024)
        assert all_heads.get_label().endswith(f"(x{group})")
    finally:
        plt.close(fig)


def test_prefill_vs_decode_draws_the_timings_with_true_slope_guides():
    """The two measured curves in ms, the measured lengths as x ticks, and guides of slope 2 and 1 on log-log axes
    through the last prefill point."""
    lengths, prefill_s, step_s = [64, 128, 256, 512], [1e-3, 3e-3, 1e-2, 4e-2], [2e-4, 2.2e-4, 2.5e-4, 3e-4]
    fig = vd.draw_prefill_vs_decode(lengths, prefill_s, step_s)
    try:
        (ax,) = fig.axes
        prefill, step, square, linear = ax.lines
        assert np.allclose(prefill.get_ydata(), np.array(prefill_s) * 1e3)
        assert np.allclose(step.get_ydata(), np.array(step_s) * 1e3)
        for guide, slope in ((square, 2), (linear, 1)):
            x, y = np.log(guide.get_xdata()), np.log(guide.get_ydata())
            assert np.allclose(np.diff(y) / np.diff(x), slope) and y[-1] == pytest.approx(np.log(prefill_s[-1] * 1e3))
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(n) for n in lengths]
    finally:
        plt.close(fig)
