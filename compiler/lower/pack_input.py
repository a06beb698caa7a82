"""First-layer input packing: a few-channel image is fed as its im2col windows.

A 3-channel image would use 3 of N lanes of every vector.  When the graph
input feeds one convolution, the host writes, for every output pixel, the
kh*kw*C window values as the channels of one pixel (147 values for a 7x7 RGB
window: two vectors at N = 128), and the convolution becomes a 1x1 over
that tensor.  ``compiler.io.pack_input`` does the host side from the
parameters recorded here.
"""
from __future__ import annotations

import numpy as np

from ..ir import Conv, Graph


def pack_first_conv(graph: Graph, native_dim: int) -> Graph:
    """Rewrite each input's only Conv to read im2col-packed windows when the input has < N/4 channels."""
    packing = graph.metadata.setdefault("input_packing", {})
    original = graph.metadata.setdefault("original_shapes", {})
    for t in graph.inputs:
        cons = graph.consumers(t)
        if len(cons) != 1 or not isinstance(cons[0], Conv) or cons[0].inputs[0] != t or cons[0].residual:
            continue
        conv = cons[0]
        c, h, w = graph.shapes[t]
        cout, cin, kh, kw = conv.weight.shape
        if (kh, kw) == (1, 1) or 4 * c >= native_dim:
            continue
        _, oh, ow = graph.shapes[conv.outputs[0]]
        packing[t] = {"packing": "im2col", "kernel": [kh, kw], "stride": list(conv.stride),
                      "pads": list(conv.pads), "image_shape": [c, h, w]}
        original[t] = (c, h, w)
        conv.weight = np.ascontiguousarray(conv.weight.transpose(0, 2, 3, 1).reshape(cout, kh * kw * cin, 1, 1))
        conv.stride, conv.pads = (1, 1), (0, 0, 0, 0)
        conv.source += "+im2col"
        graph.shapes[t] = (kh * kw * c, oh, ow)
    return graph
