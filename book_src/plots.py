"""Matplotlib figures of a model or a :class:`~book_src.tracing.Trace`.

Every function returns a :class:`BookFigure` (a plain ``matplotlib.figure.Figure`` that
also knows how to show itself in Jupyter), sized for the book's page width. Figures are
made without pyplot, so nothing leaks into pyplot's list of open figures, and the book's
style is applied inside each function with ``matplotlib.rc_context``: importing this
module changes no global state.

Why the subclass: IPython draws a ``Figure`` as an image only once matplotlib's inline
backend has been activated (``%matplotlib inline`` or any pyplot call); before that, a
bare ``Figure`` shows as ``<Figure size 700x400 with 1 Axes>``. ``BookFigure`` adds
``_repr_png_``, so a figure returned by the last line of a cell renders inline in
JupyterLab, Notebook 7 and myst-nb pages either way. In a script, call
``fig.savefig("name.png")``. A ``BookFigure`` draws with Agg (it is shown as an image in
any case), which also lets the functions here measure their text and keep labels from
overlapping each other or the figure's edge.
"""

from __future__ import annotations

import functools
import io
import math
import re
import textwrap

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, Rectangle
from matplotlib.ticker import MaxNLocator
from torch import nn
from torch.nn import functional as F

from .tracing import ModuleInfo, Trace, module_table

__all__ = ["BookFigure", "PALETTE", "module_tree", "shape_flow", "activations", "weights",
           "loop_condition"]

BOOK_WIDTH = 7.0  # inches; at 100 dpi a figure is 700 px wide, the book's text width

#: The one small palette of every figure: Okabe-Ito hues (colour-blind safe) and one red.
PALETTE = {
    "blue": "#0072B2", "orange": "#E69F00", "green": "#009E73", "red": "#D62728",
    "grey": "#6E6E6E", "light": "#E3EEF7", "error": "#FBE0E0", "focus": "#FFF0CC",
}
_STYLE = {
    "figure.dpi": 100, "savefig.dpi": 100, "font.size": 9, "axes.titlesize": 10,
    "axes.labelsize": 9, "figure.titlesize": 11, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "legend.fontsize": 8, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "hatch.linewidth": 1.0,
    "axes.prop_cycle": matplotlib.cycler(color=[PALETTE[c] for c in
                                                ("blue", "orange", "green", "red")]),
}


class BookFigure(Figure):
    """A ``Figure`` that renders itself as PNG in Jupyter, with or without pyplot."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        FigureCanvasAgg(self)  # a renderer to measure text with; pyplot stays unloaded

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png")
        return buf.getvalue()


def _styled(func):
    """Run ``func`` with the book's rcParams, restoring the caller's afterwards."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(_STYLE):
            return func(*args, **kwargs)

    return wrapper


def _canvas(width: float, height: float) -> tuple[Figure, object]:
    """A figure with one invisible axes whose data units are inches, y pointing down."""
    fig = BookFigure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()
    return fig, ax


def _fmt_shape(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: max(n - 1, 1)] + "…"


def _shorten(text: str, n: int, keep: str) -> str:
    """``text`` in ``n`` characters with "…": its start (``keep="start"``) or both ends."""
    if len(text) <= n:
        return text
    if keep == "start" or n < 4:
        return text[: max(n - 1, 1)] + "…"
    tail = (n - 1) // 2
    return text[: n - 1 - tail] + "…" + text[len(text) - tail:]


def _fit(renderer, text: str, max_px: float, size: float, *, weight: str = "normal",
         min_size: float = 6.5, keep: str = "start") -> tuple[str, float]:
    """``text`` and a font size at which each of its lines is at most ``max_px`` wide:
    the font shrinks in half points down to ``min_size``, then lines that are still too
    wide are shortened with "…" (see :func:`_shorten`). Measured with ``renderer``."""

    def width(line, sz):
        props = FontProperties(size=sz, weight=weight)
        return renderer.get_text_width_height_descent(line, props, ismath=False)[0]

    lines = text.split("\n")
    while size > min_size and max(width(ln, size) for ln in lines) > max_px:
        size = max(min_size, size - 0.5)
    fitted = []
    for line in lines:
        n = len(line)
        short = line
        while n > 1 and width(short, size) > max_px:
            n -= 1
            short = _shorten(line, n, keep)
        fitted.append(short)
    return "\n".join(fitted), size


def _fit_titles(fig: Figure, titles) -> None:
    """Wrap any of ``titles`` (texts centred over an axes, or the suptitle) that would
    stick out of the figure onto more lines, at spaces where possible, then redo the
    layout. Constrained layout makes room above the axes, but not beside them."""
    renderer = fig.canvas.get_renderer()
    for _ in range(3):
        fig.draw_without_rendering()  # runs the layout engine
        changed = False
        for t in titles:
            text = t.get_text()
            if not text.strip():
                continue
            box = t.get_window_extent(renderer)
            centre = (box.x0 + box.x1) / 2
            room = 2 * (min(centre - fig.bbox.x0, fig.bbox.x1 - centre) - 6)  # pixels
            if box.width <= room:
                continue
            words = " ".join(text.split())
            props = t.get_fontproperties()
            for n in range(len(words) - 1, 3, -1):
                lines = textwrap.wrap(words, n)
                if max(renderer.get_text_width_height_descent(ln, props, ismath=False)[0]
                       for ln in lines) <= room:
                    break
            t.set_text("\n".join(lines))
            changed = True
        if not changed:
            return


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


# ----------------------------------------------------------------------- module tree


def _is_lazy(p) -> bool:
    """A lazy layer's parameter before its first forward: it has no shape (and
    ``numel()`` raises)."""
    return isinstance(p, nn.parameter.UninitializedParameter)


def _with_ancestors(paths) -> set[str]:
    """The module paths and every path above them (``"a.b"`` -> ``"a.b"``, ``"a"``, ``""``)."""
    out = set()
    for path in paths:
        out.add(path)
        while path:
            path = path.rpartition(".")[0]
            out.add(path)
    return out


def _lazy_in_trace(infos: dict[str, ModuleInfo]) -> set[str]:
    """Paths whose subtree holds a lazy layer that is still uninitialized (never called,
    or a traced forward failed before reaching it): their counts are lower bounds. (A
    lazy layer's first call turns it into its plain class, ``LazyLinear`` into
    ``Linear``.)"""
    return _with_ancestors(p for p, i in infos.items()
                           if i.type.startswith("Lazy") and not i.own_params)


def _param_text(n: int, lazy: bool, word: str = "param") -> str:
    """``1,234 params``, or ``40 + ? params (lazy)`` when a lazy layer has no shape yet."""
    if not lazy:
        return _plural(n, word)
    return (f"{n:,} + ? " if n else "? ") + word + "s (lazy)"


def _split_args(extra: str) -> list[str]:
    """``extra_repr()`` split at its top-level commas: ``"3, 16, kernel_size=(3, 3)"`` ->
    ``["3", "16", "kernel_size=(3, 3)"]``."""
    parts, depth, cur = [], 0, ""
    for ch in extra:
        depth += (ch in "([{") - (ch in ")]}")
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return [p for p in [*parts, cur.strip()] if p]


def _window_args(kv: dict, conv: bool) -> list[str]:
    """``k=3``, ``s=2``, ``p=1`` of a convolution or pooling window; a stride of 1 (for a
    convolution) and a padding of 0 are left out, a non-square window reads ``3×5``."""

    def one(v):
        nums = [x.strip() for x in v.strip("()").split(",") if x.strip()]
        return nums[0] if len(set(nums)) == 1 else "×".join(nums)

    out = [f"k={one(kv['kernel_size'])}"]
    if "stride" in kv and (not conv or one(kv["stride"]) != "1"):
        out.append(f"s={one(kv['stride'])}")
    if "padding" in kv and one(kv["padding"]) not in ("0", "valid"):
        out.append(f"p={one(kv['padding'])}")
    return out


def _class_label(kind: str, extra: str) -> str:
    """``Linear(20 → 256)``, ``Conv2d(3 → 16, k=3)``, ``MaxPool2d(k=2, s=2)``,
    ``Dropout(p=0.5, inplace=False)`` or just ``ReLU``.

    The words of :func:`book_src.render.module_label` (the stepper's labels): ``in → out``
    for Linear and convolution layers, else ``Type(extra)`` when ``extra_repr()`` is short;
    plus the kernel, stride and padding of convolutions and poolings, which their
    ``extra_repr()`` gives in a form too long to show. A lazy layer's input size, not yet
    known, is ``?``.
    """
    extra = extra or ""
    parts = _split_args(extra)
    kv = dict(p.split("=", 1) for p in parts if "=" in p)
    positional = [p for p in parts if "=" not in p]

    def size(v):
        return "?" if kind.startswith("Lazy") and v == "0" else v

    if "in_features" in kv and "out_features" in kv:
        return f"{kind}({size(kv['in_features'])} → {kv['out_features']})"
    if "Conv" in kind and len(positional) >= 2 and "kernel_size" in kv:
        args = [f"{size(positional[0])} → {positional[1]}", *_window_args(kv, conv=True)]
        return f"{kind}({', '.join(args)})"
    if "Pool" in kind and "kernel_size" in kv:
        return f"{kind}({', '.join(_window_args(kv, conv=False))})"
    return f"{kind}({extra})" if extra and len(extra) <= 24 else kind


@_styled
def module_tree(model_or_trace, *, highlight: str | None = None, max_depth: int = 4,
                max_nodes: int = 24) -> Figure:
    """Draw the module hierarchy as a tree, root at the top left, one boxed row per module.

    Each box reads ``name · Class(in → out) · N params`` (parameters counted
    recursively, shared ones once; see :func:`_class_label` for the class part). A lazy
    layer (``nn.LazyLinear``) before its first forward has no parameter shapes yet: it
    reads ``? params (lazy)``, and the blocks holding it ``N + ? params (lazy)``.
    ``model_or_trace`` is an ``nn.Module`` or a :class:`Trace` (its ``modules``).
    ``highlight`` is a module path (``"net.0"``) drawn bold with a thick orange frame;
    its ancestors are never collapsed. Modules deeper than ``max_depth`` and rows beyond
    ``max_nodes`` are folded into dashed ``… N more modules`` boxes.
    """
    if isinstance(model_or_trace, Trace):
        infos = model_or_trace.modules
        lazy = _lazy_in_trace(infos)
    elif isinstance(model_or_trace, nn.Module):
        infos = module_table(model_or_trace)
        lazy = _lazy_in_trace(infos)
    else:
        raise TypeError(f"module_tree expects an nn.Module or a Trace, not "
                        f"{type(model_or_trace).__name__}")
    if max_depth < 0 or max_nodes < 2:
        raise ValueError("need max_depth >= 0 and max_nodes >= 2")
    if highlight is not None and highlight not in infos:
        raise ValueError(f"no module at path {highlight!r}; paths are {sorted(infos)}")

    def n_below(path):
        return 1 + sum(n_below(c) for c in infos[path].children)

    def on_focus(path):
        return highlight is not None and (highlight == path or
                                          highlight.startswith(path + ".") or not path)

    rows = []  # (depth, text, style, parent row)
    counted = [0]  # modules drawn or counted in a "… N more" box

    def more(n, depth, parent):
        rows.append((depth, f"… {_plural(n, 'more module')}", "more", parent))
        counted[0] += n

    def emit(path, depth, parent):
        if len(rows) >= max_nodes - 1:
            return
        info = infos[path]
        name = path.rpartition(".")[2]
        cls = _class_label(info.type, info.extra)
        text = " · ".join([name, cls] if path else [cls])
        style = "focus" if path == highlight else "node"
        rows.append((depth, f"{text} · {_param_text(info.params, path in lazy)}", style,
                     parent))
        counted[0] += 1
        me = len(rows) - 1
        kids = info.children
        shown = kids if depth < max_depth else [k for k in kids if on_focus(k)]
        for k in shown:
            emit(k, depth + 1, me)
        hidden = sum(n_below(k) for k in kids if k not in shown)
        if hidden and len(rows) < max_nodes - 1:
            more(hidden, depth + 1, me)

    emit("", 0, None)
    if counted[0] < len(infos):
        more(len(infos) - counted[0], 1, 0)

    row_h, indent, top = 0.34, 0.32, 0.5
    fig, ax = _canvas(BOOK_WIDTH, top + row_h * len(rows) + 0.15)
    root = infos[""]
    title, font = _fit(fig.canvas.get_renderer(),
                       f"Module tree of {root.type}: {_plural(len(infos), 'module')}, "
                       f"{_param_text(root.params, '' in lazy, 'parameter')}",
                       (BOOK_WIDTH - 0.2) * fig.dpi, matplotlib.rcParams["figure.titlesize"])
    fig.suptitle(title, y=1 - 0.12 / fig.get_figheight(), va="top", fontsize=font)
    boxes = {
        "node": dict(fc=PALETTE["light"], ec=PALETTE["blue"], lw=0.8),
        "focus": dict(fc=PALETTE["focus"], ec=PALETTE["orange"], lw=2.2),
        "more": dict(fc="white", ec=PALETTE["grey"], lw=0.8, ls="--"),
    }
    for i, (depth, text, style, parent) in enumerate(rows):
        x, y = 0.2 + depth * indent, top + row_h * (i + 0.5)
        if parent is not None:
            px, py = 0.2 + rows[parent][0] * indent + 0.1, top + row_h * (parent + 0.5)
            ax.plot([px, px, x], [py + 0.12, y, y], color=PALETTE["grey"], lw=0.8, zorder=0)
        max_chars = int((BOOK_WIDTH - x - 0.2) / 0.068)
        ax.text(x, y, _clip(text, max_chars), va="center", ha="left", gid=f"tree:{style}",
                color=PALETTE["grey"] if style == "more" else "black",
                fontweight="bold" if style == "focus" else "normal",
                fontstyle="italic" if style == "more" else "normal",
                bbox=dict(boxstyle="round,pad=0.3", **boxes[style]))
    return fig


# ------------------------------------------------------------------------ shape flow

_SCALES = {  # scale -> (size along one axis of a box for d units, how the legend says it)
    "sqrt": (lambda d: math.sqrt(max(d, 1)), "√{}"),
    "log": (lambda d: 1 + math.log2(max(d, 1)), "1+log₂ {}"),
}
_MIN_SLOT, _MAX_SLOT = 0.85, 1.1  # inches of page width per box


def _box_dims(shape) -> tuple[int, int]:
    """The (rows, cols) a tensor's box is drawn with; rows × cols is its number of
    elements: ``()`` 1 × 1, ``(F,)`` 1 × F, ``(N, F)`` N × F, and with three or more
    dims the first two against the rest, ``(N, C, H, W)`` N·C × H·W."""
    shape = tuple(shape)
    if len(shape) <= 2:
        return ((1, 1) + shape)[-2:]
    return shape[0] * shape[1], math.prod(shape[2:])


def _visible(w: float, h: float, least: float = 0.05) -> tuple[float, float]:
    """A box of at least ``least`` inches each way: a thinner one is drawn ``least`` thick
    and shorter by the same factor, keeping its area (down to a ``least`` square)."""
    if w >= least and h >= least:
        return w, h
    if w < least and h < least:
        return least, least
    if h < least:
        return max(w * h / least, least), least
    return least, max(w * h / least, least)


def _flow_item(step) -> dict:
    """What one step's box shows: its first tensor output (or why there is none)."""
    out = next((v for v in step.outputs if v.is_tensor), None)
    if step.kind == "module":
        top = (step.module_type, step.path.rpartition(".")[2] or "(root)")
    else:
        top = (step.name, f"pass {step.iteration}" if step.iteration else "")
    if step.error:
        shape = out.shape if out else next((v.shape for v in step.inputs if v.is_tensor), ())
        return dict(top=top, shape=shape, label="✗ error", kind="error", step=step)
    if out is not None:
        label = _fmt_shape(out.shape)
        if out.value is not None:
            label += f"\n= {out.value:.4g}" if isinstance(out.value, float) else \
                f"\n= {out.value}"
        return dict(top=top, shape=out.shape, label=label, kind="tensor", step=step)
    text = step.outputs[0].text if step.outputs else "None"
    return dict(top=top, shape=(), label=_clip(text, 12), kind="value", step=step)


def _tensor_keys(values) -> set:
    return {(v.shape, v.dtype) for v in values if v.is_tensor}


def _reads_box_before(trace: Trace, before: set, step, start: int, box) -> bool:
    """Whether ``step`` reads the tensor of the box before it.

    The trace keeps tensors' metadata, not their identity, so this compares shape and
    dtype: ``step``'s tensor inputs against ``before`` (the tensors of the box before:
    its step ``box``'s outputs, or the model's input when ``box`` is None) and the
    outputs of the steps recorded after index ``start`` that the view hides, such as a
    ``flatten`` in a ``forward`` seen in the modules view, except steps inside ``box``
    and calls that enclose ``step``.
    """
    reads = _tensor_keys(step.inputs)
    if reads & before:
        return True
    steps = trace.steps
    enclosing, s = set(), step
    while s.parent is not None:
        enclosing.add(s.parent)
        s = steps[s.parent]
    for t in steps[start + 1: step.index]:
        if t.index in enclosing:
            continue
        inside, p = False, t.parent if box is not None else None
        while p is not None and p >= start:
            if p == start:
                inside = True
                break
            p = steps[p].parent
        if not inside and reads & _tensor_keys(t.outputs):
            return True
    return False


@_styled
def shape_flow(trace: Trace, view: str = "modules", *, max_steps: int = 32,
               scale: str = "sqrt") -> Figure:
    """Draw the tensors flowing left to right through the steps of ``trace.view(view)``.

    The first box is the input; then each step that has no children in the view (a leaf
    layer or an op) gets a box for its output tensor, labelled with the step's name above
    and the shape, e.g. ``(2, 8)``, below. A box is ``rows`` high and ``cols`` wide on a
    ``"sqrt"`` or ``"log"`` scale, where rows × cols is the number of elements: a
    ``(N, F)`` tensor is N × F, and one with three or more dims has its first two against
    the rest, ``(N, C, H, W)`` is N·C × H·W (so with ``"sqrt"`` a box's area grows as the
    square root of its number of elements, and ``Flatten`` keeps it); the legend says
    so. A box
    is at least 0.05 in each way: a thinner one is drawn that thick and shorter by the
    same factor, so that its area stays right (see :func:`_visible`). Labels
    that do not fit their box's slot get a smaller font, then are shortened in the
    middle with "…".

    An arrow joins two neighbouring boxes only when the second step reads the first
    box's tensor. When it does not (the next branch of an Inception-like block reads
    the block's input again; ``X /= 2`` after the ``bool`` of a loop condition), a dotted
    bar stands between them instead. The trace records tensors' shapes, not their
    identity, so "reads" means: one of the step's tensor inputs has the shape and dtype
    of that tensor, or of a tensor made since by a step the view hides. This is no
    dataflow graph: a branch that reads a tensor of the same shape is still chained.

    Module calls that contain other steps are brackets under the boxes they span. A
    failing step is red *and* hatched and labelled ``✗ error``. Rows wrap at the page
    width, balanced so that they differ by at most one box; steps beyond ``max_steps``
    are counted in a ``… N more steps`` note.
    """
    if scale not in _SCALES:
        raise ValueError(f"scale must be one of {sorted(_SCALES)}, not {scale!r}")
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps!r}")
    steps = trace.view(view)
    if not steps:
        raise ValueError("the trace has no steps to draw")
    by_index = {s.index: s for s in trace.steps}
    parents = {s.parent for s in steps if s.parent is not None}
    leaves = [s for s in steps if s.index not in parents]
    items = []
    first = next((v for v in steps[0].inputs if v.is_tensor), None)
    if first is not None:
        items.append(dict(top=("input", ""), shape=first.shape, label=_fmt_shape(first.shape),
                          kind="input", step=None))
    items += [_flow_item(s) for s in leaves[:max_steps]]
    more = len(leaves) - min(len(leaves), max_steps)

    # Does each box's step read the box before? (the first box has nothing before it)
    before, start = (_tensor_keys([first]) if first is not None else set()), steps[0].index
    box = None
    for pos, item in enumerate(items):
        s = item["step"]
        if s is None:
            continue
        item["linked"] = pos > 0 and _reads_box_before(trace, before, s, start, box)
        before, start, box = _tensor_keys(s.outputs), s.index, s

    spans = {}  # container step index -> [first item, last item]
    for pos, item in enumerate(items):
        s = item["step"]
        while s is not None and s.parent is not None:
            s = by_index[s.parent]
            lo_hi = spans.setdefault(s.index, [pos, pos])
            lo_hi[1] = pos
    depths = [by_index[i].depth for i in spans] or [0]
    levels = max(depths) - min(depths) + 1 if spans else 0

    # Rows: as few as the page width allows, balanced (longer ones first)
    max_cols = int((BOOK_WIDTH - 0.2) / _MIN_SLOT + 1e-9)
    n_rows = math.ceil(len(items) / max_cols)
    base, extra = divmod(len(items), n_rows)
    sizes = [base + (r < extra) for r in range(n_rows)]
    row_start = [sum(sizes[:r]) for r in range(n_rows)]
    place = [(r, c) for r, size in enumerate(sizes) for c in range(size)]
    slot = min(_MAX_SLOT, (BOOK_WIDTH - 0.2) / sizes[0])

    f, say = _SCALES[scale]
    dims = [_box_dims(it["shape"]) for it in items]
    k = min(0.62 / max(f(c) for _, c in dims), 0.7 / max(f(r) for r, _ in dims))
    box_h, bracket_h = 0.7, 0.3
    row_h = 0.42 + box_h + 0.38 + levels * bracket_h + 0.12
    head = 0.5 + (0.3 if trace.error else 0)
    body = head + n_rows * row_h
    fig, ax = _canvas(BOOK_WIDTH, body + 1.0)  # the height is set once the legend is made
    renderer = fig.canvas.get_renderer()
    left = (BOOK_WIDTH - sizes[0] * slot) / 2
    fits = (slot - 0.1) * fig.dpi  # pixels a box's label may take

    def slot_x(pos):
        r, c = place[pos]
        return left + (c + 0.5) * slot, head + r * row_h

    def label(x, y, text, size, keep, **kw):
        text, size = _fit(renderer, text, fits, size, weight=kw.get("fontweight", "normal"),
                          keep=keep)
        ax.text(x, y, text, ha="center", fontsize=size, **kw)

    grey = PALETTE["grey"]
    prev_right = None
    for pos, (item, (r, c)) in enumerate(zip(items, dims, strict=True)):
        xc, y0 = slot_x(pos)
        w, h = _visible(k * f(c), k * f(r))
        yc = y0 + 0.42 + box_h / 2
        err, value = item["kind"] == "error", item["kind"] == "value"
        ax.add_patch(Rectangle(
            (xc - w / 2, yc - h / 2), w, h, gid=f"box:{pos}", lw=2 if err else 1,
            fc=PALETTE["error"] if err else ("white" if value else PALETTE["light"]),
            ec=PALETTE["red"] if err else (grey if value else PALETTE["blue"]),
            hatch="///" if err else None, ls="--" if value else "-"))
        name, sub = item["top"]
        label(xc, y0 + 0.22, name, 8.5, "start", va="bottom", fontweight="bold",
              gid=f"name:{pos}")
        label(xc, y0 + 0.24, sub, 7.5, "both", va="top", color=grey, gid=f"sub:{pos}")
        label(xc, y0 + 0.42 + box_h + 0.06, item["label"], 8, "both", va="top",
              gid=f"shape:{pos}", color=PALETTE["red"] if err else "black",
              fontweight="bold" if err else "normal")
        if pos and not item.get("linked", True):
            xb = xc - slot / 2
            ax.plot([xb, xb], [yc - 0.28, yc + 0.28], color=grey, lw=1.5, ls=":",
                    gid=f"break:{pos}")
        elif pos and place[pos][1]:
            ax.add_patch(FancyArrowPatch((prev_right, yc), (xc - w / 2, yc),
                                         gid=f"arrow:{pos}", arrowstyle="-|>",
                                         mutation_scale=8, color=grey, lw=0.8, shrinkA=2,
                                         shrinkB=2))
        prev_right = xc + w / 2

    top_depth = min(depths)
    for index, (lo, hi) in spans.items():
        s = by_index[index]
        level = levels - 1 - (s.depth - top_depth)  # deepest bracket nearest the boxes
        mark = " ✗" if s.error else ""
        texts = (f"{s.path or '(root)'} · {s.module_type}{mark}", f"{s.path or '(root)'}{mark}")
        color = PALETTE["red"] if s.error else grey
        for row in range(place[lo][0], place[hi][0] + 1):
            a, b = max(lo, row_start[row]), min(hi, row_start[row] + sizes[row] - 1)
            x0, y0 = slot_x(a)
            x1 = slot_x(b)[0]
            y = y0 + 0.42 + box_h + 0.42 + level * bracket_h
            x0, x1 = x0 - slot / 2 + 0.06, x1 + slot / 2 - 0.06
            ax.plot([x0, x0, x1, x1], [y - 0.07, y, y, y - 0.07], color=color, lw=1.2,
                    ls="--" if s.error else "-", gid=f"bracket:{index}")
            room = (x1 - x0 - 0.04) * fig.dpi
            for i, text in enumerate(texts):  # the longest text that fits, at 7.5 pt
                fitted, size = _fit(renderer, text, room, 7.5,
                                    min_size=7.5 if i < len(texts) - 1 else 6.5)
                if fitted == text or i == len(texts) - 1:
                    break
            ax.text((x0 + x1) / 2, y + 0.03, fitted, ha="center", va="top",
                    fontsize=size, color=color, gid=f"bracket-label:{index}")
    if more:
        ax.text(BOOK_WIDTH - 0.15, body, f"… {_plural(more, 'more step')}",
                ha="right", va="top", color=grey, gid="more")

    failed = trace.failed_step
    if failed is not None:
        msg = _clip(f"✗ step #{failed.index} ({failed.name}) failed: {failed.error}", 190)
        ax.text(BOOK_WIDTH / 2, 0.42, "\n".join(textwrap.wrap(msg, 110)), ha="center",
                va="top", color=PALETTE["red"], fontsize=8)
    many = any(len(it["shape"]) >= 3 for it in items if it.get("shape") is not None)
    handles = [
        Rectangle((0, 0), 1, 1, fc=PALETTE["light"], ec=PALETTE["blue"],
                  label=f"output tensor: height ∝ {say.format('rows')}, width ∝ "
                        f"{say.format('cols')}"
                        + ("; (N, C, H, W) has N·C rows, H·W cols" if many else "")),
        Line2D([], [], color=grey, lw=1.2, label="module call (bracket)"),
    ]
    if any(it["kind"] == "error" for it in items):
        handles.append(Rectangle((0, 0), 1, 1, fc=PALETTE["error"], ec=PALETTE["red"],
                                 hatch="///", label="failing step"))
    if any(not it.get("linked", True) for it in items[1:]):
        handles.append(Line2D([], [], ls="none", marker=r"$\vdots$", markersize=9,
                              color=grey, label="no arrow: the next step reads another "
                                                "tensor (compared by shape)"))
    y_legend = body + (0.25 if more else 0.05)
    for ncols in range(len(handles), 0, -1):  # as many columns as fit the page
        legend = ax.legend(handles=handles, loc="upper center", ncols=ncols,
                           bbox_to_anchor=(BOOK_WIDTH / 2, y_legend),
                           bbox_transform=ax.transData, frameon=False, handlelength=1.6,
                           fontsize=8.5, borderaxespad=0)
        extent = legend.get_window_extent(renderer)
        if extent.width <= (BOOK_WIDTH - 0.2) * fig.dpi:
            break
    height = y_legend + extent.height / fig.dpi + 0.12
    fig.set_size_inches(BOOK_WIDTH, height)
    ax.set_ylim(height, 0)
    title, size = _fit(renderer, f"Tensor shapes through {trace.model_name} ({view} view)",
                       (BOOK_WIDTH - 0.2) * fig.dpi, matplotlib.rcParams["figure.titlesize"])
    fig.suptitle(title, y=1 - 0.1 / height, va="top", fontsize=size)
    return fig


# ----------------------------------------------------------------------- activations

_DISPLAY = {"relu": "ReLU", "sigmoid": "Sigmoid", "tanh": "tanh", "gelu": "GELU",
            "leaky_relu": "LeakyReLU", "elu": "ELU", "silu": "SiLU", "softplus": "Softplus",
            "relu6": "ReLU6", "hardtanh": "Hardtanh", "mish": "Mish", "selu": "SELU"}


def _activation(name):
    if callable(name):
        return getattr(name, "__name__", type(name).__name__), name
    fn = getattr(F, name, None) or getattr(torch, name, None)
    if not callable(fn):
        raise ValueError(f"unknown activation {name!r}; try one of {sorted(_DISPLAY)}")
    return _DISPLAY.get(name, name), fn


@_styled
def activations(names=("relu", "sigmoid", "tanh"), x_range=(-5, 5), *,
                overlay: bool = False, num: int = 401) -> Figure:
    """Plot activation functions, computed with torch on ``num`` points of ``x_range``.

    ``names`` are names in ``torch.nn.functional`` or ``torch`` (``"relu"``, ``"gelu"``,
    ``"leaky_relu"`` ...) or callables (``nn.LeakyReLU(0.2)``). One subplot each (three
    per row), or all on one axes with ``overlay=True``. Each line's ``gid`` is its name.
    """
    if isinstance(names, str) or callable(names):
        names = (names,)
    funcs = [_activation(n) for n in names]
    x = torch.linspace(x_range[0], x_range[1], num)
    n_axes = 1 if overlay else len(funcs)
    cols = 2 if n_axes == 4 else min(n_axes, 3)
    n_rows = math.ceil(n_axes / cols)
    fig = BookFigure(figsize=(BOOK_WIDTH, 0.6 + 2.3 * n_rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n_rows, cols, squeeze=False).ravel())
    for i, (label, fn) in enumerate(funcs):
        ax = axes[0 if overlay else i]
        with torch.no_grad():
            y = fn(x)
        ax.plot(x.numpy(), y.numpy(), lw=2, label=label, gid=label,
                color=None if overlay else PALETTE["blue"])
        if not overlay:
            ax.set_title(f"{label}(x)")
    for ax in axes[:n_axes]:
        ax.axhline(0, color=PALETTE["grey"], lw=0.6)
        ax.axvline(0, color=PALETTE["grey"], lw=0.6)
        ax.set_xlabel("input x")
        ax.set_ylabel("output f(x)")
    for ax in axes[n_axes:]:
        ax.set_visible(False)
    if overlay:
        axes[0].legend()
        axes[0].set_title(", ".join(label for label, _ in funcs))
    sup = fig.suptitle("Activation functions")
    _fit_titles(fig, [ax.title for ax in axes[:n_axes]] + [sup])
    return fig


# --------------------------------------------------------------------------- weights


def _as_matrix(obj, i: int) -> tuple[np.ndarray, str, tuple]:
    """A 2-D numpy view of a weight tensor (or a module's ``.weight``), a default label
    and the original shape."""
    label = f"tensor {i}"
    if isinstance(obj, nn.Module):
        label = f"{type(obj).__name__} weight"
        obj = getattr(obj, "weight", None)
        if not isinstance(obj, torch.Tensor):
            raise ValueError(f"{label}: module has no weight tensor")
    if _is_lazy(obj):
        raise ValueError(f"{label} is not initialized yet: a lazy layer gets its weight's "
                         "shape at its first forward call; run one first")
    w = torch.as_tensor(obj).detach().cpu().float()
    if w.dim() == 0:
        raise ValueError(f"{label}: a 0-d tensor is not a weight matrix")
    shape = tuple(w.shape)
    m = w.reshape(1, -1) if w.dim() == 1 else w.reshape(w.shape[0], -1)
    return m.numpy(), label, shape


@_styled
def weights(tensors_or_modules, labels=None, *, bins: int = 40) -> Figure:
    """Compare weight tensors: one row each, a heatmap (with colorbar) and a histogram.

    ``tensors_or_modules`` is a tensor, a module with a ``.weight`` (``nn.Linear``), or a
    list of them, e.g. ``weights([w_before, w_after], labels=["default init",
    "xavier_uniform_"])``. All heatmaps share one symmetric colour scale and all
    histograms share the same bins, so rows can be compared directly. A Linear weight
    (out, in) is drawn with columns = input features, rows = output units; tensors with
    more dims are flattened to (out, rest). A title too wide for its place is wrapped onto
    more lines rather than cut off at the figure's edge.
    """
    if isinstance(tensors_or_modules, (torch.Tensor, nn.Module, np.ndarray)):
        tensors_or_modules = [tensors_or_modules]
    mats = [_as_matrix(o, i) for i, o in enumerate(tensors_or_modules)]
    if not mats:
        raise ValueError("weights() needs at least one tensor or module")
    labels = list(labels) if labels is not None else [lbl for _, lbl, _ in mats]
    if len(labels) != len(mats):
        raise ValueError(f"got {len(labels)} labels for {len(mats)} tensors")
    vmax = max(float(np.abs(m).max()) for m, _, _ in mats) or 1e-12
    edges = np.linspace(-vmax, vmax, bins + 1)
    fig = BookFigure(figsize=(BOOK_WIDTH, 0.5 + 2.4 * len(mats)), layout="constrained")
    fig.get_layout_engine().set(wspace=0.1, hspace=0.12)  # rows apart: labels vs titles
    axes = fig.subplots(len(mats), 2, squeeze=False, width_ratios=[1.25, 1])
    titles = []
    for (m, _, shape), label, (ax_map, ax_hist) in zip(mats, labels, axes, strict=True):
        im = ax_map.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto",
                           interpolation="nearest")
        fig.colorbar(im, ax=ax_map, label="value")
        ax_map.grid(False)
        ax_map.set_title(f"{label}: {'×'.join(map(str, shape))}")
        if len(shape) == 1:
            ax_map.set(xlabel="index", ylabel="(one row)", yticks=[])
        else:
            rest = "input feature (in)" if len(shape) == 2 else "in × kernel (flattened)"
            ax_map.set(xlabel=rest, ylabel="output unit (out)")
        ax_hist.hist(m.ravel(), bins=edges, color=PALETTE["blue"], edgecolor="white",
                     linewidth=0.3)
        ax_hist.set_title(f"mean {m.mean():.2g}, std {m.std():.2g}")
        ax_hist.set(xlabel="weight value", ylabel="count", xlim=(-vmax, vmax))
        titles += [ax_map.title, ax_hist.title]
    titles.append(fig.suptitle("Weights: " + " vs ".join(labels)))
    _fit_titles(fig, titles)
    return fig


# -------------------------------------------------------------------- loop condition

_COMPARISONS = (">", "<", ">=", "<=", "==", "!=")


def _number(v):
    """The scalar held by a TensorInfo (0-d) or PyValue, else None."""
    x = getattr(v, "value", None)
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None


@_styled
def loop_condition(trace: Trace, line: int | str | None = None,
                   threshold: float | None = None) -> Figure:
    """Plot a loop condition's left-hand side at each check (each time the condition is
    tested: one more than the passes of the body), e.g. ``X.abs().sum()`` for
    ``while X.abs().sum() > 1: X /= 2``.

    Uses the comparison steps (``>``, ``<``, ``>=``, ``<=``, ``==``, ``!=``) that ran in
    several loop passes. With several such source lines, ``line`` picks one: a line
    number or a substring of the source line; default is the first. Markers show the
    outcome (● True: loop goes on, ✕ False: loop stops); the dashed line is
    ``threshold``, by default the comparison's right-hand side if it is a scalar. The y
    axis is logarithmic when the values span more than two decades.
    Raises ValueError if the trace has no such comparison.
    """
    groups = {}  # (filename, lineno, enclosing module call) -> steps, in run order
    for s in trace.steps:
        if s.kind == "op" and not s.internal and s.name in _COMPARISONS:
            groups.setdefault((s.filename, s.lineno, s.parent), []).append(s)
    loops = [g for g in groups.values() if any(s.iteration for s in g)]
    if not loops:
        raise ValueError(f"the trace of {trace.model_name} has no loop comparison: no "
                         f"{'/'.join(_COMPARISONS)} step ran in more than one loop pass")
    if line is not None:
        found = [g for g in loops if (g[0].lineno == line if isinstance(line, int)
                                      else str(line) in g[0].line)]
        if not found:
            known = "; ".join(f"line {g[0].lineno}: {g[0].line}" for g in loops)
            raise ValueError(f"no loop comparison matches line={line!r}; found {known}")
        loops = found
    chosen = loops[0]
    points = [(s.iteration or 1, _number(s.inputs[0]), s.value) for s in chosen if s.inputs]
    points = [p for p in points if p[1] is not None]
    first = chosen[0]
    if not points:
        raise ValueError(f"line {first.lineno} ({first.line}) compares tensors, not "
                         "scalars: there is no single value per pass to plot")
    if threshold is None and len(first.inputs) > 1:
        threshold = _number(first.inputs[1])
    xs, ys = [p[0] for p in points], [p[1] for p in points]

    fig = BookFigure(figsize=(BOOK_WIDTH, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.plot(xs, ys, color=PALETTE["grey"], lw=1, zorder=1, gid="values")
    for outcome, marker, color, size, text in (
            (True, "o", PALETTE["blue"], 7, "condition True: loop goes on"),
            (False, "X", PALETTE["orange"], 10, "condition False: loop stops")):
        sel = [(x, y) for x, y, o in points if bool(o) is outcome and o is not None]
        if sel:
            ax.plot(*zip(*sel, strict=True), ls="none", marker=marker, color=color,
                    markersize=size, label=text, gid=f"outcome:{outcome}", zorder=3)
    if threshold is not None:
        ax.axhline(threshold, color=PALETTE["red"], ls="--", lw=1.2, gid="threshold",
                   label=f"threshold = {threshold:g}")
    if min(ys) > 0 and max(ys) / min(ys) > 100:  # more than two decades
        ax.set_yscale("log")
    parts = re.split(rf"\s{re.escape(first.name)}\s", first.line, maxsplit=1)
    lhs = re.sub(r"^(while|if|elif|assert)\s+", "", parts[0].strip())
    ax.set_xlabel("check (the k-th time the condition is tested)")
    ax.set_ylabel(f"value of {_clip(lhs, 30)}" if len(parts) == 2 else "left-hand side")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    ax.legend(loc="best")
    ax.set_title(_clip(f"Loop condition at each check — line {first.lineno}: {first.line}",
                       90))
    _fit_titles(fig, [ax.title])
    return fig
