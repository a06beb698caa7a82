"""Flatten folding: Flatten + fully connected becomes a whole-image convolution on the unflattened tensor.

ONNX flattens C x H x W channel-major; the fully connected weight (O, C*H*W)
is reshaped to (O, C, H, W), so the NPU reads its channel-minor layout
directly and no data is moved.
"""
from __future__ import annotations

from ..ir import Conv, Flatten, Graph


def fold_flatten(graph: Graph) -> Graph:
    """Let Convs that read a Flatten read the Flatten's input; drop the Flatten when nothing else reads it."""
    for node in list(graph.topological()):
        if not isinstance(node, Flatten):
            continue
        src = node.inputs[0]
        shape = graph.shapes[src]
        if len(shape) != 3:
            continue
        for c in graph.consumers(node.outputs[0]):
            if isinstance(c, Conv) and c.inputs[0] == node.outputs[0] and c.kernel == (1, 1):
                c.weight = c.weight.reshape(c.weight.shape[0], *shape)
                c.inputs = [src, *c.inputs[1:]]
        graph.rebuild_edges()
        if not graph.consumers(node.outputs[0]) and node.outputs[0] not in graph.outputs:
            graph.remove(node.name)
    return graph
