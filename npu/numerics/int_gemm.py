"""Exact block sums of fixed-point element codes on onnxruntime's integer GEMM.

The MVU's block partial sums (docs/numerics.md, "Matrix-vector multiply")
are exact.  For the fixed-point formats (ms-fp8/9, msfp12) every element is
an integer times the format's quantum, so a block sum is an integer times
the product of the two quanta, and an integer GEMM computes it exactly.
onnxruntime's ``MatMulInteger`` (uint8 activations with zero point 128,
int8 weights, int32 sums) does that with the weights packed once, when the
session is built, where a float GEMM repacks them on every call.

Exactness bound: x86 kernels without VNNI multiply uint8 by int8 pairwise
into saturating int16 sums (``vpmaddubsw``), so a format pair qualifies
only if ``2 * (128 + largest activation code) * largest weight code`` fits
int16; the int32 block sums are exact (the float plan's 24-bit bound holds).
"""
from __future__ import annotations

import numpy as np

from .formats import BlockFormat

#: Zero point of the uint8 activation codes.
ZERO_POINT = 128
#: Smallest chain (MACs per call) worth a session: building one costs a few milliseconds.
MIN_MACS = 1 << 22


def applicable(wfmt: BlockFormat, xfmt: BlockFormat, plan: str) -> bool:
    """Whether block sums of this format pair are exact on ``MatMulInteger``."""
    w, x = wfmt.element, xfmt.element
    if plan != "f32" or w.kind == "fp" or x.kind == "fp":
        return False
    return w.mag_max <= 127 and x.mag_max <= 127 and 2 * (ZERO_POINT + x.mag_max) * w.mag_max <= 32767


class IntBlockGemm:
    """``sums[b] = a[b] @ w[b]`` in int32 for activation codes ``a`` (nb, M, K) and fixed weights ``w``.

    ``w`` (nb, K, N) are the weights' integer element codes (int8); ``a``
    holds activation codes plus :data:`ZERO_POINT` (uint8).
    """

    def __init__(self, w: np.ndarray):
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        self.shape = w.shape
        nb, k, n = w.shape
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["a", "w", "zero_point"], ["sums"])], "block_sums",
            [helper.make_tensor_value_info("a", TensorProto.UINT8, [nb, None, k])],
            [helper.make_tensor_value_info("sums", TensorProto.INT32, [nb, None, n])],
            [numpy_helper.from_array(np.ascontiguousarray(w, np.int8), "w"),
             numpy_helper.from_array(np.array(ZERO_POINT, np.uint8), "zero_point")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        options = ort.SessionOptions()
        # idle pool threads would otherwise spin for a while, taking the cores the next kernels need
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self._session = ort.InferenceSession(model.SerializeToString(), options,
                                             providers=["CPUExecutionProvider"])

    def __call__(self, a: np.ndarray) -> np.ndarray:
        """int32 block sums (nb, M, N) of uint8 codes ``a`` (nb, M, K)."""
        return self._session.run(None, {"a": np.ascontiguousarray(a, np.uint8)})[0]
