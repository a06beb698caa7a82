"""Pad folding: an explicit zero Pad before a convolution or pooling becomes that layer's own padding.

Exporters write "same" padding of TF-style models (and PyTorch's
ZeroPad2d) as a Pad node.  Folded, the layer reads the zero border of its
input in place; a Pad that cannot be folded is lowered as a copy into a
zero-filled buffer.
"""
from __future__ import annotations

from ..ir import Conv, Graph, Pad, Pool
from ._util import non_negative, sole_consumer


def _foldable(graph: Graph, pad: Pad, consumer) -> bool:
    t = pad.outputs[0]
    if isinstance(consumer, Conv):
        return consumer.inputs[0] == t and t not in consumer.inputs[1:]
    if isinstance(consumer, Pool) and consumer.inputs[0] == t:
        if consumer.mode == "avg":             # the padded zeros are counted, as count_include_pad does
            return consumer.count_include_pad or not any(consumer.pads)
        return non_negative(graph, pad.inputs[0])   # a zero border equals -inf padding there
    return False


def fold_pad(graph: Graph) -> Graph:
    """Add each Pad's padding to its only consumer's (a Conv, an average pool, a max pool of non-negative input)."""
    for node in list(graph.topological()):
        if not isinstance(node, Pad):
            continue
        consumer = sole_consumer(graph, node.outputs[0])
        if consumer is None or not _foldable(graph, node, consumer):
            continue
        consumer.pads = tuple(a + b for a, b in zip(consumer.pads, node.pads))
        if isinstance(consumer, Pool) and consumer.mode == "avg":
            consumer.count_include_pad = True
        consumer.inputs = [node.inputs[0], *consumer.inputs[1:]]
        consumer.source = f"Pad+{consumer.source}"
        graph.remove(node.name)
        graph.rebuild_edges()
    return graph
