"""Simulator workers behind a bounded queue: back-pressure, deadlines, and crash recovery.

Each worker is a process (the simulator then runs on every core, free of the
GIL) holding one loaded Session.  Requests wait in a bounded queue; a full
queue refuses new work at once (the protocols answer 503 /
RESOURCE_EXHAUSTED) instead of growing without bound.  A request whose
deadline passes fails with a timeout; a worker that dies or overruns a
deadline is replaced, and its request fails cleanly.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time
import traceback
from concurrent.futures import Future
from dataclasses import dataclass, field


class Overloaded(RuntimeError):
    """The request queue is full."""


class RequestTimeout(RuntimeError):
    """The request's deadline passed."""


class WorkerCrashed(RuntimeError):
    """The worker process serving the request died."""


class BadRequest(ValueError):
    """The request is malformed (shape, dtype, undecodable image); the message says what and where."""


@dataclass
class Job:
    """One inference request: an input tensor or encoded image, and its deadline."""

    kind: str                     # "tensor" or "image" (what the pool's handler answers)
    payload: object
    deadline: float
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)


def score(session, kind: str, payload) -> tuple[dict, dict]:
    """The production request handler: score an encoded image or an input tensor; (outputs, stats dict)."""
    result = session.score_image(payload, "image") if kind == "image" else session.score_numpy_array(payload)
    return result.outputs, result.stats.to_dict()


def _worker_main(program_path: str, backend: str, handler, conn) -> None:
    """Worker process: load the program once, then answer (kind, payload) requests with ``handler`` until stopped."""
    from npu.preprocess import ImageError
    from runtime.session import Session

    try:
        session = Session(program_path, backend=backend)
    except Exception as exc:  # the parent reports start-up failures to every waiting request
        conn.send(("fatal", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        kind, payload = msg
        try:
            conn.send(("ok", handler(session, kind, payload)))
        except (ValueError, ImageError) as exc:
            conn.send(("bad", str(exc)))
        except Exception as exc:   # any other failure is the server's fault; report it, keep serving
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"))


#: Environment variables that size a process's BLAS / OpenMP / Numba thread pools.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
_ENV_LOCK = threading.Lock()


class _Worker:
    def __init__(self, ctx, program_path: str, backend: str, handler, threads: int):
        self.parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(program_path, backend, handler, child), daemon=True)
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
        self.ready = False

    def stop(self) -> None:
        try:
            self.parent.send(None)
        except (OSError, BrokenPipeError):
            pass
        self.proc.join(timeout=2)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=2)


class WorkerPool:
    """``workers`` simulator processes fed from a queue of at most ``queue_size`` waiting requests.

    Each worker answers a request with ``handler(session, kind, payload)`` -> (outputs, stats dict);
    the handler must be a module-level function (the worker processes are spawned and import it).
    """

    def __init__(self, program_path: str, *, workers: int = 2, queue_size: int = 64, backend: str = "sim",
                 start_timeout: float = 120.0, on_done=None, handler=score):
        self.program_path = str(program_path)
        self.backend = backend
        self.handler = handler
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=queue_size)
        self.ctx = mp.get_context("spawn")
        self.start_timeout = start_timeout
        self.on_done = on_done
        self.restarts = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve, name=f"npu-worker-{i}", daemon=True)
                         for i in range(workers)]
        self._ready = threading.Semaphore(0)
        self._workers: list[_Worker | None] = [None] * workers
        for t in self._threads:
            t.start()

    @property
    def depth(self) -> int:
        """Requests waiting in the queue."""
        return self.queue.qsize()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until every worker has loaded the program."""
        end = None if timeout is None else time.monotonic() + timeout
        for _ in self._threads:
            left = None if end is None else max(0.0, end - time.monotonic())
            if not self._ready.acquire(timeout=left):
                return False
        for _ in self._threads:
            self._ready.release()
        return True

    def submit(self, kind: str, payload, timeout: float) -> Future:
        """Queue a request; raises Overloaded at once when the queue is full."""
        job = Job(kind, payload, time.monotonic() + timeout)
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(f"the request queue is full ({self.queue.maxsize} waiting); retry later") from None
        return job.future

    def close(self) -> None:
        """Stop the workers (requests still queued fail)."""
        self._stop.set()
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            job.future.set_exception(RuntimeError("the server is shutting down"))
        for t in self._threads:
            t.join(timeout=5)
        for w in self._workers:
            if w is not None:
                w.stop()

    def _start(self, slot: int) -> _Worker:
        w = _Worker(self.ctx, self.program_path, self.backend, self.handler,
                    threads=max(1, (os.cpu_count() or 1) // len(self._threads)))
        if not w.parent.poll(self.start_timeout):
            w.stop()
            raise RuntimeError(f"worker did not load {self.program_path} within {self.start_timeout:.0f} s")
        try:
            status, info = w.parent.recv()
        except (EOFError, OSError):
            status, info = "fatal", f"the worker process exited with code {w.proc.exitcode} while starting"
        if status != "ready":
            w.stop()
            raise RuntimeError(f"worker could not load {self.program_path}: {info}")
        self._workers[slot] = w
        return w

    def _serve(self) -> None:
        slot = self._threads.index(threading.current_thread())
        try:
            worker = self._start(slot)
        except RuntimeError as exc:
            self._fail_all(exc)
            return
        self._ready.release()
        try:
            self._loop(slot, worker)
        except RuntimeError as exc:           # a replacement worker could not start
            self._fail_all(exc)

    def _loop(self, slot: int, worker: _Worker) -> None:
        while not self._stop.is_set():
            try:
                job = self.queue.get(timeout=0.2)
            except queue.Empty:
                if not worker.proc.is_alive():
                    worker = self._replace(slot, worker)
                continue
            if not job.future.set_running_or_notify_cancel():
                continue
            left = job.deadline - time.monotonic()
            if left <= 0:
                self._finish(job, exc=RequestTimeout("the request timed out while waiting in the queue"))
                continue
            try:
                worker.parent.send((job.kind, job.payload))
                if not worker.parent.poll(left):
                    self._finish(job, exc=RequestTimeout(f"the request timed out after {left:.1f} s of simulation"))
                    worker = self._replace(slot, worker, kill=True)
                    continue
                status, info = worker.parent.recv()
            except (EOFError, OSError, BrokenPipeError):
                self._retire(worker, kill=True)
                self._finish(job, exc=WorkerCrashed("the simulator worker died while serving this request; "
                                                    "it is being replaced"))
                worker = self._start(slot)
                continue
            if status == "ok":
                self._finish(job, result=info)
            elif status == "bad":
                self._finish(job, exc=BadRequest(info))
            else:
                self._finish(job, exc=RuntimeError(info))

    def _finish(self, job: Job, result=None, exc: Exception | None = None) -> None:
        if exc is not None:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)
        if self.on_done is not None:
            self.on_done(job, exc)

    def _retire(self, worker: _Worker, kill: bool = False) -> None:
        if kill and worker.proc.is_alive():
            worker.proc.kill()
        worker.proc.join(timeout=2)
        self.restarts += 1

    def _replace(self, slot: int, worker: _Worker, kill: bool = False) -> _Worker:
        self._retire(worker, kill)
        return self._start(slot)

    def _fail_all(self, exc: Exception) -> None:
        while not self._stop.is_set():
            try:
                job = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(exc)
