"""``runtime.deploy.DeploymentClient``: register models in a repository directory, load, list, get, score and
unload them over the KServe v2 / Triton repository extension (gRPC, through tritonclient).

Two servers are used:

* ``RepositoryDouble``: a small gRPC repository service written here with grpcio and tritonclient's stubs.
  It serves ``REPO_DIR/NAME/VERSION/*.npuz`` (RepositoryIndex / RepositoryModelLoad / RepositoryModelUnload,
  ServerLive / ServerReady, ModelMetadata / ModelInfer scored by an in-process ``runtime.Session``), checks a
  bearer token like ``npu serve`` and can listen with TLS.  The client is tested end to end over real gRPC
  against it, independent of the server's own implementation.
* ``runtime.server.Server(REPO_DIR, ...)``: the real ``npu serve``, for the life cycle, versions, refusals,
  and token + TLS.
"""
import struct
import subprocess
import sys
import threading
import types
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from compiler.compile import compile_model
from compiler.models import nets
from runtime import DeploymentClient, DeploymentError, Session
from runtime.client import PredictionClient
from runtime.deploy import Model, Service

TOKEN = "deploy-s3cret"


# --- the repository double ----------------------------------------------------------------------------
class _Auth(grpc.ServerInterceptor):
    """Refuses every call but the health probes without ``authorization: Bearer <token>`` (UNAUTHENTICATED)."""

    def __init__(self, token: str):
        self.token = token

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None or details.method.rsplit("/", 1)[-1] in ("ServerLive", "ServerReady"):
            return handler
        if dict(details.invocation_metadata or ()).get("authorization") == f"Bearer {self.token}":
            return handler

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "this server needs an access token: send metadata "
                                                           "'authorization: Bearer <token>'")

        return grpc.unary_unary_rpc_method_handler(deny, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)


def _bytes_elements(raw: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(raw):
        (n,) = struct.unpack_from("<I", raw, i)
        out.append(raw[i + 4:i + 4 + n])
        i += 4 + n
    return out


class _Repository(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The repository extension over a directory; loaded models are scored by a Session each."""

    def __init__(self, root: Path):
        self.root = root
        self.loaded: dict[str, dict[str, Session]] = {}     # name -> version -> session
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def _versions(self, name: str) -> list[str]:
        d = self.root / name
        return sorted((p.name for p in d.iterdir() if p.is_dir() and p.name.isdigit()), key=int) \
            if d.is_dir() else []

    def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=True)

    def RepositoryIndex(self, request, context):
        self.calls.append(("index", ""))
        entries = []
        with self.lock:
            for d in sorted(p for p in self.root.iterdir() if p.is_dir()):
                if d.name not in self.loaded:
                    entries.append(dict(name=d.name, state="UNAVAILABLE", reason="not loaded"))
                for v in self._versions(d.name) if d.name in self.loaded else ():
                    if v in self.loaded[d.name]:
                        entries.append(dict(name=d.name, version=v, state="READY"))
                    else:
                        entries.append(dict(name=d.name, version=v, state="UNAVAILABLE", reason="unloaded"))
        if request.ready:
            entries = [e for e in entries if e["state"] == "READY"]
        return service_pb2.RepositoryIndexResponse(
            models=[service_pb2.RepositoryIndexResponse.ModelIndex(**e) for e in entries])

    def RepositoryModelLoad(self, request, context):
        """Loads every version (the highest is the default); refuses the model if one does not load."""
        name = request.model_name
        self.calls.append(("load", name))
        versions = self._versions(name)
        if not versions:
            context.abort(grpc.StatusCode.NOT_FOUND, f"failed to load '{name}': no model '{name}' in the "
                                                     f"repository")
        sessions = {}
        for v in versions:
            files = sorted((self.root / name / v).glob("*.npuz"))
            try:
                sessions[v] = Session(files[0])
            except (IndexError, ValueError, OSError) as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"failed to load '{name}' version {v}: {exc}")
        with self.lock:
            self.loaded[name] = sessions
        return service_pb2.RepositoryModelLoadResponse()

    def RepositoryModelUnload(self, request, context):
        name = request.model_name
        self.calls.append(("unload", name))
        with self.lock:
            if name in self.loaded:
                self.loaded[name] = {}                # its versions are listed as unloaded from now on
            elif not (self.root / name).is_dir():
                context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {name!r}")
        return service_pb2.RepositoryModelUnloadResponse()

    def _session(self, name, version, context) -> tuple[str, Session]:
        with self.lock:
            if not self.loaded.get(name):
                context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {name!r}")
            sessions = self.loaded[name]
            version = version or max(sessions, key=int)
            return version, sessions[version]

    def ModelMetadata(self, request, context):
        version, s = self._session(request.name, request.version, context)
        tm = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=request.name, versions=[version], platform="npu-sim",
            inputs=[tm(name=s.input.name, datatype="FP32", shape=list(s.input_shape)),
                    tm(name="images", datatype="BYTES", shape=[1])],
            outputs=[tm(name=o.name, datatype="FP32", shape=[1, *o.shape]) for o in s.outputs])

    def ModelInfer(self, request, context):
        version, s = self._session(request.model_name, request.model_version, context)
        spec, raw = request.inputs[0], request.raw_input_contents[0]
        if spec.datatype == "BYTES":
            result = s.score_image(_bytes_elements(raw)[0])
        else:
            result = s.score_numpy_array(np.frombuffer(raw, "<f4").reshape(list(spec.shape)))
        resp = service_pb2.ModelInferResponse(model_name=request.model_name, model_version=version)
        for name, arr in result.outputs.items():
            out = resp.outputs.add()
            out.name, out.datatype = name, "FP32"
            out.shape.extend(arr.shape)
            resp.raw_output_contents.append(np.ascontiguousarray(arr, "<f4").tobytes())
        return resp


class RepositoryDouble:
    """A gRPC repository server on a free loopback port (``token``: bearer auth; ``tls``: (cert, key) files)."""

    def __init__(self, root: Path, token: str | None = None, tls: tuple[str, str] | None = None):
        self.repo = _Repository(root)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                                  interceptors=[_Auth(token)] if token else [])
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self.repo, self.server)
        if tls:
            creds = grpc.ssl_server_credentials([(Path(tls[1]).read_bytes(), Path(tls[0]).read_bytes())])
            self.port = self.server.add_secure_port("127.0.0.1:0", creds)
        else:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self):
        self.server.stop(grace=0).wait()


# --- fixtures -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """Two small compiled programs that answer differently (seeds 0 and 1)."""
    d = tmp_path_factory.mktemp("programs")
    paths = []
    for seed in (0, 1):
        p = d / f"small{seed}.npuz"
        compile_model(nets.resnet_small(seed=seed), "tiny", "ms-fp9").save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def sessions(programs):
    return [Session(p) for p in programs]


@pytest.fixture
def repo(tmp_path):
    d = tmp_path / "repo"
    d.mkdir()
    return d


@pytest.fixture
def double(repo):
    srv = RepositoryDouble(repo)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True,
                   timeout=60)
    return str(cert), str(key)


def _x(seed=0):
    return np.random.default_rng(seed).standard_normal((1, 3, 32, 32)).astype(np.float32)


def _png(tmp_path, seed=0):
    from PIL import Image
    arr = (np.random.default_rng(seed).random((40, 48, 3)) * 255).astype(np.uint8)
    p = tmp_path / f"img{seed}.png"
    Image.fromarray(arr).save(p)
    return p


def _lifecycle(deploy: DeploymentClient, programs, sessions, tmp_path):
    """register two models, create, list, get, score through service.client(), delete, list again."""
    a = deploy.register_model("alpha", programs[0])
    b = deploy.register_model("beta", programs[1], version=3)
    assert (a.name, a.version, a.id, a.validated) == ("alpha", "1", "alpha:1", True)
    assert (b.name, b.version) == ("beta", "3")
    assert a.path == deploy.repository / "alpha" / "1" / "model.npuz"
    assert a.path.read_bytes() == programs[0].read_bytes()
    assert [(m.name, m.version) for m in deploy.list_models()] == [("alpha", "1"), ("beta", "3")]
    assert deploy.list_services() == []

    sa = deploy.create_service("alpha")
    sb = deploy.create_service("beta", b)                    # the seeds' create_service(name, model)
    assert (sa.name, sa.version, sa.state, sa.ready) == ("alpha", "1", "READY", True)
    assert (sb.name, sb.version, sb.state) == ("beta", "3", "READY")
    assert (sa.address, sa.port, sa.ipAddress) == ("127.0.0.1", deploy.port, "127.0.0.1")
    assert sa.use_ssl == deploy.use_ssl
    assert [(s.name, s.version, s.state) for s in deploy.list_services()] == [("alpha", "1", "READY"),
                                                                              ("beta", "3", "READY")]
    got = deploy.get_service_by_name("beta")
    assert (got.name, got.version, got.state) == ("beta", "3", "READY")

    x, img = _x(7), _png(tmp_path, 8)
    for service, session in ((sa, sessions[0]), (sb, sessions[1])):
        client = service.client()
        assert isinstance(client, PredictionClient) and client.model == service.name
        assert np.array_equal(client.score_numpy_array(x), session.score_numpy_array(x).output)
        assert np.array_equal(client.score_file(img), session.score_file(img).output)
        client.close()
    assert not np.array_equal(sessions[0].score_numpy_array(x).output, sessions[1].score_numpy_array(x).output)

    deploy.delete_service("alpha")
    assert [s.name for s in deploy.list_services()] == ["beta"]
    assert deploy.get_service_by_name("alpha").state not in ("READY", "LOADING")
    sb.delete()
    assert deploy.list_services() == []
    assert {s.name for s in deploy.list_services(all=True)} == {"alpha", "beta"}   # still registered


# --- against the repository double ---------------------------------------------------------------------------
def test_lifecycle_over_grpc(double, repo, programs, sessions, tmp_path):
    with DeploymentClient("127.0.0.1", double.port, repository=repo) as deploy:
        _lifecycle(deploy, programs, sessions, tmp_path)
    assert ("load", "alpha") in double.repo.calls and ("unload", "beta") in double.repo.calls


def test_address_as_host_port_and_load_alias(double, repo, programs):
    deploy = DeploymentClient(f"127.0.0.1:{double.port}", port=None, repository=repo)
    assert (deploy.address, deploy.port) == ("127.0.0.1", double.port)
    deploy.register_model("m", programs[0])
    s = deploy.load("m")
    assert isinstance(s, Service) and s.state == "READY"
    deploy.unload("m")
    with pytest.raises(ValueError, match="host:port"):
        DeploymentClient("127.0.0.1", port=None)


def test_versions_are_numbered_and_never_overwritten(repo, programs):
    deploy = DeploymentClient("127.0.0.1", 1, repository=repo)     # no server needed for the files
    assert [deploy.register_model("m", programs[0]).version for _ in range(3)] == ["1", "2", "3"]
    assert deploy.register_model("m", programs[0], version=10).version == "10"
    assert deploy.register_model("m", programs[0]).version == "11"
    with pytest.raises(DeploymentError, match="version 2 is already registered") as e:
        deploy.register_model("m", programs[1], version="2")
    assert e.value.model == "m"
    assert (repo / "m" / "2" / "model.npuz").read_bytes() == programs[0].read_bytes()
    for bad in ("0", "-1", "v2", "1.5"):
        with pytest.raises(DeploymentError, match="not a positive integer"):
            deploy.register_model("m", programs[0], version=bad)
    deploy.unregister_model("m", 2)
    assert sorted(p.name for p in (repo / "m").iterdir()) == ["1", "10", "11", "3"]
    deploy.unregister_model("m")
    assert not (repo / "m").exists()
    with pytest.raises(DeploymentError, match="'m'.*not in the repository"):
        deploy.unregister_model("m")
    assert not any(p.name.startswith(".") for p in repo.rglob("*"))     # no partial copies left behind


def test_register_validates_the_file_first(repo, programs, tmp_path):
    deploy = DeploymentClient("127.0.0.1", 1, repository=repo)
    garbage = tmp_path / "broken.npuz"
    garbage.write_bytes(b"PK\x03\x04 not really a program")
    with pytest.raises(DeploymentError, match=r"cannot register model 'bad': .*broken.npuz is not a valid program"):
        deploy.register_model("bad", garbage)
    with pytest.raises(DeploymentError, match="neither a compiled program"):
        deploy.register_model("bad", tmp_path / "model.onnx")
    with pytest.raises(DeploymentError, match="no such file"):
        deploy.register_model("bad", tmp_path / "missing.npuz")
    for name in ("", "../escape", "a/b", ".hidden", "x" * 200, "sp ace"):
        with pytest.raises(DeploymentError, match="bad model name"):
            deploy.register_model(name, programs[0])
    assert list(repo.iterdir()) == []
    with pytest.raises(DeploymentError, match="repository volume"):
        DeploymentClient("127.0.0.1", 1).register_model("m", programs[0])


def test_pipeline_files_are_validated_by_the_pipeline_loader_when_there_is_one(repo, tmp_path, monkeypatch):
    deploy = DeploymentClient("127.0.0.1", 1, repository=repo)
    pipe = tmp_path / "p.npup"
    pipe.write_bytes(b"a pipeline")
    seen = []

    def load_pipeline(path):
        seen.append(Path(path))
        if b"bad" in Path(path).read_bytes():
            raise ValueError("header.json: missing")

    monkeypatch.setitem(sys.modules, "npu.pipeline", types.SimpleNamespace(load_pipeline=load_pipeline))
    m = deploy.register_model("p", pipe)
    assert seen == [pipe] and m.validated and m.path == repo / "p" / "1" / "model.npup"
    pipe.write_bytes(b"a bad pipeline")
    with pytest.raises(DeploymentError, match="not a valid pipeline: header.json: missing"):
        deploy.register_model("p", pipe)
    monkeypatch.setitem(sys.modules, "npu.pipeline", types.ModuleType("npu.pipeline"))   # no loader yet
    m = deploy.register_model("p", pipe)
    assert not m.validated and m.path.read_bytes() == b"a bad pipeline"


def test_a_real_pipeline_file_is_checked_with_npu_pipeline(repo, programs, tmp_path):
    pipeline = pytest.importorskip("npu.pipeline")
    path = tmp_path / "p.npup"
    pipeline.PipelineFile(programs[0].read_bytes(), name="p", version="1").save(path)
    deploy = DeploymentClient("127.0.0.1", 1, repository=repo)
    m = deploy.register_model("p", path)
    assert m.validated and m.path.read_bytes() == path.read_bytes()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF                              # inside the embedded program: a checksum fails
    path.write_bytes(bytes(data))
    with pytest.raises(DeploymentError, match="cannot register model 'p': .*p.npup is not a valid pipeline"):
        deploy.register_model("p", path)
    assert sorted(p.name for p in (repo / "p").iterdir()) == ["1"]


def test_server_refusals_become_deployment_errors_naming_the_model(double, repo, tmp_path):
    deploy = DeploymentClient("127.0.0.1", double.port, repository=repo)
    with pytest.raises(DeploymentError, match=r"cannot load model 'nosuch' on 127.0.0.1:\d+: failed to load "
                                              r"'nosuch': no model 'nosuch' in the repository \(NOT_FOUND\)") as e:
        deploy.create_service("nosuch")
    assert e.value.model == "nosuch" and e.value.status == "StatusCode.NOT_FOUND"
    with pytest.raises(DeploymentError, match="no model 'nosuch' on 127.0.0.1"):
        deploy.get_service_by_name("nosuch")
    with pytest.raises(DeploymentError, match="cannot unload model 'nosuch'.*unknown model"):
        deploy.delete_service("nosuch")
    with pytest.raises(DeploymentError, match="bad model name"):
        deploy.create_service("../x")
    (repo / "junk" / "1").mkdir(parents=True)                # put there by hand, not a program
    (repo / "junk" / "1" / "model.npuz").write_bytes(b"junk")
    with pytest.raises(DeploymentError, match="cannot load model 'junk'.*failed to load 'junk' version 1"):
        deploy.create_service("junk")
    closed = DeploymentClient("127.0.0.1", _free_port(), timeout=5)
    with pytest.raises(DeploymentError, match=r"cannot list the model repository on 127.0.0.1:\d+"):
        closed.list_services()


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_create_service_of_a_version(endpoint, repo, programs, sessions):
    deploy = DeploymentClient("127.0.0.1", endpoint, repository=repo)
    deploy.register_model("m", programs[0])
    deploy.register_model("m", programs[1])
    assert deploy.get_service_by_name("m").state == "UNAVAILABLE"     # registered, never loaded
    with pytest.raises(DeploymentError, match="did not load version 5; it serves version.s. 1, 2"):
        deploy.create_service("m", 5)
    s1 = deploy.create_service("m", "1")
    assert (s1.version, s1.state) == ("1", "READY")
    assert deploy.get_service_by_name("m").version == "2"              # the default: the highest
    assert deploy.get_service_by_name("m", version=1).state == "READY"
    assert [s.version for s in deploy.list_services()] == ["1", "2"]
    x = _x(9)                                                          # clients score the default version
    assert np.array_equal(s1.client().score_numpy_array(x), sessions[1].score_numpy_array(x).output)
    deploy.delete_service("m")
    deploy.delete_service("m")                                         # on disk, not loaded: nothing to do
    assert {(s.version, s.state) for s in deploy.list_services(all=True)} == {("1", "UNAVAILABLE"),
                                                                           ("2", "UNAVAILABLE")}


def test_token_is_required_when_the_server_has_one(repo, programs, sessions):
    srv = RepositoryDouble(repo, token=TOKEN)
    try:
        anonymous = DeploymentClient("127.0.0.1", srv.port, repository=repo)
        anonymous.register_model("m", programs[0])            # the files need no token
        for deploy in (anonymous, DeploymentClient("127.0.0.1", srv.port, access_token="wrong")):
            with pytest.raises(DeploymentError, match="cannot load model 'm'.*access token.*UNAUTHENTICATED") as e:
                deploy.create_service("m")
            assert e.value.status == "StatusCode.UNAUTHENTICATED"
            with pytest.raises(DeploymentError, match="access token"):
                deploy.list_services()
        assert ("load", "m") not in srv.repo.calls
        deploy = DeploymentClient("127.0.0.1", srv.port, access_token=TOKEN)
        service = deploy.create_service("m")
        client = service.client()                              # carries the token
        assert client.headers == {"authorization": f"Bearer {TOKEN}"}
        x = _x(3)
        assert np.array_equal(client.score_numpy_array(x), sessions[0].score_numpy_array(x).output)
        deploy.delete_service("m")
    finally:
        srv.stop()


def test_tls_with_root_certificates(repo, programs, sessions, tls_files, tmp_path):
    cert, key = tls_files
    srv = RepositoryDouble(repo, token=TOKEN, tls=(cert, key))
    try:
        deploy = DeploymentClient("127.0.0.1", srv.port, use_ssl=True, access_token=TOKEN, root_certificates=cert,
                                  repository=repo)
        deploy.register_model("m", programs[1])
        service = deploy.create_service("m")
        assert service.use_ssl
        client = service.client(retries=0)
        img = _png(tmp_path, 5)
        assert np.array_equal(client.score_file(img), sessions[1].score_file(img).output)
        assert [s.name for s in deploy.list_services()] == ["m"]
        # the system's CAs do not vouch for a self-signed certificate; plaintext does not reach a TLS port
        for bad in (DeploymentClient("127.0.0.1", srv.port, use_ssl=True, access_token=TOKEN, timeout=5),
                    DeploymentClient("127.0.0.1", srv.port, access_token=TOKEN, timeout=5)):
            with pytest.raises(DeploymentError, match="cannot list the model repository"):
                bad.list_services()
        deploy.delete_service("m")
        assert deploy.list_services() == []
    finally:
        srv.stop()


def test_model_and_service_values(repo):
    m = Model("a", "2", repo / "a" / "2" / "model.npuz")
    assert m.id == "a:2" and m.validated
    s = Service("a", "2", "LOADING", "10.0.0.1", 8001)
    assert not s.ready and s.ipAddress == "10.0.0.1" and not s.use_ssl
    with pytest.raises(DeploymentError, match="no deployment client"):
        s.delete()
    c = s.client(retries=0)                                   # no token, no TLS: PredictionClient's defaults
    assert c.headers is None and c.model == "a"
    c.close()


# --- against the real server ---------------------------------------------------------------------------------
def _real_server(repo: Path, **kwargs):
    """``runtime.server.Server`` serving a repository directory on free loopback ports."""
    from runtime.server import Server
    return Server(repo, host="127.0.0.1", http_port=0, grpc_port=0, workers=1, **kwargs).start()


@pytest.fixture(params=["double", "npu_serve"])
def endpoint(request, repo):
    """The gRPC port of a repository server on ``repo``: the double, or the real ``npu serve``."""
    if request.param == "double":
        srv = RepositoryDouble(repo)
        yield srv.port
    else:
        srv = _real_server(repo)
        yield srv.grpc.port
    srv.stop()


def test_lifecycle_against_npu_serve(repo, programs, sessions, tmp_path):
    srv = _real_server(repo)
    try:
        with DeploymentClient("127.0.0.1", srv.grpc.port, repository=repo) as deploy:
            _lifecycle(deploy, programs, sessions, tmp_path)
            with pytest.raises(DeploymentError, match="nosuch"):
                deploy.create_service("nosuch")
            with pytest.raises(DeploymentError, match="nosuch"):
                deploy.get_service_by_name("nosuch")
            with pytest.raises(DeploymentError, match="cannot unload model 'nosuch'"):
                deploy.delete_service("nosuch")
            (repo / "junk" / "1").mkdir(parents=True)                 # put there by hand, not a program
            (repo / "junk" / "1" / "model.npuz").write_bytes(b"junk")
            with pytest.raises(DeploymentError, match="cannot load model 'junk'.*junk") as e:
                deploy.create_service("junk")
            assert e.value.model == "junk" and e.value.status
    finally:
        srv.stop()


def test_token_and_tls_against_npu_serve(repo, programs, sessions, tls_files):
    cert, key = tls_files
    srv = _real_server(repo, token=TOKEN, certfile=cert, keyfile=key)
    try:
        port = srv.grpc.port
        DeploymentClient("127.0.0.1", port, repository=repo).register_model("m", programs[0])
        for token in (None, "wrong"):
            with pytest.raises(DeploymentError, match="'m'.*UNAUTHENTICATED") as e:
                DeploymentClient("127.0.0.1", port, access_token=token, root_certificates=cert).create_service("m")
            assert e.value.model == "m"
        with pytest.raises(DeploymentError, match="cannot list the model repository"):
            DeploymentClient("127.0.0.1", port, access_token=TOKEN, timeout=5).list_services()   # plaintext
        deploy = DeploymentClient("127.0.0.1", port, use_ssl=True, access_token=TOKEN, root_certificates=cert)
        service = deploy.create_service("m")
        x = _x(4)
        assert np.array_equal(service.client().score_numpy_array(x), sessions[0].score_numpy_array(x).output)
        deploy.delete_service("m")
        assert deploy.list_services() == []
    finally:
        srv.stop()
