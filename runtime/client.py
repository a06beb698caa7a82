"""``PredictionClient``: the scoring client of Azure ML's FPGA featurizer services, speaking KServe v2 gRPC.

The interface is that SDK's (``PredictionClient(address, port, use_ssl,
access_token, service_name)``); the wire protocol is the Open Inference
Protocol through ``tritonclient.grpc``.

``score_file`` sends an image's raw bytes as a BYTES tensor (the server
preprocesses it), ``score_numpy_array`` sends floats.  One output comes back
as a numpy array, several as a list.  Calls retry with exponential back-off,
except when the server says the request itself is wrong.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

#: Status codes a retry cannot fix.
NO_RETRY = ("StatusCode.INVALID_ARGUMENT", "StatusCode.NOT_FOUND", "StatusCode.UNIMPLEMENTED",
            "StatusCode.UNAUTHENTICATED", "StatusCode.PERMISSION_DENIED")


class PredictionClient:
    """Scores images and arrays against an ``npu serve`` (or any KServe v2 gRPC) endpoint."""

    def __init__(self, address: str, port: int | None = None, use_ssl: bool = False, access_token: str = "",
                 service_name: str = "", *, retries: int = 4, backoff: float = 0.1,
                 root_certificates: str | None = None):
        """``use_ssl``: TLS, checking the server against the system's CAs or the PEM file ``root_certificates``
        (for a server with a private CA or a self-signed certificate); ``access_token``: sent as
        ``authorization: Bearer <token>`` metadata on every call."""
        url = address if port is None else f"{address}:{port}"
        self.client = grpcclient.InferenceServerClient(url=url, ssl=use_ssl or root_certificates is not None,
                                                       root_certificates=root_certificates)
        self.headers = {"authorization": f"Bearer {access_token}"} if access_token else None
        self.retries, self.backoff = retries, backoff
        self._model = service_name or None
        self._meta = None

    @property
    def model(self) -> str:
        """The model scored: ``service_name``, else the server's only model."""
        if self._model is None:
            index = self._call(lambda: self.client.get_model_repository_index(headers=self.headers, as_json=True))
            models = [m["name"] for m in index.get("models", [])]
            if len(models) != 1:
                raise ValueError(f"the server has {len(models)} models ({', '.join(models)}); pass service_name")
            self._model = models[0]
        return self._model

    def metadata(self) -> dict:
        """The model's KServe metadata (inputs, outputs)."""
        if self._meta is None:
            self._meta = self._call(lambda: self.client.get_model_metadata(self.model, headers=self.headers,
                                                                            as_json=True))
        return self._meta

    def _call(self, fn):
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except InferenceServerException as exc:
                if str(exc.status()) in NO_RETRY or attempt == self.retries:
                    raise
            time.sleep(delay)
            delay *= 2

    def _infer(self, inp: grpcclient.InferInput, outputs, timeout: float, class_count: int | None = None):
        names = [outputs] if isinstance(outputs, str) else list(outputs or [])
        if class_count and not names:
            names = [o["name"] for o in self.metadata()["outputs"] if o["datatype"] == "FP32"][:1]
        req = [grpcclient.InferRequestedOutput(n, class_count=class_count or 0) for n in names] or None
        result = self._call(lambda: self.client.infer(self.model, [inp], outputs=req, headers=self.headers,
                                                      client_timeout=timeout))
        if not names:
            names = [o["name"] for o in self.metadata()["outputs"]]
        arrays = [result.as_numpy(n) for n in names]
        if class_count:
            arrays = [_classes(a) for a in arrays]
        return arrays[0] if len(arrays) == 1 else arrays

    def score_image(self, data: bytes, input_name: str = "images", outputs=None, timeout: float = 10.0,
                    class_count: int | None = None):
        """Score encoded image bytes; returns the output array (or a list for several outputs).

        With ``class_count`` K the server answers with its K best classes
        (the classification extension): a list of (class name, score), best
        first (the class index as the name when the model has no labels).
        """
        inp = grpcclient.InferInput(input_name, [1], "BYTES")
        inp.set_data_from_numpy(np.array([bytes(data)], dtype=object))
        return self._infer(inp, outputs, timeout, class_count)

    def score_file(self, path, input_name: str = "images", outputs=None, timeout: float = 10.0,
                   class_count: int | None = None):
        """Score an image file (its bytes are sent; the server decodes and preprocesses them)."""
        return self.score_image(Path(path).read_bytes(), input_name, outputs, timeout, class_count)

    def score_numpy_array(self, array: np.ndarray, input_name: str | None = None, outputs=None,
                          timeout: float = 10.0, class_count: int | None = None):
        """Score a float array of the model's input shape (``class_count``: as for :meth:`score_image`)."""
        x = np.ascontiguousarray(array, np.float32)
        name = input_name or next(t["name"] for t in self.metadata()["inputs"] if t["datatype"] == "FP32")
        inp = grpcclient.InferInput(name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return self._infer(inp, outputs, timeout, class_count)

    def close(self) -> None:
        """Close the channel."""
        self.client.close()


def _classes(answer: np.ndarray) -> list[tuple[str, float]]:
    """(class name, score), best first, from a classification answer of ``score:index[:label]`` strings."""
    out = []
    for item in np.asarray(answer).reshape(-1):
        text = item.decode() if isinstance(item, bytes) else str(item)
        score, index, *label = text.split(":", 2)
        out.append((label[0] if label else index, float(score)))
    return out
