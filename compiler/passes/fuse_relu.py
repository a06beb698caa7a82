"""Activation fusion: a ReLU after a Conv, Add or Affine becomes the last MFU op of that node's chain."""
from __future__ import annotations

from ..ir import Add, Affine, Conv, Graph, Relu
from ._util import bypass, sole_consumer


def fuse_relu(graph: Graph) -> Graph:
    """Set ``relu`` on the producer of every ReLU that is its producer's only reader."""
    for node in list(graph.topological()):
        if not isinstance(node, Relu):
            continue
        prod = graph.producer(node.inputs[0])
        if isinstance(prod, (Conv, Add, Affine)) and not prod.relu and sole_consumer(graph, node.inputs[0]) is node:
            prod.relu = True
            prod.source += "+Relu"
            bypass(graph, node, prod)
    return graph
