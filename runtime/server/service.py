"""The inference service behind both protocols: model metadata, request checking, workers, metrics.

Speaks the Open Inference Protocol (KServe v2) data model: a model takes
either its input tensor (FP32, the program's input name and shape) or raw
encoded images as a BYTES tensor named ``images`` (the server decodes and
preprocesses them), and returns FP32 outputs.

Both protocols check a request here, in the same words: every input's name,
datatype and shape against the model *before* its data is converted (so no
request makes the server allocate more than the model's input), every request
parameter (``check_parameters``), finite input values (NaN or infinity is
refused, naming the input and the count), and finite outputs (an input
outside the program's numeric range is refused rather than answered with
NaN).
"""
from __future__ import annotations

import math
import time
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from npu.segments import open_program

from ..session import model_io
from .limits import Limits
from .workers import (BadRequest, Overloaded, RequestTimeout, Ticket, Unavailable, WorkerCrashed, WorkerPool,
                      check_timeout, score)

IMAGE_INPUT = "images"
#: KServe v2 datatype -> numpy dtype for the tensors this server accepts or returns.
DATATYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "BYTES": np.object_}
FLOAT_TYPES = ("FP32", "FP16", "FP64")
#: How long past its deadline a caller waits for a request's answer before giving up on it (a worker that
#: overran is being killed and replaced meanwhile).
ANSWER_GRACE = 10.0


class NotFound(LookupError):
    """An unknown model or version."""


class NonFiniteOutput(BadRequest):
    """The outputs hold NaN or infinity: the input lies outside the program's numeric range."""


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


@dataclass
class Pending:
    """A queued request: its future, deadline, and what to answer."""

    future: Future
    deadline: float
    requested: list[str] | None
    started: float


#: Exception type -> the ``status`` label of npu_requests_total (checked in order: subclasses first).
STATUS_OF = ((NotFound, "not_found"), (NonFiniteOutput, "non_finite_output"), (BadRequest, "bad_request"),
             (Overloaded, "overloaded"), (Unavailable, "unavailable"), (RequestTimeout, "timeout"),
             (WorkerCrashed, "worker_crashed"))


def status_of(exc: BaseException) -> str:
    """The metrics status label for a failed request."""
    for cls, label in STATUS_OF:
        if isinstance(exc, cls):
            return label
    return "error"


def shape_of(dims, where: str) -> list[int]:
    """A tensor shape as a list of non-negative ints; BadRequest naming ``where`` otherwise."""
    if not isinstance(dims, (list, tuple)):
        raise BadRequest(f"{where}: 'shape' must be a list of integers")
    shape = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise BadRequest(f"{where}: shape {list(dims)!r} must hold integers")
        if d < 0:
            raise BadRequest(f"{where}: negative dimension in shape {[int(x) for x in dims]}")
        shape.append(int(d))
    return shape


def element_count(shape: list[int]) -> int:
    """Elements of ``shape`` (exact: Python integers never overflow)."""
    return math.prod(shape)


def timeout_parameter(value, where: str = "parameter 'timeout'") -> float:
    """KServe's ``timeout`` request parameter (microseconds) in seconds; BadRequest unless finite and positive."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"{where} must be a number of microseconds, not {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise BadRequest(f"{where} must be a finite positive number of microseconds, not {value!r}")
    return value / 1e6


def _bool_parameter(params: dict, key: str, where: str) -> bool:
    v = params.get(key, False)
    if not isinstance(v, bool):
        raise BadRequest(f"{where}: parameter {key!r} must be true or false, not {v!r}")
    return v


#: Request parameters this server reads (the others are refused: see check_parameters).
REQUEST_PARAMETERS = ("timeout", "priority", "binary_data_output")


def check_parameters(params, where: str = "request") -> dict:
    """Validate a request's ``parameters`` (HTTP JSON object or gRPC values already unwrapped).

    ``timeout`` (µs, finite and positive; longer than the server's own deadline is cut to it), ``priority``
    (a non-negative integer; accepted, there is one queue), ``binary_data_output`` (true/false).  Sequence
    parameters and any other name get 400 / INVALID_ARGUMENT naming them.
    """
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise BadRequest(f"{where}: 'parameters' must be an object")
    out = {}
    for key, value in params.items():
        if key == "timeout":
            out["timeout"] = timeout_parameter(value)
        elif key == "priority":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise BadRequest(f"parameter 'priority' must be a non-negative integer, not {value!r}")
        elif key == "binary_data_output":
            out["binary_data_output"] = _bool_parameter(params, key, where)
        elif key.startswith("sequence_"):
            raise BadRequest(f"parameter {key!r}: this server has no sequence batching")
        else:
            raise BadRequest(f"parameter {key!r} is not supported; this server reads "
                             f"{', '.join(REQUEST_PARAMETERS)}")
    return out


def check_output_parameters(params, name: str) -> bool:
    """An requested output's ``parameters``: ``binary_data`` (true/false); returns binary_data."""
    where = f"output {name!r}"
    if params is None:
        return False
    if not isinstance(params, dict):
        raise BadRequest(f"{where}: 'parameters' must be an object")
    for key in params:
        if key == "classification":
            raise BadRequest(f"{where}: the classification extension is not supported; ask for the scores")
        if key != "binary_data":
            raise BadRequest(f"{where}: parameter {key!r} is not supported (only binary_data)")
    return _bool_parameter(params, "binary_data", where)


class InferenceService:
    """One compiled program served by a pool of simulator workers (``handler``: see WorkerPool)."""

    def __init__(self, program_path: str | Path, *, name: str | None = None, workers: int = 2,
                 queue_size: int = 64, timeout: float = 60.0, max_batch: int = 1, backend: str = "sim",
                 handler=score, limits: Limits | None = None):
        self.path = Path(program_path)
        self.program = open_program(self.path)
        self.name = name or self.path.stem
        self.version = "1"
        self.timeout = check_timeout(timeout, "the server's timeout")
        self.limits = limits or Limits()
        inputs, self.outputs = model_io(self.program)
        if len(inputs) != 1:
            raise ValueError(f"{self.path}: the server serves programs with exactly one input")
        self.input = inputs[0]
        self.input_shape = [1, *self.input.shape]
        self.input_elements = element_count(self.input_shape)
        self.output_names = [d.name for d in self.outputs]
        self.max_json = self.limits.json_limit(self.input_elements)
        self.registry = CollectorRegistry()
        self.m_requests = Counter("npu_requests", "Inference requests by outcome, and every request refused "
                                  "before it reached the queue (bad, unknown, too large, unauthenticated)",
                                  ["model", "status"], registry=self.registry)
        self.m_latency = Histogram("npu_request_latency_seconds", "Request latency (queue + simulation)",
                                   ["model"], registry=self.registry,
                                   buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.m_queue = Gauge("npu_queue_depth", "Requests waiting for a worker", ["model"], registry=self.registry)
        self.m_cycles = Counter("npu_simulated_cycles", "Simulated NPU cycles of answered requests", ["model"],
                                registry=self.registry)
        self.m_restarts = Gauge("npu_worker_restarts", "Simulator workers replaced after a crash or timeout",
                                ["model"], registry=self.registry)
        self.m_ready = Gauge("npu_workers_ready", "Simulator workers loaded, alive and fed", ["model"],
                             registry=self.registry)
        self.m_queue.labels(self.name).set_function(lambda: self.pool.depth)
        self.m_restarts.labels(self.name).set_function(lambda: self.pool.restarts)
        self.m_ready.labels(self.name).set_function(lambda: self.pool.healthy())
        self.pool = WorkerPool(self.path, workers=workers, queue_size=queue_size, backend=backend,
                               handler=handler)

    # --- readiness and metadata -----------------------------------------------------------------
    def ready(self, timeout: float | None = 0) -> bool:
        """With ``timeout`` 0: whether a request can complete now (a worker loaded, alive and fed; not shutting
        down).  Otherwise wait up to ``timeout`` seconds for every worker to load the program."""
        if timeout == 0:
            return self.pool.ready()
        return self.pool.wait_ready(timeout) and self.pool.ready()

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
            "inputs": [{"name": self.input.name, "datatype": "FP32", "shape": list(self.input_shape)},
                       {"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [1]}],
            "outputs": [{"name": d.name, "datatype": "FP32", "shape": [1, *d.shape]} for d in self.outputs],
        }

    def metrics(self) -> bytes:
        """Prometheus text exposition of the service's metrics."""
        return generate_latest(self.registry)

    def count(self, status: str) -> None:
        """Count a request refused outside ``infer`` (bad JSON, unknown endpoint, too large, ...)."""
        self.m_requests.labels(self.name, status).inc()

    # --- request checking ---------------------------------------------------------------------
    def check_input(self, name, datatype, shape) -> int:
        """Check an input's header against the model before its data is read; returns its element count."""
        if not isinstance(name, str):
            raise BadRequest(f"an input's 'name' must be a string, not {name!r}")
        where = f"input {name!r}"
        if not isinstance(datatype, str) or datatype not in DATATYPES:
            raise BadRequest(f"{where}: datatype {datatype!r} is not supported (FP32, FP16, FP64, BYTES)")
        count = element_count(shape)
        if name == IMAGE_INPUT:
            if datatype != "BYTES":
                raise BadRequest(f"input {IMAGE_INPUT!r} must be BYTES (encoded image), not {datatype}")
            if count != 1:
                raise BadRequest(f"input {IMAGE_INPUT!r} has shape {shape} ({count} images); send one per request")
            return count
        if name != self.input.name:
            raise BadRequest(f"unknown input {name!r}; the model takes {self.input.name!r} (FP32) or "
                             f"{IMAGE_INPUT!r} (BYTES)")
        if datatype not in FLOAT_TYPES:
            raise BadRequest(f"input {name!r} has datatype {datatype}; send FP32")
        if list(shape) not in (self.input_shape, self.input_shape[1:]):
            raise BadRequest(f"input {name!r} has shape {list(shape)}; the model takes {self.input_shape}")
        return count

    def check_requested(self, requested: list | None) -> list[str] | None:
        """The requested output names, checked."""
        if not requested:
            return None
        for r in requested:
            if r not in self.output_names:
                raise BadRequest(f"unknown output {r!r}; the model has {', '.join(sorted(self.output_names))}")
        return list(requested)

    def _job(self, inputs: list[TensorIn]) -> tuple[str, object]:
        if len(inputs) != 1:
            raise BadRequest(f"expected exactly one input ({self.input.name!r} FP32 or {IMAGE_INPUT!r} BYTES), "
                             f"got {len(inputs)}")
        t = inputs[0]
        shape = shape_of(t.shape, f"input {t.name!r}")
        count = self.check_input(t.name, t.datatype, shape)
        if t.name == IMAGE_INPUT:
            items = list(t.data) if isinstance(t.data, (list, tuple)) else None
            if items is None or len(items) != 1:
                raise BadRequest(f"input {IMAGE_INPUT!r} must hold one encoded image")
            data = items[0]
            if isinstance(data, str):
                try:
                    data = data.encode("latin-1")
                except UnicodeEncodeError:
                    raise BadRequest(f"input {IMAGE_INPUT!r}: a JSON string holding image bytes must use only "
                                     f"code points 0-255; send the bytes with the binary extension") from None
            if not isinstance(data, (bytes, bytearray)) or not data:
                raise BadRequest(f"input {IMAGE_INPUT!r} must hold the encoded image bytes")
            return "image", bytes(data)
        try:
            arr = np.asarray(t.data, DATATYPES[t.datatype])
        except (TypeError, ValueError, OverflowError):
            raise BadRequest(f"input {t.name!r}: 'data' is not a list of numbers") from None
        if arr.size != count:
            raise BadRequest(f"input {t.name!r}: {arr.size} values for shape {shape}")
        with np.errstate(over="ignore", invalid="ignore"):
            arr = arr.reshape(shape).astype(np.float32)
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise BadRequest(f"input {t.name!r} holds {bad} non-finite value{'s' if bad > 1 else ''} (NaN, infinity "
                             f"or beyond the FP32 range) of {arr.size}; send finite numbers")
        return "tensor", arr

    def request_timeout(self, timeout) -> float:
        """The deadline in seconds for a request that asked for ``timeout`` seconds (None: the server's)."""
        if timeout is None:
            return self.timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
                or timeout <= 0:
            raise BadRequest(f"the request timeout must be a finite positive number of seconds, not {timeout!r}")
        return min(float(timeout), self.timeout)

    # --- inference ----------------------------------------------------------------------------
    def admit(self) -> Ticket:
        """A place in the queue, taken before the request's body is read or parsed (Overloaded, Unavailable)."""
        return self.pool.admit()

    def begin(self, ticket: Ticket, name: str, version: str | None, inputs: list[TensorIn],
              requested: list[str] | None = None, timeout: float | None = None) -> Pending:
        """Check the request and queue it on ``ticket``'s place (the ticket is released if it is refused)."""
        with ticket:
            self.check_model(name, version)
            kind, payload = self._job(inputs)
            requested = self.check_requested(requested)
            seconds = self.request_timeout(timeout)
            started = time.monotonic()
            return Pending(ticket.submit(kind, payload, seconds), started + seconds, requested, started)

    def end(self, pending: Pending, result) -> InferResult:
        """The answer of a finished request, its outputs checked to be finite."""
        outputs, stats = result
        self.m_cycles.labels(self.name).inc(stats.get("cycles", 0))
        if pending.requested:
            outputs = {k: v for k, v in outputs.items() if k in pending.requested}
        outputs = {k: np.ascontiguousarray(v, np.float32) for k, v in outputs.items()}
        bad = {k: int(v.size - np.count_nonzero(np.isfinite(v))) for k, v in outputs.items()}
        bad = {k: n for k, n in bad.items() if n}
        if bad:
            what = ", ".join(f"output {k!r} holds {n} of {outputs[k].size}" for k, n in bad.items())
            raise NonFiniteOutput(f"non-finite results (NaN or infinity): {what}; the input lies outside the "
                                  f"numeric range of the compiled program")
        return InferResult(outputs, stats)

    def wait(self, pending: Pending) -> InferResult:
        """Block until ``pending`` is answered (at most its deadline and ANSWER_GRACE)."""
        left = pending.deadline - time.monotonic() + ANSWER_GRACE
        try:
            result = pending.future.result(timeout=max(0.0, left))
        except (FutureTimeout, CancelledError):
            pending.future.cancel()
            raise RequestTimeout("the request timed out (no worker answered within its deadline)") from None
        return self.end(pending, result)

    def record(self, status: str, started: float) -> None:
        """Count one inference request and its latency."""
        self.m_requests.labels(self.name, status).inc()
        self.m_latency.labels(self.name).observe(time.monotonic() - started)

    def infer(self, name: str, version: str | None, inputs: list[TensorIn],
              requested: list[str] | None = None, timeout: float | None = None,
              ticket: Ticket | None = None) -> InferResult:
        """Run one request through the worker pool (blocking); raises NotFound, BadRequest, Overloaded,
        Unavailable, RequestTimeout, WorkerCrashed..."""
        t0 = time.monotonic()
        status = "error"
        try:
            if ticket is None:
                self.check_model(name, version)
                ticket = self.admit()
            result = self.wait(self.begin(ticket, name, version, inputs, requested, timeout))
            status = "ok"
            return result
        except Exception as exc:
            status = status_of(exc)
            raise
        finally:
            self.record(status, t0)

    def begin_close(self) -> None:
        """Refuse new requests (503 / UNAVAILABLE) and fail the queued ones the same way."""
        self.pool.begin_close()

    def close(self) -> None:
        """Stop the workers."""
        self.pool.close()
