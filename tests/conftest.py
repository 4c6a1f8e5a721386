"""Shared fixtures: the checkpoint (real if present, else the tiny twin), both models, both processors.

Everything runs offline; the tiny twin is built by transformers on first use and cached.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from helpers import chat_inputs, hf_chat_inputs, random_video
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


@pytest.fixture(scope="session")
def ckpt() -> Path:
    from qwenlite_course import checkpoint

    return checkpoint.resolve()


@pytest.fixture(scope="module")
def twin() -> Iterator[Path]:
    """The tiny twin's own folder, to build hostile checkpoints from in tmp_path; checked untouched afterwards."""
    from helpers import folder_snapshot

    from qwenlite_course import checkpoint

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
    from qwenlite_course.reference import reference_model

    return reference_model(ckpt)


@pytest.fixture(scope="session")
def hf_processor(ckpt):
    from qwenlite_course.reference import reference_processor

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


# ---------------------------------------------------------------- exercises shared by two notebooks' tests

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="session")
def hf_counts() -> dict[str, dict[str, int]]:
    """Parameter counts of the real 3B and 7B from transformers' own model, built on the meta device."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    counts = {}
    for size in ("3b", "7b"):
        from transformers import Qwen2_5_VLConfig

        config = Qwen2_5_VLConfig.from_pretrained(DATA / "configs" / f"qwen2_5_vl_{size}_instruct.config.json")
        with torch.device("meta"):
            model = Qwen2_5_VLForConditionalGeneration(config)
        visual = model.model.visual
        counts[size] = {
            "vision": sum(p.numel() for p in visual.parameters()),
            "merger": sum(p.numel() for p in visual.merger.parameters()),
            "all": sum(p.numel() for p in model.parameters()),  # a tied lm_head is yielded once
            "table": config.text_config.vocab_size * config.text_config.hidden_size,
        }
    return counts


# ---------------------------------------------------------------- prompts shared by the model and generation tests


@pytest.fixture(scope="session")
def photo_inputs(hf_processor, photo_path):
    photo = Image.open(photo_path).convert("RGB").resize((280, 336))
    return hf_chat_inputs(hf_processor, [{"type": "image"}, {"type": "text", "text": "Who is this?"}], images=[photo])


@pytest.fixture(scope="session")
def video_inputs(hf_processor):
    """8 frames, 1 s per temporal patch: t ids 0, 2, 4, 6 outrun the 4x3 merged grid, so the two rules differ."""
    return chat_inputs(hf_processor, [["video", "text"]], clips=[random_video(8, (112, 84))], seconds=[1.0])


# ---------------------------------------------------------------- small inputs for the hostile cases


@pytest.fixture(scope="session")
def processor(ckpt):
    from qwenlite import Processor

    return Processor.from_pretrained(ckpt)


@pytest.fixture(scope="session")
def small_array():
    import numpy as np

    return np.random.default_rng(0).integers(0, 256, (56, 84, 3), dtype=np.uint8)  # grid (1, 4, 6): 6 tokens


@pytest.fixture(scope="session")
def array_inputs(processor, small_array) -> dict:
    return processor(text="a<|vision_start|><|image_pad|><|vision_end|>b", images=[small_array])


# ---------------------------------------------------------------- the vision tower's inputs (tower and figure tests)


@pytest.fixture(scope="session")
def photo(photo_path) -> Image.Image:
    return Image.open(photo_path).convert("RGB")


@pytest.fixture(scope="session")
def video_frames(video_path) -> np.ndarray:
    with av.open(str(video_path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])  # (T, H, W, 3)


@pytest.fixture(scope="session")
def vision_inputs(hf_processor, photo, video_frames) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """name -> (pixel_values, grid_thw). Merged grids: photo 21x18, video 4 x 9x12, odd 7x5 (none a multiple of 4)."""

    def images(imgs):
        out = hf_processor.image_processor(images=imgs, return_tensors="pt")
        return out["pixel_values"], out["image_grid_thw"]

    video = hf_processor.video_processor(
        videos=[video_frames[:8]], return_tensors="pt", do_sample_frames=False, cap_pixels_per_frame=True
    )
    return {
        "photo": images([photo]),
        "video": (video["pixel_values_videos"], video["video_grid_thw"]),
        "three_images": images([photo, photo.resize((140, 196)), photo.crop((0, 0, 448, 448))]),
        "odd_size": images([photo.resize((140, 196))]),
    }
