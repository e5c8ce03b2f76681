"""Benchmark the book build: clean build, no-change rebuild, per-chapter execution time,
per-page weight.

    python benchmarks/bench_book.py [--rebuilds 3] [--json PATH]

Works on a temporary copy of the committed files (git ls-files), so the working tree and
its _build/ are left alone; the fetched web assets (_webassets/, `make assets`) are
linked, not copied. Each build runs tools/build_book.py, the command `make book` runs:

- clean build: `--execute cache` on an empty _build/ (what `make book` does the first
  time; every chapter executes; `--execute force`, as in `make test`, costs the same on a
  clean tree);
- no-change rebuild: the same command again, `--rebuilds` times (median reported);
- per-chapter execution time: myst-nb's own "Executed notebook in N seconds" line;
- per-page weight: the page's HTML, which holds the embedded widget state, plus the
  images only that page uses (_images/); the shared web assets (_static/) are excluded.

Targets on the 2-core reference machine: clean build <= 120 s, no-change rebuild <= 20 s,
every page <= 1.5 MB. Progress goes to stderr, a Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = [sys.executable, str(ROOT / "tools" / "build_book.py"), "--execute", "cache"]
TARGETS = {"clean_build_s": 120.0, "rebuild_s": 20.0, "page_bytes": 1.5e6}
EXECUTED_RE = re.compile(r"^(?P<path>\S+\.ipynb): Executed notebook in (?P<s>[\d.]+) seconds",
                         re.M)
IMG_RE = re.compile(r"""<img\b[^>]*\bsrc=["']([^"']+)""", re.I)
STATE_RE = re.compile(
    r'<script type="application/vnd\.jupyter\.widget-state\+json">(.*?)</script>', re.S)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def copy_book(destination: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    webassets = ROOT / "_webassets"
    if not webassets.is_dir():
        sys.exit("no _webassets/: run `make assets` first")
    (destination / "_webassets").symlink_to(webassets)
    return destination


def timed_build(root: Path) -> tuple[float, str]:
    """Time one build. A build that only warned still wrote the site and is measured (with a
    note on stderr); one that wrote no site stops the benchmark."""
    start = time.perf_counter()
    result = subprocess.run([*BUILD, "--root", str(root)], cwd=root, capture_output=True,
                            text=True, env=dict(os.environ))
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        problems = [line for line in result.stdout.splitlines()
                    if "WARNING" in line and "IPKernelApp" not in line]
        if not (root / "_build" / "html" / "index.html").exists():
            sys.exit(f"build failed:\n{result.stdout[-4000:]}{result.stderr[-2000:]}")
        log("  note: the build reported problems (measured anyway):\n    "
            + "\n    ".join(problems[:10]))
    return elapsed, result.stdout


def page_weights(root: Path) -> list[dict]:
    from sphinx_external_toc.parsing import parse_toc_yaml

    html_dir = root / "_build" / "html"
    rows = []
    for docname in parse_toc_yaml(root / "_toc.yml"):
        page = html_dir / f"{docname}.html"
        text = page.read_text(encoding="utf8")
        images = {(page.parent / src).resolve() for src in IMG_RE.findall(text)
                  if not src.startswith(("http:", "https:", "data:"))}
        own = [p for p in images if "_static" not in p.parts and p.is_file()]
        image_bytes = sum(p.stat().st_size for p in own)
        state_bytes = sum(len(m.encode()) for m in STATE_RE.findall(text))
        html_bytes = page.stat().st_size
        rows.append({"page": docname, "html_bytes": html_bytes,
                     "widget_state_bytes": state_bytes, "image_bytes": image_bytes,
                     "total_bytes": html_bytes + image_bytes})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuilds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-book-") as tmp:
        root = copy_book(Path(tmp))
        log(f"clean build of a copy in {root} ...")
        clean_s, output = timed_build(root)
        log(f"  {clean_s:.1f} s")
        chapters = {Path(m["path"]).relative_to(root).as_posix(): float(m["s"])
                    for m in EXECUTED_RE.finditer(output)}
        rebuilds = []
        for i in range(args.rebuilds):
            seconds, _ = timed_build(root)
            rebuilds.append(seconds)
            log(f"no-change rebuild {i + 1}/{args.rebuilds}: {seconds:.1f} s")
        pages = page_weights(root)

    results = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "clean_build_s": round(clean_s, 1),
        "rebuild_s": {"median": round(statistics.median(rebuilds), 1),
                      "all": [round(s, 1) for s in rebuilds]},
        "chapter_execution_s": chapters,
        "pages": pages,
        "targets": TARGETS,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))

    def ok(value: float, target: float) -> str:
        return "ok" if value <= target else "OVER TARGET"

    rebuild = results["rebuild_s"]["median"]
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| clean build (`make book` on a fresh tree) | {clean_s:.1f} s | "
          f"≤ 120 s, {ok(clean_s, 120)} |")
    print(f"| no-change rebuild (median of {args.rebuilds}) | {rebuild:.1f} s | "
          f"≤ 20 s, {ok(rebuild, 20)} |")
    for chapter, seconds in chapters.items():
        print(f"| execution of `{chapter}` | {seconds:.1f} s | |")
    for row in pages:
        print(f"| page `{row['page']}.html`: HTML {row['html_bytes'] / 1e3:.0f} kB "
              f"(widget state {row['widget_state_bytes'] / 1e3:.0f} kB) + images "
              f"{row['image_bytes'] / 1e3:.0f} kB | {row['total_bytes'] / 1e6:.2f} MB | "
              f"≤ 1.5 MB, {ok(row['total_bytes'], 1.5e6)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
