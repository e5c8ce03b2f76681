"""book_src.plots: each figure is rendered, then what it drew is checked against the trace
or against torch itself."""

import matplotlib

matplotlib.use("Agg")

import collections
import io
import itertools
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import same_color
from matplotlib.figure import Figure
from matplotlib.text import Text
from torch import nn
from torch.nn import functional as F

from book_src import plots, trace
from book_src import render as book_render


class FixedHiddenMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.rand_weight = torch.rand((20, 20), requires_grad=False)
        self.linear = nn.Linear(20, 20)

    def forward(self, X):
        X = self.linear(X)
        X = F.relu(torch.mm(X, self.rand_weight) + 1)
        X = self.linear(X)
        while X.abs().sum() > 1:
            X /= 2
        return X.sum()


class MySequential(nn.Module):
    def __init__(self, *args):
        super().__init__()
        for idx, module in enumerate(args):
            self._modules[str(idx)] = module

    def forward(self, X):
        for block in self._modules.values():
            X = block(X)
        return X


class TwoLoops(nn.Module):
    def forward(self, X):
        while X.abs().max() > 4:
            X = X / 2
        while X.norm() > 1e-3:
            X = X / 3
        return X


def my_sequential():
    return MySequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 10), nn.Sigmoid())


def render(fig):
    """Draw the figure to PNG (as the book does) and return it."""
    assert isinstance(fig, Figure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue().startswith(b"\x89PNG")
    return fig


def texts(fig, prefix):
    """Texts whose gid starts with ``prefix``, in drawing order."""
    return [t for ax in fig.axes for t in ax.texts if (t.get_gid() or "").startswith(prefix)]


def patches(fig, prefix):
    return [p for ax in fig.axes for p in ax.patches if (p.get_gid() or "").startswith(prefix)]


def line(fig, gid):
    found = [ln for ax in fig.axes for ln in ax.lines if ln.get_gid() == gid]
    assert len(found) == 1, f"expected one line {gid!r}, found {len(found)}"
    return found[0]


def fmt(shape):
    return "(" + ", ".join(map(str, shape)) + ")"


def drawn_extents(fig):
    """(text, window extent in pixels) of every visible, non-empty text of the figure,
    as drawn by Agg at the figure's size."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    # Tick labels: only those of ticks inside the view are drawn (the others keep stale
    # positions), and only on a visible axis.
    ticks = {id(t) for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
             for tick in axis.get_major_ticks() + axis.get_minor_ticks()
             for t in (tick.label1, tick.label2)}
    found = [t for t in fig.findobj(Text) if id(t) not in ticks]
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if not (ax.axison and axis.get_visible()):
                continue
            lo, hi = sorted(axis.get_view_interval())
            eps = 1e-9 * (hi - lo)
            drawn = (axis.get_major_ticks(len(axis.get_majorticklocs())) +
                     axis.get_minor_ticks(len(axis.get_minorticklocs())))
            found += [t for tick in drawn if lo - eps <= tick.get_loc() <= hi + eps
                      for t in (tick.label1, tick.label2)]
    return [(t, t.get_window_extent(renderer)) for t in found
            if t.get_visible() and t.get_text().strip()]


def assert_inside_figure(fig):
    extents = drawn_extents(fig)
    box = fig.bbox
    outside = [t.get_text() for t, e in extents if e.x0 < box.x0 - 0.5 or
               e.x1 > box.x1 + 0.5 or e.y0 < box.y0 - 0.5 or e.y1 > box.y1 + 0.5]
    assert not outside, f"texts cut off at the figure's edge: {outside}"


def overlap(a, b, tol=0.5):
    return (a.x0 < b.x1 - tol and b.x0 < a.x1 - tol and
            a.y0 < b.y1 - tol and b.y0 < a.y1 - tol)


def box_rows(fig):
    """Boxes per row of a shape_flow figure, top to bottom."""
    centers = [round(b.get_y() + b.get_height() / 2, 6) for b in patches(fig, "box:")]
    return [len(list(g)) for _, g in itertools.groupby(centers)]


# ------------------------------------------------------------------------ the module


def test_import_and_use_leave_pyplot_widgets_and_rcparams_alone():
    code = """
import sys, matplotlib
before = dict(matplotlib.rcParams)
import torch
from torch import nn
from book_src import plots, trace
net = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
t = trace(net, torch.randn(2, 3))
for fig in (plots.module_tree(net), plots.shape_flow(t), plots.activations(),
            plots.weights(net[0])):
    fig.savefig(__import__("io").BytesIO(), format="png")
assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
assert "ipywidgets" not in sys.modules, "ipywidgets was imported"
assert dict(matplotlib.rcParams) == before, "global rcParams changed"
"""
    # An explicit backend: resolving the default one would import pyplot by itself.
    env = {**os.environ, "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env)
    assert result.returncode == 0, result.stderr


def test_figures_are_book_width_and_show_themselves_in_jupyter():
    fig = plots.activations()
    assert isinstance(fig, plots.BookFigure)
    assert fig.get_size_inches()[0] == pytest.approx(7.0)
    png = fig._repr_png_()  # what IPython / myst-nb call when no inline backend is active
    assert png.startswith(b"\x89PNG")
    assert set(plots.__all__) >= {"module_tree", "shape_flow", "activations", "weights",
                                  "loop_condition"}


# ----------------------------------------------------------------------- module_tree


def test_module_tree_draws_one_box_per_module_with_its_parameter_count():
    net = my_sequential()
    fig = render(plots.module_tree(net))
    boxes = texts(fig, "tree:")
    assert [t.get_text() for t in boxes] == [
        "MySequential · 130 params",
        "0 · Linear(4 → 8) · 40 params",
        "1 · ReLU · 0 params",
        "2 · Linear(8 → 10) · 90 params",
        "3 · Sigmoid · 0 params",
    ]
    assert all(t.get_bbox_patch() is not None for t in boxes)
    assert sum(p.numel() for p in net.parameters()) == 130
    assert "130 parameters" in fig.get_suptitle()


@pytest.mark.parametrize("make", [FixedHiddenMLP, my_sequential,
                                  lambda: nn.Sequential(my_sequential(), FixedHiddenMLP())])
def test_module_tree_of_a_trace_matches_the_module(make):
    torch.manual_seed(0)
    net = make()
    X = torch.randn(2, 20 if isinstance(net, FixedHiddenMLP) else 4)
    from_model = [t.get_text() for t in texts(render(plots.module_tree(net)), "tree:")]
    from_trace = [t.get_text() for t in texts(render(plots.module_tree(trace(net, X))),
                                               "tree:")]
    assert from_model == from_trace
    assert len(from_model) == len(dict(net.named_modules()))


def test_module_tree_counts_hidden_params_like_torch():
    net = nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 10))
    labels = [t.get_text() for t in texts(render(plots.module_tree(net)), "tree:")]
    assert labels[1] == "0 · Linear(20 → 256) · 5,376 params"
    assert labels[0].endswith(f"{sum(p.numel() for p in net.parameters()):,} params")


def test_module_tree_highlights_one_path():
    net = nn.Sequential(nn.Sequential(nn.Linear(2, 3), nn.ReLU()), nn.Linear(3, 1))
    fig = render(plots.module_tree(net, highlight="0.0", max_depth=1))
    focus = texts(fig, "tree:focus")
    assert [t.get_text() for t in focus] == ["0 · Linear(2 → 3) · 9 params"]
    assert focus[0].get_fontweight() == "bold"  # not colour alone
    with pytest.raises(ValueError, match="no module at path"):
        plots.module_tree(net, highlight="9")


def count_in(label):
    return int(label.split()[1].replace(",", ""))


def test_module_tree_collapses_large_trees_and_accounts_for_every_module():
    net = nn.Sequential(*[nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.ReLU(), nn.Tanh()))
                          for _ in range(40)])
    total = len(dict(net.named_modules()))  # 1 + 40 * 4
    for kw in ({"max_nodes": 20}, {"max_depth": 1, "max_nodes": 1000}, {}):
        fig = render(plots.module_tree(net, **kw))
        nodes = [t.get_text() for t in texts(fig, "tree:node")]
        more = [t.get_text() for t in texts(fig, "tree:more")]
        assert more and all(m.startswith("… ") for m in more)
        assert len(nodes) + sum(count_in(m) for m in more) == total
        assert len(nodes) + len(more) <= kw.get("max_nodes", 24)
    fig = plots.module_tree(net, max_depth=1, max_nodes=1000)
    hidden = [count_in(t.get_text()) for t in texts(fig, "tree:more")]
    assert hidden == [4] * 40  # under each block: Linear, Sequential, ReLU, Tanh


def test_module_tree_labels_convolutions_and_pools_with_channels_and_kernel():
    net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(),
                        nn.Conv2d(16, 32, (3, 5), stride=2, padding=1, bias=False),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(20, 20), nn.Dropout(0.5))
    labels = [t.get_text() for t in texts(render(plots.module_tree(net)), "tree:")]
    assert labels[1:] == [
        "0 · Conv2d(3 → 16, k=3) · 448 params",
        "1 · ReLU · 0 params",
        "2 · Conv2d(16 → 32, k=3×5, s=2, p=1) · 7,680 params",
        "3 · MaxPool2d(k=2, s=2) · 0 params",
        "4 · Flatten(start_dim=1, end_dim=-1) · 0 params",
        "5 · Linear(20 → 20) · 420 params",
        "6 · Dropout(p=0.5, inplace=False) · 0 params",
    ]
    # the same words as the stepper's labels (book_src.render) for a Linear
    info = trace(net[5], torch.randn(2, 20)).modules[""]
    assert labels[6] == f"5 · {book_render.module_label(info)} · 420 params"


def test_module_tree_of_an_uninitialized_lazy_layer_shows_unknown_counts():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.LazyLinear(3))
    fig = render(plots.module_tree(net))  # numel() of an UninitializedParameter raises
    assert [t.get_text() for t in texts(fig, "tree:")] == [
        "Sequential · 40 + ? params (lazy)",
        "0 · Linear(4 → 8) · 40 params",
        "1 · ReLU · 0 params",
        "2 · LazyLinear(? → 3) · ? params (lazy)",
    ]
    assert "40 + ? parameters" in fig.get_suptitle()
    net(torch.randn(2, 4))  # the first forward creates the weight: a plain Linear now
    labels = [t.get_text() for t in texts(render(plots.module_tree(net)), "tree:")]
    assert labels[0] == "Sequential · 67 params"
    assert labels[3] == "2 · Linear(8 → 3) · 27 params"
    # a trace that failed before reaching the lazy layer: it is still uninitialized
    t = trace(nn.Sequential(nn.Linear(4, 8), nn.Linear(9, 3), nn.LazyLinear(2)),
              torch.randn(2, 4))
    assert t.error is not None
    labels = [x.get_text() for x in texts(render(plots.module_tree(t)), "tree:")]
    assert labels[0] == "Sequential · 70 + ? params (lazy)"
    assert labels[3] == "2 · LazyLinear · ? params (lazy)"
    with pytest.raises(ValueError, match="not initialized"):
        plots.weights(nn.LazyLinear(3))


# ------------------------------------------------------------------------ shape_flow


def test_shape_flow_draws_one_box_per_step_with_shapes_in_order():
    torch.manual_seed(0)
    t = trace(my_sequential(), torch.randn(2, 4))
    fig = render(plots.shape_flow(t, view="modules"))
    assert [x.get_text() for x in texts(fig, "shape:")] == [
        "(2, 4)", "(2, 8)", "(2, 8)", "(2, 10)", "(2, 10)"]
    assert [x.get_text() for x in texts(fig, "name:")] == [
        "input", "Linear", "ReLU", "Linear", "Sigmoid"]
    boxes = patches(fig, "box:")
    assert len(boxes) == 5
    widths = [b.get_width() for b in boxes]
    assert widths[3] / widths[1] == pytest.approx(math.sqrt(10 / 8))  # sqrt scale
    assert widths[1] / widths[0] == pytest.approx(math.sqrt(8 / 4))
    assert len({round(b.get_height(), 9) for b in boxes}) == 1  # all have 2 rows
    root = t.view("modules")[0]
    assert [ln for ax in fig.axes for ln in ax.lines if ln.get_gid() == f"bracket:{root.index}"]
    legend = [x.get_text() for x in fig.axes[0].get_legend().get_texts()]
    assert "√rows" in legend[0] and "√cols" in legend[0]
    assert "MySequential" in fig.get_suptitle()


def test_shape_flow_log_scale_says_so():
    t = trace(nn.Sequential(nn.Linear(4, 64), nn.Linear(64, 2)), torch.randn(3, 4))
    fig = render(plots.shape_flow(t, scale="log"))
    widths = [b.get_width() for b in patches(fig, "box:")]
    assert widths[1] / widths[0] == pytest.approx((1 + math.log2(64)) / (1 + math.log2(4)))
    assert "log₂" in fig.axes[0].get_legend().get_texts()[0].get_text()
    with pytest.raises(ValueError, match="scale"):
        plots.shape_flow(t, scale="linear")


def test_shape_flow_default_view_shows_ops_passes_and_truncates():
    torch.manual_seed(0)
    t = trace(FixedHiddenMLP(), torch.rand(2, 20))
    shown = t.view("default")
    leaves = [s for s in shown if s.index not in {x.parent for x in shown}]
    fig = render(plots.shape_flow(t, view="default", max_steps=100))
    names = [x.get_text() for x in texts(fig, "name:")]
    assert names == ["input"] + [s.module_type or s.name for s in leaves]
    assert names[:6] == ["input", "Linear", "torch.mm", "+", "F.relu", "Linear"]
    assert names.count("/=") == sum(1 for s in t.steps if s.name == "/=")
    shapes = [x.get_text().split("\n")[0] for x in texts(fig, "shape:")]
    assert shapes[:3] == ["(2, 20)"] * 3 and shapes[-1] == "()"
    short = render(plots.shape_flow(t, view="default", max_steps=10))
    assert len(patches(short, "box:")) == 11  # input + 10
    assert texts(short, "more")[0].get_text() == f"… {len(leaves) - 10} more steps"


def test_shape_flow_marks_the_failing_step_red_and_hatched():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(9, 10))  # 8 != 9
    t = trace(net, torch.randn(2, 4))
    assert t.error is not None
    failing = [s for s in t.view("modules") if s.error and s.path == "2"]
    assert failing and failing[0].outputs == []
    fig = render(plots.shape_flow(t))
    boxes = patches(fig, "box:")
    hatched = [b for b in boxes if b.get_hatch()]
    assert len(boxes) == 4 and hatched == [boxes[-1]]
    edge = boxes[-1].get_edgecolor()
    assert edge[0] > 0.7 and edge[1] < 0.3 and edge[2] < 0.3  # red
    assert not any(b.get_hatch() for b in boxes[:-1])
    assert texts(fig, "shape:")[-1].get_text() == "✗ error"
    drawn = " ".join(x.get_text() for x in fig.axes[0].texts)
    assert "mat1 and mat2 shapes cannot be multiplied" in drawn
    legend = [x.get_text() for x in fig.axes[0].get_legend().get_texts()]
    assert "failing step" in legend


@settings(max_examples=25, deadline=None)
@given(widths=st.lists(st.integers(1, 300), min_size=2, max_size=8),
       batch=st.integers(1, 6), view=st.sampled_from(["modules", "default"]))
def test_shape_flow_labels_match_the_trace_for_random_linear_stacks(widths, batch, view):
    net = nn.Sequential(*[nn.Linear(a, b) for a, b in zip(widths, widths[1:], strict=False)])
    t = trace(net, torch.randn(batch, widths[0]))
    layers = [s for s in t.view(view) if s.path]
    fig = render(plots.shape_flow(t, view=view))
    labels = [x.get_text() for x in texts(fig, "shape:")]
    assert labels == [fmt((batch, widths[0]))] + [fmt(s.output_shapes[0]) for s in layers]
    assert labels[1:] == [fmt((batch, w)) for w in widths[1:]]
    boxes = patches(fig, "box:")
    big = max(range(len(widths)), key=lambda i: widths[i])
    for i, b in enumerate(boxes):  # width ∝ √cols (all are equally high), at least 0.05
        expected = boxes[big].get_width() * math.sqrt(widths[i] / widths[big])
        assert b.get_width() == pytest.approx(max(expected, 0.05))


class LongNames(nn.Module):
    """A block whose class name is long too."""

    def __init__(self):
        super().__init__()
        self.a_rather_long_attribute_name = nn.Conv2d(8, 8, 1)

    def forward(self, X):
        return self.a_rather_long_attribute_name(X)


def test_shape_flow_labels_never_overlap_and_long_names_keep_their_ends():
    layers = [nn.Conv2d(3, 96, 1), nn.ReLU(), nn.Conv2d(96, 8, 1), LongNames(),
              nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
              nn.Linear(8, 1000)]
    names = [f"a_very_long_submodule_name_number_{i}" for i in range(1, len(layers) + 1)]
    net = nn.Sequential(collections.OrderedDict(zip(names, layers, strict=True)))
    t = trace(net, torch.rand(16, 3, 32, 33))
    fig = render(plots.shape_flow(t, view="modules"))
    extents = drawn_extents(fig)
    labels = [(t, e) for t, e in extents if t.axes is not None]
    assert len(labels) > 3 * len(layers)
    clashes = [(a.get_text(), b.get_text()) for (a, ea), (b, eb)
               in itertools.combinations(labels, 2) if overlap(ea, eb)]
    assert not clashes
    assert_inside_figure(fig)
    # shortened in the middle, so that neighbours stay distinguishable
    subs = [x.get_text() for x in texts(fig, "sub:")][1:]  # [0]: the input's, empty
    assert len(subs) == len(layers)  # LongNames: its inner conv
    assert [x[-2:] for x in subs[:3]] == ["_1", "_2", "_3"] and "…" in subs[0]
    assert len(set(subs)) == len(subs)
    shapes = [x.get_text() for x in texts(fig, "shape:")]
    assert shapes[:2] == ["(16, 3, 32, 33)", "(16, 96, 32, 33)"]  # shapes are not cut


@pytest.mark.parametrize("n_layers, rows", [(4, [5]), (7, [8]), (8, [5, 4]), (9, [5, 5]),
                                            (16, [6, 6, 5]), (24, [7, 6, 6, 6])])
def test_shape_flow_balances_wrapped_rows(n_layers, rows):
    net = nn.Sequential(*[nn.Linear(4, 4) for _ in range(n_layers)])
    fig = render(plots.shape_flow(trace(net, torch.randn(2, 4))))
    assert box_rows(fig) == rows  # no lone box on a last row
    arrows = patches(fig, "arrow:")
    assert len(arrows) == n_layers + 1 - len(rows)  # one into each box but a row's first
    assert_inside_figure(fig)


def test_shape_flow_sizes_image_tensors_by_their_elements():
    net = nn.Sequential(nn.Conv2d(3, 64, 3, stride=4, padding=1), nn.ReLU(),
                        nn.Conv2d(64, 16, 1), nn.AdaptiveAvgPool2d(4), nn.Flatten())
    t = trace(net, torch.rand(8, 3, 32, 32))
    fig = render(plots.shape_flow(t, view="modules"))
    assert [x.get_text() for x in texts(fig, "shape:")] == [
        "(8, 3, 32, 32)", "(8, 64, 8, 8)", "(8, 64, 8, 8)", "(8, 16, 8, 8)",
        "(8, 16, 4, 4)", "(8, 256)"]
    boxes = patches(fig, "box:")
    w = [b.get_width() for b in boxes]
    h = [b.get_height() for b in boxes]
    area = [a * b for a, b in zip(w, h, strict=True)]
    # (N, C, H, W): height ∝ √(N·C), width ∝ √(H·W), so the area ∝ √elements
    assert h[1] / h[0] == pytest.approx(math.sqrt(64 / 3))
    assert w[1] / w[0] == pytest.approx(math.sqrt(64 / 1024))
    assert area[1] > area[0]  # 4,096 values per image are more than 3,072
    assert area[1] / area[0] == pytest.approx(math.sqrt(4096 / 3072))
    assert area[5] == pytest.approx(area[4])  # Flatten keeps every element
    legend = fig.axes[0].get_legend().get_texts()[0].get_text()
    assert "N·C" in legend and "H·W" in legend and "area" not in legend
    # one image: the input's box, √3 by √1024, is thinner than the 0.05 in minimum; it is
    # drawn that thick and shorter, so its area still compares right
    t = trace(net[:2], torch.rand(1, 3, 32, 32))
    boxes = patches(render(plots.shape_flow(t, view="modules")), "box:")
    assert min(b.get_height() for b in boxes) == pytest.approx(0.05)
    area = [b.get_width() * b.get_height() for b in boxes]
    assert area[1] / area[0] == pytest.approx(math.sqrt(4096 / 3072))


class TwoBranches(nn.Module):
    """Two branches read the same input; their outputs are concatenated."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU())

    def forward(self, X):
        return torch.cat([self.a(X), self.b(X)], dim=1)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, X):
        return X + self.lin2(F.relu(self.lin1(X)))


def into(fig, prefix):
    return sorted(int(p.get_gid().split(":")[1]) for p in patches(fig, prefix) +
                  [ln for ax in fig.axes for ln in ax.lines
                   if (ln.get_gid() or "").startswith(prefix)])


def test_shape_flow_does_not_chain_a_step_that_reads_another_tensor():
    t = trace(TwoBranches(), torch.rand(1, 3, 8, 8))
    fig = render(plots.shape_flow(t, view="modules"))
    # b.0 reads the input X, not a.1's output: no arrow from a.1, a break instead
    assert into(fig, "arrow:") == [1, 2, 4]
    assert into(fig, "break:") == [3]
    assert [x.get_text() for x in texts(fig, "sub:")] == ["", "0", "1", "0", "1"]
    assert "reads another tensor" in " ".join(
        x.get_text() for x in fig.axes[0].get_legend().get_texts())
    default = render(plots.shape_flow(t, view="default"))
    names = [x.get_text() for x in texts(default, "name:")]
    assert names[-1] == "torch.cat" and into(default, "break:") == [3]
    assert len(names) - 1 in into(default, "arrow:")  # cat reads b's output
    # a residual block: every step reads the box before it, so no break
    res = render(plots.shape_flow(trace(Residual(), torch.randn(2, 4)), view="default"))
    assert into(res, "break:") == [] and into(res, "arrow:") == [1, 2, 3, 4]
    # the loop: `X /= 2` reads X, not the `bool` before it; so does the final X.sum()
    torch.manual_seed(0)
    t = trace(FixedHiddenMLP(), torch.rand(2, 20))
    fig = render(plots.shape_flow(t, view="default", max_steps=100))
    names = [x.get_text() for x in texts(fig, "name:")]
    after_break = [names[i] for i in into(fig, "break:")]
    assert after_break and set(after_break) == {"/=", "sum"}
    assert after_break.count("/=") == names.count("/=")
    assert [names[i - 1] for i in into(fig, "break:")] == ["bool"] * len(after_break)


# ----------------------------------------------------------------------- activations


def test_activations_plots_torch_functions_one_subplot_each():
    fig = render(plots.activations())
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["ReLU(x)", "Sigmoid(x)", "tanh(x)"]
    assert all(ax.get_xlabel() == "input x" and ax.get_ylabel() == "output f(x)"
               for ax in axes)
    assert fig.get_suptitle() == "Activation functions"
    relu = line(fig, "ReLU")
    x, y = relu.get_xdata(), relu.get_ydata()
    assert x[0] == -5 and x[-1] == 5
    np.testing.assert_array_equal(y, np.maximum(0, x))
    sig = line(fig, "Sigmoid")
    np.testing.assert_allclose(sig.get_ydata(), torch.sigmoid(torch.tensor(x)).numpy(),
                               rtol=1e-6)


def test_activations_overlay_and_callables_and_unknown_names():
    fig = render(plots.activations(("tanh", nn.LeakyReLU(0.2)), x_range=(-2, 2),
                                   overlay=True))
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 1
    leaky = line(fig, "LeakyReLU")
    np.testing.assert_allclose(leaky.get_ydata()[0], -0.4, rtol=1e-6)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["tanh",
                                                                            "LeakyReLU"]
    with pytest.raises(ValueError, match="unknown activation"):
        plots.activations(("nope",))


# --------------------------------------------------------------------------- weights


def test_weights_heatmaps_and_histograms_share_scale_and_bins():
    torch.manual_seed(0)
    w_before = nn.Linear(20, 10).weight.detach().clone()
    w_after = nn.init.xavier_uniform_(w_before.clone())
    fig = render(plots.weights([w_before, w_after], labels=["default init",
                                                           "xavier_uniform_"]))
    heat = [ax for ax in fig.axes if ax.images]
    images = [ax.images[0] for ax in heat]
    vmax = max(w_before.abs().max().item(), w_after.abs().max().item())
    assert len(images) == 2
    assert images[0].get_clim() == images[1].get_clim() == pytest.approx((-vmax, vmax))
    assert all(im.colorbar is not None for im in images)
    np.testing.assert_allclose(images[1].get_array(), w_after.numpy())
    assert [ax.get_title() for ax in heat] == ["default init: 10×20", "xavier_uniform_: 10×20"]
    assert all(ax.get_xlabel() == "input feature (in)" and
               ax.get_ylabel() == "output unit (out)" for ax in heat)
    hists = [ax for ax in fig.axes if ax.get_xlabel() == "weight value"]
    assert len(hists) == 2 and all(ax.get_ylabel() == "count" for ax in hists)
    edges = [[p.get_x() for p in ax.patches] for ax in hists]
    assert edges[0] == edges[1] and len(edges[0]) == 40
    assert edges[0][0] == pytest.approx(-vmax)
    assert sum(p.get_height() for p in hists[1].patches) == w_after.numel()
    assert "default init vs xavier_uniform_" in fig.get_suptitle()


def test_weights_accepts_modules_and_checks_labels():
    fig = render(plots.weights(nn.Conv2d(3, 4, 3)))
    assert fig.axes[0].images[0].get_array().shape == (4, 27)
    with pytest.raises(ValueError, match="labels"):
        plots.weights([torch.ones(2, 2)], labels=["a", "b"])
    with pytest.raises(ValueError, match="no weight"):
        plots.weights(nn.ReLU())


@pytest.mark.parametrize("labels", [["default init", "xavier_uniform_"],
                                    ["the default initialisation of nn.Linear(20, 256)",
                                     "after nn.init.xavier_uniform_ with its default gain"]])
def test_weights_keeps_every_title_inside_the_figure(labels):
    torch.manual_seed(0)
    layer = nn.Linear(20, 256)
    w_before = layer.weight.detach().clone()
    nn.init.xavier_uniform_(layer.weight)
    fig = render(plots.weights([w_before, layer.weight], labels=labels))
    hists = [ax for ax in fig.axes if ax.get_xlabel() == "weight value"]
    for ax, w in zip(hists, [w_before, layer.weight.detach()], strict=True):
        title = " ".join(ax.get_title().split())
        assert f"mean {w.mean().item():.2g}" in title
        assert f"std {w.std(correction=0).item():.2g}" in title
    heat = [" ".join(ax.get_title().split()) for ax in fig.axes if ax.images]
    assert heat == [f"{lbl}: 256×20" for lbl in labels]
    assert_inside_figure(fig)


# -------------------------------------------------------------------- loop_condition


def test_loop_condition_plots_every_pass_with_outcome_and_threshold():
    torch.manual_seed(0)
    t = trace(FixedHiddenMLP(), torch.rand(2, 20))
    comps = [s for s in t.steps if s.name == ">"]
    assert len(comps) >= 2
    fig = render(plots.loop_condition(t))
    values = line(fig, "values")
    assert list(values.get_xdata()) == list(range(1, len(comps) + 1))
    assert list(values.get_ydata()) == [s.inputs[0].value for s in comps]
    true, false = line(fig, "outcome:True"), line(fig, "outcome:False")
    assert len(true.get_xdata()) == len(comps) - 1
    assert list(false.get_xdata()) == [len(comps)]  # the last check ends the loop
    assert true.get_marker() != false.get_marker()  # shape, not only colour
    assert not same_color(true.get_color(), false.get_color())
    assert list(line(fig, "threshold").get_ydata()) == [1, 1]
    assert line(fig, "threshold").get_linestyle() == "--"
    ax = fig.axes[0]
    assert "while X.abs().sum() > 1" in ax.get_title()
    assert ax.get_xlabel().startswith("check") and ax.get_ylabel() == "value of X.abs().sum()"
    assert ax.get_yscale() == "linear"
    assert all(float(x).is_integer() for x in ax.get_xticks())


def test_loop_condition_picks_a_line_and_uses_log_scale_for_wide_ranges():
    t = trace(TwoLoops(), torch.full((4,), 40.0))
    first = render(plots.loop_condition(t))
    assert "X.abs().max() > 4" in first.axes[0].get_title()
    second = render(plots.loop_condition(t, line="norm"))
    norms = [s.inputs[0].value for s in t.steps if s.name == ">" and "norm" in s.line]
    assert list(line(second, "values").get_ydata()) == norms
    assert second.axes[0].get_yscale() == "log"
    assert list(line(second, "threshold").get_ydata()) == [1e-3, 1e-3]
    lineno = next(s.lineno for s in t.steps if s.name == ">" and "norm" in s.line)
    by_number = plots.loop_condition(t, line=lineno)
    assert list(line(by_number, "values").get_ydata()) == norms
    custom = plots.loop_condition(t, line="norm", threshold=0.5)
    assert list(line(custom, "threshold").get_ydata()) == [0.5, 0.5]
    with pytest.raises(ValueError, match="no loop comparison matches"):
        plots.loop_condition(t, line="nowhere")


def test_loop_condition_without_a_loop_raises_a_clear_error():
    t = trace(my_sequential(), torch.randn(2, 4))
    with pytest.raises(ValueError, match="no loop comparison"):
        plots.loop_condition(t)
