"""The grading every notebook's exercises share: the registry, describe / check, calling a learner's function,
and hints for counts. The exercises themselves live in one module per notebook (nbNN_<notebook>.py)."""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..viz import data_dir

DATA = data_dir()  # the repository's data/ folder (photo, sample video, configs)


@dataclass(frozen=True)
class Exercise:
    text: str  # the question, as a notebook prints it
    grade: Callable[[Any], str | None]  # answer -> None when right, else a hint that does not give the answer
    # the expected value when it is a number or a list of numbers (None for a function or a tensor): the grader's
    # own computation, so that tests and the notebooks' leak search (leaks.py) know it without asking the grader
    answer: Callable[[], Any] | None = None


EXERCISES: dict[str, Exercise] = {}


def exercise(name: str, text: str, answer: Callable[[], Any] | None = None) -> Callable:
    def register(grade: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
        EXERCISES[name] = Exercise(" ".join(text.split()), grade, answer)
        return grade

    return register


def describe(name: str) -> str:
    """The question, wrapped to 100 columns for a notebook's output."""
    return textwrap.fill(_get(name).text, 100)


def check(name: str, answer: Any) -> bool:
    """Print "correct", or what is wrong with the answer; return whether it is right.

    A notebook's placeholder (None, or a function that still raises NotImplementedError) is "not yet" too:
    check never raises on an answer, only on an unknown exercise name.
    """
    exercise = _get(name)
    hint = "no answer given: replace None with your answer" if answer is None else exercise.grade(answer)
    print("correct" if hint is None else f"not yet: {hint}")
    return hint is None


def _get(name: str) -> Exercise:
    if name not in EXERCISES:
        raise ValueError(f"unknown exercise {name!r}: the exercises are {sorted(EXERCISES)}")
    return EXERCISES[name]


class _NotYet(Exception):
    """The learner's function could not be graded; the message is the hint."""


def _call(fn: Any, case: str, *args: Any) -> Any:
    """fn(*args), or _NotYet with a hint: not a function, not written yet (a stub), raised, or returned None."""
    if not callable(fn):
        raise _NotYet(f"expected your function itself (a callable), got {fn!r}")
    try:
        out = fn(*args)
    except NotImplementedError:
        raise _NotYet("your function is still a stub: replace `raise NotImplementedError` with your code") from None
    except Exception as err:  # a learner's bug: report it as a hint
        raise _NotYet(f"{case} your function raised {type(err).__name__}: {err}") from None
    if out is None or out is Ellipsis:
        raise _NotYet(f"your function returned {out!r}: is it written yet (a body of `...` returns None)?")
    return out


def _graded_function(grade: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    """A grader of a function answer, with _NotYet turned into its hint."""

    def run(fn: Any) -> str | None:
        try:
            return grade(fn)
        except _NotYet as not_yet:
            return str(not_yet)

    return run


def _whole_number(answer: Any, what: str) -> int | str:
    """The answer as an int (a one-element tensor will do), or a hint saying why it is not one."""
    if isinstance(answer, torch.Tensor):
        if answer.numel() != 1:
            return f"expected one number of {what}, got a tensor of shape {tuple(answer.shape)}"
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        return f"expected a whole number of {what}, got {type(answer).__name__}"
    if answer != int(answer):
        return f"expected a whole number of {what}, got {answer}: a count has no fraction"
    return int(answer)


def _count_hint(answer: Any, expected: int, what: str, factors: dict[float, str], close: str) -> str | None:
    """None if answer == expected. Else a hint: a known factor's own question, 'close' within 30%, or the size of
    the miss as a factor rounded to one significant figure (not enough to recover the answer)."""
    value = _whole_number(answer, what)
    if isinstance(value, str):
        return value
    if value == expected:
        return None
    if value <= 0:
        return f"a number of {what} is positive, got {value}"
    ratio = value / expected
    for factor, question in factors.items():
        if abs(ratio / factor - 1) < 1e-9:
            size = f"{factor:g}" if factor >= 1 else f"1/{1 / factor:g}"
            return f"off by a factor of {size}: {question}"
    if 0.7 < ratio < 1.3:
        return f"close, but not equal: {close}"
    direction = "large" if ratio > 1 else "small"
    return f"too {direction} by a factor of about {float(f'{max(ratio, 1 / ratio):.0g}'):g}: {close}"


def _whole_numbers(answer: Any, count: int, what: str) -> list[int] | str:
    """The answer as a list of `count` ints (a list, a tuple or a 1-D tensor will do), or a hint why it is not."""
    if isinstance(answer, torch.Tensor):
        if answer.ndim != 1:
            return f"expected {count} numbers ({what}) in a list, got a tensor of shape {tuple(answer.shape)}"
        answer = answer.tolist()
    if not isinstance(answer, (list, tuple)):
        return f"expected {count} numbers ({what}) in a list or tuple, got {type(answer).__name__}"
    if len(answer) != count:
        return f"expected {count} numbers ({what}), got {len(answer)}"
    values = []
    for value in answer:
        value = _whole_number(value, what)
        if isinstance(value, str):
            return value
        values.append(value)
    return values


def _sizes(model_size: str) -> Any:
    """The QwenLiteConfig of the real 3B or 7B, from data/configs/ (the hub's config.json files)."""
    from qwenlite.config import QwenLiteConfig

    return QwenLiteConfig.from_pretrained(DATA / "configs" / f"qwen2_5_vl_{model_size}_instruct.config.json")


@functools.cache
def _parameter_counts(model_size: str) -> dict[str, int]:
    """Parameters of the real model's parts, counted on the meta device (shapes only, no memory).

    A tied lm_head is the embedding matrix itself, so it is counted once, with the language model.
    """
    from qwenlite.model import QwenLiteVL

    with torch.device("meta"):
        model = QwenLiteVL(_sizes(model_size))
    vision = {id(p) for p in model.visual.parameters()}
    return {
        "vision": sum(p.numel() for p in model.visual.parameters()),
        "merger": sum(p.numel() for p in model.visual.merger.parameters()),
        "language": sum(p.numel() for p in model.parameters() if id(p) not in vision),
        "all": sum(p.numel() for p in model.parameters()),
    }
