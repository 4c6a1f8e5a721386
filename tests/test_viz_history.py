"""qwenlite_course.viz.history: the gallery of position-id bugs draws the ids it is given, and marks exactly the
tokens where the bug's ids differ from the right ones."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from qwenlite import get_rope_index  # noqa: E402
from qwenlite.tokens import token_kinds  # noqa: E402
from qwenlite_course.viz.history import PositionBug, draw_position_bugs  # noqa: E402


@pytest.fixture
def int_cast_bug(config):
    """The int(second_per_grid_t) bug (late v4.5x releases, and 5.x until PR #48669) on a clip of grid
    (4, 4, 4), 0.5 s a patch."""
    ids = torch.tensor(
        [[100, config.vision_start_token_id, *[config.video_token_id] * 16, config.vision_end_token_id, 100]]
    )
    grid = torch.tensor([[4, 4, 4]])
    right, _ = get_rope_index(ids, video_grid_thw=grid, second_per_grid_ts=[0.5], config=config)
    cast, _ = get_rope_index(ids, video_grid_thw=grid, second_per_grid_ts=[0], config=config)
    return PositionBug("a 4 fps clip", "int(0.5) = 0", token_kinds(ids[0].tolist(), config), right[:, 0], cast[:, 0])


def test_the_bug_differs_exactly_where_the_t_ids_collapse(int_cast_bug):
    # the right t ids of the video's 4 temporal patches are 0, 1, 2, 3 after the start; the cast makes them all 0,
    # so patches 1-3 (12 tokens) and the text after the clip (its start comes 3 ids earlier) differ
    differs = int_cast_bug.differs()
    video = torch.tensor([k == "video" for k in int_cast_bug.kinds])
    assert not differs[video][:4].any() and differs[video][4:].all()
    assert differs[-2:].all() and not differs[:2].any()


def test_the_figure_draws_the_ids_it_was_given_and_marks_the_differences(int_cast_bug):
    fig = draw_position_bugs([int_cast_bug, int_cast_bug])
    left, right = fig.axes[0], fig.axes[1]
    for ax, ids in ((left, int_cast_bug.right), (right, int_cast_bug.bug)):
        lines = [line for line in ax.get_lines() if line.get_label() in ("t", "h", "w")]
        assert [line.get_label() for line in lines] == ["t", "h", "w"]
        for axis, line in enumerate(lines):
            assert line.get_ydata().tolist() == ids[axis].tolist()
    (marks,) = right.collections[-1:]  # the x marks: one per differing token, at the bug's largest id
    assert len(marks.get_offsets()) == int(int_cast_bug.differs().sum())
    assert not [c for c in left.collections if c.get_offsets().size]  # nothing marked on the right ids
    plt.close(fig)


def test_a_bug_whose_shapes_do_not_match_is_refused(int_cast_bug):
    with pytest.raises(ValueError, match=r"must both be \(3, L\)"):
        PositionBug("bad", "here", int_cast_bug.kinds, int_cast_bug.right, int_cast_bug.bug[:, :-1])
    with pytest.raises(ValueError, match="token kinds"):
        PositionBug("bad", "here", int_cast_bug.kinds[:-1], int_cast_bug.right, int_cast_bug.bug)
