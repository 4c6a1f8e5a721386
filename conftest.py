"""pytest's hooks for the whole repository. With nbmake (`make test`), a notebook that runs without error must also
not show an exercise's answer before the exercise asks it (qwenlite_course/exercises/leaks.py); tests/conftest.py
holds the tests' fixtures."""

from __future__ import annotations


def pytest_configure(config):
    if not config.getoption("nbmake", default=False):
        return
    # nbmake's own classes, by name: an nbmake that renames them fails here, loudly, not with a silent skip
    from nbmake.nb_result import NotebookError
    from nbmake.nb_run import NotebookRun

    from qwenlite_course.exercises.leaks import find_leaks

    execute = NotebookRun.execute

    def execute_and_search(run: NotebookRun):
        result = execute(run)
        if result.error is None and (leaks := find_leaks(result.nb, run.filename.name)):
            result.error = NotebookError(
                summary=f"{run.filename.name} shows {len(leaks)} exercise answer(s) before they are asked",
                trace="\n".join(map(str, leaks)),
                failing_cell_index=leaks[0].cell,
            )
        return result

    NotebookRun.execute = execute_and_search
