"""qwenlite.grounding: boxes between the original image, Qwen2.5-VL's resized frame and the 0-1000 grid.

The resized frame is checked against transformers' own smart_resize; the 476-on-448 confusion (an edge of the
original that lies outside the model's frame) is a test; parse_boxes reads good answers and names what is
wrong in bad ones; a mutation (sizes passed as (W, H)) shows the round-trip check can fail. No model: fast.
"""

from __future__ import annotations

import json

import pytest
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

from qwenlite import grounding
from qwenlite.preprocessing import FACTOR, MAX_PIXELS, MIN_PIXELS

PHOTO_HW = (600, 512)  # data/grace_hopper.jpg, H x W
FACE = (170, 155, 350, 340)  # x1, y1, x2, y2 in the photo's pixels

# (H, W) and (min_pixels, max_pixels): the hub limits, transformers' default 1280 tokens, a small cap, and a
# tiny image grown to the minimum; portrait, landscape, square and long sides
SIZES = [(600, 512), (1080, 1920), (3024, 4032), (368, 434), (28, 5000), (10, 10), (777, 777), (2600, 3300)]
LIMITS = [(MIN_PIXELS, MAX_PIXELS), (MIN_PIXELS, 1280 * 784), (MIN_PIXELS, 320 * 784), (256 * 784, 1280 * 784)]


def round_trip_error(to_resized, box, original_hw, resized_hw) -> float:
    """Largest |original - to_original(to_resized(original))| over the coordinates, in original pixels."""
    back = grounding.to_original(to_resized(box, original_hw, resized_hw), resized_hw, original_hw)
    return max(abs(a - b) for a, b in zip(box, back, strict=True))


def half_pixel(original_hw, resized_hw) -> float:
    """What rounding to the model's frame may lose: half a resized pixel, in original pixels (x or y, the larger)."""
    return max(original_hw[0] / resized_hw[0], original_hw[1] / resized_hw[1]) / 2


@pytest.mark.parametrize("limits", LIMITS, ids=lambda lim: f"{lim[0] // 784}-{lim[1] // 784}tok")
def test_model_frame_is_transformers_smart_resize(limits):
    """Differential: the frame boxes are written in is transformers' smart_resize with the same limits, and the
    whole image's box goes to that frame's corners."""
    for hw in SIZES:
        expected = tuple(hf_smart_resize(*hw, FACTOR, *limits))
        assert grounding.model_frame(hw, *limits) == expected, hw
        h, w = hw
        assert grounding.to_resized((0, 0, w, h), hw, expected) == (0, 0, expected[1], expected[0])


def test_worked_example_of_the_docstrings():
    """The numbers the module's docstring and notebook 10 section 2 state."""
    resized = grounding.model_frame(PHOTO_HW)
    assert resized == (588, 504)
    assert grounding.to_resized(FACE, PHOTO_HW, resized) == (167, 152, 345, 333)
    assert grounding.to_thousandths(FACE, PHOTO_HW) == (332, 258, 684, 567)
    assert grounding.to_original((167, 152, 345, 333), resized, PHOTO_HW) == pytest.approx(
        (169.65, 155.10, 350.48, 339.80), abs=0.005
    )
    assert grounding.from_thousandths((332, 258, 684, 567), PHOTO_HW) == pytest.approx((169.984, 154.8, 350.208, 340.2))


@pytest.mark.parametrize("limits", LIMITS[:3], ids=["hub", "1280tok", "320tok"])
def test_round_trips(limits):
    """original -> model frame -> original loses at most half a resized pixel; model frame -> original -> model
    frame is exact for whole pixels; the 0-1000 grid loses at most half a thousandth; boxes and points alike."""
    for hw in SIZES[:4] + SIZES[5:]:
        resized = grounding.model_frame(hw, *limits)
        h, w = hw
        for box in [(0, 0, w, h), (w * 0.1, h * 0.37, w * 0.55, h * 0.9), (3, h - 1), (w / 3, h / 7)]:
            assert round_trip_error(grounding.to_resized, box, hw, resized) <= half_pixel(hw, resized) + 1e-9
            back = grounding.from_thousandths(grounding.to_thousandths(box, hw), hw)
            assert all(abs(a - b) <= max(h, w) / 2000 + 1e-9 for a, b in zip(box, back, strict=True))
        rh, rw = resized
        for answer in [(0, 0, rw, rh), (1, 2, rw - 3, rh - 4), (rw // 2, rh // 3)]:
            assert grounding.to_resized(grounding.to_original(answer, resized, hw), hw, resized) == answer


def test_thousandths_do_not_depend_on_the_frame():
    """A point has the same 0-1000 numbers on the original and on the resized image (unrounded in between)."""
    for limits in LIMITS:
        resized = grounding.model_frame(PHOTO_HW, *limits)
        (h, w), (rh, rw) = PHOTO_HW, resized
        exact = (FACE[0] * rw / w, FACE[1] * rh / h, FACE[2] * rw / w, FACE[3] * rh / h)  # the face, unrounded
        assert grounding.to_thousandths(exact, resized) == grounding.to_thousandths(FACE, PHOTO_HW)


def test_476_on_448():
    """The photo with max_pixels = 320 tokens is resized to a width of 448 while it is 512 wide. An edge at
    x = 476 in the photo's pixels is inside the photo and outside the model's frame; to_resized maps it inside
    (476 * 448 / 512 = 416.5, to 416: halves to even). The reverse confusion: reading the model's 416 as
    original pixels misses by 60 px."""
    cap = 320 * 784
    resized = grounding.model_frame(PHOTO_HW, MIN_PIXELS, cap)
    assert resized == tuple(hf_smart_resize(*PHOTO_HW, FACTOR, MIN_PIXELS, cap)) == (532, 448)
    edge = 476
    assert resized[1] < edge < PHOTO_HW[1]
    (x, y) = grounding.to_resized((edge, 300), PHOTO_HW, resized)
    assert (x, y) == (416, 266) and 0 <= x < resized[1]
    assert grounding.to_original((x, y), resized, PHOTO_HW)[0] == pytest.approx(475.43, abs=0.01)
    assert edge - x == 60
    # QwenLM issue #1035's numbers: a 434 x 368 image (H x W; the issue writes PIL's (368, 434)) is seen as
    # 448 x 364, and its answer [19, 300, 154, 476] has y2 = 476, past the frame's 448 rows and, converted,
    # past the image's 434 rows too (461.1): a drift to clip, not a frame to convert
    assert grounding.model_frame((434, 368)) == tuple(hf_smart_resize(434, 368)) == (448, 364)
    answer = grounding.parse_boxes('[{"bbox_2d": [19, 300, 154, 476]}]')[0]["bbox_2d"]
    assert grounding.to_original(answer, (448, 364), (434, 368))[3] == pytest.approx(461.125)


def test_swapped_sizes_break_a_non_square_round_trip():
    """Mutation: sizes passed as (W, H) (PIL's image.size order) scale x by heights and y by widths. The round
    trip through the correct to_original then fails on a non-square image, while a square one cannot tell."""

    def swapped(box, original_hw, resized_hw):
        return grounding.to_resized(box, original_hw[::-1], resized_hw[::-1])

    for hw, limits in [((1080, 1920), (MIN_PIXELS, 1280 * 784)), (PHOTO_HW, (MIN_PIXELS, 320 * 784))]:
        resized = grounding.model_frame(hw, *limits)
        box = (hw[1] * 0.8, hw[0] * 0.1, hw[1] * 0.9, hw[0] * 0.3)
        assert round_trip_error(grounding.to_resized, box, hw, resized) <= half_pixel(hw, resized)
        assert round_trip_error(swapped, box, hw, resized) > 10 * half_pixel(hw, resized)
    square = grounding.model_frame((777, 777))
    box = (100, 200, 300, 400)
    assert swapped(box, (777, 777), square) == grounding.to_resized(box, (777, 777), square)


GOOD = [
    ('```json\n[\n\t{"bbox_2d": [167, 152, 345, 333], "label": "face"}\n]\n```', [[167, 152, 345, 333]]),
    (
        '[{"bbox_2d": [1, 2, 3, 4], "label": "a"}, {"bbox_2d": [5, 6, 7.5, 8], "label": "b"}]',
        [[1, 2, 3, 4], [5, 6, 7.5, 8]],
    ),
    ('{"point_2d": [45, 95]}', [[45, 95]]),
    ('Here it is:\n```json\n[{"point_2d": [9, 8], "label": "shape"}]\n```\nDone.', [[9, 8]]),
    ('```json\n[{"bbox_2d": [0, 0, 10, 10]}]', [[0, 0, 10, 10]]),  # the closing fence cut off by max_new_tokens
    ("[]", []),
]


@pytest.mark.parametrize(("text", "coords"), GOOD, ids=range(len(GOOD)))
def test_parse_boxes_reads_good_answers(text, coords):
    boxes = grounding.parse_boxes(text)
    assert [b.get("bbox_2d", b.get("point_2d")) for b in boxes] == coords
    if "label" in text:
        assert all("label" in b for b in boxes)


def test_parse_boxes_keeps_the_rest_and_copies():
    answer = [{"bbox_2d": [1, 2, 3, 4], "label": "face", "score": 0.9}]
    boxes = grounding.parse_boxes(json.dumps(answer))
    assert boxes == answer
    boxes[0]["bbox_2d"][0] = 99
    assert grounding.parse_boxes(json.dumps(answer))[0]["bbox_2d"][0] == 1


BAD = [
    ("The face is in the middle.", "not JSON"),
    ("", "not JSON"),
    ('```json\n[{"bbox_2d": [1, 2, 3, 4]},]\n```', "not JSON"),
    ('"a box"', "JSON string"),
    ("[[1, 2, 3, 4]]", "item 0 is a JSON array"),
    ('[{"box": [1, 2, 3, 4], "label": "face"}]', "neither 'bbox_2d' nor 'point_2d'"),
    ('[{"bbox_2d": [1, 2, 3, 4]}, {"label": "b"}]', "item 1 has neither"),
    ('[{"bbox_2d": [1, 2, 3]}]', "bbox_2d needs 4 coordinates (x1, y1, x2, y2), got 3"),
    ('[{"point_2d": [1, 2, 3]}]', "point_2d needs 2 coordinates (x, y), got 3"),
    ('[{"bbox_2d": [30, 2, 10, 4]}]', "x2 < x1 (10 < 30)"),
    ('[{"bbox_2d": [1, 20, 3, 4]}]', "y2 < y1 (4 < 20)"),
    ('[{"bbox_2d": [1, "2", 3, 4]}]', "'2' is not a finite number"),
    ('[{"bbox_2d": "1, 2, 3, 4"}]', "must be a list of numbers"),
]


@pytest.mark.parametrize(("text", "problem"), BAD, ids=[p for _, p in BAD])
def test_parse_boxes_names_the_problem(text, problem):
    with pytest.raises(ValueError, match="parse_boxes") as err:
        grounding.parse_boxes(text)
    assert problem in str(err.value)


@pytest.mark.parametrize(
    ("call", "problem"),
    [
        (lambda: grounding.to_resized((1, 2, 3), (6, 5), (6, 5)), "2 coordinates (x, y) or 4"),
        (lambda: grounding.to_resized((3, 2, 1, 4), (6, 5), (6, 5)), "x2 < x1"),
        (lambda: grounding.to_original((1, 2), (6, 5), (600,)), "original_hw must be (H, W)"),
        (lambda: grounding.to_resized((1, 2), (0, 5), (6, 5)), "original_hw must be (H, W)"),
        (lambda: grounding.to_thousandths((1, 2), (6.5, 5)), "hw must be (H, W)"),
        (lambda: grounding.from_thousandths((1, float("nan")), (6, 5)), "not a finite number"),
        (lambda: grounding.model_frame((True, 5)), "original_hw must be (H, W)"),
    ],
    ids=["count", "order", "short size", "zero", "fraction", "nan", "bool"],
)
def test_conversions_refuse_bad_arguments_by_name(call, problem):
    with pytest.raises(ValueError) as err:
        call()
    assert problem in str(err.value)
