"""Repository hygiene: notebooks are committed without outputs, environment.yml matches pyproject, ruff is clean."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

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


def _names(requirements: list[str]) -> dict[str, str]:
    return {
        re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower().replace("_", "-"): r.replace(" ", "") for r in requirements
    }


def test_environment_yml_lists_the_pyproject_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"] + project["optional-dependencies"]["dev"])
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
