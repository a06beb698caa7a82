"""Constant folding: evaluate every ONNX operator whose inputs are all known (Shape of a static tensor included).

Before a node is evaluated, ONNX's shape inference on that node alone (with
the values of its small constant inputs) gives the size of its results, so
a model that would make a huge constant (a ConstantOfShape, Expand, Tile or
Range with huge sizes, a MatMul of large constants) is refused with the
limit named before anything is allocated.  Operators with subgraphs (Loop,
Scan, If) are not evaluated: their cost does not follow from their inputs.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import shape_inference
from onnx.reference import ReferenceEvaluator

from ..errors import Problem, UnsupportedModelError
from ..ir import Graph, OnnxOp
from ..limits import MAX_FOLD_BYTES, MAX_FOLD_MACS, MAX_TENSOR_ELEMENTS, elements, quote

#: Operators whose results are never larger than their inputs together: folded even when ONNX cannot say how large.
_NOT_GROWING = {"Identity", "Cast", "CastLike", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice",
                "Shape", "Size", "Concat", "Split", "Neg", "Abs", "Sqrt", "Reciprocal", "Exp", "Log", "Relu", "Sign",
                "Floor", "Ceil", "Round", "Not", "Sigmoid", "Tanh", "Clip", "ReduceSum", "ReduceMean", "ReduceMax",
                "ReduceMin", "ReduceProd", "ArgMax", "ArgMin", "Dropout", "Softmax", "BatchNormalization"}
#: Operators whose work is a product of sizes (a sum over a reduction per output element).
_PRODUCTS = {"MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum", "MatMulInteger", "ConvInteger", "QLinearConv",
             "QLinearMatMul"}
#: Small constant inputs are passed to shape inference as values (shape vectors, repeats, limits).
_VALUE_LIMIT = 4096


def _evaluate(node: OnnxOp, graph: Graph) -> list[np.ndarray]:
    if node.op_type == "Shape":
        shape = np.array(graph.shapes[node.inputs[0]], np.int64)
        start, end = node.attrs.get("start", 0), node.attrs.get("end", None)
        return [shape[start:end]]
    if node.op_type == "Size":
        return [np.array(int(np.prod(graph.shapes[node.inputs[0]])), np.int64)]
    feeds = {t: graph.constants[t] for t in node.inputs if t}
    ev = ReferenceEvaluator(node.proto, opsets={"": node.opset})
    return ev.run(None, feeds)


def _foldable(node, graph: Graph) -> bool:
    if not isinstance(node, OnnxOp) or node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type in ("Shape", "Size"):
        return node.inputs[0] in graph.shapes and len(graph.shapes[node.inputs[0]]) > 0
    return all(t == "" or graph.is_constant(t) for t in node.inputs)


def _type_of(value: np.ndarray) -> onnx.TypeProto:
    return onnx.helper.make_tensor_type_proto(onnx.helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape))


def _result_shapes(node: OnnxOp, graph: Graph) -> list[tuple[int, ...] | None]:
    """The shape of each result as ONNX infers it for this node and these constant inputs (None: unknown)."""
    schema = onnx.defs.get_schema(node.op_type, node.opset, "")
    feeds = {t: np.asarray(graph.constants[t]) for t in node.inputs if t}
    types = {t: _type_of(v) for t, v in feeds.items()}
    data = {t: onnx.numpy_helper.from_array(v, t) for t, v in feeds.items()
            if v.size <= _VALUE_LIMIT and v.dtype != object}
    inferred = shape_inference.infer_node_outputs(schema, node.proto, types, data,
                                                  opset_imports=[onnx.helper.make_opsetid("", node.opset)])
    shapes = []
    for t in node.outputs:
        tt = inferred[t].tensor_type if t in inferred else None
        if tt is None or not tt.HasField("shape") or not all(d.HasField("dim_value") for d in tt.shape.dim):
            shapes.append(None)
        else:
            shapes.append(tuple(d.dim_value for d in tt.shape.dim))
    return shapes


def _work(node: OnnxOp, graph: Graph, out: int | None) -> int:
    """Multiply-adds of a MatMul, Gemm or convolution of constants (an upper bound for the others)."""
    shapes = [np.shape(graph.constants[t]) if t else () for t in node.inputs]
    widest = max((elements(s) for s in shapes), default=0)
    if out is None:
        return widest * widest
    a = shapes[0] if shapes else ()
    w = shapes[1] if len(shapes) > 1 else ()
    if node.op_type in ("MatMul", "MatMulInteger") and a:
        return out * a[-1]
    if node.op_type == "Gemm" and len(a) == 2:
        return out * a[0 if node.attrs.get("transA", 0) else 1]
    if node.op_type in ("Conv", "ConvInteger") and len(w) > 1:
        return out * elements(w[1:])
    if node.op_type == "ConvTranspose" and len(w) > 1:
        return elements(a) * elements(w[1:])
    return out * widest


def _too_large(node: OnnxOp, graph: Graph) -> str | None:
    """Why evaluating ``node`` would take too much memory or time (None when it is fine)."""
    if any(isinstance(v, onnx.GraphProto) or (isinstance(v, list) and v and isinstance(v[0], onnx.GraphProto))
           for v in node.attrs.values()):
        return f"operators with subgraphs ({node.op_type}) are not evaluated at compile time, even on constants"
    if node.op_type in ("Shape", "Size"):
        return None
    try:
        shapes = _result_shapes(node, graph)
    except Exception:     # noqa: BLE001  (no schema, or inference rejects the node: the evaluation says why)
        shapes = [None] * len(node.outputs)
    for t, s in zip(node.outputs, shapes):
        if s is None:
            if node.op_type not in _NOT_GROWING:
                return (f"the size of its result {t!r} cannot be known before it is evaluated, so it is not "
                        f"evaluated at compile time")
            continue
        count = elements(s)
        if any(d < 0 for d in s) or count > MAX_TENSOR_ELEMENTS:
            return (f"its result {t!r} would have shape {list(s)} ({count:,} elements), more than the compiler's "
                    f"limit of {MAX_TENSOR_ELEMENTS:,}")
    if node.op_type in _PRODUCTS:
        work = _work(node, graph, max((elements(s) for s in shapes if s is not None), default=None))
        if work > MAX_FOLD_MACS:
            return (f"evaluating it at compile time would take about {work:,} multiply-adds, more than the "
                    f"compiler's limit of {MAX_FOLD_MACS:,}")
    return None


def fold_constants(graph: Graph) -> Graph:
    """Replace every foldable OnnxOp by the constants it computes (onnx.reference evaluates them)."""
    problems = []
    folded = 0
    for node in list(graph.topological()):
        if not _foldable(node, graph):
            continue
        why = _too_large(node, graph)
        if why:
            problems.append(Problem(node.name, node.op_type, why))
            continue
        try:
            values = _evaluate(node, graph)
        except Exception as exc:   # the reference evaluator raises many types for bad constant inputs
            problems.append(Problem(node.name, node.op_type, f"constant evaluation failed: {quote(exc)}"))
            continue
        folded += sum(np.asarray(v).nbytes for v in values)
        if folded > MAX_FOLD_BYTES:
            problems.append(Problem(node.name, node.op_type, f"the constants computed at compile time reach "
                                    f"{folded:,} bytes here, more than the compiler's limit of {MAX_FOLD_BYTES:,}"))
            break
        for t, v in zip(node.outputs, values):
            if t:
                graph.constants[t] = np.asarray(v)
                graph.shapes[t] = tuple(np.shape(v))
        graph.remove(node.name)
    if problems:
        raise UnsupportedModelError(problems, graph.name)
    return graph
