"""The reference side of every check: transformers' Qwen2.5-VL on the same checkpoint, and a diff table.

`reference_model(path)` loads `Qwen2_5_VLForConditionalGeneration` offline in float32,
`capture(...)` records module outputs with forward hooks, and `check_table(...)` prints
tensor / shape / max abs diff rows and raises when a row is outside its tolerance.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn


def reference_model(path: str | Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    """transformers' model on the same checkpoint folder, loaded offline, in eval mode."""
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.utils import logging

    logging.disable_progress_bar()  # the "Loading weights" bar would clutter every notebook
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=dtype, local_files_only=True).eval()


def reference_processor(path: str | Path):
    """transformers' `Qwen2_5_VLProcessor` for the checkpoint folder (offline)."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(path, local_files_only=True)


@contextlib.contextmanager
def capture(modules: dict[str, nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
    """Record each module's output under its name while the block runs (the last call wins)."""
    seen: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(_module, _inputs, output):
            seen[name] = (output[0] if isinstance(output, tuple) else output).detach()

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


@dataclass
class Row:
    name: str
    ours: torch.Tensor
    ref: torch.Tensor
    atol: float = 1e-5

    @property
    def exact(self) -> bool:
        return not (self.ours.is_floating_point() or self.ref.is_floating_point())

    def diff(self) -> float:
        if self.ours.shape != self.ref.shape:
            return float("inf")
        if self.exact:
            return float((self.ours != self.ref).sum())  # integer results: count of differing entries
        if not self.ours.numel():
            return 0.0
        return float((self.ours.detach().double() - self.ref.detach().double()).abs().max())

    def ok(self, diff: float | None = None) -> bool:
        diff = self.diff() if diff is None else diff
        return diff == 0 if self.exact else diff <= self.atol


def check_table(rows: Sequence[Row], title: str = "qwenlite vs transformers") -> None:
    """Print one line per tensor and raise AssertionError if any is outside tolerance."""
    print(f"{title}\n{'tensor':<34} {'shape':<22} {'max |diff|':>12}  {'tolerance':>10}  ok")
    bad = []
    for r in rows:
        shape = str(tuple(r.ours.shape)) + ("" if r.ours.shape == r.ref.shape else f" vs {tuple(r.ref.shape)}")
        tol = "exact" if r.exact else f"{r.atol:.0e}"
        d = r.diff()  # once per row: rows can be whole logits
        shown = f"{int(d)} differ" if r.exact else f"{d:.2e}"
        ok = r.ok(d)
        print(f"{r.name:<34} {shape:<22} {shown:>12}  {tol:>10}  {'yes' if ok else 'NO'}")
        if not ok:
            bad.append(r.name)
    assert not bad, f"outside tolerance: {bad}"


def qwen_vl_utils_fetch_video(path: str | Path, **options: Any) -> tuple[torch.Tensor, dict, float]:
    """qwen-vl-utils' real `fetch_video` on a file: (frames (T, C, H, W) float, metadata, sample_fps).

    Its readers need torchcodec, decord or torchvision's removed io.read_video; for the call, io.read_video is
    a PyAV stand-in that decodes every frame and reports the stream's average rate. Frame counting, indices,
    sample_fps and resizing are qwen-vl-utils' own code. The patch is undone afterwards.
    """
    import av
    import numpy as np
    import qwen_vl_utils.vision_process as vp

    def read_video(video_path, start_pts=0.0, end_pts=None, pts_unit="sec", output_format="TCHW"):
        with av.open(str(video_path)) as container:
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            fps = float(stream.average_rate)
        return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2), torch.empty(0), {"video_fps": fps}

    saved = vp.io.__dict__.get("read_video"), vp.get_video_reader_backend
    vp.io.read_video, vp.get_video_reader_backend = read_video, lambda: "torchvision"
    try:
        ele = {"type": "video", "video": str(path), **options}
        (video, meta), sample_fps = vp.fetch_video(ele, return_video_sample_fps=True, return_video_metadata=True)
    finally:
        vp.get_video_reader_backend = saved[1]
        if saved[0] is None:
            del vp.io.read_video
        else:
            vp.io.read_video = saved[0]
    return video, meta, sample_fps
