"""Symmetric int8 with one binary32 scale per output channel (a reference format)."""
from __future__ import annotations

import numpy as np

from .formats import FormatError


def quantize_int8_channels(w) -> tuple[np.ndarray, np.ndarray]:
    """Quantise a (rows, cols) matrix: (binary32 scales per row, int8 codes).

    ``scale_r = max|w_r| / 127`` rounded to binary32 (1.0 for an all-zero
    row); codes are ``clamp(RNE(w / scale_r), -127, 127)`` with one rounding
    of the exact quotient (a binary64 quotient of binary32 operands is never
    close enough to a tie to round twice).
    """
    w = np.asarray(w, np.float32)
    if w.ndim != 2:
        raise FormatError(f"int8 per-channel quantisation needs a 2-D matrix, got shape {w.shape}")
    if not np.isfinite(w).all():
        raise FormatError("int8 per-channel quantisation: the matrix holds NaN or infinity")
    amax = np.abs(w).max(axis=1)
    scales = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(w.astype(np.float64) / scales[:, None].astype(np.float64)), -127, 127).astype(np.int8)
    return scales, q


def dequantize_int8_channels(scales: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Values ``q * scale_r`` as binary32."""
    return (np.asarray(q, np.float32) * np.asarray(scales, np.float32)[:, None]).astype(np.float32)
