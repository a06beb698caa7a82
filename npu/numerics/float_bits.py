"""Branch-free binary32 bit helpers shared by the Numba kernels.

Integers stay 32-bit (``np.uint32`` at every step), so loops over these
helpers vectorise; Numba would otherwise widen them to 64 bits.
"""
from __future__ import annotations

import numba
import numpy as np

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
def widen_fp16(h):
    """binary32 value of the binary16 bits ``h`` (exact, NaN payload kept)."""
    m = U32(U32(h) & U32(0x7FFF))
    normal = U32(U32(m << U32(13)) + U32(0x38000000))                  # rebias the exponent by 127 - 15
    normal = U32(normal + U32(0x38000000)) if m >= U32(0x7C00) else normal   # infinity / NaN: exponent 255
    sub = as_bits(np.float32(np.int32(m)) * np.float32(2.0 ** -24))     # subnormal: an exact conversion
    r = sub if m < U32(0x400) else normal
    return from_bits(U32(r | U32(U32(U32(h) & U32(0x8000)) << U32(16))))


@numba.njit(cache=True, nogil=True, inline="always")
def widen_bf16(h):
    """binary32 value of the bfloat16 bits ``h``."""
    return from_bits(U32(U32(h) << U32(16)))
