"""Replayed layers: a torch leaf layer whose call repeats an earlier call of its class in
the same trace (same state, same kind of input) runs with torch functions off and gets
its op from a template (book_src.tracing._learn). Oracle: the same trace recorded with
every op intercepted (``_REPLAY`` off), and PyTorch's own output."""

import contextlib
import copy
import weakref

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_tracing import _mode_stack, _overriders, _state
from torch import nn

import book_src.tracing as tracing
from book_src import trace


def _both(model, *args, context=contextlib.nullcontext, seed=0, changes=False, copies=True,
          **kw):
    """(trace with replay, trace with every op intercepted), each of its own copy of
    ``model`` (a call may change a model: batch-norm statistics, a forward's writes), or
    both of ``model`` itself if not ``copies``. Each leaves its model as it was (unless
    its forward ``changes`` it itself)."""
    out = []
    for replay in (True, False):
        m = copy.deepcopy(model) if copies else model
        before = _state(m)
        stack = _mode_stack()
        tracing._REPLAY = replay
        try:
            torch.manual_seed(seed)
            with context():
                out.append(trace(m, *args, **kw))
        finally:
            tracing._REPLAY = True
        assert (changes or _state(m) == before) and _mode_stack() == stack
    return out


def _same(a, b):
    da, db = a.to_dict(), b.to_dict()
    da.pop("output", None)
    db.pop("output", None)
    assert da == db
    assert type(a.error) is type(b.error) and str(a.error) == str(b.error)
    if isinstance(a.output, torch.Tensor):
        assert torch.equal(a.output, b.output)


def _intercepted(model, *args):
    """How many times the recorder's op hook runs in a trace of ``model``. (The counting
    wrapper's code is compiled as part of book_src, so that the recorder skips its frame
    as it skips its own.)"""
    count = [0]
    make = tracing._op_hook
    scope = {"make": make, "count": count}
    exec(compile(
        "def counting(rec):\n"
        "    hook = make(rec)\n"
        "    def __torch_function__(self, func, types, args=(), kwargs=None):\n"
        "        count[0] += 1\n"
        "        return hook(self, func, types, args, kwargs)\n"
        "    return __torch_function__\n", tracing.__file__, "exec"), scope)
    tracing._op_hook = scope["counting"]
    try:
        trace(model, *args)
    finally:
        tracing._op_hook = make
    return count[0]


class Tower(nn.Module):
    """Repeated identical blocks (conv-bn-relu + skip) and a repeated head."""

    def __init__(self, channels=4, blocks=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels),
                                  nn.ReLU())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                          nn.BatchNorm2d(channels), nn.ReLU())
            for _ in range(blocks))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels * 16, 8), nn.Tanh(),
                                  nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("context", [contextlib.nullcontext, torch.no_grad, torch.inference_mode])
def test_replayed_layers_are_recorded_as_intercepted_ones(training, context):
    model = Tower().train(training)
    X = torch.randn(2, 3, 4, 4)
    with_replay, intercepted = _both(model, X, context=context)
    _same(with_replay, intercepted)
    with context():
        torch.manual_seed(0)
        assert torch.allclose(with_replay.output, copy.deepcopy(model)(X))
    internal = [s for s in with_replay.steps if s.internal]
    assert {s.name for s in internal} >= {"F.conv2d", "F.batch_norm", "F.linear", "F.relu"}


def test_replay_happens_and_saves_interceptions():
    model = Tower(blocks=6).eval()
    X = torch.randn(1, 3, 4, 4)
    on = _intercepted(model, X)
    tracing._REPLAY = False
    try:
        off = _intercepted(model, X)
    finally:
        tracing._REPLAY = True
    # each replayed conv or linear skips one interception, each batch norm two (its
    # F.batch_norm and the input.dim() of its check), each ReLU one
    assert off - on >= 5 * 4, (on, off)


class Mutating(nn.Module):
    """A forward that changes its layers between their calls, in every way that matters."""

    def __init__(self, change):
        super().__init__()
        self.change = change
        self.convs = nn.ModuleList(nn.Conv2d(2, 2, 3, padding=1) for _ in range(4))
        self.lins = nn.ModuleList(nn.Linear(8, 8) for _ in range(4))
        self.bns = nn.ModuleList(nn.BatchNorm1d(8) for _ in range(4))

    def forward(self, x, v):
        for i, conv in enumerate(self.convs):
            if i == 2:
                if self.change == "stride":
                    conv.stride = (2, 2)
                elif self.change == "padding":
                    conv.__dict__["padding"] = (0, 0)  # past nn.Module.__setattr__
                elif self.change == "bias":
                    conv.bias = None
                elif self.change == "weight":
                    conv.weight = nn.Parameter(torch.randn(2, 2, 1, 1))
                elif self.change == "requires_grad":
                    conv.weight.requires_grad_(False)
                elif self.change == "data":
                    conv.weight.data = torch.randn(2, 2, 1, 1, dtype=torch.float64).float()
                elif self.change == "train":
                    self.bns[2].train()
                elif self.change == "eps":
                    self.bns[2].eps = 0.5
                elif self.change == "hook":
                    conv.register_forward_hook(lambda m, i, o: o * 2)
            x = conv(x)
        for lin, bn in zip(self.lins, self.bns, strict=True):
            v = bn(lin(v))
        return x.sum() + v.sum()


@pytest.mark.parametrize("change", ["none", "stride", "padding", "bias", "weight",
                                    "requires_grad", "data", "train", "eps", "hook"])
def test_a_layer_changed_by_the_forward_is_recorded_as_it_is_now(change):
    model = Mutating(change).eval()
    a, b = _both(model, torch.randn(1, 2, 6, 6), torch.randn(3, 8), changes=True)
    assert a.error is None
    _same(a, b)


def test_layers_in_another_state_or_with_other_inputs_are_recorded_as_they_are():
    layers = [nn.Linear(4, 4), nn.Linear(4, 4, bias=False), nn.Linear(4, 4).double(),
              nn.Linear(4, 4), nn.Linear(4, 4)]
    layers[3].weight.requires_grad_(False)
    layers[4].bias.requires_grad_(False)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(layers)

        def forward(self, x):
            outs = [layer(x) for layer in self.layers if layer.weight.dtype == x.dtype]
            outs.append(self.layers[2](x.double()))
            outs.append(self.layers[0](x[:, :4].t().contiguous().t()))  # other strides
            outs.append(self.layers[0](x.unsqueeze(0)))  # another shape
            outs.append(self.layers[0](x.detach().requires_grad_()))
            with torch.no_grad():
                outs.append(self.layers[0](x))
            return outs

    a, b = _both(Net(), torch.randn(3, 4))
    assert a.error is None
    _same(a, b)


def test_inner_modes_subclasses_and_disabled_torch_functions_see_what_they_saw():
    seen = []
    Tagged, Inner = _overriders(seen, tag="tagged:")

    def each_way(model):  # traced with replay and without, noting what reached whom
        for replay in (True, False):
            seen.clear()
            tracing._REPLAY = replay
            try:
                t = trace(model, torch.randn(2, 4))
            finally:
                tracing._REPLAY = True
            assert t.error is None
            yield t

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lins = nn.ModuleList(nn.Linear(4, 4) for _ in range(5))

        def forward(self, x):
            y = self.lins[0](x)
            y = self.lins[1](x)  # a replay: the same layer, the same kind of input
            with Inner():
                y = self.lins[2](x)  # the forward's own mode must see F.linear
            y = self.lins[3](x.as_subclass(Tagged))  # and a subclass its own call
            with torch._C.DisableTorchFunction():
                y = self.lins[4](x)  # no op seen at all
            return y

    for t in each_way(Net()):
        assert "inner:linear" in seen and "tagged:linear" in seen, seen
        assert [s.path for s in t.steps if s.name == "F.linear"] == ["lins.0", "lins.1",
                                                                    "lins.2", "lins.3"]
    _same(*_both(Net(), torch.randn(2, 4)))

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.lins = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))

        def forward(self, x):  # the same kind of input, but a subclass the second time
            with torch._C.DisableTorchFunction():
                x = x * 1  # (a tensor the recorder has not seen: read as the layer's)
            self.lins[0](x)
            return self.lins[1](x.as_subclass(Tagged))

    for _ in each_way(Pair()):
        assert "tagged:linear" in seen, seen


def test_a_replayed_call_that_fails_is_the_last_step_with_its_error():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embs = nn.ModuleList(nn.Embedding(5, 3) for _ in range(3))

        def forward(self, i):
            self.embs[0](i)
            self.embs[1](i)
            return self.embs[2](i + 10)  # same shapes, out of range: fails in the op

    a, b = _both(Net(), torch.tensor([1, 2]))
    _same(a, b)
    assert a.error is not None and a.steps[-1].name == "F.embedding"
    assert a.steps[-1].error and a.steps[-2].error and a.steps[-2].kind == "module"


def test_a_layer_that_refuses_its_input_before_its_op_records_no_op():
    # BatchNorm1d checks the input's dimensions in Python, before F.batch_norm: a call
    # with another kind of input is no replay of an earlier one
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.bns = nn.ModuleList(nn.BatchNorm1d(8) for _ in range(2))

        def forward(self, x):
            self.bns[0](x)
            return self.bns[1](x.view(1, 1, 3, 8))

    a, b = _both(Net().eval(), torch.randn(3, 8))
    _same(a, b)
    assert "expected 2D or 3D input" in str(a.error)
    assert [s.kind for s in a.steps[-2:]] == ["op", "module"] and a.steps[-1].error


def test_a_torch_layer_that_runs_the_readers_code_is_not_replayed(monkeypatch):
    # nn.Linear calls F.linear by name: here the reader's function, whose op is the
    # reader's own step (their line), not a layer's internal one
    def my_linear(x, w, b=None):
        return torch._C._nn.linear(x, w, b)

    monkeypatch.setattr(torch.nn.functional, "linear", my_linear)
    model = nn.Sequential(*[nn.Linear(3, 3) for _ in range(3)])
    a, b = _both(model, torch.randn(2, 3))
    _same(a, b)
    assert [s.internal for s in a.steps if s.kind == "op"] == [False] * 3


def test_a_layer_attribute_that_can_change_in_place_is_no_template():
    # a list attribute (padding) could be the template's and change in place afterwards
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList(nn.Conv2d(1, 1, 3) for _ in range(2))
            self.convs[0].padding = [1, 1]
            self.convs[1].padding = [0, 1]

        def forward(self, x):
            self.convs[0](x)
            self.convs[0].padding[0] = 0  # now equal to the second layer's
            return self.convs[1](x)

    a, b = _both(Net(), torch.randn(1, 1, 5, 5), changes=True)
    _same(a, b)
    assert [v.text for v in a.steps[-1].inputs if not v.is_tensor and "[" in v.text] == [
        "[0, 1]"]


@pytest.mark.parametrize("max_steps", [3, 4, 5, 6, 7, 8])
def test_max_steps_stops_a_replayed_layer_where_it_stops_an_intercepted_one(max_steps):
    model = nn.Sequential(*[nn.Linear(3, 3) for _ in range(4)])
    a, b = _both(model, torch.randn(2, 3), max_steps=max_steps)
    _same(a, b)
    assert a.truncated and len(a.steps) == max_steps


@st.composite
def repeated_stacks(draw):
    """(model, input, context): a stack of layers, each repeated a few times, some of
    them in another state than their twins."""
    width = draw(st.integers(1, 4))
    kinds = draw(st.lists(st.sampled_from(
        ["linear", "linear_nobias", "relu", "relu_inplace", "tanh", "sigmoid", "gelu",
         "dropout", "bn", "ln", "identity", "softmax"]), min_size=1, max_size=4))
    layers = []
    for kind in kinds:
        for _ in range(draw(st.integers(1, 3))):
            layer = {
                "linear": lambda: nn.Linear(width, width),
                "linear_nobias": lambda: nn.Linear(width, width, bias=False),
                "relu": nn.ReLU, "relu_inplace": lambda: nn.ReLU(inplace=True),
                "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU,
                "dropout": lambda: nn.Dropout(0.5), "bn": lambda: nn.BatchNorm1d(width),
                "ln": lambda: nn.LayerNorm(width), "identity": nn.Identity,
                "softmax": lambda: nn.Softmax(dim=1),
            }[kind]()
            if draw(st.booleans()) and any(True for _ in layer.parameters()):
                next(layer.parameters()).requires_grad_(False)
            layer.train(draw(st.booleans()))
            layers.append(layer)
    context = draw(st.sampled_from([contextlib.nullcontext, torch.no_grad,
                                    torch.inference_mode]))
    return nn.Sequential(*layers), torch.randn(draw(st.integers(2, 4)), width), context


@settings(max_examples=60, deadline=None)
@given(case=repeated_stacks())
def test_random_repeated_layers_replayed_as_intercepted(case):
    model, X, context = case
    a, b = _both(model, X, context=context)
    assert a.error is None
    _same(a, b)


class EveryDirect(nn.Module):
    """Three layers of each class that has a direct forward (tracing._DIRECT_USES), the
    three of a class in the same state: the first call of each class is intercepted, the
    other two are replays."""

    def __init__(self, conv=None, bn=None, lin=None):
        super().__init__()
        conv = conv or {}
        bn = bn or {}
        lin = lin or {}

        def three(make):
            return nn.ModuleList(make() for _ in range(3))

        self.c1 = three(lambda: nn.Conv1d(2, 2, 3, padding=1, **conv))
        self.c2 = three(lambda: nn.Conv2d(2, 2, 3, padding=1, **conv))
        self.c3 = three(lambda: nn.Conv3d(2, 2, 3, padding=1, **conv))
        self.b1 = three(lambda: nn.BatchNorm1d(2, **bn))
        self.b2 = three(lambda: nn.BatchNorm2d(2, **bn))
        self.b3 = three(lambda: nn.BatchNorm3d(2, **bn))
        self.lins = three(lambda: nn.Linear(5, 5, **lin))
        self.relus = three(nn.ReLU)

    def forward(self, x):  # x: (2, 2, 5, 5, 5)
        # the batch norms last: in training each counts its calls in place, after which
        # the recorder reads every value afresh (no replay)
        convs = [[conv(y) for conv in group] for group, y in (
            (self.c1, x[:, :, 0, 0]), (self.c2, x[:, :, 0]), (self.c3, x))]
        v = x[:, 0, 0, 0]
        outs = [relu(lin(v)) for lin, relu in zip(self.lins, self.relus, strict=True)]
        for bns, ys in zip((self.b1, self.b2, self.b3), convs, strict=True):
            outs += [bn(y) for bn, y in zip(bns, ys, strict=True)]
        return outs


def _counting_direct(monkeypatch):
    """Count, per class, the replayed calls whose direct forward ran the op (did not
    decline)."""
    counts = {}
    for cls, (run, uses) in list(tracing._DIRECT_USES.items()):
        def counted(d, params, buffers, x, run=run, name=cls.__name__):
            out = run(d, params, buffers, x)
            if out is not tracing._DECLINE:
                counts[name] = counts.get(name, 0) + 1
            return out

        monkeypatch.setitem(tracing._DIRECT_USES, cls, (counted, uses))
    return counts


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("context", [contextlib.nullcontext, torch.no_grad, torch.inference_mode])
def test_direct_forwards_run_what_torchs_forwards_run(monkeypatch, training, context):
    counts = _counting_direct(monkeypatch)
    model = EveryDirect().train(training)
    X = torch.randn(2, 2, 5, 5, 5)
    a, b = _both(model, X, context=context)
    assert a.error is None
    _same(a, b)
    with context():
        plain = copy.deepcopy(model)(X)
    assert all(map(torch.equal, a.output, plain))
    # two replays per class; a batch norm in training is none (it counts its calls in
    # place: two ops)
    expected = {"Conv1d": 2, "Conv2d": 2, "Conv3d": 2, "Linear": 2, "ReLU": 2}
    if not training:
        expected.update(BatchNorm1d=2, BatchNorm2d=2, BatchNorm3d=2)
    assert counts == expected


@pytest.mark.parametrize("conv, bn, lin, declined", [
    ({"bias": False, "padding_mode": "zeros"}, {"affine": False}, {"bias": False}, set()),
    ({"padding_mode": "circular"}, {"track_running_stats": False}, {}, {"Conv", "BatchNorm"}),
])
def test_direct_forwards_in_other_states_run_or_decline(monkeypatch, conv, bn, lin, declined):
    # no bias, no affine parameters: None passed on; circular padding is two ops (no
    # template); a batch norm without running statistics normalizes by the batch's
    # (its direct forward declines: torch's forward runs)
    counts = _counting_direct(monkeypatch)
    model = EveryDirect(conv, bn, lin).eval()
    a, b = _both(model, torch.randn(2, 2, 5, 5, 5))
    assert a.error is None
    _same(a, b)
    for name in ("Conv1d", "Conv2d", "Conv3d", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
                 "Linear", "ReLU"):
        assert counts.get(name, 0) == (0 if name.rstrip("123d") in declined else 2), name


@pytest.mark.parametrize("owner, name", [
    (torch.nn.functional, "conv2d"), (nn.Conv2d, "_conv_forward"), (nn.Conv2d, "forward"),
    (torch.nn.functional, "batch_norm"), (torch, "batch_norm"),
    (nn.BatchNorm2d, "_check_input_dim"), (torch.nn.functional, "linear"),
    (torch.nn.functional, "relu"), (torch, "relu"), (nn.ReLU, "forward"),
])
def test_no_direct_forward_past_a_function_the_reader_replaced(monkeypatch, owner, name):
    cls = {"conv2d": nn.Conv2d, "batch_norm": nn.BatchNorm2d, "linear": nn.Linear,
           "relu": nn.ReLU}.get(name) or owner
    assert tracing._direct_forward(cls, cls.forward) is not None
    original = getattr(owner, name)
    monkeypatch.setattr(owner, name, lambda *a, **k: original(*a, **k))
    assert tracing._direct_forward(cls, cls.forward) is None


def test_a_replaced_torch_function_still_runs_in_replayed_calls(monkeypatch):
    # F.batch_norm calls torch.batch_norm by name: a reader's replacement of it runs in
    # every call, replayed or not (with torch functions off, it makes no step itself)
    calls = []
    original = torch.batch_norm

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "batch_norm", counted)
    model = nn.Sequential(*[nn.BatchNorm2d(2) for _ in range(4)]).eval()
    a, b = _both(model, torch.randn(1, 2, 3, 3))
    _same(a, b)
    # four calls in each trace (with replays, then with every op intercepted)
    assert len(calls) == 8 and sum(s.name == "F.batch_norm" for s in a.steps) == 4


def test_a_parameter_whose_id_has_a_stale_entry_is_read_afresh():
    # `seen` maps ids to (weak reference, value): a tensor gone since may have left an
    # entry under the id a new parameter now has. The replay must not take that value.
    dead = torch.zeros(1)
    stale = weakref.ref(dead)
    del dead

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList(nn.Conv2d(2, 2, 3, padding=1) for _ in range(2))

        def forward(self, x):
            self.convs[0](x)  # its template: weight (2, 2, 3, 3)
            new = nn.Parameter(torch.randn(2, 2, 1, 1))
            self.convs[1].weight = new
            (rec,) = torch.overrides._get_current_function_mode_stack()
            # the value a (2, 2, 3, 3) weight has, under the new weight's id
            rec.seen[id(new)] = (stale, rec.seen[id(self.convs[0].weight)][1])
            return self.convs[1](x)

    a, b = _both(Net(), torch.randn(1, 2, 4, 4), changes=True)
    assert a.error is None
    _same(a, b)
    assert a.steps[-1].name == "F.conv2d" and a.steps[-1].input_shapes[1] == (2, 2, 1, 1)


def test_direct_forwards_match_torchs_and_decline_what_they_do_not_handle():
    # called as a replay calls them: the layer's __dict__, parameters, buffers, input
    X = torch.randn(2, 3, 6, 6)
    cases = [
        (nn.Conv2d(3, 4, 3, stride=2, padding=1, dilation=1, groups=1), X, True),
        (nn.Conv2d(3, 3, 3, padding="same", dilation=2, groups=3, bias=False), X, True),
        (nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"), X, False),
        (nn.Conv1d(3, 4, 2, stride=2), X[:, :, 0], True),
        (nn.Linear(6, 2), X, True),
        (nn.Linear(6, 2, bias=False), X, True),
        (nn.BatchNorm2d(3, eps=0.3, momentum=None).eval(), X, True),
        (nn.BatchNorm2d(3, affine=False).eval(), X, True),
        (nn.BatchNorm2d(3).train(), X, False),
        (nn.BatchNorm2d(3, track_running_stats=False).eval(), X, False),
        (nn.ReLU(), X, True),
        (nn.ReLU(inplace=True), X.clone(), False),
    ]
    with torch.no_grad():
        for layer in cases[6][0], cases[7][0]:  # statistics of their own
            layer.running_mean.uniform_(-1, 1)
            layer.running_var.uniform_(0.5, 2)
    for layer, x, handled in cases:
        run = tracing._direct_forward(type(layer), type(layer).forward)
        with torch._C.DisableTorchFunction():
            out = run(layer.__dict__, layer._parameters, layer._buffers, x)
        if handled:
            assert torch.equal(out, layer(x)), layer
        else:
            assert out is tracing._DECLINE, layer
    conv = nn.Conv2d(3, 3, 3)
    conv.__dict__["weight"] = torch.zeros(3, 3, 1, 1)  # (read before the parameters)
    run = tracing._direct_forward(nn.Conv2d, nn.Conv2d.forward)
    assert run(conv.__dict__, conv._parameters, conv._buffers, X) is tracing._DECLINE


def test_a_batch_norm_that_normalizes_by_the_batch_in_training_replays_as_it_runs():
    # no call counter: one op in training too (a template), with the running statistics
    # to update in place
    layers = [nn.BatchNorm1d(4) for _ in range(3)]
    for layer in layers:
        layer.num_batches_tracked = None
    model = nn.Sequential(*layers).train()
    X = torch.randn(5, 4)
    a, b = _both(model, X, changes=True)
    _same(a, b)
    assert torch.equal(a.output, copy.deepcopy(model)(X))
    assert sum(s.name == "F.batch_norm" for s in a.steps) == 3


def test_a_replayed_layer_under_autocast_has_its_output_dtype():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lins = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))

        def forward(self, x):
            y = self.lins[0](x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = self.lins[1](x)  # the same state and input, a bfloat16 output
            return self.lins[2](x), y

    a, b = _both(Net(), torch.randn(2, 4))
    _same(a, b)
    assert [s.outputs[0].dtype for s in a.steps if s.name == "F.linear"] == [
        torch.float32, torch.bfloat16, torch.float32]


def test_a_compiled_layer_runs_what_torch_would_run():
    # torch's __call__ runs a module's _compiled_call_impl (set by Module.compile())
    # instead of its forward: so does a trace, even of a layer it could replay. (Not
    # through _both: a deep copy drops _compiled_call_impl.)
    model = nn.Sequential(*[nn.Linear(3, 3) for _ in range(3)])
    model[2]._compiled_call_impl = lambda x: torch.full((2, 3), 7.0)
    X = torch.randn(2, 3)
    plain = model(X)
    assert plain.eq(7).all()
    a, b = _both(model, X, copies=False)
    _same(a, b)
    assert torch.equal(a.output, plain)
    assert [s.path for s in a.steps if s.kind == "module"] == ["", "0", "1", "2"]
