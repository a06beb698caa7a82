"""Simulator workers behind a bounded queue: back-pressure, deadlines, and crash recovery.

Each worker is a process (the simulator then runs on every core, free of the
GIL), fed by a feeder thread of its own.  The workers are shared by every
model served: each keeps the Sessions it has loaded in an LRU cache keyed by
(model, version, file checksum) within a memory budget (``worker_memory``
bytes, from each program's size estimate); a request names the model it is
for (``ModelSpec``) and the least recently used Sessions are evicted to make
room.  A worker loading a model checks the file's checksum first, so a
request admitted for one file is never answered by another.  A request
first takes a place in the queue (``WorkerPool.admit``: a ``Ticket``), before
its body is read or parsed; when all ``queue_size`` places are taken, new
requests are refused at once (the protocols answer 503 / RESOURCE_EXHAUSTED)
instead of piling up.  A request whose deadline passes fails with a timeout; a
worker that dies or overruns a deadline is replaced, and its request fails
cleanly.  A feeder thread survives any exception: the request it was serving
gets an answer, the worker is replaced, and the feeder carries on.  Every
request gets exactly one answer.
"""
from __future__ import annotations

import hashlib
import logging
import math
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
import traceback
from collections import OrderedDict
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field, replace
from pathlib import Path

log = logging.getLogger("npu.serve")

#: The longest a feeder waits on a worker in one call (multiprocessing's poll/select refuse huge timeouts).
MAX_WAIT = 1e6


class Overloaded(RuntimeError):
    """The request queue is full."""


class Unavailable(RuntimeError):
    """The server cannot take the request now: it is shutting down, or no simulator worker is running."""


class RequestTimeout(RuntimeError):
    """The request's deadline passed."""


class WorkerCrashed(RuntimeError):
    """The worker process serving the request died."""


class BadRequest(ValueError):
    """The request is malformed (shape, dtype, undecodable image); the message says what and where."""


def check_timeout(timeout, what: str = "timeout") -> float:
    """``timeout`` as a float number of seconds; ValueError unless it is a finite positive number."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ValueError(f"{what} must be a number of seconds, not {type(timeout).__name__}")
    t = float(timeout)
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"{what} must be a finite positive number of seconds, not {timeout!r}")
    return min(t, MAX_WAIT)


class ModelChanged(Unavailable):
    """A worker could not load the model version a request was admitted for (its file changed or vanished)."""


@dataclass(frozen=True)
class ModelSpec:
    """What a worker needs to find or load a model version: its cache key, file and size estimate (bytes)."""

    name: str
    version: str
    checksum: str                 # sha256 of the program file when the version was loaded
    path: str
    size: int

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.name, self.version, self.checksum)


def file_checksum(path) -> str:
    """sha256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class SessionCache:
    """A worker's loaded Sessions, least recently used first, within ``budget`` bytes (None: no bound).

    The newest Session is always kept, even alone over the budget (the server refuses, at load time, a
    model whose estimate exceeds the budget).
    """

    def __init__(self, budget: int | None, backend: str):
        self.budget = budget
        self.backend = backend
        self.sessions: "OrderedDict[tuple, tuple[object, int]]" = OrderedDict()
        self.evicted = 0              # since the last ``take_evicted``

    @property
    def used(self) -> int:
        return sum(size for _, size in self.sessions.values())

    def get(self, spec: ModelSpec):
        key = spec.key
        hit = self.sessions.get(key)
        if hit is not None:
            self.sessions.move_to_end(key)
            return hit[0]
        from runtime.session import Session

        try:
            checksum = file_checksum(spec.path)
        except OSError as exc:
            raise ModelChanged(f"model {spec.name!r} version {spec.version}: cannot read {spec.path} "
                               f"({exc.strerror or exc}); reload the model") from None
        if checksum != spec.checksum:
            raise ModelChanged(f"model {spec.name!r} version {spec.version}: {spec.path} changed on disk since the "
                               f"model was loaded; reload the model to serve the new file")
        while self.sessions and self.budget is not None and self.used + spec.size > self.budget:
            self.sessions.popitem(last=False)
            self.evicted += 1
        session = Session(spec.path, backend=self.backend)
        self.sessions[key] = (session, spec.size)
        return session

    def take_evicted(self) -> int:
        n, self.evicted = self.evicted, 0
        return n

    def report(self) -> tuple[int, int]:
        """(evictions since the last report, Sessions loaded)."""
        return self.take_evicted(), len(self.sessions)


@dataclass
class Job:
    """One inference request: an input tensor or encoded image, its model, and its deadline."""

    kind: str                     # "tensor" or "image" (what the pool's handler answers)
    payload: object
    deadline: float
    model: ModelSpec | None = None   # None: the pool's preloaded model (if any)
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)
    ticket: "Ticket | None" = None


class Ticket:
    """A place in the request queue, held from admission until a worker takes the request (or it is dropped).

    Use as a context manager around reading and checking a request: leaving it without ``submit`` gives the
    place back.
    """

    def __init__(self, pool: "WorkerPool"):
        self.pool = pool
        self.submitted = False
        self._held = True
        self._lock = threading.Lock()

    def submit(self, kind: str, payload, timeout: float, model: ModelSpec | None = None) -> Future:
        """Queue the request on this place; the future gets its (outputs, stats) or an exception."""
        if self.submitted:
            raise RuntimeError("a ticket queues one request")
        self.submitted = True
        return self.pool._enqueue(self, kind, payload, timeout, model)

    def release(self) -> None:
        """Give the place back (once; later calls do nothing)."""
        with self._lock:
            if not self._held:
                return
            self._held = False
        self.pool._release_place()

    def __enter__(self) -> "Ticket":
        return self

    def __exit__(self, *exc) -> None:
        if not self.submitted:
            self.release()


def score(session, kind: str, payload) -> tuple[dict, dict]:
    """The production request handler: score an encoded image or an input tensor; (outputs, stats dict)."""
    result = session.score_image(payload, "image") if kind == "image" else session.score_numpy_array(payload)
    return result.outputs, result.stats.to_dict()


def _worker_main(preload: ModelSpec | None, backend: str, handler, conn, budget: int | None = None) -> None:
    """Worker process: load the preloaded model (if any), then answer (model, kind, payload) requests with
    ``handler`` on the model's Session (from the LRU cache) until stopped.  Each answer is
    (status, info, (evictions, sessions loaded))."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C on `npu serve` reaches the process group: the parent
    from npu.preprocess import ImageError           # stops the workers in order

    cache = SessionCache(budget, backend)
    try:
        if preload is not None:
            cache.get(preload)
    except Exception as exc:  # the parent reports start-up failures to every waiting request
        conn.send(("fatal", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None, cache.report()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        model, kind, payload = msg
        try:
            spec = model or preload
            try:
                session = cache.get(spec) if spec is not None else None
            except ModelChanged as exc:
                conn.send(("unavailable", str(exc), cache.report()))
                continue
            except Exception as exc:
                conn.send(("unavailable", f"model {spec.name!r} version {spec.version} could not be loaded: "
                                          f"{type(exc).__name__}: {exc}", cache.report()))
                continue
            conn.send(("ok", handler(session, kind, payload), cache.report()))
        except (ValueError, ImageError) as exc:
            conn.send(("bad", str(exc), cache.report()))
        except Exception as exc:   # any other failure is the server's fault; report it, keep serving
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}", cache.report()))


#: Environment variables that size a process's BLAS / OpenMP / Numba thread pools.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
_ENV_LOCK = threading.Lock()


class _Worker:
    def __init__(self, ctx, preload: ModelSpec | None, backend: str, handler, threads: int, budget: int | None):
        self.parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(preload, backend, handler, child, budget), daemon=True)
        # the workers share the cores: each starts with its part of the thread pools (a spawned child reads
        # these at start-up; the parent's pools are already sized, so setting them briefly here is harmless)
        with _ENV_LOCK:
            saved = {v: os.environ.get(v) for v in THREAD_VARS}
            os.environ.update({v: str(threads) for v in THREAD_VARS})
            try:
                self.proc.start()
            finally:
                for v, old in saved.items():
                    if old is None:
                        os.environ.pop(v, None)
                    else:
                        os.environ[v] = old
        child.close()

    def stop(self) -> None:
        try:
            self.parent.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(timeout=2)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=2)
        self.parent.close()


class _Slot:
    """One worker process and the feeder thread that feeds it."""

    def __init__(self, index: int, thread: threading.Thread):
        self.index = index
        self.thread = thread
        self.worker: _Worker | None = None
        self.state = "starting"       # starting | ready | failed | stopped
        self.started_once = False
        self.busy = False
        self.error = ""
        self.sessions = 0             # Sessions its worker holds

    def healthy(self) -> bool:
        w = self.worker
        return (self.state == "ready" and self.thread.is_alive() and w is not None and w.proc.is_alive())


class WorkerPool:
    """``workers`` simulator processes fed from a queue of at most ``queue_size`` waiting requests.

    Each worker answers a request with ``handler(session, kind, payload)`` -> (outputs, stats dict);
    the handler must be a module-level function (the worker processes are spawned and import it).
    """

    def __init__(self, program_path: str | None = None, *, workers: int = 2, queue_size: int = 64,
                 backend: str = "sim", start_timeout: float = 120.0, on_done=None, handler=score,
                 preload: ModelSpec | None = None, worker_memory: int | None = None, on_evict=None):
        if workers < 1 or queue_size < 1:
            raise ValueError(f"a pool needs at least one worker and one queue place (got {workers}, {queue_size})")
        if worker_memory is not None and worker_memory < 1:
            raise ValueError(f"worker_memory must be a positive number of bytes, not {worker_memory!r}")
        if preload is None and program_path is not None:
            path = str(program_path)
            preload = ModelSpec(Path(path).stem, "1", file_checksum(path), path, 0)
        #: the model every worker loads when it starts (None: none; requests name theirs); ``program_path`` is
        #: its file (a replacement worker reads it again)
        self.preload = preload
        self.program_path = None if preload is None else preload.path
        self.worker_memory = worker_memory
        self.on_evict = on_evict
        self.evictions = 0
        self.backend = backend
        self.handler = handler
        self.queue_size = queue_size
        self.queue: queue.Queue[Job] = queue.Queue()     # bounded by admission (the tickets), not here
        self.ctx = mp.get_context("spawn")
        self.start_timeout = start_timeout
        self.on_done = on_done
        self.restarts = 0
        self.last_error = ""
        self._places = 0
        self._lock = threading.Lock()                     # places, closing
        self._changed = threading.Condition()             # slot states
        self._closing = False
        self._stop = threading.Event()
        self._slots = [_Slot(i, threading.Thread(target=self._serve, args=(i,), name=f"npu-worker-{i}",
                                                 daemon=True)) for i in range(workers)]
        for s in self._slots:
            s.thread.start()

    # --- state -----------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Requests waiting in the queue."""
        return self.queue.qsize()

    @property
    def admitted(self) -> int:
        """Queue places taken (requests being read, checked or waiting for a worker)."""
        return self._places

    def sessions(self) -> int:
        """Sessions held by the live workers, added up."""
        return sum(s.sessions for s in self._slots if s.worker is not None)

    def healthy(self) -> int:
        """Workers that are loaded, alive and fed by a live feeder thread."""
        return sum(s.healthy() for s in self._slots)

    def ready(self) -> bool:
        """Whether a request can complete now: not shutting down, and a worker is healthy."""
        return not self._closing and self.healthy() > 0

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until every worker has loaded the program; False at the timeout, or as soon as every worker
        has failed to start (``last_error`` says why)."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                if all(s.started_once for s in self._slots):
                    return True
                if all(s.state == "failed" and not s.started_once for s in self._slots) or self._stop.is_set():
                    return False
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(0.2 if left is None else min(left, 0.2))

    def _set_state(self, slot: _Slot, state: str, error: str = "") -> None:
        with self._changed:
            slot.state = state
            if state == "ready":
                slot.started_once = True
            if error:
                slot.error = self.last_error = error
            self._changed.notify_all()

    # --- admission ---------------------------------------------------------------------------------
    def check_room(self) -> None:
        """Raise what ``admit`` would raise now (Unavailable, Overloaded), without taking a place."""
        with self._lock:
            self._check_room()

    def _check_room(self) -> None:
        if self._closing:
            raise Unavailable("the server is shutting down")
        if not any(s.thread.is_alive() and s.state in ("ready", "starting") for s in self._slots):
            raise Unavailable(f"no simulator worker is running; retry later (last error: {self.last_error})")
        if self._places >= self.queue_size:
            raise Overloaded(f"the request queue is full ({self.queue_size} waiting); retry later")

    def admit(self) -> Ticket:
        """A place in the queue; raises Overloaded when all are taken, Unavailable when shutting down or when
        no worker is running or starting."""
        with self._lock:
            self._check_room()
            self._places += 1
        return Ticket(self)

    def _release_place(self) -> None:
        with self._lock:
            self._places -= 1

    def submit(self, kind: str, payload, timeout: float, model: ModelSpec | None = None) -> Future:
        """Queue a request; raises Overloaded at once when the queue is full."""
        return self.admit().submit(kind, payload, timeout, model)

    def _enqueue(self, ticket: Ticket, kind: str, payload, timeout: float, model: ModelSpec | None = None) -> Future:
        try:
            timeout = check_timeout(timeout)
        except ValueError:
            ticket.release()
            raise
        job = Job(kind, payload, time.monotonic() + timeout, model=model, ticket=ticket)
        with self._lock:                    # closing and queueing are ordered: close() drains after this
            if self._closing:
                closing = True
            else:
                closing = False
                self.queue.put(job)
        if closing:
            ticket.release()
            raise Unavailable("the server is shutting down")
        return job.future

    # --- shutdown ----------------------------------------------------------------------------------
    def begin_close(self) -> None:
        """Take no more requests; the queued ones fail with Unavailable (503 / UNAVAILABLE)."""
        with self._lock:
            self._closing = True
        self._drain()

    def close(self, grace: float = 5.0) -> None:
        """Stop the workers: queued requests fail with Unavailable, running ones get ``grace`` seconds."""
        self.begin_close()
        end = time.monotonic() + grace
        while any(s.busy for s in self._slots) and time.monotonic() < end:
            time.sleep(0.05)
        self._stop.set()
        for s in self._slots:
            w = s.worker
            if w is not None and s.busy:
                w.proc.kill()               # its feeder answers the request with Unavailable
        for s in self._slots:
            s.thread.join(timeout=5)
        self._drain()
        for s in self._slots:
            if s.worker is not None:
                s.worker.stop()
                s.worker = None
            s.state = "stopped"

    def _drain(self) -> None:
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                return
            job.ticket.release()
            if job.future.set_running_or_notify_cancel():
                self._finish(job, exc=Unavailable("the server is shutting down; the request was not run"))

    # --- feeders -----------------------------------------------------------------------------------
    def _start(self, slot: _Slot) -> _Worker:
        preload = self.preload
        if preload is not None and preload.path != self.program_path and self.program_path is not None:
            preload = replace(preload, path=self.program_path)       # program_path was changed: read that
        w = _Worker(self.ctx, preload, self.backend, self.handler,
                    threads=max(1, (os.cpu_count() or 1) // len(self._slots)), budget=self.worker_memory)
        slot.worker = w
        deadline = time.monotonic() + self.start_timeout
        while not w.parent.poll(0.2):
            if self._stop.is_set():
                why = "the server is stopping"
            elif not w.proc.is_alive():
                if w.parent.poll(0):
                    break                   # it said why before exiting
                why = f"the worker process exited with code {w.proc.exitcode}"
            elif time.monotonic() > deadline:
                why = f"it took over {self.start_timeout:.0f} s"
            else:
                continue
            w.stop()
            slot.worker = None
            raise RuntimeError(f"worker did not load {self.program_path}: {why}")
        try:
            status, info, *report = w.parent.recv()
        except (EOFError, OSError):
            status, info, report = "fatal", f"the worker process exited with code {w.proc.exitcode} while starting", []
        if report:
            self._report(slot, report[0])
        if status != "ready":
            w.stop()
            slot.worker = None
            raise RuntimeError(f"worker could not load {self.program_path}: {info}")
        return w

    def _serve(self, index: int) -> None:
        """A feeder thread: keep a worker running in this slot and feed it requests, whatever happens."""
        slot = self._slots[index]
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if slot.worker is None:
                    self._set_state(slot, "starting")
                    try:
                        self._start(slot)
                    except Exception as exc:
                        self._set_state(slot, "failed", str(exc))
                        log.error("npu serve: %s; retrying in %.1f s", exc, backoff)
                        self._stop.wait(backoff)
                        backoff = min(2 * backoff, 30.0)
                        continue
                    backoff = 0.5
                    self._set_state(slot, "ready")
                self._step(slot)
            except Exception:       # a bug here must not stop this slot: log it, replace the worker, go on
                log.error("npu serve: feeder %d recovered from an error:\n%s", index, traceback.format_exc())
                if slot.worker is not None:
                    self._retire(slot, kill=True)
                time.sleep(0.05)
        self._set_state(slot, "stopped")

    def _step(self, slot: _Slot) -> None:
        """Take one request from the queue and answer it (or check the idle worker)."""
        worker = slot.worker
        try:
            job = self.queue.get(timeout=0.2)
        except queue.Empty:
            if not worker.proc.is_alive():
                log.error("npu serve: worker %d exited with code %s while idle; replacing it",
                          slot.index, worker.proc.exitcode)
                self._retire(slot)
            return
        job.ticket.release()          # the place is free once a worker takes the request
        if not job.future.set_running_or_notify_cancel():
            return                    # its client stopped waiting
        slot.busy = True
        try:
            left = job.deadline - time.monotonic()
            if left <= 0:
                self._finish(job, exc=RequestTimeout("the request timed out while waiting in the queue"))
                return
            try:
                worker.parent.send((job.model, job.kind, job.payload))
                if not worker.parent.poll(min(left, MAX_WAIT)):
                    self._finish(job, exc=RequestTimeout(f"the request timed out after {left:.1f} s of simulation"))
                    self._retire(slot, kill=True)
                    return
                status, info, report = worker.parent.recv()
                self._report(slot, report)
            except (EOFError, OSError):
                self._retire(slot, kill=True)
                if self._stop.is_set():
                    self._finish(job, exc=Unavailable("the server shut down while running the request"))
                else:
                    self._finish(job, exc=WorkerCrashed("the simulator worker died while serving this request; "
                                                        "it is being replaced"))
                return
            except Exception as exc:   # e.g. a payload that cannot be sent: the worker's state is unknown
                self._retire(slot, kill=True)
                self._finish(job, exc=RuntimeError(f"internal error sending the request to a worker: "
                                                   f"{type(exc).__name__}: {exc}"))
                return
            if status == "ok":
                self._finish(job, result=info)
            elif status == "bad":
                self._finish(job, exc=BadRequest(info))
            elif status == "unavailable":
                self._finish(job, exc=ModelChanged(info))
            else:
                self._finish(job, exc=RuntimeError(info))
        finally:
            slot.busy = False
            if not job.future.done():   # never leave a request without an answer
                self._finish(job, exc=RuntimeError("internal error: the request was dropped"))

    def _report(self, slot: _Slot, report) -> None:
        evicted, slot.sessions = report
        if evicted:
            self.evictions += evicted
            if self.on_evict is not None:
                try:
                    self.on_evict(evicted)
                except Exception:
                    log.error("npu serve: on_evict failed:\n%s", traceback.format_exc())

    def _finish(self, job: Job, result=None, exc: Exception | None = None) -> None:
        try:
            if exc is not None:
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
        except InvalidStateError:     # already answered (or cancelled): one answer per request
            return
        if self.on_done is not None:
            try:
                self.on_done(job, exc)
            except Exception:
                log.error("npu serve: on_done failed:\n%s", traceback.format_exc())

    def _retire(self, slot: _Slot, kill: bool = False) -> None:
        worker, slot.worker = slot.worker, None
        slot.sessions = 0
        if worker is None:
            return
        with self._changed:
            slot.state = "starting"
            self._changed.notify_all()
        if kill and worker.proc.is_alive():
            worker.proc.kill()
        worker.proc.join(timeout=2)
        try:
            worker.parent.close()
        except OSError:
            pass
        self.restarts += 1
