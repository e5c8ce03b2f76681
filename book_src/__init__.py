"""Layers & Blocks: instruments for seeing inside a PyTorch forward pass.

``trace`` records a forward pass as plain data; ``render`` turns it into text and HTML;
``widgets`` steps through it; ``plots`` draws figures. Nothing runs on import.
"""

from .tracing import ModuleInfo, PyValue, Step, TensorInfo, Trace, TraceLimitError, trace

__all__ = ["trace", "Trace", "Step", "TensorInfo", "PyValue", "ModuleInfo", "TraceLimitError",
           "show"]


def show(model, *args, **kwargs):
    """Trace ``model(*args)`` and display a stepper widget (see ``book_src.widgets``)."""
    from .widgets import show as _show

    return _show(model, *args, **kwargs)
