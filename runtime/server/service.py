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

import logging
import math
import threading
import time
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .limits import MiB, Limits
from .repository import model_names, model_versions, name_problem, size_estimate
from .workers import (BadRequest, ModelSpec, Overloaded, RequestTimeout, Ticket, Unavailable, WorkerCrashed,
                      WorkerPool, check_timeout, file_checksum, score)

log = logging.getLogger("npu.serve")

IMAGE_INPUT = "images"
#: KServe v2 datatype -> numpy dtype for the tensors this server accepts or returns.
DATATYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "BYTES": np.object_}
FLOAT_TYPES = ("FP32", "FP16", "FP64")
#: How long past its deadline a caller waits for a request's answer before giving up on it (a worker that
#: overran is being killed and replaced meanwhile).
ANSWER_GRACE = 10.0


class NotFound(LookupError):
    """An unknown model or version (404 / NOT_FOUND)."""


class NotLoaded(NotFound):
    """A model (version) of the repository that is not loaded now: unloaded, or failed to load
    (404 / UNAVAILABLE)."""


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
    """A queued request: its future, deadline, what to answer, and the model version it runs on."""

    future: Future
    deadline: float
    requested: list[str] | None
    started: float
    model: "ModelVersion | None" = None
    classify: dict = field(default_factory=dict)      # output -> how many classes to answer with (extension)


#: Exception type -> the ``status`` label of npu_requests_total (checked in order: subclasses first).
STATUS_OF = ((NotLoaded, "not_loaded"), (NotFound, "not_found"), (NonFiniteOutput, "non_finite_output"), (BadRequest, "bad_request"),
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
    """A requested output's ``parameters``: ``binary_data`` (true/false) and ``classification`` (checked by
    :func:`classification_count`); returns binary_data."""
    where = f"output {name!r}"
    if params is None:
        return False
    if not isinstance(params, dict):
        raise BadRequest(f"{where}: 'parameters' must be an object")
    for key in params:
        if key not in ("binary_data", "classification"):
            raise BadRequest(f"{where}: parameter {key!r} is not supported (binary_data, classification)")
    classification_count(params, name)
    return _bool_parameter(params, "binary_data", where)


def classification_count(params, name: str) -> int:
    """The ``classification`` parameter of a requested output (the classification extension): how many of the
    best classes to answer with, 0 when absent."""
    if not isinstance(params, dict) or "classification" not in params:
        return 0
    k = params["classification"]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_CLASSIFICATION:
        raise BadRequest(f"output {name!r}: parameter 'classification' must be an integer from 1 to "
                         f"{MAX_CLASSIFICATION}, not {k!r}")
    return k


#: Most classes one classification answer may hold.
MAX_CLASSIFICATION = 1000


def classify(scores: np.ndarray, k: int, labels: list[str] | None) -> np.ndarray:
    """The classification extension's answer for a (1, classes) output: (1, k) BYTES ``"score:index:label"``
    (``"score:index"`` without labels), best first."""
    flat = np.asarray(scores, np.float32).reshape(-1)
    order = np.argsort(-flat, kind="stable")[:k]
    items = [f"{flat[i]:.6g}:{i}" + (f":{labels[i]}" if labels and i < len(labels) else "") for i in order]
    return np.array([s.encode() for s in items], dtype=object).reshape(1, -1)


def describe(path: Path):
    """(program or None, inputs, outputs) of a program (``.npuz``) or pipeline (``.npup``) file, read here."""
    from ..program_io import model_io

    if path.suffix == ".npup":                  # a pipeline: what its Session takes and gives
        from ..session import Session

        session = Session(path)
        return session.program, [session.input], list(session.outputs)
    from npu.segments import open_program

    program = open_program(path)
    inputs, outputs = model_io(program)
    return program, inputs, outputs


def _labels(program, path: Path) -> list[str] | None:
    """The class names a program or pipeline carries (None if it has none)."""
    if path.suffix == ".npup":
        from npu.pipeline import load_pipeline

        return load_pipeline(path).labels
    return getattr(getattr(program, "metadata", None), "labels", None)


class ModelVersion:
    """One version of a model, loaded (read and checked) in the server process: its file, checksum, inputs and
    outputs, and how a request for it is checked.  Immutable once made: a reload makes a new one."""

    def __init__(self, name: str, version: str, path: str | Path, limits: Limits):
        self.name, self.version, self.path = name, str(version), Path(path)
        self.checksum = file_checksum(self.path)
        program, inputs, self.outputs = describe(self.path)
        self.labels = _labels(program, self.path)
        if len(inputs) != 1:
            raise ValueError(f"{self.path}: the server serves programs with exactly one input")
        self.input = inputs[0]
        self.input_shape = [1, *self.input.shape]
        self.input_elements = element_count(self.input_shape)
        self.output_names = [d.name for d in self.outputs]
        self.max_json = limits.json_limit(self.input_elements)
        self.size = size_estimate(program, self.path)
        self.spec = ModelSpec(name, self.version, self.checksum, str(self.path), self.size)

    def metadata(self, versions: list[str]) -> dict:
        """KServe v2 model metadata."""
        return {
            "name": self.name, "versions": versions, "platform": "npu-sim",
            "inputs": [{"name": self.input.name, "datatype": "FP32", "shape": list(self.input_shape)},
                       {"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [1]}],
            "outputs": [{"name": d.name, "datatype": "FP32", "shape": [1, *d.shape]} for d in self.outputs],
        }

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

    def check_classification(self, name: str, k: int) -> None:
        """BadRequest unless output ``name`` is a class vector with at least ``k`` classes."""
        shape = next(tuple(d.shape) for d in self.outputs if d.name == name)
        classes = int(np.prod(shape)) if shape and all(int(x) > 0 for x in shape) else 0
        if len([x for x in shape if x != 1]) > 1 or classes < k:
            raise BadRequest(f"output {name!r} of shape {[1, *shape]}: classification needs a vector of at least "
                             f"{k} class scores")

    def job(self, inputs: list[TensorIn]) -> tuple[str, object]:
        """(kind, payload) for the workers from the request's inputs, checked."""
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


@dataclass(frozen=True)
class ModelEntry:
    """A model as last loaded: its servable versions, the versions that failed (version -> reason), and whether
    it has been unloaded since.  Replaced whole by each load."""

    versions: dict
    failed: dict
    unloaded: bool = False
    reason: str = ""

    def default(self) -> "ModelVersion | None":
        """The highest servable version."""
        return self.versions[max(self.versions, key=int)] if self.versions else None

    def ready_versions(self) -> list[str]:
        return [] if self.unloaded else sorted(self.versions, key=int)


class InferenceService:
    """The models of a repository directory (``ROOT/NAME/VERSION/<file>``), or one program file (a repository of
    one model, version 1), served by one pool of simulator workers (``handler``: see WorkerPool).

    ``load(name)`` (re)reads a model's versions and swaps them in whole; ``unload(name)`` stops new requests for
    it.  Requests already admitted carry their version's file and checksum to the workers, so neither drops
    nor changes them.  Each worker keeps its Sessions in an LRU within ``worker_memory`` bytes.
    """

    def __init__(self, program_path: str | Path, *, name: str | None = None, workers: int = 2,
                 queue_size: int = 64, timeout: float = 60.0, max_batch: int = 1, backend: str = "sim",
                 handler=score, limits: Limits | None = None, worker_memory: int | None = None):
        self.path = Path(program_path)
        self.timeout = check_timeout(timeout, "the server's timeout")
        self.limits = limits or Limits()
        self.worker_memory = worker_memory
        self.entries: dict[str, ModelEntry] = {}
        self._loading = threading.Lock()             # one load / unload at a time
        preload = None
        if self.path.is_dir():
            self.root: Path | None = self.path
            self.name = name or ""                    # the label of server-wide metrics
            self.version = None
            for n in model_names(self.root):
                try:
                    self.load(n)
                except (NotFound, BadRequest) as exc:
                    log.warning("npu serve: %s", exc)
        else:
            self.root = None
            self.name = name or self.path.stem
            self.version = "1"
            mv = ModelVersion(self.name, "1", self.path, self.limits)   # raises if the program cannot be read
            self._check_budget(mv, raise_=True)
            self.entries[self.name] = ModelEntry({"1": mv}, {})
            preload = mv.spec
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
        self.m_loaded = Gauge("npu_models_loaded", "Model versions loaded and servable", registry=self.registry)
        self.m_sessions = Gauge("npu_worker_sessions", "Sessions (model versions) held by the simulator workers, "
                                "added up over the workers", registry=self.registry)
        self.m_evictions = Counter("npu_worker_session_evictions", "Sessions the workers evicted (least recently "
                                   "used) to stay within --worker-memory", registry=self.registry)
        self.m_queue.labels(self.name).set_function(lambda: self.pool.depth)
        self.m_restarts.labels(self.name).set_function(lambda: self.pool.restarts)
        self.m_ready.labels(self.name).set_function(lambda: self.pool.healthy())
        self.m_loaded.set_function(lambda: sum(len(e.ready_versions()) for e in list(self.entries.values())))
        self.m_sessions.set_function(lambda: self.pool.sessions())
        self.pool = WorkerPool(None, preload=preload, workers=workers, queue_size=queue_size, backend=backend,
                               handler=handler, worker_memory=worker_memory, on_evict=self.m_evictions.inc)

    @property
    def single(self) -> bool:
        """Whether this serves one program file (not a repository directory)."""
        return self.root is None

    # what a single program's service said about its model (its default version now)
    @property
    def model(self) -> ModelVersion:
        """The served model's default version (a single program file; in a repository the first model's)."""
        for name in ([self.name] if self.name in self.entries else sorted(self.entries)):
            mv = self.entries[name].default()
            if mv is not None:
                return mv
        raise NotLoaded("no model is loaded")

    max_json = property(lambda self: self.model.max_json)
    input = property(lambda self: self.model.input)
    input_shape = property(lambda self: self.model.input_shape)
    outputs = property(lambda self: self.model.outputs)
    output_names = property(lambda self: self.model.output_names)

    def _check_budget(self, mv: ModelVersion, raise_: bool = False) -> str | None:
        if self.worker_memory is None or mv.size <= self.worker_memory:
            return None
        why = (f"{mv.path} needs about {mv.size / MiB:.0f} MiB in a worker, more than the worker memory budget "
               f"of {self.worker_memory / MiB:.0f} MiB (--worker-memory)")
        if raise_:
            raise ValueError(why)
        return why

    # --- the repository -----------------------------------------------------------------------
    def served(self) -> str:
        names = sorted(n for n, e in self.entries.items() if e.ready_versions())
        return ", ".join(repr(n) for n in names) if names else "no model now"

    def resolve(self, name, version: str | None = None) -> ModelVersion:
        """The loaded version a request for ``name`` (``version``: None or "" for the default) runs on;
        NotFound naming what is unknown, NotLoaded when it exists but is not loaded."""
        problem = name_problem(name)
        if problem:
            raise NotFound(problem)
        entry = self.entries.get(name)
        if entry is None:
            if self.root is not None and (self.root / name).is_dir():
                raise NotLoaded(f"model {name!r} is not loaded; load it with POST /v2/repository/models/{name}/load")
            raise NotFound(f"unknown model {name!r}; this server serves {self.served()}")
        if version not in (None, ""):
            if not isinstance(version, str) or (version not in entry.versions and version not in entry.failed):
                known = sorted(set(entry.versions) | set(entry.failed), key=int)
                raise NotFound(f"model {name!r} has no version {str(version)[:100]!r} (versions: "
                               f"{', '.join(known) or 'none'})")
        if entry.unloaded:
            raise NotLoaded(f"model {name!r} is not loaded (it was unloaded); load it with "
                            f"POST /v2/repository/models/{name}/load")
        if version not in (None, ""):
            mv = entry.versions.get(version)
            if mv is None:
                raise NotLoaded(f"model {name!r} version {version} is not available: {entry.failed[version]}")
            return mv
        mv = entry.default()
        if mv is None:
            raise NotLoaded(f"model {name!r} has no loaded version: {entry.reason or 'none could be loaded'}")
        return mv

    def check_model(self, name: str, version: str | None = None) -> None:
        """Raise NotFound (NotLoaded) unless ``name`` (and ``version``) is served now."""
        self.resolve(name, version)

    def _scan(self, name: str) -> dict:
        if self.root is None:
            if name != self.name:
                raise NotFound(f"unknown model {name!r}; this server serves the one program {self.name!r} "
                               f"({self.path})")
            found = {"1": self.path}
        else:
            try:
                found = model_versions(self.root, name)
            except FileNotFoundError:
                raise NotFound(f"unknown model {name!r}: the model repository has no directory {name!r}") from None
        out = {}
        for v, f in found.items():
            if isinstance(f, str):
                out[v] = f
                continue
            try:
                mv = ModelVersion(name, v, f, self.limits)
            except Exception as exc:     # the reason goes to the index and the caller
                out[v] = f"{f}: {type(exc).__name__}: {exc}"
                continue
            out[v] = self._check_budget(mv) or mv
        return out

    def load(self, name) -> list[str]:
        """(Re)load model ``name``: read every version's file again and serve the ones that load (the highest is
        the default); returns them.  NotFound for an unknown name, BadRequest naming why when no version loads
        (a model that was serving keeps its previous versions then)."""
        problem = name_problem(name)
        if problem:
            raise NotFound(problem)
        with self._loading:
            found = self._scan(name)
            versions = {v: m for v, m in found.items() if isinstance(m, ModelVersion)}
            failed = {v: r for v, r in found.items() if isinstance(r, str)}
            if versions:
                self.entries[name] = ModelEntry(versions, failed)
                log.info("npu serve: loaded model %r versions %s", name, ", ".join(sorted(versions, key=int)))
                return sorted(versions, key=int)
            why = ("; ".join(f"version {v}: {r}" for v, r in failed.items())
                   or f"{self.root / name if self.root else self.path} has no version directories (1, 2, ...)")
            old = self.entries.get(name)
            if old is not None and old.ready_versions():
                self.entries[name] = ModelEntry(old.versions, {**old.failed, **failed}, reason=why)
                raise BadRequest(f"failed to load model {name!r}: {why}; still serving its previously loaded "
                                 f"versions")
            self.entries[name] = ModelEntry({}, failed, reason=why)
            raise BadRequest(f"failed to load model {name!r}: {why}")

    def unload(self, name) -> None:
        """Stop serving model ``name``: new requests get NotLoaded; those already admitted are answered."""
        problem = name_problem(name)
        if problem:
            raise NotFound(problem)
        with self._loading:
            entry = self.entries.get(name)
            if entry is None:
                if self.root is not None and (self.root / name).is_dir():
                    return                         # on disk, not loaded: nothing to do
                raise NotFound(f"unknown model {name!r}; this server serves {self.served()}")
            self.entries[name] = ModelEntry(entry.versions, entry.failed, unloaded=True, reason="unloaded")
            log.info("npu serve: unloaded model %r", name)

    def index(self, ready: bool = False) -> list[dict]:
        """The repository index: a row per model version (name, version, state READY / UNAVAILABLE, reason);
        a model on disk that was never loaded has one row without a version."""
        entries = dict(self.entries)
        names = set(entries) | set(model_names(self.root) if self.root is not None else ())
        rows = []
        for n in sorted(names):
            e = entries.get(n)
            if e is None:
                rows.append({"name": n, "version": "", "state": "UNAVAILABLE", "reason": "not loaded"})
                continue
            versions = sorted(set(e.versions) | set(e.failed), key=int)
            if not versions:
                rows.append({"name": n, "version": "", "state": "UNAVAILABLE", "reason": e.reason})
            for v in versions:
                if v in e.versions and not e.unloaded:
                    rows.append({"name": n, "version": v, "state": "READY", "reason": ""})
                else:
                    rows.append({"name": n, "version": v, "state": "UNAVAILABLE",
                                 "reason": "unloaded" if e.unloaded else e.failed.get(v, "")})
        if ready:
            rows = [r for r in rows if r["state"] == "READY"]
        return rows

    # --- readiness and metadata -----------------------------------------------------------------
    def ready(self, timeout: float | None = 0) -> bool:
        """With ``timeout`` 0: whether a request can complete now (a worker loaded, alive and fed; not shutting
        down).  Otherwise wait up to ``timeout`` seconds for every worker to start."""
        if timeout == 0:
            return self.pool.ready()
        return self.pool.wait_ready(timeout) and self.pool.ready()

    def model_ready(self, name, version: str | None = None) -> bool:
        """Whether requests for ``name`` (``version``) can complete now."""
        try:
            self.resolve(name, version)
        except NotFound:
            return False
        return self.pool.ready()

    def metadata(self, name: str | None = None, version: str | None = None) -> dict:
        """KServe v2 model metadata of ``name`` (``version``; default: the highest)."""
        name = self.name if name is None else name
        mv = self.resolve(name, version)
        return mv.metadata(self.entries[name].ready_versions() if version in (None, "") else [mv.version])

    def metrics(self) -> bytes:
        """Prometheus text exposition of the service's metrics."""
        return generate_latest(self.registry)

    def label(self, name) -> str:
        """The ``model`` label for a request naming ``name`` (a name not in the repository is not a label)."""
        return name if isinstance(name, str) and name in self.entries else self.name

    def count(self, status: str, name=None) -> None:
        """Count a request refused outside ``infer`` (bad JSON, unknown endpoint, too large, ...)."""
        self.m_requests.labels(self.label(name), status).inc()

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
              requested: list[str] | None = None, timeout: float | None = None,
              classify: dict | None = None) -> Pending:
        """Check the request against the model version loaded now and queue it on ``ticket``'s place (the
        ticket is released if it is refused).  From here on the request is admitted: unloading or reloading
        the model does not stop it."""
        with ticket:
            mv = self.resolve(name, version)
            kind, payload = mv.job(inputs)
            requested = mv.check_requested(requested)
            seconds = self.request_timeout(timeout)
            started = time.monotonic()
            for out, k in (classify or {}).items():
                if k:
                    mv.check_classification(out, k)
            return Pending(ticket.submit(kind, payload, seconds, mv.spec), started + seconds, requested, started,
                           mv, {o: k for o, k in (classify or {}).items() if k})

    def end(self, pending: Pending, result) -> InferResult:
        """The answer of a finished request, its outputs checked to be finite."""
        outputs, stats = result
        self.m_cycles.labels(pending.model.name if pending.model else self.name).inc(stats.get("cycles", 0))
        if pending.requested:
            outputs = {k: v for k, v in outputs.items() if k in pending.requested}
        outputs = {k: np.ascontiguousarray(v, np.float32) for k, v in outputs.items()}
        bad = {k: int(v.size - np.count_nonzero(np.isfinite(v))) for k, v in outputs.items()}
        bad = {k: n for k, n in bad.items() if n}
        if bad:
            what = ", ".join(f"output {k!r} holds {n} of {outputs[k].size}" for k, n in bad.items())
            raise NonFiniteOutput(f"non-finite results (NaN or infinity): {what}; the input lies outside the "
                                  f"numeric range of the compiled program")
        for name, k in pending.classify.items():
            outputs[name] = classify(outputs[name], k, pending.model.labels if pending.model else None)
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

    def record(self, status: str, started: float, name=None) -> None:
        """Count one inference request and its latency."""
        label = self.label(name)
        self.m_requests.labels(label, status).inc()
        self.m_latency.labels(label).observe(time.monotonic() - started)

    def infer(self, name: str, version: str | None, inputs: list[TensorIn],
              requested: list[str] | None = None, timeout: float | None = None,
              ticket: Ticket | None = None) -> InferResult:
        """Run one request through the worker pool (blocking); raises NotFound, NotLoaded, BadRequest,
        Overloaded, Unavailable, RequestTimeout, WorkerCrashed..."""
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
            self.record(status, t0, name)

    def begin_close(self) -> None:
        """Refuse new requests (503 / UNAVAILABLE) and fail the queued ones the same way."""
        self.pool.begin_close()

    def close(self) -> None:
        """Stop the workers."""
        self.pool.close()
