"""Repository hygiene: notebooks are committed without outputs, environment.yml matches pyproject, ruff is clean."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_notebooks_are_committed_without_outputs():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks, "no notebooks found"
    dirty = []
    for nb in notebooks:
        cells = json.loads(nb.read_text())["cells"]
        if any(c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count")) for c in cells):
            dirty.append(nb.name)
    assert not dirty, f"strip outputs before committing: {dirty}"


def test_every_notebook_cell_has_a_unique_id():
    """nbformat 4.5 cells need an id (a cell added by hand without one warns now and will be an error)."""
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        ids = [c.get("id") for c in cells]
        assert None not in ids, f"{nb.name}: cells {[i for i, x in enumerate(ids) if x is None]} have no id"
        assert len(set(ids)) == len(ids), f"{nb.name}: repeated cell ids"


def _names(requirements: list[str]) -> dict[str, str]:
    return {
        re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower().replace("_", "-"): r.replace(" ", "") for r in requirements
    }


def test_environment_yml_lists_the_pyproject_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = _names(project["dependencies"] + extras["figures"] + [r for r in extras["dev"] if "qwenlite" not in r])
    env_lines = (ROOT / "environment.yml").read_text().splitlines()
    listed = _names(
        [ln.strip()[2:] for ln in env_lines if ln.strip().startswith("- ") and not ln.strip()[2:].startswith("-")]
    )
    missing = {k: v for k, v in wanted.items() if listed.get(k) != v}
    assert not missing, f"environment.yml differs from pyproject.toml for {missing}"


def test_ruff_is_clean():
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, f"ruff {' '.join(args)}:\n{result.stdout}{result.stderr}"


PACKAGES = ("qwenlite", "qwenlite_course")  # the model, and the course beside it


@pytest.mark.slow
def test_mypy_is_clean_on_the_model_package():
    """`make lint`'s type check, here too so that CI runs it (pyproject's [tool.mypy]: files = qwenlite)."""
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"mypy:\n{result.stdout}{result.stderr}"


def _python_files():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def _import_graph() -> dict[str, set[str]]:
    """module -> the modules of both packages it imports at module level (imports inside functions are lazy)."""
    import ast

    graph = {}
    for file in _python_files():
        parts = file.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        here = name.split(".") if parts[-1] == "__init__" else name.split(".")[:-1]
        targets = set()
        for node in ast.parse(file.read_text()).body:  # module level only
            if isinstance(node, ast.ImportFrom) and node.level:
                base = ".".join(here[: len(here) - node.level + 1])
                if node.module:
                    targets.add(f"{base}.{node.module}")
                else:  # from . import tokens: the names are modules
                    targets.update(f"{base}.{a.name}" for a in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qwenlite"):
                targets.add(node.module)
        graph[name] = targets
    return {name: {t for t in targets if t in graph and t != name} for name, targets in graph.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_package_has_no_import_cycle():
    """No qwenlite module imports, at module level, one that imports it back (fusion and processor once did)."""
    graph = _import_graph()
    assert {"qwenlite.tokens", "qwenlite.fusion", "qwenlite.processor"} <= set(graph)
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"
    assert graph["qwenlite.tokens"] == set()  # the token ids import nothing of qwenlite


def test_import_cycle_check_finds_a_cycle():
    """Mutation: fusion importing processor again (as before tokens.py) is reported as a cycle."""
    graph = _import_graph()
    graph["qwenlite.processor"].add("qwenlite.fusion")
    graph["qwenlite.fusion"].add("qwenlite.processor")
    assert _cycle(graph) is not None


# What the model package may import (any module, any depth, functions included): the standard library and these.
# torchvision: its resize is the one transformers' image processor calls (bit-equal pixels); tqdm: the training
# progress bar, installed with transformers' tokenizer; transformers: its tokenizer only (`AutoTokenizer`).
MODEL_DEPENDENCIES = {"torch", "torchvision", "safetensors", "numpy", "PIL", "av", "jinja2", "tqdm", "transformers"}


def _model_imports(files, root: Path = ROOT) -> dict[str, set[str]]:
    """file -> what it imports from outside the standard library and the model package (every import statement)."""
    import ast

    found = {}
    for file in files:
        names = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names |= {
                    f"{node.module}.{a.name}" if node.module == "transformers" else node.module for a in node.names
                }
        outside = set()
        for name in names:
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top == "qwenlite":
                continue
            if top not in MODEL_DEPENDENCIES or (top == "transformers" and name != "transformers.AutoTokenizer"):
                outside.add(name)
        found[file.relative_to(root).as_posix()] = outside
    return {f: names for f, names in found.items() if names}


def test_model_package_imports_only_torch_and_friends_never_the_course():
    """The model package stands alone: no transformers model, no matplotlib, no qwenlite_course (checked statically)."""
    assert _model_imports(sorted((ROOT / "qwenlite").rglob("*.py"))) == {}


def test_model_import_check_finds_a_course_import(tmp_path):
    """Mutation: a model module that imports the course, a figure library or transformers' model is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import matplotlib.pyplot as plt\n"
        "def f():\n    from qwenlite_course import viz\n"
        "    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration\n"
    )
    good = tmp_path / "good.py"
    good.write_text("import json\nimport torch\nfrom transformers import AutoTokenizer\nfrom qwenlite import layers\n")
    assert _model_imports([bad, good], root=tmp_path) == {
        "bad.py": {"matplotlib.pyplot", "qwenlite_course", "transformers.Qwen2_5_VLForConditionalGeneration"}
    }


def test_readme_module_maps_match_the_packages():
    """The README's `qwenlite/` and `qwenlite_course/` maps list every module and sub-package, and nothing else."""
    readme = (ROOT / "README.md").read_text()
    for name in PACKAGES:
        block = readme[readme.index(f"```\n{name}/\n") :].split("```")[1]
        listed = {line.split()[0] for line in block.splitlines()[2:] if line.strip()}
        package = ROOT / name
        tree = {p.name for p in package.glob("*.py") if p.name != "__init__.py"}
        tree |= {f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").is_file() or p.name == "assets"}
        assert listed == tree, (
            f"README's {name}/ lists {sorted(listed - tree)} not in the tree; misses {sorted(tree - listed)}"
        )


def _installed(site: Path, name: str, version: str, requires: str | None = None) -> None:
    """A distribution pip sees as installed (its .dist-info metadata only: nothing to import)."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    (info / "METADATA").write_text(metadata + (f"Requires-Dist: {requires}\n" if requires else ""))
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("torch_version", "torchvision_version", "supported"),
    [("2.9.0", "0.24.0", True), ("2.4.0", "0.19.0", False)],
    ids=["torch-2.9-kept", "torch-2.4-outside-the-range"],
)
def test_pip_install_keeps_a_supported_torch(tmp_path, torch_version, torchvision_version, supported):
    """pip resolves `pip install -e .` against an environment whose torch is another release (dry run, no index:
    nothing is downloaded or installed). A torch inside pyproject's range is kept, only qwenlite would be
    installed; one outside it cannot be (with the old `torch==2.14.1` pin, 2.9 failed like 2.4 does here)."""
    _installed(tmp_path, "torch", torch_version)
    _installed(tmp_path, "torchvision", torchvision_version, f"torch=={torch_version}")
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PIP_CONSTRAINT": "", "PIP_CONFIG_FILE": os.devnull}
    result = subprocess.run([*cmd, "--report", str(report), "-e", str(ROOT)], capture_output=True, text=True, env=env)
    if supported:
        assert result.returncode == 0, result.stderr
        installs = [item["metadata"]["name"] for item in json.loads(report.read_text())["install"]]
        assert installs == ["qwenlite"]
    else:
        assert result.returncode != 0 and "torch" in result.stderr, result.stderr


# The hostile-input families: the test modules whose refusals (pytest.raises) are cases of bad input, by the
# code that handles them. Planted-bug checks (test_tolerance_policy, test_train, ...) are not hostile inputs.
HOSTILE_FAMILIES = {
    "image files and arrays": "test_image_io.py",
    "video files, folders and frame lists": "test_video_io.py",
    "preprocessing: sizes, limits, preprocessor config": "test_preprocessing.py",
    "processor: prompts, items, call-time options": "test_processor.py",
    "config.json": "test_config.py",
    "safetensors files, shard indexes, from_pretrained: folders, weights, dtype, device, token ids": "test_weights.py",
    "finding a checkpoint: QWENLITE_CHECKPOINT, the trained twin's files": "test_checkpoint.py",
    "model and generate: inputs, positions, padding": ("test_model.py", "test_generation.py"),
    "positions: get_rope_index": "test_rope_index.py",
    "fusion: pads and features": "test_fusion.py",
    "decoder: shapes, masks, positions": "test_decoder.py",
    "frame sampling": "test_sampling.py",
    "run settings and the tolerance policy": "test_reference.py",
    "grounding: box answers and coordinate frames": "test_grounding.py",
}


def hostile_cases() -> dict[str, int]:
    """Cases per family: each collected instance of a parametrized test that expects a refusal counts once; an
    unparametrized one counts each `pytest.raises` it holds (several bad inputs in one function)."""
    import ast

    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "tests", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    raises = {}
    for path in (ROOT / "tests").glob("test_*.py"):
        source = path.read_text()
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef):
                raises[(path.name, node.name)] = ast.get_source_segment(source, node).count("pytest.raises(")
    per_module: dict[str, int] = {}
    for line in collected.splitlines():
        if "::" not in line:
            continue
        module, test = line.split("::")[0].removeprefix("tests/"), line.split("::")[1]
        n = raises.get((module, test.split("[")[0]), 0)
        per_module[module] = per_module.get(module, 0) + (min(n, 1) if "[" in test else n)
    families = {}
    for family, modules in HOSTILE_FAMILIES.items():
        modules = (modules,) if isinstance(modules, str) else modules
        families[family] = sum(per_module.get(m, 0) for m in modules)
    return families


@pytest.mark.slow
def test_tests_readme_says_how_many_hostile_cases_each_family_has():
    """tests/README.md's table is the count itself (a test added or removed changes it), and the total is >= 140."""
    counts = hostile_cases()
    table = (ROOT / "tests" / "README.md").read_text()
    for family, n in counts.items():
        assert f"| {family} | {n} |" in table, f"tests/README.md: family {family!r} now has {n} cases"
    total = sum(counts.values())
    assert total >= 140 and f"| **all** | **{total}** |" in table, total


# modules allowed to lack their test module (none now: every viz module has tests/test_viz_<m>.py)
WITHOUT_TEST_MODULE: set[str] = set()


def test_every_module_has_its_test_module():
    """<package>/<m>.py -> tests/test_<m>.py, viz/<m>.py -> tests/test_viz_<m>.py, exercises/<m>.py ->
    tests/test_exercises_<m>.py (grading.py -> tests/test_exercises.py), in both packages. A new module comes
    with its tests."""
    tests = ROOT / "tests"
    missing = set()
    for path in _python_files():
        if path.name == "__init__.py":
            continue
        relative = path.relative_to(ROOT).as_posix().split("/", 1)[1]  # without the package folder
        stem = relative.removesuffix(".py").replace("/", "_").replace("exercises_grading", "exercises")
        if not (tests / f"test_{stem}.py").is_file():
            missing.add(relative)
    assert missing == WITHOUT_TEST_MODULE, f"without tests/test_<module>.py: {sorted(missing - WITHOUT_TEST_MODULE)}"
