"""qwenlite_course.reference: the run settings (QWENLITE_DTYPE, QWENLITE_DEVICE) and the tolerance policy refuse what
they do not cover, by name. The policy itself is shown to catch ten planted bugs in tests/test_tolerance_policy.py."""

from __future__ import annotations

import pytest
import torch

from qwenlite_course.reference import run_settings, tolerance


def test_run_settings_read_the_environment():
    from qwenlite_course.reference import RunSettings

    assert run_settings({}) == RunSettings(torch.float32, torch.device("cpu"))
    assert run_settings({"QWENLITE_DTYPE": "bfloat16"}).dtype == torch.bfloat16


# ---------------------------------------------------------------- bad input: refused by name


@pytest.mark.parametrize(
    "environ, message",
    [
        (
            {"QWENLITE_DTYPE": "float16"},
            r"QWENLITE_DTYPE='float16' is not supported: use one of \['bfloat16', 'float32'",
        ),
        ({"QWENLITE_DTYPE": "fp32"}, "QWENLITE_DTYPE='fp32' is not supported"),
        ({"QWENLITE_DEVICE": "gpu0"}, r"QWENLITE_DEVICE='gpu0' is not a device: use cpu or cuda \(cuda:N\)"),
        ({"QWENLITE_DEVICE": "meta"}, r"QWENLITE_DEVICE='meta': qwenlite runs on cpu or cuda"),
        (
            {"QWENLITE_BF16_PRODUCTS": "fp32"},
            r"QWENLITE_BF16_PRODUCTS='fp32' is not supported: use auto, float32 or bfloat16",
        ),
    ],
)
def test_bad_run_settings(environ, message):
    with pytest.raises(ValueError, match=message):
        run_settings(environ)


def test_cuda_asked_for_where_there_is_none(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="QWENLITE_DEVICE='cuda', but torch sees no CUDA device here"):
        run_settings({"QWENLITE_DEVICE": "cuda"})


def test_tolerance_for_a_dtype_without_a_policy():
    with pytest.raises(ValueError, match=r"tolerance: no policy for dtype torch.float16; the policy covers"):
        tolerance(torch.ones(3), torch.float16)
