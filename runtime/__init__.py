"""Serving runtime: score compiled programs in process (Session), over the network (serve), as a client."""
from npu.preprocess import ImageError, Preprocess

from .backends import BACKENDS, RunStats, SimBackend, make_backend
from .heads import DenseHead, OnnxHead, softmax, topk
from .session import Pipeline, ScoreResult, Session

__all__ = ["BACKENDS", "DenseHead", "ImageError", "OnnxHead", "Pipeline", "Preprocess", "RunStats", "ScoreResult",
           "Session", "SimBackend", "make_backend", "softmax", "topk"]
