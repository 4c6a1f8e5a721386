"""The notebooks in a real browser: JupyterLab on localhost, headless Chromium driven by Playwright.

A learner's path, done by a machine: open a notebook in JupyterLab, Run > Run All Cells, wait for the kernel,
move a slider of the notebook's ipywidgets explorer and watch the figure change. Checked: every code cell ran,
no cell shows an error, and the explorer's picture after the move differs from the one before.

JupyterLab runs on a temporary copy of notebooks/ with its settings, workspaces and runtime files in a temporary
folder, so nothing in the repository or the home folder is written. Chromium is Debian's (`apt-get install
chromium`, which `.ci/run` does), never a browser that Playwright downloads; without it the test is skipped.
Screenshots go to $QWENLITE_BROWSER_SHOTS when set (else into pytest's temporary folder).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # JupyterLab in headless Chromium: about 60 s

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright
except ImportError:  # the test is skipped with this reason
    sync_playwright = None

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_NAMES = ("chromium", "chromium-browser")
SERVER_START_S = 60
NOTEBOOK_RUN_S = 150  # Run All of 01 and 06 at once on the tiny twin: 70 s on the 2-core test machine
WIDGET_REDRAW_S = 30
# (notebook, slider label of its explorer, value to type into the slider's readout)
EXPLORERS = [
    ("01_preprocessing.ipynb", "height", 1400),
    ("06_rope_index.ipynb", "image w px", 616),
]
STDERR = "application/vnd.jupyter.stderr"
LAB_SETTINGS = {
    # every cell stays in the DOM (JupyterLab 4 otherwise renders only the cells near the viewport)
    # and the notebook's kernel starts without a "Select Kernel" dialog
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none", "autoStartDefaultKernel": True},
    # no "get notified about Jupyter news?" toast over the notebook
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false"},
}


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    pytest.skip("chromium not installed: apt-get install -y chromium (Debian's package; .ci/run installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a free localhost port with a token, serving a temporary copy of notebooks/."""
    home = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", home / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for plugin, values in LAB_SETTINGS.items():
        package, name = plugin.split(":")
        file = home / "settings" / package / f"{name}.jupyterlab-settings"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(values))
    port, token = free_port(), uuid.uuid4().hex
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={home / 'notebooks'}",
        f"--LabApp.user_settings_dir={home / 'settings'}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = (home / "server.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_S
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"JupyterLab did not start in {SERVER_START_S} s:\n{(home / 'server.log').read_text()}")
        time.sleep(0.5)
    yield {"url": url, "token": token, "home": home}
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    executable = chromium()
    if sync_playwright is None:
        pytest.skip("playwright not installed: pip install -e '.[dev]' (it drives the system chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("QWENLITE_BROWSER_SHOTS") or tmp_path_factory.mktemp("shots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# In the page: True while some cell is queued or running.
RUNNING = "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].some(p => p.textContent.includes('*'))"
# In the page: True once the kernel is idle and no cell is queued or running ("[*]:").
KERNEL_DONE = """() => {
    const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
    const indicator = panel && panel.querySelector('.jp-Notebook-ExecutionIndicator');
    const prompts = panel ? [...panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')] : [];
    return indicator && indicator.dataset.status === 'idle' && prompts.length > 0
        && prompts.every(p => !p.textContent.includes('*'));
}"""


def kernel_idle(lab, notebook: str) -> bool:
    """True once the server has a session for `notebook` whose kernel reports idle."""
    with urllib.request.urlopen(f"{lab['url']}/api/sessions?token={lab['token']}", timeout=5) as response:
        sessions = json.load(response)
    return any(s["path"] == notebook and s["kernel"]["execution_state"] == "idle" for s in sessions)


def run_all(page, attempts: int = 3) -> None:
    """Run > Run All Cells from the menu bar; returns once some cell is queued or running.

    A click that lands while the notebook is still connecting to its fresh kernel can be dropped, so the menu
    is used again (at most `attempts` times) until a cell shows "[*]:".
    """
    for _ in range(attempts):
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        try:
            page.wait_for_function(RUNNING, timeout=10_000)
            return
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    raise AssertionError(f"Run > Run All Cells started no cell in {attempts} tries")


@pytest.fixture(scope="module")
def ran(browser, lab) -> dict:
    """Each notebook of EXPLORERS open in its own page and workspace, all run at once; notebook -> page."""
    pages = {}
    for notebook, _, _ in EXPLORERS:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        workspace = Path(notebook).stem  # its own workspace, so one page does not reopen the other's tabs
        page.goto(f"{lab['url']}/lab/workspaces/{workspace}/tree/{notebook}?token={lab['token']}")
        deadline = time.monotonic() + SERVER_START_S
        while not kernel_idle(lab, notebook):  # the kernel has started and is idle
            assert time.monotonic() < deadline, f"{notebook}: no idle kernel after {SERVER_START_S} s"
            time.sleep(0.5)
        page.wait_for_function(KERNEL_DONE, timeout=60_000)
        run_all(page)
        pages[notebook] = page
    for page in pages.values():
        page.wait_for_function(KERNEL_DONE, timeout=NOTEBOOK_RUN_S * 1000, polling=500)
    yield pages
    for page in pages.values():
        page.close()


def cell_report(page) -> dict:
    """Execution counts of the code cells, and the text of every error or traceback shown."""
    return page.evaluate(
        """(stderr) => {
        const cells = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell')];
        const prompts = cells.map(c => c.querySelector('.jp-InputPrompt').textContent.trim());
        const errors = cells.flatMap(c => [...c.querySelectorAll(
            `.jp-OutputArea-output[data-mime-type="${stderr}"]`)].map(o => o.textContent))
            .filter(t => /Traceback|Error\\b/.test(t));
        return {prompts, errors};
    }""",
        STDERR,
    )


def explorer_image(cell) -> str:
    """The src (a data: URL of the PNG) of the picture in the explorer's Output widget."""
    return cell.locator(".jupyter-widgets .jp-OutputArea-output img").first.get_attribute("src")


@pytest.mark.parametrize(("notebook", "label", "value"), EXPLORERS, ids=[n for n, _, _ in EXPLORERS])
def test_notebook_runs_and_explorer_redraws(ran, shots, notebook, label, value):
    page = ran[notebook]
    report = cell_report(page)
    assert not report["errors"], f"{notebook}: cells show errors:\n" + "\n---\n".join(report["errors"])
    not_run = [i for i, p in enumerate(report["prompts"]) if not re.fullmatch(r"\[\d+\]:", p)]
    assert not not_run, f"{notebook}: code cells {not_run} did not run (prompts {report['prompts']})"

    slider = page.locator(".widget-slider", has=page.locator(".widget-label", has_text=re.compile(f"^{label}$")))
    assert slider.count() == 1, f"{notebook}: expected one slider labelled {label!r}, found {slider.count()}"
    cell = page.locator(".jp-CodeCell", has=slider)
    output = cell.locator(".jp-Cell-outputArea")
    output.scroll_into_view_if_needed()
    stem = Path(notebook).stem
    output.screenshot(path=shots / f"{stem}_before.png")
    before = explorer_image(cell)
    assert before and before.startswith("data:image/png"), f"{notebook}: the explorer shows no picture"

    readout = slider.locator(".widget-readout")  # ipywidgets' editable number beside the slider
    old = readout.text_content().strip()
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(str(value))
    page.keyboard.press("Enter")
    page.wait_for_function(
        "([el, old]) => el.textContent.trim() !== old", arg=[readout.element_handle(), old], timeout=10_000
    )
    assert readout.text_content().strip() == str(value), f"{notebook}: the {label!r} slider did not take {value}"
    page.wait_for_function(
        """([cell, before]) => {
            const img = cell.querySelector('.jupyter-widgets .jp-OutputArea-output img');
            return img && img.src !== before;
        }""",
        arg=[cell.element_handle(), before],
        timeout=WIDGET_REDRAW_S * 1000,
    )
    page.wait_for_timeout(300)  # let the new image lay out before the screenshot
    output.screenshot(path=shots / f"{stem}_after.png")
    page.screenshot(path=shots / f"{stem}_page.png")
    after = explorer_image(cell)
    assert after.startswith("data:image/png") and after != before, f"{notebook}: the figure did not change"
    assert not cell_report(page)["errors"], f"{notebook}: moving the slider raised an error"


def test_the_checks_fail_on_a_page_with_an_error_and_an_unrun_cell(browser):
    """Mutation: JupyterLab's DOM for a cell that raised and a cell still queued; the checks above must see both."""
    page = browser.new_page()
    try:
        page.set_content(
            f"""<div class="jp-NotebookPanel"><div class="jp-Notebook-ExecutionIndicator" data-status="idle"></div>
            <div class="jp-CodeCell"><div class="jp-InputPrompt">[1]:</div>
              <div class="jp-OutputArea-output" data-mime-type="{STDERR}">Traceback (most recent call last):
              ValueError: image height 0</div></div>
            <div class="jp-CodeCell"><div class="jp-InputPrompt">[*]:</div></div></div>"""
        )
        report = cell_report(page)
        assert len(report["errors"]) == 1 and "ValueError" in report["errors"][0]
        assert report["prompts"] == ["[1]:", "[*]:"]
        assert page.evaluate(RUNNING) and not page.evaluate(KERNEL_DONE)
    finally:
        page.close()
