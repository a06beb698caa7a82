"""A hand-written example program: one 3x3 convolution in assembly, its DRAM image and its reference.

Used by the assembler, program-file and simulator tests and by docs/isa.md's
example; the compiler produces such chains for whole networks.
"""
from __future__ import annotations


import numpy as np

from npu.config import NPUConfig


def conv3x3_source(cfg: NPUConfig, height: int = 8, width: int = 8, cin_vectors: int = 2,
                   cout_vectors: int = 1) -> str:
    """Assembly text of one 3x3 stride-1 'same' convolution + bias + ReLU.

    The input sits zero-bordered in the vector memory (channel-minor, one
    pixel = ``cin_vectors`` native vectors); one chain sweeps every output
    pixel.  DRAM holds the input, the bias and the packed weight tiles.
    """
    from npu.numerics.pack import tile_nbytes

    in_vectors = (height + 2) * (width + 2) * cin_vectors
    tiles = cout_vectors * 9 * cin_vectors
    vb = cfg.vector_bytes
    return f"""\
; 3x3 convolution, stride 1, zero padding 1, then bias and ReLU
; input {height}x{width}x{cin_vectors * cfg.native_dim} (zero-bordered), output {height}x{width}x{cout_vectors * cfg.native_dim}
.equ H, {height}
.equ W, {width}
.equ C, {cin_vectors}                 ; input vectors per pixel
.equ R, {cout_vectors}                 ; output vectors per pixel
.equ ROW, (W + 2) * C      ; vectors per padded input row
.equ IN, 0
.equ BIAS, ROW * (H + 2)
.equ OUT, BIAS + R
.equ D_IN, 0
.equ D_BIAS, D_IN + {in_vectors * vb}
.equ D_W, D_BIAS + {cout_vectors * vb}
.equ D_OUT, D_W + {tiles * tile_nbytes(cfg.weight_format, cfg.native_dim)}

.region load
    v_load  vaddr=IN, daddr=D_IN, rows=1, row_len=ROW * (H + 2)
    v_load  vaddr=BIAS, daddr=D_BIAS, rows=1, row_len=R
    m_load  maddr=0, daddr=D_W, count=R * 9 * C          signal=l2c
.region conv
    chain   n0=H, n1=W, k0=3, k1=3, c=C, r=R             wait=l2c
    v_rd    base=IN, s_n0=ROW, s_n1=C, s_k0=ROW, s_k1=C
    mv_mul  mbase=0
    vv_add  base=BIAS, s_r=1
    v_relu
    v_wr    base=OUT, s_n0=W * R, s_n1=R, s_r=1
    end_chain                                             signal=c2s
.region store
    v_store vaddr=OUT, daddr=D_OUT, rows=1, row_len=H * W * R   wait=c2s
    halt
"""


def conv3x3_reference(cfg: NPUConfig, x: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The convolution of :func:`conv3x3_source` through the numerics contract.

    ``x`` is (H, W, Cin), ``w`` is (Cout, 3, 3, Cin), ``bias`` is (Cout,);
    the result is (H, W, Cout) in the MFU format.
    """
    from npu.numerics import mfu
    from npu.numerics.dot import matvec
    from npu.numerics.quantize import quantize

    n = cfg.native_dim
    h, wd, cin = x.shape
    cout = w.shape[0]
    xm = mfu.to_format(x, cfg.mfu_format)
    padded = np.zeros((h + 2, wd + 2, cin), xm.dtype)
    padded[1:-1, 1:-1] = xm
    # gather every output pixel's 3x3 window: (H*W, 9*Cin), tap-major as the chain reads it
    windows = np.stack([padded[ky:ky + h, kx:kx + wd] for ky in range(3) for kx in range(3)], axis=2)
    xq = quantize(windows.reshape(h * wd, 9 * cin).astype(np.float32), cfg.activation_format, n)
    wq = quantize(w.reshape(cout, 9 * cin), cfg.weight_format, n)
    acc = matvec(wq, xq, n)
    y = mfu.accumulator_to_format(acc, cfg.mfu_format)
    y = mfu.add(y, mfu.to_format(bias, cfg.mfu_format)[None, :], cfg.mfu_format)
    return mfu.relu(y, cfg.mfu_format).reshape(h, wd, cout)


def conv3x3_dram_image(cfg: NPUConfig, x: np.ndarray, w: np.ndarray, bias: np.ndarray) -> bytes:
    """DRAM image for :func:`conv3x3_source`: padded input, bias, packed weight tiles.

    ``x`` is (H, W, Cin), ``w`` (Cout, 3, 3, Cin), ``bias`` (Cout,), with Cin
    and Cout multiples of N.  Tile (rr, j) of the matrix holds output vector
    rr against input vector j = (ky*3 + kx)*C + cc, as the chain reads them.
    """
    from compiler.lower.weights import conv_matrix, pack_tiles

    from npu.numerics import mfu
    from npu.numerics.pack import pack_floats

    n = cfg.native_dim
    h, wd, cin = x.shape
    cout = w.shape[0]
    padded = np.zeros((h + 2, wd + 2, cin), np.float32)
    padded[1:-1, 1:-1] = x
    image = pack_floats(mfu.to_format(padded, cfg.mfu_format), cfg.mfu_format)
    image += pack_floats(mfu.to_format(bias, cfg.mfu_format), cfg.mfu_format)
    matrix = conv_matrix(np.transpose(w, (0, 3, 1, 2)), cin // n, cout // n, n)
    return image + pack_tiles(matrix, cfg.weight_format, n)
