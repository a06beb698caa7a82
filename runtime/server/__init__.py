"""``npu serve``: a compiled program behind the Open Inference Protocol (KServe v2), HTTP and gRPC."""
from __future__ import annotations

import signal
import sys
import threading

from .grpc_service import GrpcServer
from .http import HttpServer
from .service import InferenceService
from .workers import BadRequest, Overloaded, RequestTimeout, WorkerCrashed, WorkerPool, score


class Server:
    """An InferenceService with its HTTP and gRPC endpoints.

    ``handler(session, kind, payload)`` answers each request in the
    workers (``workers.score``; tests pass doubles that crash or stall).
    """

    def __init__(self, program_path, *, host: str = "0.0.0.0", http_port: int = 8000, grpc_port: int = 8001,
                 workers: int = 2, queue_size: int = 64, timeout: float = 60.0, name: str | None = None,
                 max_body: int = 64 << 20, handler=score):
        self.service = InferenceService(program_path, name=name, workers=workers, queue_size=queue_size,
                                        timeout=timeout, handler=handler)
        try:
            self.http = HttpServer(self.service, host, http_port, max_body)
            self.grpc = GrpcServer(self.service, host, grpc_port, max_message=max_body)
        except OSError:
            self.service.close()
            raise

    def start(self, wait_ready: float | None = 120.0) -> "Server":
        """Start both endpoints; optionally wait until the workers have loaded the program."""
        self.http.start()
        self.grpc.start()
        if wait_ready is not None and not self.service.ready(wait_ready):
            raise RuntimeError("the simulator workers did not become ready")
        return self

    def stop(self) -> None:
        """Stop the endpoints and the workers."""
        self.http.stop()
        self.grpc.stop()
        self.service.close()


def serve_forever(program_path, **kwargs) -> int:
    """Run a server until SIGINT/SIGTERM; returns the exit status."""
    server = Server(program_path, **kwargs)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print(f"npu serve: loading {program_path} on {server.service.pool.ctx.get_start_method()} workers ...",
          file=sys.stderr, flush=True)
    server.start()
    s = server.service
    print(f"npu serve: model {s.name!r} ready; HTTP on :{server.http.port}, gRPC on :{server.grpc.port} "
          f"(KServe v2); metrics at /metrics", file=sys.stderr, flush=True)
    done.wait()
    server.stop()
    return 0


__all__ = ["BadRequest", "InferenceService", "Overloaded", "RequestTimeout", "Server", "WorkerCrashed",
           "WorkerPool", "serve_forever"]
