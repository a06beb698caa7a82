"""Load test: 20 concurrent clients against ``npu serve`` on localhost, against in-process scoring.

Run with::

    .venv/bin/pytest benchmarks/bench_server.py --benchmark-only -o python_files='bench_*.py' -s

For each case the server (one simulator worker process, so it has the same
compute as the in-process session) is driven by 20 client threads for a
fixed number of requests; ``extra_info`` records requests/s, p50/p99
latency, the in-process ``Session`` throughput measured in the same run,
and ``server_over_inprocess`` (server throughput / in-process throughput;
the target is a cost under 15 %, i.e. a ratio above 0.85).  A second run
with two workers shows the scaling on this 2-core machine.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from compiler.compile import compile_model
from compiler.models import nets
from runtime import Session
from runtime.server import Server

CLIENTS = 20
REQUESTS = 200


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    path = tmp_path_factory.mktemp("load") / "small.npuz"
    compile_model(nets.resnet_small(), "tiny", "ms-fp9").save(path)
    return path


def _inprocess_rate(program, x, n=60) -> float:
    s = Session(program)
    s.score_numpy_array(x)
    t0 = time.perf_counter()
    for _ in range(n):
        s.score_numpy_array(x)
    return n / (time.perf_counter() - t0)


def _load(port: int, protocol: str, x: np.ndarray) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(REQUESTS))

    def client():
        if protocol == "grpc":
            c = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
            inp = grpcclient.InferInput("data", list(x.shape), "FP32")
        else:
            c = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
            inp = httpclient.InferInput("data", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            t0 = time.perf_counter()
            c.infer("small", [inp])
            with lock:
                latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return REQUESTS / (time.perf_counter() - t0), latencies


@pytest.mark.parametrize("protocol, workers", [("grpc", 1), ("http", 1), ("grpc", 2)])
def test_load(benchmark, program, protocol, workers):
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    inproc = _inprocess_rate(program, x)
    srv = Server(program, host="127.0.0.1", http_port=0, grpc_port=0, workers=workers,
                 queue_size=4 * CLIENTS).start()
    try:
        port = srv.grpc.port if protocol == "grpc" else srv.http.port
        _load(port, protocol, x)                                   # warm the workers
        rate, lat = benchmark.pedantic(lambda: _load(port, protocol, x), rounds=1, iterations=1)
    finally:
        srv.stop()
    lat_ms = np.array(lat) * 1e3
    benchmark.extra_info.update({
        "requests_per_s": rate, "p50_ms": float(np.percentile(lat_ms, 50)), "p99_ms": float(np.percentile(lat_ms, 99)),
        "inprocess_per_s": inproc, "server_over_inprocess": rate / inproc, "workers": workers,
    })
    print(f"\n{protocol} workers={workers}: {rate:.1f} req/s (in-process {inproc:.1f}/s, ratio {rate / inproc:.2f}), "
          f"p50 {np.percentile(lat_ms, 50):.1f} ms, p99 {np.percentile(lat_ms, 99):.1f} ms")
