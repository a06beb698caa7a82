"""A numpy evaluation of the compiled graph under the numerics contract (docs/numerics.md).

It computes each layer from whole arrays (im2col, matrices, reductions) with
the contract's primitives in ``npu.numerics`` (block quantisation, the MVU
block-sum rule, MFU rounding), not from instructions or addresses, so
comparing it bit for bit with the simulator checks the compiler's layouts,
chains, banding and synchronisation, and the simulator's execution of them.
"""
from __future__ import annotations

import numpy as np

from npu.config import NPUConfig
from npu.numerics import mfu
from npu.numerics.dot import matvec
from npu.numerics.formats import get_format
from npu.numerics.quantize import quantize

from .io import input_tensor
from .ir import Add, Affine, Concat, Conv, Flatten, GlobalPool, Graph, Pool, Relu
from .lower.weights import conv_matrix


def _padded(x: np.ndarray, n: int) -> np.ndarray:
    """C x H x W -> (ceil(C/N)*N) x H x W with zero channels."""
    c = x.shape[0]
    out = np.zeros((-(-c // n) * n, *x.shape[1:]), np.float32)
    out[:c] = x
    return out


def _windows(x: np.ndarray, kernel, stride, pads, out_hw) -> np.ndarray:
    """(OH*OW, kh*kw, C) windows of x (zero padding), taps in row-major order."""
    kh, kw = kernel
    sy, sx = stride
    top, left = pads[0], pads[1]
    oh, ow = out_hw
    c, h, w = x.shape
    xp = np.zeros((c, max(h + top, (oh - 1) * sy + kh) + 1, max(w + left, (ow - 1) * sx + kw) + 1), np.float32)
    xp[:, top:top + h, left:left + w] = x
    taps = [xp[:, ky:ky + sy * (oh - 1) + 1:sy, kx:kx + sx * (ow - 1) + 1:sx] for ky in range(kh) for kx in range(kw)]
    return np.stack(taps).transpose(2, 3, 0, 1).reshape(oh * ow, kh * kw, c)


class Reference:
    """Evaluates a compiled graph on one input, layer by layer, in the program's formats."""

    def __init__(self, graph: Graph, config: NPUConfig):
        self.g, self.cfg = graph, config
        self.n = config.native_dim
        self.fmt = config.mfu_format
        self.wfmt = get_format(config.weight_format)
        self.xfmt = get_format(config.activation_format)

    def _shape(self, t):
        s = self.g.shapes[t]
        return tuple(s) if len(s) == 3 else (s[0], 1, 1)

    def conv(self, nd: Conv, x: np.ndarray, residual: np.ndarray | None) -> np.ndarray:
        """MVU products rounded to the MFU format, then bias, residual and ReLU in MFU arithmetic.

        Column phases are computed as one convolution with P*Cout outputs at
        every P-th output column, then interleaved.
        """
        n = self.n
        rows_out, cin, kh, kw = nd.weight.shape
        phases, cout = nd.column_phases, nd.out_channels
        c, oh, ow = self._shape(nd.outputs[0])
        zw = -(-ow // phases)
        xv = _padded(x, n)
        rows = _windows(xv, (kh, kw), nd.stride, nd.pads, (oh, zw)).reshape(oh * zw, -1)
        w = conv_matrix(nd.weight, xv.shape[0] // n, -(-rows_out // n), n)
        acc = matvec(quantize(w, self.wfmt, n), quantize(rows, self.xfmt, n), n)[:, :rows_out]
        acc = acc.reshape(oh, zw, phases, cout).reshape(oh, zw * phases, cout)[:, :ow].reshape(oh * ow, cout)
        y = mfu.accumulator_to_format(acc, self.fmt)
        if nd.bias is not None:
            y = mfu.add(y, mfu.to_format(nd.bias, self.fmt)[None, :], self.fmt)
        if residual is not None:
            y = mfu.add(y, residual.reshape(cout, -1).T, self.fmt)
        if nd.relu:
            y = mfu.relu(y, self.fmt)
        return np.asarray(y, np.float32).T.reshape(cout, oh, ow)

    def pool(self, nd, x: np.ndarray) -> np.ndarray:
        """Max (zero border) or average (binary32 sum in window order, rounded, times 1/k) pooling."""
        c, oh, ow = self._shape(nd.outputs[0])
        if isinstance(nd, GlobalPool):
            kernel, stride, pads = x.shape[1:], (1, 1), (0, 0, 0, 0)
        else:
            kernel, stride, pads = nd.kernel, nd.stride, nd.pads
        win = _windows(x, kernel, stride, pads, (oh, ow)).transpose(1, 0, 2)      # (taps, pixels, C)
        if nd.mode == "max":
            y = mfu.reduce_max(win, self.fmt)
        else:
            y = mfu.reduce_sum(win, self.fmt)
            factor = mfu.scalar(np.float32(1.0 / (kernel[0] * kernel[1])), self.fmt)
            y = mfu.mul(y, factor, self.fmt)
        return np.asarray(y, np.float32).T.reshape(c, oh, ow)

    def run(self, feeds: dict[str, np.ndarray], descs) -> dict[str, np.ndarray]:
        """Every graph output for ``feeds`` (raw model inputs; packed as the program's descriptors say)."""
        env: dict[str, np.ndarray] = {}
        for d in descs:
            env[d.name] = np.asarray(mfu.to_format(input_tensor(d, feeds[d.name]), self.fmt), np.float32)
        for nd in self.g.topological():
            ins = [env[t] for t in nd.inputs]
            if isinstance(nd, Conv):
                y = self.conv(nd, ins[0].reshape(self._shape(nd.inputs[0])), ins[1] if nd.residual else None)
            elif isinstance(nd, (Pool, GlobalPool)):
                y = self.pool(nd, ins[0])
            elif isinstance(nd, Add):
                y = mfu.add(ins[0], ins[1], self.fmt)
                y = mfu.relu(y, self.fmt) if nd.relu else y
            elif isinstance(nd, Affine):
                shape = (-1, 1, 1)
                y = mfu.mul(ins[0], mfu.to_format(nd.scale, self.fmt).reshape(shape), self.fmt)
                y = mfu.add(y, mfu.to_format(nd.shift, self.fmt).reshape(shape), self.fmt)
                y = mfu.relu(y, self.fmt) if nd.relu else y
            elif isinstance(nd, Relu):
                y = mfu.relu(ins[0], self.fmt)
            elif isinstance(nd, Concat):
                y = np.concatenate(ins, axis=0)
            elif isinstance(nd, Flatten):
                y = ins[0].reshape(-1)
            else:
                raise TypeError(f"node {nd.name!r}: no reference for {nd.kind}")
            env[nd.outputs[0]] = np.asarray(y, np.float32)
        return {t: env[t].reshape(self.g.shapes[t]) for t in self.g.outputs}


def reference_outputs(compiled, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The numpy evaluation of a ``CompiledModel``'s graph for ``feeds`` (bit-exact target for the simulator)."""
    return Reference(compiled.graph, compiled.config).run(feeds, compiled.program.inputs)
