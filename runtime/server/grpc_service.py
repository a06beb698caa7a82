"""KServe v2 over gRPC, served with the generated stubs that ``tritonclient[grpc]`` ships."""
from __future__ import annotations

from concurrent import futures

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from .http import _decode_bytes_tensor
from .service import DATATYPES, InferenceService, NotFound, TensorIn
from .workers import BadRequest, Overloaded, RequestTimeout, WorkerCrashed

_CODES = ((NotFound, grpc.StatusCode.NOT_FOUND), (BadRequest, grpc.StatusCode.INVALID_ARGUMENT),
          (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED), (RequestTimeout, grpc.StatusCode.DEADLINE_EXCEEDED),
          (WorkerCrashed, grpc.StatusCode.INTERNAL))


def _tensor(spec, raw: bytes | None) -> TensorIn:
    name, dtype, shape = spec.name, spec.datatype, [int(d) for d in spec.shape]
    where = f"input {name!r}"
    if dtype not in DATATYPES:
        raise BadRequest(f"{where}: datatype {dtype!r} is not supported (FP32, FP16, FP64, BYTES)")
    count = int(np.prod(shape)) if shape else 1
    if raw is not None:
        if dtype == "BYTES":
            return TensorIn(name, dtype, shape, _decode_bytes_tensor(raw, count, where))
        item = np.dtype(DATATYPES[dtype]).itemsize
        if len(raw) != count * item:
            raise BadRequest(f"{where}: {len(raw)} bytes of data for shape {shape} of {dtype}")
        return TensorIn(name, dtype, shape, np.frombuffer(raw, DATATYPES[dtype]).reshape(shape))
    c = spec.contents
    if dtype == "BYTES":
        return TensorIn(name, dtype, shape, list(c.bytes_contents))
    values = list(c.fp32_contents) if dtype in ("FP32", "FP16") else list(c.fp64_contents)
    if len(values) != count:
        raise BadRequest(f"{where}: {len(values)} values for shape {shape}")
    return TensorIn(name, dtype, shape, np.asarray(values, np.float32).reshape(shape))


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
            self.service.check_model(request.name, request.version)
        except NotFound:
            return service_pb2.ModelReadyResponse(ready=False)
        return service_pb2.ModelReadyResponse(ready=self.service.ready())

    def ServerMetadata(self, request, context):
        return service_pb2.ServerMetadataResponse(name="npu-serve", version="1", extensions=["binary_tensor_data"])

    def RepositoryIndex(self, request, context):
        entry = service_pb2.RepositoryIndexResponse.ModelIndex(name=self.service.name, version=self.service.version,
                                                               state="READY" if self.service.ready() else "LOADING")
        return service_pb2.RepositoryIndexResponse(models=[entry])

    def ModelMetadata(self, request, context):
        try:
            self.service.check_model(request.name, request.version)
        except NotFound as exc:
            self._abort(context, exc)
        meta = self.service.metadata()
        tm = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tm(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["inputs"]],
            outputs=[tm(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["outputs"]])

    def ModelInfer(self, request, context):
        try:
            raws = list(request.raw_input_contents)
            if raws and len(raws) != len(request.inputs):
                raise BadRequest(f"{len(raws)} raw input contents for {len(request.inputs)} inputs")
            tensors = [_tensor(spec, raws[i] if raws else None) for i, spec in enumerate(request.inputs)]
            requested = [o.name for o in request.outputs] or None
            left = context.time_remaining()
            result = self.service.infer(request.model_name, request.model_version, tensors, requested,
                                        timeout=left if left is not None and left < 1e6 else None)
        except Exception as exc:   # every failure becomes a status code; the server keeps serving
            self._abort(context, exc)
        resp = service_pb2.ModelInferResponse(model_name=self.service.name, model_version=self.service.version,
                                              id=request.id)
        for name, arr in result.outputs.items():
            out = resp.outputs.add()
            out.name, out.datatype = name, "FP32"
            out.shape.extend(arr.shape)
            resp.raw_output_contents.append(np.ascontiguousarray(arr, "<f4").tobytes())
        return resp


class GrpcServer:
    """The gRPC endpoint on its own thread pool."""

    def __init__(self, service: InferenceService, host: str = "0.0.0.0", port: int = 8001, threads: int = 32,
                 max_message: int = 64 << 20):
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads),
                                  options=[("grpc.max_receive_message_length", max_message),
                                           ("grpc.max_send_message_length", max_message)])
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(NpuInferenceServicer(service), self.server)
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot listen on {host}:{port}")

    def start(self) -> "GrpcServer":
        """Start serving."""
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop serving (in-flight calls get a second to finish)."""
        self.server.stop(grace=1).wait()

