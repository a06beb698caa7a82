"""``npu serve``: KServe v2 over HTTP and gRPC, checked with the real tritonclient package.

The served answers must equal in-process ``Session`` scoring bit for bit;
bad requests get precise 4xx errors while the server keeps serving; a full
queue answers 503 / RESOURCE_EXHAUSTED; a crashed worker fails its request
and is replaced.  Crashing and stalling workers come from the test handler in
``server_doubles``; production workers only score.
"""
import http.client
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from compiler.compile import compile_model
from compiler.models import nets
from runtime import Session
from runtime.client import PredictionClient
from runtime.server import Server, WorkerCrashed
from runtime.server.workers import RequestTimeout
from server_doubles import crash_or_sleep

MODEL = "small"


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    path = tmp_path_factory.mktemp("serve") / f"{MODEL}.npuz"
    compile_model(nets.resnet_small(), "tiny", "ms-fp9").save(path)
    return path


@pytest.fixture(scope="module")
def server(program):
    srv = Server(program, host="127.0.0.1", http_port=0, grpc_port=0, workers=2, queue_size=16,
                 max_body=1 << 20).start()
    yield srv
    srv.stop()


def _test_handler_server(program, **kwargs) -> Server:
    """A Server on free local ports whose workers answer with ``server_doubles.crash_or_sleep``."""
    return Server(program, host="127.0.0.1", http_port=0, grpc_port=0, handler=crash_or_sleep, **kwargs)


@pytest.fixture(scope="module")
def session(program):
    return Session(program)


def _x(seed=0):
    return np.random.default_rng(seed).standard_normal((1, 3, 32, 32)).astype(np.float32)


def _png(seed=0, size=(48, 40)):
    arr = (np.random.default_rng(seed).random((*size, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _http(server):
    return httpclient.InferenceServerClient(f"127.0.0.1:{server.http.port}")


def _grpc(server):
    return grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc.port}")


def test_http_health_metadata_and_inference(server, session):
    c = _http(server)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready(MODEL)
    meta = c.get_model_metadata(MODEL)
    assert meta["inputs"][0] == {"name": "data", "datatype": "FP32", "shape": [1, 3, 32, 32]}
    x = _x(1)
    expected = session.score_numpy_array(x).output
    for binary in (True, False):
        inp = httpclient.InferInput("data", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = httpclient.InferRequestedOutput("fc1", binary_data=binary)
        y = c.infer(MODEL, [inp], outputs=[out]).as_numpy("fc1")
        assert np.array_equal(y, expected)


def test_grpc_health_metadata_and_inference(server, session):
    c = _grpc(server)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready(MODEL)
    assert [t.name for t in c.get_model_metadata(MODEL).outputs] == ["fc1"]
    x = _x(2)
    inp = grpcclient.InferInput("data", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    assert np.array_equal(c.infer(MODEL, [inp]).as_numpy("fc1"), session.score_numpy_array(x).output)


def test_raw_image_bytes_are_preprocessed_by_the_server(server, session):
    data = _png(3)
    expected = session.score_image(data).output
    inp = httpclient.InferInput("images", [1], "BYTES")
    inp.set_data_from_numpy(np.array([data], dtype=object))
    assert np.array_equal(_http(server).infer(MODEL, [inp]).as_numpy("fc1"), expected)
    ginp = grpcclient.InferInput("images", [1], "BYTES")
    ginp.set_data_from_numpy(np.array([data], dtype=object))
    assert np.array_equal(_grpc(server).infer(MODEL, [ginp]).as_numpy("fc1"), expected)


def test_prediction_client(server, session, tmp_path):
    path = tmp_path / "img.png"
    path.write_bytes(_png(4))
    client = PredictionClient("127.0.0.1", server.grpc.port)
    assert np.array_equal(client.score_file(path), session.score_file(path).output)
    x = _x(5)
    assert np.array_equal(client.score_numpy_array(x), session.score_numpy_array(x).output)
    t0 = time.perf_counter()
    with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT"):
        client.score_image(b"not an image")
    assert time.perf_counter() - t0 < 1.0            # invalid arguments are not retried with back-off
    client.close()


def _post(server, path, body: bytes, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.http.port, timeout=30)
    conn.request("POST", path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


@pytest.mark.parametrize("body, status, needle", [
    ({"inputs": [{"name": "data", "datatype": "FP32", "shape": [1, 3, 16, 16], "data": [0.0] * 768}]}, 400,
     "shape [1, 3, 16, 16]"),
    ({"inputs": [{"name": "data", "datatype": "INT32", "shape": [1, 3, 32, 32], "data": [0] * 3072}]}, 400,
     "INT32"),
    ({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["garbage"]}]}, 400,
     "not a decodable image"),
    ({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1], "data": [0.0]}]}, 400, "unknown input"),
    ({"inputs": [{"name": "data", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": [0.0] * 5}]}, 400,
     "5 values"),
    ({"nothing": 1}, 400, "inputs"),
])
def test_bad_requests_get_precise_errors_and_the_server_keeps_serving(server, session, body, status, needle):
    code, data = _post(server, f"/v2/models/{MODEL}/infer", json.dumps(body).encode())
    assert code == status and needle in json.loads(data)["error"]
    x = _x(6)
    inp = httpclient.InferInput("data", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    assert np.array_equal(_http(server).infer(MODEL, [inp]).as_numpy("fc1"), session.score_numpy_array(x).output)


def test_unknown_model_malformed_json_and_oversized_body(server):
    code, data = _post(server, "/v2/models/nope/infer", b"{}")
    assert code == 404 and "nope" in json.loads(data)["error"]
    code, data = _post(server, f"/v2/models/{MODEL}/infer", b"{not json")
    assert code == 400 and "JSON" in json.loads(data)["error"]
    code, data = _post(server, f"/v2/models/{MODEL}/infer", b"x" * (2 << 20))
    assert code == 413 and "exceeds" in json.loads(data)["error"]
    with pytest.raises(InferenceServerException, match="NOT_FOUND"):
        inp = grpcclient.InferInput("data", [1, 3, 32, 32], "FP32")
        inp.set_data_from_numpy(_x())
        _grpc(server).infer("nope", [inp])
    assert _http(server).is_server_live()


def test_metrics_endpoint(server):
    inp = httpclient.InferInput("data", [1, 3, 32, 32], "FP32")
    inp.set_data_from_numpy(_x(7))
    _http(server).infer(MODEL, [inp])
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.http.port}/metrics").read().decode()
    ok = re.search(r'npu_requests_total\{model="small",status="ok"\} (\d+)', text)
    cycles = re.search(r'npu_simulated_cycles_total\{model="small"\} ([0-9.e+]+)', text)
    assert ok and int(ok.group(1)) >= 1 and cycles and float(cycles.group(1)) > 0
    assert "npu_request_latency_seconds_bucket" in text and "npu_queue_depth" in text


def test_full_queue_answers_503_and_resource_exhausted(program):
    srv = _test_handler_server(program, workers=1, queue_size=1).start()
    try:
        x = _x(8)
        codes, lock = [], threading.Lock()

        def fire():
            c = httpclient.InferenceServerClient(f"127.0.0.1:{srv.http.port}")
            inp = httpclient.InferInput("data", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            try:
                c.infer(MODEL, [inp])
                code = 200
            except InferenceServerException as exc:
                code = int(exc.status()) if str(exc.status()).isdigit() else exc.status()
            finally:
                c.close()               # in this thread: the client's gevent pool belongs to it
            with lock:
                codes.append(code)

        threads = [threading.Thread(target=fire) for _ in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert 200 in codes and 503 in codes and set(codes) <= {200, 503}
        # gRPC says RESOURCE_EXHAUSTED under the same pressure: the worker busy, the queue's one place taken
        busy = srv.service.pool.submit("sleep", 2.0, 30.0)
        time.sleep(0.3)
        futs = [srv.service.pool.submit("tensor", x, 30.0)]
        g = grpcclient.InferenceServerClient(f"127.0.0.1:{srv.grpc.port}")
        inp = grpcclient.InferInput("data", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException, match="RESOURCE_EXHAUSTED"):
            g.infer(MODEL, [inp])
        for f in [busy, *futs]:
            f.result(timeout=60)
        assert _http(srv).is_server_ready()
    finally:
        srv.stop()


def test_a_worker_killed_mid_request_fails_that_request_and_is_replaced(program, session):
    srv = _test_handler_server(program, workers=2, queue_size=16).start()
    try:
        pool = srv.service.pool
        before = pool.restarts
        with pytest.raises(WorkerCrashed, match="died"):
            pool.submit("crash", None, 30.0).result(timeout=60)
        assert pool.restarts == before + 1
        x = _x(9)
        for _ in range(3):                               # both workers (one of them new) still answer
            assert np.array_equal(pool.submit("tensor", x, 30.0).result(timeout=60)[0]["fc1"][0],
                                  session.score_numpy_array(x).output[0])
    finally:
        srv.stop()


def test_deadline(server):
    with pytest.raises(RequestTimeout):
        server.service.infer(MODEL, None, [_tensor_in(_x(10))], timeout=1e-6)


def _tensor_in(x):
    from runtime.server.service import TensorIn

    return TensorIn("data", "FP32", list(x.shape), x)


def test_npu_serve_command(program):
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "npu_toolkit.cli", "serve", str(program), "--port", "0", "--grpc-port", "0",
                             "--host", "127.0.0.1", "--workers", "1"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        port = None
        deadline = time.time() + 120
        while time.time() < deadline and port is None:
            line = proc.stderr.readline()
            m = re.search(r"HTTP on :(\d+)", line)
            port = int(m.group(1)) if m else None
        assert port, "npu serve did not report its port"
        c = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        assert c.is_model_ready(MODEL)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
