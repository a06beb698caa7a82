"""binary32 / binary16 / bfloat16 bit helpers shared by the Numba kernels.

All are branch-free and loops over them vectorise: integers stay 32-bit
(``np.uint32`` at every step; Numba would otherwise widen them to 64 bits),
and binary16 conversions are LLVM's IEEE ``fptrunc`` / ``fpext`` (one
instruction each on x86-64 with F16C and on AArch64).
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

U32 = np.uint32


@numba.njit(cache=True, nogil=True, inline="always")
def as_bits(x):
    """The binary32 bit pattern of ``x``."""
    return np.float32(x).view(np.uint32)


@numba.njit(cache=True, nogil=True, inline="always")
def from_bits(b):
    """The binary32 value of bit pattern ``b``."""
    return U32(b).view(np.float32)


@numba.njit(cache=True, nogil=True, inline="always")
def widen_bf16(h):
    """binary32 value of the bfloat16 bits ``h``."""
    return from_bits(U32(U32(h) << U32(16)))


@intrinsic
def fp16_bits(typingctx, x):
    """binary16 bits of binary32 ``x`` rounded to nearest-even (overflow to infinity, NaN stays NaN)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))
    return types.uint16(types.float32), codegen


@intrinsic
def widen_fp16(typingctx, h):
    """binary32 value of the binary16 bits ``h`` (exact; one IEEE conversion, ``fpext``)."""
    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(types.uint16), codegen
