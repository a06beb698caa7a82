"""Post-training weight rounding: replace each Conv's weights by values its block format holds exactly.

Runs last among the machine passes (after every pass that changes weights:
affine folding, input packing) and before planning.  What to do is read
from ``graph.metadata['weight_rounding']`` (set by ``compile_model``):
``method`` ("nearest", "mse" or "gptq", see :mod:`compiler.weight_rounding`),
``bias_correction``, ``calibration`` (model inputs) and ``progress``.  The
entry is replaced by a summary (no arrays) for the program's metadata.

With calibration data the graph is evaluated layer by layer on the
calibration inputs by ``compiler.reference.Reference`` (the machine's own
arithmetic), each Conv being rounded before it is evaluated, so every
layer's statistics (``H = X^T X`` of its input rows in the activation
format, and their mean) come from the rounded network before it, as the
machine will run it.
"""
from __future__ import annotations

import numpy as np

from npu.config import NPUConfig
from npu.hostio import input_tensor
from npu.npuz import TensorDesc, TensorLayout
from npu.numerics.formats import get_format
from npu.numerics.quantize import quantize_to_values

from .. import weight_rounding as wr
from ..errors import CompileError
from ..ir import Conv, Graph
from ..reference import dilated_windows


def _wfmt(nd: Conv, config: NPUConfig):
    return get_format(getattr(nd, "weight_format", None) or config.weight_format)


def _xfmt(nd: Conv, config: NPUConfig):
    return get_format(getattr(nd, "activation_format", None) or config.activation_format)


def _input_desc(graph: Graph, config: NPUConfig, t: str) -> TensorDesc:
    """A descriptor of model input ``t`` as the host will pack it (what codegen writes, without addresses)."""
    n = config.native_dim
    s = graph.shapes[t]
    c, h, w = (s[0], s[1], s[2]) if len(s) == 3 else (s[0], 1, 1)
    params = TensorLayout(c, h, w, 0, -(-c // n), n, order=graph.metadata.get("io_order", {}).get(t, "chw"),
                          **graph.metadata.get("input_packing", {}).get(t, {}))
    shape = graph.metadata.get("original_shapes", {}).get(t, s)
    return TensorDesc(t, tuple(int(x) for x in shape), "hwc-padded", config.mfu_format, 0, 1, params)


def _machine_rows(ref, nd: Conv, x: np.ndarray, config: NPUConfig) -> np.ndarray:
    """(pixels, taps * Cpad) float64: the window rows the MVU multiplies, quantised to the activation format.

    The windows of ``Reference._conv_sums`` (column phases: every P-th
    output column, as the machine computes them).
    """
    n = config.native_dim
    _rows, _cin, kh, kw = nd.weight.shape
    _c, oh, ow = ref._shape(nd.outputs[0])
    zw = -(-ow // nd.column_phases)
    x = x.reshape(ref._shape(nd.inputs[0]))
    xv = np.zeros((wr.padded_channels(x.shape[0], n), *x.shape[1:]), np.float32)
    xv[:x.shape[0]] = x
    rows = dilated_windows(xv, (kh, kw), nd.stride, nd.pads, (oh, zw), nd.dilation).reshape(oh * zw, -1)
    fmt = _xfmt(nd, config)
    q, scales = quantize_to_values(np.ascontiguousarray(rows, np.float32), fmt, n)
    scale = np.ldexp(1.0, scales.astype(np.int64) - fmt.scale_bias)
    return q.astype(np.float64) * np.repeat(scale, fmt.block_for(n), axis=-1)


class _Stats:
    """H = X^T X per group and the mean input row of one Conv, accumulated over calibration inputs."""

    def __init__(self, nd: Conv, config: NPUConfig, want_h: bool):
        self.cols = wr.group_columns(nd.weight.shape, nd.groups, config.native_dim)       # (G, k)
        g, k = self.cols.shape
        self.h = np.zeros((g, k, k)) if want_h else None
        self.total = None
        self.count = 0

    def add(self, rows: np.ndarray) -> None:
        self.total = rows.sum(axis=0) if self.total is None else self.total + rows.sum(axis=0)
        self.count += rows.shape[0]
        if self.h is not None:
            xg = rows[:, self.cols].transpose(1, 0, 2)               # (G, pixels, k)
            self.h += np.swapaxes(xg, 1, 2) @ xg

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.count, 1)


def _structure(nd: Conv, config: NPUConfig) -> tuple[np.ndarray, np.ndarray]:
    """(active, zero) block-view masks: positions a weight may occupy, and those that must stay zero.

    A strip-packed first layer's phase weights are zero where the phase's
    taps do not reach (``pack_input.strip_weights``); those stay zero.
    """
    n = config.native_dim
    may = (nd.weight != 0) if nd.column_phases > 1 else np.ones(nd.weight.shape, bool)
    active = wr.block_view(may.astype(np.float32), nd.groups, nd.column_phases, n) != 0
    inside = wr.block_view(np.ones(nd.weight.shape, np.float32), nd.groups, nd.column_phases, n) != 0
    return active, inside & ~active


def _gptq(nd: Conv, m: np.ndarray, shared: np.ndarray, stats: _Stats, config: NPUConfig) -> np.ndarray:
    """GPTQ values of block-view matrix ``m`` (scales ``shared`` per block), group by group."""
    fmt = _wfmt(nd, config)
    b = fmt.block_for(config.native_dim)
    rows = m.shape[0]
    groups = wr._row_groups(rows, nd.out_channels, nd.groups)
    rowidx = np.stack([np.flatnonzero(groups == g) for g in range(nd.groups)])         # (G, rows_g)
    cols = stats.cols                                                                # (G, k)
    ri, ci = rowidx[:, :, None], cols[:, None, :]
    active, zero = _structure(nd, config)
    per_block = active.reshape(rows, -1, b).sum(axis=-1)
    free = (per_block == 1)[ri, ci // b]
    q = wr.gptq_round(m[ri, ci], stats.h, shared[ri, ci // b], fmt, free=free, zero=zero[ri, ci])
    out = np.zeros(m.shape, np.float64)
    out[ri, ci] = q
    return out


def round_conv(nd: Conv, config: NPUConfig, method: str, stats: _Stats | None = None,
               bias_correction: bool = False, out_width: int | None = None) -> int:
    """Round one Conv's weights in place (and shift its bias); returns the blocks :func:`make_representable`
    had to repair."""
    n = config.native_dim
    fmt = _wfmt(nd, config)
    shape = nd.weight.shape
    m = wr.block_view(nd.weight, nd.groups, nd.column_phases, n)
    if method == "nearest":
        mq, _s = wr.nearest_round(m, fmt, n)
    else:
        mq, shared = wr.mse_round(m, fmt, n)
        if method == "gptq":
            mq = _gptq(nd, m, shared, stats, config)
    mq, repaired = wr.make_representable(mq, fmt, n)
    if bias_correction:
        shift = wr.bias_shift(m, mq, stats.mean).reshape(nd.column_phases, nd.out_channels)
        p = nd.column_phases
        weights = np.array([len(range(i, out_width or p, p)) for i in range(p)], np.float64)
        shift = weights @ shift / weights.sum()
        bias = np.zeros(nd.out_channels) if nd.bias is None else np.asarray(nd.bias, np.float64)
        nd.bias = (bias + shift).astype(np.float32)
    nd.weight = wr.from_block_view(mq, shape, nd.groups, nd.column_phases)
    return repaired


def round_weights(graph: Graph, config: NPUConfig) -> Graph:
    """Apply ``graph.metadata['weight_rounding']`` to every Conv (nothing when absent or plain nearest)."""
    opts = graph.metadata.get("weight_rounding")
    if not opts:
        return graph
    method, bias_correction = opts.get("method", "nearest"), bool(opts.get("bias_correction", False))
    calibration = opts.get("calibration") or []
    progress = opts.get("progress")
    if method not in wr.METHODS:
        raise CompileError(f"weight rounding {method!r} unknown; choose one of {', '.join(wr.METHODS)}")
    needs_data = method == "gptq" or bias_correction
    if needs_data and not calibration:
        raise CompileError(f"weight rounding {method!r}{' with bias correction' if bias_correction else ''} needs "
                           f"calibration inputs (model inputs, e.g. preprocessed images)")
    convs = [nd for nd in graph.topological() if isinstance(nd, Conv)]
    repaired = 0
    if method != "nearest" and not needs_data:
        for i, nd in enumerate(convs):
            repaired += round_conv(nd, config, method)
            if progress:
                progress(i + 1, len(convs))
    elif needs_data:
        repaired = _round_with_data(graph, config, method, bias_correction, calibration, convs, progress)
    graph.metadata["weight_rounding"] = {"method": method, "bias_correction": bias_correction,
                                         "calibration_inputs": len(calibration) if needs_data else 0,
                                         "layers": len(convs) if (method != "nearest" or needs_data) else 0,
                                         "repaired_blocks": repaired}
    return graph


def _round_with_data(graph: Graph, config: NPUConfig, method: str, bias_correction: bool, calibration, convs,
                     progress) -> int:
    """Round each Conv in topological order on statistics of its input over the calibration inputs."""
    from ..reference import Reference

    if len(graph.inputs) != 1:
        raise CompileError(f"{graph.name}: calibration supports models with one input, not {len(graph.inputs)}")
    t = graph.inputs[0]
    desc = _input_desc(graph, config, t)
    ref = Reference(graph, config)
    envs = []
    for i, x in enumerate(calibration):
        try:
            envs.append({t: np.asarray(ref.ar.value(input_tensor(desc, np.asarray(x, np.float32))), np.float32)})
        except ValueError as exc:
            raise CompileError(f"calibration input {i}: {exc}") from None
    order = list(graph.topological())
    last_use = {}
    for k, nd in enumerate(order):
        for name in nd.inputs:
            last_use[name] = k
    keep = set(graph.outputs)
    repaired, done = 0, 0
    for k, nd in enumerate(order):
        if isinstance(nd, Conv):
            stats = _Stats(nd, config, want_h=method == "gptq")
            for env in envs:
                stats.add(_machine_rows(ref, nd, env[nd.inputs[0]], config))
            out_width = ref._shape(nd.outputs[0])[2]
            repaired += round_conv(nd, config, method, stats, bias_correction, out_width)
            done += 1
            if progress:
                progress(done, len(convs))
        for env in envs:
            env[nd.outputs[0]] = ref.node(nd, [env[name] for name in nd.inputs])
            for name in nd.inputs:
                if last_use.get(name) == k and name not in keep:
                    env.pop(name, None)
    return repaired
