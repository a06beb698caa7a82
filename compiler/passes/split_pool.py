"""Separable max pooling: a kh x kw max pool over a ReLU's output becomes a 1 x kw pool, then a kh x 1 pool.

A pooling chain reads one vector per cycle, but each MFU can take one more
window tap as a ``vv_max`` operand in the same cycle (``codegen`` peels the
last taps off the read).  A 1 x 3 or 3 x 1 window is then one read per
output instead of a 3 x 3 window's seven; ResNet's 3x3/2 max pool runs in a
third of the cycles.  On a ReLU's output (+0, positive or NaN, never -0)
the MFU max rule gives the same bits in any order, so the two passes equal
the window's maximum exactly.  A window whose last row fits the MFUs
(2 x 2 with two MFUs) keeps one pass: codegen peels that row.
"""
from __future__ import annotations

from npu.config import NPUConfig

from ..ir import Graph, Pool
from ._util import non_negative


def split_max_pools(graph: Graph, config: NPUConfig) -> Graph:
    """Replace each max pool over non-negative input whose rows are wider than the MFUs by two passes."""
    mfus = config.mfus
    for node in list(graph.topological()):
        if not isinstance(node, Pool) or node.mode != "max" or not non_negative(graph, node.inputs[0]):
            continue
        (kh, kw), (sy, sx) = node.kernel, node.stride
        if kh == 1 or kw <= mfus:
            continue
        top, left, bottom, right = node.pads
        c, h, _ = graph.shapes[node.inputs[0]]
        _, _, ow = graph.shapes[node.outputs[0]]
        rows = f"{node.outputs[0]}.rows"
        graph.shapes[rows] = (c, h, ow)
        graph.add(Pool(f"{node.name}.rows", [node.inputs[0]], [rows], source=node.source, mode="max",
                       kernel=(1, kw), stride=(1, sx), pads=(0, left, 0, right)))
        graph.replace(node.name, Pool(node.name, [rows], list(node.outputs), source=node.source, mode="max",
                                      kernel=(kh, 1), stride=(sy, 1), pads=(top, 0, bottom, 0)))
    return graph
