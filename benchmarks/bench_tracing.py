#!/usr/bin/env python
"""Benchmark ``book_src.trace`` against a plain forward pass and other tracing tools.

For each channel count the model (``models.resnet``: stem + 75 residual blocks, eval
mode) is built once and warmed up; then ``--repeats`` interleaved rounds run. In every
round each measured callable (plain forward, plain forward under ``torch.no_grad()`` as a
reference, and each tool) is timed once with ``time.perf_counter``, in a shuffled order,
after a ``gc.collect()`` outside the timed region. Reported per tool: the median time, the
ratio median(tool) / median(plain forward), and the median of the per-round ratios
tool / plain of the same round.

Everything runs the way a reader would call it: the model in eval mode, autograd
enabled. (torchinfo.summary and torchview.draw_graph wrap the forward in
``torch.no_grad()`` themselves; the no-grad plain forward is printed as a reference.)

Afterwards the memory a ``Trace`` retains is measured with tracemalloc, and the Trace is
walked with ``gc.get_referents`` to list every ``torch.Tensor`` reachable from it.

    python benchmarks/bench_tracing.py                       # 64 and 8 channels, 11 rounds
    python benchmarks/bench_tracing.py --channels 8 --repeats 21 --tools ours,torchinfo
    python benchmarks/bench_tracing.py --json bench.json

Benchmark-only dependencies: benchmarks/requirements-bench.txt. A tool that cannot be
imported or fails is reported as skipped, with the reason; no number is made up for it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
import tracemalloc
import types
import weakref
from importlib import metadata

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import example_input, resnet  # noqa: E402

from book_src import trace  # noqa: E402

ALL_TOOLS = ["ours", "ours-modules", "torchinfo", "torchview", "torchlens"]
TARGETS = {64: 1.15, 8: 1.8}  # max ratio to a plain forward, ours with ops and lines on
TARGET_BYTES_PER_STEP = 2048
NOISE_LIMIT = 1.25  # median/min of the plain forward or of ours above this: a busy machine
BLOCKS = 75
# glibc adapts its mmap and trim thresholds to what a process frees, so the 75 MiB of
# activations a forward with autograd keeps (64 channels) are faulted in afresh on some
# calls and not on others, depending on what ran before: the plain forward then takes
# either of two times (here 63 or 85 ms). Fixed thresholds keep every call on the fast
# one. --steady-malloc re-runs the script with them; the default is the reader's setting.
STEADY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "4194304", "MALLOC_TRIM_THRESHOLD_": "1073741824"}


class Skip(Exception):
    """A tool that cannot be run here; the message says why."""


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


# ------------------------------------------------------------------------------ tools
#
# Each factory returns (call, description, count) where call(net, X) runs the tool once
# and returns what it produced, and count(result) says how much it recorded.


def _tool_ours():
    def count(t):
        ops = sum(1 for s in t.steps if s.kind == "op")
        return f"{len(t.steps)} steps ({ops} ops, {len(t.steps) - ops} module calls)"

    return (lambda net, X: trace(net, X)), "book_src.trace(net, X)", count


def _tool_ours_modules():
    def count(t):
        return f"{len(t.steps)} steps (module calls only)"

    return (lambda net, X: trace(net, X, ops=False)), "book_src.trace(net, X, ops=False)", count


def _tool_torchinfo():
    try:
        import torchinfo
    except Exception as exc:
        raise Skip(f"cannot import torchinfo: {exc!r}") from exc
    v = _version("torchinfo")
    if v != "1.8.0":
        raise Skip(f"torchinfo {v} installed, the benchmark compares against 1.8.0")

    def call(net, X):
        return torchinfo.summary(net, input_data=X, verbose=0)

    def count(s):
        return f"{len(s.summary_list)} layer rows (modules only)"

    return call, "torchinfo.summary(net, input_data=X, verbose=0)", count


def _tool_torchview():
    try:
        import torchview
    except Exception as exc:
        raise Skip(f"cannot import torchview: {exc!r}") from exc

    # draw_graph builds a graphviz.Digraph (its dot *source*, in Python) but only calls
    # the `dot` binary when save_graph=True (the default is False): no rendering here.
    def call(net, X):
        return torchview.draw_graph(net, input_data=X, save_graph=False)

    def count(g):
        return (f"{len(g.node_set)} graph nodes, {len(g.edge_list)} edges, "
                f"{len(g.visual_graph.source)} chars of dot source (not rendered)")

    return call, "torchview.draw_graph(net, input_data=X) (graph only, save_graph=False)", count


def _tool_torchlens():
    try:
        import torchlens
        from torchlens.options import CaptureOptions
    except Exception as exc:
        raise Skip(f"cannot import torchlens: {exc!r}") from exc

    # torchlens >= 2.0: torchlens.trace (log_forward_pass was removed). The cheapest
    # capture that still logs every op: save=None (metadata only, no activations) and
    # two optional post-passes off. unwrap_when_done=True matters: by default torchlens
    # leaves every torch function replaced by a Python wrapper after its first call,
    # which slows down every *other* measurement in the same process afterwards.
    opts = CaptureOptions(unwrap_when_done=True, recurrence_detection=False,
                          compute_input_output_distances=False)

    def call(net, X):
        return torchlens.trace(net, X, save=None, capture=opts)

    def count(t):
        return f"{t.num_ops} ops, {len(t.layer_list)} layer entries (incl. input/buffers)"

    return call, ("torchlens.trace(net, X, save=None, capture=CaptureOptions("
                  "unwrap_when_done=True, recurrence_detection=False, "
                  "compute_input_output_distances=False))"), count


FACTORIES = {
    "ours": _tool_ours,
    "ours-modules": _tool_ours_modules,
    "torchinfo": _tool_torchinfo,
    "torchview": _tool_torchview,
    "torchlens": _tool_torchlens,
}

TOOL_DISTS = {"ours": "book_src", "ours-modules": "book_src",
              "torchinfo": "torchinfo", "torchview": "torchview", "torchlens": "torchlens"}


def _git_state() -> str:
    """The commit the tracer was measured at, and whether book_src/ had local changes."""
    import subprocess

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "book_src"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return "unknown (no git)"
    return head + (" with local changes in book_src/" if dirty else "")


def _torch_fingerprint():
    """Identity of a few torch callables: a tool that leaves torch patched changes it."""
    import torch.nn.functional as F

    return (torch.relu, torch.conv2d, torch.batch_norm, F.conv2d, F.batch_norm, F.relu,
            torch.Tensor.__add__, torch.Tensor.relu)


# --------------------------------------------------------------------------- timing


def _timed(fn):
    gc.collect()
    t0 = time.perf_counter()
    result = fn()
    t1 = time.perf_counter()
    del result  # freed outside the timed region
    return t1 - t0


def bench_channels(channels, tool_names, repeats, warmup, seed, log):
    torch.manual_seed(0)
    net = resnet(channels, blocks=BLOCKS)
    X = example_input()
    assert not net.training

    def plain():
        return net(X)

    def plain_nograd():
        with torch.no_grad():
            return net(X)

    calls = {"plain": plain, "plain (no_grad)": plain_nograd}
    info = {}
    skipped = {}
    warnings = []
    fingerprint = _torch_fingerprint()
    for name in tool_names:
        try:
            call, desc, count = FACTORIES[name]()
            result = call(net, X)  # first call: also checks that it works here
            recorded = count(result)
            del result
            if _torch_fingerprint() != fingerprint:
                raise Skip("left torch functions replaced after its call (would slow down "
                           "every other measurement)")
        except Skip as exc:
            skipped[name] = str(exc)
            continue
        except Exception as exc:
            skipped[name] = f"failed: {type(exc).__name__}: {exc}"
            continue
        calls[name] = (lambda c=call: c(net, X))
        info[name] = {"call": desc, "recorded": recorded,
                      "version": _version(TOOL_DISTS[name])}
    for name, reason in skipped.items():
        log(f"  [{channels} ch] SKIPPED {name}: {reason}")

    for _ in range(warmup):
        for name in list(calls):
            try:
                calls[name]()
            except Exception as exc:
                if name.startswith("plain"):
                    raise
                skipped[name] = f"failed in warm-up: {type(exc).__name__}: {exc}"
                log(f"  [{channels} ch] SKIPPED {name}: {skipped[name]}")
                del calls[name]
                info.pop(name, None)

    times = {name: [] for name in calls}
    rng = random.Random(seed + channels)
    order = list(calls)
    orders = []
    for r in range(repeats):
        rng.shuffle(order)
        orders.append([n for n in order if n in calls])
        for name in order:
            if name not in calls:
                continue
            try:
                times[name].append(_timed(calls[name]))
            except Exception as exc:  # a tool that fails mid-run is dropped, not faked
                skipped[name] = f"failed in round {r + 1}: {type(exc).__name__}: {exc}"
                log(f"  [{channels} ch] SKIPPED {name}: {skipped[name]}")
                del calls[name], times[name]
                info.pop(name, None)
        log(f"  [{channels} ch] round {r + 1}/{repeats}: "
            + ", ".join(f"{n} {times[n][-1] * 1e3:.0f} ms" for n in calls if times[n]))

    if _torch_fingerprint() != fingerprint:
        log(f"  [{channels} ch] WARNING: torch functions were replaced during the rounds")
        warnings.append("torch functions were replaced during the timed rounds: "
                        "every number of this channel count is suspect")

    plain_med = statistics.median(times["plain"])
    nograd_med = statistics.median(times["plain (no_grad)"])
    rows = {}
    for name, ts in times.items():
        if len(ts) != repeats:
            continue
        med = statistics.median(ts)
        per_round = [t / p for t, p in zip(ts, times["plain"], strict=True)]
        rows[name] = {
            "median_s": med,
            "min_s": min(ts),
            "max_s": max(ts),
            "ratio_of_medians": med / plain_med,
            "median_round_ratio": statistics.median(per_round),
            "ratio_to_nograd": med / nograd_med,
            "times_s": ts,
            "round_ratios": per_round,
            **info.get(name, {}),
        }
    return ({"channels": channels, "rows": rows, "skipped": skipped, "warnings": warnings,
             "round_orders": orders},
            net, X)


# --------------------------------------------------------------------------- memory

_NO_DESCEND = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
               types.MethodType, types.CodeType, types.FrameType)


def tensors_reachable(root):
    """Every torch.Tensor reachable from ``root`` through gc.get_referents. Classes,
    modules, functions and code are not descended into: through them everything in the
    interpreter is reachable."""
    found = []
    seen = {id(root)}
    stack = [root]
    visited = 0
    while stack:
        obj = stack.pop()
        visited += 1
        if isinstance(obj, torch.Tensor):
            found.append(obj)
            continue
        for ref in gc.get_referents(obj):
            if id(ref) in seen or isinstance(ref, _NO_DESCEND):
                continue
            seen.add(id(ref))
            stack.append(ref)
    return found, visited


def autograd_saved_bytes(tensor, exclude_ptrs):
    """Bytes of the distinct storages that ``tensor``'s autograd graph saved for the
    backward pass (activations), not counting the storages in ``exclude_ptrs``."""
    storages = {}
    seen = set()
    keep = []
    stack = [tensor.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        keep.append(fn)
        for attr in dir(fn):
            if not attr.startswith("_saved_"):
                continue
            try:
                value = getattr(fn, attr)
            except Exception:
                continue
            for v in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(v, torch.Tensor):
                    st = v.untyped_storage()
                    if st.data_ptr() not in exclude_ptrs:
                        storages[st.data_ptr()] = st.nbytes()
        stack.extend(nf for nf, _ in fn.next_functions)
    return sum(storages.values()), len(storages)


def measure_memory(net, X, ops):
    param_ptrs = {p.untyped_storage().data_ptr() for p in net.parameters()}
    param_ptrs |= {b.untyped_storage().data_ptr() for b in net.buffers()}
    trace(net, X, ops=ops)  # fill the tracer's module-level caches first
    gc.collect()
    tracemalloc.start()
    try:
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        t = trace(net, X, ops=ops)
        gc.collect()
        with_output = tracemalloc.get_traced_memory()[0] - base
        out_ref = weakref.ref(t.output)
        out_alive_with_trace = out_ref() is not None
        t.output = None  # what a reader's `del out` would do, if the Trace did not hold it
        gc.collect()
        steps_only = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    out_dead_after_drop = out_ref() is None
    found_after, visited = tensors_reachable(t)

    # A second trace, to look at what Trace.output keeps alive.
    t2 = trace(net, X, ops=ops)
    found_with = tensors_reachable(t2)[0]
    attrs_with = sorted({a for a, v in vars(t2).items() if tensors_reachable(v)[0]})
    saved_bytes, saved_n = (autograd_saved_bytes(t2.output, param_ptrs)
                            if t2.output is not None and t2.output.grad_fn is not None
                            else (0, 0))
    n = len(t.steps)
    return {
        "ops": ops,
        "steps": n,
        "python_bytes_with_output": with_output,
        "python_bytes_steps_only": steps_only,
        "bytes_per_step": steps_only / n,
        "bytes_per_step_with_output": with_output / n,
        "output_alive_while_trace_lives": out_alive_with_trace,
        "output_freed_after_trace_output_dropped": out_dead_after_drop,
        "tensors_reachable_after_output_dropped": len(found_after),
        "objects_walked": visited,
        "tensors_reachable_with_output": len(found_with),
        "trace_attributes_holding_tensors": attrs_with,
        "autograd_saved_bytes_via_output": saved_bytes,
        "autograd_saved_tensors_via_output": saved_n,
    }


# --------------------------------------------------------------------------- output


def _fmt_table(result):
    rows = result["rows"]
    head = (f"{'tool':<17}{'median ms':>11}{'min ms':>9}{'max ms':>9}"
            f"{'× plain':>9}{'med(round ×)':>14}{'× no_grad':>11}")
    lines = [head, "-" * len(head)]
    order = ["plain", "plain (no_grad)"] + [n for n in ALL_TOOLS if n in rows]
    for name in order:
        r = rows[name]
        lines.append(f"{name:<17}{r['median_s'] * 1e3:>11.1f}{r['min_s'] * 1e3:>9.1f}"
                     f"{r['max_s'] * 1e3:>9.1f}{r['ratio_of_medians']:>8.2f}×"
                     f"{r['median_round_ratio']:>13.2f}×{r['ratio_to_nograd']:>10.2f}×")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", type=int, nargs="+", default=[64, 8])
    ap.add_argument("--repeats", type=int, default=11, help="interleaved rounds (default 11)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    ap.add_argument("--tools", default=",".join(ALL_TOOLS),
                    help=f"comma-separated subset of {','.join(ALL_TOOLS)}")
    ap.add_argument("--seed", type=int, default=0, help="seed of the per-round order")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads(N) first (default: torch's own default)")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory checks")
    ap.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    ap.add_argument("--steady-malloc", action="store_true",
                    help="run with glibc's malloc thresholds fixed (see STEADY_MALLOC)")
    args = ap.parse_args(argv)
    if args.steady_malloc and any(os.environ.get(k) != v for k, v in STEADY_MALLOC.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **STEADY_MALLOC})
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in tools if t not in FACTORIES]
    if unknown:
        ap.error(f"unknown tools {unknown}; known: {ALL_TOOLS}")
    if args.repeats < 5:
        ap.error("--repeats must be at least 5")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "versions": {d: _version(d) for d in ("book_src", "torchinfo", "torchview",
                                              "torchlens", "graphviz")},
        "loadavg_start": os.getloadavg(),
        "commit": _git_state(),
        "malloc": {k: os.environ.get(k) for k in STEADY_MALLOC},
    }
    print("bench_tracing: book_src.trace vs a plain forward")
    print(f"model: benchmarks/models.py resnet(C, blocks={BLOCKS}), input (1, 3, 32, 32), "
          "float32, CPU")
    print("mode: model.eval(), autograd ENABLED (no torch.no_grad()) for every call; "
          "torchinfo.summary and torchview.draw_graph enter torch.no_grad() internally, "
          "so 'plain (no_grad)' is shown as a reference (× no_grad column).")
    print(f"rounds: {args.repeats} interleaved (order shuffled each round, seed {args.seed}), "
          f"{args.warmup} warm-up; gc.collect() before each timed call, outside the timer")
    threads_how = "set by --threads" if args.threads is not None else "torch default"
    print(f"torch {env['torch']}, {env['torch_threads']} threads ({threads_how}), "
          f"{env['cpus']} CPUs, "
          f"Python {env['python']}; load average at start {env['loadavg_start'][0]:.2f}")
    steady = all(env["malloc"][k] == v for k, v in STEADY_MALLOC.items())
    print("malloc: " + ("thresholds fixed (--steady-malloc): " + ", ".join(
        f"{k}={v}" for k, v in STEADY_MALLOC.items()) if steady else "glibc's adaptive "
        "thresholds (the default; --steady-malloc fixes them)"))
    print("versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
          + f"; repository at {env['commit']}")
    print()

    results = []
    for channels in args.channels:
        log(f"[{channels} channels] building model, warming up ...")
        res, net, X = bench_channels(channels, tools, args.repeats, args.warmup, args.seed, log)
        if not args.no_memory:
            res["memory"] = {}
            for name, ops in (("ours", True), ("ours-modules", False)):
                if name in tools:
                    res["memory"][name] = measure_memory(net, X, ops)
        results.append(res)
        del net, X
        gc.collect()

    env["loadavg_end"] = os.getloadavg()
    verdicts = []
    for res in results:
        c = res["channels"]
        print(f"=== {c} channels ===")
        print(_fmt_table(res))
        for name in ALL_TOOLS:
            if name in res["rows"]:
                r = res["rows"][name]
                print(f"  {name}: {r['call']}  [{r['recorded']}]")
        for name, why in res["skipped"].items():
            print(f"  {name}: SKIPPED - {why}")
        for w in res["warnings"]:
            print(f"  WARNING: {w}")
        for name, m in res.get("memory", {}).items():
            print(f"  memory, {name}: {m['steps']} steps, "
                  f"{m['python_bytes_steps_only'] / 1024:.0f} KiB retained "
                  f"= {m['bytes_per_step']:.0f} B/step (tracemalloc, Trace without .output; "
                  f"{m['bytes_per_step_with_output']:.0f} B/step with it)")
            print(f"    tensors reachable from the Trace (gc.get_referents walk, "
                  f"{m['objects_walked']} objects): "
                  f"{m['tensors_reachable_with_output']} as returned "
                  f"(in: {', '.join(m['trace_attributes_holding_tensors']) or '-'}), "
                  f"{m['tensors_reachable_after_output_dropped']} after "
                  "`t.output = None`")
            print(f"    output tensor alive while the Trace lives: "
                  f"{'yes' if m['output_alive_while_trace_lives'] else 'no'}; "
                  f"freed once Trace.output is dropped: "
                  f"{'yes' if m['output_freed_after_trace_output_dropped'] else 'NO'}")
            print(f"    autograd graph of Trace.output (grad enabled) keeps "
                  f"{m['autograd_saved_bytes_via_output'] / 2**20:.1f} MiB of saved "
                  f"activations in {m['autograd_saved_tensors_via_output']} storages alive")
        print()
        if "ours" in res["rows"] and c in TARGETS:
            ratio = res["rows"]["ours"]["ratio_of_medians"]
            rr = res["rows"]["ours"]["median_round_ratio"]
            # On a busy machine the medians themselves are inflated by other processes;
            # a ratio of two such medians says nothing about the target either way.
            spread = max(res["rows"][n]["median_s"] / res["rows"][n]["min_s"]
                         for n in ("plain", "ours"))
            ok = None if spread > NOISE_LIMIT else ratio <= TARGETS[c]
            note = (f" - INCONCLUSIVE: median/min of plain or ours is {spread:.2f} "
                    f"(> {NOISE_LIMIT}), the machine was busy; rerun" if ok is None else "")
            verdicts.append((f"ours ≤ {TARGETS[c]}× plain at {c} ch (ops + lines on)", ok,
                             f"{ratio:.2f}× (median of round ratios {rr:.2f}×){note}"))
        m = res.get("memory", {}).get("ours")
        if m:
            verdicts.append((f"ours ≤ {TARGET_BYTES_PER_STEP} B/step at {c} ch",
                             m["bytes_per_step"] <= TARGET_BYTES_PER_STEP,
                             f"{m['bytes_per_step']:.0f} B/step"))
            verdicts.append((f"no tensor in the steps/modules/sources at {c} ch",
                             m["tensors_reachable_after_output_dropped"] == 0
                             and m["output_freed_after_trace_output_dropped"],
                             f"{m['tensors_reachable_after_output_dropped']} tensors"))
            verdicts.append((f"no tensor data retained by the Trace as returned at {c} ch",
                             m["tensors_reachable_with_output"] == 0,
                             f"{m['tensors_reachable_with_output']} tensor(s) via "
                             f"{', '.join(m['trace_attributes_holding_tensors']) or '-'}, "
                             f"{m['autograd_saved_bytes_via_output'] / 2**20:.1f} MiB autograd "
                             "activations"))
    print("=== targets ===")
    for what, ok, detail in verdicts:
        label = "INCONCLUSIVE" if ok is None else ("MET" if ok else "NOT MET")
        print(f"  {label:<12} {what}: {detail}")
    la0, la1 = env["loadavg_start"][0], env["loadavg_end"][0]
    print(f"\nload average (1 min): {la0:.2f} at start, {la1:.2f} at end "
          f"({env['cpus']} CPUs): timings are from a shared machine if these exceed ~0.5")

    if args.json:
        payload = {"argv": sys.argv, "repeats": args.repeats, "warmup": args.warmup,
                   "mode": "eval, autograd enabled", "env": env, "results": results,
                   "targets": [{"target": w, "met": ok, "detail": d}
                               for w, ok, d in verdicts]}
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=1)
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
