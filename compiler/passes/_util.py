"""Small graph queries shared by the rewrite passes."""
from __future__ import annotations

from ..ir import Graph, Node


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
