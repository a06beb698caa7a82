"""ONNX front end: read a model as exported and bring it to the typed, checked IR."""
from __future__ import annotations

from ..ir import Graph
from ..passes import run_passes
from ..errors import ModelLoadError
from .loader import load_onnx


def import_onnx(source, timings: dict | None = None, outputs: list[str] | None = None) -> Graph:
    """Load ``source`` (path or ModelProto) and run every graph pass through the legality check.

    ``outputs`` replaces the model's outputs (cutting a featurizer at a named tensor).
    """
    graph = load_onnx(source)
    if outputs:
        known = {t for n in graph.nodes() for t in n.outputs}
        missing = [t for t in outputs if t not in known]
        if missing:
            raise ModelLoadError(f"{graph.name}: no tensor named {', '.join(map(repr, missing))} to cut at")
        graph.outputs = list(outputs)
    return run_passes(graph, timings=timings)


__all__ = ["import_onnx", "load_onnx", "ModelLoadError"]
