"""Residual fusion: Add(conv_out, y) becomes the Conv's MFU chain adding y before the write."""
from __future__ import annotations

import networkx as nx

from ..ir import Add, Conv, Graph
from ._util import bypass, sole_consumer


def _candidate(graph: Graph, add: Add, i: int) -> Conv | None:
    t, other = add.inputs[i], add.inputs[1 - i]
    conv = graph.producer(t)
    if not isinstance(conv, Conv) or conv.relu or conv.residual or sole_consumer(graph, t) is not add:
        return None
    other_prod = graph.producer(other)
    if other_prod is not None and (other_prod is conv or nx.has_path(graph.dag, conv.name, other_prod.name)):
        return None                       # y is computed after the conv: it cannot be read by the conv's chain
    return conv


def fuse_residual(graph: Graph) -> Graph:
    """Fuse each residual Add into the later of its producing Convs (the other operand must exist by then)."""
    order = {n.name: d["order"] for n, d in ((graph.node(k), v) for k, v in graph.dag.nodes(data=True))}
    for node in list(graph.topological()):
        if not isinstance(node, Add):
            continue
        options = [(i, c) for i in (0, 1) if (c := _candidate(graph, node, i)) is not None]
        if not options:
            continue
        i, conv = max(options, key=lambda ic: order[ic[1].name])
        conv.inputs = [conv.inputs[0], node.inputs[1 - i]]
        conv.residual = True
        conv.relu = node.relu
        conv.source += "+Add"
        bypass(graph, node, conv)
    return graph
