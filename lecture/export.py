"""The lecture export: every notebook executed, as an HTML page and a reveal.js slide deck that work offline.

`make html` runs `python lecture/export.py build/html`: each notebook in `notebooks/` is executed in a fresh
kernel (the checkpoint `qwenlite_course.checkpoint.resolve()` picks: the tiny twin unless a real one is set), then
written with nbconvert's HTML exporter (lab template, figures as data URIs) and its slides exporter
(reveal.js), beside an `index.html` that lists the notebooks in order with each one's first heading and
first paragraph. Nothing on the pages comes from the network: MathJax 2.7 is copied from the
`jupyter-server-mathjax` package and reveal.js 5 from `sphinx-revealjs` into `_static/`, and the scripts
nbconvert's stock templates take from a CDN (require.js, jQuery, mermaid, the widget manager) are left out.

An ipywidgets explorer needs a live kernel; on a page it becomes the picture it showed when its cell ran
(the images in its Output widgets' state), followed by a note saying so.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = "_static"
MATHJAX_URL = f"{STATIC}/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"
REVEAL_PREFIX = f"{STATIC}/reveal.js"
REVEAL_THEME = "white"  # its fonts ship in dist/theme/fonts; nbconvert's default, "simple", imports Google Fonts
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# <script src=...>, <link href=...> (and any other src/href) pointing off this machine: http(s) or protocol-relative.
NETWORK_URL = re.compile(
    r"""<(script|link|img|iframe)\b[^>]*?\b(?:src|href)\s*=\s*["']?((?:https?:)?//[^"'\s>]+)""", re.I
)


@dataclass(frozen=True)
class Page:
    """One notebook's entry in the index."""

    name: str  # the notebook's stem, e.g. "01_preprocessing"
    title: str  # its first Markdown heading
    description: str  # its first paragraph after that heading, one line
    html: str  # file name of the page, relative to the output folder
    slides: str | None  # file name of the slide deck, or None when slides were not made
    seconds: float  # time to execute and export it


def mathjax_dir() -> Path:
    """MathJax 2.7 as shipped by the jupyter-server-mathjax package (the copy classic Jupyter served)."""
    try:
        import jupyter_server_mathjax
    except ImportError as err:
        raise RuntimeError(
            "lecture export: MathJax is taken from the jupyter-server-mathjax package; pip install it"
        ) from err
    folder = Path(jupyter_server_mathjax.__file__).parent / "static"
    if not (folder / "MathJax.js").is_file():
        raise RuntimeError(f"lecture export: no MathJax.js in {folder}")
    return folder


def reveal_dir() -> Path:
    """reveal.js (dist/ and plugin/) as shipped by the sphinx-revealjs package."""
    try:
        import sphinx_revealjs
    except ImportError as err:
        raise RuntimeError(
            "lecture export: reveal.js is taken from the sphinx-revealjs package; pip install it"
        ) from err
    folder = Path(sphinx_revealjs.__file__).parent / "_static" / "revealjs"
    if not (folder / "dist" / "reveal.js").is_file():
        raise RuntimeError(f"lecture export: no dist/reveal.js in {folder}")
    return folder


def copy_static(out: Path, slides: bool) -> None:
    """MathJax (and reveal.js for the slides) into out/_static, so every page works from a plain folder."""
    shutil.copytree(mathjax_dir(), out / STATIC / "mathjax", dirs_exist_ok=True)
    if slides:
        reveal = reveal_dir()
        for part in ("dist", "plugin/notes"):
            shutil.copytree(reveal / part, out / REVEAL_PREFIX / part, dirs_exist_ok=True)
        shutil.copy2(reveal / "LICENSE", out / REVEAL_PREFIX / "LICENSE")


def describe(nb: nbformat.NotebookNode, name: str) -> tuple[str, str]:
    """(first Markdown heading, first paragraph after it joined into one line) of a notebook."""
    title, paragraph = None, []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            text = line.strip()
            if title is None:
                if text.startswith("#"):
                    title = text.lstrip("#").strip()
                continue
            if text and not text.startswith(("#", "|", "```", "<")):
                paragraph.append(text)
            elif paragraph:
                break
        if paragraph:
            break
    if title is None:
        raise ValueError(f"notebook {name}: no Markdown heading to list it under in the index (add a '# ...' line)")
    return title, whole_sentences(" ".join(paragraph))


def whole_sentences(text: str, most: int = 2) -> str:
    """The first `most` whole sentences of a paragraph: a paragraph that runs into a code block or a table
    ("Each block is") is cut back to the last sentence that ended, so the index never stops mid-sentence."""
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
    if not ends:
        return text
    return text[: ends[min(most, len(ends)) - 1]]


def inline_markdown(text: str) -> str:
    """`code` and **bold** / *italic* of a one-line description as HTML, everything else escaped."""
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)


def freeze_widgets(nb: nbformat.NotebookNode) -> int:
    """Replace each widget view by the outputs its Output widgets held; drop the widget state. Returns the count.

    The state is the one nbclient stores with store_widget_state=True: model id -> {"state": {...}}, where an
    Output widget's state has "outputs" and a box's has "children" as "IPY_MODEL_<id>" references.
    """
    models = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})

    def outputs_of(model_id: str) -> list:
        state = models.get(model_id, {}).get("state", {})
        found = [nbformat.from_dict(o) for o in state.get("outputs", [])]
        for child in state.get("children", []):
            found += outputs_of(str(child).removeprefix("IPY_MODEL_"))
        return found

    frozen = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                outputs.append(output)
                continue
            frozen += 1
            outputs += outputs_of(view["model_id"])
            note = "(an interactive explorer: its controls work in JupyterLab, with a running kernel)"
            outputs.append(nbformat.v4.new_output("display_data", data={"text/plain": note}))
        cell.outputs = outputs
    nb.metadata.pop("widgets", None)
    return frozen


def mark_slides(nb: nbformat.NotebookNode) -> None:
    """Sections across, steps down: a Markdown cell that opens with a heading starts a slide (right arrow); any
    other Markdown cell, and a code cell that follows a code cell, starts a sub-slide below it (down arrow); a
    code cell after Markdown stays on that Markdown's slide, so text and the code it introduces are projected
    together. One section per slide made 1280 x 720 slides 2-5 screens tall. The notebook's first code cell (its
    imports and the banner) goes below the title slide, which then holds the title and its introduction alone.

    Cells that already carry slideshow metadata keep it.
    """
    previous = None
    setup_seen = False
    for i, cell in enumerate(nb.cells):
        slideshow = cell.metadata.setdefault("slideshow", {})
        is_setup = cell.cell_type == "code" and not setup_seen
        setup_seen = setup_seen or cell.cell_type == "code"
        if "slide_type" not in slideshow:
            opens_with_heading = cell.cell_type == "markdown" and cell.source.lstrip().startswith("#")
            if i == 0 or opens_with_heading:
                slideshow["slide_type"] = "slide"
            elif cell.cell_type == "markdown" or previous == "code" or is_setup:
                slideshow["slide_type"] = "subslide"
            else:
                slideshow["slide_type"] = "-"
        if slideshow["slide_type"] != "skip":
            previous = cell.cell_type


def execute(nb: nbformat.NotebookNode, path: Path, timeout: int) -> None:
    """Run every cell in a fresh python3 kernel started in the notebook's folder, keeping the widget state."""
    from nbclient import NotebookClient

    NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        store_widget_state=True,
    ).execute()


def network_urls(page: str) -> list[str]:
    """The http(s) or protocol-relative URLs a page's <script src>, <link href>, <img src> or <iframe> load."""
    return [m.group(2) for m in NETWORK_URL.finditer(page)]


def export_notebook(path: Path, out: Path, run: bool, slides: bool, timeout: int) -> Page:
    from nbconvert import HTMLExporter, SlidesExporter

    start = time.perf_counter()
    nb = nbformat.read(path, as_version=4)
    title, description = describe(nb, path.name)
    if run:
        execute(nb, path, timeout)
    freeze_widgets(nb)
    common = {"mathjax_url": MATHJAX_URL, "embed_images": True, "extra_template_basedirs": [str(TEMPLATES)]}
    body, _ = HTMLExporter(template_name="lecture_lab", **common).from_notebook_node(nb)
    page = f"{path.stem}.html"
    (out / page).write_text(body, encoding="utf-8")
    deck = None
    if slides:
        mark_slides(nb)
        exporter = SlidesExporter(
            template_name="lecture_reveal", reveal_url_prefix=REVEAL_PREFIX, reveal_theme=REVEAL_THEME, **common
        )
        body, _ = exporter.from_notebook_node(nb)
        deck = f"{path.stem}.slides.html"
        (out / deck).write_text(body, encoding="utf-8")
    return Page(path.stem, title, description, page, deck, time.perf_counter() - start)


def write_index(pages: list[Page], out: Path) -> Path:
    """index.html: the notebooks in order, each with its title, its first paragraph and links to page and slides."""
    rows = []
    for page in pages:
        links = f'<a href="{page.html}">{inline_markdown(page.title)}</a>'
        if page.slides:
            links += f' <small>(<a href="{page.slides}">slides</a>)</small>'
        rows.append(f"<li>{links}<p>{inline_markdown(page.description)}</p></li>")
    items = "\n".join(rows)
    index = out / "index.html"
    index.write_text(
        f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8" />
<title>qwenlite: Qwen2.5-VL, built step by step</title>
<style>
body {{ font-family: sans-serif; max-width: 50em; margin: 2em auto; line-height: 1.4; }}
li {{ margin-bottom: 1em; }} li p {{ margin: 0.2em 0 0 0; }} code {{ background: #f3f3f3; }}
</style>
</head>
<body>
<h1>qwenlite: Qwen2.5-VL, built step by step</h1>
<p>The notebooks in order, executed when this folder was written. The explorers (sliders) show the picture they
drew then; open the notebooks in JupyterLab (<code>make lab</code>) to move them.</p>
<ol>
{items}
</ol>
</body>
</html>
""",
        encoding="utf-8",
    )
    return index


def export(
    notebooks: list[Path], out: Path, run: bool = True, slides: bool = True, timeout: int = 900, log=print
) -> list[Page]:
    """Execute (if `run`) and export `notebooks` in the order given into `out`; write the index; return the pages."""
    if not notebooks:
        raise ValueError("lecture export: no notebooks given")
    out.mkdir(parents=True, exist_ok=True)
    copy_static(out, slides)
    pages = []
    for path in notebooks:
        page = export_notebook(path, out, run, slides, timeout)
        log(f"{page.name}: {page.seconds:.1f} s")
        pages.append(page)
    write_index(pages, out)
    offending = {}
    for page in pages:
        for name in filter(None, (page.html, page.slides)):
            if urls := network_urls((out / name).read_text(encoding="utf-8")):
                offending[name] = urls
    if offending:
        raise RuntimeError(f"lecture export: pages that would load from the network: {offending}")
    return pages


def find_notebooks(names: list[Path] | None) -> list[Path]:
    """The notebooks to export: every one in notebooks/, or those named (a path, or a name such as 03_vision_block
    or 03_vision_block.ipynb, looked up in notebooks/). An unknown name is refused with the names there are."""
    stored = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if not names:
        return stored
    found, unknown = [], []
    for name in names:
        candidates = [name, ROOT / "notebooks" / name, ROOT / "notebooks" / f"{name}.ipynb"]
        match = next((c for c in candidates if c.is_file() and c.suffix == ".ipynb"), None)
        (found if match else unknown).append(match or name)
    if unknown:
        known = ", ".join(p.stem for p in stored)
        raise SystemExit(f"lecture export: no notebook {', '.join(map(str, unknown))}; the notebooks are: {known}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", default=ROOT / "build" / "html", help="output folder")
    parser.add_argument(
        "--notebooks", type=Path, nargs="*", help="notebooks to export, by name or path (default: all of notebooks/)"
    )
    parser.add_argument("--no-execute", action="store_true", help="export the notebooks as stored (no outputs)")
    parser.add_argument("--no-slides", action="store_true", help="HTML pages only")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args()
    notebooks = find_notebooks(args.notebooks)
    start = time.perf_counter()
    pages = export(notebooks, args.out, run=not args.no_execute, slides=not args.no_slides, timeout=args.timeout)
    print(f"{len(pages)} notebooks in {time.perf_counter() - start:.0f} s: open {args.out / 'index.html'}")


if __name__ == "__main__":
    sys.exit(main())
