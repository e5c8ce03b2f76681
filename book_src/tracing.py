"""Record a forward pass as plain data: every module call and every torch op, in order.

``trace(model, *args, **kwargs)`` runs ``model(*args, **kwargs)`` once and returns a
:class:`Trace`. Two mechanisms cooperate:

* stand-ins for ``__call__`` and ``forward``, set on the classes of the traced model's
  modules for the duration of the call and answering only for the model's own modules
  (no hooks, so the model's hook dicts are never touched), give the module calls and
  their nesting;
* a :class:`torch.overrides.TorchFunctionMode` sees every torch function and Tensor
  method call (``torch.mm``, ``F.relu``, ``+``, ``X /= 2``, ``bool(X > 1)`` ...); the
  Python-level ones (``F.relu``, ``F.batch_norm``) reach it through a stand-in for
  torch's ``handle_torch_function``, set for the duration of the call, that skips
  torch's generic search for overrides when the recorder is the innermost mode.

A torch leaf layer (``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.Linear`` ...) whose call
repeats an earlier call of a layer of its class in the same trace (the same plain
attributes, parameters of the same metadata, the same kind of input, the same grad
mode; see ``_learn``) is not intercepted again: it runs with torch functions off and its
op is recorded from a template of that earlier call, with this call's own values. Such
a call of a convolution, ``nn.Linear``, an eval-mode batch norm or ``nn.ReLU`` runs its
op the way torch's forward would call it, without the Python around it (see
``_DIRECT_USES``). Tests check such traces against traces with every op intercepted.

For each step the reader's own source line is found by walking the Python stack to
the innermost frame outside torch and outside this package. Everything recorded is
metadata (shapes, dtypes, names, line numbers); no tensor data is kept.

This module imports neither ipywidgets nor matplotlib: it knows nothing of display.
"""

from __future__ import annotations

import collections
import contextlib
import dis
import gc
import itertools
import json
import linecache
import os
import sys
import textwrap
import threading
import types
import weakref
from operator import attrgetter, itemgetter
from operator import is_ as _is

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["trace", "Trace", "Step", "TensorInfo", "PyValue", "ModuleInfo", "TraceLimitError"]

DEFAULT_MAX_STEPS = 100_000
_MAX_FLAT = 32  # entries recorded per input/output list; longer ones end in a "…" entry


class TraceLimitError(RuntimeError):
    """Raised inside the traced forward when it exceeds ``max_steps``."""


# --------------------------------------------------------------------------- values


class TensorInfo(tuple):
    """Metadata of one tensor: shape, dtype, device, requires_grad; its value if 0-d.

    A tuple (cheap to make while the model runs) with named fields: ``shape``,
    ``dtype``, ``device``, ``requires_grad``, ``value`` (0-d tensors only), ``name``
    (the keyword it was passed under, if any) and ``preview`` (first numbers, only with
    ``trace(..., values=True)``).
    """

    __slots__ = ()
    is_tensor = True

    def __new__(cls, shape, dtype, device, requires_grad, value=None, name=None,
                preview=None):
        return _tuple_new(cls, (shape, dtype, device, requires_grad, value, name, preview))

    shape = property(lambda self: tuple(self[0]))
    dtype = property(itemgetter(1))
    device = property(itemgetter(2))
    requires_grad = property(itemgetter(3))
    value = property(itemgetter(4))
    name = property(itemgetter(5))
    preview = property(itemgetter(6))

    @property
    def numel(self) -> int:
        n = 1
        for d in self[0]:
            n *= d
        return n

    @property
    def dtype_name(self) -> str:
        return str(self[1]).removeprefix("torch.")

    def to_dict(self) -> dict:
        d = {
            "type": "tensor",
            "shape": list(self[0]),
            "dtype": self.dtype_name,
            "device": str(self[2]),
            "requires_grad": self[3],
        }
        for key, v in (("value", self[4]), ("name", self[5]), ("preview", self[6])):
            if v is not None:
                d[key] = repr(v) if type(v) is complex else v  # JSON has no complex
        return d

    def __repr__(self) -> str:
        v = "" if self[4] is None else f", value={self[4]!r}"
        return f"TensorInfo({_fmt_shape(self[0])}, {self.dtype_name}{v})"


class PyValue(tuple):
    """A non-tensor argument or result: its short repr (``text``), the value itself
    (``value``) if it is a bool, int or float, and the keyword it was passed under."""

    __slots__ = ()
    is_tensor = False

    def __new__(cls, text, value=None, name=None):
        return _tuple_new(cls, (text, value, name))

    @property
    def text(self) -> str:
        return repr(self[1]) if self[0] is None else self[0]

    @property
    def value(self):
        v = self[1]
        return v if type(v) in _SCALARS else None

    name = property(itemgetter(2))

    def to_dict(self) -> dict:
        d = {"type": "python", "text": self.text}
        if self.value is not None:
            d["value"] = self.value
        if self[2] is not None:
            d["name"] = self[2]
        return d

    def __repr__(self) -> str:
        return f"PyValue({self.text})"


_tuple_new = tuple.__new__
_SCALARS = (bool, int, float)
_ATOMIC = frozenset(_SCALARS)


def _short_repr(obj, limit=40) -> str:
    try:
        text = type(obj).__name__ + "(…)" if isinstance(obj, nn.Module) else repr(obj)
    except Exception as exc:  # a broken __repr__ must not break the reader's forward
        text = f"<{type(obj).__name__}: repr failed: {exc}>"
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


# ---------------------------------------------------------------------------- steps


class Step:
    """One recorded event: a module call (``kind="module"``) or a torch op (``kind="op"``)."""

    __slots__ = (
        "index", "kind", "name", "path", "depth", "parent", "call", "_inputs", "_outputs",
        "filename", "lineno", "line", "iteration", "inplace", "error", "internal",
        "module_type", "func_name", "func_firstlineno",
    )

    def __init__(self, index, kind, name, path, depth, parent, call, inputs, outputs,
                 filename, lineno, line, func_name, func_firstlineno, iteration=None,
                 inplace=False, error=None, internal=False, module_type=None):
        self.index = index
        self.kind = kind
        self.name = name
        self.path = path
        self.depth = depth
        self.parent = parent
        self.call = call
        self._inputs = inputs  # a list of values, or one value (or None: no outputs)
        self._outputs = outputs
        self.filename = filename
        self.lineno = lineno
        self.line = line
        self.func_name = func_name
        self.func_firstlineno = func_firstlineno
        self.iteration = iteration
        self.inplace = inplace
        self.error = error
        self.internal = internal
        self.module_type = module_type

    @property
    def inputs(self) -> list:
        """TensorInfo / PyValue of the arguments, in order (tensors inside lists, tuples
        and dicts flattened)."""
        v = self._inputs
        return v if type(v) is list else [] if v is None else [v]

    @property
    def outputs(self) -> list:
        """TensorInfo / PyValue of what the step returned (nested outputs flattened)."""
        v = self._outputs
        return v if type(v) is list else [] if v is None else [v]

    @property
    def input_shapes(self) -> list:
        return [v.shape if v.is_tensor else None for v in self.inputs]

    @property
    def output_shapes(self) -> list:
        return [v.shape if v.is_tensor else None for v in self.outputs]

    @property
    def value(self):
        """The scalar result of this step (a 0-d tensor's value, a bool, a float), or None."""
        outputs = self.outputs
        if len(outputs) == 1:
            return outputs[0].value
        return None

    @property
    def is_module(self) -> bool:
        return self.kind == "module"

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "kind": self.kind,
            "name": self.name,
            "path": self.path,
            "depth": self.depth,
            "parent": self.parent,
            "call": self.call,
            "module_type": self.module_type,
            "inputs": [v.to_dict() for v in self.inputs],
            "outputs": [v.to_dict() for v in self.outputs],
            "filename": self.filename,
            "lineno": self.lineno,
            "line": self.line,
            "func_name": self.func_name,
            "func_firstlineno": self.func_firstlineno,
            "iteration": self.iteration,
            "inplace": self.inplace,
            "internal": self.internal,
            "error": self.error,
        }

    def __repr__(self) -> str:
        ins = ", ".join(_fmt_shape(s) for s in self.input_shapes)
        outs = ", ".join(_fmt_shape(s) for s in self.output_shapes)
        where = f" [{self.path}]" if self.kind == "op" and self.path else ""
        it = f" pass {self.iteration}" if self.iteration else ""
        err = f" ERROR {self.error}" if self.error else ""
        label = self.name if self.kind == "op" else f"{self.path or '(root)'} {self.name}"
        return f"<Step {self.index} {self.kind} {label}{where}: {ins} -> {outs}{it}{err}>"


def _fmt_shape(shape) -> str:
    if shape is None:
        return "·"
    if len(shape) == 1:
        return f"({shape[0]},)"
    return "(" + ", ".join(map(str, shape)) + ")"


class ModuleInfo:
    """What the trace knows about one module of the model (by path)."""

    __slots__ = ("path", "type", "extra", "params", "own_params", "children")

    def __init__(self, path, type, extra, params, own_params, children):
        self.path = path
        self.type = type
        self.extra = extra  # its extra_repr(), e.g. "in_features=4, out_features=8, bias=True"
        self.params = params  # parameters, counted recursively, each shared tensor once
        self.own_params = own_params  # parameters registered on this module itself
        self.children = children  # paths of the child modules

    def to_dict(self) -> dict:
        return {
            "path": self.path, "type": self.type, "extra": self.extra, "params": self.params,
            "own_params": self.own_params, "children": list(self.children),
        }

    def __eq__(self, other):
        return isinstance(other, ModuleInfo) and self.to_dict() == other.to_dict()

    __hash__ = None

    def __repr__(self) -> str:
        return (f"ModuleInfo(path={self.path!r}, type={self.type!r}, extra={self.extra!r}, "
                f"params={self.params}, own_params={self.own_params}, "
                f"children={self.children!r})")


def _extra_repr(mod) -> str:
    """``mod.extra_repr()``, or "" if it raises.

    For torch's own layers the text is kept per module instance and reused while what
    their extra_repr() reads is unchanged: the module's plain attributes (numbers,
    strings, tuples of them), compared by value, and which of its parameters are None.
    Formatting the text costs more than checking that. A module with any other kind of
    attribute (a list, a tensor) is formatted every time, and so is every module whose
    extra_repr() is not torch's."""
    cls = type(mod)
    cacheable = _extra_cacheable.get(cls)
    if cacheable is None:
        method = getattr(cls, "extra_repr", None)
        code = getattr(method, "__code__", None)
        fn = code.co_filename if code is not None else ""
        cacheable = _extra_cacheable[cls] = _EMPTY if method is _MODULE_EXTRA else (
            fn.startswith(_NN_MODULES_DIR) and os.path.basename(fn) not in _EXTRA_UNCACHED)
    if cacheable is _EMPTY and "extra_repr" not in mod.__dict__:
        return ""  # nn.Module's own extra_repr(): always ""
    if cacheable is True:
        d = mod.__dict__
        hit = _extra_cache.get(id(mod))
        if hit is not None and hit[0]() is mod and hit[1] == len(d):
            try:
                if (hit[2](d) == hit[3]
                        and tuple(map(_is, _NONES, mod._parameters.values())) == hit[4]):
                    return hit[5]
            except Exception:  # an attribute was deleted, or cannot be compared
                pass
    try:
        text = str(mod.extra_repr())
    except Exception:  # a broken extra_repr must not break the reader's trace
        return ""
    if cacheable is True:
        keys = _plain_keys(d)
        if keys is not None:
            if len(_extra_cache) >= 4096:
                _extra_cache.clear()
            get = itemgetter(*keys)
            _extra_cache[id(mod)] = (weakref.ref(mod), len(d), get, get(d),
                                     tuple(map(_is, _NONES, mod._parameters.values())), text)
    return text


def _plain_keys(attrs):
    """The names of the plain attributes (numbers, strings, None, tuples of those) in a
    module's ``__dict__``; None if it holds another kind of value, whose changes a value
    comparison might miss. The module's registries (parameters, submodules, hooks) are
    skipped: of those, extra_repr() reads only which parameters are None."""
    keys = []
    for k, v in attrs.items():
        t = type(v)
        if t is tuple:
            for x in v:
                if type(x) not in _KEY_ATOMS:
                    return None
        elif t in _REGISTRIES:
            continue
        elif t not in _KEY_ATOMS:
            return None
        keys.append(k)
    return keys or None


_NN_MODULES_DIR = os.path.join(os.path.dirname(torch.__file__), "nn", "modules") + os.sep
# extra_repr() of these reads more than plain attributes (parameter sizes, a child's fields)
_EXTRA_UNCACHED = {"container.py", "loss.py", "module.py"}
_KEY_ATOMS = frozenset({int, float, bool, str, type(None)})
_REGISTRIES = frozenset({dict, collections.OrderedDict, set})
_NONES = itertools.repeat(None)
_repeat = itertools.repeat
_extra_cacheable: dict = {}  # module class -> may its extra_repr() text be kept? (or _EMPTY)
_EMPTY = object()  # the class's extra_repr() is nn.Module's, which returns ""
_MODULE_EXTRA = nn.Module.extra_repr
# id(module) -> (weakref, len(__dict__), getter of its plain attributes, their values,
#                which parameters are None, text)
_extra_cache: dict = {}


# ------------------------------------------------------------------ frame inspection

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_THIS_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_CALL_IMPL_CODE = nn.Module._call_impl.__code__
_WRAPPED_CALL_IMPL_CODE = nn.Module._wrapped_call_impl.__code__
# With hooks registered, __call__ runs forward from a closure `inner` inside _call_impl.
_INNER_CODES = tuple(c for c in _CALL_IMPL_CODE.co_consts if hasattr(c, "co_code"))
_HANDLE_TF_CODE = torch.overrides.handle_torch_function.__code__

# id(code) -> True if the code belongs to torch or to this package. Keyed by id, because
# hashing a code object hashes its bytecode, names and constants every time; the code
# objects are kept in _lib_codes, so that no id is reused while it is a key here.
_lib_code: dict = {}
_lib_codes: list = []


def _is_lib(code) -> bool:
    r = _lib_code.get(id(code))
    if r is None:
        fn = code.co_filename
        r = fn.startswith(_TORCH_DIR) or fn.startswith(_THIS_DIR) or fn.startswith("<frozen")
        _lib_codes.append(code)
        _lib_code[id(code)] = r
    return r


_instr_labels: dict = {}  # code object -> {offset: operator label}

_JUMP_BOOL = {"bool"}
_UNARY = {"UNARY_NEGATIVE": "-", "UNARY_INVERT": "~", "UNARY_POSITIVE": "+", "UNARY_NOT": "not"}


def _labels_for(code) -> dict:
    labels = _instr_labels.get(code)
    if labels is None:
        labels = {}
        for ins in dis.get_instructions(code):
            op = ins.opname
            if op == "BINARY_OP" or op == "COMPARE_OP":
                labels[ins.offset] = ins.argrepr.split()[0] if ins.argrepr else op.lower()
            elif op == "BINARY_SUBSCR":
                labels[ins.offset] = "[]"
            elif op == "STORE_SUBSCR":
                labels[ins.offset] = "[]="
            elif op in _UNARY:
                labels[ins.offset] = _UNARY[op]
            elif "JUMP_IF" in op:
                labels[ins.offset] = "bool"
            elif op in ("IS_OP", "CONTAINS_OP"):
                labels[ins.offset] = ins.argrepr or op.lower()
        _instr_labels[code] = labels
    return labels


# ------------------------------------------------------------------------ op names

_IGNORE = object()  # funcs never recorded (repr, format, metadata reads ...)
_PROPERTY = object()  # attribute reads: recorded only when they produce a tensor
_SETTER = object()  # attribute writes: not recorded, but they may change metadata

_OPERATOR_DUNDERS = {
    "__add__": "+", "__radd__": "+", "__iadd__": "+=", "__sub__": "-", "__rsub__": "-",
    "__isub__": "-=", "__mul__": "*", "__rmul__": "*", "__imul__": "*=", "__truediv__": "/",
    "__rtruediv__": "/", "__itruediv__": "/=", "__div__": "/", "__rdiv__": "/",
    "__idiv__": "/=", "__floordiv__": "//", "__rfloordiv__": "//", "__ifloordiv__": "//=",
    "__mod__": "%", "__rmod__": "%", "__imod__": "%=", "__pow__": "**", "__rpow__": "**",
    "__ipow__": "**=", "__matmul__": "@", "__rmatmul__": "@", "__and__": "&", "__rand__": "&",
    "__iand__": "&=", "__or__": "|", "__ror__": "|", "__ior__": "|=", "__xor__": "^",
    "__rxor__": "^", "__ixor__": "^=", "__lshift__": "<<", "__rlshift__": "<<",
    "__ilshift__": "<<=", "__rshift__": ">>", "__rrshift__": ">>", "__irshift__": ">>=",
    "__eq__": "==", "__ne__": "!=", "__lt__": "<", "__le__": "<=", "__gt__": ">",
    "__ge__": ">=", "__neg__": "-", "__pos__": "+", "__invert__": "~", "__abs__": "abs",
    "__getitem__": "[]", "__setitem__": "[]=", "__bool__": "bool", "__len__": "len",
    "__float__": "float", "__int__": "int", "__index__": "index", "__contains__": "in",
    "__iter__": "iter",
}
_INPLACE_OPERATORS = {
    "+=", "-=", "*=", "/=", "//=", "%=", "**=", "@=", "&=", "|=", "^=", "<<=", ">>=", "[]=",
}
_IGNORED_NAMES = {
    "__repr__", "__str__", "__format__", "__hash__", "__reduce_ex__", "__deepcopy__",
    "__get__", "__set__", "__dir__", "__array__", "__array_wrap__", "__sizeof__",
    "_is_view", "dim", "ndimension", "size", "numel", "nelement", "stride", "is_contiguous",
    "data_ptr", "element_size", "get_device", "is_floating_point", "is_complex",
    "storage_offset", "untyped_storage", "_typed_storage", "__torch_function__",
    "has_names", "is_sparse", "_has_symbolic_sizes_strides", "__dlpack__",
    # global switches that `with torch.no_grad():` and friends flip inside a forward
    "_set_grad_enabled", "set_grad_enabled", "is_grad_enabled", "is_inference_mode_enabled",
}

_func_names: dict = {}
_namespaces_loaded = False


def _load_namespaces():
    global _namespaces_loaded
    import torch.nn.functional as F

    rank = {}
    spaces = [
        ("torch.special.", torch.special), ("torch.fft.", torch.fft),
        ("torch.linalg.", torch.linalg), ("torch.", torch), ("F.", F),
    ]
    # One object can have several names (torch.mm is torch.spmm; F.conv2d is torch.conv2d).
    # Prefer the name the object calls itself, then the later namespace (F over torch).
    for priority, (prefix, space) in enumerate(spaces):
        for attr in dir(space):
            if attr.startswith("_"):
                continue
            obj = getattr(space, attr, None)
            if not callable(obj) or isinstance(obj, type):
                continue
            score = (attr == getattr(obj, "__name__", None), priority)
            try:
                if obj not in rank or score > rank[obj]:
                    rank[obj] = score
                    _func_names[obj] = (prefix, space, attr)
            except TypeError:  # unhashable  # noqa: SIM105
                pass
    _namespaces_loaded = True


def _classify(func):
    """Return the reader-facing name of ``func``, or _IGNORE / _PROPERTY."""
    name = getattr(func, "__name__", None)
    if name == "__get__":
        return _PROPERTY
    if name == "__set__":
        return _SETTER
    if name in _IGNORED_NAMES:
        return _IGNORE
    if not _namespaces_loaded:
        _load_namespaces()
    if name is None:
        return _short_repr(func)
    try:
        known = _func_names.get(func)
    except TypeError:
        known = None
    if known is not None:
        # Equal builtins share one key (torch.mm == torch.dsmm): use the name func calls
        # itself where the namespace has it, else the attribute it was found under
        # (torch.linalg.norm calls itself linalg_norm).
        prefix, space, attr = known
        return prefix + (name if hasattr(space, name) else attr)
    return _OPERATOR_DUNDERS.get(name, name)  # Tensor methods: abs, sum, view; bool ...


_classified: dict = {}


# -------------------------------------------------------------------------- recorder


# A raw record, as the hot paths append it (a list, so outputs and errors can be added).
# Its inputs and outputs are a list of values, or a single value bare (fewer objects):
_KIND, _NAME, _CODE, _LASTI, _PARENT, _PATH, _CALL, _INPUTS, _OUTPUTS, _ERROR, _INPLACE = range(11)
_ELLIPSIS = PyValue("…")


class _Recorder(TorchFunctionMode):
    """Collects raw records during one forward pass. One instance per trace() call.

    The hot paths (one op, one module call) run between the model's own kernels, where
    every Python instruction is slow (cold caches), so they only capture what cannot
    wait: value metadata, the calling code object and instruction offset, the enclosing
    module. Steps, line numbers, loop passes and operator names are built afterwards, in
    one tight loop (``_build_steps``).
    """

    def __init__(self, max_steps, values):
        super().__init__()
        # id(module) -> (path, class name, torch's?, fast path?, torch leaf layer?)
        self.paths: dict = {}
        self.max_steps = max_steps
        self.values = values
        self.records: list = []
        # The module calls under way: (index, forward written in torch?, code, lasti)
        self.stack: list = []
        self.limit_hit = False
        self.thread = _get_ident()  # module stand-ins ignore calls from other threads
        # The values seen so far, by id: (a getter of the object, its value). A module's
        # input is usually the last op's output, its layer op reads that same input and
        # returns the module's output. For a tensor the getter is a weak reference, so
        # that no tensor lives longer than it would untraced (a dead one's id may be
        # reused: its reference then says it is not the tensor at hand). Any in-place op
        # or attribute write empties it, back to the plain values (``_plain_values``).
        self.seen: dict = dict(_plain_values)
        self.entering = None  # the module whose torch __call__ a stand-in runs (hooks)
        self.replay = False  # may torch leaf layers' ops be replayed (see _learn)?

    def __torch_function__(self, func, types, args=(), kwargs=None):
        raise RuntimeError("a _Recorder records only inside _run(), which sets its op hook")

    # -- values

    def _value(self, obj, name=None):
        if isinstance(obj, Tensor):
            if isinstance(obj, _LazyTensor):  # a lazy layer's parameter before its first call
                return _tuple_new(PyValue, ("<uninitialized parameter>", None, name))
            try:
                shape = obj.shape
            except RuntimeError:  # e.g. a nested (jagged) tensor has no single shape
                return _tuple_new(PyValue, (f"<{_tensor_kind(obj)}>", None, name))
            if not shape:
                return _tuple_new(TensorInfo, (shape, obj.dtype, obj.device, obj.requires_grad,
                                               _scalar(obj), name, None))
            return _tuple_new(TensorInfo, (shape, obj.dtype, obj.device, obj.requires_grad,
                                           None, name, _preview(obj) if self.values else None))
        t = type(obj)
        if obj is None or t is bool or t is int or t is float:
            return _tuple_new(PyValue, (None, obj, name))
        if t is tuple and _all_ints(obj):
            return _tuple_new(PyValue, (None, obj, name))  # stride=(1, 1): kept as is
        return _tuple_new(PyValue, (_short_repr(obj), None, name))

    def _flatten(self, obj, out, name=None):
        """Append the values in ``obj`` to ``out``: tensors anywhere in lists, tuples and
        dicts become entries of their own; other objects one entry each."""
        if isinstance(obj, Tensor):
            out.append(self._value(obj, name))
        elif isinstance(obj, (list, tuple)) and obj and _has_tensor(obj):
            for o in obj:
                if len(out) >= _MAX_FLAT:
                    out.append(_ELLIPSIS)
                    return
                self._flatten(o, out, name)
        elif isinstance(obj, dict) and _has_tensor(obj.values()):
            for k, v in obj.items():
                if len(out) >= _MAX_FLAT:
                    out.append(_ELLIPSIS)
                    return
                self._flatten(v, out, str(k))
        else:
            out.append(self._value(obj, name))

    def _values_of(self, args, kwargs):
        """The values of a call's arguments. Tensors seen a moment ago, parameters and
        plain arguments a layer passes every call (stride=(1, 1), eps=1e-05) are in
        ``seen``, by identity: one lookup each."""
        out = []
        append = out.append
        seen = self.seen
        for a in args:
            known = seen.get(id(a))
            if known is None or known[0]() is not a:
                self._read(a, out, None)
                continue
            append(known[1])
        if kwargs:  # F.batch_norm passes weight=, bias=, training=, momentum=, eps=
            for k, a in kwargs.items():
                known = seen.get(id(a))
                if known is None or known[0]() is not a:
                    self._read(a, out, k)
                    continue
                v = known[1]
                named = _named.get((id(v), k))
                if named is None or named[0] is not v:
                    named = (v, _tuple_new(TensorInfo, v[:5] + (k, v[6])) if v.is_tensor
                             else _tuple_new(PyValue, (v[0], v[1], k)))
                    if len(_named) >= 4096:
                        _named.clear()
                    _named[(id(v), k)] = named
                append(named[1])
        return out

    def _read(self, a, out, name):
        """Append the value of an argument that is not in ``seen`` to ``out``."""
        t = type(a)
        if t is Tensor or t is _Parameter:
            if not self.values:
                try:
                    s = a.shape
                except RuntimeError:  # e.g. a nested tensor has no single shape
                    s = None
                if s:
                    info = _tuple_new(TensorInfo, (s, a.dtype, a.device, a.requires_grad,
                                                   None, None, None))
                    self._remember(a, info)
                    if name is not None:
                        info = _tuple_new(TensorInfo, (s, info[1], info[2], info[3], None,
                                                       name, None))
                    out.append(info)
                    return
            out.append(self._value(a, name))
        elif a is None or t is int or t is bool or t is float or (t is tuple and _all_ints(a)):
            # kept by identity, for this trace and the next ones (the object too, inside
            # the getter, so that its id stays)
            if len(_plain_values) >= 1024:  # copied at each trace start and in-place op
                _plain_values.clear()
            v = _tuple_new(PyValue, (None, a, None))
            self.seen[id(a)] = _plain_values[id(a)] = (_repeat(a).__next__, v)
            out.append(v if name is None else _tuple_new(PyValue, (None, a, name)))
        else:
            self._flatten(a, out, name)

    def _known_values(self, args):
        """The values of ``args`` if each is in ``seen``, else None."""
        out = []
        seen = self.seen
        for a in args:
            known = seen.get(id(a))
            if known is None or known[0]() is not a:
                return None
            out.append(known[1])
        return out

    def _outputs(self, result, rec, args):
        """Record what an op or a module call returned (and whether it was in place)."""
        if isinstance(result, Tensor):
            try:
                s = result.shape
            except RuntimeError:
                s = None
            if s and not self.values and type(result) is Tensor:
                known = self.seen.get(id(result))
                if known is not None and known[0]() is result:
                    rec[_OUTPUTS] = known[1]
                else:
                    info = _tuple_new(TensorInfo, (s, result.dtype, result.device,
                                                   result.requires_grad, None, None, None))
                    self._remember(result, info)
                    rec[_OUTPUTS] = info
            else:
                rec[_OUTPUTS] = self._value(result)
            for a in args:
                if a is result:
                    rec[_INPLACE] = True
                    break
        else:
            outs = []
            self._flatten(result, outs)
            rec[_OUTPUTS] = outs

    def _remember(self, tensor, info):
        """Keep ``info`` at hand (the op hook does the same inline for an op's output)."""
        self.seen[id(tensor)] = (_ref(tensor), info)

    def _forget(self):
        """Something may have changed a tensor's shape, dtype or flags in place."""
        seen = self.seen
        seen.clear()
        seen.update(_plain_values)

    # -- records

    def _limit(self):
        self.limit_hit = True
        raise TraceLimitError(
            f"trace stopped after max_steps={self.max_steps} steps: the forward pass is "
            "longer than the guard allows (an endless loop?). Pass a larger max_steps "
            "to trace further."
        )

    def _site(self, frame, top):
        """(code, lasti) of the reader's frame for a call made by ``frame``.

        The source of a record is the innermost frame outside torch and outside this
        package. If the call comes from torch code inside a module written in torch
        (``F.linear`` called by ``nn.Linear.forward``, or a layer called by
        ``nn.Sequential.forward``), the record is nested: it points at the line that
        called that module, its offset is stored negated (-1 - offset), an op is then
        ``internal`` (hidden by default), and neither gets a loop pass or an operator
        name. Ops of a module the model does not register (one kept in a plain list)
        count as the reader's own: that module has no step of its own to show them.
        """
        code = frame.f_code
        lib = _lib_code.get(id(code))
        if lib is None:
            lib = _is_lib(code)
        if not lib:
            return code, frame.f_lasti
        if top is not None and top[1]:
            return top[2], (top[3] if top[3] < 0 else -1 - top[3])
        f = frame
        while f is not None:
            if not _is_lib(f.f_code):
                return f.f_code, f.f_lasti
            f = f.f_back
        return code, frame.f_lasti  # no reader's frame at all (e.g. `python -m book_src`)

    # -- torch ops

    def _property(self, func, args, kwargs):
        """An attribute read (``X.T``, ``X.shape``): recorded only if it makes a tensor."""
        result = func(*args, **kwargs)
        stack = self.stack
        if isinstance(result, Tensor) and stack:
            attr = getattr(getattr(func, "__self__", None), "__name__", "attr")
            if attr not in ("grad", "_base"):
                if len(self.records) >= self.max_steps:
                    self._limit()
                top = stack[-1]
                code, lasti = self._site(_getframe(2), top)
                self.records.append([0, "." + attr, code, lasti, top[0], None, None,
                                     self._values_of(args, None), [self._value(result)],
                                     None, False])
        return result


# ------------------------------------------------------------------------ torch ops


def _op_hook(rec):
    """The recorder's ``__torch_function__``: a closure over the recorder's state (one
    call per torch function or Tensor method the forward makes: no attribute lookups on
    the way, and bound once, not once per call)."""
    records = rec.records
    seen = rec.seen
    stack = rec.stack
    max_steps = rec.max_steps
    values = rec.values
    read = rec._read
    values_of = rec._values_of

    def __torch_function__(_self, func, types, args=(), kwargs=None):
        try:
            name = _classified[func]
        except KeyError:
            name = _classified[func] = _classify(func)
        except TypeError:  # unhashable callable
            name = _classify(func)
        if type(name) is not str:
            if name is _IGNORE:
                return func(*args, **kwargs) if kwargs else func(*args)
            if name is _PROPERTY:
                return rec._property(func, args, kwargs or _NO_KWARGS)
            rec._forget()  # an attribute write: X.data = ..., X.requires_grad = ...
            return func(*args, **kwargs) if kwargs else func(*args)
        if len(records) >= max_steps:
            rec._limit()
        inputs = None
        if kwargs:
            inputs = values_of(args, kwargs)
        elif len(args) == 1:  # the usual case, inline: the last op's output
            known = seen.get(id(args[0]))
            if known is not None and known[0]() is args[0]:
                inputs = known[1]
        if inputs is None:
            inputs = []
            for a in args:
                known = seen.get(id(a))
                if known is None or known[0]() is not a:
                    read(a, inputs, None)
                    continue
                inputs.append(known[1])
        frame = _getframe(1)  # the caller of the torch function
        code = frame.f_code
        if code is _HANDLE_TF_CODE or code is _HANDLE_STAND_IN_CODE:  # a Python-level
            # torch function: skip its wrapper
            frame = _getframe(3)  # (not frame.f_back.f_back: no frame object for the wrapper)
            code = frame.f_code
        top = stack[-1] if stack else None
        lib = _lib_code.get(id(code))
        if lib is None:
            lib = _is_lib(code)
        if not lib:
            lasti = frame.f_lasti
        elif top is not None and top[1]:  # torch code inside a module written in torch
            code = top[2]
            lasti = top[3] if top[3] < 0 else -1 - top[3]
        else:
            code, lasti = rec._site(frame, top)
        record = [0, name, code, lasti, None if top is None else top[0], None, None, inputs,
                  None, None, False]
        records.append(record)
        try:
            result = func(*args, **kwargs) if kwargs else func(*args)
        except BaseException as exc:
            record[_ERROR] = _error_text(exc)
            raise
        if result is None:
            record[_OUTPUTS] = _NONE
            if args:  # __setitem__ and friends change their first argument
                record[_INPLACE] = True
                rec._forget()
        elif type(result) is Tensor and not values:  # the usual case, inline
            same = args and args[0] is result
            if same or name[-1] == "_" or (kwargs and "out" in kwargs):
                rec._forget()  # its shape or flags may be new
            # read afresh even if the op returned a tensor seen before (x.contiguous())
            try:
                s = result.shape
            except RuntimeError:  # e.g. a nested tensor
                s = None
            if s:
                dtype, device, grad = result.dtype, result.device, result.requires_grad
                # most ops keep their first input's metadata (relu, batch_norm, +): that
                # TensorInfo is shared, not made anew (fewer objects to keep and collect)
                first = inputs if type(inputs) is not list else inputs[0] if inputs else None
                if (type(first) is TensorInfo and first[1] is dtype and first[3] is grad
                        and first[5] is None and first[0] == s and first[2] == device):
                    info = first
                else:
                    info = _tuple_new(TensorInfo, (s, dtype, device, grad, None, None, None))
                seen[id(result)] = (_ref(result), info)
                record[_OUTPUTS] = info
            else:
                record[_OUTPUTS] = rec._value(result)
            if same:
                record[_INPLACE] = True
        else:
            if (args and args[0] is result) or name[-1] == "_" or (kwargs and "out" in kwargs):
                rec._forget()
            rec._outputs(result, record, args[:1])
        if kwargs and (kwargs.get("inplace") is True or "out" in kwargs):
            record[_INPLACE] = True
        return result

    return __torch_function__


# ---------------------------------------------------------------------- module calls


def _stand_in(rec, members, forward, call=None, shortcut=None):
    """A stand-in for a module class's ``__call__`` (given torch's, ``call``) or its
    ``forward`` (``call`` None), set on the class for the duration of a trace.

    It records the calls of ``members`` (id(module) -> (path, class name, forward written
    in torch?, torch's fused fast path?, torch leaf layer?) of the model's modules of
    exactly this class)
    made by the tracing thread, and passes every other call straight on: other instances
    of the class, another thread's calls, ``super().forward(x)`` from a subclass (that
    module is a member of its own class).

    The ``__call__`` stand-in does what torch's ``__call__`` does for a module without
    hooks (call ``forward``) in one Python frame instead of two, and knows its caller
    without looking further up the stack. A torch leaf layer's call may replay its op
    from a template (see ``_learn``). With hooks (or a compiled module, or JIT
    tracing) it runs torch's ``__call__``, whose ``forward`` stand-in then passes the call
    through. The ``forward`` stand-in records the calls that come another way: a direct
    ``child.forward(x)``, a module with its own ``forward`` attribute or ``__call__``.
    ``shortcut``: the class's direct forward (see ``_direct_forward``), if it has one."""
    stack = rec.stack
    records = rec.records
    thread = rec.thread
    max_steps = rec.max_steps
    seen = rec.seen
    through = call or forward
    hooks = _GLOBAL_HOOKS
    hooks_of = _hooks_of
    replay = rec.replay
    templates = []  # what calls of this class's torch leaf layers did (see _learn)

    def traced(self, *args, **kwargs):
        key = id(self)
        info = members.get(key)
        if info is None or _get_ident() != thread:
            return through(self, *args, **kwargs)
        d = self.__dict__
        if call is not None:
            frame = _getframe(1)  # module(x) called this directly
            # torch's __call__ takes its fast path (forward, nothing else) when none of
            # these is set (read from the instance dict in one call: no __getattr__)
            try:
                direct = not (any(hooks_of(d)) or any(hooks) or _get_tracing_state()
                              or d.get("_compiled_call_impl") is not None)
            except KeyError:  # no hook registries of its own: torch's __call__ decides
                direct = False
        else:
            if rec.entering is self:  # reached from the __call__ stand-in: recorded there
                rec.entering = None
                return forward(self, *args, **kwargs)
            # module(x) ran _wrapped_call_impl, then _call_impl, then this; a direct
            # child.forward(x) ran this. Frame objects are made only for frames looked at.
            try:
                frame = _getframe(2)
            except ValueError:  # forward called directly, from the outermost frame
                frame = None
            if frame is not None and frame.f_code is _WRAPPED_CALL_IMPL_CODE:
                frame = frame.f_back
            else:
                frame = _getframe(1)  # nn.Module._call_impl, its closure (hooks), or not
                code = frame.f_code
                if code is _CALL_IMPL_CODE or code in _INNER_CODES:
                    if code is not _CALL_IMPL_CODE:
                        frame = frame.f_back
                    frame = frame.f_back
                    if frame.f_code is _WRAPPED_CALL_IMPL_CODE:
                        frame = frame.f_back
            direct = True
        if len(records) >= max_steps:
            rec._limit()
        inputs = None
        if not kwargs:
            if len(args) == 1:  # the usual case, inline: the last op's output
                known = seen.get(id(args[0]))
                if known is not None and known[0]() is args[0]:
                    inputs = known[1]
            else:
                inputs = rec._known_values(args)
        if inputs is None:  # metadata to read: not through our own mode
            with _no_torch_function():
                inputs = rec._values_of(args, kwargs)
        top = stack[-1] if stack else None
        code = frame.f_code
        lib = _lib_code.get(id(code))
        if lib is None:
            lib = _is_lib(code)
        if not lib:
            lasti = frame.f_lasti
        elif top is not None and top[1]:  # called by a module written in torch
            code = top[2]
            lasti = top[3] if top[3] < 0 else -1 - top[3]
        else:
            code, lasti = rec._site(frame, top)
        path, name, torch_defined, fastpath, leaf = info
        record = [1, name, code, lasti, None if top is None else top[0], path, None, inputs,
                  None, None, False]
        records.append(record)
        index = len(records) - 1
        stack.append((index, torch_defined, code, lasti))
        learn = None  # for a template: the layer's state before the call
        try:
            if (leaf and direct and replay and args and not kwargs
                    and _tf_stack_len() == 1 and _tf_mode_on()):  # (the one mode: rec)
                # A torch leaf layer: its op is replayed from a template of an earlier
                # call that this call repeats (see _learn), with torch functions off.
                # Inline, as in the op hook: a Python call less per layer.
                op = None
                if templates:
                    params = d["_parameters"]
                    buffers = d["_buffers"]
                    grad = _grad_enabled()
                    for (size, nparams, nbuffers, tgrad, minputs, getter, vals, nones, others,
                         checks, fills, opname, ins, made) in reversed(templates):
                        if (len(d) != size or len(params) != nparams
                                or len(buffers) != nbuffers or tgrad is not grad
                                or (inputs is not minputs and inputs != minputs)):
                            continue
                        try:
                            if getter(d) != vals:
                                continue
                        except KeyError:
                            continue
                        fits = True
                        for a in args:  # a subclass's __torch_function__ must run
                            if type(a) is not Tensor and type(a) is not _Parameter:
                                fits = False
                        for buffer, k in nones:
                            if (buffers if buffer else params).get(k, _MISSING) is not None:
                                fits = False
                        for buffer, k in others:
                            if (buffers if buffer else params).get(k) is None:
                                fits = False
                        for buffer, k, info in checks:  # the same metadata as then
                            p = (buffers if buffer else params).get(k)
                            known = seen.get(id(p))
                            if (p is None or known is None or known[1] is not info
                                    or known[0]() is not p):
                                fits = False
                                break
                        if not fits:
                            continue
                        if type(ins) is list:
                            ins = list(ins)
                        for pos, k in fills:
                            v = inputs if type(inputs) is not list else inputs[k]
                            if pos < 0:
                                ins = v
                            else:
                                ins[pos] = v
                        if len(records) >= max_steps:
                            rec._limit()
                        op = [0, opname, code, lasti if lasti < 0 else -1 - lasti,
                              index, None, None, ins, None, None, False]
                        records.append(op)
                        tout = made
                        break
                if op is not None:
                    with _no_torch_function():  # (one mode: ours, so no one else's)
                        try:
                            output = _DECLINE
                            if shortcut is not None and len(args) == 1:
                                output = shortcut(d, params, buffers, args[0])
                            if output is _DECLINE:
                                output = forward(self, *args)
                        except BaseException as exc:
                            op[_ERROR] = _error_text(exc)
                            raise
                        try:
                            s = output.shape if type(output) is Tensor else None
                        except RuntimeError:  # e.g. a nested tensor
                            s = None
                        if s and tout is not None and s == tout[0] and output.dtype is tout[1]:
                            # the same op on the same kinds of values: its output has the
                            # same device and requires_grad as then (the shape and dtype,
                            # which autocast may change, are checked)
                            seen[id(output)] = (_ref(output), tout)
                            op[_OUTPUTS] = record[_OUTPUTS] = tout
                        elif s:  # as the op hook records an op's output
                            dtype, device = output.dtype, output.device
                            needs = output.requires_grad
                            first = ins if type(ins) is not list else ins[0]
                            if (type(first) is TensorInfo and first[1] is dtype
                                    and first[3] is needs and first[5] is None
                                    and first[0] == s and first[2] == device):
                                out = first
                            else:
                                out = _tuple_new(TensorInfo, (s, dtype, device, needs,
                                                              None, None, None))
                            seen[id(output)] = (_ref(output), out)
                            op[_OUTPUTS] = record[_OUTPUTS] = out
                        else:
                            rec._outputs(output, op, args[:1])
                else:
                    learn = (tuple(d.values()), tuple(self._parameters.values()),
                             tuple(self._buffers.values()))
                    output = forward(self, *args)
            elif not direct:  # torch's __call__ runs the hooks, then our forward stand-in
                entering = rec.entering
                rec.entering = self
                try:
                    output = call(self, *args, **kwargs)
                finally:
                    rec.entering = entering
            elif fastpath and not self.training and not torch.is_grad_enabled():
                with _no_torch_function():
                    output = forward(self, *args, **kwargs)
            else:
                output = forward(self, *args, **kwargs) if kwargs else forward(self, *args)
        except BaseException as exc:
            record[_ERROR] = _error_text(exc)
            raise
        finally:
            stack.pop()
        if record[_OUTPUTS] is not None:  # a replay's: the op's output, read already
            for a in args:
                if a is output:
                    record[_INPLACE] = True
                    break
        else:
            known = seen.get(id(output))
            if known is not None and known[0]() is output:
                record[_OUTPUTS] = known[1]
                for a in args:
                    if a is output:
                        record[_INPLACE] = True
                        break
            else:
                with _no_torch_function():
                    rec._outputs(output, record, args)
        if learn is not None and len(records) == index + 2:  # one op: a template?
            with _no_torch_function():
                _learn(templates, self, args, record, records[index + 1], seen, learn)
        return output

    return traced


def _learn(templates, mod, args, record, op, seen, before):
    """Keep a template of a torch leaf layer's call, for its stand-in to replay.

    A torch leaf layer (a class of ``torch.nn.modules`` whose forward is torch's, with
    no children and no fused fast path) runs torch's code only. When its call made
    exactly one op, internal (called by torch's code), out of place, without error,
    returning the layer's output, and each of whose tensor arguments is one of the
    layer's own arguments, parameters or buffers, then a later call of a layer of the
    same class in the same trace, in the same state, makes that same op again. The same
    state: the same values of the plain attributes (numbers, strings, tuples of them:
    stride, eps, training ...), the same parameters and buffers present, those the op
    took with the same metadata (one TensorInfo object per kind, see _held_info), the
    layer's arguments plain tensors with the same metadata, the same grad mode, and the
    recorder the only mode, with torch functions on (a mode of the reader's, inner or
    outer, sees every op as it would untraced). (The forward of no torch leaf
    layer reads its arguments' strides or other metadata that TensorInfo leaves out.)
    The stand-in checks all of that, runs the call with torch functions off (torch's
    dispatch to a Python mode is most of what an op costs a trace: here one op, and
    metadata reads such as ``input.dim()``; a layer with a direct forward skips its
    Python wrapper too, see _DIRECT_USES) and records the op from the template with
    this call's values. Any other call is recorded the usual way. (A torch function
    that the reader replaces while the forward runs, between two calls that the checks
    find the same, is not seen: the second call's op is the template's.) ``before``:
    the layer's attributes, parameters and buffers before the call, which must not
    have changed.

    A template: (len(__dict__), number of parameters, of buffers, grad mode, the
    layer's input values, getter of its plain attributes, their values, (buffer?, name)
    of the parameters and buffers that are None, of those that are not and that the op
    did not take, (buffer?, name, TensorInfo) of those it took, (position in the op's
    inputs or -1 for a bare value, index of the layer's argument) for each argument it
    took, the op's name, its input values, its output value or None). An output of the
    same shape and dtype as then has the same device and requires_grad: those follow
    from the values and the grad mode checked.
    """
    if (op[_KIND] != 0 or op[_LASTI] >= 0 or op[_ERROR] is not None or op[_INPLACE]
            or record[_INPLACE] or op[_OUTPUTS] is None or op[_OUTPUTS] is not record[_OUTPUTS]
            or op[_NAME][-1] == "_" or type(op[_OUTPUTS]) is not TensorInfo):
        return
    d = mod.__dict__
    params, buffers = mod._parameters, mod._buffers
    for then, now in zip(before, (d.values(), params.values(), buffers.values()),
                         strict=True):
        now = tuple(now)  # (by identity: a tensor's == is elementwise)
        if len(then) != len(now) or not all(map(_is, then, now)):
            return
    keys = _plain_keys(d)
    if keys is None:  # an attribute of another kind (a list, a function) might matter
        return
    getter = itemgetter(*keys)
    minputs = record[_INPUTS]
    margs = minputs if type(minputs) is list else [minputs]
    if len(margs) != len(args):
        return
    for a, info in zip(args, margs, strict=True):
        if (type(a) is not Tensor and type(a) is not _Parameter) or type(info) is not TensorInfo:
            return
    sources = [(info, 0, i) for i, info in enumerate(margs)]
    nones = []
    others = {}
    for where, table in ((1, params), (2, buffers)):
        for k, p in table.items():
            if p is None:
                nones.append((where == 2, k))
                continue
            others[(where == 2, k)] = True
            known = seen.get(id(p))
            if known is not None and known[0]() is p and type(known[1]) is TensorInfo:
                sources.append((known[1], where, k))
    ins = op[_INPUTS]
    bare = type(ins) is not list
    fills = []  # (position, or -1 for a bare value; index of the layer's argument)
    checks = {}  # (buffer?, name) -> the TensorInfo it must have
    for pos, v in enumerate([ins] if bare else ins):
        t = type(v)
        if t is PyValue:
            continue
        if t is not TensorInfo:
            return
        kw = v[5]  # passed by keyword: a named copy (see _Recorder._values_of)
        hits = [(where, k, info) for info, where, k in sources if info is v or (
            kw is not None and _named.get((id(info), kw), (None, None))[1] is v)]
        if not hits:
            return
        # Parameters and buffers of equal metadata share one TensorInfo (_held_info):
        # the value recorded is the same whichever of them the op took, if each of them
        # still has it. A layer's argument is filled in (its value is checked by value).
        filled = False
        for where, k, info in hits:
            if where == 0:
                if kw is not None:
                    return
                if not filled:
                    fills.append((-1 if bare else pos, k))
                    filled = True
            else:
                others.pop((where == 2, k), None)
                checks[(where == 2, k)] = info
    out = op[_OUTPUTS]  # a replay's output, if it has the same shape and dtype
    if not out[0] or out[4] is not None or out[5] is not None or out[6] is not None:
        out = None  # a 0-d tensor's value: read each time
    if len(templates) >= 4:
        del templates[0]
    templates.append((len(d), len(params), len(buffers), _grad_enabled(), minputs, getter,
                      getter(d), tuple(nones), tuple(others),
                      tuple((b, k, info) for (b, k), info in checks.items()), tuple(fills),
                      op[_NAME], ins if bare else list(ins), out))


def _patch(rec, mods, paths):
    """Set the stand-ins: per module class, on the class, one for ``__call__`` and one for
    ``forward``, so that a model of many modules costs a handful of attribute writes. A
    module whose forward is its own attribute (or no plain function) gets a ``forward``
    stand-in of its own, on the instance. Returns what ``_unpatch`` needs to put
    everything back."""
    groups = {}  # class -> (its forward, its __call__ if torch's, {id(module): info})
    own = []  # (module, info) for modules patched on the instance
    for _, mod in mods:
        cls = type(mod)
        key = id(mod)
        info = paths[key]
        group = groups.get(cls)
        if group is None:
            forward = getattr(cls, "forward", None)  # read before any class is patched
            group = groups[cls] = (forward if type(forward) is _FunctionType else None,
                                   _MODULE_CALL if cls.__call__ is _MODULE_CALL else None,
                                   {})
        if group[0] is None or "forward" in mod.__dict__:
            own.append((mod, info))
        else:
            group[2][key] = info
    undo = []
    try:
        for cls, (forward, call, members) in groups.items():
            if members:
                undo.append((cls, "forward", "forward" in cls.__dict__,
                             cls.__dict__.get("forward")))
                direct = _direct_forward(cls, forward)
                cls.forward = _stand_in(rec, members, forward, None, direct)
                if call is not None:
                    undo.append((cls, "__call__", "__call__" in cls.__dict__,
                                 cls.__dict__.get("__call__")))
                    cls.__call__ = _stand_in(rec, members, forward, call, direct)
        for mod, info in own:
            undo.append((mod, "forward", "forward" in mod.__dict__, mod.__dict__.get("forward")))
            mod.__dict__["forward"] = _MethodType(
                _stand_in(rec, {id(mod): info}, _without_self(mod.forward)), mod)
    except BaseException:
        _unpatch(undo)
        raise
    return undo


def _without_self(bound):
    """``bound`` (a module's own forward) called as a stand-in calls a class's forward."""
    return lambda _module, *args, **kwargs: bound(*args, **kwargs)


def _unpatch(undo):
    for obj, attr, had, original in reversed(undo):
        if isinstance(obj, type):
            if had:
                setattr(obj, attr, original)
            else:
                delattr(obj, attr)
        elif had:
            obj.__dict__[attr] = original
        else:
            obj.__dict__.pop(attr, None)


_FASTPATH_TYPES = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerEncoder)
_NONE = PyValue(None, None)
_NO_KWARGS: dict = {}  # never written to
_MISSING = object()
_Parameter = nn.Parameter
# id(obj) -> (a getter that returns obj, its PyValue): the ints, floats, bools, None and
# int tuples seen as arguments; every trace's `seen` starts with them
_plain_values: dict = {}
# (id(value), keyword) -> (value, its copy with the keyword as name), for the values of
# keyword arguments (held values, so that their ids stay theirs)
_named: dict = {}


def _all_ints(items) -> bool:
    for o in items:  # noqa: SIM110 -- a plain loop is faster than all() on the hot path
        if type(o) is not int:
            return False
    return True


def _tensor_kind(t) -> str:
    if getattr(t, "is_nested", False):
        return f"nested tensor, {t.dim()} dims, {str(t.dtype).removeprefix('torch.')}"
    return type(t).__name__


_no_torch_function = torch._C.DisableTorchFunction
_grad_enabled = torch.is_grad_enabled
_getframe = sys._getframe
_FunctionType = types.FunctionType
_MODULE_CALL = nn.Module.__call__
_get_tracing_state = torch._C._get_tracing_state
# torch's module-wide hook registries (dicts that registering a hook fills in place):
# with any of them non-empty, torch's __call__ runs its slow path
_GLOBAL_HOOKS = tuple(getattr(torch.nn.modules.module, "_global_" + n) for n in (
    "forward_hooks", "forward_pre_hooks", "backward_hooks", "backward_pre_hooks"))
# a module's own hook registries, in its __dict__
_hooks_of = itemgetter("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                       "_backward_pre_hooks")
_MethodType = types.MethodType
_get_ident = threading.get_ident
_ref = weakref.ref
Tensor = torch.Tensor


def _scalar(t):
    if t.device.type == "meta":
        return None
    try:
        return t.item()
    except Exception:
        return None


def _has_tensor(items) -> bool:
    for o in items:  # noqa: SIM110 -- a plain loop is faster than any() on the hot path
        if isinstance(o, (torch.Tensor, list, tuple, dict)):
            return True
    return False


def _preview(t) -> list | None:
    if t.device.type == "meta" or t.is_sparse:
        return None
    try:
        return [round(float(v), 4) for v in t.detach().reshape(-1)[:8].tolist()]
    except Exception:
        return None


def _error_text(exc) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 2000 else text[:1999] + "…"


# ----------------------------------------------------------------------------- trace


class Trace:
    """The record of one forward pass. Plain data: print it, compare it, serialize it."""

    def __init__(self, steps, output, error, truncated, modules, sources, model_name):
        self.steps: list[Step] = steps
        self.output = output
        self.error: BaseException | None = error
        self.truncated: bool = truncated
        # by path, as named_modules() lists them; a model traced again shares the
        # ModuleInfo of modules that did not change with its earlier traces: read-only
        self.modules: dict[str, ModuleInfo] = modules
        self.sources: dict = sources  # (filename, firstlineno) -> list of source lines
        self.model_name: str = model_name

    # -- selection

    def view(self, which: str = "default") -> list[Step]:
        """Steps of one view: ``"default"`` (leaf-layer internals hidden), ``"all"``, or
        ``"modules"`` (module calls only)."""
        if which == "all":
            return list(self.steps)
        if which == "default":  # a failing internal op stays visible
            return [s for s in self.steps if not s.internal or s.error]
        if which == "modules":
            return [s for s in self.steps if s.kind == "module"]
        raise ValueError(f"unknown view {which!r}: expected 'default', 'all' or 'modules'")

    @property
    def failed_step(self) -> Step | None:
        """The innermost step that raised (the last step with an error), if any."""
        for s in reversed(self.steps):
            if s.error:
                return s
        return None

    def source_of(self, step: Step) -> list[str]:
        """The lines of the function that holds ``step``'s source line (may be empty)."""
        return self.sources.get((step.filename, step.func_firstlineno), [])

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self):
        return iter(self.steps)

    def __getitem__(self, i):
        return self.steps[i]

    # -- output

    def to_text(self, view: str = "default", **kw) -> str:
        from . import render

        return render.trace_text(self, view=view, **kw)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        state = "error" if self.error else ("truncated" if self.truncated else "ok")
        return f"<Trace of {self.model_name}: {len(self.steps)} steps, {state}>"

    def _repr_html_(self) -> str:
        from . import render

        return render.trace_html(self)

    def summary(self):
        from . import render

        return render.Summary(self)

    def show(self, **kw):
        """Display a stepper widget for this trace (needs ipywidgets)."""
        from . import widgets

        return widgets.Stepper(self, **kw)

    def to_dict(self) -> dict:
        return {
            "model": self.model_name,
            "error": None if self.error is None else _error_text(self.error),
            "truncated": self.truncated,
            "modules": {p: m.to_dict() for p, m in self.modules.items()},
            "sources": [
                {"filename": fn, "firstlineno": first, "lines": lines}
                for (fn, first), lines in self.sources.items()
            ],
            "steps": [s.to_dict() for s in self.steps],
        }

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)


def _survey(model: nn.Module, seen: dict | None = None) -> tuple[dict, list, list | None]:
    """One pass over the model's modules, in ``named_modules()`` order, each once.

    Returns ``paths`` (id(module) -> (path, class name, is its forward written in torch?,
    does it have torch's fused fast path?, is it a torch leaf layer (see _learn)?)),
    ``mods`` (the (path, module) pairs) and ``sig``: what decides whether the module table
    of the model's last trace still holds (path, id and class of each module, id and size
    of each of its parameters, flat), or None if the model is not a tree (a module
    registered twice, a None child) or has a lazy parameter. With ``seen``, the
    TensorInfo of every parameter and buffer goes into it up front, in this tight loop,
    instead of being read one at a time between the model's kernels."""
    paths = {}
    mods = []
    sig = []
    edges = 0
    lazy = False
    tensors = []  # parameters and buffers, for `seen`
    todo = [("", model)]
    kinds = _kinds
    while todo:
        path, mod = todo.pop()
        key = id(mod)
        if key in paths:  # registered in two places: named_modules() keeps the first
            continue
        cls = type(mod)
        kind = kinds.get(cls)
        if kind is None:
            code = getattr(getattr(cls, "forward", None), "__code__", None)
            lib = code is not None and _is_lib(code)
            fast = issubclass(cls, _FASTPATH_TYPES)
            kind = kinds[cls] = (cls.__name__, lib, fast, lib and not fast
                                 and cls.__module__.startswith("torch.nn.modules."))
        children = mod._modules
        paths[key] = (path, kind[0], kind[1], kind[2], kind[3] and not children)
        mods.append((path, mod))
        sig += (path, key, cls)
        params = mod._parameters
        if params:
            for p in params.values():
                if p is None:
                    continue
                t = type(p)
                if t is not _Parameter and t is not Tensor and isinstance(p, _LazyTensor):
                    lazy = True
                    continue
                sig += (id(p), p.numel())
            if seen is not None:
                tensors.extend(params.values())
        if seen is not None and mod._buffers:
            tensors.extend(mod._buffers.values())
        if children:
            edges += len(children)
            prefix = path + "." if path else ""
            for name, child in reversed(children.items()):
                if child is not None:
                    todo.append((prefix + name, child))
    if seen is not None:
        # the entry of the last trace while the metadata is the same: fewer new objects
        # for the collector, and the named copies made for keyword arguments still hold
        held = _held_infos
        meta = _metadata
        for p in tensors:
            t = type(p)
            if t is not _Parameter and t is not Tensor:
                continue  # None, a lazy or another kind of tensor: read when used
            try:
                m = meta(p)
            except RuntimeError:  # no single shape (a nested tensor)
                continue
            if not m[0]:
                continue
            key = id(p)
            hit = held.get(key)
            if hit is None or hit[2] != m or hit[0]() is not p:
                hit = _held_info(p, m)
            seen[key] = hit
    return paths, mods, (None if lazy or edges != len(mods) - 1 else sig)


# module class -> (its name, is its forward written in torch?, torch's fused fast path?,
# a torch leaf layer's class, if it has no children?)
_kinds: dict = {}


def _held_info(p, m) -> tuple:
    """A new ``seen`` entry (weak reference, TensorInfo, metadata) for a parameter or
    buffer whose metadata (``_metadata``) is ``m``, kept for the next traces."""
    key = id(p)
    info = _tuple_new(TensorInfo, m + (None, None, None))
    # one TensorInfo per kind of parameter: equal metadata is the same object (see _learn)
    if len(_held_kinds) >= 4096:
        _held_kinds.clear()
    info = _held_kinds.setdefault(info, info)
    if len(_held_infos) >= 65536:
        _held_infos.clear()
    hit = _held_infos[key] = (_ref(p), info, m)
    return hit


# id(parameter or buffer) -> (weak reference to it, its TensorInfo, its _metadata)
_held_infos: dict = {}
_metadata = attrgetter("shape", "dtype", "device", "requires_grad")  # in TensorInfo's order
_held_kinds: dict = {}  # TensorInfo -> itself: the one in use for its value
_LazyTensor = nn.parameter.UninitializedTensorMixin


def _own_params(mod) -> tuple[list, int]:
    ps = []
    total = 0
    for p in mod._parameters.values():
        if p is not None:
            n = 0 if isinstance(p, _LazyTensor) else p.numel()
            ps.append((id(p), n))
            total += n
    return ps, total


def _module_table(paths: dict, mods: list, sig: list | None, called=None) -> dict:
    """A ModuleInfo per path, in ``named_modules()`` order. Built after the forward, so
    that lazy layers (``nn.LazyLinear``) count the parameters their first call made (an
    uninitialized one counts 0). A parameter or module registered in two places is
    counted once in every subtree that holds it. ``extra`` is filled in for the root and
    the ``called`` paths (all, if None).

    A model traced again with the same ``sig`` (see ``_survey``: the same modules at the
    same paths, of the same classes, holding the same parameters, and a tree) gets the
    ModuleInfo of its last trace wherever the extra text is the same."""
    root = mods[0][1]
    last = _tables.get(id(root))
    if sig is not None and last is not None and last[0]() is root and last[2] == sig:
        infos = {}
        for (path, mod), info in zip(mods, last[3].values(), strict=True):
            extra = _extra_repr(mod) if called is None or path in called or not path else ""
            if info.extra != extra:
                info = ModuleInfo(path, info.type, extra, info.params, info.own_params,
                                  info.children)
            infos[path] = info
        _tables[id(root)] = last[:3] + (infos,)
        return infos
    own = {path: _own_params(mod) for path, mod in mods}  # lazy layers' are built now
    infos = _new_module_table(paths, mods, own, called)
    if sig is not None:
        key = id(root)
        if len(_tables) >= 16:
            _tables.clear()
        # the submodules are held (so that their ids stay theirs) until the root is gone
        _tables[key] = (weakref.ref(root, lambda _, key=key, tables=_tables: tables.pop(
            key, None)), [m for _, m in mods[1:]], sig, infos)
    return infos


# id(root module) -> (weakref to it, its submodules, the sig of its last trace (see
# _survey), the ModuleInfo of that trace)
_tables: dict = {}


def _new_module_table(paths: dict, mods: list, own: dict, called) -> dict:
    kids = {}  # path -> child paths
    refs = 0
    seen = set()
    edges = 0
    for path, mod in mods:
        ps = own[path][0]
        refs += len(ps)
        for pid, _ in ps:
            seen.add(pid)
        children = []
        for c in mod._modules.values():
            known = paths.get(id(c))
            if known is not None:  # (None for a child added by the forward itself)
                children.append(known[0])
        kids[path] = children
        edges += len(children)
    total = {}
    if refs == len(seen) and edges == len(mods) - 1:  # a tree: plain sums
        for path, _ in reversed(mods):  # each child comes after its parent
            n = own[path][1]
            for k in kids[path]:
                n += total[k]
            total[path] = n
    else:
        subtree = {}

        def collect(path):  # {id: numel} of the whole subtree, each tensor once
            got = subtree.get(path)
            if got is None:
                got = subtree[path] = dict(own[path][0])
                for k in kids[path]:
                    got.update(collect(k))
            return got

        for path, _ in mods:
            total[path] = sum(collect(path).values())
    infos = {}
    for path, mod in mods:
        extra = _extra_repr(mod) if called is None or path in called or not path else ""
        infos[path] = ModuleInfo(path, type(mod).__name__, extra, total[path],
                                 own[path][1], kids[path])
    return infos


def module_table(model: nn.Module) -> dict:
    """``Trace.modules`` for a model that is not traced: path -> ModuleInfo."""
    return _module_table(*_survey(model))


def _build_steps(records) -> tuple[list, dict]:
    """Turn raw records into Steps: line numbers and text, operator names (``+``, ``/=``,
    ``>``, ``bool``), loop passes, depths and inplace flags. Also returns the source of
    every function a step points into, keyed by (filename, first line)."""
    # Code objects by id (their hash is slow); the records keep them alive meanwhile.
    sites: dict = {}  # (id(code), raw lasti) -> (filename, lineno, text, func, first, label)
    sources: dict = {}
    state: dict = {}  # (parent, id(code)) -> [last line, last offset, {line: passes}]
    counted = []  # (step, {line: passes} of its function call, line, pass) for direct steps
    calls: dict = {}  # module path -> its calls so far
    steps = []
    append = steps.append
    inplace_names = _inplace_names
    index = -1
    for kind, name, code, lasti, parent, path, call, inputs, outputs, error, inplace in records:
        index += 1
        site = sites.get((id(code), lasti))
        if site is None:
            site = sites[(id(code), lasti)] = _site(code, lasti, sources)
        filename, lineno, text, func, first, label = site
        if parent is None:
            depth = 0
            ppath = ""
        else:
            up = steps[parent]
            depth = up.depth + 1
            ppath = up.path
        if kind == 0:  # an op
            if label is not None:
                name = label
            if not inplace:
                inplace = inplace_names.get(name)
                if inplace is None:
                    inplace = inplace_names[name] = name in _INPLACE_OPERATORS or (
                        name[-1:] == "_" and name[-2:] != "__")
            step = Step(index, "op", name, ppath, depth, parent, None, inputs,
                        outputs, filename, lineno, text, func, first, None, inplace,
                        error, lasti < 0)
        else:  # its call of the module: the module's path is its own
            call = calls[path] = calls.get(path, 0) + 1
            step = Step(index, "module", name, path, depth, parent, call, inputs,
                        outputs, filename, lineno, text, func, first, None, inplace,
                        error, False, name)
        append(step)
        if lasti >= 0:
            # A new pass over a line starts when the line is entered from another line,
            # or when execution jumped back (a one-line loop body).
            skey = (parent, id(code))
            st = state.get(skey)
            if st is None:
                st = state[skey] = [lineno, lasti, {lineno: 1}]
                counted.append((step, st[2], lineno, 1))
            elif st[0] != lineno or lasti <= st[1]:
                seen = st[2]
                n = seen[lineno] = seen.get(lineno, 0) + 1
                st[0] = lineno
                st[1] = lasti
                counted.append((step, seen, lineno, n))
            else:
                st[1] = lasti
                counted.append((step, st[2], lineno, st[2][lineno]))
    for step, seen, lineno, n in counted:
        if seen[lineno] > 1:
            step.iteration = n
    return steps, sources


_inplace_names: dict = {}  # op name -> does the name say it works in place?


def _site(code, lasti, sources) -> tuple:
    """Where a record points: (filename, lineno, line text, function, its first line,
    operator label). A negative ``lasti`` (-1 - offset) marks a nested record: no
    operator label. Also puts the function's source into ``sources``.

    Kept between traces per code object and offset, while linecache holds the same
    lines for the file (a re-run notebook cell has new code objects anyway)."""
    if code is _RUN_CODE:  # no reader's frame at all (e.g. `python -m book_src`)
        return "", 0, "", "", 0, None
    filename = code.co_filename
    lines = linecache.getlines(filename)
    key = (id(code), lasti)
    hit = _site_cache.get(key)
    if hit is None or hit[0] is not code or hit[1] is not lines:
        offset = lasti if lasti >= 0 else -1 - lasti
        lineno = _line_at(code, offset)
        func, first = code.co_name, code.co_firstlineno
        label = _labels_for(code).get(offset) if lasti >= 0 else None
        text = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
        if len(_site_cache) >= 4096:
            _site_cache.clear()
        block = sources.get((filename, first))
        if block is None:
            block = _function_block(filename, first, func)
        hit = _site_cache[key] = (code, lines, (filename, lineno, text, func, first, label),
                                  block)
    site = hit[2]
    sources[(filename, site[4])] = hit[3]
    return site


# (id(code), lasti) -> (code, the file's lines in linecache, site, function's source)
_site_cache: dict = {}


def _line_at(code, lasti) -> int:
    for start, end, line in code.co_lines():
        if start <= lasti < end:
            return line or code.co_firstlineno
    return code.co_firstlineno


def _function_block(filename, first, name) -> list[str]:
    """The source lines of the function starting at line ``first`` (a whole notebook
    cell or script for module-level code), dedented."""
    all_lines = linecache.getlines(filename)
    if not all_lines or first < 1:
        return []
    if name == "<module>":
        return [line.rstrip("\n") for line in all_lines[:2000]]
    import inspect

    try:
        block = inspect.getblock(all_lines[first - 1 :])
    except Exception:
        block = all_lines[first - 1 : first + 30]
    return textwrap.dedent("".join(block[:400])).splitlines()


def _run(rec, model, mods, args, kwargs, ops=True):
    """Call the model once with ``rec`` recording; return (output, error)."""
    # Module calls are recorded by stand-ins for __call__ and forward (set on the modules'
    # classes for the duration of the call and removed in `finally`), not by forward
    # hooks: any hook sends nn.Module.__call__ down its slow path, which costs more than
    # the recording itself. The model's hook dicts are never touched.
    rec.replay = ops and not rec.values and _REPLAY
    undo = _patch(rec, mods, rec.paths)
    try:
        if not ops:  # module calls only: no TorchFunctionMode, ops run at full speed
            return model(*args, **kwargs), None
        # torch looks __torch_function__ up on the mode object (and wants a method of
        # it): the closure, bound and set on the instance, comes before the class's
        # method. It is removed after: it refers back to the recorder.
        rec.__torch_function__ = hook = _MethodType(_op_hook(rec), rec)
        handle = _handle_stand_in(rec, hook)
        for namespace in _HANDLE_USERS:
            undo.append((namespace, "handle_torch_function", True, _HANDLE_TF))
            namespace.handle_torch_function = handle
        with rec:
            return model(*args, **kwargs), None
    except Exception as exc:
        return None, exc
    finally:
        rec.__dict__.pop("__torch_function__", None)
        _unpatch(undo)


def _handle_stand_in(rec, hook):
    """A stand-in for ``handle_torch_function`` in ``_HANDLE_USERS``, the way their
    Python-level functions (``F.batch_norm``, ``F.relu``, ``F.softmax``, ``torch.einsum``,
    ``Tensor.split`` ...) reach a TorchFunctionMode. When the recorder is the innermost
    mode (mode stacks are per thread: so this is the tracing thread), it pops the mode and
    calls the recorder's op hook itself, as torch's would, without torch's generic search
    for overrides and its context manager: most of what such an op costs under a mode.
    Anything else goes to torch's own."""

    def handle_torch_function(public_api, relevant_args, *args, **kwargs):
        depth = _tf_stack_len()
        if depth and _tf_stack_at(depth - 1) is rec:
            mode = _tf_stack_pop()
            try:  # (the hook ignores `types`: a subclass's override runs when it calls)
                return hook(public_api, _TENSOR_TYPES, args, kwargs)
            finally:
                _tf_stack_push(mode)
        return _HANDLE_TF(public_api, relevant_args, *args, **kwargs)

    return handle_torch_function


# the modules whose Python-level functions call handle_torch_function by its global name
_HANDLE_USERS = (torch.nn.functional, torch.functional, torch._tensor)
_REPLAY = True  # replay torch leaf layers' ops from templates (see _learn); tests turn it off
_HANDLE_TF = torch.overrides.handle_torch_function
_TENSOR_TYPES = (Tensor,)
_tf_stack_len = torch._C._len_torch_function_stack
_tf_stack_at = torch._C._get_function_stack_at
_tf_mode_on = torch._C._is_torch_function_mode_enabled
_tf_stack_pop = torch._C._pop_torch_function_stack
_tf_stack_push = torch._C._push_on_torch_function_stack
_HANDLE_STAND_IN_CODE = next(c for c in _handle_stand_in.__code__.co_consts
                             if hasattr(c, "co_code"))


# ----------------------------------------------------------------- direct forwards
#
# A replayed call (see _learn) of some of torch's most used layers runs its op the way
# torch's forward would call it, without the Python around it (``self.weight`` through
# nn.Module.__getattr__, BatchNorm's checks of its state, F.batch_norm's wrapper): that
# code is most of what such a call costs besides its kernel. Each function below does
# what torch 2.13's forward does for the state it handles, reading the same attributes,
# parameters and buffers at the same moment, and passes the same values to the same
# torch function; for any other state it declines (_DECLINE) and the forward runs. A
# replayed call takes the same kind of input as the call its template came from, which
# passed the checks the forward makes of its input (BatchNorm's number of dimensions,
# F.batch_norm's eps). Used only if, when the trace starts, the class's forward and the
# functions it calls are torch's own (_DIRECT_USES).

_DECLINE = object()
_F = torch.nn.functional
_cudnn_enabled = torch._C._get_cudnn_enabled


def _weight_and_bias(d, params):
    """(``self.weight``, ``self.bias``) of a layer whose ``__dict__`` is ``d``, if both
    are entries of its parameter table (None included), as nn.Module.__getattr__ finds
    them when no instance attribute shadows them; else None."""
    weight = params.get("weight", _MISSING)
    bias = params.get("bias", _MISSING)
    if weight is _MISSING or bias is _MISSING or "weight" in d or "bias" in d:
        return None
    return weight, bias


def _direct_conv(op):
    def conv(d, params, buffers, x):  # _ConvNd.forward, then _conv_forward, "zeros" padding
        wb = _weight_and_bias(d, params)
        if wb is None or d.get("padding_mode") != "zeros":
            return _DECLINE
        try:
            values = (d["stride"], d["padding"], d["dilation"], d["groups"])
        except KeyError:
            return _DECLINE
        return op(x, *wb, *values)

    return conv


def _direct_linear(d, params, buffers, x):
    wb = _weight_and_bias(d, params)
    return _DECLINE if wb is None else _linear(x, *wb)


def _direct_batch_norm(d, params, buffers, x):  # _BatchNorm.forward in eval mode
    wb = _weight_and_bias(d, params)
    mean = buffers.get("running_mean")
    var = buffers.get("running_var")
    if (wb is None or mean is None or var is None or "running_mean" in params
            or "running_var" in params or "running_mean" in d or "running_var" in d
            or "momentum" not in d or "eps" not in d or d.get("training", True)):
        return _DECLINE
    momentum = d["momentum"]
    return _batch_norm(x, *wb, mean, var, False, 0.0 if momentum is None else momentum,
                       d["eps"], _cudnn_enabled())


def _direct_relu(d, params, buffers, x):
    if d.get("inplace", True):  # (torch.relu_: in place, never a template anyway)
        return _DECLINE
    return _relu(x)


_linear = torch._C._nn.linear
_batch_norm = torch.batch_norm
_relu = torch.relu
_BN_FORWARD = nn.modules.batchnorm._BatchNorm.forward
# class -> (its direct forward, [(owner, name, what torch has there)] that it stands for)
_DIRECT_USES: dict = {
    nn.Linear: (_direct_linear, [(nn.Linear, "forward", nn.Linear.forward),
                                 (_F, "linear", _linear)]),
    nn.ReLU: (_direct_relu, [(nn.ReLU, "forward", nn.ReLU.forward),
                             (_F, "relu", _F.relu), (torch, "relu", _relu)]),
}
for _cls, _op in ((nn.Conv1d, torch.conv1d), (nn.Conv2d, torch.conv2d),
                  (nn.Conv3d, torch.conv3d)):
    _DIRECT_USES[_cls] = (_direct_conv(_op), [
        (_cls, "forward", _cls.forward), (_cls, "_conv_forward", _cls._conv_forward),
        (_F, _op.__name__, _op)])
for _cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
    _DIRECT_USES[_cls] = (_direct_batch_norm, [
        (_cls, "forward", _BN_FORWARD), (_cls, "_check_input_dim", _cls._check_input_dim),
        (_F, "batch_norm", _F.batch_norm), (torch, "batch_norm", _batch_norm)])
del _cls, _op


def _direct_forward(cls, forward):
    """The direct forward of ``cls`` (whose forward is ``forward``), or None if it has
    none or if its forward, or a function that forward calls, is not torch's own."""
    entry = _DIRECT_USES.get(cls)
    if entry is None or forward is not entry[1][0][2]:
        return None
    for owner, name, original in entry[1]:
        if getattr(owner, name, None) is not original:
            return None
    return entry[0]


_RUN_CODE = _run.__code__
_LOCK = threading.RLock()


def trace(model, *args, ops: bool = True, max_steps: int | None = DEFAULT_MAX_STEPS,
          values: bool = False, raise_errors: bool = False, **kwargs) -> Trace:
    """Run ``model(*args, **kwargs)`` once and record every step.

    ops:          record torch functions and Tensor methods too (else module calls only).
    max_steps:    stop the forward with an error once this many steps are recorded.
    values:       also keep a preview (first 8 numbers) of every tensor.
    raise_errors: re-raise an exception from the forward (with ``.trace`` attached)
                  instead of recording it in ``Trace.error``.
    """
    if not isinstance(model, nn.Module):
        kind = type(model).__name__
        what = "is not callable" if not callable(model) else "is not an nn.Module"
        raise TypeError(
            f"trace() expects an nn.Module, but got a {kind} ({what}). "
            "Wrap plain functions in a module, e.g. class M(nn.Module): def forward(self, x): ..."
        )
    if max_steps is None:
        max_steps = sys.maxsize
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive int or None, got {max_steps!r}")

    # The cyclic garbage collector is paused while recording (and restored after): the
    # thousands of small records would otherwise trigger full collections that cost
    # more than the recording itself. Reference counting still frees memory as usual.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        rec = _Recorder(max_steps, values)
        paths, mods, sig = _survey(model, rec.seen if ops and not values else None)
        rec.paths = paths
        with _LOCK:  # traces from several threads take turns: each patches the modules
            output, error = _run(rec, model, mods, args, kwargs, ops)
        steps, sources = _build_steps(rec.records)
        # after the forward: lazy layers are built now
        infos = _module_table(paths, mods, sig,
                              {s.path for s in steps if s.kind == "module"})
        # what only the recording needed is freed now, before the collector runs again
        rec.records = rec.seen = rec.paths = paths = mods = sig = None
    finally:
        if gc_was_enabled:
            gc.enable()
    name = type(model).__name__
    t = Trace(steps, output, error, rec.limit_hit, infos, sources, name)
    if error is not None and raise_errors:
        with contextlib.suppress(Exception):  # some exception types refuse attributes
            error.trace = t
        raise error
    return t
