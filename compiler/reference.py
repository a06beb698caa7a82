"""A numpy evaluation of the compiled graph under the numerics contract (docs/numerics.md).

It computes each layer from whole arrays (im2col, matrices, reductions) with
the contract's primitives in ``npu.numerics`` (block quantisation, the MVU
block-sum rule, MFU rounding), not from instructions or addresses, so
comparing it bit for bit with the simulator checks the compiler's layouts,
chains, banding and synchronisation, and the simulator's execution of them.

With ``exact=True`` the same graph is evaluated in binary64 with no formats
at all: what the compiled graph computes in exact arithmetic, to check the
compiler's rewrites against onnxruntime independently of any format.
"""
from __future__ import annotations

import numpy as np

from npu.config import NPUConfig
from npu.numerics import mfu
from npu.numerics.dot import matvec
from npu.numerics.formats import get_format
from npu.numerics.quantize import quantize, quantize_to_values

from npu.hostio import input_tensor, windows
from .ir import Add, Affine, Clip, Concat, Conv, Flatten, GlobalPool, Graph, Pad, Pool, Relu
from .lower.weights import conv_matrix


def _padded(x: np.ndarray, n: int) -> np.ndarray:
    """C x H x W -> (ceil(C/N)*N) x H x W with zero channels."""
    c = x.shape[0]
    out = np.zeros((-(-c // n) * n, *x.shape[1:]), x.dtype)
    out[:c] = x
    return out


def dilated_windows(x: np.ndarray, kernel, stride, pads, out_hw, dilation=(1, 1)) -> np.ndarray:
    """(OH*OW, kh*kw, C) windows of a C x H x W array whose taps are ``dilation`` pixels apart.

    Tap (ky, kx) of output pixel (oy, ox) reads row ``sy*oy + dy*ky - top``
    and column ``sx*ox + dx*kx - left``; positions outside the array are
    zero.  Dilation 1 is ``npu.hostio.windows``.
    """
    if tuple(dilation) == (1, 1):
        return windows(x, kernel, stride, pads, out_hw)
    (kh, kw), (sy, sx), (dy, dx), (oh, ow) = kernel, stride, dilation, out_hw
    top, left = pads[0], pads[1]
    c, h, w = x.shape
    xp = np.zeros((c, max(h + top, (oh - 1) * sy + dy * (kh - 1) + 1),
                   max(w + left, (ow - 1) * sx + dx * (kw - 1) + 1)), x.dtype)
    xp[:, top:top + h, left:left + w] = x
    taps = [xp[:, dy * ky:dy * ky + sy * (oh - 1) + 1:sy, dx * kx:dx * kx + sx * (ow - 1) + 1:sx]
            for ky in range(kh) for kx in range(kw)]
    return np.stack(taps).transpose(2, 3, 0, 1).reshape(oh * ow, kh * kw, c)


def _block_values(x: np.ndarray, fmt, n: int) -> np.ndarray:
    """The exact values (binary64) of the rows of ``x`` quantised to block format ``fmt``."""
    q, scales = quantize_to_values(x, fmt, n)
    block = fmt.block_for(n)
    codes = scales.astype(np.int64)
    scale = np.where(codes == fmt.scale_nan, np.nan, np.ldexp(1.0, codes - fmt.scale_bias))
    return (q.reshape(*q.shape[:-1], -1, block).astype(np.float64) * scale[..., None]).reshape(q.shape)


class ContractArithmetic:
    """The numerics contract: block-format MVU sums, then MFU operations rounded to the MFU format."""

    dtype = np.float32

    def __init__(self, config: NPUConfig):
        self.n, self.fmt = config.native_dim, config.mfu_format
        self.wfmt = get_format(config.weight_format)
        self.xfmt = get_format(config.activation_format)

    def product(self, w: np.ndarray, rows: np.ndarray, wfmt=None, xfmt=None) -> np.ndarray:
        """MVU accumulators (binary32) of window rows times a weight matrix (output rows x K), in the
        formats ``wfmt`` / ``xfmt`` (default: the machine's own pair, MVU mode 0)."""
        return matvec(quantize(w, wfmt or self.wfmt, self.n), quantize(rows, xfmt or self.xfmt, self.n), self.n)

    def for_layer(self, nd: Conv):
        """``product`` in the formats of one Conv (its own, or the machine's when it names none)."""
        wfmt = get_format(nd.weight_format) if getattr(nd, "weight_format", None) else self.wfmt
        xfmt = get_format(nd.activation_format) if getattr(nd, "activation_format", None) else self.xfmt
        return lambda w, rows: self.product(w, rows, wfmt, xfmt)

    def accumulator(self, acc):
        """An MVU accumulator as an MFU value."""
        return mfu.accumulator_to_format(acc, self.fmt)

    def value(self, v):
        """A constant (bias, scale, scalar register) as an MFU operand."""
        return mfu.to_format(np.asarray(v, np.float32), self.fmt)

    def add(self, a, b):
        return mfu.add(a, b, self.fmt)

    def mul(self, a, b):
        return mfu.mul(a, b, self.fmt)

    def relu(self, a):
        return mfu.relu(a, self.fmt)

    def maximum(self, a, b):
        return mfu.maximum(a, b, self.fmt)

    def minimum(self, a, b):
        return mfu.minimum(a, b, self.fmt)

    def reduce_sum(self, v):
        return mfu.reduce_sum(v, self.fmt)

    def reduce_max(self, v):
        return mfu.reduce_max(v, self.fmt)


class ExactArithmetic:
    """Binary64 arithmetic with no formats: what the compiled graph means mathematically."""

    dtype = np.float64

    def product(self, w: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact-ish (binary64) products of window rows times a weight matrix."""
        return rows.astype(np.float64) @ w.astype(np.float64).T

    def for_layer(self, nd: Conv):
        """``product`` for one Conv (no formats: the same for every layer)."""
        return self.product

    def accumulator(self, acc):
        return np.asarray(acc, np.float64)

    def value(self, v):
        return np.asarray(v, np.float64)

    def add(self, a, b):
        return np.add(a, b, dtype=np.float64)

    def mul(self, a, b):
        return np.multiply(a, b, dtype=np.float64)

    def relu(self, a):
        return np.maximum(a, 0.0)

    def maximum(self, a, b):
        return np.maximum(a, b)

    def minimum(self, a, b):
        return np.minimum(a, b)

    def reduce_sum(self, v):
        return np.sum(np.asarray(v, np.float64), axis=0)

    def reduce_max(self, v):
        return np.max(v, axis=0)


class Reference:
    """Evaluates a compiled graph on one input, layer by layer, in the program's formats (or exactly)."""

    def __init__(self, graph: Graph, config: NPUConfig, *, exact: bool = False):
        self.g, self.cfg = graph, config
        self.n = config.native_dim
        self.ar = ExactArithmetic() if exact else ContractArithmetic(config)

    def _shape(self, t):
        s = self.g.shapes[t]
        return tuple(s) if len(s) == 3 else (s[0], 1, 1)

    def conv(self, nd: Conv, x: np.ndarray, residual: np.ndarray | None) -> np.ndarray:
        """MVU products (in the layer's own formats) rounded to the MFU format, then bias, residual and ReLU in
        MFU arithmetic.

        Column phases are computed as one convolution with P*Cout outputs at
        every P-th output column, then interleaved.
        """
        ar = self.ar
        acc = self._conv_sums(nd, x, ar.for_layer(nd))
        cout = nd.out_channels
        c, oh, ow = self._shape(nd.outputs[0])
        y = ar.accumulator(acc)
        if nd.bias is not None:
            y = ar.add(y, ar.value(nd.bias)[None, :])
        if residual is not None:
            y = ar.add(y, residual.reshape(cout, -1).T)
        y = self._activation(y, nd.relu, nd.clip_max)
        return np.asarray(y, ar.dtype).T.reshape(cout, oh, ow)

    def conv_magnitude(self, nd: Conv, x: np.ndarray) -> np.ndarray:
        """sum |w| |x| (+ |bias|) of every output, in binary64: the scale of the convolution's rounding errors."""
        acc = self._conv_sums(nd, x, lambda w, rows: np.abs(rows.astype(np.float64)) @ np.abs(w.T.astype(
            np.float64)))
        if nd.bias is not None:
            acc = acc + np.abs(nd.bias.astype(np.float64))[None, :]
        c, oh, ow = self._shape(nd.outputs[0])
        return acc.T.reshape(nd.out_channels, oh, ow)

    def _conv_sums(self, nd: Conv, x: np.ndarray, product) -> np.ndarray:
        """(pixels, Cout) results of ``product(matrix, window rows)``, one matrix per output-vector chunk."""
        n = self.n
        rows_out, cin, kh, kw = nd.weight.shape
        phases, cout = nd.column_phases, nd.out_channels
        c, oh, ow = self._shape(nd.outputs[0])
        zw = -(-ow // phases)
        xv = _padded(x, n)
        rows = dilated_windows(xv, (kh, kw), nd.stride, nd.pads, (oh, zw), nd.dilation)   # (pixels, taps, C)
        if nd.groups == 1:
            w = conv_matrix(nd.weight, xv.shape[0] // n, -(-rows_out // n), n)
            acc = product(w, rows.reshape(oh * zw, -1))
        else:
            acc = self._grouped(nd, rows, product)
        acc = acc[:, :rows_out]
        return acc.reshape(oh, zw, phases, cout).reshape(oh, zw * phases, cout)[:, :ow].reshape(oh * ow, cout)

    def _grouped(self, nd: Conv, windows: np.ndarray, product, shortcut: bool = True) -> np.ndarray:
        """Sums of a grouped convolution: each output vector over the input vectors its groups touch.

        ``shortcut`` computes a depthwise convolution's sums without its
        matrix's zeros (the same bits, see ``_depthwise``).
        """
        n = self.n
        cout, cin_g, kh, kw = nd.weight.shape
        if shortcut and cin_g == 1 and nd.groups == cout and np.isfinite(windows).all():
            return self._depthwise(nd, windows)
        cout_g = cout // nd.groups
        connected = np.zeros((cout, windows.shape[2]), bool)    # output channel -> input channels it reads
        for g in range(nd.groups):
            connected[g * cout_g:(g + 1) * cout_g, g * cin_g:(g + 1) * cin_g] = True
        acc = None
        for r in range(-(-cout // n)):
            outs = slice(r * n, min((r + 1) * n, cout))
            used = np.flatnonzero(connected[outs].any(axis=0))
            a, b = used.min() // n, used.max() // n + 1
            w = np.zeros((outs.stop - outs.start, (b - a) * n, kh, kw), np.float32)
            for o in range(outs.start, outs.stop):
                g = o // cout_g
                w[o - outs.start, g * cin_g - a * n:(g + 1) * cin_g - a * n] = nd.weight[o]
            part = product(conv_matrix(w, b - a, 1, n), windows[:, :, a * n:b * n].reshape(windows.shape[0], -1))
            if acc is None:
                acc = np.zeros((windows.shape[0], -(-cout // n) * n), part.dtype)
            acc[:, r * n:(r + 1) * n] = part
        return acc

    def _depthwise(self, nd: Conv, windows: np.ndarray) -> np.ndarray:
        """The sums of ``_grouped`` for a depthwise convolution, without multiplying the matrix's zeros.

        Output channel o's row of an output vector's matrix holds one weight
        per tap, each alone in its block (the others are zero), so each of
        its block sums is that weight, quantised by itself, times the
        quantised input element: one product, rounded once to binary32.
        The zero blocks add +0.0 to an accumulator that is never -0.0, so
        the accumulator is the binary32 sum of those products in tap order:
        the same bits as the whole matrix product (finite inputs; the caller
        checks).  In exact mode the products are summed in binary64.
        """
        n, ar = self.n, self.ar
        cout, _, kh, kw = nd.weight.shape
        taps = kh * kw
        pixels, _, channels = windows.shape
        w = np.ascontiguousarray(nd.weight.reshape(cout, taps).T, np.float32)          # (taps, cout)
        x = windows[:, :, :cout]
        if isinstance(ar, ExactArithmetic):
            acc = np.einsum("ptc,tc->pc", x.astype(np.float64), w.astype(np.float64))
        else:
            wfmt = get_format(nd.weight_format) if nd.weight_format else ar.wfmt
            xfmt = get_format(nd.activation_format) if nd.activation_format else ar.xfmt
            alone = np.zeros((taps * cout, wfmt.block_for(n)), np.float32)
            alone[:, 0] = w.ravel()
            wq = _block_values(alone, wfmt, n)[:, 0].reshape(taps, cout)
            xq = _block_values(np.ascontiguousarray(windows.reshape(pixels * taps, channels)), xfmt, n)
            xq = xq.reshape(pixels, taps, channels)[:, :, :cout]
            acc = np.zeros((pixels, cout), np.float32)
            for t in range(taps):
                acc += (xq[:, t, :] * wq[t][None, :]).astype(np.float32)
        out = np.zeros((pixels, -(-cout // n) * n), acc.dtype)
        out[:, :cout] = acc
        return out

    def _activation(self, y, relu: bool, clip_max: float | None, clip_min: float | None = None):
        """The end of a chain: max with ``clip_min``, ReLU, then min with ``clip_max``."""
        ar = self.ar
        if clip_min is not None:
            y = ar.maximum(y, ar.value(np.float32(clip_min)))
        if relu:
            y = ar.relu(y)
        if clip_max is not None:
            y = ar.minimum(y, ar.value(np.float32(clip_max)))
        return y

    def pool(self, nd, x: np.ndarray) -> np.ndarray:
        """Max (zero border) or average (binary32 sum in window order, rounded, times 1/k) pooling."""
        ar = self.ar
        c, oh, ow = self._shape(nd.outputs[0])
        if isinstance(nd, GlobalPool):
            kernel, stride, pads = x.shape[1:], (1, 1), (0, 0, 0, 0)
        else:
            kernel, stride, pads = nd.kernel, nd.stride, nd.pads
        win = windows(x, kernel, stride, pads, (oh, ow)).transpose(1, 0, 2)      # (taps, pixels, C)
        if nd.mode == "max":
            y = ar.reduce_max(win)
        else:
            y = ar.mul(ar.reduce_sum(win), ar.value(np.float32(1.0 / (kernel[0] * kernel[1]))))
        return np.asarray(y, ar.dtype).T.reshape(c, oh, ow)

    def run(self, feeds: dict[str, np.ndarray], descs) -> dict[str, np.ndarray]:
        """Every graph output for ``feeds`` (raw model inputs; packed as the program's descriptors say)."""
        env = self.tensors(feeds, descs)
        return {t: env[t].reshape(self.g.shapes[t]) for t in self.g.outputs}

    def inputs(self, feeds: dict[str, np.ndarray], descs) -> dict[str, np.ndarray]:
        """The model inputs as the NPU reads them (packed, in the MFU format)."""
        return {d.name: np.asarray(self.ar.value(input_tensor(d, feeds[d.name])), self.ar.dtype) for d in descs}

    def tensors(self, feeds: dict[str, np.ndarray], descs) -> dict[str, np.ndarray]:
        """Every tensor of the graph (inputs as the NPU reads them, then each node's output) for ``feeds``."""
        env = self.inputs(feeds, descs)
        for nd in self.g.topological():
            env[nd.outputs[0]] = self.node(nd, [env[t] for t in nd.inputs])
        return env

    def node(self, nd, ins: list[np.ndarray]) -> np.ndarray:
        """One node's output for the input values ``ins`` (arrays in the IR's shapes)."""
        ar = self.ar
        ins = [np.asarray(v, ar.dtype) for v in ins]
        if isinstance(nd, Conv):
            y = self.conv(nd, ins[0].reshape(self._shape(nd.inputs[0])), ins[1] if nd.residual else None)
        elif isinstance(nd, (Pool, GlobalPool)):
            y = self.pool(nd, ins[0])
        elif isinstance(nd, Add):
            y = self._activation(ar.add(ins[0], ins[1]), nd.relu, nd.clip_max)
        elif isinstance(nd, Affine):
            shape = (-1, 1, 1)
            y = ar.add(ar.mul(ins[0], ar.value(nd.scale).reshape(shape)), ar.value(nd.shift).reshape(shape))
            y = self._activation(y, nd.relu, nd.clip_max)
        elif isinstance(nd, Relu):
            y = ar.relu(ins[0])
        elif isinstance(nd, Clip):
            relu = nd.lo == 0.0
            y = self._activation(ins[0], relu, nd.hi, None if relu else nd.lo)
        elif isinstance(nd, Pad):
            top, left, bottom, right = nd.pads
            y = np.pad(ins[0], ((0, 0), (top, bottom), (left, right)))
        elif isinstance(nd, Concat):
            y = np.concatenate(ins, axis=0)
        elif isinstance(nd, Flatten):
            y = ins[0].reshape(-1)
        else:
            raise TypeError(f"node {nd.name!r}: no reference for {nd.kind}")
        return np.asarray(y, ar.dtype)

    def magnitude(self, nd, ins: list[np.ndarray]) -> np.ndarray:
        """The scale of one node's rounding errors, per output: sum |w| |x| for convolutions, else |inputs|."""
        ins = [np.asarray(v, np.float64) for v in ins]
        if isinstance(nd, Conv):
            m = self.conv_magnitude(nd, ins[0].reshape(self._shape(nd.inputs[0])))
            if nd.residual:
                m = m + np.abs(ins[1].reshape(m.shape))
            return m
        if isinstance(nd, Affine):
            return np.abs(ins[0]) * np.abs(nd.scale.reshape(-1, 1, 1)) + np.abs(nd.shift.reshape(-1, 1, 1))
        if isinstance(nd, Add):
            return np.abs(ins[0]) + np.abs(ins[1])
        if isinstance(nd, (Pool, GlobalPool)) and nd.mode == "avg":
            return np.abs(self.pool(nd, np.abs(ins[0])))
        return np.abs(np.asarray(self.node(nd, ins), np.float64))


def reference_outputs(compiled, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The numpy evaluation of a ``CompiledModel``'s graph for ``feeds`` (bit-exact target for the simulator)."""
    return Reference(compiled.graph, compiled.config).run(feeds, compiled.program.inputs)
