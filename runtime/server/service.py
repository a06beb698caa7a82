"""The inference service behind both protocols: model metadata, request checking, workers, metrics.

Speaks the Open Inference Protocol (KServe v2) data model: a model takes
either its input tensor (FP32, the program's input name and shape) or raw
encoded images as a BYTES tensor named ``images`` (the server decodes and
preprocesses them), and returns FP32 outputs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from npu.npuz import load_program

from .workers import BadRequest, Overloaded, RequestTimeout, WorkerCrashed, WorkerPool, score

IMAGE_INPUT = "images"
#: KServe v2 datatype -> numpy dtype for the tensors this server accepts or returns.
DATATYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "BYTES": np.object_}


class NotFound(LookupError):
    """An unknown model or version."""


@dataclass
class TensorIn:
    """One request input: name, datatype, shape and data (numpy array; BYTES as a list of bytes)."""

    name: str
    datatype: str
    shape: list[int]
    data: object


@dataclass
class InferResult:
    """Outputs by name (float32 arrays) and the simulated run's statistics."""

    outputs: dict[str, np.ndarray]
    stats: dict = field(default_factory=dict)


class InferenceService:
    """One compiled program served by a pool of simulator workers (``handler``: see WorkerPool)."""

    def __init__(self, program_path: str | Path, *, name: str | None = None, workers: int = 2,
                 queue_size: int = 64, timeout: float = 60.0, max_batch: int = 1, backend: str = "sim",
                 handler=score):
        self.path = Path(program_path)
        self.program = load_program(self.path)
        self.name = name or self.path.stem
        self.version = "1"
        self.timeout = timeout
        if len(self.program.inputs) != 1:
            raise ValueError(f"{self.path}: the server serves programs with exactly one input")
        self.input = self.program.inputs[0]
        self.registry = CollectorRegistry()
        self.m_requests = Counter("npu_requests", "Inference requests by outcome", ["model", "status"],
                                  registry=self.registry)
        self.m_latency = Histogram("npu_request_latency_seconds", "Request latency (queue + simulation)",
                                   ["model"], registry=self.registry,
                                   buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.m_queue = Gauge("npu_queue_depth", "Requests waiting for a worker", ["model"], registry=self.registry)
        self.m_cycles = Counter("npu_simulated_cycles", "Simulated NPU cycles of answered requests", ["model"],
                                registry=self.registry)
        self.m_restarts = Gauge("npu_worker_restarts", "Simulator workers replaced after a crash or timeout",
                                ["model"], registry=self.registry)
        self.m_queue.labels(self.name).set_function(lambda: self.pool.depth)
        self.m_restarts.labels(self.name).set_function(lambda: self.pool.restarts)
        self.pool = WorkerPool(self.path, workers=workers, queue_size=queue_size, backend=backend,
                               handler=handler)

    # --- readiness and metadata -----------------------------------------------------------------
    def ready(self, timeout: float | None = 0) -> bool:
        """Whether every worker has loaded the program."""
        return self.pool.wait_ready(timeout)

    def check_model(self, name: str, version: str | None = None) -> None:
        """Raise NotFound unless ``name`` (and ``version``) is served here."""
        if name != self.name:
            raise NotFound(f"unknown model {name!r}; this server serves {self.name!r}")
        if version not in (None, "", self.version):
            raise NotFound(f"model {name!r} has no version {version!r} (only {self.version!r})")

    def metadata(self) -> dict:
        """KServe v2 model metadata."""
        return {
            "name": self.name, "versions": [self.version], "platform": "npu-sim",
            "inputs": [{"name": self.input.name, "datatype": "FP32", "shape": [1, *self.input.shape]},
                       {"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [1]}],
            "outputs": [{"name": d.name, "datatype": "FP32", "shape": [1, *d.shape]} for d in self.program.outputs],
        }

    def metrics(self) -> bytes:
        """Prometheus text exposition of the service's metrics."""
        return generate_latest(self.registry)

    # --- inference ----------------------------------------------------------------------------
    def _job(self, inputs: list[TensorIn]) -> tuple[str, object]:
        if len(inputs) != 1:
            raise BadRequest(f"expected exactly one input ({self.input.name!r} FP32 or {IMAGE_INPUT!r} BYTES), "
                             f"got {len(inputs)}")
        t = inputs[0]
        if t.name == IMAGE_INPUT:
            if t.datatype != "BYTES":
                raise BadRequest(f"input {IMAGE_INPUT!r} must be BYTES (encoded image), not {t.datatype}")
            items = list(t.data)
            if len(items) != 1:
                raise BadRequest(f"input {IMAGE_INPUT!r} holds {len(items)} images; send one per request")
            data = items[0]
            if isinstance(data, str):
                data = data.encode("latin-1")
            if not isinstance(data, (bytes, bytearray)) or not data:
                raise BadRequest(f"input {IMAGE_INPUT!r} must hold the encoded image bytes")
            return "image", bytes(data)
        if t.name != self.input.name:
            raise BadRequest(f"unknown input {t.name!r}; the model takes {self.input.name!r} (FP32) or "
                             f"{IMAGE_INPUT!r} (BYTES)")
        if t.datatype not in ("FP32", "FP16", "FP64"):
            raise BadRequest(f"input {t.name!r} has datatype {t.datatype}; send FP32")
        want = [1, *self.input.shape]
        if list(t.shape) not in (want, want[1:]):
            raise BadRequest(f"input {t.name!r} has shape {list(t.shape)}; the model takes {want}")
        arr = np.asarray(t.data, DATATYPES[t.datatype])
        if arr.size != int(np.prod(t.shape)):
            raise BadRequest(f"input {t.name!r}: {arr.size} values for shape {list(t.shape)}")
        return "tensor", arr.reshape(t.shape).astype(np.float32)

    def infer(self, name: str, version: str | None, inputs: list[TensorIn],
              requested: list[str] | None = None, timeout: float | None = None) -> InferResult:
        """Run one request through the worker pool; raises NotFound, BadRequest, Overloaded, RequestTimeout..."""
        t0 = time.monotonic()
        status = "error"
        try:
            self.check_model(name, version)
            kind, payload = self._job(inputs)
            known = {d.name for d in self.program.outputs}
            for r in requested or []:
                if r not in known:
                    raise BadRequest(f"unknown output {r!r}; the model has {', '.join(sorted(known))}")
            future = self.pool.submit(kind, payload, timeout or self.timeout)
            outputs, stats = future.result()
            self.m_cycles.labels(self.name).inc(stats.get("cycles", 0))
            if requested:
                outputs = {k: v for k, v in outputs.items() if k in requested}
            status = "ok"
            return InferResult({k: np.ascontiguousarray(v, np.float32) for k, v in outputs.items()}, stats)
        except NotFound:
            status = "not_found"
            raise
        except BadRequest:
            status = "bad_request"
            raise
        except Overloaded:
            status = "overloaded"
            raise
        except RequestTimeout:
            status = "timeout"
            raise
        except WorkerCrashed:
            status = "worker_crashed"
            raise
        finally:
            self.m_requests.labels(self.name, status).inc()
            self.m_latency.labels(self.name).observe(time.monotonic() - t0)

    def close(self) -> None:
        """Stop the workers."""
        self.pool.close()
