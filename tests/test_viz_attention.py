"""viz.attention folds a query's attention over a span back onto the span's frames: the fold must follow the
order in which the model gives the span's tokens their (t, h, w) ids, or a heat map lands on the wrong pixels."""

from __future__ import annotations

import pytest
import torch

from qwenlite.tokens import mm_token_type_ids
from qwenlite_course.viz.attention import attention_to_span, vision_spans

WORD = 9707  # an ordinary text token


def layout(config, image_grid, video_grid):
    """text, an image, text, a video, text: (1, L) ids with the right number of pads for each grid."""
    merge = config.vision_config.spatial_merge_size
    image = [config.image_token_id] * (image_grid.prod().item() // merge**2)
    video = [config.video_token_id] * (video_grid.prod().item() // merge**2)
    start, end = config.vision_start_token_id, config.vision_end_token_id
    ids = [WORD] * 3 + [start, *image, end] + [WORD] * 2 + [start, *video, end] + [WORD] * 4
    return torch.tensor([ids])


@pytest.mark.parametrize("video_grid", [[2, 4, 6], [3, 6, 4]])
def test_a_maps_cells_are_the_tokens_with_those_ids(config, ref, video_grid):
    """Put all of one query's attention on a single span token; the map's hot cell (k, r, c) must be that
    token's temporal patch, row and column as transformers' `get_rope_index` numbers them (t = s + k * step, h = s + r,
    w = s + c). A fold that swapped rows and columns, or time and rows, fails this."""
    image_grid, video_grid = torch.tensor([[1, 4, 8]]), torch.tensor([video_grid])
    ids = layout(config, image_grid[0], video_grid[0])
    seconds = torch.tensor([1.0])
    pos, _ = ref.model.get_rope_index(
        ids,
        mm_token_type_ids=mm_token_type_ids(ids, config),
        image_grid_thw=image_grid,
        video_grid_thw=video_grid,
        second_per_grid_ts=seconds,
    )  # inside each span the two libraries' rules agree; after a video they may not, and nothing here reads that
    spans = vision_spans(ids[0], config, image_grid, video_grid)
    assert [s.modality for s in spans] == ["image", "video"]
    step = config.vision_config.tokens_per_second * 1.0
    L = ids.shape[1]
    for span in spans:
        s = int(pos[0, 0, span.start])
        for column in torch.randperm(span.end - span.start)[:10].tolist():
            weights = torch.zeros(1, L, L)  # one head; query L - 1 attends to one column only
            weights[0, L - 1, span.start + column] = 1.0
            heat = attention_to_span(weights, [L - 1], span)
            k, r, c = (int(i) for i in (heat == 1).nonzero()[0])
            t, h, w = pos[:, 0, span.start + column].tolist()
            assert (t - s, h - s, w - s) == (int(k * step) if span.modality == "video" else 0, r, c)
            assert heat.sum() == 1 and heat.shape == span.token_grid


def test_maps_average_the_chosen_heads_and_queries(config):
    """head=None is the mean over heads; the queries are averaged; a map sums to the share on the span."""
    image_grid = torch.tensor([[1, 4, 4]])
    ids = layout(config, image_grid[0], torch.tensor([1, 2, 2]))
    ids = ids[:, : int((ids[0] == config.vision_end_token_id).nonzero()[0]) + 1]  # the image only
    (span,) = vision_spans(ids[0], config, image_grid)
    weights = torch.rand(3, ids.shape[1], ids.shape[1]).softmax(-1)
    queries = [0, ids.shape[1] - 1]
    by_head = torch.stack([attention_to_span(weights, queries, span, head) for head in range(3)])
    assert torch.allclose(attention_to_span(weights, queries, span), by_head.mean(0))
    share = weights[:, queries, span.start : span.end].sum(-1).mean()
    assert torch.allclose(attention_to_span(weights, queries, span).sum(), share)


def test_spans_and_grids_that_do_not_belong_together_are_refused(config):
    image_grid, video_grid = torch.tensor([[1, 4, 8]]), torch.tensor([[2, 4, 6]])
    ids = layout(config, image_grid[0], video_grid[0])
    with pytest.raises(
        ValueError, match=r"image pads at columns \[4, 12\): 8 tokens, but the image grids cover 0 \+ 12$"
    ):
        vision_spans(ids[0], config, torch.tensor([[1, 4, 12]]), video_grid)
    with pytest.raises(ValueError, match=r"image pads at columns \[4, 12\): 8 tokens, but the image grids cover 4$"):
        vision_spans(ids[0], config, torch.tensor([[1, 4, 4]]), video_grid)
    with pytest.raises(
        ValueError, match=r"video pads at columns \[\d+, \d+\): 12 tokens, but the video grids cover 0$"
    ):
        vision_spans(ids[0], config, image_grid, None)


def test_share_by_layer_names_its_columns_by_temporal_patch():
    """The strip's columns carry the name the tables and the text use ("patch k"), the seconds underneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qwenlite_course.viz.attention import VisionSpan, draw_share_by_layer

    span = VisionSpan("video", 2, 2 + 3 * 2 * 2, (3, 4, 4), 2)  # 3 temporal patches of 2 x 2 tokens
    L = span.end + 2
    layers = [torch.rand(1, 2, L, L).softmax(-1) for _ in range(2)]
    for seconds, expected in [
        (None, ["patch 0", "patch 1", "patch 2"]),
        (0.5, ["patch 0\n(0-0.5 s)", "patch 1\n(0.5-1 s)", "patch 2\n(1-1.5 s)"]),
    ]:
        fig = draw_share_by_layer(layers, [L - 1], span, seconds, None if seconds is None else (0.5, 1.0))
        labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
        assert labels[:3] == expected and labels[3].startswith("text")
        plt.close(fig)
