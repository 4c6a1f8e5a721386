"""Plots and ipywidgets explorers for the notebooks, one module per stage (viz.preprocessing, viz.vision, ...)."""

from __future__ import annotations

import platform
import textwrap
from pathlib import Path


def drawable(text: str) -> str:
    """text as a figure can draw it: characters past U+2000 (CJK and the like, which the twin's noise answers are
    full of and matplotlib's DejaVu font lacks, so it warns per glyph) become a middle dot."""
    return "".join(ch if ord(ch) < 0x2000 else "\N{MIDDLE DOT}" for ch in text)


def data_dir() -> Path:
    """The repository's data/ folder (photo, sample video, configs), found from the installed package.

    qwenlite is installed editable (`pip install -e .`), so the package sits inside the repository;
    this works whatever folder the notebook runs in (JupyterLab and nbmake both use notebooks/).
    """
    folder = Path(__file__).resolve().parents[2] / "data"
    if not (folder / "grace_hopper.jpg").is_file():
        raise FileNotFoundError(f"no data/grace_hopper.jpg at {folder}: install qwenlite editable from the repository")
    return folder


def banner(path: str | Path, settings=None) -> str:
    """The first thing every notebook prints: versions, which checkpoint, and the dtype and device of both models."""
    import torch
    import transformers

    from .. import checkpoint

    lines = [
        f"python {platform.python_version()} | torch {torch.__version__} | transformers {transformers.__version__}",
        f"checkpoint: {checkpoint.describe(path)}",
    ]
    if settings is not None:
        lines.append(f"qwenlite and transformers run in {settings} (QWENLITE_DTYPE, QWENLITE_DEVICE)")
        if settings.float32_products:
            lines.append(
                "  both models' bfloat16 products run through float32's kernel: the same arithmetic, about 5x faster "
                "on a CPU without a bfloat16 unit (qwenlite_course.cpu_bfloat16; off: QWENLITE_BF16_PRODUCTS=bfloat16)"
            )
    if checkpoint.is_tiny_twin(path):
        lines.append(
            "  (no real Qwen2.5-VL checkpoint found: set QWENLITE_CHECKPOINT to one to see real text; "
            "every comparison below holds on either)"
        )
    width = 100  # a slide's line: longer lines wrap, indented, and a path is never broken
    text = "\n".join(
        textwrap.fill(line, width, subsequent_indent="    ", break_long_words=False, break_on_hyphens=False)
        for line in lines
    )
    print(text)
    return text


def live(draw, **controls):
    """ipywidgets controls -> a figure from `draw(**values)`, redrawn on every change; returns the widget.

    The figure is put into an Output's state (append_display_data of a PNG) rather than captured with
    `with out:` (which `ipywidgets.interactive` uses), because that capture can stall headless runs
    (nbclient under pytest) until the cell timeout. It is drawn once at once, so a static picture exists
    without a live kernel.
    """
    import io

    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import Image

    out = widgets.Output()

    def redraw(_change=None) -> None:
        fig = draw(**{name: control.value for name, control in controls.items()})
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        out.outputs = ()
        out.append_display_data(Image(data=png.getvalue()))

    for control in controls.values():
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.VBox(list(controls.values())), out])
