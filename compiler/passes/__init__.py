"""Graph passes, registered in one place and run in this order by :func:`run_passes`.

Each pass is a function in its own module.  :data:`PASSES` (``Graph ->
Graph``) turn the ONNX import into typed nodes, optimise them and end with
the legality check; :data:`MACHINE_PASSES` (``(Graph, NPUConfig) ->
Graph``) then rewrite the checked graph for one machine.
"""
from __future__ import annotations

import time
from typing import Callable

from npu.config import NPUConfig

from ..ir import Graph
from .align_concat import align_concat_inputs
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
from .pack_input import pack_first_conv
from .remove_identity import remove_identity
from .round_weights import round_weights
from .split_pool import split_max_pools

Pass = Callable[[Graph], Graph]
MachinePass = Callable[[Graph, NPUConfig], Graph]

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


#: (name, pass) of the machine-dependent rewrites, in the order they run.
MACHINE_PASSES: tuple[tuple[str, MachinePass], ...] = (
    ("pack_first_conv", pack_first_conv),      # a few-channel input packed into whole vectors by the host
    ("split_max_pools", split_max_pools),      # max pools as row and column passes that fit the MFUs
    ("align_concat_inputs", align_concat_inputs),   # a pool or input starting inside a vector: via the MVU
    ("round_weights", round_weights),          # last: weights as their formats hold them (after every weight change)
)


def run_machine_passes(graph: Graph, config: NPUConfig, timings: dict | None = None) -> Graph:
    """Apply :data:`MACHINE_PASSES` for ``config``; records seconds per pass in ``timings`` if given."""
    for name, fn in MACHINE_PASSES:
        t0 = time.perf_counter()
        graph = fn(graph, config)
        if timings is not None:
            timings[name] = time.perf_counter() - t0
    return graph


def run_passes(graph: Graph, passes=PASSES, timings: dict | None = None) -> Graph:
    """Apply ``passes`` in order; records seconds per pass in ``timings`` if given."""
    for name, fn in passes:
        t0 = time.perf_counter()
        graph = fn(graph)
        if timings is not None:
            timings[name] = time.perf_counter() - t0
    return graph
