"""Command line: trace a model from your own file and print the steps.

    python -m book_src trace path/to/file.py:make_model --input 2,20
    python -m book_src trace models.py:MLP --input 2,20 --view all
    python -m book_src trace models.py:net --input 2,20 --input 2 --summary

``make_model`` may be a function or class (called with no arguments) or a module
instance. Each ``--input`` is the shape of one random input tensor.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys


class UsageError(Exception):
    """A bad path, name or shape: reported as one line, exit status 2."""


def parse_shape(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",")]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise UsageError(f"--input {text!r}: expected comma-separated positive integers, "
                         "e.g. --input 2,20")
    return shape


def load_model(target: str):
    path, sep, name = target.rpartition(":")
    if not sep or not path or not name:
        raise UsageError(f"{target!r}: expected FILE.py:NAME, e.g. models.py:make_model")
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file")
    spec = importlib.util.spec_from_file_location("_traced_user_module", path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise UsageError(f"{path}: importing it raised {type(exc).__name__}: {exc}") from exc
    if not hasattr(module, name):
        raise UsageError(f"{path} has no attribute {name!r}")
    from torch import nn

    obj = getattr(module, name)
    if isinstance(obj, nn.Module):
        return obj
    if callable(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise UsageError(f"{name}() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, nn.Module):
        raise UsageError(f"{name} is of type {type(obj).__name__}, not an nn.Module "
                         "(or a function or class returning one)")
    return obj


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m book_src",
                                     description="Trace a PyTorch forward pass step by step.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("trace", help="trace FILE.py:NAME on random inputs and print the steps")
    p.add_argument("target", help="FILE.py:NAME — a module, or a function/class returning one")
    p.add_argument("--input", action="append", required=True, metavar="SHAPE",
                   help="shape of one random input, e.g. 2,20 (repeat for several inputs)")
    p.add_argument("--view", choices=["default", "all", "modules"], default="default")
    p.add_argument("--summary", action="store_true", help="print a per-module summary too")
    p.add_argument("--seed", type=int, default=0)
    argv = list(sys.argv[1:] if argv is None else argv)
    # "--input -2,20" would be taken for an option: keep such a value with its flag, so
    # that the shape check below names it
    for i in range(len(argv) - 1, 0, -1):
        if argv[i - 1] == "--input" and argv[i].startswith("-"):
            argv[i - 1:i + 1] = [f"--input={argv[i]}"]
    args = parser.parse_args(argv)
    try:
        shapes = [parse_shape(s) for s in args.input]
        model = load_model(args.target)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import torch

    from .tracing import trace

    torch.manual_seed(args.seed)
    inputs = [torch.randn(*s) for s in shapes]
    t = trace(model, *inputs)
    print(t.to_text(args.view, width=None))  # a terminal wraps or scrolls by itself
    if args.summary:
        print()
        print(t.summary())
    return 1 if t.error is not None else 0


if __name__ == "__main__":
    sys.exit(main())
