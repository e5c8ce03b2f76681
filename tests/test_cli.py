"""python -m book_src trace FILE.py:NAME --input SHAPE"""

import subprocess
import sys
import textwrap

import pytest

MODEL = textwrap.dedent("""
    import torch
    from torch import nn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = nn.Linear(20, 256)
            self.out = nn.Linear(256, 10)

        def forward(self, X):
            return self.out(torch.relu(self.hidden(X)))

    def make():
        return MLP()

    net = MLP()
    answer = 42
""")


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "book_src", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "mymodel.py"
    path.write_text(MODEL)
    return path


@pytest.mark.parametrize("name", ["make", "MLP", "net"])
def test_trace_prints_the_table(model_file, name):
    r = run("trace", f"{model_file}:{name}", "--input", "2,20", "--summary", cwd=model_file.parent)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "Trace of MLP" in out
    assert "hidden · Linear" in out and "(2, 20) → (2, 256)" in out
    assert "torch.relu" in out and "return self.out(torch.relu(self.hidden(X)))" in out
    assert "total parameters: 7,946" in out
    # the root call has no reader's line to show: nothing of the tracer's own code leaks in
    assert "return model(" not in out and "tracing.py" not in out


@pytest.mark.parametrize("target,shape,message", [
    ("nowhere.py:make", "2,20", "nowhere.py: no such file"),
    ("{file}:missing", "2,20", "has no attribute 'missing'"),
    ("{file}:answer", "2,20", "answer is of type int, not an nn.Module"),
    ("{file}", "2,20", "expected FILE.py:NAME"),
    ("{file}:make", "2,x", "--input '2,x': expected comma-separated positive integers"),
    ("{file}:make", "0,20", "--input '0,20'"),
    ("{file}:make", "2,,20", "--input '2,,20'"),
    ("{file}:make", "-2,20", "--input '-2,20'"),
])
def test_bad_input_is_one_clear_line(model_file, target, shape, message):
    r = run("trace", target.format(file=model_file), "--input", shape, cwd=model_file.parent)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_a_forward_that_fails_shows_the_failing_step(model_file):
    r = run("trace", f"{model_file}:make", "--input", "2,30", cwd=model_file.parent)
    assert r.returncode == 1
    assert "✗ step" in r.stdout and "mat1 and mat2 shapes cannot be multiplied" in r.stdout
