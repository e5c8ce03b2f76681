"""book_src.plots: each figure is rendered, then what it drew is checked against the trace
or against torch itself."""

import matplotlib

matplotlib.use("Agg")

import io
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.colors import same_color
from matplotlib.figure import Figure
from torch import nn
from torch.nn import functional as F

from book_src import plots, trace


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
        "0 · Linear(4→8) · 40 params",
        "1 · ReLU · 0 params",
        "2 · Linear(8→10) · 90 params",
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
    assert labels[1] == "0 · Linear(20→256) · 5,376 params"
    assert labels[0].endswith(f"{sum(p.numel() for p in net.parameters()):,} params")


def test_module_tree_highlights_one_path():
    net = nn.Sequential(nn.Sequential(nn.Linear(2, 3), nn.ReLU()), nn.Linear(3, 1))
    fig = render(plots.module_tree(net, highlight="0.0", max_depth=1))
    focus = texts(fig, "tree:focus")
    assert [t.get_text() for t in focus] == ["0 · Linear(2→3) · 9 params"]
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
    for i, b in enumerate(boxes):  # width ∝ √cols, until the minimum visible size
        expected = boxes[big].get_width() * math.sqrt(widths[i] / widths[big])
        assert b.get_width() == pytest.approx(max(expected, 0.05))


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
    assert ax.get_xlabel() == "loop pass" and ax.get_ylabel() == "value of X.abs().sum()"
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
