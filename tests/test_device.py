"""Every tensor that forward, generate, the vision tower and the index functions build is made on the inputs' device.

A CPU-only machine cannot run CUDA, but it can see every factory call (torch.arange, zeros, ones, full, empty,
tensor, ...) that qwenlite makes while it runs: one without `device=` would land on the CPU beside CUDA inputs
and fail there (or silently copy). The mode below records such calls, with the qwenlite line that made them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

import qwenlite
from qwenlite import get_rope_index
from qwenlite.rope_index import decode_position_ids

PACKAGE = str(Path(qwenlite.__file__).parent)
FACTORIES = {
    torch.arange, torch.zeros, torch.ones, torch.full, torch.empty, torch.tensor, torch.as_tensor,
    torch.eye, torch.linspace, torch.randn, torch.rand, torch.randint,
}  # fmt: skip


class FlagFactoriesWithoutDevice(TorchFunctionMode):
    """Records (function, file:line) for every factory call from qwenlite's files that passes no device."""

    def __init__(self, roots: tuple[str, ...] = (PACKAGE,)) -> None:
        super().__init__()
        self.roots = roots
        self.flagged: list[tuple[str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        creates = func in FACTORIES and not (func is torch.as_tensor and isinstance(args[0], torch.Tensor))
        if creates and "device" not in kwargs:
            frame = sys._getframe(1)
            while frame is not None and not frame.f_code.co_filename.startswith(self.roots):
                frame = frame.f_back
            if frame is not None:
                self.flagged.append((func.__name__, f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}"))
        return func(*args, **kwargs)


@pytest.fixture(scope="module")
def mixed(ckpt, photo_path, video_path):
    """A left-padded batch: photo + video in one row, text only in the other."""
    from qwenlite import Processor
    from qwenlite.preprocessing import preprocess_image, preprocess_video
    from qwenlite.video_io import load_video

    processor = Processor.from_pretrained(ckpt)
    photo = preprocess_image(photo_path, processor.config, max_pixels=112 * 112)
    video = preprocess_video(load_video(video_path, nframes=4), processor.config, 56 * 56, 84 * 112)
    prompt = "<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|video_pad|><|vision_end|> what?"
    return processor(text=[prompt, "just text"], images=[photo], videos=[video])


def test_forward_generate_tower_and_index_functions_pass_a_device(ours, mixed):
    with torch.no_grad(), FlagFactoriesWithoutDevice() as mode:
        ours.visual(mixed["pixel_values"], mixed["image_grid_thw"])
        ours(**mixed)
        ours.generate(**mixed, max_new_tokens=3, repetition_penalty=1.2)
        get_rope_index(
            mixed["input_ids"],
            mixed["image_grid_thw"],
            mixed["video_grid_thw"],
            mixed["second_per_grid_ts"],
            mixed["attention_mask"],
            config=ours.config,
        )
        decode_position_ids(torch.zeros(2, 1, dtype=torch.long), 5, 1)
    assert mode.flagged == [], f"factory calls without device= (would be on the CPU beside CUDA inputs): {mode.flagged}"


def test_a_missing_device_is_caught(ours, mixed, monkeypatch):
    """The check can fail: a causal mask built with a device-less torch.ones (run from this file) is flagged."""
    import qwenlite.decoder as dec

    def causal_mask_without_device(x, attention_mask, past):
        n = x.shape[1]
        allowed = torch.ones(n, past + n, dtype=torch.bool).tril(diagonal=past)[None, None]
        if attention_mask is not None:
            allowed = allowed & attention_mask.bool()[:, None, None, :]
        return allowed

    monkeypatch.setattr(dec, "causal_mask", causal_mask_without_device)
    with torch.no_grad(), FlagFactoriesWithoutDevice(roots=(PACKAGE, __file__)) as mode:
        ours(**mixed)
    assert [name for name, _ in mode.flagged] == ["ones"]
