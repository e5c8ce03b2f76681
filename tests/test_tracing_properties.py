"""Property tests: random stacks of layers, with PyTorch as the oracle."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_tracing import _hook_shapes, _oracle_table, _post_order_modules, _state
from torch import nn

from book_src import trace


@st.composite
def cnn_stacks(draw):
    """(model, input): random Conv2d / ReLU / pooling / nested Sequential, then a head."""
    c0 = channels = draw(st.integers(1, 4))
    s0 = size = draw(st.integers(4, 12))
    layers = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["conv", "relu", "maxpool", "avgpool", "nest"]))
        if kind == "conv":
            out, k = draw(st.integers(1, 4)), draw(st.sampled_from([1, 3]))
            pad = draw(st.sampled_from([0, k // 2]))
            if size + 2 * pad - k + 1 >= 1:
                layers.append(nn.Conv2d(channels, out, k, padding=pad))
                channels, size = out, size + 2 * pad - k + 1
        elif kind == "relu":
            layers.append(nn.ReLU())
        elif kind in ("maxpool", "avgpool") and size >= 2:
            layers.append(nn.MaxPool2d(2) if kind == "maxpool" else nn.AvgPool2d(2))
            size //= 2
        elif kind == "nest":
            out = draw(st.integers(1, 3))
            layers.append(nn.Sequential(nn.Conv2d(channels, out, 1), nn.ReLU()))
            channels = out
    head = nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, draw(st.integers(1, 5))))
    model = nn.Sequential(*layers, head)
    return model, torch.randn(draw(st.integers(1, 3)), c0, s0, s0)


@st.composite
def mlp_stacks(draw):
    """(model, input): random Linear widths and activations, maybe split in two blocks."""
    widths = draw(st.lists(st.integers(1, 16), min_size=2, max_size=6))
    layers = []
    for a, b in zip(widths, widths[1:], strict=False):
        layers.append(nn.Linear(a, b))
        if draw(st.booleans()):
            layers.append(draw(st.sampled_from([nn.ReLU, nn.Sigmoid, nn.Tanh]))())
    if len(layers) > 2 and draw(st.booleans()):
        cut = draw(st.integers(1, len(layers) - 1))
        layers = [nn.Sequential(*layers[:cut]), nn.Sequential(*layers[cut:])]
    return nn.Sequential(*layers), torch.randn(draw(st.integers(1, 4)), widths[0])


@settings(max_examples=40, deadline=None)
@given(case=st.one_of(cnn_stacks(), mlp_stacks()), training=st.booleans())
def test_random_stacks_match_pytorch(case, training):
    model, X = case
    model.train(training)
    with torch.no_grad():
        expected = model(X)
    before = _state(model)
    with torch.no_grad():
        t = trace(model, X)
    assert t.error is None
    assert torch.equal(t.output, expected)
    assert _state(model) == before
    # every module call, with the shapes independent hooks see, in the same order
    assert [s.output_shapes for s in _post_order_modules(t)] == _hook_shapes(model, X)
    # the module table: parameters and children as PyTorch counts them
    assert {p: (i.params, i.children) for p, i in t.modules.items()} == _oracle_table(model)
    # the tree is consistent: indices, parents, depths, paths
    names = dict(model.named_modules())
    for i, s in enumerate(t.steps):
        assert s.index == i
        if s.kind == "module":
            assert type(names[s.path]).__name__ == s.name
        if s.parent is not None:
            parent = t.steps[s.parent]
            assert parent.kind == "module" and parent.index < i and s.depth == parent.depth + 1
    # each leaf layer's own op is recorded inside it, hidden from the default view
    for s in t.view("modules"):
        layer = names[s.path]
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            inner = [o for o in t.steps if o.parent == s.index]
            assert [o.name for o in inner] == (["F.linear"] if isinstance(layer, nn.Linear)
                                               else ["F.conv2d"])
            assert inner[0].internal and inner[0].output_shapes == s.output_shapes
