"""Weight matrices in the order the MVU reads them, and their packed tile images."""
from __future__ import annotations

import numpy as np

from npu.numerics.pack import pack_block_tensor
from npu.numerics.quantize import BlockTensor, quantize


def conv_matrix(weights: np.ndarray, in_vectors: int, out_vectors: int, native_dim: int) -> np.ndarray:
    """The (out_vectors*N) x (kh*kw*in_vectors*N) matrix of a convolution, tap-major.

    Column ``((ky*kw + kx)*in_vectors + cc)*N + e`` multiplies channel
    ``cc*N + e`` of input pixel (ky, kx) of the window, which is the order in
    which a chain reads its K = kh*kw*in_vectors input vectors.  Channels
    beyond the real ones are zero.
    """
    cout, cin, kh, kw = weights.shape
    n = native_dim
    if cin > in_vectors * n or cout > out_vectors * n:
        raise ValueError(f"weights {weights.shape} exceed {in_vectors} input / {out_vectors} output vectors")
    m = np.zeros((out_vectors * n, kh, kw, in_vectors * n), np.float32)
    m[:cout, :, :, :cin] = np.transpose(weights, (0, 2, 3, 1))
    return m.reshape(out_vectors * n, kh * kw * in_vectors * n)


def dense_matrix(weights: np.ndarray, in_vectors: int, out_vectors: int, native_dim: int) -> np.ndarray:
    """The padded (out_vectors*N) x (in_vectors*N) matrix of a fully connected layer (Cout x Cin)."""
    return conv_matrix(weights[:, :, None, None], in_vectors, out_vectors, native_dim)


def pack_tiles(matrix: np.ndarray, fmt, native_dim: int) -> bytes:
    """Quantise a padded matrix and pack its N x N tiles row-major: tile (rr, j) is number rr*K + j."""
    n = native_dim
    rows, cols = matrix.shape
    if rows % n or cols % n:
        raise ValueError(f"matrix {matrix.shape} is not a whole number of {n}x{n} tiles")
    q = quantize(np.ascontiguousarray(matrix, np.float32), fmt, n)
    per_tile = n // q.block
    out = bytearray()
    for rr in range(rows // n):
        for j in range(cols // n):
            tile = BlockTensor(q.fmt, q.block, q.scales[rr * n:(rr + 1) * n, j * per_tile:(j + 1) * per_tile],
                               q.codes[rr * n:(rr + 1) * n, j * n:(j + 1) * n])
            out += pack_block_tensor(tile)
    return bytes(out)
