"""qwenlite_course.retrain: the command that retrains the shipped twin writes tensors and a record that fit the twin.

A 3-step run: the recipe itself takes minutes (`python -m qwenlite_course.retrain`); notebook 09 scores the shipped
twin's held-out answers in both libraries."""

from __future__ import annotations

import json
import shutil

import pytest

from qwenlite.train import TASKS
from qwenlite_course import checkpoint
from qwenlite_course.retrain import main

pytestmark = pytest.mark.slow  # builds the twin, trains 3 steps, answers 2 x 3 questions: about 15 s


def test_the_retrain_command_writes_tensors_and_a_record_that_fit_the_twin(tmp_path, capsys):
    out = tmp_path / "trained.safetensors"
    main(["--steps", "3", "--out", str(out), "--held-out", "2"])
    facts = json.loads(out.with_suffix(".json").read_text())
    assert facts["sha256"] == checkpoint.file_sha256(out) and len(facts["loss_curve"]) == 3
    assert set(facts["held_out_accuracy"]) == set(TASKS)
    folder = tmp_path / "twin"
    shutil.copytree(checkpoint.tiny_twin(), folder)
    checkpoint.write_trained_twin(folder, out)
    assert checkpoint.is_trained_twin(folder)
