"""Concatenation inputs a producer cannot write in place: copied there by an identity 1x1 Conv.

A concatenation's inputs are views of one storage; an input whose first
channel is not a multiple of the native dimension starts inside a vector.
Only the MVU can place values at any lane (a convolution's output vectors
are whatever its weight matrix makes them), so a pool's output at such an
offset is first copied through a 1x1 convolution with the identity matrix,
which writes it there.  A program input (the host writes it into its own
image) that is not the concatenation's first is copied the same way.  The identity's weights are exact
in every format; its activations are rounded to the layer's activation
format as any MVU input is (``docs/numerics.md``).  Inception v2's block 4e
concatenates a 3x3/2 max pool at channel 448.
"""
from __future__ import annotations

import numpy as np

from npu.config import NPUConfig

from ..ir import Concat, Conv, GlobalPool, Graph, Pool

#: Producers that cannot write inside a vector (a program input has none).
_LANE_BOUND = (Pool, GlobalPool)


def align_concat_inputs(graph: Graph, config: NPUConfig) -> Graph:
    """Route each concatenation input that is a pool's output starting inside a vector, or a program input after
    the first channel, through an identity 1x1 convolution."""
    n = config.native_dim
    for node in list(graph.topological()):
        if not isinstance(node, Concat):
            continue
        offset, inputs = 0, list(node.inputs)
        for k, t in enumerate(node.inputs):
            producer = graph.producer(t)
            if (producer is None and offset) or (offset % n and isinstance(producer, _LANE_BOUND)):
                inputs[k] = _identity(graph, t, f"{node.name}.align{k}")
            offset += graph.shapes[t][0]
        if inputs != node.inputs:
            node.inputs = inputs
            graph.rebuild_edges()
    return graph


def _identity(graph: Graph, tensor: str, name: str) -> str:
    """A 1x1 Conv copying ``tensor`` to a new tensor (returned)."""
    c = graph.shapes[tensor][0]
    out = name
    graph.shapes[out] = graph.shapes[tensor]
    weight = np.eye(c, dtype=np.float32).reshape(c, c, 1, 1)
    graph.add(Conv(name, [tensor], [out], source="Concat (alignment)", weight=weight, model_macs=0))
    return out
