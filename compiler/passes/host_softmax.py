"""A Softmax at the end of the graph runs on the host: the NPU emits logits, the runtime normalises them."""
from __future__ import annotations

from ..errors import Problem
from ..ir import Graph, Softmax


def host_softmax(graph: Graph) -> Graph:
    """Remove final Softmax nodes and record them in ``graph.metadata['postprocess']``."""
    post = graph.metadata.setdefault("postprocess", {})
    for node in list(graph.topological()):
        if not isinstance(node, Softmax):
            continue
        out = node.outputs[0]
        if out not in graph.outputs or graph.consumers(out):
            graph.problems.append(Problem(node.name, "Softmax", "Softmax is only supported as the model's final "
                                          "operator (the host applies it)"))
            continue
        src = node.inputs[0]
        graph.remove(node.name)
        prod = graph.producer(src)
        if prod is not None and src not in graph.outputs and not graph.consumers(src):
            prod.outputs = [out if t == src else t for t in prod.outputs]
            graph.shapes[out] = graph.shapes[src]
            graph.rebuild_edges()
            post[out] = "softmax"
            graph.metadata.setdefault("renamed", {})[out] = src      # the NPU's `out` is the model's `src`
        else:
            graph.problems.append(Problem(node.name, "Softmax", "its input is also used elsewhere"))
    return graph
