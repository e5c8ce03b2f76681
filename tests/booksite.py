"""Helpers of the book-level tests: where things are, how the book is built, a local
HTTP server that records the errors it sends."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("LAYERS_BLOCKS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def toc_docnames(root: Path = ROOT) -> list[str]:
    """Every page the table of contents lists, root first, in reading order."""
    from sphinx_external_toc.parsing import parse_toc_yaml

    return list(parse_toc_yaml(root / "_toc.yml"))


def run_build(root: Path, *extra: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Build the book at `root` the way `make book` does (tools/build_book.py)."""
    command = [sys.executable, str(ROOT / "tools" / "build_book.py"), "--root", str(root),
               *extra]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=timeout)


class _Handler(http.server.SimpleHTTPRequestHandler):
    errors: list[str]  # set per server

    def log_message(self, format: str, *args) -> None:
        pass

    def log_request(self, code="-", size="-") -> None:
        try:
            status = int(code)
        except (TypeError, ValueError):
            return
        if status >= 400:
            self.errors.append(f"{status} {self.path}")


class Server:
    """http.server on 127.0.0.1, on a free port, in a thread; records 4xx/5xx it sends.

    The browser does not report every request to Playwright (the automatic /favicon.ico
    request, for one), so the server's own record is the complete list of HTTP errors.
    """

    def __init__(self, directory: Path):
        self.errors: list[str] = []
        handler = functools.partial(type("Handler", (_Handler,), {"errors": self.errors}),
                                    directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.host, self.port = self.httpd.server_address[:2]
        self.url = f"http://{self.host}:{self.port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
