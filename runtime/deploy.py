"""``DeploymentClient``: the deployment side of Azure ML's accelerated-models SDK, for ``npu serve`` repositories.

The interface is that SDK's (``register_model``, ``create_service``, ``list_services``, ``get_service_by_name``,
``delete_service``; services carry an address and a port to score against with ``PredictionClient``); the
wire protocol is the KServe v2 / Triton *model repository* extension (RepositoryIndex, RepositoryModelLoad,
RepositoryModelUnload) over gRPC through ``tritonclient.grpc``.

A repository is a directory the server serves, laid out ``REPO_DIR/NAME/VERSION/<file>.npuz`` (a compiled
program) or ``.npup`` (a pipeline)::

    deploy = DeploymentClient("127.0.0.1", 8001, repository="/srv/models")
    model = deploy.register_model("landcover", "landcover.npuz")      # -> /srv/models/landcover/1/model.npuz
    service = deploy.create_service("landcover")                      # loads it on the server
    scores = service.client().score_file("chip.png")
    deploy.delete_service("landcover")                                # unloads it

``register_model`` writes into the repository directory, so it needs ``repository=``: the server's
repository on a local or shared filesystem (an NFS share, a volume mounted into the server's container).
The protocol has no upload call, so for a remote server put the file on its repository volume as
``NAME/VERSION/model.npuz`` by other means; ``create_service`` and the rest then work over the network alone.

Tokens and TLS are those of ``PredictionClient``: ``access_token`` goes as gRPC metadata
``authorization: Bearer <token>`` on every call, ``use_ssl`` / ``root_certificates`` (a PEM file) turn on TLS.
Every server refusal becomes a ``DeploymentError`` naming the model and carrying the server's message.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from .client import PredictionClient

#: File suffixes a repository serves: compiled programs and pipelines.
SUFFIXES = (".npuz", ".npup")
#: The file name (before its suffix) ``register_model`` gives a model in its version directory.
MODEL_FILE = "model"
#: Model names: what fits one directory name on every filesystem and one URL path segment.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")
#: Index states of a model the server does not serve (registered in the repository, or unloaded).
_NOT_SERVED = ("", "UNAVAILABLE")


class DeploymentError(RuntimeError):
    """A deployment call failed: names the model (``model``), and carries the server's status and message."""

    def __init__(self, message: str, model: str | None = None, status: str | None = None):
        super().__init__(message)
        self.model = model
        self.status = status


@dataclass(frozen=True)
class Model:
    """A model registered in the repository: ``path`` is its file there; ``validated`` says whether the
    project's loader checked it (a ``.npup`` is not checked when ``npu.pipeline`` has no ``load_pipeline``)."""

    name: str
    version: str
    path: Path
    validated: bool = True

    @property
    def id(self) -> str:
        """``name:version``."""
        return f"{self.name}:{self.version}"


@dataclass
class Service:
    """A model as the server's repository index reports it: ``state`` is ``READY`` once it answers (also
    ``LOADING``, ``UNLOADING``, or ``UNAVAILABLE`` with a ``reason``); ``address``/``port`` are where to score it."""

    name: str
    version: str
    state: str
    address: str
    port: int | None
    use_ssl: bool = False
    reason: str = ""
    _deployment: "DeploymentClient | None" = field(default=None, repr=False, compare=False)

    @property
    def ipAddress(self) -> str:  # noqa: N802  (the seeds' SDK spells it so)
        return self.address

    @property
    def ready(self) -> bool:
        return self.state == "READY"

    def client(self, **kwargs) -> PredictionClient:
        """A ``PredictionClient`` scoring this model, with the deployment client's token and TLS settings
        (``kwargs``: ``retries``, ``backoff``, or overrides)."""
        d = self._deployment
        options = dict(use_ssl=self.use_ssl, access_token=d.access_token if d else "", service_name=self.name,
                       root_certificates=d.root_certificates if d else None)
        options.update(kwargs)
        return PredictionClient(self.address, self.port, **options)

    def delete(self) -> None:
        """Unload this service (``DeploymentClient.delete_service``)."""
        if self._deployment is None:
            raise DeploymentError(f"service {self.name!r} has no deployment client to delete it with", self.name)
        self._deployment.delete_service(self.name)


def _url(address: str, port: int | None) -> str:
    if port is None:
        return address
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return f"{host}:{port}"


def _version_key(v: str):
    return (0, int(v), "") if v.isdigit() else (1, 0, v)


class DeploymentClient:
    """Registers models in an ``npu serve`` repository and loads, lists and unloads them as services.

    ``address``/``port``: the server's gRPC endpoint (``port=None``: ``address`` is ``host:port``);
    ``use_ssl``, ``access_token``, ``root_certificates``: as ``PredictionClient``'s; ``repository``: the
    server's repository directory, needed by ``register_model``/``unregister_model`` only; ``timeout``:
    seconds a call may take (loading a model waits for its workers).
    """

    def __init__(self, address: str, port: int | None = 8001, use_ssl: bool = False, access_token: str | None = None,
                 root_certificates: str | None = None, repository: str | os.PathLike | None = None, *,
                 timeout: float = 120.0):
        if port is None:
            host, sep, p = address.rpartition(":")
            if not sep or not p.isdigit():
                raise ValueError(f"{address!r}: give the port, or an address of the form host:port")
            address, port = host.strip("[]"), int(p)
        self.address, self.port = address, port
        self.use_ssl = use_ssl or root_certificates is not None
        self.access_token = access_token or ""
        self.root_certificates = root_certificates
        self.repository = Path(repository) if repository is not None else None
        self.timeout = timeout
        self.url = _url(address, port)
        self.client = grpcclient.InferenceServerClient(url=self.url, ssl=self.use_ssl,
                                                       root_certificates=root_certificates)
        self.headers = {"authorization": f"Bearer {self.access_token}"} if self.access_token else None

    # --- the repository directory ----------------------------------------------------------------
    def _repo(self, what: str, name: str | None) -> Path:
        subject = f"{what} model {name!r}" if name else f"{what} the repository's models"
        if self.repository is None:
            raise DeploymentError(
                f"cannot {subject}: this client has no repository directory. Pass repository=REPO_DIR (the "
                f"directory the server at {self.url} serves, on a local or shared filesystem); for a remote "
                f"server, put the file on its repository volume as NAME/VERSION/{MODEL_FILE}.npuz and call "
                f"create_service", name)
        if not self.repository.is_dir():
            raise DeploymentError(f"cannot {subject}: the repository {self.repository} is not a directory", name)
        return self.repository

    @staticmethod
    def _check_name(name: str) -> str:
        if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
            raise DeploymentError(f"bad model name {name!r}: use letters, digits, '.', '_' and '-', not "
                                  f"starting with '.' or '-' (at most 128 characters)", str(name))
        return name

    def _versions(self, name: str) -> list[str]:
        d = self._repo("list", name) / name
        if not d.is_dir():
            return []
        return sorted((p.name for p in d.iterdir() if p.is_dir() and p.name.isdigit()), key=int)

    @staticmethod
    def _validate(name: str, path: Path) -> bool:
        """Load the file with the project's loader; whether it could be checked."""
        try:
            if path.suffix == ".npuz":
                from npu.segments import open_program
                open_program(path)
                return True
            try:
                from npu.pipeline import load_pipeline
            except ImportError:        # no pipeline loader yet: the server checks it when it loads it
                return False
            load_pipeline(path)
            return True
        except (ValueError, OSError, KeyError, TypeError) as exc:
            raise DeploymentError(f"cannot register model {name!r}: {path} is not a valid "
                                  f"{'program' if path.suffix == '.npuz' else 'pipeline'}: {exc}", name) from None

    def register_model(self, name: str, path, version: str | int | None = None) -> Model:
        """Validate a ``.npuz`` program or ``.npup`` pipeline and copy it into the repository as
        ``NAME/VERSION/model.npuz`` (``.npup``).  ``version``: a positive integer; default one above the
        highest registered.  An existing version is never overwritten (unregister it first)."""
        self._check_name(name)
        src = Path(path)
        if src.suffix not in SUFFIXES:
            raise DeploymentError(f"cannot register model {name!r}: {src} is neither a compiled program (.npuz) "
                                  f"nor a pipeline (.npup)", name)
        if not src.is_file():
            raise DeploymentError(f"cannot register model {name!r}: {src}: no such file", name)
        repo = self._repo("register", name)
        if version is None:
            existing = self._versions(name)
            version = str(int(existing[-1]) + 1) if existing else "1"
        version = str(version)
        if not version.isdigit() or not 1 <= int(version) < 10 ** 18:
            raise DeploymentError(f"cannot register model {name!r}: version {version!r} is not a positive "
                                  f"integer", name)
        version = str(int(version))
        validated = self._validate(name, src)
        vdir = repo / name / version
        try:
            vdir.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise DeploymentError(f"cannot register model {name!r}: version {version} is already registered "
                                  f"({vdir})", name) from None
        dest = vdir / f"{MODEL_FILE}{src.suffix}"
        try:                    # copy under a name the server does not serve, then rename into place
            fd, tmp = tempfile.mkstemp(prefix=".incoming-", suffix=".part", dir=vdir)
            with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
                shutil.copyfileobj(inp, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except OSError as exc:
            shutil.rmtree(vdir, ignore_errors=True)
            raise DeploymentError(f"cannot register model {name!r}: copying {src} to {vdir}: {exc}", name) from None
        return Model(name, version, dest, validated)

    def list_models(self) -> list[Model]:
        """The models registered in the repository directory (every version)."""
        repo = self._repo("list", None)
        out = []
        for d in sorted(p for p in repo.iterdir() if p.is_dir() and _NAME.match(p.name)):
            for v in self._versions(d.name):
                files = sorted(f for f in (d / v).iterdir() if f.suffix in SUFFIXES)
                if files:
                    out.append(Model(d.name, v, files[0], validated=False))
        return out

    def unregister_model(self, name: str, version: str | int | None = None) -> None:
        """Remove a model's files from the repository (one version, or all).  Files only: ``delete_service``
        unloads it from the server."""
        self._check_name(name)
        repo = self._repo("unregister", name)
        target = repo / name if version is None else repo / name / str(version)
        if not target.is_dir():
            what = f"model {name!r}" if version is None else f"version {version} of model {name!r}"
            raise DeploymentError(f"cannot unregister {what}: it is not in the repository {repo}", name)
        shutil.rmtree(target)
        if version is not None and not any((repo / name).iterdir()):
            (repo / name).rmdir()

    # --- the server ------------------------------------------------------------------------------
    def _call(self, what: str, name: str | None, fn):
        try:
            return fn()
        except InferenceServerException as exc:
            status = str(exc.status() or "")
            message = exc.message() or str(exc)
            subject = f"model {name!r}" if name else "the model repository"
            code = status.replace("StatusCode.", "")
            raise DeploymentError(f"cannot {what} {subject} on {self.url}: {message}"
                                  + (f" ({code})" if code else ""), name, status) from None

    def _index(self, name: str | None = None) -> list[dict]:
        index = self._call("list", name, lambda: self.client.get_model_repository_index(
            headers=self.headers, as_json=True, client_timeout=self.timeout))
        return [m for m in index.get("models", []) if name is None or m.get("name") == name]

    def _service(self, entry: dict) -> Service:
        return Service(entry.get("name", ""), entry.get("version", ""), entry.get("state", ""), self.address,
                       self.port, self.use_ssl, entry.get("reason", ""), self)

    def list_services(self, all: bool = False) -> list[Service]:  # noqa: A002
        """The services the server has loaded (or is loading), one per model version, from its repository
        index; ``all=True`` also lists models registered but not loaded (state ``UNAVAILABLE`` or empty)."""
        entries = [m for m in self._index() if all or m.get("state", "") not in _NOT_SERVED]
        entries.sort(key=lambda m: (m.get("name", ""), _version_key(m.get("version", ""))))
        return [self._service(m) for m in entries]

    def get_service_by_name(self, name: str, version: str | int | None = None) -> Service:
        """The service ``name`` (its ready version, the highest if several; ``version`` picks one).  A model
        the server knows but does not serve comes back with its state (``UNAVAILABLE``); one it does not know
        raises DeploymentError."""
        entries = self._index(name)
        if version is not None:
            entries = [m for m in entries if m.get("version", "") == str(version)]
        if not entries:
            what = f"model {name!r}" + (f" version {version}" if version is not None else "")
            raise DeploymentError(f"no {what} on {self.url} (its repository index lists "
                                  f"{', '.join(sorted({m.get('name', '') for m in self._index()})) or 'nothing'})",
                                  name)
        entries.sort(key=lambda m: (m.get("state") == "READY", m.get("state", "") not in _NOT_SERVED,
                                    _version_key(m.get("version", ""))))
        return self._service(entries[-1])

    def create_service(self, name: str, version=None) -> Service:
        """Load model ``name`` on the server (the repository's load call: the server loads the versions in its
        repository, the highest being the default) and return it as a Service once the index reports it ready.
        ``version`` (or the ``Model`` ``register_model`` returned): the version wanted, DeploymentError if the
        server did not load it."""
        if isinstance(version, Model):
            name, version = version.name, version.version
        self._check_name(name)
        self._call("load", name, lambda: self.client.load_model(name, headers=self.headers,
                                                                client_timeout=self.timeout))
        if version is None:
            service = self.get_service_by_name(name)
        else:
            entries = self._index(name)
            match = [m for m in entries if m.get("version", "") == str(version)]
            if not match or match[0].get("state") != "READY":
                loaded = [m.get("version", "") for m in entries if m.get("state") == "READY"]
                why = f" ({match[0]['reason']})" if match and match[0].get("reason") else ""
                raise DeploymentError(f"model {name!r}: the server at {self.url} did not load version {version}"
                                      f"{why}; it serves version(s) {', '.join(loaded) or 'none'}", name)
            service = self._service(match[0])
        if not service.ready:
            raise DeploymentError(f"model {name!r} did not become ready on {self.url}: state "
                                  f"{service.state or 'unknown'}" + (f" ({service.reason})" if service.reason else ""),
                                  name)
        return service

    load = create_service

    def delete_service(self, name: str) -> None:
        """Unload model ``name`` from the server (its files stay registered: ``unregister_model``)."""
        self._check_name(name)
        self._call("unload", name, lambda: self.client.unload_model(name, headers=self.headers,
                                                                    client_timeout=self.timeout))

    unload = delete_service

    def close(self) -> None:
        """Close the channel."""
        self.client.close()

    def __enter__(self) -> "DeploymentClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
