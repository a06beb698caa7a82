"""Serving runtime: score compiled programs in process (Session), over the network (serve), as a client."""
from npu.preprocess import ImageError, Preprocess

from .backends import BACKENDS, RunStats, SimBackend, make_backend
from .heads import DenseHead, OnnxHead, softmax, topk
from .session import Pipeline, ScoreResult, Session

__all__ = ["BACKENDS", "DenseHead", "DeploymentClient", "DeploymentError", "ImageError", "OnnxHead", "Pipeline",
           "Preprocess", "RunStats", "ScoreResult", "Session", "SimBackend", "make_backend", "softmax", "topk"]

#: Exported lazily: they import tritonclient's gRPC client (a quarter of a second) only when first used.
_DEPLOY = ("DeploymentClient", "DeploymentError", "Model", "Service")


def __getattr__(name):
    if name in _DEPLOY:
        from . import deploy
        return getattr(deploy, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
