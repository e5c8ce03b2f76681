"""Chapters as a reader runs them: each executes top to bottom in a fresh kernel, and
none is committed with outputs.

Execution here is independent of the book build: no ``LAYERS_BLOCKS_STATIC`` (the
widgets are in their live, in-Jupyter mode), the chapter's own folder as working
directory, a new kernel per chapter. ``LAYERS_BLOCKS_BOOK_ROOT`` points the test at
another copy of the book (the bad-input test uses it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

BOOK_ROOT = Path(os.environ.get("LAYERS_BLOCKS_BOOK_ROOT", Path(__file__).parent.parent))
CHAPTERS = sorted((BOOK_ROOT / "chapters").glob("*.ipynb"))
CELL_TIMEOUT = 300  # seconds; the book build allows 120 per cell


def describe_cell(nb, index: int) -> str:
    cell = nb.cells[index]
    code_number = sum(1 for c in nb.cells[: index + 1] if c.cell_type == "code")
    first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
    return f"cell {index} (code cell {code_number}, id {cell.get('id', '?')!r}, " \
           f"starting {first!r})"


def failing_cell(nb) -> int | None:
    """Index of the first code cell that has an error output and is not tagged for it."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if "raises-exception" in cell.metadata.get("tags", []):
            continue
        if any(out.get("output_type") == "error" for out in cell.get("outputs", [])):
            return index
    return None


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_chapter_executes_in_fresh_kernel(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "LAYERS_BLOCKS_STATIC"}
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute(env=env)
    except CellExecutionError as error:
        index = failing_cell(nb)
        where = describe_cell(nb, index) if index is not None else "a cell"
        ename = getattr(error, "ename", type(error).__name__)
        evalue = getattr(error, "evalue", "")
        pytest.fail(f"{path.relative_to(BOOK_ROOT)}: {where} raised {ename}: {evalue}\n"
                    "(tag the cell `raises-exception` if the error is intended)\n\n"
                    f"{error}", pytrace=False)
    # every code cell ran, in order
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), counts


def test_there_are_chapters() -> None:
    assert CHAPTERS, f"no chapters/*.ipynb under {BOOK_ROOT}"


def tracked_notebooks() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z", "--", "*.ipynb"], cwd=BOOK_ROOT,
                         capture_output=True, text=True, check=True).stdout
    return [BOOK_ROOT / name for name in out.split("\0") if name]


def test_no_notebook_in_git_has_outputs() -> None:
    """nbdev_clean's rule: outputs, execution counts and widget state are build products."""
    notebooks = tracked_notebooks()
    assert notebooks, "git tracks no notebook"
    problems = []
    for path in notebooks:
        # the version in git's index (what a commit would hold), not the working copy
        staged = subprocess.run(["git", "show", f":{path.relative_to(BOOK_ROOT)}"],
                                cwd=BOOK_ROOT, capture_output=True, text=True, check=True)
        nb = json.loads(staged.stdout)
        if "widgets" in nb.get("metadata", {}):
            problems.append(f"{path.relative_to(BOOK_ROOT)}: widget state in metadata")
        for index, cell in enumerate(nb.get("cells", [])):
            if cell.get("cell_type") != "code":
                continue
            if cell.get("outputs"):
                problems.append(f"{path.relative_to(BOOK_ROOT)}: cell {index} has outputs")
            if cell.get("execution_count") is not None:
                problems.append(
                    f"{path.relative_to(BOOK_ROOT)}: cell {index} has an execution count")
    assert not problems, (
        "notebooks are committed without outputs; run `make clean-notebooks` "
        "(tools/clean_notebooks.py) before committing:\n  " + "\n  ".join(problems))


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_chapter_is_a_valid_notebook(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    # a control character in a cell is almost always a backslash lost on the way in:
    # "\approx" written through a Python string becomes BEL + "pprox"
    bad = [(i, repr(m.group())) for i, cell in enumerate(nb.cells)
           for m in re.finditer(r"[\x00-\x08\x0b-\x1f\x7f]", cell.source)]
    assert not bad, f"control characters in {path.name} (cell, character): {bad}"
