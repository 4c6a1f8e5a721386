"""lecture/export.py (`make html`) on two tiny notebooks: an index in the order given, offline pages and slides.

The notebooks are made here (a heading, a paragraph, math, a matplotlib figure, an ipywidgets explorer built
like qwenlite_course.viz.live) and really executed, in a kernel that imports no model, so the test takes seconds.
The stock nbconvert templates are exported too, to show that the network check catches what they load.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import nbformat
import pytest

pytestmark = pytest.mark.slow  # executes notebooks into slides

ROOT = Path(__file__).resolve().parents[1]

FIGURE = """\
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(2, 2))
ax.plot([0, 1], [1, 0])
plt.show()
"""
EXPLORER = """\
import io
import ipywidgets as widgets
from IPython.display import Image
out = widgets.Output()
png = io.BytesIO()
fig, ax = plt.subplots(figsize=(2, 2))
ax.bar([0, 1], [1, 2])
fig.savefig(png, format="png")
plt.close(fig)
out.append_display_data(Image(data=png.getvalue()))
widgets.VBox([widgets.IntSlider(3, description="n"), out])
"""


@pytest.fixture(scope="module")
def export():
    spec = importlib.util.spec_from_file_location("lecture_export", ROOT / "lecture" / "export.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def notebook(path: Path, title: str, paragraph: str, cells: list[str]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\n{paragraph}\n\n| a | b |\n|---|---|\n| 1 | 2 |")]
    nb.cells += [nbformat.v4.new_code_cell(code) for code in cells]
    nb.cells.append(nbformat.v4.new_markdown_cell("## Later\n\n$$\\frac{x}{\\sqrt{y}}$$"))
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def exported(export, tmp_path_factory):
    folder = tmp_path_factory.mktemp("notebooks")
    # given out of alphabetical order: the index must follow the order given
    second = notebook(folder / "b_second.ipynb", "B · the second", "Comes **first** here, with `code`.", [FIGURE])
    first = notebook(folder / "a_first.ipynb", "A · the first", "An explorer\nover two lines.", [FIGURE, EXPLORER])
    out = tmp_path_factory.mktemp("html")
    pages = export.export([second, first], out, run=True, slides=True, timeout=120, log=lambda _: None)
    return out, pages


def local_refs(page: str) -> list[str]:
    """The local files a page's <script src> and <link href> load (query strings dropped)."""
    refs = re.findall(r"""<(?:script|link)\b[^>]*?\b(?:src|href)\s*=\s*["']([^"']+)["']""", page, re.I)
    return [urlsplit(ref).path for ref in refs if not ref.startswith(("data:", "#"))]


def test_index_lists_the_notebooks_in_the_order_given(exported):
    out, pages = exported
    assert [p.name for p in pages] == ["b_second", "a_first"]
    assert [(p.title, p.description) for p in pages] == [
        ("B · the second", "Comes **first** here, with `code`."),
        ("A · the first", "An explorer over two lines."),
    ]
    index = (out / "index.html").read_text(encoding="utf-8")
    links = re.findall(r'<a href="([^"]+)"', index)
    assert links == ["b_second.html", "b_second.slides.html", "a_first.html", "a_first.slides.html"]
    assert "<strong>first</strong>" in index and "<code>code</code>" in index
    assert index.index("B · the second") < index.index("A · the first")


def test_pages_load_nothing_from_the_network_and_every_local_file_exists(export, exported):
    out, pages = exported
    names = ["index.html"] + [n for p in pages for n in (p.html, p.slides)]
    for name in names:
        page = (out / name).read_text(encoding="utf-8")
        assert export.network_urls(page) == [], f"{name} loads from the network"
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.replace('href="https://', "")), name
        for ref in local_refs(page):
            assert (out / ref).is_file(), f"{name} loads {ref}, which is not in {out}"
    html = (out / "a_first.html").read_text(encoding="utf-8")
    slides = (out / "a_first.slides.html").read_text(encoding="utf-8")
    assert f'src="{export.MATHJAX_URL}"' in html and f'src="{export.MATHJAX_URL}"' in slides
    assert "_static/reveal.js/dist/reveal.js" in local_refs(slides)
    assert "\\frac{x}{\\sqrt{y}}" in html  # left for MathJax to typeset in the browser


def test_figures_are_embedded_and_explorers_frozen_to_their_picture(exported):
    out, _ = exported
    html = (out / "a_first.html").read_text(encoding="utf-8")
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', html)) == 2  # the figure and the explorer's
    assert "an interactive explorer" in html
    assert "application/vnd.jupyter.widget" not in html  # no widget view or state left for a manager to render
    second = (out / "b_second.html").read_text(encoding="utf-8")
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', second)) == 1
    assert "an interactive explorer" not in second


def test_slides_start_at_each_heading(exported):
    out, _ = exported
    slides = (out / "b_second.slides.html").read_text(encoding="utf-8")
    top = re.findall(r"<section>\s*<section>", slides)
    assert len(top) == 2  # "# B · the second" (with the code cell) and "## Later"


def test_the_network_check_catches_nbconvert_stock_templates(export, tmp_path):
    """Mutation: the same notebook through nbconvert's own lab and reveal templates loads require.js, MathJax
    and reveal.js from CDNs, and network_urls says so."""
    from nbconvert import HTMLExporter, SlidesExporter

    nb = nbformat.read(notebook(tmp_path / "n.ipynb", "N", "text", ["1 + 1"]), as_version=4)
    stock_html, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    stock_slides, _ = SlidesExporter().from_notebook_node(nb)
    assert any("mathjax" in url for url in export.network_urls(stock_html))
    assert any("require" in url for url in export.network_urls(stock_html))
    assert any("reveal.js" in url for url in export.network_urls(stock_slides))


def test_describe_reads_the_repository_notebooks_and_refuses_one_without_a_heading(export, tmp_path):
    stored = sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in stored:
        title, description = export.describe(nbformat.read(path, as_version=4), path.name)
        assert title.startswith(path.name[:2]), f"{path.name}: title {title!r} does not start with its number"
        assert len(description) > 40, f"{path.name}: first paragraph {description!r}"
        assert description.endswith((".", "!", "?")), f"{path.name}: the index would stop mid-sentence: {description!r}"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("no heading here")])
    with pytest.raises(ValueError, match=r"notebook x.ipynb: no Markdown heading"):
        export.describe(nb, "x.ipynb")
    with pytest.raises(ValueError, match="no notebooks given"):
        export.export([], tmp_path / "out")


def test_whole_sentences_cuts_back_to_the_last_sentence_that_ended(export):
    assert export.whole_sentences("One. Two! Three? Four.") == "One. Two!"
    assert export.whole_sentences("It reads pixels. Each block is") == "It reads pixels."
    assert export.whole_sentences("See `qwenlite.vision`. The 2.5 in Qwen2.5 is no end.") == (
        "See `qwenlite.vision`. The 2.5 in Qwen2.5 is no end."
    )


def test_sections_go_across_and_steps_go_down(export):
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# Title"),
            nbformat.v4.new_code_cell("setup()"),
            nbformat.v4.new_markdown_cell("## 1 · A section"),
            nbformat.v4.new_code_cell("a()"),
            nbformat.v4.new_code_cell("b()"),
            nbformat.v4.new_markdown_cell("What b shows."),
            nbformat.v4.new_code_cell("c()"),
            nbformat.v4.new_code_cell("table()", metadata={"slideshow": {"slide_type": "skip"}}),
            nbformat.v4.new_code_cell("d()"),
        ]
    )
    export.mark_slides(nb)
    kinds = [cell.metadata["slideshow"]["slide_type"] for cell in nb.cells]
    assert kinds == ["slide", "subslide", "slide", "-", "subslide", "subslide", "-", "skip", "subslide"]


def test_notebooks_are_found_by_name_or_path_and_an_unknown_one_is_named(export):
    by_name = export.find_notebooks([Path("03_vision_block"), Path("04_merger.ipynb")])
    assert [p.name for p in by_name] == ["03_vision_block.ipynb", "04_merger.ipynb"]
    assert export.find_notebooks([ROOT / "notebooks" / "05_token_fusion.ipynb"])[0].name == "05_token_fusion.ipynb"
    assert len(export.find_notebooks(None)) == len(list((ROOT / "notebooks").glob("*.ipynb")))
    with pytest.raises(SystemExit, match=r"no notebook 3_vision_block; the notebooks are: 00_tour, .*03_vision_block"):
        export.find_notebooks([Path("3_vision_block")])
