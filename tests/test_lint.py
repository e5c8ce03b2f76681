"""ruff (pinned in requirements.txt) finds nothing in the package, the tests and the tools."""

from __future__ import annotations

import subprocess
import sys

from booksite import ROOT

LINTED = ["book_src", "tests", "tools", "benchmarks/bench_book.py"]


def test_ruff_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *LINTED],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
