"""Dead-node removal: drop nodes none of whose outputs reach a graph output, and unused constants."""
from __future__ import annotations

import networkx as nx

from ..ir import Graph


def remove_dead_nodes(graph: Graph) -> Graph:
    """Keep only the ancestors of the nodes that write graph outputs."""
    sinks = {n.name for n in graph.nodes() if any(t in graph.outputs for t in n.outputs)}
    live = set(sinks)
    for s in sinks:
        live |= nx.ancestors(graph.dag, s)
    for name in [n for n in graph.dag.nodes if n not in live]:
        graph.remove(name)
    used = {t for n in graph.nodes() for t in n.inputs} | set(graph.outputs)
    graph.constants = {t: v for t, v in graph.constants.items() if t in used}
    produced = {t for n in graph.nodes() for t in n.outputs}
    graph.shapes = {t: s for t, s in graph.shapes.items() if t in used or t in produced or t in graph.inputs}
    return graph
