"""``npu serve`` hardening: each class of the "Hardening" issue's serving parts, closed and kept closed.

* a request cannot stop inference: parameters are validated, feeder threads survive anything, readiness
  tells whether requests can complete;
* loopback by default, token authentication and TLS on both protocols, a port in use is refused;
* memory is bounded before it is spent (body and JSON limits, queue admission and a body budget before reading);
* slow connections are closed;
* no silent wrong results (non-finite inputs and outputs refused, strict JSON), 4xx not 500, 503 at shutdown;
* refused requests are counted.

The fuzz tests are in test_server_fuzz.py, the load test in test_server_load.py.
"""
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from runtime import Session
from runtime.client import PredictionClient
from runtime.server import ListenError, Server
from runtime.server.limits import Limits
from server_doubles import crash_or_sleep, rss_bytes, slow_score, small_program

MODEL = "small"
INFER = f"/v2/models/{MODEL}/infer"


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    return small_program(tmp_path_factory.mktemp("harden") / f"{MODEL}.npuz")


@pytest.fixture(scope="module")
def session(program):
    return Session(program)


@pytest.fixture(scope="module")
def server(program):
    srv = Server(program, http_port=0, grpc_port=0, workers=2, queue_size=8, handler=crash_or_sleep,
                 limits=Limits(max_body=1 << 20, max_json=1 << 20, body_memory=2 << 20, read_timeout=2.0,
                               body_timeout=4.0, keep_alive=2.0)).start()
    yield srv
    srv.stop()


def _x(seed=0):
    return np.random.default_rng(seed).standard_normal((1, 3, 32, 32)).astype(np.float32)


def _body(x=None, **params):
    x = _x() if x is None else x
    req = {"inputs": [{"name": "data", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    if params:
        req["parameters"] = params
    return json.dumps(req).encode()


def _post(port, body: bytes, headers=None, path=INFER, timeout=30, context=None):
    if context is not None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def _get(port, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def _strict_json(data: bytes):
    """json.loads that refuses NaN / Infinity tokens, as strict parsers do."""
    def refuse(token):
        raise ValueError(f"bare {token} in JSON")
    return json.loads(data, parse_constant=refuse)


def _error(data: bytes) -> str:
    return _strict_json(data)["error"]


def _metric(server, status: str) -> float:
    text = server.service.metrics().decode()
    m = re.search(rf'npu_requests_total\{{model="{MODEL}",status="{status}"\}} ([0-9.e+]+)', text)
    return float(m.group(1)) if m else 0.0


def _ok(server, session, seed=11):
    """The server still answers, and right."""
    x = _x(seed)
    code, data = _post(server.http.port, _body(x))
    assert code == 200, data
    y = np.array(_strict_json(data)["outputs"][0]["data"], np.float32)
    assert np.array_equal(y, session.score_numpy_array(x).output.ravel())


def _raw(port: int, data: bytes, timeout=10.0, shut=False) -> bytes:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
    except (socket.timeout, ConnectionResetError):
        return out
    finally:
        s.close()


def _grpc_stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc.port}")
    return channel, service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _grpc_request(x=None, **kw):
    x = _x() if x is None else x
    req = service_pb2.ModelInferRequest(model_name=MODEL)
    inp = req.inputs.add()
    inp.name, inp.datatype = "data", "FP32"
    inp.shape.extend(kw.pop("shape", x.shape))
    if kw.pop("contents", False):
        inp.contents.fp32_contents.extend(x.ravel().tolist())
    else:
        req.raw_input_contents.append(x.astype("<f4").tobytes())
    for k, v in kw.items():
        if isinstance(v, int):
            req.parameters[k].int64_param = v
        else:
            req.parameters[k].double_param = v
    return req


# --- a request cannot stop inference ------------------------------------------------------------------
@pytest.mark.parametrize("timeout, status, needle", [
    (3000000000000, 200, None),            # longer than the server's deadline: cut to it
    ("NaN", 400, "timeout"), ("Infinity", 400, "timeout"), ("-Infinity", 400, "timeout"),
    ("abc", 400, "timeout"), (-5, 400, "timeout"), (0, 400, "timeout"), (True, 400, "timeout"),
    ([1], 400, "timeout"), (1e308, 200, None),
])
def test_any_timeout_parameter_leaves_every_worker_serving(server, session, timeout, status, needle):
    body = _body().decode()
    body = body[:-1] + ', "parameters": {"timeout": ' + (timeout if isinstance(timeout, str) and timeout[0] in "NI-"
                                                          else json.dumps(timeout)) + "}}"
    for _ in range(3):                     # more than one per worker
        code, data = _post(server.http.port, body.encode())
        assert code == status, data
        if needle:
            assert needle in _error(data)
    assert all(s.thread.is_alive() for s in server.service.pool._slots)
    assert _get(server.http.port, "/v2/health/ready")[0] == 200
    _ok(server, session)


@pytest.mark.parametrize("params, needle", [
    ({"sequence_id": 3}, "sequence"), ({"priority": -1}, "priority"), ({"priority": "high"}, "priority"),
    ({"binary_data_output": "yes"}, "binary_data_output"), ({"surprise": 1}, "surprise"),
])
def test_every_request_parameter_is_validated(server, params, needle):
    code, data = _post(server.http.port, _body(**params))
    assert code == 400 and needle in _error(data)


def test_output_and_input_parameters_are_validated(server):
    x = _x()
    base = {"inputs": [{"name": "data", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": x.ravel().tolist()}]}
    for outputs, needle in [([{"name": "fc1", "parameters": {"classification": 0}}], "classification"),
                            ([{"name": "fc1", "parameters": {"binary_data": 1}}], "binary_data"),
                            ([{"name": "nope"}], "unknown output"), ([{"nam": "fc1"}], "outputs"), ("fc1", "outputs")]:
        code, data = _post(server.http.port, json.dumps({**base, "outputs": outputs}).encode())
        assert code == 400 and needle in _error(data), (outputs, data)
    spec = dict(base["inputs"][0], parameters={"shared_memory_region": "r"})
    code, data = _post(server.http.port, json.dumps({"inputs": [spec]}).encode())
    assert code == 400 and "shared memory" in _error(data)


def test_grpc_timeout_and_parameters_are_validated(server, session):
    channel, stub = _grpc_stub(server)
    try:
        for params, code in [({"timeout": 3000000000000}, None), ({"timeout": -1}, grpc.StatusCode.INVALID_ARGUMENT),
                             ({"timeout": float("nan")}, grpc.StatusCode.INVALID_ARGUMENT),
                             ({"sequence_id": 1}, grpc.StatusCode.INVALID_ARGUMENT)]:
            for _ in range(3):
                if code is None:
                    stub.ModelInfer(_grpc_request(**params), timeout=30)
                else:
                    with pytest.raises(grpc.RpcError) as e:
                        stub.ModelInfer(_grpc_request(**params), timeout=30)
                    assert e.value.code() == code
        x = _x(3)
        r = stub.ModelInfer(_grpc_request(x), timeout=30)
        y = np.frombuffer(r.raw_output_contents[0], "<f4")
        assert np.array_equal(y, session.score_numpy_array(x).output.ravel())
    finally:
        channel.close()


def test_a_feeder_thread_survives_an_unexpected_exception(server, session):
    pool = server.service.pool
    with pytest.raises(RuntimeError, match="internal error"):
        pool.submit("tensor", lambda: None, 30.0).result(timeout=60)      # cannot be sent to a worker
    with pytest.raises(ValueError):
        pool.submit("tensor", _x(), float("nan"))                          # refused before it is queued
    assert pool.admitted == 0
    deadline = time.monotonic() + 60
    while pool.healthy() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(s.thread.is_alive() for s in pool._slots) and pool.healthy() == 2
    _ok(server, session)


def test_readiness_follows_the_workers_and_the_service_recovers_by_itself(program, session):
    srv = Server(program, http_port=0, grpc_port=0, workers=1, queue_size=4).start()
    try:
        port, pool = srv.http.port, srv.service.pool
        assert _get(port, "/v2/health/ready")[0] == 200
        good = pool.program_path
        pool.program_path = str(program) + ".missing"          # the replacement cannot start ...
        os.kill(pool._slots[0].worker.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while pool._slots[0].state != "failed" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _get(port, "/v2/health/ready")[0] == 503           # ... and readiness says so
        assert not grpcclient.InferenceServerClient(f"127.0.0.1:{srv.grpc.port}").is_server_ready()
        code, data = _post(port, _body())
        assert code == 503 and "no simulator worker" in _error(data)
        pool.program_path = good                                  # the next retry succeeds, unattended
        deadline = time.monotonic() + 60
        while _get(port, "/v2/health/ready")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _get(port, "/v2/health/ready")[0] == 200
        _ok(srv, session)
    finally:
        srv.stop()


def test_a_program_that_cannot_load_fails_start_quickly(tmp_path):
    bad = tmp_path / "bad.npuz"
    small_program(bad)
    srv = Server(bad, http_port=0, grpc_port=0, workers=1)
    bad.write_bytes(b"not a program")                          # loadable by the parent, not by the worker
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="did not become ready"):
        srv.start(wait_ready=60)
    assert time.monotonic() - t0 < 30


# --- binding, authentication, TLS, ports in use -----------------------------------------------------
def test_loopback_is_the_default(program):
    import inspect

    from npu_toolkit.cli import build_parser

    assert inspect.signature(Server).parameters["host"].default == "127.0.0.1"
    assert build_parser().parse_args(["serve", "p.npuz"]).host == "127.0.0.1"
    srv = Server(program, http_port=0, grpc_port=0, workers=1)
    try:
        assert srv.http.host == "127.0.0.1"
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"openssl cannot make a test certificate: {exc}")
    return str(cert), str(key)


@pytest.fixture(scope="module")
def secure_server(program, tls_files):
    cert, key = tls_files
    srv = Server(program, http_port=0, grpc_port=0, workers=1, token="s3cret-token", certfile=cert,
                 keyfile=key).start()
    yield srv
    srv.stop()


def test_token_and_tls_over_http(secure_server, tls_files, session):
    cert, _ = tls_files
    ctx = ssl.create_default_context(cafile=cert)
    port = secure_server.http.port
    x = _x(4)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
        code, data = _post(port, _body(x), headers, context=ctx)
        assert code == 401 and "token" in _error(data)
    code, data = _post(port, _body(x), {"Authorization": "Bearer s3cret-token"}, context=ctx)
    assert code == 200
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
    conn.request("GET", "/v2/health/ready")                 # probes stay open
    assert conn.getresponse().status == 200
    conn.close()
    with pytest.raises(ssl.SSLError):                        # TLS: the server's certificate is checked
        _post(port, _body(x), context=ssl.create_default_context())
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        _post(port, _body(x))                                # plain HTTP is not served
    c = httpclient.InferenceServerClient(f"127.0.0.1:{port}", ssl=True, ssl_options={"ca_certs": cert})
    with pytest.raises(InferenceServerException, match="401|token"):
        c.get_model_metadata(MODEL)
    inp = httpclient.InferInput("data", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    y = c.infer(MODEL, [inp], headers={"Authorization": "Bearer s3cret-token"}).as_numpy("fc1")
    assert np.array_equal(y, session.score_numpy_array(x).output)
    c.close()


def test_token_and_tls_over_grpc(secure_server, tls_files, session):
    cert, _ = tls_files
    port = secure_server.grpc.port
    x = _x(5)
    c = grpcclient.InferenceServerClient(f"127.0.0.1:{port}", ssl=True, root_certificates=cert)
    assert c.is_server_live()
    inp = grpcclient.InferInput("data", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
        c.infer(MODEL, [inp])
    with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
        c.infer(MODEL, [inp], headers={"authorization": "Bearer nope"})
    y = c.infer(MODEL, [inp], headers={"authorization": "Bearer s3cret-token"}).as_numpy("fc1")
    assert np.array_equal(y, session.score_numpy_array(x).output)
    c.close()
    client = PredictionClient("127.0.0.1", port, use_ssl=True, access_token="s3cret-token", root_certificates=cert)
    assert np.array_equal(client.score_numpy_array(x), session.score_numpy_array(x).output)
    client.close()
    t0 = time.perf_counter()
    bad = PredictionClient("127.0.0.1", port, use_ssl=True, access_token="wrong", root_certificates=cert,
                           service_name=MODEL)
    with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
        bad.score_numpy_array(x, input_name="data")
    assert time.perf_counter() - t0 < 2.0                    # not retried
    bad.close()
    assert _metric(secure_server, "unauthenticated") >= 5


def test_a_port_in_use_is_refused_with_its_address(program):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(ListenError, match=rf"127\.0\.0\.1:{port} \(HTTP\).*in use"):
            Server(program, http_port=port, grpc_port=0, workers=1)
        with pytest.raises(ListenError, match=rf"127\.0\.0\.1:{port} \(gRPC\)"):
            Server(program, http_port=0, grpc_port=port, workers=1)
        assert issubclass(ListenError, OSError)
    finally:
        taken.close()
    first = Server(program, http_port=0, grpc_port=0, workers=1)     # a second server on a running one's gRPC port
    try:
        with pytest.raises(ListenError, match="gRPC"):
            Server(program, http_port=0, grpc_port=first.grpc.port, workers=1)
        with pytest.raises(ListenError, match="HTTP"):
            Server(program, http_port=first.http.port, grpc_port=0, workers=1)
    finally:
        first.stop()


@pytest.mark.parametrize("which", ["--port", "--grpc-port"])
def test_npu_serve_refuses_a_port_in_use_with_status_2(program, which):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    other = "--grpc-port" if which == "--port" else "--port"
    try:
        proc = subprocess.run([sys.executable, "-m", "npu_toolkit.cli", "serve", str(program), which, str(port),
                               other, "0", "--workers", "1"], capture_output=True, text=True, timeout=120)
    finally:
        taken.close()
    assert proc.returncode == 2, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stderr


# --- memory bounded before it is spent ----------------------------------------------------------------
def test_oversized_bodies_are_refused_from_their_headers_alone(server):
    port = server.http.port
    for headers, status, needle in [
            (f"Content-Length: {57 << 20}\r\n", b" 413 ", b"--max-body"),
            (f"Content-Length: {900 << 10}\r\nInference-Header-Content-Length: {2 << 20}\r\n", b" 400 ",
             b"Inference-Header-Content-Length")]:
        t0 = time.monotonic()
        out = _raw(port, f"POST {INFER} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode(), timeout=5)
        assert time.monotonic() - t0 < 4, "the server waited for a body it should refuse unread"
        assert status in out and needle in out, out[:300]


def test_json_parts_over_the_json_limit_are_refused_unread(program):
    srv = Server(program, http_port=0, grpc_port=0, workers=1,
                 limits=Limits(max_body=64 << 20, max_json=1 << 20)).start()
    try:
        port = srv.http.port
        rss0, _ = rss_bytes()
        out = []

        def send():   # the issue's 57 MB JSON bodies, four at once
            out.append(_raw(port, f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {57 << 20}\r\n\r\n"
                            .encode() + b"[" * 4096, timeout=10))

        threads = [threading.Thread(target=send) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(b" 413 " in o and b"--max-json" in o for o in out), out
        assert rss_bytes()[0] - rss0 < 64 << 20
        assert srv.service.max_json == 1 << 20
    finally:
        srv.stop()


def test_bodies_in_memory_are_bounded_and_admission_comes_first(server, session):
    port = server.http.port
    half = 800 << 10                                  # two fit the 2 MiB budget, the third does not
    held = []
    try:
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {half}\r\n\r\n".encode() + b"{")
            held.append(s)
        time.sleep(0.3)
        t0 = time.monotonic()
        out = _raw(port, f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {half}\r\n\r\n".encode(), timeout=3)
        assert b" 503 " in out and b"--body-memory" in out and time.monotonic() - t0 < 2.5
    finally:
        for s in held:
            s.close()
    # a full queue refuses before the body is read
    pool = server.service.pool
    busy = [pool.submit("sleep", 1.5, 30.0) for _ in range(2)]
    time.sleep(0.3)
    queued = [pool.submit("sleep", 0.01, 30.0) for _ in range(pool.queue_size)]
    t0 = time.monotonic()
    out = _raw(port, f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {half}\r\n\r\n".encode(), timeout=3)
    assert b" 503 " in out and b"queue is full" in out and time.monotonic() - t0 < 2.5
    for f in busy + queued:
        f.result(timeout=60)
    _ok(server, session)


# --- connections --------------------------------------------------------------------------------------
def test_slow_and_short_connections_are_closed_and_never_scored(server, session):
    port = server.http.port
    ok_before = _metric(server, "ok")
    threads_before = threading.active_count()
    body = _body()
    socks = []
    for i in range(40):
        s = socket.create_connection(("127.0.0.1", port))
        if i % 2:   # a body shorter than its Content-Length
            s.sendall(f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body) + 10}\r\n\r\n".encode() + body)
        else:       # headers that never end
            s.sendall(f"POST {INFER} HTTP/1.1\r\nHost: x\r\n".encode())
        socks.append(s)
    time.sleep(0.5)
    assert threading.active_count() - threads_before < 5           # connections are not threads
    _ok(server, session)                                            # others are served meanwhile
    time.sleep(4.5)                                                 # read_timeout 2 s, keep_alive 2 s
    closed = 0
    for s in socks:
        s.settimeout(2)
        try:
            while s.recv(65536):
                pass
            closed += 1                     # the server closed it (an error answer at most, never a 200)
        except ConnectionResetError:
            closed += 1
        except socket.timeout:
            pass
        s.close()
    assert closed == len(socks)
    assert _metric(server, "ok") == ok_before + 1                   # only _ok's request was scored
    # a short body whose client stops sending: no answer is scored, the connection ends
    out = _raw(port, f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body) + 10}\r\n\r\n".encode()
               + body, shut=True, timeout=10)
    assert b" 200 " not in out
    assert _metric(server, "ok") == ok_before + 1


def test_a_quiet_client_waiting_longer_than_the_read_timeout_gets_its_answer(program, session, monkeypatch):
    monkeypatch.setenv("NPU_TEST_SLOW_SECONDS", "2.5")           # the workers start with it
    srv = Server(program, http_port=0, grpc_port=0, workers=1, handler=slow_score,
                 limits=Limits(read_timeout=1.0, keep_alive=1.0)).start()
    try:
        t0 = time.monotonic()
        _ok(srv, session)
        assert time.monotonic() - t0 > 2.5
    finally:
        srv.stop()


def test_a_stalled_body_gets_408(server):
    port = server.http.port
    t0 = time.monotonic()
    out = _raw(port, f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{{".encode(), timeout=10)
    assert b" 408 " in out and b"--read-timeout" in out and 1.5 < time.monotonic() - t0 < 5


def test_a_body_that_trickles_in_is_cut_at_the_body_timeout(server):
    port = server.http.port
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode())
    t0 = time.monotonic()
    s.settimeout(0.5)
    out = b""
    while time.monotonic() - t0 < 10:
        try:
            s.sendall(b" ")                      # one byte a second: each read in time, the whole too slow
            chunk = s.recv(1000)
            if not chunk:
                break
            out += chunk
        except socket.timeout:
            continue
        except OSError:
            break
    s.close()
    assert b" 408 " in out and b"--body-timeout" in out and time.monotonic() - t0 < 8


# --- no silent wrong results, 4xx not 500 ---------------------------------------------------------------
def test_non_finite_inputs_are_refused_naming_input_and_count(server):
    x = _x()
    x.ravel()[:3] = [np.nan, np.inf, -np.inf]
    req = {"inputs": [{"name": "data", "datatype": "FP32", "shape": [1, 3, 32, 32],
                       "data": [v if np.isfinite(v) else None for v in x.ravel().tolist()]}]}
    text = json.dumps(req).replace("null", "NaN", 1).replace("null", "Infinity", 1).replace("null", "-Infinity", 1)
    code, data = _post(server.http.port, text.encode())
    assert code == 400 and "'data' holds 3 non-finite values" in _error(data)
    inp = httpclient.InferInput("data", list(x.shape), "FP32")     # binary extension
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException, match="holds 3 non-finite"):
        httpclient.InferenceServerClient(f"127.0.0.1:{server.http.port}").infer(MODEL, [inp])
    for contents in (False, True):                                   # gRPC, raw and typed contents
        channel, stub = _grpc_stub(server)
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(_grpc_request(x, contents=contents), timeout=30)
        channel.close()
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "3 non-finite" in e.value.details()
    big = np.full((1, 3, 32, 32), 1e39)                              # beyond FP32: infinity after conversion
    req = {"inputs": [{"name": "data", "datatype": "FP64", "shape": [1, 3, 32, 32], "data": big.ravel().tolist()}]}
    code, data = _post(server.http.port, json.dumps(req).encode())
    assert code == 400 and "3072 non-finite" in _error(data)


def test_non_finite_outputs_are_refused_not_answered(server):
    x = np.full((1, 3, 32, 32), 1e4, np.float32)                     # finite, outside the program's range
    code, data = _post(server.http.port, _body(x))
    assert code == 400 and "non-finite results" in _error(data) and "fc1" in _error(data)
    channel, stub = _grpc_stub(server)
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(_grpc_request(x), timeout=30)
    channel.close()
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _metric(server, "non_finite_output") >= 2


def test_answers_are_strict_json(server, session):
    code, data = _post(server.http.port, _body(_x(6)))
    assert code == 200 and _strict_json(data)["outputs"][0]["shape"] == [1, 10]


@pytest.mark.parametrize("raw, needle", [
    (f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n".encode(), None),
    (f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n".encode(), None),
    (f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nInference-Header-Content-Length: -1\r\n\r\n{{}}  "
     .encode(), "Inference-Header-Content-Length"),
    (f"POST {INFER} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n".encode(),
     "Content-Length"),
])
def test_malformed_framing_gets_4xx(server, raw, needle):
    out = _raw(server.http.port, raw, timeout=10)
    status = int(out.split(b" ", 2)[1])
    assert 400 <= status < 500, out[:300]
    if needle:
        assert needle.encode() in out


@pytest.mark.parametrize("body, needle", [
    ({"inputs": [{"name": "data", "datatype": "FP32", "shape": [2 ** 62, 2 ** 62], "data": [1.0]}]}, "shape"),
    ({"inputs": [{"name": "data", "datatype": "FP32", "shape": [10 ** 30], "data": [1.0]}]}, "shape"),
    ({"inputs": [{"name": "data", "datatype": "FP32", "shape": [1, -3, 32, 32], "data": [1.0]}]}, "negative"),
    ({"inputs": [{"name": "data", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": [10 ** 100] * 3072}]},
     "numbers"),
    ({"inputs": [{"name": "data", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": ["1"] * 3072}]}, "numbers"),
    ({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["\u20ac"]}]}, "code points"),
    ({"inputs": [{"name": "data", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": [[1.0], [1.0, 2.0]]}]},
     "list of numbers"),
    ({"inputs": [], "id": 5}, "'id'"),
    # found by test_server_fuzz.py against the former server (each was a 500)
    ({"inputs": [], "parameters": [[], [False, True, 20]]}, "'parameters'"),
    ({"inputs": [], "outputs": True}, "'outputs'"),
    ({"inputs": [], "outputs": {"fc1": [1]}}, "'outputs'"),
    ({"inputs": [], "parameters": {"timeout": {"": None}}}, "timeout"),
    ({"inputs": [{"name": "data", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": [None] + [0.0] * 3071}]},
     "numbers"),
    ({"inputs": [{"name": "data", "datatype": "FP32", "shape": 3072, "data": [0.0] * 3072}]}, "shape"),
    ({"inputs": [{"name": "data", "datatype": "FP32", "shape": [None, 3, 32, 32], "data": [0.0] * 3072}]}, "shape"),
    ({"inputs": [{"name": "data", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": 5}]}, "list of numbers"),
])
def test_former_internal_errors_are_400(server, body, needle):
    code, data = _post(server.http.port, json.dumps(body).encode())
    assert code == 400 and needle in _error(data), data


def test_deep_json_nesting_is_400(server):
    code, data = _post(server.http.port, b"[" * 100000 + b"]" * 100000)
    assert code == 400 and "JSON" in _error(data)


def test_grpc_negative_and_overflowing_dims_are_invalid_argument(server):
    channel, stub = _grpc_stub(server)
    try:
        for shape in ([1, -3, 32, 32], [-1], [2 ** 62, 2 ** 62, 4]):
            with pytest.raises(grpc.RpcError) as e:
                stub.ModelInfer(_grpc_request(shape=shape), timeout=30)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (shape, e.value.details())
    finally:
        channel.close()


def test_requests_queued_at_shutdown_get_503_and_unavailable(program):
    srv = Server(program, http_port=0, grpc_port=0, workers=1, queue_size=8, handler=crash_or_sleep).start()
    port, gport = srv.http.port, srv.grpc.port
    busy = srv.service.pool.submit("sleep", 2.0, 30.0)
    time.sleep(0.3)
    answers = []

    def http_call():
        answers.append(("http", _post(port, _body())[0]))

    def grpc_call():
        channel = grpc.insecure_channel(f"127.0.0.1:{gport}")
        try:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(_grpc_request(), timeout=30)
            answers.append(("grpc", "OK"))
        except grpc.RpcError as e:
            answers.append(("grpc", e.code()))
        channel.close()

    threads = [threading.Thread(target=f) for f in (http_call, http_call, grpc_call, grpc_call)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while srv.service.pool.depth < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    srv.stop(grace=5)
    for t in threads:
        t.join(timeout=30)
    busy.result(timeout=1)                          # the running request finished within the grace
    assert sorted(answers, key=str) == sorted([("http", 503)] * 2 + [("grpc", grpc.StatusCode.UNAVAILABLE)] * 2,
                                              key=str)


# --- metrics ------------------------------------------------------------------------------------------
def test_requests_refused_before_the_queue_are_counted(server):
    before = {s: _metric(server, s) for s in ("bad_request", "not_found", "too_large", "length_required")}
    _post(server.http.port, b"{not json")
    _post(server.http.port, b"{}", path="/v2/models/nope/infer")
    _get(server.http.port, "/no/such/path")
    _post(server.http.port, b"x" * (2 << 20))
    _raw(server.http.port, f"POST {INFER} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode(),
         timeout=5)
    assert _metric(server, "bad_request") == before["bad_request"] + 1
    assert _metric(server, "not_found") == before["not_found"] + 2
    assert _metric(server, "too_large") == before["too_large"] + 1
    assert _metric(server, "length_required") == before["length_required"] + 1


def test_unusable_tls_files_are_refused_before_serving(program, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ValueError, match="TLS certificate"):
        Server(program, http_port=0, grpc_port=0, workers=1, certfile=str(bad), keyfile=str(bad))
    with pytest.raises(ValueError, match="both"):
        Server(program, http_port=0, grpc_port=0, workers=1, certfile=str(bad))


def test_npu_serve_flags_token_file_and_limits(program, tmp_path, session):
    token = tmp_path / "token"
    token.write_text("file-token\n")
    proc = subprocess.Popen([sys.executable, "-m", "npu_toolkit.cli", "serve", str(program), "--port", "0",
                             "--grpc-port", "0", "--workers", "1", "--token-file", str(token), "--max-body", "1",
                             "--read-timeout", "3"], stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.time() + 120
        while time.time() < deadline and port is None:
            m = re.search(r"HTTP on :(\d+)", proc.stderr.readline())
            port = int(m.group(1)) if m else None
        assert port, "npu serve did not report its port"
        assert _post(port, _body())[0] == 401
        auth = {"Authorization": "Bearer file-token"}
        code, data = _post(port, b"x" * (2 << 20), auth)
        assert code == 413 and "--max-body" in _error(data)
        x = _x(12)
        code, data = _post(port, _body(x), auth)
        assert code == 200
        assert np.array_equal(np.array(_strict_json(data)["outputs"][0]["data"], np.float32),
                              session.score_numpy_array(x).output.ravel())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_docs_limits_section_and_the_npu_serve_flags_agree():
    from pathlib import Path

    from npu_toolkit.cli import build_parser

    doc = Path(__file__).resolve().parent.parent.joinpath("docs", "architecture.md").read_text()
    section = doc.split("## Limits and safe serving", 1)[1].split("\n## ", 1)[0]
    documented = {f for span in re.findall(r"`([^`]*)`", section) for f in re.findall(r"--[a-z][a-z-]*", span)}
    commands = build_parser()._subparsers._group_actions[0].choices

    def flags_of(command):
        return {o for a in commands[command]._actions for o in a.option_strings if o.startswith("--")} - {"--help"}

    flags = flags_of("serve")
    assert documented <= flags | flags_of("run"), documented - flags - flags_of("run")
    assert flags - documented <= {"--port", "--grpc-port", "--name"}, flags - documented
    defaults = Limits()
    for value in (f"{defaults.max_body >> 20} MiB", f"{defaults.body_memory >> 20} MiB", f"{defaults.backlog}",
                  f"{defaults.read_timeout:g} s", f"{defaults.body_timeout:g} s", f"{defaults.keep_alive:g} s"):
        assert value in section, value
    from npu.isa.encoding import MAX_INSTRUCTIONS
    from npu.npuz import MAX_ARCHIVE_MEMBERS, MAX_DRAM_IMAGE_BYTES, MAX_HEADER_BYTES, MAX_TENSOR_ELEMENTS
    from npu.preprocess import MAX_IMAGE_PIXELS, MAX_RESIZED_PIXELS, MAX_SIDE
    from npu.sim import DEFAULT_CYCLE_BUDGET, DEFAULT_MEMORY_BUDGET
    assert (MAX_INSTRUCTIONS, MAX_TENSOR_ELEMENTS) == (1 << 18, 1 << 28) and "2^18" in section and "2^28" in section
    assert (MAX_HEADER_BYTES, MAX_DRAM_IMAGE_BYTES, MAX_ARCHIVE_MEMBERS) == (4 << 20, 1 << 30, 16)
    assert "4 MiB; 2^18 words; 1 GiB" in section and "| 16; 1 MiB |" in section
    assert (MAX_IMAGE_PIXELS, MAX_RESIZED_PIXELS, MAX_SIDE) == (50_000_000, 4096 * 4096, 4096)
    assert (DEFAULT_MEMORY_BUDGET, DEFAULT_CYCLE_BUDGET) == (2 << 30, 10 ** 9) and "| 2 GiB |" in section
