"""Small graph queries shared by the rewrite passes."""
from __future__ import annotations

from ..ir import Add, Clip, Concat, Flatten, GlobalPool, Graph, Identity, Node, OnnxOp, Pad, Pool, Relu


def sole_consumer(graph: Graph, tensor: str) -> Node | None:
    """The only node reading ``tensor``, or None if several read it or it is a graph output."""
    if tensor in graph.outputs:
        return None
    cons = graph.consumers(tensor)
    return cons[0] if len(cons) == 1 else None


def bypass(graph: Graph, node: Node, producer: Node) -> None:
    """Remove ``node`` (which read ``producer``'s output) and let ``producer`` write ``node``'s output."""
    graph.remove(node.name)
    producer.outputs = [node.outputs[0]]
    graph.rebuild_edges()


def _non_negative_if(graph: Graph, node: Node) -> list[str] | bool:
    """The rule for one producer: True/False, or the inputs that must all be non-negative for its output to be."""
    clip_max = getattr(node, "clip_max", None)
    if clip_max is not None and not clip_max >= 0:         # a fused upper bound below zero
        return False
    if getattr(node, "relu", False) or isinstance(node, Relu):
        return True
    if isinstance(node, Clip):
        return node.lo is not None and node.lo >= 0
    if isinstance(node, (Pool, GlobalPool, Concat, Add, Pad, Identity, Flatten)):
        return [t for t in node.inputs if t]
    if isinstance(node, OnnxOp):
        return _onnx_rule(node)
    return False


#: ONNX operators (still untyped) whose output is non-negative wherever their data input is.
_PASS_THROUGH = {"Identity", "Dropout", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "MaxPool", "AveragePool",
                 "GlobalAveragePool", "GlobalMaxPool"}
#: ONNX operators whose output is never negative.
_NEVER_NEGATIVE = {"Relu", "Softmax", "Sigmoid"}


def _onnx_rule(node: OnnxOp) -> list[str] | bool:
    """The rule for an untyped ONNX operator (the graph host fallback partitions is still untyped)."""
    if node.op_type in _NEVER_NEGATIVE:
        return True
    if node.op_type == "Concat":
        return [t for t in node.inputs if t]
    if node.op_type == "LRN":             # x times a positive factor when bias > 0 and alpha >= 0
        bias, alpha = node.attrs.get("bias", 1.0), node.attrs.get("alpha", 1e-4)
        ok = isinstance(bias, float) and isinstance(alpha, float) and bias > 0 and alpha >= 0
        return [node.inputs[0]] if ok and node.inputs and node.inputs[0] else False
    if node.op_type in _PASS_THROUGH and node.inputs and node.inputs[0]:
        return [node.inputs[0]]
    return False


#: The model property (JSON list) naming graph inputs known to be non-negative: host fallback sets it on an NPU
#: segment whose input is, in the whole model, non-negative (e.g. a ReLU's output through a host operator).
NON_NEGATIVE_INPUTS = "npu.non_negative_inputs"


def _given_non_negative(graph: Graph) -> set[str]:
    import json

    text = graph.metadata.get("model_props", {}).get(NON_NEGATIVE_INPUTS)
    try:
        names = json.loads(text) if text else []
    except ValueError:
        return set()
    return {t for t in names if isinstance(t, str) and t in graph.inputs} if isinstance(names, list) else set()


def non_negative(graph: Graph, tensor: str) -> bool:
    """Whether every value of ``tensor`` is +0, positive or NaN (never negative, never -0), as its producers show.

    The one home of this value fact.  It holds for the output of a ReLU (or a
    node with ``relu`` set) and of a Clip with lower bound >= 0, and carries
    through max, average and global pooling, Concat, the Add of non-negative
    tensors, zero Pad, Identity/Dropout, Flatten and Reshape when all their
    inputs have it (and, before typing, ONNX's Softmax, Sigmoid and LRN).
    Constants do not have it; graph inputs only when the model names them
    in ``metadata_props[NON_NEGATIVE_INPUTS]`` (an NPU segment of host
    fallback, ``compiler.partition``).
    """
    memo: dict[str, bool] = dict.fromkeys(_given_non_negative(graph), True)
    expanded: set[str] = set()
    stack = [tensor]
    while stack:
        t = stack[-1]
        if t in memo:
            stack.pop()
            continue
        node = graph.producer(t)
        rule = False if node is None else _non_negative_if(graph, node)
        if isinstance(rule, bool):
            memo[t] = rule
            stack.pop()
            continue
        pending = [u for u in rule if u not in memo]
        if pending:
            if t in expanded:                       # only on a cycle, which a valid graph has not
                memo[t] = False
                stack.pop()
            else:
                expanded.add(t)
                stack.extend(pending)
            continue
        memo[t] = all(memo[u] for u in rule)
        stack.pop()
    return memo[tensor]
