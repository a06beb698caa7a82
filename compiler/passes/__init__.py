"""Graph passes, registered in one place and run in this order by :func:`run_passes`.

Each pass is a function ``Graph -> Graph`` in its own module.  The first
group turns the ONNX import into typed nodes and ends with the legality
check; the second optimises the typed graph for the NPU.
"""
from __future__ import annotations

import time
from typing import Callable

from ..ir import Graph
from .dead_code import remove_dead_nodes
from .fold_affine import fold_affine
from .fold_constants import fold_constants
from .fold_flatten import fold_flatten
from .fold_layout import fold_layout
from .fold_pad import fold_pad
from .fuse_clip import fuse_clip
from .fuse_relu import fuse_relu
from .fuse_residual import fuse_residual
from .host_softmax import host_softmax
from .legality import check_legality
from .lift import lift
from .remove_identity import remove_identity

Pass = Callable[[Graph], Graph]

#: (name, pass) in the order they run.
PASSES: tuple[tuple[str, Pass], ...] = (
    ("fold_constants", fold_constants),
    ("fold_layout", fold_layout),
    ("lift", lift),
    ("remove_identity", remove_identity),
    ("host_softmax", host_softmax),
    ("remove_dead_nodes", remove_dead_nodes),
    ("fold_pad", fold_pad),
    ("fold_affine", fold_affine),
    ("fold_flatten", fold_flatten),
    ("fuse_residual", fuse_residual),
    ("fuse_relu", fuse_relu),
    ("fuse_clip", fuse_clip),
    ("check_legality", check_legality),
)


def run_passes(graph: Graph, passes=PASSES, timings: dict | None = None) -> Graph:
    """Apply ``passes`` in order; records seconds per pass in ``timings`` if given."""
    for name, fn in passes:
        t0 = time.perf_counter()
        graph = fn(graph)
        if timings is not None:
            timings[name] = time.perf_counter() - t0
    return graph
