"""qwenlite_course/exercises/leaks.py: the search of an executed notebook for exercise answers shown before they are
asked, on small notebooks built here (the repository's conftest.py runs it on every notebook nbmake executes).
Each test fails if the search misses a form of leak or reports a number that is not the answer."""

from __future__ import annotations

import nbformat

from qwenlite_course.exercises import leaks

ASKED = {"count": (5, 668684288), "shape": (5, [330, 2048]), "small": (5, 24)}  # asked by notebook 05


def _leaks(*shown: str, where: str = "stream", after: str = "", filename: str = "05_fusion.ipynb") -> list[str]:
    """The leaks found in a notebook: a markdown cell, a cell per shown text (`where`: a markdown or a code cell's
    source, a stream or an output of that kind), the exercise cells of ASKED, then a markdown cell holding `after`."""
    cells = [nbformat.v4.new_markdown_cell("## A notebook")]
    for text in shown:
        if where == "markdown":
            cells.append(nbformat.v4.new_markdown_cell(text))
            continue
        cell = nbformat.v4.new_code_cell(text if where == "source" else "print(...)")
        if where == "stream":
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        elif where == "text/plain":  # what a cell's last expression shows
            cell.outputs = [nbformat.v4.new_output("execute_result", data={where: text}, execution_count=1)]
        elif where != "source":
            cell.outputs = [nbformat.v4.new_output("display_data", data={where: text})]
        cells.append(cell)
    cells += [nbformat.v4.new_code_cell(f'exercises.check("{name}", None);') for name in ASKED]
    cells.append(nbformat.v4.new_markdown_cell(after))
    notebook = nbformat.v4.new_notebook(cells=cells)
    return [f"{leak.exercise} {leak.cell}" for leak in leaks.find_leaks(notebook, filename, ASKED)]


def test_an_answer_shown_before_its_exercise_is_a_leak():
    for where in ("markdown", "source", "stream", "text/plain", "text/markdown", "text/html"):
        assert _leaks("the tower holds 668684288 parameters", where=where) == ["count 1"], where
    assert _leaks("668684288", where="image/png") == []  # not text
    assert _leaks("nothing", "= 668684288.") == ["count 2"]
    assert _leaks(after="668684288 parameters") == []  # after the exercise: the solution may be shown


def test_an_answer_is_found_with_thousands_separators_and_never_inside_a_longer_number():
    assert _leaks("668,684,288 parameters") == ["count 1"]
    assert _leaks("668_684_288") == ["count 1"]
    for longer in ("1668684288", "6686842880", "1,668,684,288", "668,684,288,000", "668684288.5", "0.668684288"):
        assert _leaks(longer) == [], longer


def test_a_list_answer_is_found_as_its_numbers_in_order():
    assert _leaks("torch.Size([330, 2048])") == ["shape 1"]
    assert _leaks("shape (330,2048)") == ["shape 1"]
    assert _leaks("[[330]\n [2048]]") == ["shape 1"]
    for other in ("[2048, 330]", "[330, 20480]", "[1330, 2048]", "330 x 2048", "[330, 1, 2048]"):
        assert _leaks(other) == [], other


def test_a_small_single_answer_is_not_searched():
    assert _leaks("24 windows") == []


def test_a_later_notebooks_answer_is_a_leak_anywhere_in_an_earlier_notebook():
    assert _leaks(after="668684288", filename="02_patches.ipynb") == ["count 4"]
    assert _leaks("668684288", filename="07_decoder.ipynb") == []  # an earlier notebook's exercise: asked already
