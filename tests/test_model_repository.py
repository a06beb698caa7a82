"""``npu serve REPO_DIR``: a model repository (``REPO/NAME/VERSION/<file>``) with Triton's repository extension.

Checked with the real tritonclient package, over HTTP and gRPC: the index, load and unload, per-version
metadata, readiness and inference; unloading and reloading a model under traffic never drops, hangs or
changes an answer (every answer equals in-process ``Session`` scoring bit for bit, every refusal says the model
is not loaded) and leaves the other models alone; the workers' Session caches stay within their memory budget
(least recently used evicted, counted); token auth covers the repository endpoints; names that could leave the
repository are refused.
"""
import http.client
import json
import re
import shutil
import signal
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

from compiler.compile import compile_model
from compiler.models import nets
from runtime import Session
from runtime.server import Limits, Server
from runtime.server.service import ModelVersion
from server_doubles import slow_score


def _compile(path, seed):
    compile_model(nets.resnet_small(seed=seed), "tiny", "ms-fp9").save(path)
    return path


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    d = tmp_path_factory.mktemp("programs")
    return {seed: _compile(d / f"net{seed}.npuz", seed) for seed in (0, 1, 2)}


@pytest.fixture(scope="module")
def sessions(programs):
    return {seed: Session(p) for seed, p in programs.items()}


def _place(repo, name, version, program, filename="model.npuz"):
    d = repo / name / str(version)
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(program, d / filename)
    return d / filename


@pytest.fixture(scope="module")
def repo(tmp_path_factory, programs):
    """A: versions 1 (seed 0) and 2 (seed 1); B: version 1 (seed 2); C: version 3 (seed 0, rewritten by a test);
    broken: a version without a program file; a directory that is no version is ignored."""
    root = tmp_path_factory.mktemp("repo")
    _place(root, "A", 1, programs[0])
    _place(root, "A", 2, programs[1])
    _place(root, "B", 1, programs[2])
    _place(root, "C", 3, programs[0])
    (root / "broken" / "1").mkdir(parents=True)
    (root / "A" / "notes").mkdir()
    return root


@pytest.fixture(scope="module")
def server(repo):
    srv = Server(repo, http_port=0, grpc_port=0, workers=2, queue_size=32).start()
    yield srv
    srv.stop()


def _x(seed=0):
    return np.random.default_rng(seed).standard_normal((1, 3, 32, 32)).astype(np.float32)


def _http(srv, **kw):
    return httpclient.InferenceServerClient(f"127.0.0.1:{srv.http.port}", **kw)


def _grpc(srv):
    return grpcclient.InferenceServerClient(f"127.0.0.1:{srv.grpc.port}")


def _infer_http(client, name, x, version=""):
    inp = httpclient.InferInput("data", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return client.infer(name, [inp], model_version=version).as_numpy("fc1")


def _infer_grpc(client, name, x, version=""):
    inp = grpcclient.InferInput("data", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return client.infer(name, [inp], model_version=version, client_timeout=60).as_numpy("fc1")


def _request(srv, method, path, body=b"", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", srv.http.port, timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def _rows(index):
    return {(r["name"], r["version"]): (r["state"], r.get("reason", "")) for r in index}


# --- index, versions, metadata --------------------------------------------------------------------------
def test_index_lists_every_version_with_its_state_over_http_and_grpc(server):
    rows = _rows(_http(server).get_model_repository_index())
    assert rows[("A", "1")] == ("READY", "") and rows[("A", "2")] == ("READY", "") and rows[("B", "1")][0] == "READY"
    state, reason = rows[("broken", "1")]
    assert state == "UNAVAILABLE" and "no program file" in reason
    assert not any(n == "A" and v == "notes" for n, v in rows)
    g = _grpc(server).get_model_repository_index(as_json=True)["models"]
    grows = {(r["name"], r.get("version", "")): r.get("state") for r in g}
    assert grows[("A", "2")] == "READY" and grows[("broken", "1")] == "UNAVAILABLE"
    ready = _rows(_http(server).get_model_repository_index())
    code, data = _request(server, "POST", "/v2/repository/index", json.dumps({"ready": True}).encode())
    assert code == 200 and all(r["state"] == "READY" for r in json.loads(data))
    assert {(r["name"], r["version"]) for r in json.loads(data)} == {k for k, v in ready.items() if v[0] == "READY"}


def test_versions_readiness_metadata_and_inference(server, sessions):
    h, g = _http(server), _grpc(server)
    for c in (h, g):
        assert c.is_model_ready("A") and c.is_model_ready("A", "1") and c.is_model_ready("A", "2")
        assert c.is_model_ready("B", "1") and not c.is_model_ready("broken") and not c.is_model_ready("nope")
    assert h.get_model_metadata("A")["versions"] == ["1", "2"]
    assert h.get_model_metadata("A", "1")["versions"] == ["1"]
    assert g.get_model_metadata("A", "2").versions == ["2"]
    x = _x(1)
    v1, v2, b = (sessions[s].score_numpy_array(x).output for s in (0, 1, 2))
    assert not np.array_equal(v1, v2)
    for infer, c in ((_infer_http, h), (_infer_grpc, g)):
        assert np.array_equal(infer(c, "A", x), v2)             # the highest version is the default
        assert np.array_equal(infer(c, "A", x, "2"), v2)
        assert np.array_equal(infer(c, "A", x, "1"), v1)
        assert np.array_equal(infer(c, "B", x), b)
    resp = g.infer("A", [_ginput(x)], model_version="1")
    assert resp.get_response().model_version == "1"
    code, data = _request(server, "POST", "/v2/models/A/versions/1/infer", _json_body(x))
    assert code == 200 and json.loads(data)["model_version"] == "1"


def _ginput(x):
    inp = grpcclient.InferInput("data", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def _json_body(x):
    return json.dumps({"inputs": [{"name": "data", "datatype": "FP32", "shape": list(x.shape),
                                   "data": x.ravel().tolist()}]}).encode()


def test_unknown_names_and_versions_get_404_naming_them_and_traversal_is_refused(server, repo):
    for path in ("/v2/models/nope/versions/1/infer", "/v2/models/nope"):
        code, data = _request(server, "GET" if path.endswith("nope") else "POST", path, b"{}")
        assert code == 404 and "'nope'" in json.loads(data)["error"]
    for v in ("7", "abc", "01", "0"):
        code, data = _request(server, "POST", f"/v2/models/A/versions/{v}/infer", _json_body(_x()))
        assert code == 404 and f"no version '{v}'" in json.loads(data)["error"], data
        code, _ = _request(server, "GET", f"/v2/models/A/versions/{v}/ready")
        assert code == 404
    code, data = _request(server, "POST", "/v2/repository/models/nope/load")
    assert code == 404 and "'nope'" in json.loads(data)["error"]
    code, data = _request(server, "POST", "/v2/repository/models/nope/unload")
    assert code == 404 and "'nope'" in json.loads(data)["error"]
    (repo.parent / "outside").mkdir(exist_ok=True)
    for bad in ("..", "%2E%2E", "..%2Foutside", "%2E%2E%2Foutside", ".hidden"):
        code, data = _request(server, "POST", f"/v2/repository/models/{bad}/load")
        assert code == 404, (bad, code, data)
    g = _grpc(server)
    for bad in ("../outside", "..", "A/../B", "/etc"):
        with pytest.raises(InferenceServerException, match="invalid model name"):
            g.load_model(bad)
        with pytest.raises(InferenceServerException, match="NOT_FOUND"):
            g.unload_model(bad)
    with pytest.raises(InferenceServerException, match="nope"):
        _http(server).load_model("nope")
    with pytest.raises(InferenceServerException, match="invalid model name"):
        g.infer("../A", [_ginput(_x())])
    code, data = _request(server, "POST", "/v2/repository/models/A/load",
                          json.dumps({"parameters": {"config": "{}"}}).encode())
    assert code == 400 and "repository only" in json.loads(data)["error"]
    code, _ = _request(server, "GET", "/v2/repository/index")
    assert code == 405
    assert _http(server).is_model_ready("A")


def test_a_model_that_fails_to_load_is_unavailable_with_its_reason(server):
    with pytest.raises(InferenceServerException, match="no program file"):
        _http(server).load_model("broken")
    with pytest.raises(InferenceServerException, match="no program file"):
        _grpc(server).load_model("broken")
    code, data = _request(server, "POST", "/v2/models/broken/infer", _json_body(_x()))
    assert code == 404 and "no loaded version" in json.loads(data)["error"]


# --- load and unload ------------------------------------------------------------------------------------
def test_unload_refuses_new_requests_clearly_and_load_serves_again(server, sessions):
    h, g = _http(server), _grpc(server)
    x = _x(3)
    try:
        h.unload_model("A")
        assert not h.is_model_ready("A") and not g.is_model_ready("A", "1")
        rows = _rows(h.get_model_repository_index())
        assert rows[("A", "1")] == ("UNAVAILABLE", "unloaded") and rows[("A", "2")] == ("UNAVAILABLE", "unloaded")
        code, data = _request(server, "POST", "/v2/models/A/infer", _json_body(x))
        assert code == 404 and "not loaded" in json.loads(data)["error"]
        with pytest.raises(InferenceServerException, match="UNAVAILABLE.*not loaded"):
            _infer_grpc(g, "A", x)
        assert np.array_equal(_infer_http(h, "B", x), sessions[2].score_numpy_array(x).output)
        h.unload_model("A")                                     # again: no harm
    finally:
        g.load_model("A")
    assert h.is_model_ready("A") and g.is_model_ready("A", "2")
    assert np.array_equal(_infer_grpc(g, "A", x), sessions[1].score_numpy_array(x).output)


def test_unload_and_reload_under_traffic_never_drop_hang_or_change_an_answer(server, sessions):
    xs = [_x(100 + i) for i in range(4)]
    expected = {name: [sessions[seed].score_numpy_array(x).output for x in xs] for name, seed in (("A", 1), ("B", 2))}
    stop = threading.Event()
    results = {"A": [], "B": []}
    problems = []

    def client(name, proto, results_list):
        c = _http(server, network_timeout=120) if proto == "http" else _grpc(server)
        i = 0
        try:
            while not stop.is_set():
                k = i % len(xs)
                i += 1
                try:
                    y = (_infer_http if proto == "http" else _infer_grpc)(c, name, xs[k])
                except InferenceServerException as exc:
                    text = str(exc)
                    if "not loaded" in text:
                        results_list.append("not loaded")
                    else:
                        problems.append(f"{name}/{proto}: {text}")
                    continue
                if np.array_equal(y, expected[name][k]):
                    results_list.append("ok")
                else:
                    problems.append(f"{name}/{proto}: a wrong answer")
        except Exception as exc:      # anything else (a hang ends in the client's timeout) is a failure
            problems.append(f"{name}/{proto}: {type(exc).__name__}: {exc}")
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(n, p, results[n])) for n in ("A", "B") for p in ("http", "grpc")]
    threads += [threading.Thread(target=client, args=("A", "http", results["A"]))]
    for t in threads:
        t.start()
    admin = _http(server)
    gadmin = _grpc(server)
    try:
        for i in range(6):
            time.sleep(0.4)
            (admin if i % 2 else gadmin).unload_model("A")
            time.sleep(0.4)
            (admin if i % 2 else gadmin).load_model("A")
        time.sleep(0.4)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=180)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert not problems, problems[:5]
    assert results["A"].count("ok") > 0 and results["A"].count("not loaded") > 0, results["A"][:20]
    assert results["B"] and set(results["B"]) == {"ok"}       # B never noticed
    text = server.service.metrics().decode()
    assert re.search(r'npu_requests_total\{model="A",status="not_loaded"\} [1-9]', text)
    assert re.search(r'npu_requests_total\{model="B",status="ok"\} [1-9]', text)


def test_a_reload_picks_up_the_new_file_and_a_changed_file_is_never_served_unloaded(server, repo, programs,
                                                                                     sessions):
    h = _http(server)
    x = _x(5)
    assert np.array_equal(_infer_http(h, "C", x), sessions[0].score_numpy_array(x).output)
    shutil.copy(programs[2], repo / "C" / "3" / "model.npuz")              # a new file, not loaded yet
    try:
        y = _infer_http(h, "C", x)                                          # a worker that holds the old one
        assert np.array_equal(y, sessions[0].score_numpy_array(x).output)
    except InferenceServerException as exc:                                # one that would load the new file
        assert "changed on disk" in str(exc)
    h.load_model("C")
    for _ in range(4):                                                      # every worker: the new program
        assert np.array_equal(_infer_http(h, "C", x), sessions[2].score_numpy_array(x).output)


def test_a_new_model_directory_is_served_once_loaded(server, repo, programs, sessions):
    h = _http(server)
    _place(repo, "D", 1, programs[2])
    assert _rows(h.get_model_repository_index())[("D", "")] == ("UNAVAILABLE", "not loaded")
    code, data = _request(server, "POST", "/v2/models/D/infer", _json_body(_x()))
    assert code == 404 and "not loaded" in json.loads(data)["error"]
    h.load_model("D")
    x = _x(6)
    assert np.array_equal(_infer_http(h, "D", x), sessions[2].score_numpy_array(x).output)
    _grpc(server).unload_model("D")
    assert not h.is_model_ready("D")


# --- an admitted request survives its model's unload ------------------------------------------------------
def test_an_admitted_request_is_answered_after_its_model_is_unloaded(repo, sessions, monkeypatch):
    monkeypatch.setenv("NPU_TEST_SLOW_SECONDS", "1.5")          # the workers take 1.5 s per request
    srv = Server(repo, http_port=0, grpc_port=0, workers=1, queue_size=8, handler=slow_score).start()
    try:
        x = _x(7)
        answers = []

        def call():
            answers.append(_infer_http(_http(srv, network_timeout=60), "B", x))

        threads = [threading.Thread(target=call) for _ in range(2)]      # one running, one queued
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while srv.service.pool.depth < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.service.pool.depth == 1
        _http(srv).unload_model("B")
        with pytest.raises(InferenceServerException, match="not loaded"):
            _infer_http(_http(srv), "B", x)
        for t in threads:
            t.join(timeout=60)
        assert len(answers) == 2 and all(np.array_equal(a, sessions[2].score_numpy_array(x).output)
                                         for a in answers)
    finally:
        srv.stop()


# --- shared workers, memory budget -----------------------------------------------------------------------
def test_workers_keep_sessions_within_their_memory_budget(repo, sessions):
    size = ModelVersion("A", "1", repo / "A" / "1" / "model.npuz", Limits()).size
    srv = Server(repo, http_port=0, grpc_port=0, workers=1, worker_memory=int(size * 1.5)).start()
    try:
        h = _http(srv)
        x = _x(8)
        for _ in range(3):                                      # A and B take turns in a cache holding one
            assert np.array_equal(_infer_http(h, "A", x, "1"), sessions[0].score_numpy_array(x).output)
            assert np.array_equal(_infer_http(h, "B", x), sessions[2].score_numpy_array(x).output)
        assert srv.service.pool.evictions >= 5
        text = srv.service.metrics().decode()
        evictions = re.search(r"npu_worker_session_evictions_total ([0-9.e+]+)", text)
        assert evictions and float(evictions.group(1)) >= 5
        assert re.search(r"npu_worker_sessions 1\.0", text)
        loaded = re.search(r"npu_models_loaded ([0-9.]+)", text)
        assert loaded and float(loaded.group(1)) >= 4           # A/1, A/2, B/1, C/3
        assert re.search(r'npu_requests_total\{model="A",status="ok"\} 3\.0', text)
    finally:
        srv.stop()
    small = Server(repo, http_port=0, grpc_port=0, workers=1, worker_memory=size // 2)
    try:                                                        # a model larger than the budget is not loaded
        state, reason = _rows(small.service.index())[("A", "1")]
        assert state == "UNAVAILABLE" and "--worker-memory" in reason
    finally:
        small.stop()


# --- security ------------------------------------------------------------------------------------------
def test_the_token_guards_the_repository_endpoints(repo):
    srv = Server(repo, http_port=0, grpc_port=0, workers=1, token="repo-token").start()
    try:
        for path in ("/v2/repository/index", "/v2/repository/models/A/unload", "/v2/repository/models/A/load"):
            assert _request(srv, "POST", path)[0] == 401
        assert srv.service.model_ready("A")
        auth = {"Authorization": "Bearer repo-token"}
        h = _http(srv)
        assert _rows(h.get_model_repository_index(headers=auth))[("A", "2")][0] == "READY"
        channel = grpc.insecure_channel(f"127.0.0.1:{srv.grpc.port}")
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for call, req in ((stub.RepositoryIndex, service_pb2.RepositoryIndexRequest()),
                          (stub.RepositoryModelUnload, service_pb2.RepositoryModelUnloadRequest(model_name="A")),
                          (stub.RepositoryModelLoad, service_pb2.RepositoryModelLoadRequest(model_name="A"))):
            with pytest.raises(grpc.RpcError) as e:
                call(req, timeout=30)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        channel.close()
        assert srv.service.model_ready("A")
        g = _grpc(srv)
        g.unload_model("A", headers={"authorization": "Bearer repo-token"})
        assert not srv.service.model_ready("A")
        h.load_model("A", headers=auth)
        assert srv.service.model_ready("A")
    finally:
        srv.stop()


# --- a pipeline file, and the command ------------------------------------------------------------------
def test_a_pipeline_file_is_served_from_the_repository(tmp_path, programs):
    pipelines = pytest.importorskip("runtime.pipelines")
    root = tmp_path / "repo"
    path = root / "P" / "1" / "p.npup"
    path.parent.mkdir(parents=True)
    pipelines.create_pipeline(programs[0], None, None, "1", "P", None).save(path)
    srv = Server(root, http_port=0, grpc_port=0, workers=1).start()
    try:
        x = _x(9)
        session = Session(path)
        meta = _http(srv).get_model_metadata("P")
        out = meta["outputs"][0]["name"]
        inp = httpclient.InferInput("data", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        y = _http(srv).infer("P", [inp]).as_numpy(out)
        assert np.array_equal(y, session.score_numpy_array(x).outputs[out])
    finally:
        srv.stop()


def test_npu_serve_a_repository_directory(repo):
    proc = subprocess.Popen([sys.executable, "-m", "npu_toolkit.cli", "serve", str(repo), "--port", "0",
                             "--grpc-port", "0", "--workers", "1", "--worker-memory", "512"],
                            stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.time() + 120
        while time.time() < deadline and port is None:
            line = proc.stderr.readline()
            m = re.search(r"HTTP on :(\d+)", line)
            port = int(m.group(1)) if m else None
        assert port, "npu serve did not report its port"
        c = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        assert c.is_model_ready("A", "1") and c.is_model_ready("B")
        assert ("A", "2") in _rows(c.get_model_repository_index())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
