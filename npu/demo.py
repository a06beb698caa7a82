"""``npu demo``: the main job on embedded defaults.

Shows the machine presets, assembles a built-in 3x3 convolution program for
the chosen machine, and evaluates that layer through the numerics contract
(weights and activations in the machine's formats) against float32.
"""
from __future__ import annotations

import time

import numpy as np

from .config import PRESETS, NPUConfig, load_config


def conv3x3_source(cfg: NPUConfig, height: int = 8, width: int = 8, cin_vectors: int = 2,
                   cout_vectors: int = 1) -> str:
    """Assembly text of one 3x3 stride-1 'same' convolution + bias + ReLU.

    The input sits zero-bordered in the vector memory (channel-minor, one
    pixel = ``cin_vectors`` native vectors); one chain sweeps every output
    pixel.  DRAM holds the input, the bias and the packed weight tiles.
    """
    from .numerics.pack import tile_nbytes

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
    from .numerics import mfu
    from .numerics.dot import matvec
    from .numerics.quantize import quantize

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

    from .numerics import mfu
    from .numerics.pack import pack_floats

    n = cfg.native_dim
    h, wd, cin = x.shape
    cout = w.shape[0]
    padded = np.zeros((h + 2, wd + 2, cin), np.float32)
    padded[1:-1, 1:-1] = x
    image = pack_floats(mfu.to_format(padded, cfg.mfu_format), cfg.mfu_format)
    image += pack_floats(mfu.to_format(bias, cfg.mfu_format), cfg.mfu_format)
    matrix = conv_matrix(np.transpose(w, (0, 3, 1, 2)), cin // n, cout // n, n)
    return image + pack_tiles(matrix, cfg.weight_format, n)


def run_demo(config: str) -> int:
    """Print presets, assemble the built-in program, simulate it and check it; exit status."""
    from .cli import presets_table
    from .isa.assembler import assemble
    from .isa.disassembler import disassemble
    from .sim import simulate

    cfg = load_config(config)
    print("NPU presets\n")
    print(presets_table(list(PRESETS.values())))
    print(f"\nMachine: {cfg.name} ({cfg.macs:,} MACs, {cfg.peak_tops:.1f} peak TOPS, "
          f"weights {cfg.weight_format}, activations {cfg.activation_format}, MFU {cfg.mfu_format})")

    height = width = 8
    cin, cout = 2 * cfg.native_dim, cfg.native_dim
    source = conv3x3_source(cfg, height, width, cin // cfg.native_dim, cout // cfg.native_dim)
    t0 = time.perf_counter()
    program = assemble(source, cfg, source="<built-in conv3x3>")
    print(f"\nBuilt-in program: 3x3 convolution + bias + ReLU, {height}x{width}x{cin} -> {height}x{width}x{cout}: "
          f"{len(program.instructions)} instructions, {len(program.words)} bytes "
          f"(assembled and checked in {1e3 * (time.perf_counter() - t0):.1f} ms)\n")
    print(disassemble(program.instructions, show_index=True))

    rng = np.random.default_rng(0)
    x = rng.standard_normal((height, width, cin)).astype(np.float32)
    w = (rng.standard_normal((cout, 3, 3, cin)) / np.sqrt(9 * cin)).astype(np.float32)
    bias = (0.1 * rng.standard_normal(cout)).astype(np.float32)
    image = conv3x3_dram_image(cfg, x, w, bias)
    t0 = time.perf_counter()
    result = simulate(program, cfg, dram=image)
    sim_ms = 1e3 * (time.perf_counter() - t0)
    out_addr = len(image)
    nbytes = height * width * cout * cfg.mfu_bytes
    from .numerics.pack import unpack_floats

    y = unpack_floats(result.dram(out_addr, nbytes), cfg.mfu_format).reshape(height, width, cout)
    expected = conv3x3_reference(cfg, x, w, bias)
    exact = np.array_equal(y.view(np.uint8), expected.view(np.uint8))
    print(f"\nSimulated in {sim_ms:.0f} ms:\n")
    print(result.stats.table())
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    ref = np.maximum(np.einsum("hwkc,okc->hwo",
                               np.stack([xp[ky:ky + height, kx:kx + width] for ky in range(3) for kx in range(3)], 2),
                               w.reshape(cout, 9, cin)) + bias, 0).astype(np.float64)
    y64 = y.astype(np.float64)
    cos = float(np.dot(y64.ravel(), ref.ravel()) / (np.linalg.norm(y64) * np.linalg.norm(ref)))
    print(f"\nOutput vs the numerics contract's numpy reference: {'bit-exact' if exact else 'MISMATCH'}")
    print(f"Output vs float32: cosine similarity {cos:.5f}")
    return 0 if exact else 1
