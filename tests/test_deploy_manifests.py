"""The deployment files under deploy/: Kubernetes / KServe manifests, the Containerfile and its entrypoint.

No cluster and no container builder here, so the checks are static and local:
  * every manifest parses (PyYAML) and validates: Deployment and Service against the Kubernetes OpenAPI
    schemas (kubernetes-validate, strict: unknown fields fail), ServingRuntime and InferenceService against
    the KServe SDK's generated models (every field name and type, down to the Kubernetes core types inside,
    which are validated against the same Kubernetes schemas);
  * the container's command line parses with `npu`'s own argument parser (a flag typo fails), through the
    image's real entrypoint script;
  * ports agree between containers, probes, Service and Containerfile; the probe paths answer 200 on a real
    server running a small compiled program.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from npu_toolkit.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
ENTRYPOINT = DEPLOY / "npu-serve.sh"
CONTAINERFILE = DEPLOY / "Containerfile"
MANIFESTS = sorted(DEPLOY.rglob("*.yaml"))
K8S_VERSION = "1.37"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _all_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in MANIFESTS for d in _docs(p)]


def _one(kind: str) -> dict:
    found = [d for _, d in _all_docs() if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} under deploy/, found {len(found)}"
    return found[0]


def _server_containers() -> list[tuple[str, dict, list[dict]]]:
    """(kind, container, pod volumes) of every container that runs `npu serve`."""
    rt, dep = _one("ServingRuntime"), _one("Deployment")
    return [("ServingRuntime", c, rt["spec"].get("volumes", [])) for c in rt["spec"]["containers"]] + \
           [("Deployment", c, dep["spec"]["template"]["spec"].get("volumes", []))
            for c in dep["spec"]["template"]["spec"]["containers"]]


def _port(container: dict, names: tuple[str, ...]) -> int:
    ports = [p["containerPort"] for p in container.get("ports", []) if p.get("name") in names]
    assert len(ports) == 1, f"container {container['name']}: one port named {' or '.join(names)} expected"
    return ports[0]


HTTP_NAMES, GRPC_NAMES = ("http", "http1"), ("grpc", "h2c")


def test_manifests_present_and_parse():
    kinds = sorted(d["kind"] for _, d in _all_docs())
    assert kinds == ["Deployment", "InferenceService", "Service", "ServingRuntime"]
    for path, doc in _all_docs():
        assert {"apiVersion", "kind", "metadata", "spec"} <= doc.keys(), path
        assert doc["metadata"].get("name"), path


# ---- schemas ----

@pytest.mark.parametrize("kind", ["Deployment", "Service"])
def test_core_objects_validate_against_kubernetes_schema(kind):
    kv = pytest.importorskip("kubernetes_validate")
    kv.validate(_one(kind), K8S_VERSION, strict=True)


def _k8s_fragment_validator():
    """Validates a fragment (a Container, a Volume, ...) against kubernetes-validate's strict schemas."""
    from jsonschema import Draft202012Validator
    from kubernetes_validate.utils import schema_contents
    from referencing import Registry, Resource

    version = [v for v in __import__("kubernetes_validate").utils.all_versions()
               if v.startswith(K8S_VERSION)][-1]
    contents = schema_contents(f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version)
    registry = Resource.from_contents(contents) @ Registry()
    names = {}                              # V1Container -> io.k8s.api.core.v1.Container, ...
    for full in contents["$defs"]:
        if m := re.fullmatch(r"io\.k8s\.(?:api\.core|apimachinery\.pkg\.apis\.meta)\.(v\d+)\.(\w+)", full):
            names[m[1].capitalize() + m[2]] = full

    def validate(k8s_type: str, value, where: str) -> None:
        assert k8s_type in names, f"{where}: no Kubernetes schema for {k8s_type}"
        schema = {"$ref": f"{contents['$id']}#/$defs/{names[k8s_type]}"}
        errors = sorted(Draft202012Validator(schema, registry=registry).iter_errors(value), key=str)
        assert not errors, f"{where} ({k8s_type}): " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5])

    return validate


_KSERVE_TABLE = """
import json, kserve.models as km
print(json.dumps({n: [c.openapi_types, c.attribute_map] for n in dir(km)
                  if isinstance(c := getattr(km, n), type) and hasattr(c, "openapi_types")}))
"""


@pytest.fixture(scope="module")
def kserve_models() -> dict[str, tuple[dict, dict]]:
    """The KServe SDK's generated models: name -> (field -> swagger type, field -> JSON key).

    Read in a child process: importing ``kserve`` registers its own copy of the KServe v2 gRPC protos
    (``inference.ServerLiveRequest``, ...) in protobuf's default pool, and tritonclient's copy (which this
    project's server and client use) then fails to load in the same process."""
    pytest.importorskip("kubernetes_validate")
    if importlib.util.find_spec("kserve") is None:
        pytest.skip("the kserve SDK is not installed")
    out = subprocess.run([sys.executable, "-c", _KSERVE_TABLE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def _check_kserve(value, typ: str, where: str, models, k8s) -> None:
    """``value`` (parsed YAML) against the KServe SDK model type ``typ`` (its swagger type string)."""
    if m := re.fullmatch(r"list\[(.+)\]", typ):
        assert isinstance(value, list), f"{where}: a list expected"
        for i, v in enumerate(value):
            _check_kserve(v, m[1], f"{where}[{i}]", models, k8s)
    elif m := re.fullmatch(r"dict\(str, (.+)\)", typ):
        assert isinstance(value, dict), f"{where}: a mapping expected"
        for k, v in value.items():
            _check_kserve(v, m[1], f"{where}.{k}", models, k8s)
    elif typ in ("str", "int", "bool", "float"):
        want = {"str": str, "int": int, "bool": bool, "float": (int, float)}[typ]
        ok = isinstance(value, want) and not (typ in ("int", "float") and isinstance(value, bool))
        assert ok, f"{where}: {typ} expected, got {value!r}"
    elif typ in ("object", "ResourceQuantity"):
        pass
    elif typ in models:
        types, json_keys = models[typ]
        assert isinstance(value, dict), f"{where}: a mapping ({typ}) expected"
        by_json = {j: a for a, j in json_keys.items()}
        unknown = sorted(set(value) - set(by_json))
        assert not unknown, f"{where}: {typ} has no field(s) {unknown}"
        for key, v in value.items():
            _check_kserve(v, types[by_json[key]], f"{where}.{key}", models, k8s)
    else:   # a Kubernetes core type (V1Container, V1ObjectMeta, ...) inside a KServe object
        k8s(typ, value, where)


@pytest.mark.parametrize("kind,model", [("ServingRuntime", "V1alpha1ServingRuntime"),
                                        ("InferenceService", "V1beta1InferenceService")])
def test_kserve_objects_validate_against_kserve_models(kind, model, kserve_models):
    doc = _one(kind)
    _check_kserve(doc, model, kind, kserve_models, _k8s_fragment_validator())
    group_version = {"ServingRuntime": "serving.kserve.io/v1alpha1",
                     "InferenceService": "serving.kserve.io/v1beta1"}[kind]
    assert doc["apiVersion"] == group_version


def test_the_kserve_checker_catches_mistakes(kserve_models):
    """The checker above is ours: make sure it fails on a misspelt field, a wrong type and a bad container."""
    k8s = _k8s_fragment_validator()
    rt = _one("ServingRuntime")
    bad_field = json.loads(json.dumps(rt))
    bad_field["spec"]["protocolVersion"] = ["v2"]        # the field is protocolVersions
    bad_type = json.loads(json.dumps(rt))
    bad_type["spec"]["multiModel"] = "no"
    bad_container = json.loads(json.dumps(rt))
    bad_container["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    for doc in (bad_field, bad_type, bad_container):
        with pytest.raises(AssertionError):
            _check_kserve(doc, "V1alpha1ServingRuntime", "ServingRuntime", kserve_models, k8s)


# ---- KServe wiring ----

def test_inference_service_uses_the_runtime():
    rt, isvc = _one("ServingRuntime"), _one("InferenceService")
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == rt["metadata"]["name"]
    formats = {f["name"] for f in rt["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] in formats
    assert model["protocolVersion"] == "v2"
    assert set(rt["spec"]["protocolVersions"]) == {"v2", "grpc-v2"}
    assert re.match(r"^(pvc|s3|gs|https?|oci)://", model["storageUri"])
    assert [c["name"] for c in rt["spec"]["containers"]] == ["kserve-container"]   # KServe looks for it by name
    # both ports in one container need RawDeployment (Knative allows one port per container)
    if len(rt["spec"]["containers"][0]["ports"]) > 1:
        assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"


# ---- the command line ----

def _entrypoint_argv(args: list[str], tmp_path: Path, env: dict | None = None) -> list[str]:
    """What the image's entrypoint hands to `npu`, with a stand-in `npu` that prints its arguments."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    fake = bindir / "npu"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    run_env = {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    out = subprocess.run(["sh", str(ENTRYPOINT), *args], env=run_env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def _parse(argv: list[str], where: str):
    assert argv[0] == "serve", f"{where}: runs `npu {argv[0]}`, not `npu serve`"
    try:
        return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `npu {shlex.join(argv)}` does not parse with npu's argument parser")


@pytest.mark.parametrize("index", [0, 1])
def test_container_command_line_parses_with_the_cli(index, tmp_path):
    kind, container, volumes = _server_containers()[index]
    assert container["command"] == ["npu-serve"], f"{kind}: the image's entrypoint"
    models = tmp_path / "mnt-models"
    models.mkdir()
    (models / "model.npuz").write_bytes(b"")
    args = [str(models) if a == "/mnt/models" else a for a in container["args"]]
    argv = _entrypoint_argv(args, tmp_path)
    ns = _parse(argv, kind)
    assert ns.program == str(models / "model.npuz")
    assert ns.host == "0.0.0.0", f"{kind}: a pod must listen on every interface (its own network namespace)"
    assert ns.port == _port(container, HTTP_NAMES)
    expected_name = "{{.Name}}" if kind == "ServingRuntime" else _one("InferenceService")["metadata"]["name"]
    assert ns.name == expected_name, f"{kind}: --name (KServe fills in {{{{.Name}}}}: the InferenceService's)"
    assert ns.grpc_port == _port(container, GRPC_NAMES)
    assert container["args"][0] == "/mnt/models"
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    if kind == "Deployment":
        assert "/mnt/models" in mounts
    # Numba's cache and Matplotlib's config need a writable place under readOnlyRootFilesystem
    if container.get("securityContext", {}).get("readOnlyRootFilesystem"):
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert "/tmp" in mounts and any(v.get("emptyDir") is not None for v in volumes)
        assert env["NUMBA_CACHE_DIR"].startswith("/tmp/") and env["MPLCONFIGDIR"].startswith("/tmp/")


def test_the_cli_parse_check_catches_a_typo():
    with pytest.raises(pytest.fail.Exception):
        _parse(["serve", "m.npuz", "--grpc_port", "8081"], "typo")


def test_entrypoint_resolves_the_model_path(tmp_path):
    one = tmp_path / "one"
    (one / "sub").mkdir(parents=True)
    (one / "sub" / "net.npuz").write_bytes(b"")
    argv = _entrypoint_argv([str(one), "--workers", "3"], tmp_path)
    ns = _parse(argv, "entrypoint")
    assert (ns.program, ns.host, ns.port, ns.grpc_port, ns.workers) == \
           (str(one / "sub" / "net.npuz"), "0.0.0.0", 8080, 8081, 3)
    # no program argument: $NPU_MODEL; a file is taken as it is; later options override the defaults
    prog = tmp_path / "p.npuz"
    prog.write_bytes(b"")
    ns = _parse(_entrypoint_argv(["--port", "9000"], tmp_path, {"NPU_MODEL": str(prog), "NPU_GRPC_PORT": "9001"}),
                "entrypoint")
    assert (ns.program, ns.port, ns.grpc_port) == (str(prog), 9000, 9001)
    # two candidates and no model.npuz: refuse, naming them
    (one / "other.npuz").write_bytes(b"")
    out = subprocess.run(["sh", str(ENTRYPOINT), str(one)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "found 2" in out.stderr
    (one / "model.npuz").write_bytes(b"")
    assert _parse(_entrypoint_argv([str(one)], tmp_path), "entrypoint").program == str(one / "model.npuz")


# ---- ports and probes ----

def _probes(container: dict) -> dict[str, dict]:
    return {k: container[k] for k in ("livenessProbe", "readinessProbe", "startupProbe") if k in container}


def test_probes_and_ports_agree():
    for kind, container, _ in _server_containers():
        http = _port(container, HTTP_NAMES)
        probes = _probes(container)
        assert probes["livenessProbe"]["httpGet"]["path"] == "/v2/health/live", kind
        assert probes["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready", kind
        for name, probe in probes.items():
            port = probe["httpGet"]["port"]
            assert port in (http, *[p["name"] for p in container["ports"] if p["containerPort"] == http]), \
                f"{kind} {name}: port {port} is not the HTTP port {http}"
            assert probe["httpGet"].get("scheme", "HTTP") == "HTTP"
        sc = container.get("securityContext", {})
        assert sc.get("allowPrivilegeEscalation") is False, kind


def test_service_matches_the_deployment():
    dep, svc = _one("Deployment"), _one("Service")
    pod = dep["spec"]["template"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    by_name = {p["name"]: p["containerPort"] for p in container["ports"]}
    targets = {}
    for p in svc["spec"]["ports"]:
        target = p.get("targetPort", p["port"])
        targets[p["name"]] = by_name[target] if isinstance(target, str) else target
        assert targets[p["name"]] in by_name.values(), f"Service port {p['name']} targets no container port"
    assert targets == {"http": _port(container, HTTP_NAMES), "grpc": _port(container, GRPC_NAMES)}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    rt = _one("ServingRuntime")["spec"]["containers"][0]
    assert rt["securityContext"]["runAsNonRoot"] is True


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    from compiler.compile import compile_model
    from compiler.models import nets
    from runtime.server import Server

    path = tmp_path_factory.mktemp("deploy") / "model.npuz"
    compile_model(nets.resnet_small(), "tiny", "ms-fp9").save(path)
    srv = Server(path, host="127.0.0.1", http_port=0, grpc_port=0, workers=1, queue_size=4).start()
    yield srv
    srv.stop()


def test_probe_paths_answer_on_the_real_server(live_server):
    paths = {p["httpGet"]["path"] for _, c, _ in _server_containers() for p in _probes(c).values()}
    paths |= {d["metadata"].get("annotations", {}).get("prometheus.kserve.io/path") for _, d in _all_docs()}
    paths |= {_one("Deployment")["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]}
    paths.discard(None)
    assert {"/v2/health/live", "/v2/health/ready", "/metrics"} <= paths
    for path in sorted(paths):
        with urllib.request.urlopen(f"http://127.0.0.1:{live_server.http.port}{path}", timeout=10) as r:
            assert r.status == 200, path


# ---- the Containerfile ----

def _instructions(text: str) -> list[tuple[str, str]]:
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "a continued line at the end of the Containerfile"
    return out


def test_containerfile():
    ins = _instructions(CONTAINERFILE.read_text())
    args = dict(a.split("=", 1) for k, a in ins if k == "ARG" and "=" in a)
    froms = [a.split()[0] for k, a in ins if k == "FROM"]
    assert froms and all(f == "${PYTHON_IMAGE}" for f in froms)
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", args["PYTHON_IMAGE"])
    # the runtime stage (after the last FROM)
    last = max(i for i, (k, _) in enumerate(ins) if k == "FROM")
    final = ins[last:]
    (user,) = [a for k, a in final if k == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric, non-root user (runAsNonRoot can check it)"
    for _, c, _ in _server_containers():
        rt_uid = c.get("securityContext", {}).get("runAsUser")
        assert rt_uid in (None, int(uid))
    dep_uid = _one("Deployment")["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert dep_uid == int(uid)
    exposed = {int(p.split("/")[0]) for k, a in final if k == "EXPOSE" for p in a.split()}
    for _, c, _ in _server_containers():
        assert {p["containerPort"] for p in c["ports"]} == exposed
    assert any("[models]" in a and "pip install" in a for k, a in final if k == "RUN")
    assert "models" in __import__("tomllib").loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    (health,) = [a for k, a in final if k == "HEALTHCHECK"]
    assert "/v2/health/live" in health and "8080" in health
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for k, a in final if k == "ENV")))
    assert env["NPU_HOST"] == "0.0.0.0" and env["NPU_MODEL"] == "/mnt/models"
    assert {int(env["NPU_HTTP_PORT"]), int(env["NPU_GRPC_PORT"])} == exposed
    (entry,) = [json.loads(a) for k, a in final if k == "ENTRYPOINT"]
    (cmd,) = [json.loads(a) for k, a in final if k == "CMD"]
    assert entry == ["npu-serve"]
    ns = _parse(["serve", "/mnt/models/model.npuz", "--host", env["NPU_HOST"], "--port", env["NPU_HTTP_PORT"],
                 "--grpc-port", env["NPU_GRPC_PORT"], *cmd], "Containerfile CMD")
    assert ns.host == "0.0.0.0"
    # everything COPY'd from the context exists and is let through .dockerignore
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert ignore[[i for i, line in enumerate(ignore) if line and not line.startswith("#")][0]] == "*"
    for k, a in ins:
        if k == "COPY" and "--from=" not in a:
            srcs = [s for s in a.split()[:-1] if not s.startswith("--")]
            for s in srcs:
                assert (ROOT / s).exists(), f"COPY {s}: no such file"
                assert s.rstrip("/") in allowed, f"COPY {s}: excluded by .dockerignore"
    assert "npu-serve" in " ".join(a for k, a in final if k == "COPY")
