"""Fuzzing the ONNX front end and the compiler: malformed and misfit models get errors, not tracebacks.

Small valid models (hand-built, and the ``mobile_small`` network) are
mutated: node attributes, initializer shapes, types and data, tensor shapes
(zero, negative, huge), opset versions, missing and extra inputs and
outputs, wrong operator types, and truncated or garbled bytes.  Each result
is compiled for ``tiny`` at ``wide`` under a time and memory limit, and
must either compile (then, when onnxruntime runs the same model, the
simulated program must agree with it) or fail with one of the compiler's
user errors (``compiler.errors.USER_ERRORS``) with a message.  Anything
else (another exception from deep inside, a hang, a large allocation or a
wrong answer) fails the test with the mutated model's description.

Every cause found this way has its own regression test with the minimal
model in ``tests/test_frontend.py`` (loader and passes) or
``tests/test_lowering.py`` (planning and code generation).
"""
from __future__ import annotations

import contextlib
import functools
import resource
import signal
import traceback

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from compiler.compile import compile_model
from compiler.errors import USER_ERRORS
from compiler.models import nets
from compiler.verify import WIDE_COSINE, verify_model
from npu.hostio import run_on_simulator

#: The machine the models are compiled for.
CONFIG = "tiny"
#: Seconds one compilation (and its check against onnxruntime) may take.
TIME_LIMIT = 20
#: Address space one compilation may add to the process (bytes): a model must be refused before it allocates more.
MEMORY_LIMIT = 3 << 30
#: Largest error of an output relative to its largest reference value that is not a fault at ``wide``
#: (a Clip can make a small error of its input large relative to its output; verify_model checks each layer).
GROSS = 1e-2


# --- the valid models the mutations start from ----------------------------------------------------------------

def _rng(seed: int):
    return np.random.default_rng(seed)


def _init(name, array, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(array, dtype), name)


def _finish(name, nodes, inits, in_shape, outputs, opset=17):
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("data", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, s) for o, s in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def _convnet():
    """Conv (bias) -> BatchNorm -> Relu -> MaxPool -> Conv 1x1 -> GlobalAveragePool -> Flatten -> Gemm -> Softmax."""
    r = _rng(1)
    nodes = [helper.make_node("Conv", ["data", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1], group=1),
             helper.make_node("BatchNormalization", ["c1", "g", "be", "mu", "var"], ["bn"], name="bn",
                              epsilon=1e-5),
             helper.make_node("Relu", ["bn"], ["r1"], name="relu"),
             helper.make_node("MaxPool", ["r1"], ["p1"], name="pool", kernel_shape=[2, 2], strides=[2, 2],
                              pads=[0, 0, 0, 0]),
             helper.make_node("Conv", ["p1", "w2"], ["c2"], name="conv2", kernel_shape=[1, 1]),
             helper.make_node("GlobalAveragePool", ["c2"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
             helper.make_node("Gemm", ["flat", "fw", "fb"], ["logits"], name="fc", transB=1, alpha=1.0, beta=1.0),
             helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=-1)]
    inits = [_init("w1", 0.3 * r.standard_normal((6, 3, 3, 3))), _init("b1", 0.1 * r.standard_normal(6)),
             _init("g", 1 + 0.1 * r.standard_normal(6)), _init("be", 0.1 * r.standard_normal(6)),
             _init("mu", 0.1 * r.standard_normal(6)), _init("var", 1 + 0.1 * r.random(6)),
             _init("w2", 0.3 * r.standard_normal((8, 6, 1, 1))),
             _init("fw", 0.3 * r.standard_normal((5, 8))), _init("fb", 0.1 * r.standard_normal(5))]
    return _finish("convnet", nodes, inits, [1, 3, 8, 8], [("prob", [1, 5])])


def _branches():
    """Pad, Conv, Clip, Concat, a residual Add, AveragePool, Mul/Add by constants, ReduceMean, Reshape, MatMul."""
    r = _rng(2)
    nodes = [helper.make_node("Pad", ["data", "pads"], ["padded"], name="pad", mode="constant"),
             helper.make_node("Conv", ["padded", "w0"], ["x"], name="stem", kernel_shape=[3, 3]),
             helper.make_node("Clip", ["x", "lo", "hi"], ["x6"], name="relu6"),
             helper.make_node("Conv", ["x6", "wa"], ["a"], name="branch_a", kernel_shape=[1, 1]),
             helper.make_node("Conv", ["x6", "wb"], ["b"], name="branch_b", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                              group=2),
             helper.make_node("Concat", ["a", "b"], ["cat"], name="concat", axis=1),
             helper.make_node("Conv", ["cat", "wc"], ["c"], name="mix", kernel_shape=[1, 1]),
             helper.make_node("Add", ["c", "x6"], ["res"], name="residual"),
             helper.make_node("AveragePool", ["res"], ["avg"], name="avgpool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Mul", ["avg", "scale"], ["scaled"], name="scale"),
             helper.make_node("Add", ["scaled", "shift"], ["shifted"], name="shift"),
             helper.make_node("ReduceMean", ["shifted"], ["mean"], name="mean", axes=[2, 3], keepdims=1),
             helper.make_node("Reshape", ["mean", "shape"], ["vec"], name="reshape"),
             helper.make_node("MatMul", ["vec", "mw"], ["y"], name="matmul")]
    inits = [_init("pads", [0, 0, 1, 1, 0, 0, 1, 1], np.int64), _init("w0", 0.3 * r.standard_normal((4, 3, 3, 3))),
             _init("lo", 0.0), _init("hi", 6.0), _init("wa", 0.3 * r.standard_normal((2, 4, 1, 1))),
             _init("wb", 0.3 * r.standard_normal((2, 2, 3, 3))), _init("wc", 0.3 * r.standard_normal((4, 4, 1, 1))),
             _init("scale", 1 + 0.1 * r.standard_normal((1, 4, 1, 1))), _init("shift", 0.1 * r.standard_normal((4, 1, 1))),
             _init("shape", [1, 4], np.int64), _init("mw", 0.3 * r.standard_normal((4, 3)))]
    return _finish("branches", nodes, inits, [1, 3, 6, 6], [("y", [1, 3])], opset=13)


def _nhwc():
    """An NHWC model: input Transpose, Conv, Relu, output-side Transpose and Reshape into a Gemm."""
    r = _rng(3)
    nodes = [helper.make_node("Transpose", ["data"], ["nchw"], name="to_nchw", perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "w"], ["c"], name="conv", kernel_shape=[3, 3], strides=[2, 2],
                              auto_pad="SAME_UPPER"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Transpose", ["r"], ["nhwc"], name="to_nhwc", perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["nhwc", "shape"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "fw"], ["y"], name="fc")]
    inits = [_init("w", 0.3 * r.standard_normal((4, 2, 3, 3))), _init("shape", [1, 64], np.int64),
             _init("fw", 0.3 * r.standard_normal((64, 3)))]
    return _finish("nhwc", nodes, inits, [1, 8, 8, 2], [("y", [1, 3])], opset=11)


def _mobile():
    return nets.mobile_small()


BASES = {"convnet": _convnet, "branches": _branches, "nhwc": _nhwc, "mobile_small": _mobile}


@functools.lru_cache(maxsize=None)
def _base_bytes(name: str) -> bytes:
    return BASES[name]().SerializeToString()


def base(name: str) -> onnx.ModelProto:
    """A fresh copy of base model ``name``."""
    model = onnx.ModelProto()
    model.ParseFromString(_base_bytes(name))
    return model


# --- mutations --------------------------------------------------------------------------------------------------

class Draw:
    """The choices a mutation makes, from hypothesis (``data.draw``) or from a ``random.Random``."""

    def __init__(self, data=None, rnd=None):
        self.data, self.rnd = data, rnd

    def choice(self, seq):
        seq = list(seq)
        if self.data is not None:
            return self.data.draw(st.sampled_from(seq))
        return self.rnd.choice(seq)

    def integer(self, lo: int, hi: int) -> int:
        if self.data is not None:
            return self.data.draw(st.integers(lo, hi))
        return self.rnd.randint(lo, hi)


#: Integers that break shape arithmetic: zero, negative, one, typical, just too large, huge, int32/int64 limits.
INTS = (0, -1, 1, 2, 3, 5, -3, 7, 64, 4095, 4096, 65535, 100000, 2**31 - 1, -2**31, 2**62)
#: Attributes worth setting on any node (those the compiler reads, and a few it does not know).
ATTRS = ("kernel_shape", "strides", "pads", "group", "dilations", "axis", "perm", "auto_pad", "ceil_mode",
         "count_include_pad", "transA", "transB", "alpha", "beta", "epsilon", "keepdims", "axes", "mode", "value",
         "min", "max", "storage_order", "spatial", "training_mode", "is_test", "to", "allowzero", "bogus")
OPS = ("Relu", "Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Add", "Sub", "Mul", "Div",
       "Sum", "Concat", "Identity", "Dropout", "Transpose", "Reshape", "Flatten", "Gemm", "MatMul",
       "BatchNormalization", "Clip", "Pad", "Softmax", "ReduceMean", "Sigmoid", "Shape", "Gather", "Unsqueeze",
       "Squeeze", "Slice", "Cast", "Constant", "ConstantOfShape", "Expand", "Tile", "Range", "Loop", "If",
       "NoSuchOp")
DTYPES = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT8,
          TensorProto.UINT8, TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL, TensorProto.STRING,
          TensorProto.COMPLEX64, TensorProto.UNDEFINED, TensorProto.FLOAT8E4M3FN, TensorProto.INT4, 999)
OPSETS = (1, 6, 7, 8, 9, 10, 11, 12, 13, 14, 17, 18, 19, 21, 22, 23, 24, 30, 1000)


def _ints(d: Draw, lo_len=0, hi_len=6) -> list[int]:
    return [d.choice(INTS) for _ in range(d.integer(lo_len, hi_len))]


def _attr_value(d: Draw, old):
    kind = d.choice(("ints", "int", "float", "string", "tensor", "small", "small", "small"))
    if kind == "small" and isinstance(old, list):       # plausible: as many small numbers as before
        return [d.integer(-1, 4) if isinstance(v, int) else d.choice((0.0, 1.0, -1.0)) for v in old] or [1]
    if kind == "small" and isinstance(old, int):
        return d.integer(-2, 4)
    if kind == "ints" or kind == "small":
        return _ints(d) if kind == "ints" else [d.integer(-1, 4) for _ in range(d.integer(1, 4))]
    if kind == "int":
        return d.choice(INTS)
    if kind == "float":
        return d.choice((0.0, -1.0, 1e-30, 1e30, float("nan"), float("inf"), 0.5))
    if kind == "string":
        return d.choice((b"SAME_UPPER", b"SAME_LOWER", b"VALID", b"NOTSET", b"reflect", b"constant", b"edge",
                         b"\xff\xfe not utf-8", b""))
    return numpy_helper.from_array(np.asarray(d.choice(([1.0], [[1, 2], [3, 4]], [], 7)), np.float32), "t")


def _tensor_names(model: onnx.ModelProto) -> list[str]:
    g = model.graph
    names = [vi.name for vi in g.input] + [t.name for t in g.initializer]
    names += [o for n in g.node for o in n.output]
    return names + ["", "no_such_tensor"]


def m_attribute(model, d: Draw) -> str:
    if not model.graph.node:
        return "no node"
    node = d.choice(model.graph.node)
    old = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    try:
        known = sorted(onnx.defs.get_schema(node.op_type, 30, node.domain).attributes)
    except Exception:     # noqa: BLE001  (an operator onnx does not know)
        known = []
    name = d.choice(sorted(old) + known if d.choice((True, True, False)) and (old or known) else ATTRS)
    value = _attr_value(d, old.get(name))
    keep = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(keep)
    try:
        node.attribute.append(helper.make_attribute(name, value))
    except (ValueError, TypeError):
        return f"{node.name}: attribute {name} not settable to {value!r}"
    return f"{node.name}.{name} = {value!r}"


def m_drop_attribute(model, d: Draw) -> str:
    nodes = [n for n in model.graph.node if n.attribute]
    if not nodes:
        return "no attribute"
    node = d.choice(nodes)
    a = d.choice(node.attribute)
    node.attribute.remove(a)
    return f"{node.name}: attribute {a.name} removed"


def m_init_dims(model, d: Draw) -> str:
    if not model.graph.initializer:
        return "no initializer"
    t = d.choice(model.graph.initializer)
    dims = list(t.dims)
    how = d.choice(("one", "add", "drop", "all"))
    if how == "one" and dims:
        dims[d.integer(0, len(dims) - 1)] = d.choice(INTS)
    elif how == "add":
        dims.insert(d.integer(0, len(dims)), d.choice(INTS))
    elif how == "drop" and dims:
        dims.pop(d.integer(0, len(dims) - 1))
    else:
        dims = _ints(d, 0, 5)
    del t.dims[:]
    t.dims.extend(int(x) for x in dims)
    return f"initializer {t.name} dims -> {dims} (data unchanged)"


def m_init_dtype(model, d: Draw) -> str:
    if not model.graph.initializer:
        return "no initializer"
    t = d.choice(model.graph.initializer)
    t.data_type = d.choice(DTYPES)
    return f"initializer {t.name} data_type -> {t.data_type} (bytes unchanged)"


def m_init_data(model, d: Draw) -> str:
    inits = model.graph.initializer
    if not inits:
        return "no initializer"
    k = d.integer(0, len(inits) - 1)
    t = inits[k]
    how = d.choice(("truncate", "extend", "values", "reshape", "empty", "remove", "duplicate", "float_data"))
    if how == "remove":
        del inits[k]
        return f"initializer {t.name} removed"
    if how == "duplicate":
        inits.add().CopyFrom(t)
        return f"initializer {t.name} duplicated"
    if how == "truncate" and t.raw_data:
        t.raw_data = t.raw_data[:d.integer(0, max(len(t.raw_data) - 1, 0))]
        return f"initializer {t.name} raw_data truncated to {len(t.raw_data)} bytes"
    if how == "extend" and t.raw_data:
        t.raw_data = t.raw_data + bytes(d.choice((1, 4, 64)))
        return f"initializer {t.name} raw_data extended"
    if how == "float_data":              # values in the typed field, the count disagreeing with the dims
        n = d.choice((0, 1, 3, int(np.prod(t.dims)) + 1))
        t.ClearField("raw_data")
        t.float_data.extend([0.5] * n)
        return f"initializer {t.name}: {n} float_data values"
    try:
        arr = numpy_helper.to_array(t)
    except Exception:     # noqa: BLE001  (an earlier mutation broke it: start from a small array)
        arr = np.ones(3, np.float32)
    if how == "values":
        special = d.choice((np.nan, np.inf, -np.inf, 1e30, 0.0, 65504.0 * 4))
        arr = np.full_like(arr, special) if arr.dtype.kind == "f" else np.full_like(arr, -7)
    elif how == "reshape":
        arr = arr.reshape(-1)
        arr = arr[:d.integer(0, arr.size)]
    else:
        arr = np.zeros((0,) + arr.shape[1:], arr.dtype)
    new = numpy_helper.from_array(arr, t.name)
    t.CopyFrom(new)
    return f"initializer {t.name} -> {how} {list(arr.shape)}"


def _value_info_dims(vi, d: Draw) -> str:
    tt = vi.type.tensor_type
    how = d.choice(("dim", "dim", "param", "noshape", "elem", "rank"))
    if how == "noshape":
        tt.ClearField("shape")
        return "shape removed"
    if how == "elem":
        tt.elem_type = d.choice(DTYPES)
        return f"elem_type {tt.elem_type}"
    dims = tt.shape.dim
    if how == "rank":
        if dims and d.choice((True, False)):
            del dims[len(dims) - 1]
        else:
            dims.add().dim_value = 1
        return f"rank -> {len(dims)}"
    if not dims:
        return "no dims"
    i = d.integer(0, len(dims) - 1)
    if how == "param":
        dims[i].dim_param = d.choice(("N", "height", ""))
        return f"dim {i} symbolic"
    dims[i].dim_value = d.choice(INTS)
    return f"dim {i} = {dims[i].dim_value}"


def m_input_shape(model, d: Draw) -> str:
    vi = d.choice(model.graph.input)
    return f"input {vi.name}: {_value_info_dims(vi, d)}"


def m_output(model, d: Draw) -> str:
    g = model.graph
    how = d.choice(("shape", "rename", "extra", "remove", "intermediate"))
    if how == "shape" and g.output:
        vi = d.choice(g.output)
        return f"output {vi.name}: {_value_info_dims(vi, d)}"
    if how == "rename" and g.output:
        g.output[0].name = d.choice(_tensor_names(model))
        return f"output renamed {g.output[0].name!r}"
    if how == "remove" and g.output:
        del g.output[len(g.output) - 1]
        return "last output removed"
    name = d.choice(_tensor_names(model))
    g.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return f"output {name!r} added"


def m_node_inputs(model, d: Draw) -> str:
    if not model.graph.node:
        return "no node"
    node = d.choice(model.graph.node)
    ins = list(node.input)
    how = d.choice(("drop_last", "drop_first", "extra", "replace", "empty"))
    if how == "drop_last" and ins:
        ins.pop()
    elif how == "drop_first" and ins:
        ins.pop(0)
    elif how == "extra":
        ins.append(d.choice(_tensor_names(model)))
    elif how == "replace" and ins:
        ins[d.integer(0, len(ins) - 1)] = d.choice(_tensor_names(model))
    elif how == "empty" and ins:
        ins[d.integer(0, len(ins) - 1)] = ""
    del node.input[:]
    node.input.extend(ins)
    return f"{node.name} inputs -> {ins}"


def m_node_outputs(model, d: Draw) -> str:
    if not model.graph.node:
        return "no node"
    node = d.choice(model.graph.node)
    how = d.choice(("rename", "extra", "empty", "clash"))
    if how == "rename":
        old = node.output[0]
        node.output[0] = "renamed_" + old
        if d.choice((True, False)):         # and its readers follow the new name
            for other in model.graph.node:
                other.input[:] = ["renamed_" + old if t == old else t for t in other.input]
    elif how == "extra":
        node.output.append(f"{node.name}_extra")
    elif how == "empty":
        node.output[0] = ""
    else:
        node.output[0] = d.choice(_tensor_names(model))
    return f"{node.name} outputs -> {list(node.output)}"


def m_op_type(model, d: Draw) -> str:
    if not model.graph.node:
        return "no node"
    node = d.choice(model.graph.node)
    node.op_type = d.choice(OPS)
    return f"{node.name} op_type -> {node.op_type}"


def m_domain(model, d: Draw) -> str:
    if not model.graph.node:
        return "no node"
    node = d.choice(model.graph.node)
    node.domain = d.choice(("com.microsoft", "ai.onnx.ml", "bogus", "ai.onnx"))
    return f"{node.name} domain -> {node.domain}"


def m_opset(model, d: Draw) -> str:
    how = d.choice(("version", "version", "remove", "extra", "ir"))
    if how == "version" and model.opset_import:
        model.opset_import[0].version = d.choice(OPSETS)
        return f"opset -> {model.opset_import[0].version}"
    if how == "remove":
        del model.opset_import[:]
        return "opset_import removed"
    if how == "extra":
        model.opset_import.append(helper.make_opsetid(d.choice(("", "com.microsoft", "x")), d.choice(OPSETS)))
        return f"opset_import added {model.opset_import[-1]}"
    model.ir_version = d.choice((0, 1, 3, 7, 8, 10, 11, 100))
    return f"ir_version -> {model.ir_version}"


def m_nodes(model, d: Draw) -> str:
    nodes = list(model.graph.node)
    if not nodes:
        return "no node"
    how = d.choice(("reverse", "swap", "delete", "duplicate"))
    i = d.integer(0, len(nodes) - 1)
    if how == "reverse":
        nodes.reverse()
    elif how == "swap":
        j = d.integer(0, len(nodes) - 1)
        nodes[i], nodes[j] = nodes[j], nodes[i]
    elif how == "delete":
        nodes.pop(i)
    else:
        nodes.insert(i, nodes[i])
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return f"nodes {how} at {i}"


def m_value_info(model, d: Draw) -> str:
    names = [o for n in model.graph.node for o in n.output if o]
    if not names:
        return "no tensor"
    name = d.choice(names)
    dims = [d.choice((1, 0, -1, 2, 3, 8, 100000)) for _ in range(d.integer(0, 5))]
    model.graph.value_info.append(helper.make_tensor_value_info(name, d.choice((TensorProto.FLOAT,
                                                                                 TensorProto.INT64)), dims))
    return f"value_info {name} {dims}"


MUTATIONS = (m_attribute, m_attribute, m_drop_attribute, m_init_dims, m_init_dtype, m_init_data, m_input_shape,
             m_output, m_node_inputs, m_node_outputs, m_op_type, m_domain, m_opset, m_nodes, m_value_info)


def mutate(d: Draw) -> tuple[onnx.ModelProto, list[str]]:
    """A base model with one to three mutations, and what they were."""
    name = d.choice(sorted(BASES))
    model = base(name)
    what = [name]
    for _ in range(d.choice((1, 1, 2, 3))):
        m = d.choice(MUTATIONS)
        what.append(m(model, d))
    return model, what


def garble(d: Draw) -> tuple[bytes, str]:
    """The bytes of a base model, truncated, with bytes overwritten, or not a model at all."""
    name = d.choice(sorted(BASES))
    data = bytearray(_base_bytes(name))
    how = d.choice(("truncate", "flip", "flip", "empty", "zeros", "text"))
    if how == "truncate":
        cut = d.integer(0, len(data) - 1)
        return bytes(data[:cut]), f"{name} truncated to {cut} bytes"
    if how == "flip":
        spots = [d.integer(0, len(data) - 1) for _ in range(d.integer(1, 8))]
        for i in spots:
            data[i] = d.integer(0, 255)
        return bytes(data), f"{name} with bytes {spots} overwritten"
    if how == "empty":
        return b"", "empty file"
    if how == "zeros":
        return bytes(d.integer(1, 64)), "zero bytes"
    return b"ir_version: 8\ngraph { name: 'x' }\n", "text format"


def _divisors(n: int) -> list[int]:
    return [g for g in range(1, n + 1) if n % g == 0]


def generate(d: Draw) -> tuple[onnx.ModelProto, list[str]]:
    """A small valid model of random layers and parameters (the shapes the compiler must map, or refuse)."""
    r = np.random.default_rng(d.integer(0, 1000))
    opset = d.choice((11, 13, 17))
    c, h, w = d.choice((1, 2, 3, 4, 8, 16, 33, 64)), d.choice((1, 2, 3, 5, 8, 12, 40)), d.choice((1, 2, 3, 5, 8, 12, 40))
    nodes, inits, what = [], [], [f"opset {opset}, input {c}x{h}x{w}"]
    x, count = "data", [0]
    shapes = {"data": (c, h, w)}

    def new(op, ins, shape, **attrs):
        count[0] += 1
        out = f"{op.lower()}{count[0]}"
        nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        shapes[out] = shape
        what.append(f"{op}{'' if not attrs else attrs} -> {list(shape)}")
        return out

    def const(name, value, dtype=np.float32):
        inits.append(_init(f"{name}{count[0]}", value, dtype))
        return f"{name}{count[0]}"

    vector = False
    for _ in range(d.integer(1, 5)):
        if vector:
            break
        c, h, w = shapes[x]
        kind = d.choice(("conv", "conv", "conv", "pool", "pool", "relu", "clip", "bn", "residual", "affine", "pad",
                         "concat", "global", "dense"))
        if kind == "conv":
            cout = d.choice((1, 2, 4, 8, 16, 32, 33, 64, 96))
            kh, kw = d.choice((1, 2, 3, 5, 7)), d.choice((1, 2, 3, 5, 7))
            groups = [g for g in _divisors(c) if cout % g == 0]
            g = d.choice(groups)
            pads = [d.integer(0, k - 1) for k in (kh, kw, kh, kw)]
            sy, sx = d.integer(1, 3), d.integer(1, 3)
            oh, ow = (h + pads[0] + pads[2] - kh) // sy + 1, (w + pads[1] + pads[3] - kw) // sx + 1
            if oh < 1 or ow < 1:
                continue
            ins = [x, const("w", 0.4 * r.standard_normal((cout, c // g, kh, kw)))]
            if d.choice((True, False)):
                ins.append(const("b", 0.1 * r.standard_normal(cout)))
            x = new("Conv", ins, (cout, oh, ow), kernel_shape=[kh, kw], strides=[sy, sx], pads=pads, group=g)
        elif kind == "pool":
            op = d.choice(("MaxPool", "AveragePool"))
            kh, kw = d.integer(1, min(h, 4)), d.integer(1, min(w, 4))
            pads = [d.integer(0, k - 1) for k in (kh, kw, kh, kw)]
            sy, sx = d.integer(1, 3), d.integer(1, 3)
            oh, ow = (h + pads[0] + pads[2] - kh) // sy + 1, (w + pads[1] + pads[3] - kw) // sx + 1
            attrs = dict(kernel_shape=[kh, kw], strides=[sy, sx], pads=pads)
            if op == "AveragePool":
                attrs["count_include_pad"] = 1
            elif any(pads):                 # padded max pooling is supported after a ReLU: give it one
                x = new("Relu", [x], (c, h, w))
            x = new(op, [x], (c, oh, ow), **attrs)
        elif kind == "relu":
            x = new("Relu", [x], (c, h, w))
        elif kind == "clip":
            lo, hi = d.choice(((0.0, 6.0), (-1.0, 1.0), (0.5, 0.25 + 0.5)))
            x = new("Clip", [x, const("lo", lo), const("hi", hi)], (c, h, w))
        elif kind == "bn":
            x = new("BatchNormalization", [x, const("g", 1 + 0.1 * r.standard_normal(c)),
                                           const("be", 0.1 * r.standard_normal(c)),
                                           const("mu", 0.1 * r.standard_normal(c)),
                                           const("var", 1 + r.random(c))], (c, h, w))
        elif kind == "residual":
            y = new("Conv", [x, const("w", 0.3 * r.standard_normal((c, c, 3, 3)))], (c, h, w),
                    kernel_shape=[3, 3], pads=[1, 1, 1, 1])
            x = new("Add", [y, x] if d.choice((True, False)) else [x, y], (c, h, w))
        elif kind == "affine":
            op = d.choice(("Mul", "Add", "Sub"))
            shape = d.choice(((c, 1, 1), (1, c, 1, 1), (1,), ()))
            x = new(op, [x, const("k", 1 + 0.1 * r.standard_normal(shape))], (c, h, w))
        elif kind == "pad":
            pads = [0, 0] + [d.integer(0, 2) for _ in range(2)] + [0, 0] + [d.integer(0, 2) for _ in range(2)]
            x = new("Pad", [x, const("pads", pads, np.int64)], (c, h + pads[2] + pads[6], w + pads[3] + pads[7]),
                    mode="constant")
        elif kind == "concat":            # branches of several kinds, in either order, the source itself too
            first = len(nodes)
            branches = []
            for _ in range(d.integer(1, 3)):
                how = d.choice(("conv1", "conv3", "relu", "clip", "pool", "source"))
                if how.startswith("conv"):
                    k = int(how[-1])
                    cb = d.choice((1, 3, 5, 8, 16, 32))
                    branches.append(new("Conv", [x, const("w", 0.3 * r.standard_normal((cb, c, k, k)))], (cb, h, w),
                                        kernel_shape=[k, k], pads=[k // 2] * 4))
                elif how == "relu":
                    branches.append(new("Relu", [x], (c, h, w)))
                elif how == "clip":
                    branches.append(new("Clip", [x, const("lo", 0.25), const("hi", 1.0)], (c, h, w)))
                elif how == "pool":
                    branches.append(new("AveragePool", [x], (c, h, w), kernel_shape=[1, 1]))
                else:
                    branches.append(x)
            if d.choice((True, False)):     # the branches' nodes in reverse order in the file
                nodes[first:] = nodes[first:][::-1]
            order = [branches[i] for i in sorted(range(len(branches)), key=lambda i: d.integer(0, 9))]
            x = new("Concat", order, (sum(shapes[b][0] for b in order), h, w), axis=1)
        elif kind == "global":
            op = d.choice(("GlobalAveragePool", "GlobalMaxPool", "ReduceMean"))
            attrs = {"axes": [2, 3], "keepdims": 1} if op == "ReduceMean" else {}
            x = new(op, [x], (c, 1, 1), **attrs)
        else:
            x = new("Flatten", [x], (c * h * w,), axis=1)
            k = d.choice((1, 3, 10, 40))
            x = new("Gemm", [x, const("fw", 0.3 * r.standard_normal((k, c * h * w))),
                             const("fb", 0.1 * r.standard_normal(k))], (k,), transB=1)
            vector = True
    shape = [1, *shapes[x]]
    model = helper.make_model(helper.make_graph(nodes, "generated", [helper.make_tensor_value_info(
        "data", TensorProto.FLOAT, [1, *shapes["data"]])], [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape)],
        inits), opset_imports=[helper.make_opsetid("", opset)], ir_version=7)
    return model, what


# --- the oracle -------------------------------------------------------------------------------------------------

class Hang(Exception):
    """The compilation took longer than TIME_LIMIT."""


@contextlib.contextmanager
def _limits():
    """TIME_LIMIT seconds and MEMORY_LIMIT more bytes of address space for the block (restored after)."""
    def alarm(_sig, _frame):
        raise Hang(f"no result after {TIME_LIMIT} s")

    old_handler = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
    old_as = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * resource.getpagesize()
    cap = used + MEMORY_LIMIT
    if old_as[1] != resource.RLIM_INFINITY:
        cap = min(cap, old_as[1])
    resource.setrlimit(resource.RLIMIT_AS, (cap, old_as[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, old_as)
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)


def _ort_outputs(model: onnx.ModelProto, x: np.ndarray):
    """onnxruntime's outputs for ``x``, or None when onnxruntime does not accept or run the model."""
    import onnxruntime as ort

    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4
        sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        if len(sess.get_inputs()) != 1:
            return None
        return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {sess.get_inputs()[0].name: x})))
    except Exception:     # noqa: BLE001  (onnxruntime refuses what it refuses: then there is nothing to compare)
        return None


def _compare(model: onnx.ModelProto, compiled) -> str | None:
    """Why the compiled program disagrees with onnxruntime on a random input (None if it agrees or ORT refuses).

    The outputs are compared whole (a gross error, or a cosine below
    ``WIDE_COSINE``), then every tensor the program materialises by
    ``verify_model`` (the simulator bit for bit against the numerics
    contract, each compiled layer in binary64 against onnxruntime).
    """
    from runtime.heads import softmax

    if len(compiled.program.inputs) != 1:
        return None
    (desc,) = compiled.program.inputs
    x = np.random.default_rng(0).standard_normal((1, *desc.shape)).astype(np.float32)
    ref = _ort_outputs(model, x)
    if ref is None or not all(np.isfinite(v).all() for v in ref.values()):
        return None                     # nothing to compare, or a NaN/inf model: nothing well defined
    outs, _ = run_on_simulator(compiled.program, {desc.name: x}, mode="functional")
    post = compiled.program.metadata.postprocess
    for name, y in outs.items():
        if name not in ref:
            return f"output {name!r} is not an onnxruntime output ({sorted(ref)})"
        r = np.asarray(ref[name], np.float64).reshape(-1)
        y = np.asarray(softmax(y) if post.get(name) == "softmax" else y, np.float64).reshape(-1)
        if r.size != y.size:
            return f"output {name!r}: {y.size} values, onnxruntime {r.size}"
        scale = float(np.abs(r).max(initial=0.0))
        err = float(np.abs(y - r).max(initial=0.0))
        cosine = float(y @ r / (np.linalg.norm(y) * np.linalg.norm(r))) if scale and np.abs(y).max() else 1.0
        if err > GROSS * max(scale, 1e-6) or cosine < WIDE_COSINE:
            return f"output {name!r}: max error {err:.3g} against onnxruntime's max |value| {scale:.3g}, " \
                   f"cosine {cosine:.6f}"
    report = verify_model(model, compiled.config, "wide", [x], compiled=compiled)
    if not report.ok:
        return "a layer departs from onnxruntime:\n" + report.table()
    return None


def check(source, what) -> str:
    """Compile ``source`` (ModelProto or path) for CONFIG at wide; fail the test unless the outcome is clean.

    Returns "compiled" or the user error's class name.
    """
    try:
        with _limits():
            compiled = compile_model(source, CONFIG, "wide")
            why = _compare(source, compiled) if isinstance(source, onnx.ModelProto) else None
    except USER_ERRORS as exc:
        assert str(exc).strip(), f"{what}: {type(exc).__name__} without a message"
        return type(exc).__name__
    except Hang:
        pytest.fail(f"{what}: compiling took more than {TIME_LIMIT} s")
    except MemoryError:
        pytest.fail(f"{what}: compiling tried to allocate more than {MEMORY_LIMIT >> 20} MiB")
    except Exception as exc:     # noqa: BLE001
        tb = "".join(traceback.format_exception(exc)[-6:])
        pytest.fail(f"{what}: {type(exc).__name__}: {exc}\n{tb}")
    if why is not None:
        pytest.fail(f"{what}: compiled, but {why}")
    return "compiled"


# --- the tests --------------------------------------------------------------------------------------------------

FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("name", sorted(BASES))
def test_the_base_models_compile_and_match_onnxruntime(name):
    assert check(base(name), name) == "compiled"


@FUZZ
@given(data=st.data())
def test_mutated_models_compile_or_fail_with_a_user_error(data):
    model, what = mutate(Draw(data=data))
    check(model, what)


@FUZZ
@given(data=st.data())
def test_generated_models_compile_and_match_onnxruntime_or_fail_with_a_user_error(data):
    model, what = generate(Draw(data=data))
    check(model, what)


@FUZZ
@given(data=st.data())
def test_garbled_bytes_are_load_errors(data, tmp_path_factory):
    raw, what = garble(Draw(data=data))
    path = tmp_path_factory.mktemp("garbled") / "model.onnx"
    path.write_bytes(raw)
    check(path, what)
