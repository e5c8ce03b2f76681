"""book_src.widgets: the stepper, built and driven from Python (the browser tests drive it
on the built site and in JupyterLab)."""

import json

import ipywidgets as W
import pytest
import torch
from example_models import FixedHiddenMLP, MySequential
from ipywidgets.embed import dependency_state
from torch import nn

from book_src import show, trace
from book_src.widgets import Stepper, parse_shapes


def state_bytes(stepper):
    """Size of the widget state a page embeds for this stepper, defaults included (as
    nbclient saves it when the book is built)."""
    state = dependency_state([stepper.widget], drop_defaults=False)
    return len(json.dumps(state, ensure_ascii=False))


def links(stepper):
    """(source, target) trait pairs of the client-side links in the widget state."""
    state = dependency_state([stepper.widget])
    ids = {stepper.play.model_id: "play", stepper.slider.model_id: "slider",
           stepper.stack.model_id: "stack"}
    pairs = set()
    for model in state.values():
        if model["model_name"] == "LinkModel":
            (s_id, s_trait), (t_id, t_trait) = model["state"]["source"], model["state"]["target"]
            pairs.add((f"{ids.get(s_id.removeprefix('IPY_MODEL_'))}.{s_trait}",
                       f"{ids.get(t_id.removeprefix('IPY_MODEL_'))}.{t_trait}"))
    return pairs


def my_sequential():
    return MySequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 10), nn.Sigmoid())


def test_stepper_has_one_view_per_step_linked_on_the_client():
    torch.manual_seed(0)
    st = show(FixedHiddenMLP(), torch.rand(2, 20), live=False)
    steps = st.trace.view("default")
    assert len(st.stack.children) == len(steps)
    assert st.slider.max == st.play.max == len(steps) - 1
    assert links(st) == {("play.value", "slider.value"), ("slider.value", "stack.selected_index")}
    # each child shows its own step: the loop's halvings carry their pass number
    halving = [i for i, s in enumerate(steps) if s.name == "/="]
    for n, i in enumerate(halving, start=1):
        html = st.stack.children[i].value
        assert "X /= 2" in html and f"loop pass {n}" in html and f"← pass {n}" in html
    # the while condition, pass by pass: the comparison, then its truth value
    tests = [i for i, s in enumerate(steps) if s.name == "bool"]
    for i in tests:
        value = steps[i - 1].inputs[0].value
        html = st.stack.children[i].value
        assert f"tensor({value:.4g}) &gt; 1 → {steps[i].value}" in html  # escaped once
        assert f"tensor({value:.4g}) &gt; 1 → tensor({steps[i].value})" in \
            st.stack.children[i - 1].value
    assert steps[tests[-1]].value is False


def test_labels_and_static_mode_hides_live_controls(monkeypatch):
    monkeypatch.setenv("LAYERS_BLOCKS_STATIC", "1")
    st = show(my_sequential(), torch.randn(2, 4))
    assert not st.live
    assert st.slider.description == "step" and st.play.description == "Play"
    assert not any(isinstance(w, W.Text) for w in _walk(st.widget))
    assert "run this page in Jupyter" in st.header.value
    monkeypatch.delenv("LAYERS_BLOCKS_STATIC")
    live = show(my_sequential(), torch.randn(2, 4))
    assert live.live and live.shape_box.description == "input shape"
    assert live.shape_box.value == "2, 4"


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


def test_retrace_with_a_new_shape_updates_the_views():
    st = show(my_sequential(), torch.randn(2, 4), live=True)
    first = st.stack.children[1].value
    assert "(2, 4)" in first
    st.shape_box.value = "8, 4"  # as typing in the box and pressing Enter
    assert st.trace.steps[0].input_shapes == [(8, 4)]
    assert "(8, 4)" in st.stack.children[1].value and "(8, 10)" in st.stack.children[-1].value
    assert "✓" in st.status.value
    assert st.slider.value == 0
    # the root call still points at the line that made the stepper, not at the callback
    assert st.trace.steps[0].line == 'st = show(my_sequential(), torch.randn(2, 4), live=True)'
    assert "st = show(my_sequential()" in st.stack.children[0].value


@pytest.mark.parametrize("text,message", [
    ("8, x", "invalid shape"), ("", "invalid shape"), ("8, 4; 3", "expected 1 shape"),
    ("8, 5", "mat1 and mat2 shapes cannot be multiplied"),
])
def test_bad_shape_or_failing_forward_keeps_the_previous_trace(text, message):
    st = show(my_sequential(), torch.randn(2, 4), live=True)
    before = st.trace
    children = [c.value for c in st.stack.children]
    st.retrace(text)
    assert message in st.status.value and "✗" in st.status.value
    assert st.trace is before
    assert [c.value for c in st.stack.children] == children


def test_views_switch_in_a_live_kernel():
    st = show(FixedHiddenMLP(), torch.rand(2, 20), live=True)
    n_default = len(st.stack.children)
    st.view_buttons.value = "all"
    assert len(st.stack.children) == len(st.trace.steps) > n_default
    st.view_buttons.value = "modules"
    assert len(st.stack.children) == 3
    assert all("module call" in c.value for c in st.stack.children)


def test_failing_step_is_red_and_says_so():
    net = nn.Sequential(nn.Linear(784, 10))
    st = show(net, torch.randn(84, 28), live=False)
    last = st.stack.children[-1].value
    assert "lb-error" in last and "FAILED" in last and "✗" in last
    assert "mat1 and mat2 shapes cannot be multiplied (84x28 and 784x10)" in last
    assert "failed at step" in st.header.value


def test_hostile_names_render_as_text():
    class Evil(nn.Module):
        def __init__(self):
            super().__init__()
            self.add_module("<img src=x onerror=alert(1)>", nn.ReLU())

        def extra_repr(self):
            return "<script>alert('x')</script>"

        def forward(self, X):
            return self._modules["<img src=x onerror=alert(1)>"](X)

    st = show(Evil(), torch.randn(2, 2), live=False)
    everything = st.header.value + st.table.value + "".join(c.value for c in st.stack.children)
    assert "<script>" not in everything and "<img " not in everything
    assert "&lt;img src=x onerror=alert(1)&gt;" in everything


def test_page_weight_of_a_100_step_trace_and_collapse_of_huge_ones():
    class Deep(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(
                [nn.Sequential(nn.Linear(16, 16), nn.ReLU()) for _ in range(12)])
            self.out = nn.Linear(16, 4)

        def forward(self, X):
            for block in self.blocks:
                X = block(X) + X
                X = X / X.norm()
            return self.out(X)

    st = Stepper(trace(Deep(), torch.randn(2, 16)), view="all", live=False)
    assert 95 <= len(st.stack.children) <= 105
    assert state_bytes(st) <= 300_000

    big = nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(400)])
    st = Stepper(trace(big, torch.randn(2, 8)), live=False)
    assert len(st.trace.steps) > 1000 and len(st.stack.children) == 300
    assert "too many to step through here" in st.header.value
    assert state_bytes(st) <= 1_200_000

    class Flat(nn.Module):  # 1,200 ops and one module call: collapsing would leave 1 step
        def forward(self, X):
            for _ in range(400):
                X = (X * 1.01).tanh() + 0.1
            return X

    st = Stepper(trace(Flat(), torch.randn(2, 8)), live=False)
    assert len(st.stack.children) == 300
    assert "the first 300" in st.header.value
    assert state_bytes(st) <= 1_200_000


def test_page_weight_of_100_steps_over_100_modules_with_long_names():
    class Wide(nn.Module):
        def __init__(self):
            super().__init__()
            for i in range(100):
                self.add_module(f"a_rather_long_descriptive_layer_name_{i:03d}", nn.Identity())

        def forward(self, X):
            for layer in self.children():
                X = layer(X)
            return X

    st = Stepper(trace(Wide(), torch.randn(2, 8)), live=False)
    assert len(st.stack.children) == 101
    assert state_bytes(st) <= 300_000


def test_parse_shapes():
    assert parse_shapes("8, 4") == [(8, 4)]
    assert parse_shapes("(5,)") == [(5,)]
    assert parse_shapes("2,3; 5") == [(2, 3), (5,)]
    for bad in ("", "0, 3", "a", "2,,3"):
        with pytest.raises(ValueError, match="invalid shape"):
            parse_shapes(bad)


def test_trace_show_returns_a_stepper():
    t = trace(my_sequential(), torch.randn(2, 4))
    st = t.show(live=False)
    assert isinstance(st, Stepper) and st.trace is t
    assert "application/vnd.jupyter.widget-view+json" in st._repr_mimebundle_()
    with pytest.raises(ValueError, match="unknown view"):
        Stepper(t, view="everything")
