"""Layout folding: the Transposes of models exported from NHWC frameworks become the program's I/O layout.

tf2onnx and Keras exports take an N x H x W x C input and transpose it to
N x C x H x W, and flatten the last feature map as H x W x C (a Transpose,
then a Reshape) before the classifier.  Here

* a Transpose (0, 3, 1, 2) right after a graph input is removed and the
  input is marked ``hwc``: the host puts the array into the NPU's layout;
* a Transpose (0, 2, 3, 1) whose result is flattened into fully connected
  layers is removed and the layers' weight columns are permuted from H x W
  x C to C x H x W order, so no data moves at all;
* a Transpose (0, 2, 3, 1) that writes a graph output is removed and the
  output is marked ``hwc``: the host transposes what the NPU wrote.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, OnnxOp

TO_NCHW = [0, 3, 1, 2]
TO_NHWC = [0, 2, 3, 1]


def _transposes(graph: Graph, perm) -> list[OnnxOp]:
    return [n for n in graph.nodes() if isinstance(n, OnnxOp) and n.op_type == "Transpose"
            and list(n.attrs.get("perm", [])) == perm and len(graph.shapes.get(n.inputs[0], ())) == 4]


def _fold_input(graph: Graph, node: OnnxOp) -> bool:
    src, dst = node.inputs[0], node.outputs[0]
    if src not in graph.inputs or len(graph.consumers(src)) != 1 or dst in graph.outputs:
        return False
    n, h, w, c = graph.shapes[src]
    graph.remove(node.name)
    graph.shapes[src] = (n, c, h, w)
    graph.metadata.setdefault("io_order", {})[src] = "hwc"
    graph.metadata.setdefault("original_shapes", {})[src] = (h, w, c)
    graph.rename_tensor(dst, src)
    return True


def _flatten_consumers(graph: Graph, flat: OnnxOp) -> list[OnnxOp] | None:
    """The Gemm / MatMul nodes reading a flattening node's output as their activation, or None."""
    users = graph.consumers(flat.outputs[0])
    if not users or flat.outputs[0] in graph.outputs:
        return None
    for u in users:
        if not isinstance(u, OnnxOp) or u.op_type not in ("Gemm", "MatMul") or u.inputs[0] != flat.outputs[0] \
                or not graph.is_constant(u.inputs[1]) or (u.op_type == "Gemm" and u.attrs.get("transA", 0)):
            return None
    return users


def _fold_flatten(graph: Graph, node: OnnxOp) -> bool:
    src, dst = node.inputs[0], node.outputs[0]
    users = graph.consumers(dst)
    if len(users) != 1 or dst in graph.outputs:
        return False
    flat = users[0]
    if not isinstance(flat, OnnxOp) or flat.op_type not in ("Flatten", "Reshape") or flat.inputs[0] != dst:
        return False
    if flat.op_type == "Flatten" and flat.attrs.get("axis", 1) != 1:
        return False
    _, c, h, w = graph.shapes[src]
    if flat.op_type == "Reshape" and tuple(graph.shapes.get(flat.outputs[0], ())) != (1, c * h * w):
        return False
    dense = _flatten_consumers(graph, flat)
    if dense is None:
        return False
    # hwc[j] is the H x W x C flattening's index of C x H x W element j: the weights' columns are read there
    hwc = np.arange(c * h * w).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)
    for u in dense:                   # weights that do not fit the flattening are left for lift to report
        weight = np.asarray(graph.constants[u.inputs[1]])
        rows_are_inputs = u.op_type == "MatMul" or not u.attrs.get("transB", 0)
        if weight.ndim != 2 or weight.shape[0 if rows_are_inputs else 1] != c * h * w:
            return False
    for u in dense:
        weight = np.asarray(graph.constants[u.inputs[1]])
        rows_are_inputs = u.op_type == "MatMul" or not u.attrs.get("transB", 0)
        permuted = weight[hwc] if rows_are_inputs else weight[:, hwc]
        name = f"{u.inputs[1]}.chw"
        graph.constants[name] = np.ascontiguousarray(permuted)
        graph.shapes[name] = tuple(permuted.shape)
        u.inputs = [u.inputs[0], name, *u.inputs[2:]]
    graph.remove(node.name)
    flat.inputs = [src, *flat.inputs[1:]]
    graph.rebuild_edges()
    return True


def _fold_output(graph: Graph, node: OnnxOp) -> bool:
    src, dst = node.inputs[0], node.outputs[0]
    if dst not in graph.outputs or graph.consumers(dst) or src in graph.outputs or graph.consumers(src) != [node]:
        return False
    producer = graph.producer(src)
    if producer is None:
        return False
    graph.remove(node.name)
    producer.outputs = [dst if t == src else t for t in producer.outputs]
    _, c, h, w = graph.shapes[src]
    graph.shapes[dst] = graph.shapes[src]
    graph.metadata.setdefault("io_order", {})[dst] = "hwc"
    graph.metadata.setdefault("original_shapes", {})[dst] = (h, w, c)
    graph.metadata.setdefault("renamed", {})[dst] = src        # the NPU's `dst` is the model's `src`
    graph.rebuild_edges()
    return True


def fold_layout(graph: Graph) -> Graph:
    """Remove the NHWC <-> NCHW Transposes at the graph's edges and before its classifier (see module docs)."""
    for node in _transposes(graph, TO_NCHW):
        _fold_input(graph, node)
    for node in _transposes(graph, TO_NHWC):
        _fold_flatten(graph, node) or _fold_output(graph, node)
    return graph
