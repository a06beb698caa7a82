"""Typing: turn each remaining ONNX operator into a typed IR node with a static shape, or a Problem.

Runs after constant folding, so every weight, shape vector and axis list is
a constant here.  Every unsupported operator, attribute or shape is
collected; the legality check reports them all at once.  Shapes drop ONNX's
batch dimension (which the loader fixed to 1).
"""
from __future__ import annotations

import numpy as np

from ..errors import Problem
from ..limits import MAX_TENSOR_ELEMENTS, elements
from ..ir import (Add, Affine, BatchNorm, Clip, Concat, Conv, Flatten, GlobalPool, Graph, Identity, OnnxOp, Pad,
                  Pool, Relu, Softmax)


class Unsupported(Exception):
    """Why one node cannot be lowered, and what would make it supported."""


def _const(graph: Graph, node: OnnxOp, i: int, what: str) -> np.ndarray:
    if i >= len(node.inputs) or not node.inputs[i]:
        raise Unsupported(f"{what} (input {i}) is missing")
    t = node.inputs[i]
    if t not in graph.constants:
        raise Unsupported(f"{what} ({t!r}) must be a constant (an initializer), not computed at run time")
    value = np.asarray(graph.constants[t])
    if value.dtype.kind not in "biuf":
        raise Unsupported(f"{what} ({t!r}) has element type {value.dtype}; a real number type is needed")
    return value


def _vector(graph: Graph, node: OnnxOp, i: int, what: str, size: int) -> np.ndarray:
    """Constant input ``i`` as a float32 vector of ``size`` values (shape (size,), or (1, size, 1, ...))."""
    v = _const(graph, node, i, what)
    if v.size != size or sum(d != 1 for d in v.shape) > 1:
        raise Unsupported(f"{what} has shape {list(v.shape)}; {size} values (one per channel) are needed")
    return v.astype(np.float32).reshape(size)


def _ints(node: OnnxOp, attr: str, default, count: int, lo: int) -> tuple[int, ...]:
    """Attribute ``attr`` as ``count`` integers >= ``lo`` (``default`` when absent)."""
    v = node.attrs.get(attr, default)
    if not isinstance(v, (list, tuple)) or len(v) != count or \
            not all(isinstance(x, (int, np.integer)) and x >= lo for x in v):
        raise Unsupported(f"{attr}={v!r}; {count} integers >= {lo} are needed (only 2-d spatial operators are "
                          f"supported)")
    return tuple(int(x) for x in v)


def _act_shape(graph: Graph, t: str) -> tuple[int, ...]:
    s = graph.shapes.get(t)
    if s is None:
        raise Unsupported(f"the shape of {t!r} is unknown; export with static shapes")
    if any(d < 1 for d in s):
        raise Unsupported(f"tensor {t!r} has shape {list(s)}; every dimension must be at least 1")
    if len(s) < 1 or s[0] != 1:
        raise Unsupported(f"tensor {t!r} has shape {list(s)}; only batch 1 (N x C x H x W or N x K) is supported")
    return tuple(s[1:])


def _chw(graph: Graph, t: str) -> tuple[int, int, int]:
    s = _act_shape(graph, t)
    if len(s) != 3:
        raise Unsupported(f"input {t!r} has shape {[1, *s]}; a 4-d N x C x H x W tensor is needed")
    return s


def _dilations(node: OnnxOp, dilatable: bool) -> tuple[int, int]:
    """The ``dilations`` attribute as (dh, dw); only convolutions (``dilatable``) may space their taps."""
    d = node.attrs.get("dilations", [1, 1])
    if not dilatable:
        if not isinstance(d, (list, tuple)) or any(x != 1 for x in d):
            raise Unsupported(f"dilations {d!r} are not supported for pooling; only dilation 1")
        return (1, 1)
    return _ints(node, "dilations", [1, 1], 2, 1)


def _spatial_attrs(node: OnnxOp, kernel: tuple[int, int], in_hw: tuple[int, int], dilatable: bool = False):
    """(strides, pads, dilation) of a convolution or pooling node."""
    a = node.attrs
    if len(kernel) != 2 or min(kernel) < 1:
        raise Unsupported(f"kernel {list(kernel)}; a 2-d kernel of at least 1 x 1 is needed")
    dilation = _dilations(node, dilatable)
    strides = _ints(node, "strides", [1, 1], 2, 1)
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", "VALID"):
        pads = _ints(node, "pads", [0, 0, 0, 0], 4, 0) if auto == "NOTSET" else (0, 0, 0, 0)
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        if dilation != (1, 1):
            raise Unsupported(f"auto_pad={auto} with dilations {list(dilation)} is not supported (onnxruntime "
                              f"refuses it too); give the padding as explicit pads")
        pads_b, pads_e = [], []
        for k, s, n in zip(kernel, strides, in_hw):
            total = max((-(-n // s) - 1) * s + k - n, 0)
            small, big = total // 2, total - total // 2
            pads_b.append(small if auto == "SAME_UPPER" else big)
            pads_e.append(big if auto == "SAME_UPPER" else small)
        pads = (pads_b[0], pads_b[1], pads_e[0], pads_e[1])
    else:
        raise Unsupported(f"auto_pad={auto!r} is not an ONNX value")
    return strides, pads, dilation


def _extent(kernel, dilation) -> tuple[int, int]:
    """Input pixels a window spans per axis: d*(k-1)+1."""
    return tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))


def _out_hw(in_hw, kernel, strides, pads, ceil=False, dilation=(1, 1)):
    out = []
    extent = _extent(kernel, dilation)
    for i in range(2):
        span = in_hw[i] + pads[i] + pads[i + 2] - extent[i]
        if span < 0:
            padded = [in_hw[0] + pads[0] + pads[2], in_hw[1] + pads[1] + pads[3]]
            if tuple(dilation) != (1, 1):
                raise Unsupported(f"kernel {list(kernel)} with dilations {list(dilation)} spans "
                                  f"{extent[0]}x{extent[1]} input pixels, more than the padded input "
                                  f"{padded[0]}x{padded[1]} ({in_hw[0]}x{in_hw[1]} with pads {list(pads)}); "
                                  f"use a smaller dilation or more padding")
            raise Unsupported(f"kernel {list(kernel)} is larger than the padded input {list(in_hw)}")
        out.append((-(-span // strides[i]) if ceil else span // strides[i]) + 1)
    return tuple(out)


def _conv(graph, n):
    c, h, w = _chw(graph, n.inputs[0])
    weight = _const(graph, n, 1, "the weight").astype(np.float32)
    if weight.ndim != 4:
        raise Unsupported(f"weight of rank {weight.ndim}; only 2-d convolutions (rank-4 weights) are supported")
    if min(weight.shape) < 1:
        raise Unsupported(f"weight of shape {list(weight.shape)}; every dimension must be at least 1")
    group = n.attrs.get("group", 1)
    if not isinstance(group, (int, np.integer)) or group < 1 or c % group or weight.shape[0] % group:
        raise Unsupported(f"group={group!r} does not divide the {c} input and {weight.shape[0]} output channels")
    if weight.shape[1] * group != c:
        raise Unsupported(f"weight {list(weight.shape)} with group={group} does not match {c} input channels")
    bias = _vector(graph, n, 2, "the bias", weight.shape[0]) if len(n.inputs) > 2 and n.inputs[2] else None
    kernel = tuple(weight.shape[2:])
    if "kernel_shape" in n.attrs and (not isinstance(n.attrs["kernel_shape"], (list, tuple)) or
                                      tuple(n.attrs["kernel_shape"]) != kernel):
        raise Unsupported(f"kernel_shape {n.attrs['kernel_shape']!r} does not match the weight's {list(kernel)}")
    strides, pads, dilation = _spatial_attrs(n, kernel, (h, w), dilatable=True)
    oh, ow = _out_hw((h, w), kernel, strides, pads, dilation=dilation)
    return Conv(n.name, [n.inputs[0]], [n.outputs[0]], source="Conv", weight=weight, bias=bias,
                stride=strides, pads=pads, groups=group, dilation=dilation), (weight.shape[0], oh, ow)


def _dense(graph, n, weight: np.ndarray, bias):
    """A fully connected layer on a vector input, as a 1x1 convolution of a C x 1 x 1 tensor."""
    s = _act_shape(graph, n.inputs[0])
    if len(s) != 1:
        raise Unsupported(f"input of shape {[1, *s]}; flatten it to N x K first")
    if weight.ndim != 2 or min(weight.shape) < 1:
        raise Unsupported(f"weight of shape {list(weight.shape)}; a 2-d matrix of at least 1 x 1 is needed")
    if weight.shape[1] != s[0]:
        raise Unsupported(f"weight {list(weight.shape)} does not match {s[0]} input features")
    return Conv(n.name, [n.inputs[0]], [n.outputs[0]], source=n.op_type, weight=weight[:, :, None, None],
                bias=bias), (weight.shape[0],)


def _gemm(graph, n):
    a = n.attrs
    if a.get("transA", 0):
        raise Unsupported("transA=1 is not supported; the activation must be the left operand")
    b = _const(graph, n, 1, "B").astype(np.float32)
    if b.ndim != 2:
        raise Unsupported(f"B of shape {list(b.shape)}; a 2-d matrix is needed")
    b = b if a.get("transB", 0) else b.T
    weight = np.float32(a.get("alpha", 1.0)) * b
    bias = None
    if len(n.inputs) > 2 and n.inputs[2]:
        cvec = np.float32(a.get("beta", 1.0)) * _const(graph, n, 2, "C").astype(np.float32)
        if cvec.size not in (1, weight.shape[0]) or sum(d != 1 for d in cvec.shape) > 1 or \
                (cvec.ndim == 2 and cvec.shape[1] != cvec.size) or cvec.ndim > 2:
            raise Unsupported(f"C of shape {list(cvec.shape)} does not broadcast to the {weight.shape[0]} outputs "
                              f"of one row; a scalar or one value per output is needed")
        bias = np.broadcast_to(cvec.reshape(-1), (weight.shape[0],)).astype(np.float32)
    return _dense(graph, n, weight, bias)


def _matmul(graph, n):
    w = _const(graph, n, 1, "the right operand").astype(np.float32)
    if w.ndim != 2:
        raise Unsupported(f"right operand of rank {w.ndim}; only a 2-d constant matrix is supported")
    return _dense(graph, n, np.ascontiguousarray(w.T), None)


def _batchnorm(graph, n):
    s = _act_shape(graph, n.inputs[0])
    if n.attrs.get("spatial", 1) != 1:
        raise Unsupported("spatial=0 is not supported")
    if n.attrs.get("training_mode", 0) or len([o for o in n.outputs if o]) > 1:
        raise Unsupported("training-mode BatchNormalization (extra outputs) is not supported; export in eval mode")
    if not s:
        raise Unsupported("the input is a scalar; BatchNormalization needs channels")
    gamma, beta, mean, var = (_vector(graph, n, i, w, s[0]).astype(np.float64)
                              for i, w in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "var")))
    eps = n.attrs.get("epsilon", 1e-5)
    scale = gamma / np.sqrt(var + eps)
    shift = beta - mean * scale
    return BatchNorm(n.name, [n.inputs[0]], [n.outputs[0]], source="BatchNormalization",
                     scale=scale.astype(np.float32), shift=shift.astype(np.float32)), s


def _pool(graph, n):
    c, h, w = _chw(graph, n.inputs[0])
    a = n.attrs
    kernel = a.get("kernel_shape", ())
    if not isinstance(kernel, (list, tuple)) or len(kernel) != 2:
        raise Unsupported(f"kernel_shape {kernel!r}; only 2-d pooling is supported")
    kernel = tuple(kernel)
    if a.get("storage_order", 0):
        raise Unsupported("storage_order=1 is not supported")
    if len([o for o in n.outputs if o]) > 1:
        raise Unsupported("the Indices output of MaxPool is not supported")
    strides, pads, _ = _spatial_attrs(n, kernel, (h, w))
    ceil = bool(a.get("ceil_mode", 0))
    mode = "max" if n.op_type == "MaxPool" else "avg"
    out = _out_hw((h, w), kernel, strides, pads, False)
    if ceil:
        pads = _ceil_pads((h, w), kernel, strides, pads)
        if mode == "avg" and _out_hw((h, w), kernel, strides, pads, False) != out:
            raise Unsupported("ceil_mode=1 changes the output size of this average pool; only floor rounding is "
                              "supported here (adjust the padding or use ceil_mode=0)")
        out = _out_hw((h, w), kernel, strides, pads, False)
    include = bool(a.get("count_include_pad", 0))
    if mode == "avg" and any(pads) and not include:
        raise Unsupported("average pooling with padding and count_include_pad=0 is not supported "
                          "(set count_include_pad=1 or remove the padding)")
    return Pool(n.name, [n.inputs[0]], [n.outputs[0]], source=n.op_type, mode=mode, kernel=kernel,
                stride=strides, pads=pads), (c, *out)


def _ceil_pads(in_hw, kernel, strides, pads) -> tuple[int, int, int, int]:
    """The pads that give floor rounding ceil_mode's output size: the last window may hang over the end, unless
    it would start past the input and its leading padding (onnxruntime and PyTorch drop that window)."""
    ends = list(pads[2:])
    for i in range(2):
        span = in_hw[i] + pads[i] + pads[i + 2] - kernel[i]
        out = -(-span // strides[i]) + 1
        if (out - 1) * strides[i] >= in_hw[i] + pads[i]:
            out -= 1
        ends[i] += max((out - 1) * strides[i] + kernel[i] - (in_hw[i] + pads[i] + pads[i + 2]), 0)
    return (pads[0], pads[1], ends[0], ends[1])


def _global_pool(graph, n):
    c, _, _ = _chw(graph, n.inputs[0])
    return GlobalPool(n.name, [n.inputs[0]], [n.outputs[0]], source=n.op_type,
                      mode="max" if n.op_type == "GlobalMaxPool" else "avg"), (c, 1, 1)


def _reduce_mean(graph, n):
    c, _, _ = _chw(graph, n.inputs[0])
    axes = n.attrs.get("axes")
    if axes is None and len(n.inputs) > 1 and n.inputs[1]:
        axes = _const(graph, n, 1, "axes").tolist()
    axes = [int(x) for x in np.asarray(axes if axes is not None else [], np.int64).reshape(-1)]
    if any(not -4 <= x < 4 for x in axes):
        raise Unsupported(f"ReduceMean over axes {axes} of a 4-d tensor; an axis must be in [-4, 3]")
    axes = sorted(x % 4 for x in axes)
    if axes != [2, 3]:
        raise Unsupported(f"ReduceMean over axes {axes}; only the spatial axes [2, 3] (global pooling) are "
                          f"supported")
    keep = n.attrs.get("keepdims", 1)
    return GlobalPool(n.name, [n.inputs[0]], [n.outputs[0]], source="ReduceMean", mode="avg"), \
        ((c, 1, 1) if keep else (c,))


def _channel_vector(graph, t: str, c: int, shape) -> np.ndarray | None:
    """A constant that broadcasts per channel over an activation of ``shape``, as a length-C vector."""
    v = np.asarray(graph.constants[t])
    if v.dtype.kind not in "biuf":
        return None
    v = v.astype(np.float32)
    if v.size == 1:
        return np.full(c, v.reshape(()), np.float32)
    full = (1, *shape)
    if v.ndim > len(full):          # leading ones broadcast away; anything else makes the result larger
        if any(d != 1 for d in v.shape[:v.ndim - len(full)]):
            return None
        v = v.reshape(v.shape[v.ndim - len(full):])
    squeezed = v
    pad = (1,) * (len(full) - squeezed.ndim) + squeezed.shape
    if len(pad) == len(full) and all(p in (1, f) for p, f in zip(pad, full)) and \
            all(p == 1 for i, p in enumerate(pad) if i != 1):
        return np.broadcast_to(squeezed.reshape(-1), (c,)).astype(np.float32) if pad[1] in (1, c) else None
    return None


def _binary(graph, n):
    ins = [t for t in n.inputs if t]
    consts = [t for t in ins if graph.is_constant(t)]
    acts = [t for t in ins if not graph.is_constant(t)]
    if n.op_type == "Sum" and len(ins) == 1:
        return Identity(n.name, [ins[0]], [n.outputs[0]], source="Sum"), _act_shape(graph, ins[0])
    if len(acts) == 2 and not consts and n.op_type in ("Add", "Sum"):
        sa, sb = _act_shape(graph, acts[0]), _act_shape(graph, acts[1])
        if sa != sb:
            raise Unsupported(f"operands of shapes {[1, *sa]} and {[1, *sb]}; only equal shapes are supported")
        return Add(n.name, acts, [n.outputs[0]], source=n.op_type), sa
    if len(acts) == 1 and len(consts) == 1 and n.op_type in ("Add", "Mul", "Sum", "Sub"):
        shape = _act_shape(graph, acts[0])
        vec = _channel_vector(graph, consts[0], shape[0], shape)
        if vec is None:
            raise Unsupported(f"the constant operand of shape {list(graph.constants[consts[0]].shape)} does not "
                              f"broadcast per channel; only per-channel or scalar constants are supported")
        if n.op_type == "Sub" and n.inputs[0] != acts[0]:
            raise Unsupported("constant - activation is not supported; only activation - constant")
        if n.op_type == "Mul":
            return Affine(n.name, acts, [n.outputs[0]], source="Mul", scale=vec,
                          shift=np.zeros_like(vec)), shape
        sign = np.float32(-1 if n.op_type == "Sub" else 1)
        return Affine(n.name, acts, [n.outputs[0]], source=n.op_type, scale=np.ones_like(vec),
                      shift=sign * vec), shape
    raise Unsupported(f"{n.op_type} of {len(acts)} activation(s) and {len(consts)} constant(s) is not supported; "
                      f"supported: the sum of two equal-shaped activations, or an activation and a per-channel "
                      f"constant")


def _concat(graph, n):
    shapes = [_act_shape(graph, t) for t in n.inputs]
    axis = n.attrs.get("axis", 1)
    if any(graph.is_constant(t) for t in n.inputs):
        raise Unsupported("concatenation with a constant is not supported")
    if axis not in (1, -3) or any(len(s) != 3 for s in shapes):
        raise Unsupported(f"concatenation along axis {axis}; only channels (axis 1) of 4-d tensors")
    if len({s[1:] for s in shapes}) != 1:
        raise Unsupported(f"inputs of spatial sizes {[list(s[1:]) for s in shapes]} differ")
    return Concat(n.name, list(n.inputs), [n.outputs[0]], source="Concat"), \
        (sum(s[0] for s in shapes), *shapes[0][1:])


def _flatten(graph, n):
    s = _act_shape(graph, n.inputs[0])
    if n.op_type == "Flatten":
        if n.attrs.get("axis", 1) != 1:
            raise Unsupported(f"axis={n.attrs['axis']}; only axis=1 (keep the batch) is supported")
    else:
        target = _const(graph, n, 1, "the target shape").astype(np.int64).reshape(-1).tolist()
        total = int(np.prod(s))
        if n.attrs.get("allowzero", 0) and 0 in target:
            raise Unsupported(f"reshape to {target} with allowzero=1 makes an empty tensor")
        ok = (len(target) == 2 and target[0] in (1, 0, -1) and target[1] in (total, -1) and target != [-1, -1]) or \
             (len(target) == 4 and len(s) == 3 and target[0] in (1, 0) and tuple(target[1:]) == tuple(s))
        if not ok:
            raise Unsupported(f"reshape of {[1, *s]} to {target}; only flattening to N x K is supported")
        if len(target) == 4:
            return Identity(n.name, [n.inputs[0]], [n.outputs[0]], source="Reshape"), s
    return Flatten(n.name, [n.inputs[0]], [n.outputs[0]], source=n.op_type), (int(np.prod(s)),)


def _softmax(graph, n):
    s = _act_shape(graph, n.inputs[0])
    axis = n.attrs.get("axis", 1 if n.opset < 13 else -1)
    if len(s) != 1 or axis not in (1, -1):
        raise Unsupported(f"softmax over axis {axis} of {[1, *s]}; only over the classes of an N x K tensor")
    return Softmax(n.name, [n.inputs[0]], [n.outputs[0]], source="Softmax"), s


def _identity(graph, n):
    if n.op_type == "Dropout":
        outs = [o for o in n.outputs[1:] if o]
        training = len(n.inputs) > 2 and n.inputs[2] and graph.is_constant(n.inputs[2]) and \
            bool(np.asarray(graph.constants[n.inputs[2]]).reshape(-1)[:1].any())
        if outs and any(graph.consumers(o) for o in outs) or n.attrs.get("is_test", 1) == 0 or training:
            raise Unsupported("training-mode Dropout (training_mode=True or the mask output in use) is not "
                              "supported; export the model in eval mode")
    return Identity(n.name, [n.inputs[0]], [n.outputs[0]], source=n.op_type), _act_shape(graph, n.inputs[0])


def _relu(graph, n):
    return Relu(n.name, [n.inputs[0]], [n.outputs[0]], source="Relu"), _act_shape(graph, n.inputs[0])


def _scalar_bound(graph, n, i: int, attr: str) -> float | None:
    """An optional Clip bound: input ``i`` (opset >= 11) or attribute ``attr`` (older opsets)."""
    if n.opset < 11:
        v = n.attrs.get(attr)
        return None if v is None else float(v)
    if i >= len(n.inputs) or not n.inputs[i]:
        return None
    v = _const(graph, n, i, f"the {attr} bound")
    if v.size != 1:
        raise Unsupported(f"the {attr} bound has shape {list(v.shape)}; only a scalar is supported")
    return float(v.reshape(()))


def _clip(graph, n):
    s = _act_shape(graph, n.inputs[0])
    lo, hi = _scalar_bound(graph, n, 1, "min"), _scalar_bound(graph, n, 2, "max")
    lo = None if lo is not None and np.isneginf(lo) else lo
    hi = None if hi is not None and np.isposinf(hi) else hi
    if lo is not None and hi is not None and lo > hi:
        raise Unsupported(f"min {lo} is above max {hi}")
    if any(v is not None and not np.isfinite(np.float32(v)) for v in (lo, hi)):
        raise Unsupported(f"bounds {lo}, {hi} are not finite binary32 numbers")
    return Clip(n.name, [n.inputs[0]], [n.outputs[0]], source="Clip", lo=lo, hi=hi), s


def _pad(graph, n):
    c, h, w = _chw(graph, n.inputs[0])
    mode = n.attrs.get("mode", "constant")
    if mode != "constant":
        raise Unsupported(f"mode={mode!r}; only constant (zero) padding is supported")
    if n.opset < 11:
        pads, value = list(n.attrs.get("pads", [])), n.attrs.get("value", 0.0)
        if not isinstance(value, (int, float)):
            raise Unsupported(f"value={value!r}; one number is needed")
        value = float(value)
    else:
        pads = _const(graph, n, 1, "pads").astype(np.int64).reshape(-1).tolist()
        value = 0.0
        if len(n.inputs) > 2 and n.inputs[2]:
            v = _const(graph, n, 2, "the constant value")
            if v.size != 1:
                raise Unsupported(f"the constant value has shape {list(v.shape)}; one value is needed")
            value = float(v.reshape(-1)[0])
        if len(n.inputs) > 3 and n.inputs[3]:
            axes = [int(a) for a in _const(graph, n, 3, "axes").reshape(-1)]
            if any(not -4 <= a < 4 for a in axes) or len(set(a % 4 for a in axes)) != len(axes) or \
                    len(pads) != 2 * len(axes):
                raise Unsupported(f"pads {pads} over axes {axes}: distinct axes in [-4, 3] and two pads per "
                                  f"axis are needed")
            axes = [a % 4 for a in axes]
            full = [0] * 8
            for k, a in enumerate(axes):
                full[a], full[a + 4] = pads[k], pads[k + len(axes)]
            pads = full
    if len(pads) != 8:
        raise Unsupported(f"pads {pads}; 8 values (N, C, H, W begin and end) are needed for a 4-d tensor")
    if value != 0.0:
        raise Unsupported(f"constant value {value}; only zero padding is supported")
    if pads[0] or pads[1] or pads[4] or pads[5]:
        raise Unsupported(f"pads {pads} pad the batch or channel dimension; only H and W can be padded")
    if min(pads) < 0:
        raise Unsupported(f"pads {pads} are negative (cropping); only non-negative padding is supported")
    top, left, bottom, right = pads[2], pads[3], pads[6], pads[7]
    return Pad(n.name, [n.inputs[0]], [n.outputs[0]], source="Pad", pads=(top, left, bottom, right)), \
        (c, h + top + bottom, w + left + right)


LIFTERS = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": _matmul, "BatchNormalization": _batchnorm,
    "MaxPool": _pool, "AveragePool": _pool, "GlobalAveragePool": _global_pool, "GlobalMaxPool": _global_pool,
    "ReduceMean": _reduce_mean, "Add": _binary, "Sum": _binary, "Mul": _binary, "Sub": _binary,
    "Concat": _concat, "Flatten": _flatten, "Reshape": _flatten, "Softmax": _softmax, "Identity": _identity,
    "Dropout": _identity, "Relu": _relu, "Clip": _clip, "Pad": _pad,
}


def _check_output(graph: Graph, n: OnnxOp, shape: tuple[int, ...]) -> None:
    """The typed node's output: positive dimensions, within the size limit, as ONNX's shape inference has it."""
    t = n.outputs[0]
    if not t:
        raise Unsupported("the output has no name")
    if any(d < 1 for d in shape):
        raise Unsupported(f"the output {t!r} would have shape {[1, *shape]}; every dimension must be at least 1")
    count = elements(shape)
    if count > MAX_TENSOR_ELEMENTS:
        raise Unsupported(f"the output {t!r} would have shape {[1, *shape]}, {count:,} elements, more than the "
                          f"compiler's limit of {MAX_TENSOR_ELEMENTS:,}")
    inferred = graph.shapes.get(t)
    if inferred is not None and tuple(inferred) != (1, *shape):
        raise Unsupported(f"ONNX's shape inference gives the output {t!r} shape {list(inferred)}, the compiler "
                          f"computes {[1, *shape]}")


def lift(graph: Graph) -> Graph:
    """Replace each OnnxOp by its typed node; unsupported ones stay and are listed in ``graph.problems``.

    A node that fails while it reads an output of unknown shape from a node
    that failed is an echo: it is counted, not listed, so the report names
    each cause once.
    """
    problems: list[Problem] = []
    failed: set[str] = set()          # tensors written by nodes that could not be typed
    echoes: list[str] = []
    for n in list(graph.topological()):
        if not isinstance(n, OnnxOp):
            continue
        if n.domain not in ("", "ai.onnx"):
            problems.append(Problem(n.name, f"{n.domain}.{n.op_type}", "operators outside the default ONNX domain "
                                    "are not supported"))
            failed.update(n.outputs)
            continue
        handler = LIFTERS.get(n.op_type)
        if handler is None:
            problems.append(Problem(n.name, n.op_type, f"operator {n.op_type} is not supported (supported: "
                                    f"{', '.join(sorted(LIFTERS))}, and any operator on constants only)"))
            failed.update(n.outputs)
            continue
        try:
            typed, shape = handler(graph, n)
            _check_output(graph, n, shape)
        except Unsupported as exc:
            unknown = [t for t in n.inputs if t and t not in graph.shapes and not graph.is_constant(t)]
            if failed.intersection(unknown):          # it cannot be checked before the failed node is fixed
                echoes.append(n.name)
            else:
                problems.append(Problem(n.name, n.op_type, str(exc)))
            failed.update(n.outputs)
            continue
        graph.replace(n.name, typed)
        graph.shapes[typed.outputs[0]] = (1, *shape)
    if echoes:
        problems.append(Problem(echoes[0], "...", f"{len(echoes)} later node(s) reading the outputs of the nodes "
                                f"above could not be checked (this is the first); fix those first"))
    graph.metadata["unchecked_nodes"] = echoes
    # drop the batch dimension everywhere once every node is typed
    graph.shapes = {t: (s[1:] if t not in graph.constants and len(s) >= 2 and s[0] == 1 else s)
                    for t, s in graph.shapes.items()}
    graph.problems = problems
    return graph
