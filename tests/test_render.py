"""book_src.render: text and HTML from a Trace. Set REGEN_GOLDEN=1 to rewrite the saved
expected outputs on purpose (then read the diff before committing it)."""

import os
import re
from pathlib import Path

import pytest
import torch
from example_models import FixedHiddenMLP, MySequential
from torch import nn

from book_src import render, trace

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name, text):
    path = GOLDEN / name
    if os.environ.get("REGEN_GOLDEN") == "1":
        path.write_text(text + "\n")
    assert text + "\n" == path.read_text()


def traced_my_sequential(**kw):
    torch.manual_seed(0)
    net = MySequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 10), nn.Sigmoid())
    return trace(net, torch.randn(2, 4), **kw)


def test_text_tables_match_saved_output():
    t = traced_my_sequential()
    # the root call's line is this file's; keep the golden file independent of it
    t.steps[0].line, t.steps[0].lineno = "t = trace(net, X)", 1
    check_golden("my_sequential.txt", t.to_text("all") + "\n\n" + str(t.summary()))
    torch.manual_seed(0)
    t = trace(FixedHiddenMLP(), torch.rand(2, 20))
    t.steps[0].line, t.steps[0].lineno = "t = trace(net, X)", 1
    check_golden("fixed_hidden_mlp.txt", t.to_text())


def test_text_summary_is_a_tree_that_fits_a_page_and_the_html_keeps_full_names():
    torch.manual_seed(0)
    block = nn.Sequential(nn.TransformerEncoderLayer(16, 4, dim_feedforward=32,
                                                     batch_first=True))
    summary = trace(block, torch.rand(2, 5, 16)).summary()
    lines = str(summary).splitlines()
    rows = {line.split()[0]: line for line in lines[2:-1]}
    assert max(map(len, lines)) <= 84, lines  # dotted paths and three shapes made it 100+
    # each module by its own name, indented under its parent
    assert rows["0"].startswith("  0 ") and rows["self_attn"].startswith("    self_attn ")
    assert rows["out_proj"].startswith("      out_proj ")
    assert "NonDynamicallyQuantizab… " in rows["out_proj"] and "not called" in rows["out_proj"]
    # attention's query, key and value: one shape, counted
    assert rows["self_attn"].endswith("3 × (2, 5, 16) → (2, 5, 16)")
    assert rows["linear1"].endswith("(2, 5, 16) → (2, 5, 32)")
    assert [r["path"] for r in summary.rows][:3] == ["(root)", "0", "0.self_attn"]
    html = summary._repr_html_()
    assert "0.self_attn.out_proj" in html and "NonDynamicallyQuantizableLinear" in html
    # a narrow cell wraps between shapes, never inside one
    assert "3 × (2,\u00a05,\u00a016) → (2,\u00a05,\u00a016)" in html
    assert "(2,\u00a05,\u00a016)" in trace(block, torch.rand(2, 5, 16))._repr_html_()


def test_formatting_helpers():
    assert render.fmt_shape((2, 20)) == "(2, 20)"
    assert render.fmt_shape((20,)) == "(20,)"
    assert render.fmt_shape(()) == "()" and render.fmt_shape(None) == "·"
    t = traced_my_sequential()
    info = t.modules["2"]
    assert render.module_label(info) == "Linear(8 → 10)"
    assert render.step_label(t.steps[0]) == "(root) · MySequential"
    lin = t.view("modules")[3]
    assert render.step_expr(lin) == "Linear((2, 8)) → (2, 10)"


def test_step_view_marks_line_pass_breadcrumb_and_tree():
    t = traced_my_sequential()
    step = t.view("modules")[3]  # 2 · Linear, third pass of the loop
    html = render.step_html(t, step, "4 of 5")
    assert 'MySequential<span class="lb-sep">›</span>2 · Linear(8 → 10)' in html
    assert '<span class="lb-cur">▶' in html and "X = block(X)" in html and "← pass 3" in html
    # counted in the stepper's view, with the full trace's index since they differ
    assert "loop pass 3" in html and "step 4 of 5 · trace step #5" in html
    assert "#0 in" not in render.step_html(t, t.steps[0], "1 of 5")
    assert '<li class="lb-here">▶ ' in html and "2 · Linear(8 → 10)</li>" in html
    assert "(2, 8)" in html and "(2, 10)" in html


def test_values_preview_shows_what_relu_does():
    t = traced_my_sequential(values=True)
    relu = t.view("modules")[2]
    assert relu.name == "ReLU"
    outs = relu.outputs[0].preview
    assert all(v >= 0 for v in outs) and any(v < 0 for v in relu.inputs[0].preview)
    assert 'class="lb-preview"' in render.step_html(t, relu)


@pytest.mark.parametrize("hostile", ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>",
                                     "\"'><b>x</b>"])
def test_everything_user_controlled_is_escaped(hostile):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.add_module(hostile, nn.Identity())

        def extra_repr(self):
            return hostile

        def forward(self, X):
            return self._modules[hostile](X) + 0

    t = trace(M(), torch.randn(2, 2))
    pages = [t._repr_html_(), t.summary()._repr_html_()]
    pages += [render.step_html(t, s) for s in t.steps]
    for page in pages:
        assert hostile not in page
        assert "<script>" not in page and "<img" not in page and "<b>x" not in page
    assert render.esc(hostile) in pages[0]


def test_error_is_shown_in_text_and_html():
    t = trace(nn.Sequential(nn.Linear(784, 10)), torch.randn(84, 28))
    assert "✗ step #2 (F.linear" in t.to_text()
    assert 'class="lb-op lb-err"' in t._repr_html_()
    html = render.step_html(t, t.failed_step)
    assert "lb-error" in html and "FAILED" in html and "84x28 and 784x10" in html


def test_shape_boxes_grow_with_the_number_of_elements():
    from book_src.tracing import TensorInfo

    def area(shape):
        html = render._box(TensorInfo(shape, torch.float32, "cpu", False), "lb-in")
        w, h = (int(x) for x in re.search(r"width:(\d+)px;height:(\d+)px", html).groups())
        assert render.fmt_shape(shape) in html
        return w * h

    # 64 channels of 8×8 hold more numbers than 3 of 32×32: the box says so
    assert area((1, 64, 8, 8)) > area((1, 3, 32, 32))
    assert area((2, 20)) < area((2, 40)) < area((4, 40))
    assert area((16, 5, 5)) > area((16,))


def test_a_short_hostile_extra_repr_is_shown_escaped_in_labels():
    class Short(nn.Module):  # short enough to be shown as Type(extra) in labels
        def extra_repr(self):
            return "<b onclick=x>"

        def forward(self, X):
            return X * 2

    t = trace(nn.Sequential(Short()), torch.randn(2, 2))
    html = "".join(render.step_html(t, s) for s in t.steps)
    assert "Short(&lt;b onclick=x&gt;)" in html and "<b onclick" not in html


def test_steps_inside_torch_code_say_where_they_ran():
    t = traced_my_sequential()
    child = t.view("modules")[1]  # 0 · Linear, called by MySequential's own forward
    assert "lb-via" not in render.step_html(t, child)
    t = trace(nn.Sequential(nn.Linear(4, 2), nn.ReLU()), torch.randn(1, 4))
    child = t.view("modules")[1]
    assert "inside PyTorch’s Sequential.forward" in render.step_html(t, child)
    inner = [s for s in t.steps if s.internal][0]  # F.linear inside nn.Linear
    assert "inside PyTorch’s Linear.forward" in render.step_html(t, inner)


def test_boxes_show_dtype_and_previews_end_in_an_ellipsis_only_when_cut():
    from book_src.tracing import TensorInfo

    short = render._box(TensorInfo((3,), torch.float32, "cpu", False, preview=[1, 2, 3]), "x")
    assert "(3,) float32" in short and "[1, 2, 3]" in short and "…" not in short
    cut = render._box(TensorInfo((8,), torch.int64, "cpu", False,
                                 preview=[1, 2, 3, 4, 5, 6, 7, 8]), "x")
    assert "(8,) int64" in cut and "[1, 2, 3, 4, 5, 6, …]" in cut


def test_tables_leave_out_empty_value_and_pass_columns():
    t = trace(nn.Sequential(nn.Linear(4, 2)), torch.randn(1, 4))
    head = t.to_text().splitlines()[1].split()
    assert "value" not in head and "pass" not in head and "line" in head
    assert "<th>value</th>" not in t._repr_html_()
    torch.manual_seed(0)
    t = trace(FixedHiddenMLP(), torch.rand(2, 20))
    assert {"value", "pass"} <= set(t.to_text().splitlines()[1].split())
    assert "<th>value</th>" in t._repr_html_() and "<th>pass</th>" in t._repr_html_()


def test_condition_lines_count_checks_and_bodies_count_passes():
    torch.manual_seed(0)
    t = trace(FixedHiddenMLP(), torch.rand(2, 20))
    cond = [s for s in t.steps if s.name == ">"]
    body = [s for s in t.steps if s.name == "/="]
    assert len(cond) == len(body) + 1  # the last check ends the loop
    html = render.step_html(t, cond[-1])
    assert f"loop check {len(cond)}" in html and f"← check {len(cond)}" in html
    html = render.step_html(t, body[0])
    assert "loop pass 1" in html and "← pass 1" in html
