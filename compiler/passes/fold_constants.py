"""Constant folding: evaluate every ONNX operator whose inputs are all known (Shape of a static tensor included)."""
from __future__ import annotations

import numpy as np
from onnx.reference import ReferenceEvaluator

from ..errors import Problem, UnsupportedModelError
from ..ir import Graph, OnnxOp


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


def fold_constants(graph: Graph) -> Graph:
    """Replace every foldable OnnxOp by the constants it computes (onnx.reference evaluates them)."""
    problems = []
    for node in list(graph.topological()):
        if not _foldable(node, graph):
            continue
        try:
            values = _evaluate(node, graph)
        except Exception as exc:   # the reference evaluator raises many types for bad constant inputs
            problems.append(Problem(node.name, node.op_type, f"constant evaluation failed: {exc}"))
            continue
        for t, v in zip(node.outputs, values):
            if t:
                graph.constants[t] = np.asarray(v)
                graph.shapes[t] = tuple(np.shape(v))
        graph.remove(node.name)
    if problems:
        raise UnsupportedModelError(problems, graph.name)
    return graph
