"""Clip fusion: a Clip (ReLU6 and its kind) after a Conv, Add or Affine becomes the end of that node's chain.

The chain applies ReLU for a lower bound of 0 and ``vs_min`` for the upper
bound.  A Clip is fused only where the chain keeps within two MFUs (a
residual convolution already uses both add stages); others stay Clip nodes,
an elementwise chain of their own.
"""
from __future__ import annotations

from ..ir import Add, Affine, Clip, Conv, Graph
from ._util import bypass, sole_consumer


def _fusable(node: Clip, prod) -> bool:
    if not isinstance(prod, (Conv, Add, Affine)) or prod.clip_max is not None or node.hi is None:
        return False
    if isinstance(prod, Conv) and prod.residual:
        return False
    lower_is_relu = node.lo == 0.0 or (prod.relu and node.lo is not None and node.lo <= 0.0)
    return node.lo is None or lower_is_relu


def fuse_clip(graph: Graph) -> Graph:
    """Set ``relu``/``clip_max`` on the producer of every Clip that is its producer's only reader."""
    for node in list(graph.topological()):
        if not isinstance(node, Clip):
            continue
        prod = graph.producer(node.inputs[0])
        if sole_consumer(graph, node.inputs[0]) is not node or not _fusable(node, prod):
            continue
        prod.relu = prod.relu or node.lo is not None
        prod.clip_max = node.hi
        prod.source += "+Clip"
        bypass(graph, node, prod)
    return graph
