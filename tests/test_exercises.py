"""The exercises' checks, shown to work: each chapter runs once with every answer cell
replaced by the solution from its folded block (every check must print ✓), and once with
every answer replaced by a known wrong answer (every check must fail). The chapters as
committed, with nothing answered, are run by the book build; test_book checks that their
pages say "not answered yet" and never ✓.

An exercise is an answer cell (tag ``exercise-answer``, the wrong answer in its metadata
under ``book.wrong_answer``), a check cell (tag ``exercise-check``) and a folded solution
(a markdown cell tagged ``exercise-solution`` with one ```python block).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from test_notebooks import BOOK_ROOT, CELL_TIMEOUT, CHAPTERS

CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def tagged(cell, tag: str) -> bool:
    return tag in cell.metadata.get("tags", [])


def exercises(nb) -> list[dict]:
    """For each answer cell: its index, its check cell's index, the solution, the wrong
    answer."""
    found = []
    for i, cell in enumerate(nb.cells):
        if not tagged(cell, "exercise-answer"):
            continue
        later = nb.cells[i + 1:]
        check = next(i + 1 + k for k, c in enumerate(later) if tagged(c, "exercise-check"))
        solution = next(c for c in later if tagged(c, "exercise-solution"))
        code = CODE_BLOCK.findall(solution.source)
        assert len(code) == 1, f"cell {i}: the solution needs exactly one python block"
        found.append({"answer": i, "check": check, "solution": code[0],
                      "wrong": cell.metadata["book"]["wrong_answer"]})
    return found


WITH_EXERCISES = [p for p in CHAPTERS if exercises(nbformat.read(p, as_version=4))]


def run(nb, path: Path):
    env = {k: v for k, v in os.environ.items() if k != "LAYERS_BLOCKS_STATIC"}
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            allow_errors=True,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=env)
    return nb


def text_of(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") == "error":
            parts.append(f"{out.get('ename')}: {out.get('evalue')}")
    return "".join(parts)


def errors(cell) -> list[str]:
    return [f"{o.get('ename')}: {o.get('evalue')}" for o in cell.get("outputs", [])
            if o.get("output_type") == "error"]


def run_with_answers(path: Path, which: str):
    """The chapter executed with every exercise's answer cell replaced by its
    ``which`` ("solution" or "wrong"), and the exercises found in it."""
    nb = nbformat.read(path, as_version=4)
    found = exercises(nb)
    for e in found:
        nb.cells[e["answer"]].source = e[which]
    run(nb, path)
    return nb, found


def test_every_chapter_has_checked_exercises() -> None:
    assert WITH_EXERCISES == CHAPTERS
    for path in CHAPTERS:
        nb = nbformat.read(path, as_version=4)
        found = exercises(nb)
        checks = [i for i, c in enumerate(nb.cells) if tagged(c, "exercise-check")]
        assert [e["check"] for e in found] == checks, f"{path.name}: one check per answer"
        for e in found:
            assert e["answer"] < e["check"], path.name


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=[p.name for p in WITH_EXERCISES])
def test_checks_pass_with_the_solutions(path: Path) -> None:
    solved, found = run_with_answers(path, "solution")
    problems = []
    for index, cell in enumerate(solved.cells):
        if cell.cell_type == "code" and errors(cell) and not tagged(cell, "raises-exception"):
            problems.append(f"cell {index} raised {errors(cell)}")
    for e in found:
        out = text_of(solved.cells[e["check"]])
        if "✓ Exercise" not in out:
            problems.append(f"check cell {e['check']} did not pass: {out!r}")
    assert not problems, f"{path.relative_to(BOOK_ROOT)} with the solutions:\n  " + \
        "\n  ".join(problems)


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=[p.name for p in WITH_EXERCISES])
def test_checks_catch_the_wrong_answers(path: Path) -> None:
    wrong, found = run_with_answers(path, "wrong")
    problems = []
    for e in found:
        answer, check = wrong.cells[e["answer"]], wrong.cells[e["check"]]
        if errors(answer):
            problems.append(f"the wrong answer in cell {e['answer']} itself raised "
                            f"{errors(answer)}: it should run and be caught by the check")
        if not errors(check) or "✓" in text_of(check) or "not answered" in text_of(check):
            problems.append(f"check cell {e['check']} let a wrong answer through: "
                            f"{text_of(check)!r}")
    assert not problems, f"{path.relative_to(BOOK_ROOT)} with wrong answers:\n  " + \
        "\n  ".join(problems)
