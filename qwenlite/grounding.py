"""Boxes and points on pixels: the coordinate frames Qwen-VL models read and write them in.

Qwen2.5-VL answers a grounding prompt ("Locate the face, output JSON") in **absolute pixels of the resized
image**: the H' x W' that `smart_resize` makes of the H x W input, with the processor's `min_pixels` and
`max_pixels` (the Qwen2.5-VL report, arXiv 2502.13923, uses the actual size of the input instead of normalised
coordinates; the input the model sees is the resized one). Its answer is JSON, often inside a ```json fence:

    [{"bbox_2d": [x1, y1, x2, y2], "label": "face"}]      a box
    [{"point_2d": [x, y], "label": "face"}]               a point

Qwen2-VL wrote boxes on a 0-1000 grid relative to the image, as text:
`<|box_start|>(x1,y1),(x2,y2)<|box_end|>`. Qwen3-VL is back to the 0-1000 grid, in the JSON above.

Conventions, everywhere in this module:
- a box is (x1, y1, x2, y2): (x1, y1) its top-left corner, (x2, y2) its bottom-right, x across (columns),
  y down (rows), 0 at the image's top-left corner; a point is (x, y);
- a size is an (H, W) tuple, height first, as torch stores an image (PIL's `image.size` is (W, H): reverse it);
- x scales with widths, y with heights.

Worked example: the course photo is 600 x 512 (H x W); with the checkpoint's limits smart_resize makes it
588 x 504. A face box (170, 155, 350, 340) in the photo's pixels is, in the frame Qwen2.5-VL writes,
(round(170 * 504/512), round(155 * 588/600), round(350 * 504/512), round(340 * 588/600)) = (167, 152, 345, 333),
and on the 0-1000 grid of Qwen2-VL / Qwen3-VL (round(1000 * 170/512), ...) = (332, 258, 684, 567).
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Sequence
from typing import Any

from .preprocessing import FACTOR, MAX_PIXELS, MIN_PIXELS, smart_resize

Size = tuple[int, int]  # (H, W) in pixels


def model_frame(
    original_hw: Sequence[int], min_pixels: float = MIN_PIXELS, max_pixels: float = MAX_PIXELS, factor: int = FACTOR
) -> Size:
    """(H', W'): the frame Qwen2.5-VL's boxes are written in for an (H, W) image, i.e. smart_resize's size.

    Pass the processor's own limits (`PreprocessorConfig.min_pixels`, `.max_pixels`): a deployment that caps
    `max_pixels` shrinks the frame, and the same answer then means other pixels.
    (600, 512) -> (588, 504) with the hub limits; with max_pixels = 320 * 28 * 28 -> (532, 448).
    """
    h, w = _size("model_frame", "original_hw", original_hw)
    return smart_resize(h, w, factor, min_pixels, max_pixels)


def to_resized(box: Sequence[float], original_hw: Sequence[int], resized_hw: Sequence[int]) -> tuple[int, ...]:
    """A box (x1, y1, x2, y2) or point (x, y) in the original image's pixels -> the model's frame, whole pixels.

    x' = round(x * W' / W), y' = round(y * H' / H), with original_hw = (H, W) and resized_hw = (H', W').
    Python's round: halves go to the even pixel, as in smart_resize. (476, 0) on (600, 512) -> (532, 448):
    476 * 448 / 512 = 416.5 -> (416, 0). Use this to write training targets for Qwen2.5-VL.
    """
    return tuple(round(v) for v in _scale("to_resized", box, ("original_hw", original_hw), ("resized_hw", resized_hw)))


def to_original(box: Sequence[float], resized_hw: Sequence[int], original_hw: Sequence[int]) -> tuple[float, ...]:
    """A box or point in the model's frame (what Qwen2.5-VL wrote) -> the original image's pixels, unrounded.

    x = x' * W / W', y = y' * H / H', with resized_hw = (H', W') and original_hw = (H, W). The fraction is kept
    (round it to draw, if you like): to_resized(to_original(b)) == b for whole-pixel b.
    (167, 152, 345, 333) from (588, 504) to (600, 512) -> (169.65, 155.10, 350.48, 339.80): within the
    (512 / 504) / 2 = 0.51 px across and (600 / 588) / 2 = 0.51 px down that rounding to the model's frame can
    lose of the box (170, 155, 350, 340): each axis has its own bound.
    """
    return _scale("to_original", box, ("resized_hw", resized_hw), ("original_hw", original_hw))


def to_thousandths(box: Sequence[float], hw: Sequence[int]) -> tuple[int, ...]:
    """Pixels of an (H, W) image -> the 0-1000 grid of Qwen2-VL and Qwen3-VL: x_k = round(1000 x / W), likewise y.

    Relative: a point has the same numbers on the original and on the resized image (the resize stretches
    each axis by its own factor), so this frame does not depend on max_pixels. No clamping: a box off the
    image comes out below 0 or above 1000. (170, 155, 350, 340) on (600, 512) -> (332, 258, 684, 567).
    """
    return tuple(round(v) for v in _scale("to_thousandths", box, ("hw", hw), ("grid", (1000, 1000))))


def from_thousandths(box: Sequence[float], hw: Sequence[int]) -> tuple[float, ...]:
    """The 0-1000 grid -> pixels of an (H, W) image, unrounded: x = x_k W / 1000, y = y_k H / 1000.

    (332, 258, 684, 567) on (600, 512) -> (169.98, 154.8, 350.21, 340.2).
    """
    return _scale("from_thousandths", box, ("grid", (1000, 1000)), ("hw", hw))


# the fence Qwen models often wrap JSON in: ```json ... ``` (the closing fence may be cut off by max_new_tokens)
_FENCE = re.compile(r"```(?:json)?[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_SHAPES = {"bbox_2d": ("x1", "y1", "x2", "y2"), "point_2d": ("x", "y")}


def parse_boxes(text: str) -> list[dict[str, Any]]:
    """Qwen2.5-VL's grounding answer -> a list of dicts, each with "bbox_2d" [x1, y1, x2, y2] and/or
    "point_2d" [x, y] (numbers, in the model's frame: convert with to_original) and whatever else it wrote.

    Reads a JSON list of objects or one object, bare or inside a ```json fence (text around the fence is
    ignored). Raises ValueError naming what is wrong: not JSON, an item with neither bbox_2d nor point_2d,
    the wrong number of coordinates, a coordinate that is not a number, x2 < x1 or y2 < y1.
    '```json\\n[{"bbox_2d": [167, 152, 345, 333], "label": "face"}]\\n```'
    -> [{"bbox_2d": [167, 152, 345, 333], "label": "face"}].
    """
    if not isinstance(text, str):
        raise ValueError(f"parse_boxes: expected the model's answer as a str, got a {type(text).__name__}")
    fenced = _FENCE.search(text)
    body = (fenced.group(1) if fenced else text).strip()
    try:
        data = json.loads(body)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"parse_boxes: the answer is not JSON ({err.msg} at line {err.lineno} column {err.colno}): {body[:80]!r}"
        ) from None
    items = [data] if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError(
            f'parse_boxes: expected a JSON list of objects like {{"bbox_2d": [x1, y1, x2, y2]}}, '
            f"got a JSON {_json_kind(data)}: {body[:80]!r}"
        )
    boxes = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(
                f'parse_boxes: item {i} is a JSON {_json_kind(item)}, not an object like {{"bbox_2d": [...]}}'
            )
        found = [key for key in _SHAPES if key in item]
        if not found:
            raise ValueError(f"parse_boxes: item {i} has neither 'bbox_2d' nor 'point_2d' (its keys: {sorted(item)})")
        parsed = dict(item)
        for key in found:
            parsed[key] = list(_coordinates(f"parse_boxes: item {i}: {key}", item[key], len(_SHAPES[key])))
        boxes.append(parsed)
    return boxes


# ---------------------------------------------------------------- checks shared by the functions above


def _json_kind(value: Any) -> str:
    """What JSON calls a parsed value's type: object, array, string, number, true/false, null."""
    if isinstance(value, bool):
        return "true/false"
    kinds = {dict: "object", list: "array", str: "string", int: "number", float: "number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _size(where: str, name: str, hw: Sequence[int]) -> Size:
    """(H, W) as two positive whole numbers of pixels, or a ValueError naming the argument."""
    ok = isinstance(hw, Sequence) and not isinstance(hw, str) and len(hw) == 2
    if ok and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in hw):
        return int(hw[0]), int(hw[1])
    raise ValueError(f"{where}: {name} must be (H, W), two positive whole numbers of pixels, got {hw!r}")


def _coordinates(where: str, values: Any, count: int) -> tuple[float, ...]:
    """2 (x, y) or 4 (x1, y1, x2, y2) finite numbers, a box's corners in order; or a ValueError saying which."""
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise ValueError(f"{where} must be a list of numbers, got {values!r}")
    if count and len(values) != count:
        names = ", ".join(("x1", "y1", "x2", "y2") if count == 4 else ("x", "y"))
        raise ValueError(f"{where} needs {count} coordinates ({names}), got {len(values)}: {list(values)}")
    if len(values) not in (2, 4):
        raise ValueError(f"{where} needs 2 coordinates (x, y) or 4 (x1, y1, x2, y2), got {len(values)}: {values}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{where}: coordinate {v!r} is not a finite number (in {list(values)})")
    if len(values) == 4:
        x1, y1, x2, y2 = values
        if x2 < x1:
            raise ValueError(f"{where} has x2 < x1 ({x2} < {x1}): a box is (x1, y1, x2, y2), top-left first")
        if y2 < y1:
            raise ValueError(f"{where} has y2 < y1 ({y2} < {y1}): a box is (x1, y1, x2, y2), top-left first")
    return tuple(values)


def _scale(
    where: str, box: Sequence[float], source: tuple[str, Sequence[int]], target: tuple[str, Sequence[int]]
) -> tuple[float, ...]:
    """x * W_to / W_from at even places, y * H_to / H_from at odd places (multiply first: exact for whole pixels).

    source and target are (argument name, (H, W)): the name is what an error message calls a bad size.
    """
    coords = _coordinates(f"{where}: box", box, 0)
    (h0, w0), (h1, w1) = _size(where, *source), _size(where, *target)
    return tuple(v * w1 / w0 if k % 2 == 0 else v * h1 / h0 for k, v in enumerate(coords))
