"""Does an executed notebook give away an exercise's answer before the exercise asks it?

The repository's conftest.py runs `find_leaks` on every notebook that nbmake executes (`make test`). An exercise
is asked by the notebook whose number its module names (nbNN_<notebook>.py); a notebook must not show its answer
before the exercise's first cell, and must not show the answer of any later notebook's exercise at all.

Single numbers of magnitude below 100 are not searched: they occur everywhere (ids, sizes, counts), so a search
would find them in every notebook. Exercises with such answers are chosen by hand so that no notebook prints
them. A list of numbers is searched whatever its size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .grading import EXERCISES

SMALLEST = 100  # single answers below this magnitude are not searched (see above)
OUTPUT_TYPES = ("text/plain", "text/markdown", "text/html")


@dataclass(frozen=True)
class Leak:
    exercise: str
    answer: Any
    cell: int  # index of the cell whose source or output shows the answer
    snippet: str  # the text around it

    def __str__(self) -> str:
        return f"{self.exercise}: answer {self.answer} in cell {self.cell}: ...{self.snippet}..."


def answers() -> dict[str, tuple[int, Any]]:
    """Exercise name -> (the number of the notebook that asks it, its answer), for the exercises with an answer."""
    return {name: (notebook_of(name), e.answer()) for name, e in EXERCISES.items() if e.answer is not None}


def notebook_of(name: str) -> int:
    """The number of the notebook that asks an exercise with an answer: NN of the nbNN_<notebook>.py defining it."""
    module = getattr(EXERCISES[name].answer, "__module__", "")
    if not (found := re.fullmatch(r".*\.nb(\d\d)_\w+", module)):
        raise ValueError(f"exercise {name}: its answer is not defined in an nbNN_<notebook>.py module")
    return int(found[1])


def find_leaks(nb: Any, filename: str, asked: dict[str, tuple[int, Any]] | None = None) -> list[Leak]:
    """The answers that the executed notebook `nb` (an nbformat node, file name NN_<name>.ipynb) shows too early.

    `asked` is `answers()` unless given (a test's own exercises). This notebook's exercises are searched for in the
    cells before the first cell that names them; a later notebook's exercises in every cell.
    """
    number = int(filename[:2])
    texts = [_cell_text(cell) for cell in nb.cells]
    leaks = []
    for name, (notebook, answer) in (answers() if asked is None else asked).items():
        pattern = _pattern(answer)
        if notebook < number or pattern is None:
            continue
        end = len(texts)
        if notebook == number:
            end = next((i for i, cell in enumerate(nb.cells) if f'"{name}"' in cell.source), None)
            if end is None:
                raise ValueError(f"{filename}: no cell names exercise {name!r}, which nb{notebook:02d}_*.py defines")
        for index, text in enumerate(texts[:end]):
            if match := pattern.search(text):
                snippet = " ".join(text[max(match.start() - 60, 0) : match.end() + 60].split())
                leaks.append(Leak(name, answer, index, snippet))
    return sorted(leaks, key=lambda leak: leak.cell)


def _cell_text(cell: Any) -> str:
    """A cell's source, then its outputs' text: streams and the plain, markdown and html forms of results."""
    parts = [cell.source]
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.extend(output.data[kind] for kind in OUTPUT_TYPES if kind in output.data)
    return "\n".join("".join(part) if isinstance(part, list) else part for part in parts)


def _pattern(answer: Any) -> re.Pattern[str] | None:
    """A whole number as a number token (also with thousands separators , or _), not part of a longer number; a
    list as its numbers in order, separated only by spaces, commas or brackets. None for a small single number."""
    if isinstance(answer, (list, tuple)):
        numbers = r"[\s,()\[\]]+".join(map(_number, answer))
    elif abs(answer) < SMALLEST:
        return None
    else:
        numbers = _number(answer)
    return re.compile(rf"(?<![\d.])(?<!\d[,_]){numbers}(?!\d)(?![.,_]\d)")


def _number(value: int) -> str:
    value = int(value)
    return "(?:" + "|".join(re.escape(form) for form in (f"{value}", f"{value:,}", f"{value:_}")) + ")"
