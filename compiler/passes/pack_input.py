"""First-layer input packing: a few-channel image fills whole vectors before it reaches the NPU.

A 3-channel image would use 3 of N lanes of every vector.  When the graph
input feeds one convolution, the host packs it (``npu.hostio.input_tensor``)
from the parameters recorded here, in one of two ways:

* **strip** (preferred): for each output row, a packed pixel holds a strip of
  the kh input rows the row's windows cover, ``G`` input columns wide
  (``G`` the largest multiple of the column stride with kh*G*C <= N: 7 rows x
  6 columns x 3 channels = 126 values at N = 128; 7 x 2 x 3 = 42 at N = 64).  The P = G / stride output
  columns whose windows start in one strip become P column phases of a
  stride-1 convolution over the strips (``Conv.column_phases``), each with
  its own rearranged weights, so every input value crosses DRAM about
  kh/stride times instead of kh*kw/stride^2 times.
* **im2col** (when a strip cannot hold two phases, and a one-phase strip
  would not move fewer input vectors): each output pixel's kh*kw*C window
  values become the channels of one pixel and the convolution a 1x1.  At
  N = 64 the ResNet stem's one-phase strips move 112 x 115 vectors where
  im2col moves 112 x 112 x 3.

A dilated first convolution is left unpacked: the host's packings gather
contiguous windows, and the convolution reads its spaced taps from the
image as it is (``Conv.dilation``).
"""
from __future__ import annotations

import numpy as np

from npu.config import NPUConfig

from ..ir import Conv, Graph


def strip_group(channels: int, kernel_h: int, stride_w: int, native_dim: int) -> int:
    """Input columns per packed strip: the largest multiple of the column stride that fits one vector."""
    return (native_dim // (kernel_h * channels)) // stride_w * stride_w


def strip_weights(weight: np.ndarray, stride_w: int, group: int) -> tuple[np.ndarray, int]:
    """(P*Cout, kh*G*C, 1, T) phase weights of a (Cout, C, kh, kw) convolution over G-column strips; and T.

    Phase p's tap t multiplies strip channel ``(ky*G + j)*C + c`` with the
    original weight at column ``kx = G*t + j - stride_w*p``.
    """
    cout, c, kh, kw = weight.shape
    phases = group // stride_w
    taps = (stride_w * (phases - 1) + kw - 1) // group + 1
    out = np.zeros((phases, cout, kh, group, c, taps), np.float32)
    for p in range(phases):
        for kx in range(kw):
            t, j = divmod(stride_w * p + kx, group)
            out[p, :, :, j, :, t] = weight[:, :, :, kx].transpose(0, 2, 1)
    return out.reshape(phases * cout, kh * group * c, 1, taps), taps


def strip_pays(channels: int, kernel: tuple[int, int], stride_w: int, out_w: int, group: int, native_dim: int) -> bool:
    """Whether strips of ``group`` columns beat im2col: two phases or more, or one phase (a strip as wide as the
    column stride) that moves fewer input vectors per output row than im2col's windows."""
    phases = group // stride_w
    if phases >= 2:
        return True
    if phases < 1:
        return False
    taps = (kernel[1] - 1) // group + 1
    return out_w + taps - 1 < out_w * -(-kernel[0] * kernel[1] * channels // native_dim)


def pack_first_conv(graph: Graph, config: NPUConfig) -> Graph:
    """Rewrite each input's only Conv to read strip- or im2col-packed input when the input has < N/4 channels
    (undilated convolutions only)."""
    packing = graph.metadata.setdefault("input_packing", {})
    original = graph.metadata.setdefault("original_shapes", {})
    for t in graph.inputs:
        cons = graph.consumers(t)
        if len(cons) != 1 or not isinstance(cons[0], Conv) or cons[0].inputs[0] != t or cons[0].residual or \
                cons[0].groups != 1 or cons[0].dilation != (1, 1):
            continue
        conv = cons[0]
        c, h, w = graph.shapes[t]
        cout, cin, kh, kw = conv.weight.shape
        if (kh, kw) == (1, 1) or 4 * c >= config.native_dim:
            continue
        out = graph.shapes[conv.outputs[0]]
        oh, ow = out[1:] if len(out) == 3 else (1, 1)      # a fully connected layer writes a C x 1 x 1 vector
        conv.model_macs = conv.macs((oh, ow))
        params = {"kernel": [kh, kw], "stride": list(conv.stride), "pads": list(conv.pads), "image_shape": [c, h, w]}
        group = strip_group(c, kh, conv.stride[1], config.native_dim)
        if strip_pays(c, (kh, kw), conv.stride[1], ow, group, config.native_dim):
            conv.weight, taps = strip_weights(conv.weight, conv.stride[1], group)
            conv.column_phases = group // conv.stride[1]
            groups = -(-ow // conv.column_phases) + taps - 1
            packing[t] = {"packing": "strip", "group": group, **params}
            graph.shapes[t] = (kh * group * c, oh, groups)
            conv.source += "+strip"
        else:
            conv.weight = np.ascontiguousarray(conv.weight.transpose(0, 2, 3, 1).reshape(cout, kh * kw * cin, 1, 1))
            packing[t] = {"packing": "im2col", **params}
            graph.shapes[t] = (kh * kw * c, oh, ow)
            conv.source += "+im2col"
        original.setdefault(t, (c, h, w))
        conv.stride, conv.pads = (1, 1), (0, 0, 0, 0)
    return graph
