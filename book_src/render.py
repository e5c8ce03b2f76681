"""Pure functions from a Trace (or one Step) to text and HTML.

No I/O, no widgets. Everything that comes from the reader's model or code (module
names, reprs, values, source lines, error messages) is HTML-escaped here, once: the
widgets only arrange the strings this module returns.
"""

from __future__ import annotations

import html
import itertools
import math
import re

__all__ = [
    "fmt_shape", "fmt_value", "step_label", "step_expr", "trace_text", "trace_html",
    "Summary", "step_html", "STYLE", "module_label", "esc",
]

_BINARY = {
    "+", "-", "*", "/", "//", "%", "**", "@", "&", "|", "^", "<<", ">>", "==", "!=", "<",
    "<=", ">", ">=", "+=", "-=", "*=", "/=", "//=", "%=", "**=", "@=", "&=", "|=", "^=",
}


def esc(text) -> str:
    """HTML-escape any text (quotes included)."""
    return html.escape(str(text), quote=True)


# ------------------------------------------------------------------------ formatting


def fmt_shape(shape) -> str:
    """``(2, 20)``; ``()`` for a 0-d tensor; ``·`` for a non-tensor."""
    if shape is None:
        return "·"
    if len(shape) == 1:
        return f"({shape[0]},)"
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _num(v) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if v != v or v in (math.inf, -math.inf):
            return str(v)
        return f"{v:.4g}"
    return str(v)


def fmt_value(v) -> str:
    """One recorded value: a tensor's shape, a 0-d tensor's value, a Python repr."""
    if v.is_tensor:
        if v.value is not None:
            return f"tensor({_num(v.value)})"
        return fmt_shape(v.shape)
    if v.value is not None:
        return _num(v.value)
    return v.text


def _fmt_values(values, limit=4) -> str:
    parts = []
    for v in values[:limit]:
        text = fmt_value(v)
        if v.name:
            text = f"{v.name}={text}"
        parts.append(text)
    if len(values) > limit:
        parts.append("…")
    return ", ".join(parts)


def module_label(info) -> str:
    """``Linear(8 → 10)`` for a Linear, else ``Type`` or ``Type(extra)`` when short."""
    extra = info.extra or ""
    if info.type in ("Linear", "LazyLinear") and "in_features=" in extra:
        fields = dict(p.split("=", 1) for p in extra.split(", ") if "=" in p)
        return f"{info.type}({fields.get('in_features', '?')} → {fields.get('out_features', '?')})"
    if info.type.startswith("Conv") and extra:
        parts = extra.split(", ")
        if len(parts) >= 2 and "=" not in parts[0] and "=" not in parts[1]:
            return f"{info.type}({parts[0]} → {parts[1]})"
    if extra and len(extra) <= 24:
        return f"{info.type}({extra})"
    return info.type


def step_label(step) -> str:
    """What the step is: ``F.relu``, ``/=``, or ``2 · Linear`` for a module call."""
    if step.kind == "module":
        where = step.path if step.path else "(root)"
        call = f" (call {step.call})" if step.call and step.call > 1 else ""
        return f"{where} · {step.name}{call}"
    return step.name


_COMPARE = {"==", "!=", "<", "<=", ">", ">="}


def step_expr(step, trace=None) -> str:
    """The step as a one-line expression with values: ``tensor(13.83) > 1 → tensor(True)``.

    Given the trace, the truth test of a comparison just made on the same line (a
    ``while`` or ``if`` condition) reads as the whole condition: ``tensor(13.83) > 1 → True``.
    """
    out = _fmt_values(step.outputs) if step.outputs else ("✗" if step.error else "None")
    ins = step.inputs
    if trace is not None and step.name == "bool" and step.index > 0 and len(ins) == 1:
        prev = trace.steps[step.index - 1]
        if (prev.name in _COMPARE and prev.lineno == step.lineno and len(prev.inputs) == 2
                and prev.value == ins[0].value):
            return f"{fmt_value(prev.inputs[0])} {prev.name} {fmt_value(prev.inputs[1])} → {out}"
    if step.kind == "op" and step.name in _BINARY and len(ins) == 2:
        return f"{fmt_value(ins[0])} {step.name} {fmt_value(ins[1])} → {out}"
    if step.kind == "op" and step.name in ("[]", "[]=") and ins:
        return f"{fmt_value(ins[0])}[{_fmt_values(ins[1:2])}] → {out}"
    return f"{step.name}({_fmt_values(ins)}) → {out}"


def _io(step, runs: bool = False) -> str:
    """``(2, 20) → (2, 256)``; with ``runs``, equal shapes in a row are counted once:
    ``3 × (2, 5, 16) → (2, 5, 16)`` for attention's query, key and value."""
    def side(shapes):
        items = [fmt_shape(s) for s in shapes if s is not None]
        if runs:
            counted = [(item, len(list(same))) for item, same in itertools.groupby(items)]
            items = [f"{n} × {item}" if n > 1 else item for item, n in counted]
        return ", ".join(items) or "·"
    return f"{side(step.input_shapes)} → {side(step.output_shapes)}"


def _unbroken_shapes(io: str) -> str:
    """No line break inside a shape: a narrow cell wraps at the arrow or between shapes."""
    return re.sub(r"\([^()]*\)", lambda m: m.group().replace(" ", "\u00a0"), io)


# --------------------------------------------------------------------- text / table


def _rows(trace, view):
    rows = []
    steps = trace.view(view)
    for s in steps:
        depth = s.depth
        label = ("  " * depth) + (step_label(s) if s.kind == "module" else s.name)
        value = ""
        if s.value is not None:
            value = _num(s.value)
        rows.append({
            "step": s,
            "index": str(s.index),
            "label": label,
            "io": _io(s),
            "value": value,
            "pass": str(s.iteration) if s.iteration else "",
            "line": f"{s.lineno}: {s.line}" if s.line else (str(s.lineno) if s.lineno else ""),
        })
    return rows


_HEADS = {"index": "#", "label": "step", "io": "in → out", "value": "value", "pass": "pass",
          "line": "line"}


def _columns(rows) -> list:
    """The table's columns: "value" and "pass" only if some row has one."""
    return [c for c in ("index", "label", "io", "value", "pass", "line")
            if c not in ("value", "pass") or any(r[c] for r in rows)]


def trace_text(trace, view: str = "default", max_rows: int | None = 400,
               width: int | None = 88, line_width: int | None = None) -> str:
    """A plain-text table of the steps of one view, about ``width`` characters wide (the
    width of a book page): long shape lists are cut first, then the source line gets the
    room that is left, at least 20 characters, at most ``line_width``. ``width=None``:
    no limit (the command line). The stepper and ``trace_html`` show everything."""
    rows = _rows(trace, view)
    head = _HEADS
    shown = rows if max_rows is None else rows[:max_rows]
    cols = _columns(shown)
    for r in shown:
        if r["step"].error:
            r["label"] = r["label"] + "  ✗"
        if width is not None:
            r["io"] = _clip(r["io"], 36)
    widths = {c: max([len(head[c])] + [len(r[c]) for r in shown]) for c in cols}
    if width is not None:
        rest = width - sum(widths[c] + 2 for c in cols if c != "line")
        widths["line"] = min(widths["line"], max(rest, 20))
    if line_width is not None:
        widths["line"] = min(widths["line"], line_width)
    for r in shown:
        r["line"] = _clip(r["line"], widths["line"])
    lines = [f"Trace of {trace.model_name}: {len(trace.steps)} steps"
             + (f" ({len(rows)} shown in view '{view}')" if len(rows) != len(trace.steps) else "")]
    lines.append("  ".join(head[c].ljust(widths[c]) for c in cols).rstrip())
    lines.append("  ".join("-" * widths[c] for c in cols))
    for r in shown:
        lines.append("  ".join(r[c].ljust(widths[c]) for c in cols).rstrip())
    if len(rows) > len(shown):
        lines.append(f"… {len(rows) - len(shown)} more steps (t.to_text(max_rows=None) shows "
                     "all)")
    failed = trace.failed_step
    if failed is not None:
        lines.append(f"✗ step #{failed.index} ({failed.name}{_at_line(failed)}) failed: "
                     f"{failed.error}")
    elif trace.error is not None:
        lines.append(f"✗ the forward pass raised {type(trace.error).__name__}: {trace.error}")
    if trace.truncated:
        lines.append("(truncated: the trace stopped at max_steps)")
    return "\n".join(lines)


STYLE = """<style>
.lb-table {
  border-collapse:collapse;
  font:12px/1.35 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
}
table.lb-table th,table.lb-table td {
  padding:2px 8px;text-align:left;border-bottom:1px solid #e3e3e3;
  vertical-align:top;white-space:pre;
}
table.lb-table td.lb-wrap {
  white-space:normal;min-width:12em;
}
.lb-table th {
  background:#f4f4f4;
}
.lb-table tr.lb-mod td.lb-name {
  font-weight:600;
}
.lb-table tr.lb-err td {
  background:#fde8e8;color:#8a1111;
}
.lb-step {
  font:13px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;
  border:1px solid #d0d7de;border-radius:6px;padding:8px 10px;min-height:260px;
}
.lb-step.lb-error {
  border:2px solid #c62828;background:#fff7f7;
}
.lb-crumb {
  font-weight:600;margin-bottom:4px;
}
.lb-crumb .lb-sep {
  color:#888;padding:0 4px;
}
.lb-meta {
  color:#444;margin-bottom:6px;
}
.lb-row {
  display:flex;gap:14px;flex-wrap:wrap;align-items:flex-start;
}
.lb-code {
  flex:1 1 440px;min-width:0;
}
.lb-via {
  color:#555;font-size:12px;margin-bottom:2px;
}
.lb-src {
  margin:0;padding:6px 8px;background:#f6f8fa;border-radius:4px;
  font:12px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
  white-space:pre;overflow-x:auto;
}
.lb-src .lb-cur {
  background:#fff3b0;font-weight:700;display:inline-block;min-width:100%;
}
.lb-error .lb-src .lb-cur {
  background:#ffd6d6;
}
.lb-side {
  flex:0 1 290px;min-width:230px;
}
.lb-expr {
  font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
  background:#eef6ff;border-radius:4px;padding:3px 6px;margin-bottom:6px;
  word-break:break-word;
}
.lb-shapes {
  display:flex;align-items:center;gap:6px;flex-wrap:wrap;margin-bottom:6px;
}
.lb-box {
  display:inline-flex;flex-direction:column;align-items:center;
  font:11px ui-monospace,monospace;
}
.lb-rect {
  background:#9ec5fe;border:1px solid #3d6fb6;margin-bottom:2px;
}
.lb-box.lb-out .lb-rect {
  background:#a3d9a5;border-color:#2e7d32;
}
.lb-preview {
  color: #555;
  font-size: 11px;
  max-width: 124px;
  white-space: normal;
  text-align: center;
}
.lb-group {
  display:inline-flex;align-items:center;gap:6px;
}
.lb-nw {
  white-space:nowrap;
}
.lb-arrow {
  color:#666;
}
.lb-errmsg {
  color:#8a1111;background:#fde8e8;border-left:4px solid #c62828;padding:4px 6px;
  margin-top:6px;white-space:pre-wrap;font:12px ui-monospace,monospace;
}
.lb-tree {
  margin:0;padding:0;list-style:none;font:12px/1.35 ui-monospace,monospace;
}
.lb-tree li {
  white-space:pre;overflow:hidden;text-overflow:ellipsis;
}
.lb-tree li.lb-here {
  font-weight:700;background:#fff3b0;
}
.lb-tree li.lb-anc {
  font-weight:600;
}
.lb-h {
  font-size:11px;text-transform:uppercase;letter-spacing:.04em;color:#666;
  margin:4px 0 2px;
}
.lb-stepper .jupyter-widget-Collapse-header {
  color:#1f4e8c;background:#eef4fb;
}
</style>"""


def trace_html(trace, view: str = "default", max_rows: int | None = 2000,
               with_style: bool = True) -> str:
    """A static HTML table of the steps of one view (escaped)."""
    rows = _rows(trace, view)
    shown = rows if max_rows is None else rows[:max_rows]
    cols = _columns(shown)
    out = [STYLE if with_style else "",
           f'<table class="lb-table"><caption style="text-align:left">Trace of '
           f"{esc(trace.model_name)}: {len(trace.steps)} steps"
           + (f", {len(rows)} in view “{esc(view)}”" if len(rows) != len(trace.steps) else "")
           + "</caption>",
           "<thead><tr>" + "".join(f"<th>{_HEADS[c]}</th>" for c in cols) + "</tr></thead>"
           "<tbody>"]
    for r in shown:
        s = r["step"]
        cls = ["lb-mod" if s.kind == "module" else "lb-op"]
        if s.error:
            cls.append("lb-err")
        mark = " ✗" if s.error else ""
        title = f' title="{esc(s.error)}"' if s.error else ""
        cells = {"index": f"<td>{r['index']}</td>",
                 "label": f'<td class="lb-name">{esc(r["label"])}{mark}</td>',
                 "io": f'<td class="lb-wrap">{esc(_unbroken_shapes(r["io"]))}</td>',
                 "value": f"<td>{esc(r['value'])}</td>", "pass": f"<td>{r['pass']}</td>",
                 "line": f'<td class="lb-wrap">{esc(r["line"])}</td>'}
        out.append(f'<tr class="{" ".join(cls)}"{title}>'
                   + "".join(cells[c] for c in cols) + "</tr>")
    out.append("</tbody></table>")
    if len(rows) > len(shown):
        out.append(f"<p>… {len(rows) - len(shown)} more steps not shown.</p>")
    failed = trace.failed_step
    if failed is not None:
        out.append(f'<div class="lb-errmsg">✗ step #{failed.index} ({esc(failed.name)}'
                   f"{_at_line(failed)}) failed: {esc(failed.error)}</div>")
    return "".join(out)


# --------------------------------------------------------------------------- summary


TYPE_WIDTH = 24  # characters of a class name in the text summary


class Summary:
    """Per module: calls, parameters, input → output shapes (of its first call)."""

    def __init__(self, trace):
        self.model_name = trace.model_name
        calls: dict = {}
        first: dict = {}
        varies: set = set()
        for s in trace.steps:
            if s.kind != "module":
                continue
            calls[s.path] = calls.get(s.path, 0) + 1
            io = _io(s, runs=True)
            if s.path not in first:
                first[s.path] = io
            elif first[s.path] != io:
                varies.add(s.path)
        self.rows = []
        for path, info in trace.modules.items():
            n = calls.get(path, 0)
            io = first.get(path, "not called")
            if path in varies:
                io += " (first call; later calls differ)"
            self.rows.append({
                "path": path or "(root)", "type": info.type, "calls": n,
                "params": info.params, "io": io,
                "depth": path.count(".") + 1 if path else 0,
            })
        self.total_params = trace.modules[""].params if "" in trace.modules else 0

    def to_text(self) -> str:
        head = ["module", "type", "calls", "params", "in → out"]
        # a tree: each module by its own name under its parent's, so that the table fits
        # a book page (the HTML table and ``rows`` keep the full dotted paths)
        body = [["  " * r["depth"] + r["path"].rpartition(".")[2], _clip(r["type"], TYPE_WIDTH),
                 str(r["calls"]), f"{r['params']:,}", r["io"]] for r in self.rows]
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip(),
                 "  ".join("-" * w for w in widths)]
        for b in body:
            lines.append("  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)).rstrip())
        lines.append(f"total parameters: {self.total_params:,}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        out = [STYLE, f'<table class="lb-table"><caption style="text-align:left">Summary of '
               f"{esc(self.model_name)}: {self.total_params:,} parameters</caption><thead><tr>"
               "<th>module</th><th>type</th><th>calls</th><th>params</th><th>in → out</th>"
               "</tr></thead><tbody>"]
        for r in self.rows:
            out.append(f"<tr><td>{esc('  ' * r['depth'] + r['path'])}</td><td>{esc(r['type'])}"
                       f"</td><td>{r['calls']}</td><td>{r['params']:,}</td>"
                       f"<td class=\"lb-wrap\">{esc(_unbroken_shapes(r['io']))}</td></tr>")
        out.append("</tbody></table>")
        return "".join(out)


# ------------------------------------------------------------------------ step views


def _crumb(trace, step) -> str:
    """``MySequential › 2 · Linear(8 → 10)`` (escaped HTML)."""
    parts = []
    root = trace.modules.get("")
    parts.append(esc(root.type if root else trace.model_name))
    if step.path:
        prefix = []
        for piece in step.path.split("."):
            prefix.append(piece)
            info = trace.modules.get(".".join(prefix))
            label = module_label(info) if info else ""
            parts.append(f"{esc(piece)} · {esc(label)}" if label else esc(piece))
    if step.kind == "op":
        parts.append(f"<code>{esc(step.name)}</code>")
    return '<span class="lb-sep">›</span>'.join(parts)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _nowrap_shapes(html: str) -> str:
    """Keep each shape, e.g. ``(8, 6, 14, 14)``, on one line."""
    return _SHAPE.sub(lambda m: f'<span class="lb-nw">{m.group(0)}</span>', html)


_SHAPE = re.compile(r"\(\d+(?:, \d+)+\)")


def _at_line(step) -> str:
    """", line 12" for a step with a source line; "" when no Python source called it."""
    return f", line {step.lineno}" if step.lineno else ""


def _via(trace, step) -> str:
    """For a step made inside PyTorch's own code (a layer's op, or a child called by
    ``nn.Sequential.forward``): the torch code in between, since the source shown is the
    line of the reader's code that called it."""
    parent = trace.steps[step.parent] if step.parent is not None else None
    if parent is None or parent.kind != "module":
        return ""
    if step.kind == "op" and not step.internal:
        return ""
    if step.kind == "module" and (step.filename, step.lineno, step.func_firstlineno) != (
            parent.filename, parent.lineno, parent.func_firstlineno):
        return ""
    return (f'<div class="lb-via">inside PyTorch’s {esc(parent.name)}.forward, '
            "called by the marked line</div>")


def _pass_word(step) -> str:
    """"check" for a step of a loop's or branch's condition line (``while X.sum() > 1:``
    runs once more than the loop's body), "pass" for the others."""
    first = step.line.split(None, 1)[0] if step.line else ""
    return "check" if first in ("while", "if", "elif") else "pass"


def _where(step) -> str:
    """``forward · line 16``, or ``cell · line 3`` for code typed in a notebook cell."""
    func = step.func_name
    if func == "<module>":
        name = step.filename.rsplit("/", 1)[-1]
        func = "cell" if "ipykernel" in step.filename or name.startswith("<") else name
    return f"{func} · line {step.lineno}"


def _source(trace, step, context: int = 4, width: int = 88) -> str:
    lines = trace.source_of(step)
    if not step.lineno:
        return '<pre class="lb-src">(called from outside any Python source)</pre>'
    if not lines:
        return f'<pre class="lb-src"><span class="lb-cur">▶ {esc(step.line)}</span></pre>'
    cur = step.lineno - step.func_firstlineno
    if not 0 <= cur < len(lines):
        return f'<pre class="lb-src"><span class="lb-cur">▶ {esc(step.line)}</span></pre>'
    lo = max(0, cur - context)
    hi = min(len(lines), cur + context + 1)
    out = []
    for i in range(lo, hi):
        line = lines[i].rstrip()
        text = esc(line if len(line) <= width else line[: width - 1] + "…")
        num = f"{step.func_firstlineno + i:>3} "
        if i == cur:
            tag = ""
            if step.iteration:
                tag = f"   ← {_pass_word(step)} {step.iteration}"
            out.append(f'<span class="lb-cur">▶{num}{text}{esc(tag)}</span>')
        else:
            out.append(f" {num}{text}")
    return '<pre class="lb-src">' + "\n".join(out) + "</pre>"


def _box(v, cls) -> str:
    """A rectangle whose area grows with the tensor's number of elements: the leading half
    of the dimensions make its height, the rest its width ((N, C, H, W): N·C by H·W, as
    in ``plots.shape_flow``), on a square-root scale, capped at 60 by 90 pixels."""
    shape = v.shape
    k = len(shape) // 2
    rows, cols = math.prod(shape[:k]), math.prod(shape[k:])
    w = max(6, min(90, round(6 * math.sqrt(max(cols, 1)))))
    h = max(6, min(60, round(6 * math.sqrt(max(rows, 1)))))
    value = f" = {_num(v.value)}" if v.value is not None else ""
    label = f"{fmt_shape(shape)} {v.dtype_name}{value}"
    preview = ""
    if v.preview:  # trace(..., values=True): the first few numbers
        shown = v.preview[:_PREVIEW]
        more = ", …" if v.numel > len(shown) else ""
        preview = ('<span class="lb-preview">[' + esc(", ".join(_num(x) for x in shown))
                   + esc(more) + "]</span>")
    return (f'<span class="lb-box {cls}"><span class="lb-rect" style="width:{w}px;height:{h}px">'
            f"</span>{esc(label)}{preview}</span>")


_PREVIEW = 6  # numbers of a tensor shown under its box


def _shapes(step) -> str:
    ins = [v for v in step.inputs if v.is_tensor][:3]
    outs = [v for v in step.outputs if v.is_tensor][:3]
    if not ins and not outs:
        return ""
    parts = [_box(v, "lb-in") for v in ins] or ['<span class="lb-box">·</span>']
    # the arrow and the outputs form one group, so that a wrapped row keeps them together
    right = ['<span class="lb-arrow">→</span>']
    if outs:
        right += [_box(v, "lb-out") for v in outs]
    elif step.outputs:
        right.append(f'<span class="lb-box">{esc(fmt_value(step.outputs[0]))}</span>')
    else:
        right.append('<span class="lb-box">✗</span>' if step.error else
                     '<span class="lb-box">None</span>')
    return ('<div class="lb-shapes">' + "".join(parts)
            + '<span class="lb-group">' + "".join(right) + "</span></div>")


def _tree(trace, step, max_nodes: int = 24) -> str:
    here = step.path if step.kind == "module" else step.path
    ancestors = set()
    if here:
        parts = here.split(".")
        ancestors = {".".join(parts[:k]) for k in range(len(parts))}
    ancestors.add("")
    mods = trace.modules
    if len(mods) <= max_nodes:
        shown = list(mods)
    else:  # the current module, its ancestors and a few siblings around it
        keep = set(ancestors) | {here}
        for a in list(ancestors):
            kids = mods[a].children if a in mods else []
            at = next((i for i, k in enumerate(kids) if here == k or here.startswith(k + ".")),
                      0)
            keep.update(kids[max(0, at - 2): at + 3])
        shown = [p for p in mods if p in keep]
    items = []
    for p in shown:
        info = mods[p]
        depth = p.count(".") + 1 if p else 0
        name = p.rsplit(".", 1)[-1] if p else "(root)"
        cls = ""
        mark = "  "
        if p == here:
            cls, mark = ' class="lb-here"', "▶ "
        elif p in ancestors:
            cls = ' class="lb-anc"'
        items.append(f"<li{cls}>{mark}{'  ' * depth}{esc(name)} · {esc(module_label(info))}</li>")
    hidden = len(mods) - len(shown)
    if hidden:
        items.append(f"<li>  … {hidden} more modules</li>")
    return '<ul class="lb-tree">' + "".join(items) + "</ul>"


def step_html(trace, step, position: str = "") -> str:
    """The view of one step for the stepper (``position``: e.g. "6 of 31"): breadcrumb,
    the forward source around the step with its line marked, input → output shapes as
    boxes, the value for scalars, the module tree with the current module highlighted,
    the error if it failed."""
    kind = "module call" if step.kind == "module" else (
        "op inside a torch layer" if step.internal else "op")
    # "step 6 of 31" counts the steps of the stepper's view; the trace's own index (which
    # also counts the hidden steps) is added only when it differs
    meta = [f"step {position}" if position else f"step {step.index}"]
    if position and not position.startswith(f"{step.index + 1} of"):
        meta.append(f"trace step #{step.index}")
    meta.append(kind)
    if step.kind == "module" and step.call:
        meta.append(f"call {step.call}")
    if step.iteration:
        meta.append(f"loop {_pass_word(step)} {step.iteration}")
    if step.inplace:
        meta.append("in place")
    if step.lineno:
        meta.append(_where(step))
    err = ""
    if step.error:
        meta.append("FAILED")
        err = f'<div class="lb-errmsg">✗ {esc(step.error)}</div>'
    cls = "lb-step lb-error" if step.error else "lb-step"
    return (
        f'<div class="{cls}"><div class="lb-crumb">{_crumb(trace, step)}</div>'
        f'<div class="lb-meta">{esc(" · ".join(meta))}</div>'
        f'<div class="lb-row"><div class="lb-code">{_via(trace, step)}{_source(trace, step)}'
        f'</div><div class="lb-side">'
        f'<div class="lb-expr">{_nowrap_shapes(esc(step_expr(step, trace)))}</div>'
        f'{_shapes(step)}'
        f'<div class="lb-h">modules</div>{_tree(trace, step)}</div></div>{err}</div>'
    )
