"""The legality check: every problem the front end and the rewrites found, reported at once, before lowering."""
from __future__ import annotations

from ..errors import Problem, UnsupportedModelError
from ..ir import Graph, OnnxOp, Pool
from ._util import non_negative


def check_legality(graph: Graph) -> Graph:
    """Raise UnsupportedModelError listing every unsupported operator, attribute and shape in the graph."""
    problems: list[Problem] = list(graph.problems)
    reported = {p.node for p in problems} | set(graph.metadata.get("unchecked_nodes", ()))
    for node in graph.topological():
        if isinstance(node, OnnxOp) and node.name not in reported:
            problems.append(Problem(node.name, node.op_type, "not supported on run-time data"))
        if isinstance(node, Pool) and node.mode == "max" and any(node.pads) and \
                not non_negative(graph, node.inputs[0]):
            problems.append(Problem(node.name, "MaxPool", "padded max pooling is only supported on non-negative "
                                    "input (after a ReLU), where a zero border equals -inf padding"))
    for t in graph.outputs:
        if graph.is_constant(t):
            problems.append(Problem(t, "output", "the output is a constant: it does not depend on the model's "
                                    "input, so there is nothing for the NPU to compute"))
    for t in graph.inputs:
        if len(graph.shapes.get(t, ())) != 3:
            problems.append(Problem(t, "input", f"input shape {list(graph.shapes.get(t, ()))} is not C x H x W "
                                    f"(batch 1)"))
    if problems:
        raise UnsupportedModelError(problems, graph.name)
    return graph
