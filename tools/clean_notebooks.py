"""Strip outputs, execution counts and widget state from notebooks, in place.

    python tools/clean_notebooks.py [NOTEBOOK ...]      (default: chapters/*.ipynb)

Notebooks are committed without outputs (tests/test_notebooks.py checks it). Cell ids,
tags and other metadata are kept.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def clean(path: Path) -> bool:
    """Clean one notebook; True if it changed."""
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in ("execution", "collapsed", "scrolled"):
            cell.metadata.pop(key, None)
    after = nbformat.writes(nb)
    if after != before:
        path.write_text(after, encoding="utf8")
        return True
    return False


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted((ROOT / "chapters").glob("*.ipynb"))
    for path in paths:
        if clean(path):
            print(f"cleaned {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
