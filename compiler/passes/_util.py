"""Small graph queries shared by the rewrite passes."""
from __future__ import annotations

from ..ir import Clip, Graph, Node, Pool, Relu


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


def non_negative(graph: Graph, tensor: str) -> bool:
    """Whether ``tensor`` is a ReLU's or a Clip's (lower bound >= 0) output, or a max pool of one.

    Such values are +0, positive or NaN, never -0.
    """
    node = graph.producer(tensor)
    if node is None:
        return False
    if isinstance(node, Relu) or getattr(node, "relu", False):
        return True
    if isinstance(node, Clip) and node.lo is not None and node.lo >= 0:
        return True
    if isinstance(node, Pool) and node.mode == "max":
        return non_negative(graph, node.inputs[0])
    return False
