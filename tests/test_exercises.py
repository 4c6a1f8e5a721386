"""qwenlite_course.exercises: the shared grading (every exercise has a question and its own test module, unknown names,
placeholders never raise), the notebooks' exercise cells and the answers. Each notebook's exercises are tested in
tests/test_exercises_nbNN_<notebook>.py, the search of executed notebooks for answers shown too early in
tests/test_exercises_leaks.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import DATA, fails_without_giving_away

from qwenlite_course import exercises
from qwenlite_course.exercises import leaks


def test_every_exercise_has_a_text_and_a_test():
    tests = "".join(p.read_text() for p in Path(__file__).parent.glob("test_exercises_nb*.py"))
    for name in exercises.EXERCISES:
        assert len(exercises.describe(name)) > 80, name
        assert f"def test_{name}(" in tests, f"exercise {name} has no test_{name} in tests/test_exercises_nb*.py"


def test_unknown_exercises_are_named():
    with pytest.raises(ValueError, match=r"unknown exercise 'pad_tokens': the exercises are \["):
        exercises.check("pad_tokens", 1)
    with pytest.raises(ValueError, match="unknown exercise 'nope'"):
        exercises.describe("nope")


def _stub(*args):
    raise NotImplementedError


def _unwritten(*args):
    """A body of ... : returns None."""
    ...


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(exercises.EXERCISES))
def test_placeholders_are_not_yet_and_do_not_raise(capsys, name):
    """A notebook's placeholder answer (None, or a stub function) prints a hint and returns False, never raises."""
    fails_without_giving_away(capsys, name, None, None, "no answer given")
    if "Pass the function itself" in exercises.describe(name):
        fails_without_giving_away(capsys, name, _stub, None, "still a stub")
        fails_without_giving_away(capsys, name, _unwritten, None, "returned None")
        fails_without_giving_away(capsys, name, 3, None, "expected your function itself")
    else:
        assert exercises.check(name, _stub) is False  # a function where a value is asked: a hint, no exception
        assert capsys.readouterr().out.startswith("not yet: ")


def _exercise_cells() -> dict[str, list[str]]:
    """Notebook name -> the sources of the code cells after its '## Exercises' heading (the notebook's end)."""
    import json

    found = {}
    for path in sorted((DATA.parent / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        heads = [i for i, c in enumerate(cells) if "".join(c["source"]).startswith("## Exercises")]
        assert len(heads) == 1 and cells[heads[0]]["cell_type"] == "markdown", f"{path.name}: one '## Exercises'"
        after = cells[heads[0] + 1 :]
        assert all(c["cell_type"] == "code" for c in after), f"{path.name}: only exercise cells after the heading"
        found[path.stem] = ["".join(c["source"]) for c in after]
    return found


def test_every_notebook_ends_with_two_or_three_exercises():
    cells = _exercise_cells()
    assert len(cells) == 12, sorted(cells)
    used = []
    for notebook, sources in cells.items():
        assert 2 <= len(sources) <= 3, f"{notebook} has {len(sources)} exercises"
        for source in sources:
            (name,) = set(re.findall(r'exercises\.check\("(\w+)"', source))
            assert f'print(exercises.describe("{name}"))' in source, (notebook, source)
            assert "from qwenlite_course import exercises" in source, (notebook, source)
            assert source.rstrip().endswith(";"), f"{notebook}: end the check with ';' (no Out: True/False)"
            # the placeholder the learner replaces: None for a value, a stub for a function
            assert "answer = None" in source or "raise NotImplementedError" in source, (notebook, source)
            used.append(name)
    assert sorted(used) == sorted(exercises.EXERCISES), "each exercise appears in exactly one notebook"


def test_exercise_cells_run_and_say_not_yet(capsys):
    """Each cell as the notebook holds it prints the question and 'not yet', and raises nothing (nbmake passes)."""
    for notebook, sources in _exercise_cells().items():
        for source in sources:
            exec(compile(source, f"{notebook} exercise cell", "exec"), {})
            printed = capsys.readouterr().out
            assert "\nnot yet: " in printed and "correct\n" not in printed, (notebook, printed)


# ---------------------------------------------------------------- the answers


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(exercises.EXERCISES))
def test_an_exercise_that_asks_for_numbers_has_its_answer(capsys, name):
    """An answer where the grader asks for a number or a list of numbers, and the grader takes it as correct."""
    exercise = exercises.EXERCISES[name]
    asks_numbers = re.match(r"expected (a whole number|\d+ numbers) ", exercise.grade("x") or "")
    assert (exercise.answer is not None) == bool(asks_numbers), (name, exercise.grade("x"))
    if exercise.answer is not None:
        assert exercises.check(name, exercise.answer()) is True
        assert capsys.readouterr().out == "correct\n"


def test_an_answer_belongs_to_the_notebook_that_asks_it():
    for notebook, sources in _exercise_cells().items():
        for source in sources:
            (name,) = set(re.findall(r'exercises\.check\("(\w+)"', source))
            if exercises.EXERCISES[name].answer is not None:
                assert leaks.notebook_of(name) == int(notebook[:2]), (notebook, name)
