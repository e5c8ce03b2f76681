"""The widgets live in JupyterLab, on a real kernel: run a chapter, step a stepper, re-trace
it with a new input shape. JupyterLab comes from requirements.txt; Chromium from Debian.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from booksite import ROOT

CHAPTER = "04_custom_forward.ipynb"  # its first stepper: show(net, X) with X of shape (2, 20)

pytestmark = pytest.mark.live


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 with a token, serving a scratch copy of the chapters (so
    that nothing it saves lands in the repository)."""
    work = tmp_path_factory.mktemp("lab")
    notebooks = work / "notebooks"
    shutil.copytree(ROOT / "chapters", notebooks)
    settings = work / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # no "get notified about Jupyter news?" toast over the page, and no request for it
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # start the notebook's own kernel (python3) without the "Select Kernel" dialog
    tracker = work / "settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text(
        json.dumps({"autoStartDefaultKernel": True}))
    token, port = secrets.token_hex(16), _free_port()
    env = {k: v for k, v in os.environ.items() if k != "LAYERS_BLOCKS_STATIC"}
    env["JUPYTER_RUNTIME_DIR"] = str(work / "runtime")
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={notebooks}",
        f"--LabApp.user_settings_dir={work / 'settings'}",
        f"--LabApp.workspaces_dir={work / 'workspaces'}",
    ]
    log = open(work / "lab.log", "w")  # noqa: SIM115 -- closed in the teardown below
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not start:\n"
                                + (work / "lab.log").read_text()[-3000:], pytrace=False)
                time.sleep(0.5)
        yield base, token, work
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _visible_step(stepper) -> str:
    """The text a reader sees in the stepper's Stack (innerText skips the hidden steps)."""
    return stepper.locator(".lb-stack").first.inner_text()


def _wait_for_step(stepper, *texts: str, seconds: float = 30) -> str:
    """The visible step once it contains every one of ``texts`` (the views render a
    moment after the cell's output appears); the last text seen if it never does."""
    deadline = time.monotonic() + seconds
    seen = _visible_step(stepper)
    while not all(t in seen for t in texts) and time.monotonic() < deadline:
        time.sleep(0.2)
        seen = _visible_step(stepper)
    return seen


def test_stepper_steps_and_retraces_on_a_live_kernel(lab, browser, artifacts):
    base, token, work = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{base}/lab/tree/{CHAPTER}?token={token}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        # a Run All sent while the kernel is still starting is dropped: wait until it is idle
        page.locator(".jp-StatusBar-TextItem", has_text="Python 3 (ipykernel) | Idle").wait_for(
            timeout=120_000)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        page.wait_for_function("document.querySelectorAll('.lb-stepper').length >= 2",
                               timeout=180_000)
        stepper = page.locator(".lb-stepper").first
        stepper.scroll_into_view_if_needed()
        first = _wait_for_step(stepper, "step 1 of")
        assert "step 1 of" in first and "(2, 20)" in first
        page.screenshot(path=str(artifacts / "live-lab-0-start.png"))

        # step with the keyboard, as on the static site
        stepper.locator(".lb-slider .noUi-handle, .lb-slider [role=slider]").first.focus()
        page.keyboard.press("ArrowRight")
        second = _wait_for_step(stepper, "step 2 of", seconds=10)
        assert "step 2 of" in second and "Linear" in second and second != first

        # a new input shape: the kernel traces again and every view is rebuilt
        box = stepper.get_by_label("input shape")
        assert box.input_value() == "2, 20"
        box.fill("5, 20")
        box.press("Enter")
        stepper.locator("text=traced again with input shape 5, 20").wait_for(timeout=60_000)
        retraced = _wait_for_step(stepper, "(5, 20)", "step 1 of")
        assert "step 1 of" in retraced and "(5, 20)" in retraced and "(2, 20)" not in retraced
        page.screenshot(path=str(artifacts / "live-lab-1-retraced.png"))

        # a shape the model cannot take: the error shows, the previous trace stays
        box.fill("5, 7")
        box.press("Enter")
        stepper.locator("text=input shape 5, 7 fails").wait_for(timeout=60_000)
        status = stepper.locator("text=keeping the previous trace").inner_text()
        assert "mat1 and mat2 shapes cannot be multiplied" in status
        assert "(5, 20)" in _visible_step(stepper)
        page.screenshot(path=str(artifacts / "live-lab-2-bad-shape.png"))
        assert errors == []
    except BaseException:
        page.screenshot(path=str(artifacts / "live-lab-failed.png"), full_page=True)
        raise
    finally:
        page.close()
