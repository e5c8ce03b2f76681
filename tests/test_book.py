"""The book builds warning-free, every page of the toc is there, no page refers to another
host for anything it loads, and a chapter with an unintended error fails the build and
the tests, naming the notebook and the cell."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from booksite import ROOT, run_build, toc_docnames

WARNING_RE = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


@pytest.mark.book
def test_book_builds_warning_free(book_build: subprocess.CompletedProcess) -> None:
    output = ANSI_RE.sub("", book_build.stdout + book_build.stderr)
    # ipykernel's own start-up notice is not a Sphinx warning; the kernel prints it on stderr
    kernel_notices = ("[IPKernelApp] WARNING | Kernel is running over TCP without encryption",)
    lines = [line for line in output.splitlines()
             if WARNING_RE.search(line) and not line.startswith(kernel_notices)]
    assert not lines, "the build printed warnings:\n" + "\n".join(lines)
    assert book_build.returncode == 0, output[-5000:]
    assert "build succeeded" in output


@pytest.mark.book
def test_every_toc_page_is_built(site_dir: Path) -> None:
    missing = [d for d in toc_docnames() if not (site_dir / f"{d}.html").is_file()]
    assert not missing, f"pages in _toc.yml without HTML: {missing}"
    assert (site_dir / "index.html").is_file()


# <script src>, <link href> (stylesheets, icons, preloads), <img src>, <iframe src>, ...
ASSET_RE = re.compile(
    r"<(?:script|img|iframe|source|video|audio|embed)\b[^>]*\bsrc=[\"']([^\"']+)"
    r"|<link\b[^>]*\bhref=[\"']([^\"']+)", re.I)


@pytest.mark.book
def test_pages_load_nothing_from_other_hosts(site_dir: Path) -> None:
    """Static check of what the HTML asks for; the browser test checks what it fetches."""
    problems = []
    for page in sorted(site_dir.rglob("*.html")):
        text = page.read_text(encoding="utf8")
        for match in ASSET_RE.finditer(text):
            url = match.group(1) or match.group(2)
            if re.match(r"^(https?:)?//", url):
                problems.append(f"{page.relative_to(site_dir)}: {url}")
    assert not problems, "pages load assets from other hosts:\n" + "\n".join(problems)


@pytest.mark.book
def test_chapter_pages_embed_widget_state(site_dir: Path) -> None:
    """Widget state saved at execution reaches the page, so steppers work without a kernel."""
    page = (site_dir / "chapters" / "01_layers.html").read_text(encoding="utf8")
    assert 'type="application/vnd.jupyter.widget-state+json"' in page
    assert 'type="application/vnd.jupyter.widget-view+json"' in page
    assert "_static/jupyter-widgets/html-manager/dist/embed-amd.js" in page


@pytest.mark.book
def test_unanswered_exercises_say_so_on_the_site(site_dir: Path) -> None:
    """The chapters are built with nothing answered: each check says so, none passes, and
    every solution is folded away."""
    import nbformat
    from test_exercises import exercises

    for docname in toc_docnames():
        source = ROOT / f"{docname}.ipynb"
        if not source.exists():
            continue
        n = len(exercises(nbformat.read(source, as_version=4)))
        page = (site_dir / f"{docname}.html").read_text(encoding="utf8")
        # printed by the check cells (their source, folded on the page, quotes it)
        said = re.findall(r'(?<!")Exercise \d+: not answered yet', page)
        assert len(said) == n, f"{docname}: {said}"
        assert not re.search(r'(?<!")✓ Exercise', page), docname
        assert page.count('<details class="lb-solution">') >= n, docname


# ---------------------------------------------------------------- bad input

BROKEN_CELL_SOURCE = "undefined_name_in_broken_chapter + 1"


def broken_notebook() -> dict:
    def code(source, cell_id, tags=()):
        return {"cell_type": "code", "id": cell_id, "metadata": {"tags": list(tags)},
                "execution_count": None, "outputs": [], "source": source}

    return {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"},
                     "language_info": {"name": "python"}},
        "cells": [
            {"cell_type": "markdown", "id": "title", "metadata": {},
             "source": "# A broken chapter\n\nUsed by tests/test_book.py only."},
            code("x = 1", "fine"),
            # an intended error: tagged, so it must not fail anything
            code("1 / 0", "zero-division-on-purpose", tags=["raises-exception"]),
            code(BROKEN_CELL_SOURCE, "broken-cell"),
            code("x + 1", "never-reached"),
        ],
    }


@pytest.fixture(scope="module")
def broken_book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A minimal copy of the book (same configuration) whose one chapter fails."""
    root = tmp_path_factory.mktemp("broken-book")
    (root / "_config.yml").write_text((ROOT / "_config.yml").read_text())
    (root / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nparts:\n  - caption: Broken\n    numbered: true\n"
        "    chapters:\n      - file: chapters/99_broken\n")
    (root / "intro.md").write_text("# Broken book\n\nA temporary book for a test.\n")
    (root / "chapters").mkdir()
    (root / "chapters" / "99_broken.ipynb").write_text(json.dumps(broken_notebook()))
    for shared in ("web", "_webassets"):
        (root / shared).symlink_to(ROOT / shared)
    return root


EXPECTED_CELL = "cell 3 (code cell 3, id 'broken-cell'"


@pytest.mark.book
def test_untagged_error_fails_the_build_naming_notebook_and_cell(broken_book: Path) -> None:
    result = run_build(broken_book, "--execute", "force")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    failed = [line for line in output.splitlines() if line.strip().startswith("FAILED ")]
    assert failed, output[-3000:]
    assert "chapters/99_broken.ipynb" in failed[0]
    assert EXPECTED_CELL in failed[0]
    assert "NameError" in failed[0]
    # the tagged cell's ZeroDivisionError is no failure
    assert "zero-division-on-purpose" not in "\n".join(failed)
    assert "ZeroDivisionError" not in "\n".join(failed)
    # the traceback itself is printed too, with the cell's source
    assert BROKEN_CELL_SOURCE in output
    # and building again, with nothing changed, fails again (no stale "up to date")
    again = run_build(broken_book, "--execute", "force")
    assert again.returncode != 0, again.stdout[-3000:]
    assert any(EXPECTED_CELL in line for line in again.stdout.splitlines()
               if line.strip().startswith("FAILED "))


@pytest.mark.book
def test_untagged_error_fails_the_notebook_tests_naming_notebook_and_cell(
        broken_book: Path) -> None:
    """`make test` runs tests/test_notebooks.py; on the broken copy it fails, and says where."""
    env = dict(os.environ, LAYERS_BLOCKS_BOOK_ROOT=str(broken_book))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
         str(ROOT / "tests" / "test_notebooks.py"), "-k", "executes"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "1 failed" in output, output[-3000:]
    assert "chapters/99_broken.ipynb: " + EXPECTED_CELL in output, output[-3000:]
    assert "NameError" in output
