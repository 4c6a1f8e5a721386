"""The README's picture of each notebook: the notebooks executed (as `make html` does), one chosen figure each
saved, shrunk to a thumbnail, into docs/figures/NN_name.png.

    python lecture/readme_figures.py            # all notebooks, on the checkpoint checkpoint.resolve() finds
    python lecture/readme_figures.py --list     # every figure of every notebook, numbered, to choose from

The figures are the notebooks' own output (the same functions the model calls draw them), so a README
picture is only ever as true as its notebook; rerun this after a notebook's figures change.
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
from pathlib import Path

import nbformat
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export import ROOT, execute  # noqa: E402

OUT = ROOT / "docs" / "figures"
WIDTH = 720  # px: readable on GitHub's README column, small in the repo
# notebook -> which of its PNG outputs (0-based, in cell order; 0 is the journey map) stands for it in the README
CHOSEN = {
    "00_tour": 5,
    "01_preprocessing": 1,
    "02_patch_embed": 2,
    "03_vision_block": 3,
    "04_merger": 1,
    "05_token_fusion": 2,
    "06_rope_index": 3,
    "07_decoder_generation": 4,
    "08_video_end_to_end": 4,
}


def figures(nb: nbformat.NotebookNode) -> list[bytes]:
    """Every PNG the executed notebook shows, in cell order."""
    return [
        base64.b64decode(out["data"]["image/png"])
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="save every figure as NN_name.K.png to choose from")
    parser.add_argument("--notebooks", nargs="*", default=sorted(CHOSEN), help="notebook names (no .ipynb)")
    parser.add_argument("--keep", type=Path, help="also write the executed notebooks into this folder")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for name in args.notebooks:
        path = ROOT / "notebooks" / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        execute(nb, path, timeout=900)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, args.keep / path.name)
        pngs = figures(nb)
        chosen = range(len(pngs)) if args.list else [CHOSEN[name]]
        for k in chosen:
            image = Image.open(io.BytesIO(pngs[k])).convert("RGB")
            image.thumbnail((WIDTH, WIDTH * 3))
            target = OUT / (f"{name}.{k}.png" if args.list else f"{name}.png")
            image.save(target, optimize=True)
            print(f"{name}: figure {k} of {len(pngs)} -> {target.relative_to(ROOT)} {image.size}")


if __name__ == "__main__":
    main()
