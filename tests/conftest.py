"""Shared fixtures for the book-level tests: one book build per session, a local server,
one Chromium.

These fixtures are lazy: a test that does not ask for them (the unit tests of
``book_src``) does not build the book or start a browser. Nothing here skips a test:
a missing Chromium or a failed build fails the tests that need them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from booksite import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, ROOT, Server, run_build


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def book_build(artifacts: Path) -> subprocess.CompletedProcess:
    """Build the book once per session: every page re-read, every chapter executed.

    The previous HTML is removed first, so that a build that stops early cannot leave
    old pages for the browser tests to pass on."""
    shutil.rmtree(ROOT / "_build" / "html", ignore_errors=True)
    result = run_build(ROOT, "--execute", "force", "--fresh")
    (artifacts / "build.log").write_text(result.stdout + result.stderr, encoding="utf8")
    return result


@pytest.fixture(scope="session")
def site_dir(book_build: subprocess.CompletedProcess) -> Path:
    """The built HTML; fails (does not skip) the tests that need it if there is none.

    A build that only warned still wrote every page: the browser tests check those pages
    too (test_book_builds_warning_free fails for the warnings)."""
    html = ROOT / "_build" / "html"
    if not (html / "index.html").exists():
        pytest.fail("the book build wrote no site, see test-artifacts/build.log:\n"
                    + book_build.stdout[-3000:], pytrace=False)
    return html


@pytest.fixture(scope="session")
def server(site_dir: Path):
    with Server(site_dir) as srv:
        yield srv


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, driven by Playwright. Never `playwright install`."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's `chromium` package "
                    "(apt-get install chromium) or set LAYERS_BLOCKS_CHROMIUM", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
