"""KServe v2 over gRPC, served with the generated stubs that ``tritonclient[grpc]`` ships.

Token authentication is a server interceptor (metadata ``authorization: Bearer <token>``), TLS gRPC's own
server credentials.  The port is bound without SO_REUSEPORT, so a second server on it is refused.
"""
from __future__ import annotations

import errno
import time
from concurrent import futures

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from .http import _decode_bytes_tensor, check_repository_parameters, encode_bytes_tensor
from .limits import Limits
from .net import ListenError, Security, address
from .service import (DATATYPES, InferenceService, ModelVersion, NotFound, NotLoaded, TensorIn,
                      check_output_parameters, check_parameters, classification_count, shape_of, status_of)
from .workers import BadRequest, Overloaded, RequestTimeout, Unavailable, WorkerCrashed

_CODES = ((NotLoaded, grpc.StatusCode.UNAVAILABLE), (NotFound, grpc.StatusCode.NOT_FOUND), (BadRequest, grpc.StatusCode.INVALID_ARGUMENT),
          (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED), (Unavailable, grpc.StatusCode.UNAVAILABLE),
          (RequestTimeout, grpc.StatusCode.DEADLINE_EXCEEDED), (WorkerCrashed, grpc.StatusCode.INTERNAL))
#: Methods answered without the access token (liveness and readiness probes).
OPEN_METHODS = ("ServerLive", "ServerReady")


def _parameters(params, where: str) -> dict:
    """A protobuf map<string, InferParameter> as a plain dict."""
    out = {}
    for key, p in params.items():
        which = p.WhichOneof("parameter_choice")
        if which is None:
            raise BadRequest(f"{where}: parameter {key!r} has no value")
        out[key] = getattr(p, which)
    return out


def _tensor(service: ModelVersion, spec, raw: bytes | None) -> TensorIn:
    """One input, checked against the model before its data is converted."""
    name, dtype = spec.name, spec.datatype
    where = f"input {name!r}"
    shape = shape_of(list(spec.shape), where)
    count = service.check_input(name, dtype, shape)
    for key in spec.parameters:
        if key != "binary_data_size":
            raise BadRequest(f"{where}: parameter {key!r} is not supported")
    c = spec.contents
    has_contents = bool(c.fp32_contents or c.fp64_contents or c.bytes_contents or c.int_contents
                        or c.int64_contents or c.uint_contents or c.uint64_contents or c.bool_contents)
    if raw is not None:
        if has_contents:
            raise BadRequest(f"{where}: both raw_input_contents and contents")
        if dtype == "BYTES":
            return TensorIn(name, dtype, shape, _decode_bytes_tensor(raw, count, where))
        item = np.dtype(DATATYPES[dtype]).itemsize
        if len(raw) != count * item:
            raise BadRequest(f"{where}: {len(raw)} bytes of data for shape {shape} of {dtype}")
        return TensorIn(name, dtype, shape, np.frombuffer(raw, np.dtype(DATATYPES[dtype]).newbyteorder("<"))
                        .reshape(shape))
    if dtype == "BYTES":
        values = list(c.bytes_contents)
        if len(values) != count:
            raise BadRequest(f"{where}: {len(values)} values for shape {shape}")
        return TensorIn(name, dtype, shape, values)
    values = c.fp32_contents if dtype in ("FP32", "FP16") else c.fp64_contents
    if len(values) != count:
        raise BadRequest(f"{where}: {len(values)} values for shape {shape} in "
                         f"{'fp32' if dtype != 'FP64' else 'fp64'}_contents")
    return TensorIn(name, dtype, shape, np.asarray(values, np.float32 if dtype != "FP64" else np.float64)
                    .reshape(shape))


class NpuInferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Health, metadata and inference for one InferenceService."""

    def __init__(self, service: InferenceService):
        self.service = service

    def _abort(self, context, exc: Exception):
        for cls, code in _CODES:
            if isinstance(exc, cls):
                context.abort(code, str(exc))
        context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")

    def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=self.service.ready())

    def ModelReady(self, request, context):
        try:
            self.service.resolve(request.name, request.version)
        except NotFound:                           # unknown, or not loaded now
            return service_pb2.ModelReadyResponse(ready=False)
        return service_pb2.ModelReadyResponse(ready=self.service.model_ready(request.name, request.version))

    def ServerMetadata(self, request, context):
        return service_pb2.ServerMetadataResponse(name="npu-serve", version="1",
                                                  extensions=["binary_tensor_data", "model_repository"])

    def _repository_name(self, request, context) -> None:
        if request.repository_name:
            self._abort(context, BadRequest(f"repository {request.repository_name[:100]!r}: this server has one "
                                            f"model repository; leave repository_name empty"))

    def RepositoryIndex(self, request, context):
        self._repository_name(request, context)
        rows = self.service.index(ready=request.ready)
        entry = service_pb2.RepositoryIndexResponse.ModelIndex
        return service_pb2.RepositoryIndexResponse(models=[entry(**r) for r in rows])

    def _load_or_unload(self, request, context, action: str) -> None:
        self._repository_name(request, context)
        try:
            check_repository_parameters(_parameters(request.parameters, action), action)
            (self.service.load if action == "load" else self.service.unload)(request.model_name)
        except Exception as exc:
            self.service.count(status_of(exc), request.model_name)
            self._abort(context, exc)

    def RepositoryModelLoad(self, request, context):
        self._load_or_unload(request, context, "load")
        return service_pb2.RepositoryModelLoadResponse()

    def RepositoryModelUnload(self, request, context):
        self._load_or_unload(request, context, "unload")
        return service_pb2.RepositoryModelUnloadResponse()

    def ModelMetadata(self, request, context):
        try:
            meta = self.service.metadata(request.name, request.version)
        except NotFound as exc:
            self.service.count(status_of(exc), request.name)
            self._abort(context, exc)
        tm = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tm(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["inputs"]],
            outputs=[tm(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["outputs"]])

    def ModelInfer(self, request, context):
        service = self.service
        t0 = time.monotonic()
        status = "error"
        try:
            model = service.resolve(request.model_name, request.model_version)
            params = check_parameters(_parameters(request.parameters, "request"))
            ticket = service.admit()                    # a queue place before the tensors are converted
            with ticket:
                raws = list(request.raw_input_contents)
                if raws and len(raws) != len(request.inputs):
                    raise BadRequest(f"{len(raws)} raw input contents for {len(request.inputs)} inputs")
                if len(request.inputs) != 1:
                    raise BadRequest(f"expected exactly one input ({model.input.name!r} FP32 or 'images' BYTES), "
                                     f"got {len(request.inputs)}")
                tensors = [_tensor(model, spec, raws[i] if raws else None) for i, spec in enumerate(request.inputs)]
                classes = {}
                for o in request.outputs:
                    out_params = _parameters(o.parameters, f"output {o.name!r}") or None
                    check_output_parameters(out_params, o.name)
                    classes[o.name] = classification_count(out_params, o.name)
                requested = [o.name for o in request.outputs] or None
                timeout = params.get("timeout")
                left = context.time_remaining()
                if left is not None and left < 1e6:
                    timeout = left if timeout is None else min(timeout, left)
                    if timeout <= 0:
                        raise RequestTimeout("the call's deadline passed before the request was queued")
                pending = service.begin(ticket, request.model_name, request.model_version, tensors, requested,
                                        timeout, classes)
            context.add_callback(pending.future.cancel)    # the client gave up: drop it if still queued
            result = service.wait(pending)
            status = "ok"
        except Exception as exc:   # every failure becomes a status code; the server keeps serving
            status = status_of(exc)
            self._abort(context, exc)
        finally:
            service.record(status, t0, request.model_name)
        resp = service_pb2.ModelInferResponse(model_name=pending.model.name, model_version=pending.model.version,
                                              id=request.id)
        for name, arr in result.outputs.items():
            out = resp.outputs.add()
            text = arr.dtype == object                   # the classification extension's "score:index:label"
            out.name, out.datatype = name, "BYTES" if text else "FP32"
            out.shape.extend(arr.shape)
            resp.raw_output_contents.append(encode_bytes_tensor(arr) if text else
                                            np.ascontiguousarray(arr, "<f4").tobytes())
        return resp


class _AuthInterceptor(grpc.ServerInterceptor):
    """Refuses calls without ``authorization: Bearer <token>`` metadata (UNAUTHENTICATED)."""

    def __init__(self, security: Security, on_refuse):
        self.security = security
        self.on_refuse = on_refuse

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None or details.method.rsplit("/", 1)[-1] in OPEN_METHODS:
            return handler
        value = None
        for k, v in details.invocation_metadata or ():
            if k == "authorization":
                value = v if isinstance(v, str) else None
                break
        if self.security.authorized(value):
            return handler
        message = "this server needs an access token: send metadata 'authorization: Bearer <token>'"

        def deny(request, context):
            self.on_refuse()
            context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        kw = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(deny, **kw)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(deny, **kw)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(deny, **kw)
        return grpc.unary_unary_rpc_method_handler(deny, **kw)


class GrpcServer:
    """The gRPC endpoint on its own thread pool.  Binds its port at construction (ListenError when it cannot);
    ``attach`` then gives it the service."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8001, *, limits: Limits | None = None,
                 security: Security | None = None, calls: int = 64):
        self.limits = limits or Limits()
        self.security = security or Security()
        self._service: InferenceService | None = None
        interceptors = []
        if self.security.token is not None:
            interceptors.append(_AuthInterceptor(self.security, lambda: self._service and
                                                 self._service.count("unauthenticated")))
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=calls, thread_name_prefix="npu-grpc"),
                                  interceptors=interceptors, maximum_concurrent_rpcs=calls,
                                  options=[("grpc.max_receive_message_length", self.limits.max_body),
                                           ("grpc.max_send_message_length", self.limits.max_body),
                                           ("grpc.so_reuseport", 0)])
        where = address(host, port)
        try:
            if self.security.tls:
                with open(self.security.keyfile, "rb") as k, open(self.security.certfile, "rb") as c:
                    creds = grpc.ssl_server_credentials([(k.read(), c.read())])
                bound = self.server.add_secure_port(where, creds)
            else:
                bound = self.server.add_insecure_port(where)
        except RuntimeError as exc:
            raise ListenError(errno.EADDRINUSE, f"cannot listen on {where} (gRPC): the address is in use or not "
                                                f"available ({str(exc).split(';')[0]})") from None
        if not bound:
            raise ListenError(errno.EADDRINUSE, f"cannot listen on {where} (gRPC): the address is in use or not "
                                                f"available")
        self.host, self.port = host, bound

    def attach(self, service: InferenceService) -> "GrpcServer":
        """Serve ``service`` (before ``start``)."""
        self._service = service
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(NpuInferenceServicer(service), self.server)
        return self

    def start(self) -> "GrpcServer":
        """Start serving."""
        self.server.start()
        return self

    def stop(self, grace: float = 1.0) -> None:
        """Stop serving (in-flight calls get ``grace`` seconds to finish)."""
        self.server.stop(grace=grace).wait()
