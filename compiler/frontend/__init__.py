"""ONNX front end: read a model as exported and bring it to the typed, checked IR."""
from __future__ import annotations

from ..ir import Graph
from ..passes import run_passes
from .loader import ModelLoadError, load_onnx


def import_onnx(source, timings: dict | None = None) -> Graph:
    """Load ``source`` (path or ModelProto) and run every graph pass through the legality check."""
    return run_passes(load_onnx(source), timings=timings)


__all__ = ["import_onnx", "load_onnx", "ModelLoadError"]
