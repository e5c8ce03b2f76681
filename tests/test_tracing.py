"""book_src.tracing, with PyTorch itself as the oracle."""

import json
import math
import warnings

import pytest
import torch
from example_models import FixedHiddenMLP, MySequential, chimera
from torch import nn
from torch.nn import functional as F

from book_src import PyValue, TensorInfo, TraceLimitError, trace


def direct(t):
    """Steps the reader wrote (no ops inside torch's own layers)."""
    return [s for s in t.steps if not s.internal]


# ------------------------------------------------------------------ FixedHiddenMLP


def test_fixed_hidden_mlp_records_every_step_in_order():
    torch.manual_seed(0)
    net = FixedHiddenMLP()
    X = torch.rand(2, 20)
    t = trace(net, X)
    assert t.error is None
    assert torch.equal(t.output, net(X))
    steps = direct(t)
    names = [s.name for s in steps]
    assert names[:7] == ["FixedHiddenMLP", "Linear", "torch.mm", "+", "F.relu", "Linear", "abs"]

    root, lin1, mm, add, relu, lin2 = steps[:6]
    assert root.kind == "module" and root.path == "" and root.depth == 0 and root.parent is None
    assert (lin1.kind, lin1.path, lin1.call, lin1.parent) == ("module", "linear", 1, 0)
    assert (lin2.kind, lin2.path, lin2.call, lin2.parent) == ("module", "linear", 2, 0)
    assert mm.input_shapes == [(2, 20), (20, 20)] and mm.output_shapes == [(2, 20)]
    assert mm.line == "X = F.relu(torch.mm(X, self.rand_weight) + 1)"
    assert add.input_shapes == [(2, 20), None] and add.inputs[1].value == 1
    assert relu.output_shapes == [(2, 20)]
    assert lin1.line == lin2.line == "X = self.linear(X)" and lin1.lineno != lin2.lineno

    # The while loop, pass by pass: abs, sum, >, bool, /= (in place)
    loop = steps[6:-1]
    halvings = [s for s in loop if s.name == "/="]
    conds = [s for s in loop if s.name == "bool"]
    assert len(conds) == len(halvings) + 1
    for i, s in enumerate(halvings, start=1):
        assert s.iteration == i and s.inplace and s.line == "X /= 2"
    for i, s in enumerate(conds, start=1):
        assert s.iteration == i and s.line == "while X.abs().sum() > 1:"
        assert s.value is (i <= len(halvings))
    for k in range(len(halvings)):
        chunk = [s.name for s in loop[5 * k: 5 * k + 5]]
        assert chunk == ["abs", "sum", ">", "bool", "/="]
    assert [s.name for s in loop[-4:]] == ["abs", "sum", ">", "bool"]
    gt = [s for s in loop if s.name == ">"]
    assert all(s.inputs[0].shape == () and s.inputs[0].value is not None for s in gt)
    assert [s.value for s in gt] == [s.value for s in conds]
    assert gt[-1].inputs[0].value <= 1 < gt[0].inputs[0].value

    # Number of halvings, computed independently of the tracer
    with torch.no_grad():
        Y = net.linear(F.relu(torch.mm(net.linear(X), net.rand_weight) + 1))
        n = 0
        while Y.abs().sum() > 1:
            Y /= 2
            n += 1
    assert len(halvings) == n > 0

    last = steps[-1]
    assert last.name == "sum" and last.output_shapes == [()]
    assert last.value == pytest.approx(t.output.item())
    assert root.output_shapes == [()]


def test_leaf_layer_internals_are_recorded_but_hidden_by_default():
    t = trace(FixedHiddenMLP(), torch.rand(2, 20))
    internal = [s for s in t.steps if s.internal]
    assert [s.name for s in internal] == ["F.linear", "F.linear"]
    assert all(t.steps[s.parent].name == "Linear" for s in internal)
    assert internal[0].input_shapes == [(2, 20), (20, 20), (20,)]
    assert not any(s.internal for s in t.view("default"))
    assert len(t.view("all")) == len(t.steps)
    assert all(s.kind == "module" for s in t.view("modules"))
    with pytest.raises(ValueError, match="unknown view"):
        t.view("everything")


def test_ops_false_records_module_calls_only():
    t = trace(FixedHiddenMLP(), torch.rand(2, 20), ops=False)
    assert [(s.name, s.call) for s in t.steps] == [
        ("FixedHiddenMLP", 1), ("Linear", 1), ("Linear", 2)]


# ---------------------------------------------------------------- MySequential etc.


def test_my_sequential_steps_and_shapes():
    net = MySequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 10), nn.Sigmoid())
    t = trace(net, torch.randn(2, 4))
    mods = t.view("modules")
    assert [s.path for s in mods] == ["", "0", "1", "2", "3"]
    assert [s.name for s in mods] == ["MySequential", "Linear", "ReLU", "Linear", "Sigmoid"]
    shapes = [mods[1].input_shapes[0]] + [s.output_shapes[0] for s in mods[1:]]
    assert shapes == [(2, 4), (2, 8), (2, 8), (2, 10), (2, 10)]
    # the for loop in forward runs `X = block(X)` once per block
    assert [s.iteration for s in mods[1:]] == [1, 2, 3, 4]
    assert all(s.line == "X = block(X)" for s in mods[1:])
    assert t.modules["0"].extra == "in_features=4, out_features=8, bias=True"
    assert t.modules["2"].params == 8 * 10 + 10 and t.modules[""].params == 40 + 90


def test_nested_blocks_paths_depths_parents():
    net = chimera()
    t = trace(net, torch.rand(2, 20))
    assert t.error is None
    mods = t.view("modules")
    expected = ["", "0", "0.net", "0.net.0", "0.net.1", "0.net.2", "0.net.3", "0.linear", "1",
                "2", "2.linear", "2.linear"]
    assert [s.path for s in mods] == expected
    by_index = {s.index: s for s in t.steps}
    for s in t.steps:
        if s.parent is None:
            assert s is t.steps[0]
            continue
        parent = by_index[s.parent]
        assert parent.kind == "module" and s.depth == parent.depth + 1
        if s.kind == "module":
            assert s.path.startswith(parent.path)
        else:
            assert s.path == parent.path
    assert [s.depth for s in mods] == [0, 1, 2, 3, 3, 3, 3, 2, 1, 1, 2, 2]
    # children of nn.Sequential report the line that called the Sequential
    assert by_index[mods[3].index].line == "return self.linear(self.net(X))"
    assert mods[3].iteration is None


def test_module_used_twice_counts_calls():
    shared = nn.Linear(3, 3)
    net = nn.Sequential(shared, nn.ReLU(), shared)
    t = trace(net, torch.randn(1, 3))
    calls = [(s.path, s.call) for s in t.view("modules")]
    assert calls == [("", 1), ("0", 1), ("1", 1), ("0", 2)]
    assert t.modules[""].params == 12  # the shared layer's parameters count once


# ------------------------------------------------------------------ oracle checks


def _hook_shapes(model, *args):
    """Output shapes of every module call, recorded by independent forward hooks."""
    seen = []

    def hook(mod, inp, out):
        flat = []

        def walk(o):
            if isinstance(o, torch.Tensor):
                flat.append(tuple(o.shape))
            elif isinstance(o, (list, tuple)):
                for x in o:
                    walk(x)
            elif isinstance(o, dict):
                for x in o.values():
                    walk(x)
            else:
                flat.append(None)
        walk(out)
        seen.append(flat)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(*args)
    finally:
        for h in handles:
            h.remove()
    return seen


def _post_order_modules(t):
    """Module steps ordered by when they finished (the order forward hooks fire)."""
    finished = []

    def visit(i):
        for child in children.get(i, []):
            visit(child)
        finished.append(t.steps[i])

    children = {}
    for s in t.steps:
        if s.kind == "module" and s.parent is not None:
            children.setdefault(s.parent, []).append(s.index)
    visit(0)
    return finished


@pytest.mark.parametrize("make,shape", [
    (lambda: MySequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 10), nn.Sigmoid()), (2, 4)),
    (chimera, (3, 20)),
    (lambda: nn.LSTM(5, 7, num_layers=2, batch_first=True), (2, 4, 5)),
])
def test_recorded_output_shapes_match_independent_hooks(make, shape):
    torch.manual_seed(0)
    net = make().eval()
    X = torch.randn(*shape)
    expected = _hook_shapes(net, X)
    t = trace(net, X)
    got = [s.output_shapes for s in _post_order_modules(t)]
    assert got == expected


def test_output_identical_with_and_without_tracing():
    torch.manual_seed(1)
    net = chimera()
    X = torch.rand(4, 20)
    expected = net(X)
    t = trace(net, X)
    assert torch.equal(t.output, expected)
    assert torch.equal(net(X), expected)


# -------------------------------------------------------------- state restoration


def _state(model):
    return [
        (name, m.training, dict(m._forward_hooks), dict(m._forward_pre_hooks),
         dict(m._backward_hooks), dict(m._forward_hooks_with_kwargs),
         dict(m._forward_pre_hooks_with_kwargs), dict(m._forward_hooks_always_called),
         "forward" in m.__dict__, getattr(m.forward, "__func__", m.forward), type(m).__call__,
         [{k: c.__dict__.get(k) for k in ("forward", "__call__")} for c in type(m).__mro__])
        for name, m in model.named_modules()
    ] + [(ns.__name__, ns.__dict__.get("handle_torch_function"))  # torch's, put back
         for ns in (F, torch.functional, torch._tensor)]


def _mode_stack():
    from torch.overrides import _get_current_function_mode_stack

    return list(_get_current_function_mode_stack())


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(28, 28), nn.ReLU())
        self.head = nn.Linear(784, 10)

    def forward(self, X):
        X = self.body(X)
        return self.head(X)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("context", ["plain", "no_grad", "inference_mode"])
@pytest.mark.parametrize("model", ["ok", "broken"])
def test_model_left_exactly_as_it_was(training, context, model):
    net = chimera() if model == "ok" else Broken()
    net.train(training)
    user_hook = net[0].register_forward_hook(lambda m, i, o: None) if model == "ok" else None
    X = torch.rand(2, 20) if model == "ok" else torch.randn(84, 28)
    before = _state(net)
    stack_before = _mode_stack()
    ctx = {"plain": torch.enable_grad, "no_grad": torch.no_grad,
           "inference_mode": torch.inference_mode}[context]
    with ctx():
        expected = net(X) if model == "ok" else None
        t = trace(net, X)
    assert _state(net) == before
    assert _mode_stack() == stack_before
    assert (t.error is None) == (model == "ok")
    if model == "ok":
        assert torch.equal(t.output, expected)
        assert t.output.requires_grad == (context == "plain")
        user_hook.remove()


def test_failing_forward_keeps_trace_up_to_and_including_failing_op():
    t = trace(Broken(), torch.randn(84, 28))
    assert isinstance(t.error, RuntimeError)
    failing = t.steps[-1]
    assert failing.name == "F.linear" and failing.internal
    assert failing.input_shapes == [(84, 28), (10, 784), (10,)]
    assert "mat1 and mat2 shapes cannot be multiplied (84x28 and 784x10)" in failing.error
    assert failing is t.failed_step
    assert failing in t.view("default")  # a failing op is never hidden
    head = t.steps[failing.parent]
    assert head.path == "head" and head.error and head.outputs == []
    assert t.steps[0].error  # the error travelled up through the root call
    assert [s.path for s in t.view("modules")] == ["", "body", "body.0", "body.1", "head"]
    assert t.steps[2].output_shapes == [(84, 28)]
    assert head.line == "return self.head(X)"
    assert "mat1 and mat2" in t.to_text()


def test_raise_errors_reraises_with_trace_attached():
    with pytest.raises(RuntimeError, match="cannot be multiplied") as info:
        trace(Broken(), torch.randn(84, 28), raise_errors=True)
    assert info.value.trace.failed_step.name == "F.linear"


@pytest.mark.parametrize("thing,kind", [(lambda x: x, "function"), (42, "int"),
                                        (nn.Linear, "type")])
def test_not_a_module_is_a_type_error_naming_the_type(thing, kind):
    with pytest.raises(TypeError, match=f"nn.Module, but got a {kind}"):
        trace(thing, torch.randn(2, 2))


def test_max_steps_guard_stops_an_endless_loop():
    class Forever(nn.Module):
        def forward(self, X):
            while X.sum() > -1:  # never false for positive inputs
                X = X + 1
            return X

    t = trace(Forever(), torch.ones(2), max_steps=50)
    assert t.truncated and isinstance(t.error, TraceLimitError)
    assert len(t.steps) == 50 and "max_steps=50" in str(t.error)
    assert "truncated" in t.to_text()
    with pytest.raises(ValueError, match="max_steps"):
        trace(Forever(), torch.ones(2), max_steps=0)


# -------------------------------------------------------------- many kinds of model


class Multi(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(3, 4)

    def forward(self, x, pair, mapping, scale=1.0, mode="sum", flag=None):
        y = self.a(x) * scale + self.b(pair[0]) + mapping["z"]
        if mode == "sum":
            return {"out": y, "parts": [pair[1], y.mean()]}
        return y


def test_several_args_kwargs_tuple_list_dict_inputs_and_outputs():
    net = Multi()
    x, p0, p1, z = torch.randn(2, 3), torch.randn(2, 3), torch.randn(5), torch.randn(2, 4)
    t = trace(net, x, (p0, p1), {"z": z}, scale=2.0, mode="sum")
    assert t.error is None
    out = t.output
    ref = net(x, (p0, p1), {"z": z}, scale=2.0, mode="sum")
    assert torch.equal(out["out"], ref["out"]) and torch.equal(out["parts"][1], ref["parts"][1])
    root = t.steps[0]
    assert root.input_shapes == [(2, 3), (2, 3), (5,), (2, 4), None, None]
    assert root.inputs[3].name == "z" and root.inputs[4].name == "scale"
    assert root.inputs[4].value == 2.0 and root.inputs[5].text == "'sum'"
    assert root.output_shapes == [(2, 4), (5,), ()]
    assert root.outputs[0].name == "out"
    # indexing a Python tuple or dict is not a torch op; `mode == "sum"` compares strings
    assert [s.name for s in direct(t)] == ["Multi", "Linear", "*", "Linear", "+", "+", "mean"]
    assert [s.path for s in t.view("modules")] == ["", "a", "b"]


def test_parameter_free_model_and_scalar_output():
    class Norm(nn.Module):
        def forward(self, X):
            return (X ** 2).sum().sqrt().item()

    t = trace(Norm(), torch.tensor([3.0, 4.0]))
    assert t.output == 5.0
    assert [s.name for s in t.steps] == ["Norm", "**", "sum", "sqrt", "item"]
    assert t.steps[-1].outputs[0].value == 5.0
    assert t.modules[""].params == 0


def test_inplace_setitem_factories_item_and_no_grad_inside_forward():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.act = nn.ReLU(inplace=True)

        def forward(self, X):
            mask = torch.zeros(4)
            idx = torch.arange(4)
            X = self.lin(X)
            X[:, 0] = 0.0
            X.mul_(2)
            X = self.act(X)
            with torch.no_grad():
                scale = X.abs().max().item()
            return X / (scale + 1) + mask[idx]

    net = Odd()
    X = torch.randn(3, 4)
    t = trace(net, X)
    assert t.error is None
    assert torch.allclose(t.output, net(X))
    names = [s.name for s in direct(t)]
    for expected in ("torch.zeros", "torch.arange", "[]=", "mul_", "max", "item", "/", "+", "[]"):
        assert expected in names, expected
    by = {s.name: s for s in direct(t)}
    assert by["[]="].inplace and by["mul_"].inplace
    assert by["torch.zeros"].output_shapes == [(4,)] and by["torch.zeros"].input_shapes == [None]
    relu = [s for s in t.steps if s.kind == "module" and s.name == "ReLU"][0]
    assert relu.inplace
    assert not by["/"].inplace


def test_lstm_tuple_outputs():
    net = nn.LSTM(5, 7, batch_first=True)
    X = torch.randn(2, 4, 5)
    t = trace(net, X)
    assert t.error is None
    assert t.steps[0].output_shapes == [(2, 4, 7), (1, 2, 7), (1, 2, 7)]
    assert torch.equal(t.output[0], net(X)[0])


def test_multihead_attention_and_transformer_encoder_layer():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    X = torch.randn(2, 5, 8)
    t = trace(mha, X, X, X)
    assert t.error is None
    assert t.steps[0].output_shapes == [(2, 5, 8), (2, 5, 5)]
    assert torch.equal(t.output[0], mha(X, X, X)[0])

    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16,
                                       batch_first=True).eval()
    t = trace(layer, X)
    assert t.error is None and t.output.shape == (2, 5, 8)
    assert torch.equal(t.output, layer(X))
    assert "self_attn" in [s.path for s in t.view("modules")]


def test_values_option_keeps_a_preview():
    t = trace(nn.ReLU(), torch.tensor([[-1.0, 2.0, -3.0]]), values=True)
    assert t.steps[0].outputs[0].preview == [0.0, 2.0, 0.0]
    assert trace(nn.ReLU(), torch.ones(2)).steps[0].outputs[0].preview is None


# -------------------------------------------------------------------- output forms


def test_text_html_dict_json_and_summary():
    class Evil(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(2, 2)

        def extra_repr(self):
            return "<script>alert(1)</script><img src=x onerror=alert(2)>"

        def forward(self, X):
            return self.layer(X)

    t = trace(Evil(), torch.randn(1, 2))
    text = str(t)
    assert "Evil" in text and "layer · Linear" in text
    page = t._repr_html_()
    assert "<script>alert" not in page and "<img src=x" not in page
    d = t.to_dict()
    assert d["steps"][1]["outputs"][0]["shape"] == [1, 2]
    again = json.loads(t.to_json())
    assert again == json.loads(json.dumps(d))
    assert again["modules"][""]["extra"].startswith("<script>")  # data keeps the raw text
    s = t.summary()
    assert "layer" in str(s) and "total parameters: 6" in str(s)
    assert "<script>alert" not in s._repr_html_()
    assert repr(t).startswith("<Trace of Evil: 3 steps")


def test_values_are_plain_metadata():
    t = trace(nn.Linear(3, 2), torch.randn(4, 3, requires_grad=True))
    v = t.steps[0].inputs[0]
    assert isinstance(v, TensorInfo) and v.shape == (4, 3) and v.requires_grad
    assert v.dtype == torch.float32 and v.dtype_name == "float32" and v.numel == 12
    assert isinstance(PyValue("x"), PyValue) and PyValue(None, 3).text == "3"
    assert not any(isinstance(x, torch.Tensor) for s in t.steps for x in s.inputs + s.outputs)


def test_scalar_values_recorded_for_0d_results():
    class Mean(nn.Module):
        def forward(self, X):
            m = X.mean()
            return m * 2, bool(m > 0), math.floor(float(m))

    t = trace(Mean(), torch.tensor([1.0, 3.0]))
    by = {s.name: s for s in t.steps}
    assert by["mean"].value == 2.0
    assert by["*"].value == 4.0
    assert by[">"].value is True and by["bool"].value is True
    assert by["float"].value == 2.0


def test_lazy_layers_are_initialized_by_the_traced_call():
    torch.manual_seed(0)
    net = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(3))
    X = torch.randn(2, 5)
    t = trace(net, X)
    assert t.error is None
    assert torch.equal(t.output, net(X))  # the same, now initialized, layers
    # their parameter counts are those the first call created: 5*8+8 and 8*3+3
    assert [t.modules[p].params for p in ("0", "2", "")] == [48, 27, 75]
    calls = [s for s in t.view() if s.kind == "module"]
    assert [(s.path, s.output_shapes) for s in calls] == [
        ("", [(2, 3)]), ("0", [(2, 8)]), ("1", [(2, 8)]), ("2", [(2, 3)])]
    # the initialization the lazy layers run first is recorded, but hidden by default
    hidden = {s.name for s in t.steps if s.internal}
    assert "kaiming_uniform_" in hidden and "F.linear" in hidden
    assert all(not s.internal for s in t.view())


def test_a_lazy_layer_never_reached_counts_zero_parameters():
    class FailsFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.lazy = nn.LazyLinear(8)

        def forward(self, x):
            x = x @ torch.ones(3, 3)  # (2, 5) @ (3, 3): fails before the lazy layer runs
            return self.lazy(x)

    net = FailsFirst()
    t = trace(net, torch.randn(2, 5))
    assert t.error is not None and t.failed_step.name == "@"
    assert t.modules["lazy"].params == 0 and t.modules[""].params == 0
    assert "not called" in str(t.summary())


# ----------------------------------------------------- edge cases found in review


@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
def test_attention_fast_path_output_is_identical(context):
    # In eval mode without autograd torch runs fused kernels for these modules, but only
    # when no TorchFunctionMode is active; the trace must not change which path runs.
    torch.manual_seed(0)
    X = torch.randn(2, 5, 8)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True).eval()
    encoder = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True), 2,
        enable_nested_tensor=False).eval()
    ctx = torch.no_grad if context == "no_grad" else torch.inference_mode
    for net, args in ((mha, (X, X, X)), (layer, (X,)), (encoder, (X,))):
        with ctx():
            expected = net(*args)
            t = trace(net, *args)
        assert t.error is None
        out, exp = (t.output[0], expected[0]) if net is mha else (t.output, expected)
        assert torch.equal(out, exp), type(net).__name__
        assert t.steps[0].output_shapes[0] == (2, 5, 8)


def test_ops_of_modules_kept_in_a_plain_list_are_the_readers_own():
    class ListNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Linear(4, 4), nn.Linear(4, 2)]  # not registered

        def forward(self, X):
            for layer in self.layers:
                X = layer(X)
            return X

    t = trace(ListNet(), torch.randn(3, 4))
    shown = [s for s in t.view() if s.kind == "op"]
    assert [s.name for s in shown] == ["F.linear", "F.linear"]
    assert [s.line for s in shown] == ["X = layer(X)"] * 2
    assert [s.iteration for s in shown] == [1, 2]
    assert [s.output_shapes for s in shown] == [[(3, 4)], [(3, 2)]]


def _oracle_table(model):
    """Parameter counts and children per path, from PyTorch itself."""
    paths = {id(m): p for p, m in model.named_modules()}
    return {p: (sum(q.numel() for q in m.parameters()),
                [paths[id(c)] for c in m._modules.values() if c is not None])
            for p, m in model.named_modules()}


def test_module_table_counts_shared_modules_and_parameters_once():
    shared = nn.Linear(3, 3)  # registered at "a" first, then inside "blk"
    net = nn.Sequential()
    net.add_module("a", shared)
    net.add_module("blk", nn.Sequential(shared, nn.ReLU(), nn.Linear(3, 2)))
    tied = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    tied[1].weight = tied[0].weight
    for model, X in ((net, torch.randn(1, 3)), (tied, torch.randn(1, 2)),
                     (chimera(), torch.randn(1, 20))):
        t = trace(model, X)
        assert {p: (i.params, i.children) for p, i in t.modules.items()} == _oracle_table(model)
    assert trace(net, torch.randn(1, 3)).modules["blk"].params == 12 + 8


def test_another_threads_calls_are_not_recorded_and_traces_take_turns():
    import threading

    class Slow(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, X):
            started.set()
            go.wait(5)
            return self.lin(X)

    net = Slow()
    X = torch.randn(2, 4)
    started, go = threading.Event(), threading.Event()
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("t", trace(net, X)))
    worker.start()
    started.wait(5)
    go.set()
    untraced = net.lin(X)  # another thread's call while the trace runs: not recorded
    worker.join(5)
    t = result["t"]
    assert [s.path for s in t.view("modules")] == ["", "lin"]
    assert torch.equal(untraced, net.lin(X))
    # two traces at once, from two threads: each complete, the model left clean
    out = []
    threads = [threading.Thread(target=lambda: out.append(trace(net, X))) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert [len(x.view("modules")) for x in out] == [2, 2]
    assert all("forward" not in m.__dict__ for m in net.modules())


def _overriders(seen, tag=""):
    """A tensor subclass and a torch-function mode that note in ``seen`` each function
    that reaches them (the subclass's names prefixed with ``tag``, the mode's with
    "inner:"), then run it."""
    from torch.overrides import BaseTorchFunctionMode

    class Tagged(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            seen.append(tag + getattr(func, "__name__", "?"))
            return super().__torch_function__(func, types, args, kwargs or {})

    class Inner(BaseTorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append("inner:" + getattr(func, "__name__", "?"))
            return super().__torch_function__(func, types, args, kwargs)

    return Tagged, Inner


def test_python_level_torch_functions_under_subclasses_and_inner_modes():
    # F.softmax, F.relu, torch.einsum and Tensor.split are Python functions that reach the
    # recorder through handle_torch_function; a tensor subclass's own __torch_function__
    # and a mode the forward enters itself must still run, and the op be recorded once
    seen = []
    Tagged, Inner = _overriders(seen)

    class Net(nn.Module):
        def forward(self, X, T):
            a = F.softmax(X, dim=1)
            b = torch.einsum("ij,ij->i", a, X)
            c, d = X.split(2, dim=1)
            e = F.relu(T)  # a subclass: its own __torch_function__ runs
            with Inner():
                f = F.relu(X)  # a mode of the forward's own, above the recorder
            return a, b, c, d, e, f

    net = Net()
    X = torch.randn(3, 4)
    T = torch.randn(3, 4).as_subclass(Tagged)
    expected = net(X, T)
    seen.clear()
    before = _state(net)
    t = trace(net, X, T)
    assert t.error is None and _state(net) == before
    for got, want in zip(t.output, expected, strict=True):
        assert torch.equal(got, want)
    names = [s.name for s in t.steps if s.kind == "op"]
    assert names.count("F.softmax") == 1 and names.count("F.relu") == 2, names
    assert "torch.einsum" in names and "split" in names, names
    assert "relu" in seen and "inner:relu" in seen, seen  # both overrides still ran
    softmax = next(s for s in t.steps if s.name == "F.softmax")
    assert softmax.input_shapes[0] == (3, 4) and softmax.output_shapes == [(3, 4)]
    assert softmax.line == "a = F.softmax(X, dim=1)"


def test_reader_code_inside_a_torch_layer_keeps_its_own_lines():
    # a parametrization (the reader's module) runs inside nn.Linear's forward when it
    # reads self.weight: its ops are the reader's, at the reader's lines
    from torch.nn.utils import parametrize

    class Symmetric(nn.Module):
        def forward(self, W):
            return W.triu() + W.triu(1).transpose(0, 1)

    lin = nn.Linear(3, 3)
    parametrize.register_parametrization(lin, "weight", Symmetric())
    X = torch.randn(2, 3)
    t = trace(lin, X)
    assert torch.equal(t.output, lin(X))
    triu = [s for s in t.steps if s.name == "triu"]
    assert len(triu) == 2 and not any(s.internal for s in triu)
    assert all("W.triu() + W.triu(1).transpose(0, 1)" in s.line for s in triu)
    linear = next(s for s in t.steps if s.name == "F.linear")
    assert linear.internal and linear.input_shapes == [(2, 3), (3, 3), (3,)]


def test_an_output_is_described_by_its_own_metadata_not_its_inputs():
    # an op's output may share its first input's TensorInfo only when all of it matches
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, X):
            a = torch.relu(X)  # same metadata as X
            b = a.double()  # same shape, another dtype
            c = a * self.w  # same shape, requires grad
            d = torch.add(input=a, other=a)  # first input passed by keyword
            return b, c, d

    t = trace(Net(), torch.randn(2, 3))
    relu, double, mul, add = (next(s for s in t.steps if s.name == n)
                              for n in ("torch.relu", "double", "*", "torch.add"))
    assert relu.outputs[0] == relu.inputs[0]
    assert double.outputs[0].dtype == torch.float64 and double.inputs[0].dtype == torch.float32
    assert mul.outputs[0].requires_grad and not mul.inputs[0].requires_grad
    assert add.inputs[0].name == "input" and add.outputs[0].name is None
    assert [s.output_shapes for s in (relu, double, mul, add)] == [[(2, 3)]] * 4


def test_metadata_that_cannot_be_read_does_not_break_the_forward():
    class Nested(nn.Module):
        def forward(self, X):
            nt = torch.nested.nested_tensor([X[0, :2], X[1]])
            return nt.to_padded_tensor(0.0) * 2

    X = torch.randn(2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nested tensors are a prototype API
        t = trace(Nested(), X)
    assert t.error is None
    assert torch.equal(t.output, Nested()(X))
    pad = [s for s in t.steps if s.name == "to_padded_tensor"]
    assert pad and "nested tensor" in pad[0].inputs[0].text
    assert pad[0].output_shapes == [(2, 3)]

    class Complex(nn.Module):
        def forward(self, X):
            return (X * 1j).sum()

    t = trace(Complex(), torch.ones(2))
    assert t.steps[-1].value == 2j
    assert json.loads(t.to_json())["steps"][-1]["outputs"][0]["value"] == "2j"


def test_names_of_namespaced_functions_as_the_reader_wrote_them():
    class Spaces(nn.Module):
        def forward(self, X):
            a = torch.linalg.norm(X)
            b = torch.special.expit(X)
            c = torch.fft.fft(X)
            with torch.no_grad():
                d = torch.mm(X, X.T)
            return a, b, c, d

    t = trace(Spaces(), torch.randn(3, 3))
    assert [s.name for s in t.view() if s.kind == "op"] == [
        "torch.linalg.norm", "torch.special.expit", "torch.fft.fft", ".T", "torch.mm"]


def test_shapes_changed_in_place_are_recorded_as_they_are_after_the_change():
    class Reshaper(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.p = nn.Parameter(torch.zeros(2))

        def forward(self, X):
            Y = self.lin(X)
            Y.unsqueeze_(0)  # (2, 3) -> (1, 2, 3), same tensor object
            Z = Y * 2
            out = torch.empty(0)
            torch.mul(Z.detach(), 3, out=out)  # resizes `out` to (1, 2, 3)
            a = self.p * 1
            self.p.data = torch.zeros(4)  # an attribute write changes the shape
            b = self.p * 1
            return out + 1, a, b

    t = trace(Reshaper(), torch.randn(2, 3))
    assert t.error is None
    ops = [s for s in t.view() if s.kind == "op"]
    by = {s.name: s for s in ops}
    assert by["unsqueeze_"].input_shapes[0] == (2, 3)
    assert by["unsqueeze_"].output_shapes == [(1, 2, 3)]
    assert [s.input_shapes[0] for s in ops if s.name == "*"] == [(1, 2, 3), (2,), (4,)]
    assert [s.output_shapes for s in ops if s.name == "torch.mul"] == [[(1, 2, 3)]]
    assert by["+"].input_shapes[0] == (1, 2, 3)
    assert t.steps[0].output_shapes == [(1, 2, 3), (2,), (4,)]


def test_module_table_text_follows_changes_between_traces():
    class Scaled(nn.Module):  # the reader's own extra_repr: read afresh every time
        def __init__(self):
            super().__init__()
            self.factors = [2]

        def forward(self, X):
            return X * self.factors[0]

        def extra_repr(self):
            return f"factors={self.factors}"

    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), Scaled(),
                        nn.LSTM(16, 4))
    X = torch.randn(1, 1, 4, 6)

    def check():
        t = trace(net, X)
        assert t.error is None
        for path, mod in net.named_modules():
            assert t.modules[path].extra == mod.extra_repr(), path

    check()
    check()  # the same text again, from the kept copy
    net[0].bias = None  # only a parameter changed
    check()
    net[0].stride = (2, 1)
    net[1].momentum = 0.5
    net[1].eps = 1e-3
    net[3].factors.append(3)  # a list changed in place
    net[4].hidden_size = 4
    X = torch.randn(1, 1, 5, 6)
    check()
    assert "stride=(2, 1), bias=False" in trace(net, X).modules["0"].extra


def test_parameters_changed_between_traces_are_recorded_as_they_are_now():
    lin = nn.Linear(3, 2)
    X = torch.randn(4, 3)

    def linear_inputs():
        (op,) = [s for s in trace(lin, X).steps if s.name == "F.linear"]
        return [(v.shape, v.requires_grad) for v in op.inputs]

    assert linear_inputs() == [((4, 3), False), ((2, 3), True), ((2,), True)]
    lin.weight.requires_grad_(False)
    with torch.no_grad():
        lin.weight.data = torch.zeros(5, 3)
        lin.bias = nn.Parameter(torch.zeros(5))
    assert linear_inputs() == [((4, 3), False), ((5, 3), False), ((5,), True)]


def test_module_steps_point_at_the_calling_line_with_hooks_and_direct_forward_calls():
    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.b = nn.Linear(3, 3)

        def forward(self, X):
            X = self.a(X)  # through __call__
            return self.b.forward(X)  # around __call__: still a step

    net = Outer()
    for hooked in (False, True):
        handle = net.a.register_forward_hook(lambda m, i, o: None) if hooked else None
        t = trace(net, torch.randn(2, 3))
        if handle is not None:
            handle.remove()
        mods = {s.path: s for s in t.steps if s.kind == "module"}
        assert mods["a"].line == "X = self.a(X)  # through __call__"
        assert mods["b"].line == "return self.b.forward(X)  # around __call__: still a step"
        assert mods[""].line.startswith("t = trace(net, torch.randn(2, 3))")
        assert mods["a"].parent == mods["b"].parent == mods[""].index


class _Scaled(nn.Linear):
    """A subclass whose forward runs its base class's forward through super()."""

    def forward(self, X):
        return super().forward(X) * 2


def test_subclass_forward_through_super_and_an_unregistered_module_are_one_step_each():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.plain = nn.Linear(3, 3)
            self.scaled = _Scaled(3, 3)
            self.loose = [nn.Linear(3, 3)]  # not registered: its call is no module step

        def forward(self, X):
            return self.loose[0](self.scaled(self.plain(X)))

    net = Net()
    X = torch.randn(2, 3)
    before = _state(net)
    t = trace(net, X)
    assert torch.equal(t.output, net(X))
    assert [(s.path, s.name, s.call) for s in t.view("modules")] == [
        ("", "Net", 1), ("plain", "Linear", 1), ("scaled", "_Scaled", 1)]
    ops = [s for s in t.steps if s.kind == "op"]
    # F.linear inside plain (hidden), in scaled's super().forward (the reader's line), the
    # reader's `* 2`, then the unregistered layer's F.linear at the reader's line
    assert [(s.name, s.path, s.internal) for s in ops] == [
        ("F.linear", "plain", True), ("F.linear", "scaled", False), ("*", "scaled", False),
        ("F.linear", "", False)]
    assert ops[1].line == "return super().forward(X) * 2"
    assert _state(net) == before


def test_hooks_on_a_module_and_module_wide_hooks_still_run_and_are_recorded():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(8, 2))
    X = torch.randn(5, 3)
    fired = []
    doubled = net[0].register_forward_hook(lambda m, i, o: torch.cat([o, o], 1))
    pre = net[2].register_forward_pre_hook(lambda m, i: fired.append("pre"))
    everywhere = nn.modules.module.register_module_forward_hook(
        lambda m, i, o: fired.append(type(m).__name__))
    try:
        before = _state(net)
        expected = net(X)
        fired.clear()
        t = trace(net, X)
        assert torch.equal(t.output, expected)
        assert fired == ["Linear", "ReLU", "pre", "Linear", "Sequential"]
        assert _state(net) == before
    finally:
        doubled.remove()
        pre.remove()
        everywhere.remove()
    mods = t.view("modules")
    # a module's step shows what its caller got back: net[0]'s output as its hook made it
    assert [(s.path, s.input_shapes, s.output_shapes) for s in mods] == [
        ("", [(5, 3)], [(5, 2)]), ("0", [(5, 3)], [(5, 8)]), ("1", [(5, 8)], [(5, 8)]),
        ("2", [(5, 8)], [(5, 2)])]
    cat = next(s for s in t.steps if s.name == "torch.cat")
    assert cat.path == "0" and not cat.internal and "torch.cat([o, o], 1)" in cat.line


def test_modules_with_a_forward_of_their_own_each_run_theirs():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.b = nn.Linear(3, 5)

        def forward(self, X):
            return self.a(X), self.b(X)

    net = Pair()
    for lin in (net.a, net.b):  # forward set on the instance, e.g. by a wrapper library
        lin.forward = lambda X, f=lin.forward: f(X) + 1
    X = torch.randn(2, 3)
    expected = net(X)
    before = _state(net)
    t = trace(net, X)
    assert all(torch.equal(o, e) for o, e in zip(t.output, expected, strict=True))
    assert [(s.path, s.output_shapes) for s in t.view("modules")] == [
        ("", [(2, 4), (2, 5)]), ("a", [(2, 4)]), ("b", [(2, 5)])]
    assert _state(net) == before


def test_module_table_follows_structure_changes_between_traces():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 4)))
    X = torch.randn(2, 3)

    def table(ok=True):
        t = trace(net, X)
        assert (t.error is None) == ok
        got = {p: (i.params, i.children) for p, i in t.modules.items()}
        assert got == _oracle_table(net)
        assert [i.type for i in t.modules.values()] == [
            type(m).__name__ for _, m in net.named_modules()]
        return t.modules

    first = table()
    assert table()["0"] is first["0"]  # unchanged: the same ModuleInfo again
    net[2][0] = nn.Linear(4, 4)  # another module, same class, same path
    table()
    net[2].add_module("again", net[0])  # shared now: no longer a tree
    assert table(ok=False)["2"].children == ["2.0", "0"]  # (Linear(3, 4) gets 4 features)
    table(ok=False)
    del net[2].again
    assert table()["2"].children == ["2.0"]
    net[0].weight = nn.Parameter(torch.randn(4, 3))  # a parameter replaced
    net[0].bias = None
    assert table()["0"].params == 12
    net[1] = nn.Tanh()  # another class at a path
    assert table()["1"].type == "Tanh"
    net[2].add_module("tail", nn.Identity())  # a module added at the end
    assert "2.tail" in table()


def test_extra_text_of_modules_without_their_own_extra_repr():
    net = nn.Sequential(nn.Identity(), nn.Identity())
    net[1].extra_repr = lambda: "set on the instance"
    t = trace(net, torch.randn(2, 3))
    assert [t.modules[p].extra for p in ("", "0", "1")] == ["", "", "set on the instance"]


def test_tensors_die_when_they_would_untraced_and_their_ids_are_not_confused():
    import weakref

    alive = []

    class Churn(nn.Module):
        def forward(self, X):
            refs = []
            for n in range(1, 6):
                Y = torch.zeros(n) + n  # a new tensor, often at the address of the last one
                X = X + Y.sum()
                refs.append(weakref.ref(Y))
                del Y
                alive.append(sum(r() is not None for r in refs))
            return X

    net = Churn()
    net(torch.zeros(2))
    untraced, alive[:] = list(alive), []
    t = trace(net, torch.zeros(2))
    assert alive == untraced == [0, 0, 0, 0, 0]  # the trace holds no tensor of the reader's
    sums = [s for s in t.steps if s.name == "sum"]
    assert [s.input_shapes for s in sums] == [[(n,)] for n in range(1, 6)]
    assert [s.value for s in sums] == [float(n * n) for n in range(1, 6)]
