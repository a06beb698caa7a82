"""``npu serve``: compiled programs behind the Open Inference Protocol (KServe v2), HTTP and gRPC.

Serves one program file, or a model repository directory ``ROOT/NAME/VERSION/<file>.npuz|.npup`` (Triton's
layout, with its repository extension: index, load, unload) on one pool of simulator workers.

Safe by default: both endpoints listen on loopback (127.0.0.1) unless a host is
given; ``token`` turns on bearer-token authentication and ``certfile`` /
``keyfile`` TLS on both; every limit is in ``limits.Limits``.
"""
from __future__ import annotations

import signal
import sys
import threading

from .grpc_service import GrpcServer
from .http import HttpServer
from .limits import Limits
from .net import ListenError, Security, address, is_loopback, listen_socket
from .service import InferenceService, ModelVersion, NonFiniteOutput, NotFound, NotLoaded
from .workers import (BadRequest, Overloaded, RequestTimeout, Unavailable, WorkerCrashed, WorkerPool, check_timeout,
                      score)

DEFAULT_HOST = "127.0.0.1"
#: ``--worker-memory`` default: the Sessions one simulator worker keeps loaded (estimated sizes): 2 GiB.
DEFAULT_WORKER_MEMORY = 2048 << 20


class Server:
    """An InferenceService (a program file or a model repository directory) with its HTTP and gRPC endpoints.

    Both ports are bound before the simulator workers start: a port in use raises ListenError (an OSError
    naming host:port) at once.  ``handler(session, kind, payload)`` answers each request in the workers
    (``workers.score``; tests pass doubles that crash or stall).
    """

    def __init__(self, program_path, *, host: str = DEFAULT_HOST, http_port: int = 8000, grpc_port: int = 8001,
                 workers: int = 2, queue_size: int = 64, timeout: float = 60.0, name: str | None = None,
                 max_body: int | None = None, limits: Limits | None = None, token: str | None = None,
                 certfile: str | None = None, keyfile: str | None = None, handler=score,
                 worker_memory: int | None = DEFAULT_WORKER_MEMORY):
        check_timeout(timeout, "timeout")
        if workers < 1 or queue_size < 1:
            raise ValueError(f"workers and queue_size must be at least 1 (got {workers}, {queue_size})")
        self.limits = (limits or Limits()).with_(max_body=max_body)
        self.security = Security(token=token, certfile=certfile, keyfile=keyfile)
        self.host = host
        self.grpc = None
        sock = listen_socket(host, http_port, self.limits.backlog, "HTTP")
        try:
            self.grpc = GrpcServer(host, grpc_port, limits=self.limits, security=self.security,
                                   calls=self.limits.grpc_call_limit(queue_size, workers))
            self.service = InferenceService(program_path, name=name, workers=workers, queue_size=queue_size,
                                            timeout=timeout, handler=handler, limits=self.limits,
                                            worker_memory=worker_memory)
        except BaseException:
            sock.close()
            if self.grpc is not None:
                self.grpc.stop(grace=0)
            raise
        self.grpc.attach(self.service)
        self.http = HttpServer(self.service, sock, self.limits, self.security)

    @property
    def scheme(self) -> str:
        return "https" if self.security.tls else "http"

    def start(self, wait_ready: float | None = 120.0) -> "Server":
        """Start both endpoints; optionally wait until the workers have loaded the program."""
        self.http.start()
        self.grpc.start()
        if wait_ready is not None and not self.service.ready(wait_ready):
            why = self.service.pool.last_error or f"not within {wait_ready:g} s"
            self.stop()
            raise RuntimeError(f"the simulator workers did not become ready: {why}")
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stop: refuse new requests and answer the queued ones 503 / UNAVAILABLE, give running ones ``grace``
        seconds, then stop the endpoints and the workers."""
        self.service.begin_close()
        self.service.pool.close(grace=grace)
        self.http.stop()
        self.grpc.stop(grace=1.0)


def serve_forever(program_path, **kwargs) -> int:
    """Run a server until SIGINT/SIGTERM; returns the exit status.  Raises ListenError for a port in use."""
    server = Server(program_path, **kwargs)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    s = server.service
    host = server.host
    print(f"npu serve: loading {program_path} on {s.pool.ctx.get_start_method()} workers ...",
          file=sys.stderr, flush=True)
    if not is_loopback(host) and server.security.token is None:
        print(f"npu serve: warning: listening on {host} without an access token: anyone who can reach this "
              f"machine can use the server (see --token-file)", file=sys.stderr, flush=True)
    server.start()
    auth = "token auth" if server.security.token else "no auth"
    tls = "TLS" if server.security.tls else "no TLS"
    what = (f"model {s.name!r}" if s.single else
            f"model repository {program_path} ({s.served()})")
    print(f"npu serve: {what} ready; HTTP on :{server.http.port}, gRPC on :{server.grpc.port} "
          f"(KServe v2) at {address(host, server.http.port)}, {address(host, server.grpc.port)}; {auth}, {tls}; "
          f"metrics at {server.scheme}://{address(host, server.http.port)}/metrics", file=sys.stderr, flush=True)
    done.wait()
    print("npu serve: stopping ...", file=sys.stderr, flush=True)
    server.stop()
    return 0


__all__ = ["BadRequest", "InferenceService", "Limits", "ListenError", "ModelVersion", "NonFiniteOutput", "NotFound",
           "NotLoaded", "Overloaded",
           "RequestTimeout", "Server", "Unavailable", "WorkerCrashed", "WorkerPool", "serve_forever"]
