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
    if isinstance(node, OnnxOp) and node.op_type in _PASS_THROUGH and node.inputs and node.inputs[0]:
        return [node.inputs[0]]
    return False


#: ONNX operators (still untyped) whose output is non-negative wherever their data input is.
_PASS_THROUGH = {"Identity", "Dropout", "Flatten", "Reshape", "Squeeze", "Unsqueeze"}


def non_negative(graph: Graph, tensor: str) -> bool:
    """Whether every value of ``tensor`` is +0, positive or NaN (never negative, never -0), as its producers show.

    The one home of this value fact.  It holds for the output of a ReLU (or a
    node with ``relu`` set) and of a Clip with lower bound >= 0, and carries
    through max, average and global pooling, Concat, the Add of non-negative
    tensors, zero Pad, Identity/Dropout, Flatten and Reshape when all their
    inputs have it.  Constants and graph inputs do not have it.
    """
    memo: dict[str, bool] = {}
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
