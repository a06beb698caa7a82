"""Byte images of quantised data, exactly as DRAM and the RTL hold them.

A block tensor of shape ``(rows, K)`` (blocks along K) packs as::

    [scale section]   rows * K/B bytes, one scale code per byte, row-major, block order
    [element section] rows * K element codes of w bits each, row-major,
                      packed LSB-first into little-endian bytes, zero-padded
                      to a whole byte at the very end

A weight tile is such a tensor with ``rows = K = N``.  Scalar formats pack
little-endian, element after element.  See docs/numerics.md, "Byte images".
"""
from __future__ import annotations

import numpy as np

from .formats import BlockFormat, FloatFormat, FormatError, IntChannelFormat, get_format


def packed_nbytes(fmt, rows: int, cols: int, native_dim: int) -> int:
    """Bytes of the packed image of a ``rows x cols`` tensor in ``fmt``."""
    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    if isinstance(fmt, BlockFormat):
        block = fmt.block_for(native_dim)
        if cols % block:
            raise FormatError(f"{fmt.name}: row length {cols} is not a multiple of the block {block}")
        return rows * (cols // block) + (rows * cols * fmt.element.bits + 7) // 8
    if isinstance(fmt, FloatFormat):
        return rows * cols * fmt.bits // 8
    if isinstance(fmt, IntChannelFormat):
        return rows * 4 + rows * cols
    raise FormatError(f"cannot pack format {fmt!r}")


def tile_nbytes(fmt, native_dim: int) -> int:
    """Bytes of one packed N x N weight tile in ``fmt``."""
    return packed_nbytes(fmt, native_dim, native_dim, native_dim)


def pack_bits(codes: np.ndarray, bits: int) -> bytes:
    """Pack unsigned codes (< 2**bits) LSB-first into bytes."""
    codes = np.ascontiguousarray(codes, dtype=np.uint64).ravel()
    if bits == 8:
        return codes.astype(np.uint8).tobytes()
    if bits == 16:
        return codes.astype("<u2").tobytes()
    # expand to bits, LSB first, then let numpy pack them little-endian
    shifts = np.arange(bits, dtype=np.uint64)
    bitplane = ((codes[:, None] >> shifts[None, :]) & np.uint64(1)).astype(np.uint8).ravel()
    return np.packbits(bitplane, bitorder="little").tobytes()


def unpack_bits(data: bytes | np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` codes of ``bits`` bits each."""
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    need = (count * bits + 7) // 8
    if buf.size < need:
        raise FormatError(f"packed data holds {buf.size} bytes, {need} needed for {count} x {bits}-bit codes")
    if bits == 8:
        return buf[:count].astype(np.uint32)
    if bits == 16:
        return buf[: 2 * count].view("<u2").astype(np.uint32)
    if 8 % bits == 0:                       # 1, 2 or 4 bits: whole codes per byte
        per = 8 // bits
        shifts = (np.arange(per, dtype=np.uint8) * bits)
        out = (buf[:need, None] >> shifts[None, :]) & np.uint8((1 << bits) - 1)
        return out.reshape(-1)[:count].astype(np.uint32)
    bitplane = np.unpackbits(buf[:need], bitorder="little")[: count * bits].reshape(count, bits)
    weights = (np.uint32(1) << np.arange(bits, dtype=np.uint32))
    return (bitplane.astype(np.uint32) * weights).sum(axis=1, dtype=np.uint32)


def pack_block_tensor(t) -> bytes:
    """Byte image of a 2-D :class:`~npu.numerics.quantize.BlockTensor` (scale section, element section)."""
    if t.codes.ndim != 2:
        raise FormatError(f"pack expects a 2-D block tensor, got shape {t.codes.shape}")
    scales = np.ascontiguousarray(t.scales, dtype=np.uint8).tobytes()
    return scales + pack_bits(t.codes, t.fmt.element.bits)


def unpack_block_tensor(data: bytes, fmt, rows: int, cols: int, native_dim: int):
    """Inverse of :func:`pack_block_tensor` for a ``rows x cols`` tensor."""
    from .quantize import BlockTensor

    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    if not isinstance(fmt, BlockFormat):
        raise FormatError(f"{fmt.name} is not a block format")
    need = packed_nbytes(fmt, rows, cols, native_dim)
    if len(data) != need:
        raise FormatError(f"{fmt.name} image of {rows}x{cols} needs {need} bytes, got {len(data)}")
    block = fmt.block_for(native_dim)
    nscale = rows * (cols // block)
    scales = np.frombuffer(bytes(data[:nscale]), dtype=np.uint8).reshape(rows, cols // block).copy()
    if (scales >= (1 << fmt.scale_bits)).any():
        raise FormatError(f"{fmt.name}: scale byte above {fmt.scale_bits} bits in the image")
    codes = unpack_bits(data[nscale:], fmt.element.bits, rows * cols).reshape(rows, cols)
    codes = codes.astype(np.uint16 if fmt.element.bits > 8 else np.uint8)
    return BlockTensor(fmt, block, scales, codes)


def pack_floats(values, fmt) -> bytes:
    """Little-endian byte image of values in a scalar format (values must already be in it)."""
    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    if not isinstance(fmt, FloatFormat):
        raise FormatError(f"{fmt.name} is not a scalar float format")
    return np.ascontiguousarray(np.asarray(values).astype(fmt.dtype)).view(f"<u{fmt.bits // 8}").tobytes()


def unpack_floats(data: bytes, fmt, count: int | None = None) -> np.ndarray:
    """Values of a little-endian scalar-format byte image."""
    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    width = fmt.bits // 8
    if len(data) % width:
        raise FormatError(f"{fmt.name} image length {len(data)} is not a multiple of {width}")
    raw = np.frombuffer(bytes(data), dtype=f"<u{width}")
    if count is not None:
        raw = raw[:count]
    return raw.view(fmt.dtype).copy()


def pack_int8_channels(scales: np.ndarray, q: np.ndarray) -> bytes:
    """Byte image of int8 per-channel data: binary32 scales, then int8 codes row-major."""
    return np.asarray(scales, "<f4").tobytes() + np.asarray(q, np.int8).tobytes()


def unpack_int8_channels(data: bytes, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_int8_channels`."""
    need = rows * 4 + rows * cols
    if len(data) != need:
        raise FormatError(f"int8 image of {rows}x{cols} needs {need} bytes, got {len(data)}")
    scales = np.frombuffer(bytes(data[: rows * 4]), "<f4").copy()
    q = np.frombuffer(bytes(data[rows * 4:]), np.int8).reshape(rows, cols).copy()
    return scales, q
