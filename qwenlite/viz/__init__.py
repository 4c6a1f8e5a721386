"""Plots and ipywidgets explorers for the notebooks, one module per stage (viz.preprocessing, viz.vision, ...)."""

from __future__ import annotations

import platform
from pathlib import Path


def banner(path: str | Path) -> str:
    """The first thing every notebook prints: versions and which checkpoint is in use."""
    import torch
    import transformers

    from .. import checkpoint

    lines = [
        f"python {platform.python_version()} | torch {torch.__version__} | transformers {transformers.__version__}",
        f"checkpoint: {checkpoint.describe(path)}",
    ]
    if checkpoint.is_tiny_twin(path):
        lines.append(
            "  (no real Qwen2.5-VL checkpoint found: set QWENLITE_CHECKPOINT to one to see real text; "
            "every comparison below holds on either)"
        )
    text = "\n".join(lines)
    print(text)
    return text
