"""KServe v2 over HTTP/REST, with Triton's binary tensor extension (what ``tritonclient.http`` sends)."""
from __future__ import annotations

import json
import re
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from .service import DATATYPES, InferenceService, NotFound, TensorIn
from .workers import BadRequest, Overloaded, RequestTimeout, WorkerCrashed

HEADER_LENGTH = "Inference-Header-Content-Length"
_MODEL = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer|/config|/stats)?$")


class HttpError(Exception):
    """An HTTP status and message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _decode_bytes_tensor(raw: bytes, count: int, where: str) -> list[bytes]:
    """Triton's BYTES serialisation: each element is a 4-byte little-endian length, then the bytes."""
    out, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise BadRequest(f"{where}: truncated BYTES element header")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise BadRequest(f"{where}: BYTES element of {n} bytes runs past the end of the data")
        out.append(raw[pos:pos + n])
        pos += n
    if len(out) != count:
        raise BadRequest(f"{where}: {len(out)} BYTES elements for a shape holding {count}")
    return out


def parse_infer_body(body: bytes, header_length: int | None) -> tuple[dict, list[TensorIn]]:
    """The JSON request and its input tensors (binary extension or JSON data)."""
    json_part = body if header_length is None else body[:header_length]
    if header_length is not None and header_length > len(body):
        raise BadRequest(f"{HEADER_LENGTH} {header_length} exceeds the body ({len(body)} bytes)")
    try:
        req = json.loads(json_part)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON ({exc})") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list):
        raise BadRequest("the request must be a JSON object with an 'inputs' list")
    pos = len(json_part)
    tensors = []
    for i, spec in enumerate(req["inputs"]):
        where = f"input {i}"
        try:
            name, dtype, shape = spec["name"], spec["datatype"], [int(d) for d in spec["shape"]]
        except (KeyError, TypeError, ValueError):
            raise BadRequest(f"{where}: needs 'name', 'datatype' and an integer 'shape'") from None
        where = f"input {name!r}"
        if dtype not in DATATYPES:
            raise BadRequest(f"{where}: datatype {dtype!r} is not supported (FP32, FP16, FP64, BYTES)")
        if any(d < 0 for d in shape):
            raise BadRequest(f"{where}: negative dimension in shape {shape}")
        count = int(np.prod(shape)) if shape else 1
        size = (spec.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = body[pos:pos + int(size)]
            if len(raw) != int(size):
                raise BadRequest(f"{where}: binary_data_size {size} runs past the end of the body")
            pos += int(size)
            if dtype == "BYTES":
                data = _decode_bytes_tensor(raw, count, where)
            else:
                item = np.dtype(DATATYPES[dtype]).itemsize
                if len(raw) != count * item:
                    raise BadRequest(f"{where}: {len(raw)} bytes of data for shape {shape} of {dtype}")
                data = np.frombuffer(raw, DATATYPES[dtype]).reshape(shape)
        else:
            if "data" not in spec:
                raise BadRequest(f"{where}: no 'data' and no binary_data_size")
            if dtype == "BYTES":
                flat = np.asarray(spec["data"], dtype=object).reshape(-1)
                data = [x.encode("latin-1") if isinstance(x, str) else x for x in flat]
            else:
                try:
                    data = np.asarray(spec["data"], DATATYPES[dtype])
                except (TypeError, ValueError):
                    raise BadRequest(f"{where}: 'data' is not a list of numbers") from None
                if data.size != count:
                    raise BadRequest(f"{where}: {data.size} values for shape {shape}")
                data = data.reshape(shape)
        tensors.append(TensorIn(name, dtype, shape, data))
    return req, tensors


def encode_infer_response(service: InferenceService, req: dict, outputs: dict[str, np.ndarray]) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON part's length."""
    params = req.get("parameters") or {}
    wanted = {o.get("name"): (o.get("parameters") or {}) for o in (req.get("outputs") or []) if isinstance(o, dict)}
    binary_default = bool(params.get("binary_data_output", False))
    out_specs, blobs = [], []
    for name, arr in outputs.items():
        spec = {"name": name, "datatype": "FP32", "shape": list(arr.shape)}
        binary = wanted.get(name, {}).get("binary_data", binary_default)
        if binary:
            blob = np.ascontiguousarray(arr, "<f4").tobytes()
            spec["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            spec["data"] = arr.reshape(-1).tolist()
        out_specs.append(spec)
    resp = {"model_name": service.name, "model_version": service.version, "outputs": out_specs}
    if "id" in req:
        resp["id"] = req["id"]
    head = json.dumps(resp).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def make_handler(service: InferenceService, max_body: int):
    """A request handler class bound to ``service``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "npu-serve"

        def log_message(self, fmt, *args):   # quiet: metrics carry the numbers
            return

        def _send(self, status: int, body: bytes = b"", content_type: str = "application/json",
                  headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, str(v))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, obj) -> None:
            self._send(status, json.dumps(obj).encode())

        def _error(self, status: int, message: str) -> None:
            self._json(status, {"error": message})

        def _body(self) -> bytes:
            length = self.headers.get("Content-Length")
            if length is None:
                raise HttpError(411, "Content-Length is required")
            try:
                n = int(length)
            except ValueError:
                raise HttpError(400, f"bad Content-Length {length!r}") from None
            if n > max_body:
                # read and drop a moderately oversized body so the client sees the 413, not a broken pipe
                left = n if n <= 16 * max_body else 0
                while left > 0:
                    chunk = self.rfile.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    left -= len(chunk)
                self.close_connection = True
                raise HttpError(413, f"request body of {n} bytes exceeds the limit of {max_body}")
            return self.rfile.read(n)

        def do_GET(self):
            self._dispatch("GET")

        def do_POST(self):
            self._dispatch("POST")

        def _dispatch(self, method: str) -> None:
            try:
                self._route(method)
            except HttpError as exc:
                self._error(exc.status, str(exc))
            except NotFound as exc:
                self._error(404, str(exc))
            except BadRequest as exc:
                self._error(400, str(exc))
            except Overloaded as exc:
                self._error(503, str(exc))
            except RequestTimeout as exc:
                self._error(504, str(exc))
            except WorkerCrashed as exc:
                self._error(500, str(exc))
            except Exception as exc:     # never let one request take the server down
                self._error(500, f"internal error: {type(exc).__name__}: {exc}")

        def _route(self, method: str) -> None:
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            if method == "GET" and path == "/v2/health/live":
                return self._send(200)
            if method == "GET" and path == "/v2/health/ready":
                return self._send(200 if service.ready() else 503)
            if method == "GET" and path == "/v2":
                return self._json(200, {"name": "npu-serve", "version": "1", "extensions": ["binary_tensor_data"]})
            if method == "GET" and path == "/metrics":
                return self._send(200, service.metrics(), "text/plain; version=0.0.4")
            m = _MODEL.match(path)
            if not m:
                raise HttpError(404, f"no endpoint {method} {path}")
            name, version, action = m.group(1), m.group(2), m.group(3)
            service.check_model(name, version)
            if method == "GET" and action is None:
                return self._json(200, service.metadata())
            if method == "GET" and action == "/ready":
                return self._send(200 if service.ready() else 503)
            if method == "POST" and action == "/infer":
                body = self._body()
                hl = self.headers.get(HEADER_LENGTH)
                try:
                    header_length = None if hl is None else int(hl)
                except ValueError:
                    raise BadRequest(f"bad {HEADER_LENGTH} {hl!r}") from None
                req, tensors = parse_infer_body(body, header_length)
                requested = [o.get("name") for o in (req.get("outputs") or []) if isinstance(o, dict)]
                timeout = (req.get("parameters") or {}).get("timeout")
                result = service.infer(name, version, tensors, requested or None,
                                       timeout=float(timeout) / 1e6 if timeout else None)
                body, json_len = encode_infer_response(service, req, result.outputs)
                headers = {HEADER_LENGTH: json_len} if json_len is not None else {}
                return self._send(200, body, "application/octet-stream" if json_len is not None else
                                  "application/json", headers)
            raise HttpError(405 if action in (None, "/ready", "/infer") else 404, f"no endpoint {method} {path}")

    return Handler


class HttpServer:
    """The HTTP endpoint in a background thread."""

    def __init__(self, service: InferenceService, host: str = "0.0.0.0", port: int = 8000,
                 max_body: int = 64 << 20):
        self.httpd = ThreadingHTTPServer((host, port), make_handler(service, max_body))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="npu-http", daemon=True)

    def start(self) -> "HttpServer":
        """Start serving."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()
