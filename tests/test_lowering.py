"""Layer emitters, run on the simulator, against float references of the same layers.

With a wide format (bfp24 operands, fp32 MFU) the NPU result must match
float64 numpy to about 1e-4 relative; with ms-fp9 it must stay close
(cosine >= 0.98: one ms-fp9 layer on Gaussian data gives about 0.985).
"""
from dataclasses import replace

import numpy as np
import pytest

from npu.layout import ActLayout
from compiler.lower.emit import emit_add, emit_conv, emit_pool
from compiler.lower.weights import conv_matrix, dense_matrix, pack_tiles
from npu.config import PRESETS
from npu.isa.encoding import encode_program, make
from npu.numerics import mfu
from npu.numerics.pack import pack_floats, unpack_floats
from npu.sim import simulate

TINY = PRESETS["tiny"]
WIDE = TINY.replace(weight_format="bfp24", activation_format="bfp24", mfu_format="fp32")


def conv_ref(x, w, b, stride, pad):
    """Float64 convolution of C x H x W input with (Cout, Cin, kh, kw) weights, symmetric padding."""
    cout, cin, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad)))
    ho = (xp.shape[1] - kh) // stride + 1
    wo = (xp.shape[2] - kw) // stride + 1
    y = np.zeros((cout, ho, wo))
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[:, ky:ky + stride * ho:stride, kx:kx + stride * wo:stride]
            y += np.einsum("chw,oc->ohw", patch, w[:, :, ky, kx].astype(np.float64))
    return y + (0 if b is None else b[:, None, None])


class Program:
    """Collects vector-memory data, weight tiles and chains, then runs them on the simulator."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.dram = bytearray()
        self.loads, self.chains = [], []
        self.tiles = 0
        self.next_vector = 0

    def place(self, layout_args, data=None) -> ActLayout:
        lay = ActLayout(*layout_args, native_dim=self.cfg.native_dim, base=self.next_vector)
        self.next_vector += lay.size
        if data is not None:
            self.load_vectors(lay.base, lay.to_vectors(data))
        return lay

    def load_vectors(self, vaddr, vectors):
        raw = pack_floats(mfu.to_format(vectors, self.cfg.mfu_format), self.cfg.mfu_format)
        self.loads.append(make("v_load", vaddr=vaddr, daddr=len(self.dram), row_len=len(vectors)))
        self.dram += raw

    def vector_constant(self, values) -> int:
        n = self.cfg.native_dim
        vecs = np.zeros((-(-len(values) // n), n), np.float32)
        vecs.reshape(-1)[:len(values)] = values
        addr = self.next_vector
        self.next_vector += len(vecs)
        self.load_vectors(addr, vecs)
        return addr

    def weights(self, matrix) -> int:
        n = self.cfg.native_dim
        count = matrix.shape[0] // n * (matrix.shape[1] // n)
        self.loads.append(make("m_load", maddr=self.tiles, daddr=len(self.dram), count=count))
        self.dram += pack_tiles(matrix, self.cfg.weight_format, n)
        base, self.tiles = self.tiles, self.tiles + count
        return base

    def run(self, out: ActLayout):
        """Loads (last one signals l2c), the chains (first waits, last signals c2s), a store, halt."""
        loads = self.loads[:-1] + [replace(self.loads[-1], signal=frozenset({"l2c"}))]
        chains = [ins for ch in self.chains for ins in ch]
        first = next(i for i, ins in enumerate(chains) if ins.mnemonic == "chain")
        chains[first] = replace(chains[first], wait=frozenset({"l2c"}))
        chains[-1] = replace(chains[-1], signal=frozenset({"c2s"}))
        store = make("v_store", vaddr=out.base, daddr=len(self.dram), row_len=out.size, wait={"c2s"})
        res = simulate(encode_program(loads + chains + [store, make("halt")]), self.cfg, dram=bytes(self.dram))
        vec = unpack_floats(res.dram(len(self.dram), out.size * self.cfg.vector_bytes), self.cfg.mfu_format)
        return out.from_vectors(vec.reshape(out.size, -1).astype(np.float64)), res


def relerr(y, ref):
    return np.abs(y - ref).max() / np.abs(ref).max()


def cosine(y, ref):
    return float((y * ref).sum() / np.linalg.norm(y) / np.linalg.norm(ref))


@pytest.mark.parametrize("cin, cout, k, stride, pad, hw", [
    (32, 32, 3, 1, 1, 8), (40, 70, 3, 2, 1, 9), (16, 32, 1, 1, 0, 6), (3, 32, 7, 2, 3, 16), (64, 32, 5, 1, 2, 7),
])
@pytest.mark.parametrize("cfg", [WIDE, TINY], ids=["bfp24-fp32", "ms-fp9-fp16"])
def test_conv_bias_relu(cfg, cin, cout, k, stride, pad, hw):
    rng = np.random.default_rng(cin * 7 + k)
    x = rng.standard_normal((cin, hw, hw)).astype(np.float32)
    w = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
    b = (0.1 * rng.standard_normal(cout)).astype(np.float32)
    ref = np.maximum(conv_ref(x, w, b, stride, pad), 0)
    p = Program(cfg)
    src = p.place((cin, hw, hw, pad), x)
    dst = p.place((cout, ref.shape[1], ref.shape[2], 0))
    n = cfg.native_dim
    mbase = p.weights(conv_matrix(w, src.vectors, dst.vectors, n))
    bias = p.vector_constant(b)
    p.chains.append(emit_conv(src, dst, kernel=(k, k), stride=(stride, stride), pads=(pad, pad), mbase=mbase,
                              bias_addr=bias, relu=True))
    y, _ = p.run(dst)
    if cfg is WIDE:
        assert relerr(y, ref) < 1e-4
    else:
        assert cosine(y, ref) > 0.98


def test_residual_block_and_pools_wide():
    """conv+bias -> add residual -> ReLU, then max pool 3x3/2 with padding, global average pool, dense."""
    cfg = WIDE
    rng = np.random.default_rng(11)
    x = np.abs(rng.standard_normal((32, 8, 8))).astype(np.float32)
    w = (rng.standard_normal((32, 32, 3, 3)) / 17).astype(np.float32)
    b = (0.1 * rng.standard_normal(32)).astype(np.float32)
    fc = (rng.standard_normal((10, 32)) / 6).astype(np.float32)
    p = Program(cfg)
    src = p.place((32, 8, 8, 1), x)
    mid = p.place((32, 8, 8, 1))                          # bordered: the max pool pads by 1
    pooled = p.place((32, 4, 4, 0))
    gap = p.place((32, 1, 1, 0))
    logits = p.place((10, 1, 1, 0))
    n = cfg.native_dim
    mconv = p.weights(conv_matrix(w, 1, 1, n))
    mfc = p.weights(dense_matrix(fc, 1, 1, n))
    bias = p.vector_constant(b)
    p.chains.append(emit_conv(src, mid, kernel=(3, 3), pads=(1, 1), mbase=mconv, bias_addr=bias, residual=src,
                              relu=True))
    p.chains.append(emit_pool(mid, pooled, kind="max", kernel=(3, 3), stride=(2, 2), pads=(1, 1)))
    p.chains.append([make("s_wr", sreg=2, value=int(np.float32(1 / 16).view(np.uint32)))] +
                    emit_pool(pooled, gap, kind="avg", kernel=(4, 4), scale_sreg=2))
    p.chains.append(emit_conv(gap, logits, kernel=(1, 1), mbase=mfc))
    y, res = p.run(logits)
    h = np.maximum(conv_ref(x, w, b, 1, 1) + x, 0)
    hp = np.pad(h, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    mp = np.max([hp[:, ky:ky + 8:2, kx:kx + 8:2] for ky in range(3) for kx in range(3)], axis=0)
    ref = fc.astype(np.float64) @ mp.mean(axis=(1, 2))
    assert relerr(y.reshape(-1), ref) < 1e-4
    assert res.stats.macs > 0


def test_emit_add_and_errors():
    cfg = WIDE
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 40, 3, 5)).astype(np.float32)
    p = Program(cfg)
    la = p.place((40, 3, 5, 1), a)
    lb = p.place((40, 3, 5, 0), b)
    out = p.place((40, 3, 5, 2))
    p.chains.append(emit_add(la, lb, out, relu=True))
    y, _ = p.run(out)
    assert np.array_equal(y, np.maximum(a.astype(np.float64) + b, 0).astype(np.float32).astype(np.float64))
    with pytest.raises(ValueError, match="exceeds the input's 1-pixel zero border"):
        emit_conv(la, out, kernel=(5, 5), pads=(2, 2), mbase=0)
    with pytest.raises(ValueError, match="needs the scalar register"):
        emit_pool(la, out, kind="avg", kernel=(2, 2))


def test_layout_round_trip_and_addresses():
    lay = ActLayout(70, 3, 4, 2, 32, base=100)
    x = np.arange(70 * 12, dtype=np.float32).reshape(70, 3, 4)
    v = lay.to_vectors(x)
    assert v.shape == (lay.size, 32) and lay.vectors == 3 and lay.size == 7 * 8 * 3
    assert np.array_equal(lay.from_vectors(v), x)
    assert lay.addr(0, 0) == 100 + (2 * 8 + 2) * 3 and lay.addr(-2, -2) == 100
    assert not v.reshape(7, 8, 96)[:2].any() and not v.reshape(7, 8, 96)[:, :, 70:].any()
    with pytest.raises(ValueError, match="outside the tensor"):
        lay.addr(-3, 0)
