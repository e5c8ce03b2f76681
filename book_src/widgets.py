"""A stepper widget: press Play and watch a forward pass, one step at a time.

Built from the HTML that ``book_src.render`` makes for each step. Stepping uses only
client-side links (``jslink``: Play → slider → Stack), so a stepper keeps working on
the static website with no kernel. With a live kernel it can also re-trace the model
for a new input shape and switch views.
"""

from __future__ import annotations

import os

import ipywidgets as W
import torch
from ipywidgets.widgets.widget_string import HTMLStyle

from . import render
from .tracing import Trace, trace

__all__ = ["Stepper", "show", "parse_shapes", "MAX_EMBEDDED"]

MAX_EMBEDDED = 300  # steps pre-rendered into one stepper; larger traces are collapsed
TABLE_ROWS = 400  # rows of the table under a stepper (print(trace) shows them all)
_VIEWS = {"default": "layers and your ops", "all": "also the ops inside layers",
          "modules": "module calls only"}
_BUTTONS = {"default": "layers + your ops", "all": "all ops", "modules": "modules only"}


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    """``"8, 4"`` → [(8, 4)]; ``"2,3; 5"`` → [(2, 3), (5,)] (one shape per input)."""
    shapes = []
    for part in text.split(";"):
        dims = [d.strip() for d in part.strip().strip("()[] ").split(",")]
        if len(dims) > 1 and dims[-1] == "":  # "5," or "(5,)"
            dims.pop()
        try:
            shape = tuple(int(d) for d in dims)
        except ValueError:
            shape = ()
        if not shape or any(d <= 0 for d in shape):
            raise ValueError(f"invalid shape {part.strip()!r}: write positive integers "
                             "separated by commas, e.g. 8, 4 (use ; between inputs)")
        shapes.append(shape)
    return shapes


def _like(example, shape):
    """A random input of ``shape`` with the dtype of ``example``."""
    if isinstance(example, torch.Tensor) and not example.is_floating_point():
        high = int(example.max().item()) + 1 if example.numel() else 2
        return torch.randint(0, max(high, 2), shape, dtype=example.dtype)
    dtype = example.dtype if isinstance(example, torch.Tensor) else torch.float32
    return torch.randn(*shape, dtype=dtype)


def _collapse(t: Trace, view: str, limit: int):
    """The steps to embed and a note saying what was left out, if anything: the view
    itself if it fits; else its module calls, or those at depth ≤ d for the deepest d
    that fits, if that leaves a good part of the trace to step through (at least a
    quarter of ``limit`` steps); else the first ``limit`` steps."""
    steps = t.view(view)
    if len(steps) <= limit:
        return steps, ""
    too_many = f"{len(steps):,} steps are too many to step through here: showing "
    enough = max(2, limit // 4)
    mods = t.view("modules")
    if enough <= len(mods) <= limit:
        return mods, too_many + f"the {len(mods)} module calls."
    for depth in range(max((s.depth for s in mods), default=0) - 1, 0, -1):
        shallow = [s for s in mods if s.depth <= depth]
        if len(shallow) <= limit:
            if len(shallow) >= enough:
                return shallow, too_many + (f"the {len(shallow)} module calls at depth "
                                            f"≤ {depth}.")
            break
    return steps[:limit], too_many + f"the first {limit}."


class Stepper:
    """Play, a step slider (arrow keys, Home, End) and the view of the current step.

    ``Stepper(trace)`` steps through a recorded trace. ``show(model, *inputs)`` also
    keeps the model, so that with a live kernel the input shape can be changed and the
    model traced again. ``live=None`` means live unless LAYERS_BLOCKS_STATIC=1 (set
    while the book's website is built, where no kernel will run the callbacks).
    """

    def __init__(self, trace: Trace, view: str = "default", model=None, inputs=(),
                 live: bool | None = None, max_embedded: int = MAX_EMBEDDED,
                 interval: int = 900, title: str | None = None):
        if view not in _VIEWS:
            raise ValueError(f"unknown view {view!r}: expected one of {', '.join(_VIEWS)}")
        self.trace = trace
        self.view = view
        self.model = model
        self.inputs = tuple(inputs)
        self.live = (os.environ.get("LAYERS_BLOCKS_STATIC") != "1") if live is None else live
        self.max_embedded = max_embedded
        self.title = title
        # full width with no side margins: ipywidgets' 2px margins would overflow 100%
        self._layout = W.Layout(width="100%", margin="2px 0px")
        self._style = HTMLStyle()

        self.play = W.Play(min=0, max=0, step=1, interval=interval, repeat=False,
                           show_repeat=False,
                           description="Play", tooltip="Play: step through the forward pass")
        # no readout: the slider counts from 0, the view's own "step 6 of 31" from 1
        self.slider = W.IntSlider(min=0, max=0, value=0, description="step", readout=False,
                                  continuous_update=True, layout=W.Layout(width="60%"),
                                  tooltip="Drag, or focus and press ←/→, Home, End")
        self.stack = W.Stack(children=[], selected_index=None, layout=W.Layout(width="100%"))
        W.jslink((self.play, "value"), (self.slider, "value"))
        W.jslink((self.slider, "value"), (self.stack, "selected_index"))
        self.header = W.HTML(layout=self._layout)
        self.table = W.HTML(layout=self._layout)
        self.details = W.Accordion(children=[self.table], selected_index=None)
        self.details.set_title(0, "All steps (table)")
        self.status = W.HTML(layout=self._layout)
        rows = [self.header, W.HBox([self.play, self.slider]), self.stack]
        if self.live:
            self.view_buttons = W.ToggleButtons(options=[(v, k) for k, v in _BUTTONS.items()],
                                                value=view, description="show",
                                                tooltips=list(_VIEWS.values()),
                                                style={"button_width": "auto"})
            self.view_buttons.observe(self._on_view, names="value")
        if self.live and model is not None:
            shapes = "; ".join(", ".join(str(d) for d in x.shape) for x in self.inputs
                               if isinstance(x, torch.Tensor))
            self.shape_box = W.Text(value=shapes, description="input shape",
                                    placeholder="e.g. 8, 4", continuous_update=False,
                                    tooltip="Shape of the input; ; between several inputs")
            self.retrace_button = W.Button(description="Trace again",
                                           tooltip="Run the model on a random input of this shape")
            self.shape_box.observe(lambda change: self.retrace(), names="value")
            self.retrace_button.on_click(lambda _: self.retrace())
            rows += [W.HBox([self.shape_box, self.retrace_button]), self.view_buttons,
                     self.status]
        elif self.live:
            rows += [self.view_buttons]
        rows.append(self.details)
        self.widget = W.VBox(rows)
        # classes for stylesheets and for the browser tests to find the parts by
        for part, name in ((self.widget, "lb-stepper"), (self.play, "lb-play"),
                           (self.slider, "lb-slider"), (self.stack, "lb-stack")):
            part.add_class(name)
        self._fill()

    # -- building

    def _fill(self):
        t = self.trace
        steps, note = _collapse(t, self.view, self.max_embedded)
        n = len(steps)
        # back to the first step before the views change, so that no frame shows a new
        # view at the old position; the browser may have moved the slider through jslink
        # without the kernel seeing it, hence the explicit sends
        self.slider.value = 0
        self.play.value = 0
        self.slider.send_state("value")
        self.play.send_state("value")
        old = self.stack.children
        children = []
        for i, s in enumerate(steps):
            children.append(W.HTML(render.step_html(t, s, f"{i + 1} of {n}"),
                                   layout=self._layout, style=self._style))
        self.stack.children = children
        self.stack.selected_index = 0 if n else None
        self.stack.send_state("selected_index")
        for w in old:
            w.close()
        self.slider.max = max(n - 1, 0)
        self.play.max = max(n - 1, 0)
        title = self.title or f"Stepping through {t.model_name}"
        state = ""
        if t.error is not None:
            failed = t.failed_step
            where = f" at step #{failed.index} ({failed.name})" if failed else ""
            state = f' — <b style="color:#8a1111">✗ failed{where}</b>'
        hint = ("" if self.live else
                " · run this page in Jupyter to re-trace with other input shapes")
        hidden = len(t.steps) - len(t.view(self.view))
        shown = _VIEWS[self.view]
        if hidden:
            shown += f"; {hidden} ops {'inside layers ' if self.view == 'default' else ''}hidden"
        self.header.value = (
            render.STYLE
            + f"<div><b>{render.esc(title)}</b>: {n} steps ({render.esc(shown)})"
            + state + f'<span style="color:#666">{hint}</span></div>'
            + (f'<div style="color:#555">{render.esc(note)}</div>' if note else "")
        )
        self.table.value = render.trace_html(t, self.view, max_rows=TABLE_ROWS,
                                             with_style=False)

    # -- live callbacks

    def _on_view(self, change):
        self.view = change["new"]
        self._fill()

    def retrace(self, text: str | None = None):
        """Trace the model again on random inputs of the shapes in ``text`` (or the text
        box). On a bad shape or a failing forward, show the error and keep the trace."""
        if self.model is None:
            self.status.value = ('<span style="color:#8a1111">✗ no model to re-trace: '
                                 "use show(model, X)</span>")
            return
        text = self.shape_box.value if text is None else text
        try:
            shapes = parse_shapes(text)
            n_tensors = sum(isinstance(x, torch.Tensor) for x in self.inputs)
            if len(shapes) != n_tensors:
                raise ValueError(f"expected {n_tensors} shape(s), one per input tensor, "
                                 f"got {len(shapes)}")
            pending = iter(shapes)
            new_inputs = [_like(x, next(pending)) if isinstance(x, torch.Tensor) else x
                          for x in self.inputs]
        except ValueError as exc:
            self.status.value = f'<span style="color:#8a1111">✗ {render.esc(exc)}</span>'
            return
        t = trace(self.model, *new_inputs)
        if t.error is not None:
            failed = t.failed_step
            where = (f" at step #{failed.index} ({failed.name}, line {failed.lineno}: "
                     f"{failed.line})") if failed else ""
            self.status.value = (
                f'<span style="color:#8a1111">✗ input shape {render.esc(text)} fails'
                f"{render.esc(where)}: {render.esc(t.error)}</span> — keeping the "
                "previous trace.")
            return
        _keep_root_line(t, self.trace)
        self.trace, self.inputs = t, tuple(new_inputs)
        self.status.value = f"✓ traced again with input shape {render.esc(text)}"
        self._fill()

    # -- display

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"<Stepper over {self.trace!r}>"


def _keep_root_line(new: Trace, old: Trace) -> None:
    """A re-trace starts in a widget callback, not in the reader's code: point its root
    call at the line that made the stepper, like the first trace."""
    if not new.steps or not old.steps:
        return
    root, first = new.steps[0], old.steps[0]
    for field in ("filename", "lineno", "line", "func_name", "func_firstlineno"):
        setattr(root, field, getattr(first, field))
    key = (first.filename, first.func_firstlineno)
    if key in old.sources:
        new.sources[key] = old.sources[key]


def show(model, *inputs, view: str = "default", **kwargs) -> Stepper:
    """Trace ``model(*inputs)`` and return a stepper for it (displays itself)."""
    options = {k: kwargs.pop(k) for k in ("live", "max_embedded", "interval", "title")
               if k in kwargs}
    t = trace(model, *inputs, **kwargs)
    return Stepper(t, view=view, model=model, inputs=inputs, **options)
