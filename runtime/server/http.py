"""KServe v2 over HTTP/REST, with Triton's binary tensor extension (what ``tritonclient.http`` sends).

A small ASGI application served by Hypercorn (asyncio): connections are
tasks, not threads, and the server stack handles slow clients (read and
keep-alive timeouts), bursts (a deep listen backlog), HTTP parsing (h11:
Content-Length framing, a short body is never taken as complete) and TLS.

An inference request is checked in this order, each step before any memory
is spent on the next: authentication, model, Content-Length against the
body and JSON limits (413), room in the queue (503), room in the body
memory budget (503); only then is the body read (within ``body_timeout``).
It then takes a place in the queue (503 if the queue filled meanwhile)
before it is parsed, on a small thread pool, checking every input against
the model before converting its data.  A slow upload holds body memory,
never a queue place.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .limits import Limits
from .net import Security
from .service import (ANSWER_GRACE, DATATYPES, InferenceService, ModelVersion, NotFound, NotLoaded, TensorIn,
                      check_output_parameters, check_parameters, classification_count, shape_of, status_of)
from .workers import BadRequest, Overloaded, RequestTimeout, Unavailable, WorkerCrashed

HEADER_LENGTH = "Inference-Header-Content-Length"
_MODEL = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer|/config|/stats)?$")
_REPOSITORY = re.compile(r"^/v2/repository/models/([^/]+)/(load|unload)$")
#: The largest body of a repository request (index, load, unload: a few parameters).
REPOSITORY_BODY = 64 * 1024
#: Paths answered without the access token (liveness and readiness probes).
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")
#: An early refusal reads and drops a body up to this many times ``max_body`` (so the client, still sending,
#: sees the answer rather than a reset); a larger one is not read and the connection is closed.
DRAIN_FACTOR = 16
#: ... as long as the client keeps sending: after this many seconds without data the answer goes out at once.
DRAIN_IDLE = 1.0
log = logging.getLogger("npu.serve")


class HttpError(Exception):
    """An HTTP status and message for the client, and the status label it is counted under."""

    def __init__(self, status: int, message: str, label: str = "bad_request", headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.label = label
        self.headers = headers or {}


class ClientGone(Exception):
    """The client closed the connection (or stopped sending) before its request was complete."""


#: Exception type -> HTTP status.
HTTP_STATUS = ((NotFound, 404), (BadRequest, 400), (Overloaded, 503), (Unavailable, 503),
               (RequestTimeout, 504), (WorkerCrashed, 500))


def _decode_bytes_tensor(raw, count: int, where: str) -> list[bytes]:
    """Triton's BYTES serialisation: each element is a 4-byte little-endian length, then the bytes."""
    raw = memoryview(raw)
    out, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise BadRequest(f"{where}: truncated BYTES element header")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise BadRequest(f"{where}: BYTES element of {n} bytes runs past the end of the data")
        if len(out) >= count:
            raise BadRequest(f"{where}: more BYTES elements than the shape's {count}")
        out.append(bytes(raw[pos:pos + n]))
        pos += n
    if len(out) != count:
        raise BadRequest(f"{where}: {len(out)} BYTES elements for a shape holding {count}")
    return out


def _flatten(data, where: str) -> list:
    """The leaves of nested JSON lists, without recursion."""
    if not isinstance(data, list):
        return [data]
    out, stack = [], [iter(data)]
    while stack:
        for x in stack[-1]:
            if isinstance(x, list):
                stack.append(iter(x))
                break
            out.append(x)
        else:
            stack.pop()
    return out


def _float_data(data, dtype: str, count: int, shape: list[int], where: str) -> np.ndarray:
    """JSON 'data' of a float tensor as an array of the shape; BadRequest for anything but numbers."""
    if not isinstance(data, list):
        raise BadRequest(f"{where}: 'data' must be a list of numbers")
    try:
        arr = np.asarray(data)
    except (TypeError, ValueError, OverflowError, RecursionError):
        raise BadRequest(f"{where}: 'data' is not a (regular) list of numbers") from None
    if arr.dtype.kind not in "iuf":
        raise BadRequest(f"{where}: 'data' must hold numbers only")
    if arr.size != count:
        raise BadRequest(f"{where}: {arr.size} values for shape {shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        return arr.astype(DATATYPES[dtype]).reshape(shape)


def _input_parameters(params, where: str) -> int | None:
    """An input's ``parameters``: ``binary_data_size`` (the only one); returns it or None."""
    if params is None:
        return None
    if not isinstance(params, dict):
        raise BadRequest(f"{where}: 'parameters' must be an object")
    for key in params:
        if key.startswith("shared_memory"):
            raise BadRequest(f"{where}: parameter {key!r}: shared memory is not supported")
        if key != "binary_data_size":
            raise BadRequest(f"{where}: parameter {key!r} is not supported (only binary_data_size)")
    size = params.get("binary_data_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise BadRequest(f"{where}: binary_data_size must be a non-negative integer, not {size!r}")
    return size


class InferRequest:
    """A parsed, checked HTTP inference request."""

    def __init__(self, tensors, params, req_id, requested, binary, classify=None):
        self.tensors: list[TensorIn] = tensors
        self.params: dict = params
        self.id: str | None = req_id
        self.requested: list[str] | None = requested
        self.binary: dict = binary            # output name -> binary_data
        self.classify: dict = classify or {}  # output name -> classes to answer with (classification extension)


def parse_infer_body(service: ModelVersion, body, header_length: int | None) -> InferRequest:
    """The JSON request and its input tensors (binary extension or JSON data), checked against the model
    before any input's data is converted."""
    if header_length is not None and header_length > len(body):
        raise BadRequest(f"{HEADER_LENGTH} {header_length} exceeds the body ({len(body)} bytes)")
    json_part = body if header_length is None else memoryview(body)[:header_length].tobytes()
    try:
        req = json.loads(json_part)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the request body is not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list):
        raise BadRequest("the request must be a JSON object with an 'inputs' list")
    req_id = req.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise BadRequest(f"'id' must be a string, not {type(req_id).__name__}")
    params = check_parameters(req.get("parameters"))
    outs = req.get("outputs")
    if outs is not None and not isinstance(outs, list):
        raise BadRequest("'outputs' must be a list")
    requested, binary, classes = [], {}, {}
    for o in outs or []:
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise BadRequest("each of 'outputs' must be an object with a string 'name'")
        requested.append(o["name"])
        binary[o["name"]] = check_output_parameters(o.get("parameters"), o["name"])
        classes[o["name"]] = classification_count(o.get("parameters"), o["name"])
    service.check_requested(requested)
    if len(req["inputs"]) != 1:
        raise BadRequest(f"expected exactly one input ({service.input.name!r} FP32 or 'images' BYTES), "
                         f"got {len(req['inputs'])}")
    pos = len(json_part)
    tensors = []
    for i, spec in enumerate(req["inputs"]):
        where = f"input {i}"
        if not isinstance(spec, dict) or not all(k in spec for k in ("name", "datatype", "shape")):
            raise BadRequest(f"{where}: needs 'name', 'datatype' and an integer 'shape'")
        name, dtype = spec["name"], spec["datatype"]
        if not isinstance(name, str):
            raise BadRequest(f"{where}: 'name' must be a string")
        where = f"input {name!r}"
        shape = shape_of(spec["shape"], where)
        count = service.check_input(name, dtype, shape)        # before any data is converted
        size = _input_parameters(spec.get("parameters"), where)
        if size is not None:
            if header_length is None:
                raise BadRequest(f"{where}: binary_data_size without the {HEADER_LENGTH} header")
            if pos + size > len(body):
                raise BadRequest(f"{where}: binary_data_size {size} runs past the end of the body")
            raw = memoryview(body)[pos:pos + size]
            pos += size
            if dtype == "BYTES":
                data = _decode_bytes_tensor(raw, count, where)
            else:
                item = np.dtype(DATATYPES[dtype]).itemsize
                if len(raw) != count * item:
                    raise BadRequest(f"{where}: {len(raw)} bytes of data for shape {shape} of {dtype}")
                data = np.frombuffer(raw, np.dtype(DATATYPES[dtype]).newbyteorder("<")).reshape(shape)
        else:
            if "data" not in spec:
                raise BadRequest(f"{where}: no 'data' and no binary_data_size")
            if dtype == "BYTES":
                flat = _flatten(spec["data"], where)
                if len(flat) != count:
                    raise BadRequest(f"{where}: {len(flat)} values for shape {shape}")
                data = flat
            else:
                data = _float_data(spec["data"], dtype, count, shape, where)
        tensors.append(TensorIn(name, dtype, shape, data))
    if header_length is not None and pos != len(body):
        raise BadRequest(f"{len(body) - pos} bytes after the binary input data: the binary_data_size values and "
                         f"{HEADER_LENGTH} do not add up to the body")
    return InferRequest(tensors, params, req_id, requested or None, binary, classes)


def encode_infer_response(service: ModelVersion, parsed: InferRequest,
                          outputs: dict[str, np.ndarray]) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON part's length (never NaN or Infinity)."""
    binary_default = parsed.params.get("binary_data_output", False)
    out_specs, blobs = [], []
    for name, arr in outputs.items():
        text = arr.dtype == object                       # the classification extension's "score:index:label"
        spec = {"name": name, "datatype": "BYTES" if text else "FP32", "shape": list(arr.shape)}
        if parsed.binary.get(name, binary_default):
            blob = encode_bytes_tensor(arr) if text else np.ascontiguousarray(arr, "<f4").tobytes()
            spec["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            spec["data"] = [b.decode() for b in arr.reshape(-1)] if text else arr.reshape(-1).tolist()
        out_specs.append(spec)
    resp = {"model_name": service.name, "model_version": service.version, "outputs": out_specs}
    if parsed.id is not None:
        resp["id"] = parsed.id
    head = json.dumps(resp, allow_nan=False).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def encode_bytes_tensor(arr: np.ndarray) -> bytes:
    """A BYTES tensor in the binary form of the protocol: each element as a 4-byte little-endian length and its
    bytes, in row-major order."""
    return b"".join(len(b).to_bytes(4, "little") + bytes(b) for b in arr.reshape(-1))


def check_repository_parameters(params: dict, action: str) -> None:
    """A load / unload request's parameters: ``unload_dependents`` (unload; there are no dependents) is accepted;
    a model configuration or files sent with a load are refused (the server loads what the repository holds)."""
    for key, value in params.items():
        if action == "unload" and key == "unload_dependents":
            if not isinstance(value, bool):
                raise BadRequest(f"parameter 'unload_dependents' must be true or false, not {value!r}")
            continue
        if action == "load" and (key == "config" or key.startswith("file:")):
            raise BadRequest(f"parameter {key!r}: this server loads models from its repository only; put the "
                             f"program file in the repository and load it by name")
        raise BadRequest(f"parameter {key!r} is not supported for {action}")


class Response:
    def __init__(self, status: int, body: bytes = b"", content_type: str = "application/json",
                 headers: dict | None = None, close: bool = False):
        self.status, self.body, self.content_type = status, body, content_type
        self.headers = headers or {}
        self.close = close


def _json(status: int, obj) -> Response:
    return Response(status, json.dumps(obj, allow_nan=False).encode())


def _error(status: int, message: str, headers: dict | None = None) -> Response:
    return Response(status, json.dumps({"error": message}).encode(), headers=headers)


class _Request:
    """One HTTP request as the app sees it: headers, and how much of its body has been consumed."""

    def __init__(self, scope, receive):
        self.method = scope["method"]
        self.path = scope["path"].rstrip("/") or "/"
        self.headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            self.headers.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
        self.receive = receive
        te = self.headers.get("transfer-encoding")
        cl = self.headers.get("content-length")
        self.length = int(cl) if cl is not None and cl.strip().isdigit() else None   # h11 has checked it
        self.has_body = te is not None or bool(self.length)
        self.body_done = not self.has_body
        self.no_drain = False          # answer at once and close (the client is too slow to wait for)
        self.model: str | None = None  # the model it names (metrics label)


class App:
    """The KServe v2 HTTP application (ASGI 3)."""

    def __init__(self, service: InferenceService, limits: Limits, security: Security):
        self.service = service
        self.limits = limits
        self.security = security
        self.parser = ThreadPoolExecutor(limits.parse_threads, thread_name_prefix="npu-http-parse")
        self.body_memory = 0           # bytes reserved by bodies being read or parsed (event loop only)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        req = _Request(scope, receive)
        try:
            resp = await self._route(req)
        except ClientGone:
            return                     # nobody to answer; counted where it was noticed
        except HttpError as exc:
            self.service.count(exc.label, req.model)
            resp = _error(exc.status, str(exc), exc.headers)
        except (NotFound, BadRequest, Overloaded, Unavailable) as exc:     # refused before inference
            self.service.count(status_of(exc), req.model)
            resp = self._error_for(exc)
        except Exception as exc:       # never let one request take the server down
            log.error("npu serve: internal error on %s %s", req.method, req.path, exc_info=True)
            self.service.count("error", req.model)
            resp = _error(500, f"internal error: {type(exc).__name__}: {exc}")
        if req.no_drain and not req.body_done:
            resp.close = True
        elif not req.body_done:
            try:
                if not await self._drain(req):
                    resp.close = True
            except ClientGone:
                return
        headers = [(b"content-type", resp.content_type.encode()), (b"content-length", str(len(resp.body)).encode()),
                   (b"server", b"npu-serve")]
        headers += [(k.encode(), str(v).encode()) for k, v in resp.headers.items()]
        if resp.close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if req.method == "HEAD" else resp.body})

    @staticmethod
    def _error_for(exc: Exception) -> Response:
        for cls, code in HTTP_STATUS:
            if isinstance(exc, cls):
                return _error(code, str(exc), {"Retry-After": 1} if code == 503 else None)
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    async def _drain(self, req: _Request) -> bool:
        """Read and drop the rest of a refused request's body, if it is not too large; whether it was all read."""
        if req.length is None or req.length > DRAIN_FACTOR * self.limits.max_body:
            return False
        end = time.monotonic() + self.limits.body_timeout
        while not req.body_done:
            try:       # a client that sends nothing for a second is waiting for the answer: give it at once
                msg = await asyncio.wait_for(req.receive(), max(0.0, min(DRAIN_IDLE, end - time.monotonic())))
            except asyncio.TimeoutError:
                return False
            if msg["type"] == "http.disconnect":
                raise ClientGone()
            req.body_done = not msg.get("more_body", False)
        return True

    async def _read_body(self, req: _Request) -> bytearray:
        """The whole body (exactly Content-Length bytes, within body_timeout) or ClientGone / 408."""
        n = req.length
        buf = bytearray(n)
        got = 0
        end = time.monotonic() + self.limits.body_timeout
        while not req.body_done:
            left = end - time.monotonic()
            try:
                msg = await asyncio.wait_for(req.receive(), max(0.0, min(left, self.limits.read_timeout)))
            except asyncio.TimeoutError:
                req.no_drain = True
                why = (f"did not arrive within {self.limits.body_timeout:g} s (--body-timeout)"
                       if left <= self.limits.read_timeout else
                       f"stalled for {self.limits.read_timeout:g} s (--read-timeout)")
                raise HttpError(408, f"the request body {why}: {got} of {n} bytes", "body_timeout") from None
            if msg["type"] == "http.disconnect":
                self.service.count("incomplete")
                raise ClientGone()
            chunk = msg.get("body", b"")
            if got + len(chunk) > n:
                raise HttpError(400, f"the body is longer than its Content-Length {n}")
            buf[got:got + len(chunk)] = chunk
            got += len(chunk)
            req.body_done = not msg.get("more_body", False)
        if got != n:               # h11 frames by Content-Length: a short body ends in a disconnect, not here
            raise HttpError(400, f"the body has {got} bytes, its Content-Length says {n}")
        return buf

    async def _route(self, req: _Request) -> Response:
        service, method, path = self.service, req.method, req.path
        if path not in OPEN_PATHS and not self.security.authorized(req.headers.get("authorization")):
            raise HttpError(401, "this server needs an access token: send 'Authorization: Bearer <token>'",
                            "unauthenticated", {"WWW-Authenticate": 'Bearer realm="npu-serve"'})
        if method in ("GET", "HEAD"):
            if path == "/v2/health/live":
                return Response(200)
            if path == "/v2/health/ready":
                return Response(200 if service.ready() else 503)
            if path == "/v2":
                return _json(200, {"name": "npu-serve", "version": "1",
                                   "extensions": ["binary_tensor_data", "model_repository"]})
            if path == "/metrics":
                return Response(200, service.metrics(), "text/plain; version=0.0.4")
        if path.startswith("/v2/repository/"):
            return await self._repository(req)
        m = _MODEL.match(path)
        if not m:
            raise HttpError(404, f"no endpoint {method} {path}", "not_found")
        name, version, action = m.group(1), m.group(2), m.group(3)
        req.model = name
        if method in ("GET", "HEAD") and action == "/ready":
            try:
                service.resolve(name, version)
            except NotLoaded:                          # known, not loaded now: not ready (unknown: 404)
                return Response(503)
            return Response(200 if service.model_ready(name, version) else 503)
        service.resolve(name, version)
        if method in ("GET", "HEAD") and action is None:
            return _json(200, service.metadata(name, version))
        if method == "POST" and action == "/infer":
            return await self._infer(req, name, version)
        if action in (None, "/ready", "/infer"):
            raise HttpError(405, f"no endpoint {method} {path}", "method_not_allowed")
        raise HttpError(404, f"no endpoint {method} {path}", "not_found")

    async def _repository(self, req: _Request) -> Response:
        """Triton's model repository extension: POST /v2/repository/index, .../models/NAME/load and /unload."""
        path = req.path
        m = _REPOSITORY.match(path)
        if path != "/v2/repository/index" and not m:
            raise HttpError(404, f"no endpoint {req.method} {path}", "not_found")
        if req.method != "POST":
            raise HttpError(405, f"no endpoint {req.method} {path} (use POST)", "method_not_allowed")
        if req.has_body and req.length is None:
            raise HttpError(411, "Content-Length is required", "length_required")
        if (req.length or 0) > REPOSITORY_BODY:
            raise HttpError(413, f"a repository request body of {req.length} bytes exceeds {REPOSITORY_BODY}",
                            "too_large")
        body = await self._read_body(req) if req.length else b""
        try:
            doc = json.loads(body) if body.strip() else {}
        except (ValueError, RecursionError):
            raise BadRequest("the request body is not valid JSON") from None
        if not isinstance(doc, dict):
            raise BadRequest("the request body must be a JSON object")
        params = doc.get("parameters") or {}
        if not isinstance(params, dict):
            raise BadRequest("'parameters' must be an object")
        loop = asyncio.get_running_loop()
        if m is None:
            unknown = set(doc) - {"ready"}
            if unknown:
                raise BadRequest(f"unknown field(s) {', '.join(sorted(map(repr, unknown)))} (only 'ready')")
            ready = doc.get("ready", False)
            if not isinstance(ready, bool):
                raise BadRequest(f"'ready' must be true or false, not {ready!r}")
            return _json(200, await loop.run_in_executor(None, self.service.index, ready))
        name, action = m.group(1), m.group(2)
        req.model = name
        check_repository_parameters(params, action)
        if action == "load":
            await loop.run_in_executor(None, self.service.load, name)
        else:
            await loop.run_in_executor(None, self.service.unload, name)
        return Response(200)

    async def _infer(self, req: _Request, name: str, version: str | None) -> Response:
        service, limits = self.service, self.limits
        model = service.resolve(name, version)
        t0 = time.monotonic()
        if req.length is None:
            raise HttpError(411, "Content-Length is required", "length_required")
        n = req.length
        if n > limits.max_body:
            raise HttpError(413, f"request body of {n} bytes exceeds the limit of {limits.max_body} (--max-body)",
                            "too_large")
        hl = req.headers.get(HEADER_LENGTH.lower())
        header_length = None
        if hl is not None:
            if not hl.strip().isdigit() or not 0 < int(hl) <= n:
                raise HttpError(400, f"bad {HEADER_LENGTH} {hl[:40]!r}: it must be a positive integer at most the "
                                     f"Content-Length {n}")
            header_length = int(hl)
        json_len = n if header_length is None else header_length
        if json_len > model.max_json:
            raise HttpError(413, f"the JSON part of {json_len} bytes exceeds the limit of {model.max_json} "
                                 f"(--max-json); send large tensors with the binary tensor extension", "too_large")
        service.pool.check_room()                 # a full queue or a closing server: 503 before reading
        status = "error"
        reserved = 0
        try:
            if self.body_memory + n > limits.body_memory:
                raise Overloaded(f"request bodies in memory would exceed {limits.body_memory} bytes "
                                 f"(--body-memory); retry later")
            self.body_memory += n
            reserved = n
            body = await self._read_body(req)
            with service.admit() as ticket:       # a queue place before the body is parsed
                loop = asyncio.get_running_loop()

                def parse_and_queue(data):
                    parsed = parse_infer_body(model, data, header_length)
                    pending = service.begin(ticket, name, version, parsed.tensors, parsed.requested,
                                            parsed.params.get("timeout"), parsed.classify)
                    parsed.tensors = None        # views of the body: let it go
                    return parsed, pending

                parsed, pending = await loop.run_in_executor(self.parser, parse_and_queue, body)
            del body                              # the worker has its own copy of the input
            self.body_memory -= reserved
            reserved = 0
            result = await self._await_answer(req, pending)
            out = service.end(pending, result)
            payload, json_len = encode_infer_response(pending.model, parsed, out.outputs)
            status = "ok"
            if json_len is None:
                return Response(200, payload)
            return Response(200, payload, "application/octet-stream", {HEADER_LENGTH: json_len})
        except ClientGone:
            status = "incomplete"
            raise
        except HttpError as exc:
            status = exc.label
            return _error(exc.status, str(exc), exc.headers)
        except Exception as exc:
            status = status_of(exc)
            if status == "error":
                raise
            return self._error_for(exc)
        finally:
            self.body_memory -= reserved
            if status != "incomplete" or req.body_done:
                service.record(status, t0, name)

    async def _await_answer(self, req: _Request, pending):
        """The worker's answer; gives up at the deadline (+ grace) and drops the request if the client leaves."""
        answer = asyncio.wrap_future(pending.future)
        gone = asyncio.ensure_future(req.receive())
        try:
            left = pending.deadline - time.monotonic() + ANSWER_GRACE
            done, _ = await asyncio.wait({answer, gone}, timeout=max(0.0, left),
                                         return_when=asyncio.FIRST_COMPLETED)
            if answer in done:
                return answer.result()
            pending.future.cancel()          # still queued: no worker will run it
            if gone in done:
                raise ClientGone()
            raise RequestTimeout("the request timed out (no worker answered within its deadline)")
        finally:
            if not gone.done():
                gone.cancel()
            if not answer.done():
                answer.cancel()


class HttpServer:
    """The HTTP endpoint: Hypercorn serving ``App`` on an event loop in a background thread."""

    def __init__(self, service: InferenceService, sock, limits: Limits | None = None,
                 security: Security | None = None):
        from hypercorn.config import Config

        self.limits = limits or Limits()
        self.security = security or Security()
        self.app = App(service, self.limits, self.security)
        self.host, self.port = sock.getsockname()[:2]
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]
        config.backlog = self.limits.backlog
        # Hypercorn's read_timeout would also close a quiet client waiting for a long inference (and the app
        # would take that for a client gone): the app times body reads itself, and keep_alive_timeout bounds
        # the request line and headers and the idle time between requests.
        config.read_timeout = None
        config.keep_alive_timeout = self.limits.keep_alive
        config.h11_max_incomplete_size = 16 * 1024
        config.h2_max_concurrent_streams = 32
        config.include_server_header = False
        config.graceful_timeout = 3.0
        config.accesslog = None
        config.errorlog = logging.getLogger("npu.serve.hypercorn")
        config.alpn_protocols = ["http/1.1"]
        if self.security.tls:
            config.certfile, config.keyfile = self.security.certfile, self.security.keyfile
        self.config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None
        self._running = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="npu-http", daemon=True)

    def _run(self) -> None:
        from hypercorn.asyncio import serve

        def on_error(loop, context):
            exc = context.get("exception")
            if isinstance(exc, (asyncio.CancelledError, ConnectionError)):
                return                  # a connection cut at shutdown or by its client: nothing to report
            loop.default_exception_handler(context)

        async def main():
            self._loop = asyncio.get_running_loop()
            self._loop.set_exception_handler(on_error)
            self._shutdown = asyncio.Event()
            self._running.set()
            await serve(self.app, self.config, shutdown_trigger=self._shutdown.wait, mode="asgi")

        try:
            asyncio.run(main())
        except BaseException as exc:     # reported by start() / stop()
            self._error = exc
            log.error("npu serve: the HTTP endpoint stopped: %s", exc, exc_info=True)
        finally:
            self._running.set()

    def start(self) -> "HttpServer":
        """Start serving."""
        self.thread.start()
        self._running.wait(10)
        if self._error is not None:
            raise RuntimeError(f"the HTTP endpoint did not start: {self._error}") from self._error
        return self

    def stop(self) -> None:
        """Stop serving (requests in progress get a few seconds to be answered)."""
        if self._loop is not None and self._shutdown is not None and self.thread.is_alive():
            try:
                self._loop.call_soon_threadsafe(self._shutdown.set)
            except RuntimeError:
                pass
            self.thread.join(timeout=self.config.graceful_timeout + 5)
        self.app.parser.shutdown(wait=False, cancel_futures=True)
