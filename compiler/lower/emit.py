"""Emitters: one layer over planned layouts -> one chain of instructions.

Every emitter sweeps all output pixels with the chain's loops (n0 = output
rows, n1 = output columns); convolution taps are the reduction loops (k0, k1)
and input-channel vectors the contiguous run c; output-channel vectors are
the rows r.  Inputs must carry a zero border at least as wide as the layer's
padding.
"""
from __future__ import annotations

from npu.isa.encoding import Instruction, make

from npu.layout import ActLayout


def _window_origin(src: ActLayout, pads: tuple[int, int]) -> int:
    top, left = pads
    if top > src.pad or left > src.pad:
        raise ValueError(f"padding ({top}, {left}) exceeds the input's {src.pad}-pixel zero border")
    return src.addr(-top, -left)


def _write(dst: ActLayout) -> Instruction:
    return make("v_wr", base=dst.addr(0, 0), s_n0=dst.row_stride, s_n1=dst.stride, s_r=1)


def emit_conv(src: ActLayout, dst: ActLayout, *, kernel: tuple[int, int], stride: tuple[int, int] = (1, 1),
              pads: tuple[int, int] = (0, 0), mbase: int, bias_addr: int | None = None,
              residual: ActLayout | None = None, relu: bool = False, wait=(), signal=()) -> list[Instruction]:
    """A convolution (optionally + bias, + residual, ReLU) as one mv_mul chain.

    ``pads`` are the top and left padding; the output size in ``dst`` fixes
    how far the sweep goes.  The weight tiles (``conv_matrix``) sit at MRF
    tile ``mbase``, the bias vectors at ``bias_addr``.
    """
    kh, kw = kernel
    sy, sx = stride
    ops = [
        make("chain", n0=dst.height, n1=dst.width, k0=kh, k1=kw, c=src.vectors, r=dst.vectors, wait=wait),
        make("v_rd", base=_window_origin(src, pads), s_n0=sy * src.row_stride, s_n1=sx * src.stride,
             s_k0=src.row_stride, s_k1=src.stride),
        make("mv_mul", mbase=mbase),
    ]
    if bias_addr is not None:
        ops.append(make("vv_add", base=bias_addr, s_r=1))
    if residual is not None:
        ops.append(make("vv_add", base=residual.addr(0, 0), s_n0=residual.row_stride, s_n1=residual.stride,
                        s_r=1))
    if relu:
        ops.append(make("v_relu"))
    return ops + [_write(dst), make("end_chain", signal=signal)]


def emit_pool(src: ActLayout, dst: ActLayout, *, kind: str, kernel: tuple[int, int],
              stride: tuple[int, int] = (1, 1), pads: tuple[int, int] = (0, 0), scale_sreg: int | None = None,
              wait=(), signal=()) -> list[Instruction]:
    """Max pooling (reduce=max) or average pooling (reduce=sum, then times a scalar register).

    Max pooling over a zero border equals pooling with -inf padding only when
    the input is non-negative (it follows a ReLU); average pooling counts the
    border (count_include_pad).  Average pooling needs ``scale_sreg`` holding
    1 / (kh * kw).
    """
    if kind not in ("max", "avg"):
        raise ValueError(f"pool kind {kind!r}: choose max or avg")
    if kind == "avg" and scale_sreg is None:
        raise ValueError("average pooling needs the scalar register holding 1/(kh*kw)")
    kh, kw = kernel
    sy, sx = stride
    ops = [
        make("chain", n0=dst.height, n1=dst.width, k0=kh, k1=kw, c=1, r=dst.vectors,
             reduce="max" if kind == "max" else "sum", wait=wait),
        make("v_rd", base=_window_origin(src, pads), s_n0=sy * src.row_stride, s_n1=sx * src.stride,
             s_k0=src.row_stride, s_k1=src.stride, s_r=1),
    ]
    if kind == "avg":
        ops.append(make("vs_mul", sreg=scale_sreg))
    return ops + [_write(dst), make("end_chain", signal=signal)]


def emit_add(a: ActLayout, b: ActLayout, dst: ActLayout, *, relu: bool = False, wait=(),
             signal=()) -> list[Instruction]:
    """Elementwise a + b (a residual join), optionally followed by ReLU."""
    ops = [
        make("chain", n0=dst.height, n1=dst.width, r=dst.vectors, wait=wait),
        make("v_rd", base=a.addr(0, 0), s_n0=a.row_stride, s_n1=a.stride, s_r=1),
        make("vv_add", base=b.addr(0, 0), s_n0=b.row_stride, s_n1=b.stride, s_r=1),
    ]
    if relu:
        ops.append(make("v_relu"))
    return ops + [_write(dst), make("end_chain", signal=signal)]




__all__ = ["emit_conv", "emit_pool", "emit_add"]
