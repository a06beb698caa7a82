"""Property tests of ``npu serve``'s request handling: whatever arrives, the answer is 2xx or 4xx (never 500,
never a dead feeder thread), and the server keeps serving right answers.

Random KServe-shaped JSON bodies (names, datatypes, shapes, data, parameters, ids, outputs), the binary
tensor extension (header lengths, binary sizes, random blobs), request headers and raw request lines over
HTTP; random ModelInferRequest messages over gRPC.  Every finding became a regression test in
test_server_hardening.py.  NPU_FUZZ_EXAMPLES raises the example count for a longer local run.
"""
import http.client
import json
import os
import socket
import time

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2, service_pb2_grpc

from runtime import Session
from runtime.server import Server
from runtime.server.limits import Limits
from server_doubles import small_program

MODEL = "small"
INFER = f"/v2/models/{MODEL}/infer"
EXAMPLES = int(os.environ.get("NPU_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="NPU_FUZZ_EXAMPLES" not in os.environ,
                database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                      HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    return small_program(tmp_path_factory.mktemp("fuzz") / f"{MODEL}.npuz")


@pytest.fixture(scope="module")
def server(program):
    srv = Server(program, http_port=0, grpc_port=0, workers=2, queue_size=16,
                 limits=Limits(max_body=1 << 20, read_timeout=2.0, body_timeout=5.0, keep_alive=0.5)).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def session(program):
    return Session(program)


def _healthy(server):
    """Every feeder thread alive and every worker back (a replaced one gets a few seconds)."""
    pool = server.service.pool
    assert all(s.thread.is_alive() for s in pool._slots), "a feeder thread died"
    deadline = time.monotonic() + 30
    while pool.healthy() < len(pool._slots) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.healthy() == len(pool._slots)
    assert pool.admitted == 0, "a queue place was not given back"


def _still_right(server, session):
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    conn = http.client.HTTPConnection("127.0.0.1", server.http.port, timeout=30)
    body = json.dumps({"inputs": [{"name": "data", "datatype": "FP32", "shape": [1, 3, 32, 32],
                                   "data": x.ravel().tolist()}]})
    conn.request("POST", INFER, body=body)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    assert resp.status == 200, data
    assert np.array_equal(np.array(json.loads(data)["outputs"][0]["data"], np.float32),
                          session.score_numpy_array(x).output.ravel())


def _allowed(status: int, asked_timeout: bool) -> bool:
    """2xx or 4xx; 504 only when the request set its own (possibly tiny) timeout."""
    return 200 <= status < 300 or 400 <= status < 500 or (status == 504 and asked_timeout)


# --- strategies ---------------------------------------------------------------------------------------
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), FLOATS,
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
ANY_JSON = st.recursive(JSON_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                        max_leaves=12)
NAMES = st.one_of(st.sampled_from(["data", "images", "fc1", ""]), st.text(max_size=6), JSON_SCALARS)
DTYPES = st.one_of(st.sampled_from(["FP32", "FP16", "FP64", "BYTES", "INT32", "UINT8", "BOOL", "fp32"]),
                   JSON_SCALARS)
DIMS = st.one_of(st.sampled_from([[1, 3, 32, 32], [3, 32, 32], [1], [], [1, 3, 32, 31], [0]]),
                 st.lists(st.one_of(st.integers(-3, 40), st.integers(-2 ** 66, 2 ** 66)), max_size=5),
                 ANY_JSON)
PARAM_KEYS = st.sampled_from(["timeout", "priority", "binary_data_output", "binary_data", "binary_data_size",
                              "sequence_id", "classification", "shared_memory_region", "x"])
PARAMS = st.one_of(st.none(), ANY_JSON, st.dictionaries(PARAM_KEYS, ANY_JSON, max_size=3))


def _good_data(rng_seed: int, scale: float) -> list:
    return (np.random.default_rng(rng_seed).standard_normal(3072) * scale).astype(np.float32).tolist()


@st.composite
def tensors(draw):
    spec = {}
    if draw(st.booleans()):
        spec["name"] = draw(NAMES)
    else:
        spec["name"] = "data"
    spec["datatype"] = draw(DTYPES) if draw(st.integers(0, 3)) == 0 else "FP32"
    spec["shape"] = draw(DIMS) if draw(st.integers(0, 2)) == 0 else [1, 3, 32, 32]
    kind = draw(st.integers(0, 5))
    if kind == 0:
        spec["data"] = _good_data(draw(st.integers(0, 99)), draw(st.sampled_from([1.0, 1e3, 1e30])))
    elif kind == 1:
        data = _good_data(draw(st.integers(0, 99)), 1.0)
        for _ in range(draw(st.integers(1, 3))):
            data[draw(st.integers(0, 3071))] = draw(JSON_SCALARS)
        spec["data"] = data
    elif kind == 2:
        spec["data"] = draw(ANY_JSON)
    elif kind == 3:
        spec["data"] = draw(st.lists(st.text(max_size=5), max_size=3))
    elif kind == 4:
        pass                                   # no data
    else:
        spec["data"] = [draw(st.lists(FLOATS, min_size=0, max_size=3)) for _ in range(draw(st.integers(0, 3)))]
    if draw(st.integers(0, 3)) == 0:
        spec["parameters"] = draw(PARAMS)
    for _ in range(draw(st.integers(0, 1))):
        spec[draw(st.text(max_size=4))] = draw(JSON_SCALARS)
    return spec


@st.composite
def requests(draw):
    """(body bytes, headers dict, whether a timeout parameter was set)."""
    if draw(st.integers(0, 9)) == 0:
        req = draw(ANY_JSON)
    else:
        req = {"inputs": draw(st.lists(tensors(), min_size=0, max_size=2)) if draw(st.integers(0, 5))
               else draw(ANY_JSON)}
        if draw(st.booleans()):
            req["parameters"] = draw(PARAMS)
        if draw(st.integers(0, 3)) == 0:
            req["outputs"] = draw(st.one_of(ANY_JSON, st.lists(st.fixed_dictionaries(
                {"name": NAMES}, optional={"parameters": PARAMS}), max_size=2)))
        if draw(st.integers(0, 3)) == 0:
            req["id"] = draw(JSON_SCALARS)
    text = json.dumps(req, allow_nan=True).encode()
    headers = {}
    if draw(st.integers(0, 2)) == 0:          # the binary extension: a blob after the JSON
        blob = draw(st.one_of(st.binary(max_size=64),
                              st.just(np.random.default_rng(0).standard_normal(3072).astype("<f4").tobytes())))
        hl = draw(st.one_of(st.just(len(text)), st.integers(-5, len(text) + len(blob) + 5),
                              st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=5)))
        headers["Inference-Header-Content-Length"] = str(hl)
        text += blob
    if draw(st.integers(0, 4)) == 0:
        headers[draw(st.sampled_from(["Content-Type", "Authorization", "Accept", "X-Any", "Expect"]))] = \
            draw(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20))
    timed = isinstance(req, dict) and isinstance(req.get("parameters"), dict) and "timeout" in req["parameters"]
    return text, headers, timed


# --- HTTP -------------------------------------------------------------------------------------------------
@FUZZ
@given(r=requests())
def test_http_any_request_gets_2xx_or_4xx(server, r):
    body, headers, timed = r
    conn = http.client.HTTPConnection("127.0.0.1", server.http.port, timeout=30)
    try:
        conn.request("POST", INFER, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    assert _allowed(resp.status, timed), (resp.status, data[:300])
    if resp.status >= 400:
        assert "error" in json.loads(data)
    else:
        parsed = json.loads(data[:int(resp.getheader("Inference-Header-Content-Length") or len(data))],
                            parse_constant=lambda c: pytest.fail(f"bare {c} in the answer"))
        assert parsed["model_name"] == MODEL
    _healthy(server)


PATHS = st.one_of(st.sampled_from([INFER, "/v2/models/small", "/v2/models/small/ready", "/v2/health/ready",
                                   "/v2", "/metrics", "/v2/models/small/versions/1/infer",
                                   "/v2/models/small/versions/2/infer", "/v2/models/%73mall/infer", "//", "/v2/models/"
                                   ]),
                  st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=30).map(lambda s: "/" + s))
METHODS = st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "get", "BREW"])


@FUZZ
@given(method=METHODS, path=PATHS, body=st.binary(max_size=64),
       headers=st.lists(st.tuples(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)
                                  .filter(lambda k: ":" not in k),
                                  st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20)),
                        max_size=3),
       length=st.one_of(st.none(), st.integers(-3, 80), st.text(max_size=4)))
def test_http_raw_request_lines_and_headers(server, method, path, body, headers, length):
    lines = [f"{method} {path} HTTP/1.1", "Host: x"]
    lines += [f"{k}: {v}" for k, v in headers if k.lower() not in ("content-length", "transfer-encoding", "host")]
    if length is None:
        length = len(body)
    lines.append(f"Content-Length: {length}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body
    s = socket.create_connection(("127.0.0.1", server.http.port), timeout=15)
    out = b""
    try:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (ConnectionResetError, socket.timeout, BrokenPipeError):
        pass
    finally:
        s.close()
    if out:                                   # some garbage just gets the connection closed
        status = int(out.split(b" ", 2)[1])
        assert status < 500, out[:300]
    _healthy(server)


def test_http_fuzz_leaves_the_server_right(server, session):
    _still_right(server, session)
    text = server.service.metrics().decode()
    assert 'status="error"' not in text


# --- gRPC -------------------------------------------------------------------------------------------------
INT64 = st.integers(-2 ** 63, 2 ** 63 - 1)
SMALL_DIMS = st.one_of(st.sampled_from([[1, 3, 32, 32], [3, 32, 32], [1], [], [1, 3, 32, 31], [0], [-1]]),
                       st.lists(st.one_of(st.integers(-3, 40), INT64), max_size=5))


@st.composite
def grpc_requests(draw):
    req = service_pb2.ModelInferRequest(
        model_name=draw(st.sampled_from([MODEL, MODEL, MODEL, "nope", ""])),
        model_version=draw(st.sampled_from(["", "", "1", "2", "x"])), id=draw(st.text(max_size=5)))
    timed = False
    for key in draw(st.lists(PARAM_KEYS, max_size=2, unique=True)):
        p = req.parameters[key]
        which = draw(st.sampled_from(["bool_param", "int64_param", "string_param", "double_param", "uint64_param"]))
        value = {"bool_param": st.booleans(), "int64_param": INT64, "string_param": st.text(max_size=5),
                 "double_param": st.floats(allow_nan=True, allow_infinity=True),
                 "uint64_param": st.integers(0, 2 ** 64 - 1)}[which]
        setattr(p, which, draw(value))
        timed = timed or key == "timeout"
    raw_mode = draw(st.integers(0, 2))
    for _ in range(draw(st.integers(0, 2)) if draw(st.integers(0, 4)) == 0 else 1):
        inp = req.inputs.add()
        inp.name = draw(st.sampled_from(["data", "data", "images", "x", ""]))
        inp.datatype = draw(st.sampled_from(["FP32", "FP32", "FP16", "FP64", "BYTES", "INT32", "", "fp32"]))
        shape = draw(SMALL_DIMS) if draw(st.integers(0, 2)) == 0 else [1, 3, 32, 32]
        inp.shape.extend(shape)
        if draw(st.integers(0, 4)) == 0:
            inp.parameters[draw(PARAM_KEYS)].int64_param = draw(INT64)
        if raw_mode == 0:
            x = np.random.default_rng(draw(st.integers(0, 9))).standard_normal(3072).astype("<f4")
            if draw(st.booleans()):
                x[draw(st.integers(0, 3071))] = draw(FLOATS)
            req.raw_input_contents.append(x.tobytes()[:draw(st.sampled_from([12288, 12288, 12284, 0, 4]))])
        elif raw_mode == 1:
            req.raw_input_contents.append(draw(st.binary(max_size=40)))
        else:
            c = inp.contents
            kind = draw(st.integers(0, 3))
            if kind == 0:
                c.fp32_contents.extend(draw(st.lists(FLOATS, max_size=8)) if draw(st.booleans())
                                       else np.random.default_rng(0).standard_normal(3072).astype(np.float32).tolist())
            elif kind == 1:
                c.fp64_contents.extend(draw(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4)))
            elif kind == 2:
                c.bytes_contents.extend(draw(st.lists(st.binary(max_size=8), max_size=2)))
            else:
                c.int_contents.extend(draw(st.lists(st.integers(-2 ** 31, 2 ** 31 - 1), max_size=4)))
    if draw(st.integers(0, 3)) == 0:
        out = req.outputs.add()
        out.name = draw(st.sampled_from(["fc1", "nope", ""]))
        if draw(st.booleans()):
            out.parameters[draw(PARAM_KEYS)].bool_param = draw(st.booleans())
    return req, timed


ALLOWED_GRPC = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}


@FUZZ
@given(r=grpc_requests())
def test_grpc_any_request_gets_ok_or_a_client_error(server, r):
    req, timed = r
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc.port}")
    try:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(req, timeout=30)
    except grpc.RpcError as e:
        allowed = ALLOWED_GRPC | ({grpc.StatusCode.DEADLINE_EXCEEDED} if timed else set())
        assert e.code() in allowed, (e.code(), e.details())
    finally:
        channel.close()
    _healthy(server)


def test_grpc_fuzz_leaves_the_server_right(server, session):
    _still_right(server, session)
    assert 'status="error"' not in server.service.metrics().decode()
