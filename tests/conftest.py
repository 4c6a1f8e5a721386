"""Shared fixtures: the checkpoint (real if present, else the tiny twin), both models, both processors.

Everything runs offline; the tiny twin is built by transformers on first use and cached.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


@pytest.fixture(scope="session")
def ckpt() -> Path:
    from qwenlite import checkpoint

    return checkpoint.resolve()


@pytest.fixture(scope="module")
def twin() -> Iterator[Path]:
    """The tiny twin's own folder, to build hostile checkpoints from in tmp_path; checked untouched afterwards."""
    from helpers import folder_snapshot

    from qwenlite import checkpoint

    folder = checkpoint.tiny_twin()
    before = folder_snapshot(folder)
    yield folder
    assert folder_snapshot(folder) == before, f"a test wrote into the tiny twin's folder {folder}"


@pytest.fixture(scope="session")
def config(ckpt):
    from qwenlite import QwenLiteConfig

    return QwenLiteConfig.from_pretrained(ckpt)


@pytest.fixture(scope="session")
def ours(ckpt):
    from qwenlite import QwenLiteVL

    return QwenLiteVL.from_pretrained(ckpt)


@pytest.fixture(scope="session")
def ref(ckpt):
    from qwenlite.reference import reference_model

    return reference_model(ckpt)


@pytest.fixture(scope="session")
def hf_processor(ckpt):
    from qwenlite.reference import reference_processor

    return reference_processor(ckpt)


@pytest.fixture(scope="session")
def photo_path() -> Path:
    return DATA / "grace_hopper.jpg"


@pytest.fixture(scope="session")
def video_path() -> Path:
    return DATA / "sample_video.mp4"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
