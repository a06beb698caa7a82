"""BatchNorm folding: a per-channel scale and shift after a Conv goes into its weights and bias.

A BatchNormalization with no Conv before it (DenseNet's pre-activation)
becomes an Affine node that the MFU evaluates.
"""
from __future__ import annotations

import numpy as np

from ..ir import Affine, BatchNorm, Conv, Graph
from ._util import bypass, sole_consumer


def fold_affine(graph: Graph) -> Graph:
    """Fold every BatchNorm / per-channel Affine into the preceding Conv where it is the Conv's only reader."""
    for node in list(graph.topological()):
        if not isinstance(node, (BatchNorm, Affine)) or getattr(node, "relu", False):
            continue
        prod = graph.producer(node.inputs[0])
        if isinstance(prod, Conv) and not prod.relu and not prod.residual and \
                sole_consumer(graph, node.inputs[0]) is node:
            scale = node.scale.astype(np.float64)
            prod.weight = (prod.weight.astype(np.float64) * scale[:, None, None, None]).astype(np.float32)
            bias = np.zeros(len(scale)) if prod.bias is None else prod.bias.astype(np.float64)
            prod.bias = (bias * scale + node.shift.astype(np.float64)).astype(np.float32)
            prod.source += f"+{node.source}"
            bypass(graph, node, prod)
        elif isinstance(node, BatchNorm):
            graph.replace(node.name, Affine(node.name, node.inputs, node.outputs, source=node.source,
                                            scale=node.scale, shift=node.shift))
    return graph
