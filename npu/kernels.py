"""Builders of small NPU programs: the simulator and RTL tests, the benchmarks, and the training runs of the
profile-guided RTL build (hdl/pgo.py).

A :class:`Builder` collects DMA loads (with their DRAM image), compute ops
(chains, ``s_wr``, ``nop``) and stores, then emits a complete program --
grouped by stream (loads, compute, stores, ``halt``; the default) or in call
order -- with the usual tokens: the last load signals ``l2c``, the first
chain waits on it, the last chain signals ``c2s``, the first store waits on
that.  Any op may set its own tokens instead.

The kernel functions below (``gemv``, ``conv2d``, ``pool``, ...) each return a
:class:`Kernel`: instructions, DRAM image, where the output lands in DRAM and
its shape, plus the plain numpy inputs (``kernel.inputs``) a test needs to
compute an independent reference.  Nothing here calls the simulator except
the convenience :meth:`Kernel.run`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from npu.config import PRESETS, NPUConfig
from npu.isa.assembler import AssembledProgram
from npu.isa.encoding import encode_program, make
from npu.isa.table import REDUCE_MODES
from npu.numerics import mfu
from npu.numerics.pack import pack_block_tensor, pack_floats, tile_nbytes, unpack_floats  # noqa: F401 (re-exported)
from npu.numerics.quantize import BlockTensor, quantize

DRAM_ALIGN = 64            # byte alignment of every DRAM segment
MAX_ROW_LEN = 4095         # v_load/v_store row_len is a 12-bit count
_AUTO = object()           # "use the builder's default tokens"


def config(base: str = "tiny", *, weight: str | None = None, act: str | None = None, mfu_format: str | None = None,
           **changes) -> NPUConfig:
    """A preset with some formats (or other fields) changed."""
    cfg = PRESETS[base]
    if weight:
        changes["weight_format"] = weight
    if act:
        changes["activation_format"] = act
    if mfu_format:
        changes["mfu_format"] = mfu_format
    return cfg.replace(**changes) if changes else cfg


def f32_bits(value: float) -> int:
    """The binary32 bit pattern of ``value`` (for ``s_wr``)."""
    return int(np.array(value, np.float32).view(np.uint32))


def to_mfu(values, cfg: NPUConfig) -> np.ndarray:
    """Values rounded to the configuration's MFU format (as the vector memory holds them)."""
    return mfu.to_format(np.asarray(values, np.float32), cfg.mfu_format)


@dataclass
class Kernel:
    """A test program with its DRAM image and output location."""

    config: NPUConfig
    instructions: list
    dram: bytes
    out_addr: int                      # DRAM byte address of the output
    out_shape: tuple                   # output shape in MFU elements (last axis a multiple of N)
    inputs: dict = field(default_factory=dict)
    regions: list = field(default_factory=list)
    layout: dict = field(default_factory=dict)   # named vector-memory / MRF addresses

    def __repr__(self) -> str:
        from npu.isa.disassembler import disassemble

        return (f"Kernel({self.config.name}: {self.config.weight_format}/{self.config.activation_format}/"
                f"{self.config.mfu_format}, {len(self.dram)} B DRAM)\n" + disassemble(self.instructions, show_index=True))

    def _repr_pretty_(self, printer, cycle) -> None:      # hypothesis / IPython pretty printers
        printer.text(repr(self))

    @property
    def words(self) -> bytes:
        """The binary program."""
        return encode_program(self.instructions)

    @property
    def out_bytes(self) -> int:
        """Bytes of the output in DRAM."""
        return int(np.prod(self.out_shape)) * self.config.mfu_bytes

    def program(self, with_regions: bool = True):
        """The program as the simulator takes it: binary words, or an assembled program carrying regions."""
        if not with_regions:
            return self.words
        return AssembledProgram(list(self.instructions), self.words, regions=list(self.regions))

    def run(self, mode: str = "full", *, with_regions: bool = False, config: NPUConfig | None = None, **kwargs):
        """Simulate (a convenience for tests; references never use it)."""
        from npu.sim import simulate

        return simulate(self.program(with_regions), config or self.config, dram=self.dram, mode=mode, **kwargs)

    def output(self, result) -> np.ndarray:
        """The output read back from a result's DRAM, in the MFU format."""
        raw = result.dram(self.out_addr, self.out_bytes)
        return unpack_floats(raw, self.config.mfu_format).reshape(self.out_shape)


@dataclass
class _Op:
    mnemonic: str
    fields: dict
    wait: object = _AUTO
    signal: object = _AUTO
    body: list = field(default_factory=list)     # chain: [(mnemonic, fields), ...] between chain and end_chain
    stream: str = "compute"


class Builder:
    """Collects loads, compute ops and stores; :meth:`build` emits the program.

    With ``grouped`` (the default) the program lists every load, then every
    compute op, then every store (each stream in the order of the calls); with
    ``grouped=False`` instructions appear in the order of the calls.
    """

    def __init__(self, cfg: NPUConfig, *, auto_tokens: bool = True, grouped: bool = True):
        self.cfg = cfg
        self.n = cfg.native_dim
        self.auto_tokens = auto_tokens
        self.grouped = grouped
        self.image = bytearray()
        self.ops: list[_Op] = []
        self.vtop = 0            # next free vector address
        self.mtop = 0            # next free MRF tile
        self.inputs: dict = {}
        self.layout: dict = {}

    def _stream(self, name: str) -> list[_Op]:
        return [op for op in self.ops if op.stream == name]

    @property
    def loads(self) -> list[_Op]:
        """Load-stream ops, in order."""
        return self._stream("load")

    @property
    def compute(self) -> list[_Op]:
        """Compute-stream ops, in order."""
        return self._stream("compute")

    @property
    def stores(self) -> list[_Op]:
        """Store-stream ops, in order."""
        return self._stream("store")

    # ----- DRAM and on-chip allocation -----------------------------------------------------
    def put(self, data: bytes) -> int:
        """Append bytes to the DRAM image (aligned); their address."""
        pad = -len(self.image) % DRAM_ALIGN
        self.image += bytes(pad)
        addr = len(self.image)
        self.image += data
        return addr

    def reserve(self, nbytes: int) -> int:
        """Zeroed DRAM space (for outputs); its address."""
        return self.put(bytes(nbytes))

    def alloc(self, count: int, name: str | None = None) -> int:
        """``count`` vectors of vector memory (zero at start); the first address."""
        addr = self.vtop
        self.vtop += count
        if self.vtop > self.cfg.vrf_depth:
            raise ValueError(f"test program needs {self.vtop} vectors, {self.cfg.name} has {self.cfg.vrf_depth}")
        if name:
            self.layout[name] = addr
        return addr

    # ----- load stream ---------------------------------------------------------------------
    def load_vectors(self, values, vaddr: int | None = None, name: str | None = None, **tokens) -> int:
        """DMA vectors (any shape ending in N, rounded to the MFU format) into the vector memory."""
        vals = np.asarray(values)
        if vals.dtype != self._mfu_dtype():          # already in the MFU format: keep the bits as given
            vals = to_mfu(vals, self.cfg)
        flat = vals.reshape(-1, self.n)
        count = flat.shape[0]
        if vaddr is None:
            vaddr = self.alloc(count)
        if name:
            self.layout[name] = vaddr
            self.inputs[name] = vals
        daddr = self.put(pack_floats(flat, self.cfg.mfu_format))
        vb = self.cfg.vector_bytes
        for first in range(0, count, MAX_ROW_LEN):
            length = min(MAX_ROW_LEN, count - first)
            self.ops.append(_Op("v_load", dict(vaddr=vaddr + first, daddr=daddr + first * vb, rows=1,
                                               row_len=length), stream="load", **tokens))
        return vaddr

    def _mfu_dtype(self):
        return mfu.mfu_format(self.cfg.mfu_format).dtype

    def tiles(self, w: np.ndarray, fmt: int = 0) -> BlockTensor:
        """Quantise a (R*N, K*N) weight matrix to the weight format of MVU mode ``fmt`` (blocks along K)."""
        return quantize(np.asarray(w, np.float32), self.cfg.mode_formats(fmt)[0], self.n)

    def load_weights(self, w: np.ndarray, name: str | None = None, maddr: int | None = None, fmt: int = 0,
                     **tokens) -> int:
        """Quantise a (R*N, K*N) matrix, pack it as R x K tiles (row-major) and m_load them; the first tile.

        ``fmt`` is the MVU format mode the tiles are packed (and loaded) in."""
        n = self.n
        w = np.asarray(w, np.float32)
        rows, cols = w.shape
        assert rows % n == 0 and cols % n == 0, (rows, cols)
        wq = self.tiles(w, fmt)
        r, k = rows // n, cols // n
        per_row = n // wq.block
        data = bytearray()
        for rr in range(r):
            for j in range(k):
                data += pack_block_tensor(BlockTensor(
                    wq.fmt, wq.block, wq.scales[rr * n:(rr + 1) * n, j * per_row:(j + 1) * per_row],
                    wq.codes[rr * n:(rr + 1) * n, j * n:(j + 1) * n]))
        assert len(data) == r * k * tile_nbytes(self.cfg.mode_formats(fmt)[0], n)
        if maddr is None:
            maddr = self.mtop
        self.mtop = max(self.mtop, maddr + r * k)
        assert self.mtop <= self.cfg.mrf_tiles
        daddr = self.put(bytes(data))
        fields = dict(maddr=maddr, daddr=daddr, count=r * k) | ({"fmt": fmt} if fmt else {})
        self.ops.append(_Op("m_load", fields, stream="load", **tokens))
        if name:
            self.inputs[name] = w
            self.layout[name] = maddr
        return maddr

    def raw(self, mnemonic: str, **fields_and_tokens) -> None:
        """Any plain instruction (e.g. a strided v_load / v_store) on its stream, with optional tokens."""
        from npu.isa.table import BY_MNEMONIC

        stream = BY_MNEMONIC[mnemonic].queue.value
        tokens = {k: fields_and_tokens.pop(k) for k in ("wait", "signal") if k in fields_and_tokens}
        self.ops.append(_Op(mnemonic, fields_and_tokens, stream=stream, **tokens))

    # ----- compute stream ------------------------------------------------------------------
    def scalar(self, sreg: int, value: float, **tokens) -> None:
        """s_wr: a binary32 scalar register."""
        self.ops.append(_Op("s_wr", dict(sreg=sreg, value=f32_bits(value)), **tokens))

    def nop(self, **tokens) -> None:
        """A nop on the compute stream (token carrier)."""
        self.ops.append(_Op("nop", {}, **tokens))

    def chain(self, *, rd: dict, wr: dict, n0=1, n1=1, k0=1, k1=1, c=1, r=1, reduce="none",
              mbase: int | None = None, mfu_ops=(), fmt: int = 0, **tokens) -> None:
        """One chain.  ``mfu_ops``: mnemonics or (mnemonic, fields) pairs, in order; ``fmt``: mv_mul's MVU mode."""
        body = [("v_rd", dict(rd))]
        if mbase is not None:
            body.append(("mv_mul", dict(mbase=mbase) | ({"fmt": fmt} if fmt else {})))
        for op in mfu_ops:
            name, fields = (op, {}) if isinstance(op, str) else op
            body.append((name, dict(fields)))
        body.append(("v_wr", dict(wr)))
        head = dict(n0=n0, n1=n1, k0=k0, k1=k1, c=c, r=r, reduce=REDUCE_MODES.index(reduce))
        self.ops.append(_Op("chain", head, body=body, **tokens))

    # ----- store stream --------------------------------------------------------------------
    def store(self, vaddr: int, count: int, **tokens) -> int:
        """DMA ``count`` vectors from the vector memory to fresh DRAM space; its address."""
        vb = self.cfg.vector_bytes
        daddr = self.reserve(count * vb)
        for first in range(0, count, MAX_ROW_LEN):
            length = min(MAX_ROW_LEN, count - first)
            self.ops.append(_Op("v_store", dict(vaddr=vaddr + first, daddr=daddr + first * vb, rows=1,
                                                row_len=length), stream="store", **tokens))
        return daddr

    # ----- emit ----------------------------------------------------------------------------
    def _default_tokens(self) -> None:
        if not self.auto_tokens:
            return
        chains = [op for op in self.compute if op.mnemonic == "chain"]
        if self.loads and chains:
            if self.loads[-1].signal is _AUTO:
                self.loads[-1].signal = {"l2c"}
            if chains[0].wait is _AUTO:
                chains[0].wait = {"l2c"}
        if self.stores and chains:
            if chains[-1].signal is _AUTO:
                chains[-1].signal = {"c2s"}
            if self.stores[0].wait is _AUTO:
                self.stores[0].wait = {"c2s"}

    def instructions(self) -> tuple[list, list]:
        """(instructions, regions) of the program so far."""
        self._default_tokens()

        def tok(v):
            return () if v is _AUTO else tuple(v)

        def emit(op):
            if op.mnemonic == "chain":
                out.append(make("chain", wait=tok(op.wait), **op.fields))
                out.extend(make(m, **f) for m, f in op.body)
                out.append(make("end_chain", signal=tok(op.signal)))
            else:
                out.append(make(op.mnemonic, wait=tok(op.wait), signal=tok(op.signal), **op.fields))

        out, regions = [], []
        if self.grouped:
            for name, ops in (("load", self.loads), ("compute", self.compute), ("store", self.stores)):
                first = len(out)
                for op in ops:
                    emit(op)
                if len(out) > first:
                    regions.append((name, first, len(out) - 1))
        else:
            for op in self.ops:
                emit(op)
        out.append(make("halt"))
        return out, regions

    def build(self, out_addr: int, out_shape: tuple) -> Kernel:
        """The finished program."""
        instrs, regions = self.instructions()
        return Kernel(self.cfg, instrs, bytes(self.image), out_addr, tuple(out_shape), dict(self.inputs),
                      regions, dict(self.layout))


# =============================================================================================
# Layout helpers
# =============================================================================================
def pad_hw(x: np.ndarray, pad: int, fill: float = 0.0) -> np.ndarray:
    """(H, W, C) -> (H + 2p, W + 2p, C) with a border of ``fill``."""
    h, w, c = x.shape
    out = np.full((h + 2 * pad, w + 2 * pad, c), fill, x.dtype)
    out[pad:pad + h, pad:pad + w] = x
    return out


def out_size(size: int, ksize: int, stride: int, pad: int) -> int:
    """Output extent of a window sweep."""
    return (size + 2 * pad - ksize) // stride + 1


def _rand(rng, shape, scale=1.0) -> np.ndarray:
    return (scale * rng.standard_normal(shape)).astype(np.float32)


# =============================================================================================
# Kernels
# =============================================================================================
def gemv(cfg: NPUConfig, rng, *, batch: int = 1, rows: int = 1, k0: int = 1, k1: int = 1, c: int = 1,
         bias: bool = False, act: str | None = None, x: np.ndarray | None = None,
         w: np.ndarray | None = None) -> Kernel:
    """y = act(W x (+ b)) for ``batch`` input vectors of K = k0*k1*c native vectors, R = ``rows`` output vectors.

    Input j of iteration i sits at X + i*K + j (j = (j0*k1 + j1)*c + cc); output row rr at OUT + i*R + rr.
    inputs: x (batch, K*N) MFU format, w (R*N, K*N) float32, [b] (R*N,) MFU format.
    """
    n = cfg.native_dim
    kk = k0 * k1 * c
    b = Builder(cfg)
    if x is None:
        x = _rand(rng, (batch, kk * n))
    if w is None:
        w = _rand(rng, (rows * n, kk * n), 1 / math.sqrt(kk * n))
    xa = b.load_vectors(x.reshape(batch * kk, n), name="x")
    b.inputs["x"] = b.inputs["x"].reshape(batch, kk * n)
    mbase = b.load_weights(w, name="w")
    ops = []
    if bias:
        ba = b.load_vectors(_rand(rng, (rows * n,), 0.5).reshape(rows, n), name="b")
        b.inputs["b"] = b.inputs["b"].reshape(-1)
        ops.append(("vv_add", dict(base=ba, s_r=1)))
    if act:
        ops.append(act)
    out = b.alloc(batch * rows, "out")
    b.chain(n0=batch, k0=k0, k1=k1, c=c, r=rows, mbase=mbase, mfu_ops=ops,
            rd=dict(base=xa, s_n0=kk, s_k0=k1 * c, s_k1=c), wr=dict(base=out, s_n0=rows, s_r=1))
    daddr = b.store(out, batch * rows)
    return b.build(daddr, (batch, rows * n))


def conv2d(cfg: NPUConfig, rng, *, h: int, w: int, cin_v: int = 1, cout_v: int = 1, ksize: int = 3,
           stride: int = 1, pad: int = 1, bias: bool = True, relu: bool = True, cin: int | None = None,
           cout: int | None = None) -> Kernel:
    """ksize x ksize convolution over a zero-bordered channel-minor input, one chain over every output pixel.

    ``cin`` / ``cout`` real channels (default: whole vectors) are zero-padded to ``cin_v`` / ``cout_v`` vectors.
    inputs: x (h, w, cin_v*N) MFU format, wt (cout_v*N, k, k, cin_v*N) float32, b (cout_v*N,) MFU format,
    all zero in the padding channels.
    """
    n = cfg.native_dim
    cin_real, cout_real = cin or cin_v * n, cout or cout_v * n
    cin, cout = cin_v * n, cout_v * n
    assert cin_real <= cin and cout_real <= cout
    oh, ow = out_size(h, ksize, stride, pad), out_size(w, ksize, stride, pad)
    b = Builder(cfg)
    x = np.zeros((h, w, cin), np.float32)
    x[..., :cin_real] = _rand(rng, (h, w, cin_real))
    x = to_mfu(x, cfg)
    wt = np.zeros((cout, ksize, ksize, cin), np.float32)
    wt[:cout_real, :, :, :cin_real] = _rand(rng, (cout_real, ksize, ksize, cin_real),
                                             1 / math.sqrt(ksize * ksize * cin_real))
    row = (w + 2 * pad) * cin_v
    xa = b.load_vectors(pad_hw(x, pad).reshape(-1, n), name="x_padded")
    b.inputs["x"] = x
    mbase = b.load_weights(wt.reshape(cout, -1), name="w")
    b.inputs["wt"] = wt
    ops = []
    if bias:
        bv = np.zeros(cout, np.float32)
        bv[:cout_real] = _rand(rng, (cout_real,), 0.5)
        ba = b.load_vectors(bv.reshape(cout_v, n), name="b")
        b.inputs["b"] = b.inputs["b"].reshape(-1)
        ops.append(("vv_add", dict(base=ba, s_r=1)))
    if relu:
        ops.append("v_relu")
    out = b.alloc(oh * ow * cout_v, "out")
    b.chain(n0=oh, n1=ow, k0=ksize, k1=ksize, c=cin_v, r=cout_v, mbase=mbase, mfu_ops=ops,
            rd=dict(base=xa, s_n0=stride * row, s_n1=stride * cin_v, s_k0=row, s_k1=cin_v),
            wr=dict(base=out, s_n0=ow * cout_v, s_n1=cout_v, s_r=1))
    daddr = b.store(out, oh * ow * cout_v)
    return b.build(daddr, (oh, ow, cout))


def pool(cfg: NPUConfig, rng, *, h: int, w: int, c_v: int = 1, ksize: int = 3, stride: int = 2, pad: int = 1,
         mode: str = "max") -> Kernel:
    """Max pooling (border -inf, reduce=max) or average pooling (border 0, reduce=sum, vs_mul 1/k^2).

    inputs: x (h, w, C) MFU format; the output is (oh, ow, C).
    """
    n = cfg.native_dim
    oh, ow = out_size(h, ksize, stride, pad), out_size(w, ksize, stride, pad)
    b = Builder(cfg)
    x = to_mfu(_rand(rng, (h, w, c_v * n), 2.0), cfg)
    fill = -np.inf if mode == "max" else 0.0
    xa = b.load_vectors(pad_hw(x, pad, fill).reshape(-1, n), name="x_padded")
    b.inputs["x"] = x
    row = (w + 2 * pad) * c_v
    ops = []
    if mode == "avg":
        b.scalar(3, 1.0 / (ksize * ksize))
        ops.append(("vs_mul", dict(sreg=3)))
    out = b.alloc(oh * ow * c_v, "out")
    b.chain(n0=oh, n1=ow, k0=ksize, k1=ksize, c=1, r=c_v, reduce="max" if mode == "max" else "sum",
            mfu_ops=ops, rd=dict(base=xa, s_n0=stride * row, s_n1=stride * c_v, s_k0=row, s_k1=c_v, s_r=1),
            wr=dict(base=out, s_n0=ow * c_v, s_n1=c_v, s_r=1))
    daddr = b.store(out, oh * ow * c_v)
    return b.build(daddr, (oh, ow, c_v * n))


def global_avg_pool(cfg: NPUConfig, rng, *, h: int, w: int, c_v: int = 1) -> Kernel:
    """Mean over all pixels of an unpadded (h, w, C) tensor: reduce=sum over h*w reads, vs_mul 1/(h*w)."""
    n = cfg.native_dim
    b = Builder(cfg)
    x = to_mfu(_rand(rng, (h, w, c_v * n)), cfg)
    xa = b.load_vectors(x.reshape(-1, n), name="x")
    b.scalar(0, 1.0 / (h * w))
    out = b.alloc(c_v, "out")
    b.chain(k0=h, k1=w, r=c_v, reduce="sum", mfu_ops=[("vs_mul", dict(sreg=0))],
            rd=dict(base=xa, s_k0=w * c_v, s_k1=c_v, s_r=1), wr=dict(base=out, s_r=1))
    daddr = b.store(out, c_v)
    return b.build(daddr, (c_v * n,))


def elementwise(cfg: NPUConfig, rng, ops, *, rows: int = 3, cols: int = 4, x: np.ndarray | None = None,
                operands: dict | None = None, scalars: dict | None = None) -> Kernel:
    """A vector chain (reduce=none) over rows x cols vectors applying ``ops`` in order.

    ``ops``: mnemonics; each vv_* op reads its own operand tensor (``inputs['op{i}']``), each vs_* op the
    scalar register ``i`` (value ``scalars[i]``, default random).  inputs: x (rows, cols, N) MFU format.
    """
    n = cfg.native_dim
    b = Builder(cfg)
    if x is None:
        x = _rand(rng, (rows, cols, n), 2.0)
    xa = b.load_vectors(x, name="x")
    chain_ops = []
    for i, name in enumerate(ops):
        if name.startswith("vv_"):
            val = (operands or {}).get(i)
            val = _rand(rng, (rows, cols, n), 2.0) if val is None else val
            base = b.load_vectors(val, name=f"op{i}")
            chain_ops.append((name, dict(base=base, s_n0=cols, s_n1=1)))
        elif name.startswith("vs_"):
            value = (scalars or {}).get(i)
            value = float(rng.standard_normal()) if value is None else value
            b.scalar(i, value)
            b.inputs[f"s{i}"] = np.float32(value)
            chain_ops.append((name, dict(sreg=i)))
        else:
            chain_ops.append(name)
    out = b.alloc(rows * cols, "out")
    b.chain(n0=rows, n1=cols, mfu_ops=chain_ops, rd=dict(base=xa, s_n0=cols, s_n1=1),
            wr=dict(base=out, s_n0=cols, s_n1=1))
    daddr = b.store(out, rows * cols)
    return b.build(daddr, (rows, cols, n))


def lane_concat(cfg: NPUConfig, rng, *, count: int = 4, lo: int = 8, hi: int = 20) -> Kernel:
    """DenseNet-style concatenation: a 1x1 'conv' (one tile) of ``count`` pixels, ReLU, written into lanes
    lo..hi-1 (hi = 0: N) of an existing buffer.

    inputs: x (count, N), w (N, N), dest (count, N); output (count, N) = dest with those lanes replaced.
    """
    n = cfg.native_dim
    b = Builder(cfg)
    xa = b.load_vectors(_rand(rng, (count, n)), name="x")
    dest = b.load_vectors(_rand(rng, (count, n), 3.0), name="dest")
    mbase = b.load_weights(_rand(rng, (n, n), 1 / math.sqrt(n)), name="w")
    b.chain(n0=count, mbase=mbase, mfu_ops=["v_relu"], rd=dict(base=xa, s_n0=1),
            wr=dict(base=dest, s_n0=1, lo=lo, hi=hi))
    daddr = b.store(dest, count)
    return b.build(daddr, (count, n))


def mlp(cfg: NPUConfig, rng, *, batch: int = 3, d_in: int = 2, d_hidden: int = 2, d_out: int = 1) -> Kernel:
    """Several chains feeding each other through the vector memory:

    1. H = relu(W1 x + b1)           (mv_mul, r = d_hidden, k = d_in)
    2. Y = tanh(W2 H)                (mv_mul, reads chain 1's output)
    3. S = sum over the batch of Y   (reduce=sum, reads chain 2's output)
    4. Z = sigmoid(S) * s - Y[0]     (vector chain, vs_mul, vv_a_sub_b, v_sigm on two MFUs)

    Output: Y (batch x d_out vectors), S (d_out), Z (d_out), contiguous.
    inputs: x (batch, d_in*N), w1 (d_hidden*N, d_in*N), b1 (d_hidden*N,), w2 (d_out*N, d_hidden*N), s (scalar).
    """
    n = cfg.native_dim
    b = Builder(cfg)
    x = _rand(rng, (batch, d_in * n))
    xa = b.load_vectors(x.reshape(-1, n), name="x")
    b.inputs["x"] = b.inputs["x"].reshape(batch, d_in * n)
    w1 = b.load_weights(_rand(rng, (d_hidden * n, d_in * n), 1 / math.sqrt(d_in * n)), name="w1")
    b1 = b.load_vectors(_rand(rng, (d_hidden, n), 0.5), name="b1")
    b.inputs["b1"] = b.inputs["b1"].reshape(-1)
    w2 = b.load_weights(_rand(rng, (d_out * n, d_hidden * n), 2 / math.sqrt(d_hidden * n)), name="w2")
    hid = b.alloc(batch * d_hidden, "hidden")
    out = b.alloc(batch * d_out + 2 * d_out, "out")
    ya, sa, za = out, out + batch * d_out, out + batch * d_out + d_out
    b.inputs["s"] = np.float32(0.75)
    b.scalar(5, 0.75)
    b.chain(n0=batch, c=d_in, r=d_hidden, mbase=w1, mfu_ops=[("vv_add", dict(base=b1, s_r=1)), "v_relu"],
            rd=dict(base=xa, s_n0=d_in), wr=dict(base=hid, s_n0=d_hidden, s_r=1))
    b.chain(n0=batch, c=d_hidden, r=d_out, mbase=w2, mfu_ops=["v_tanh"],
            rd=dict(base=hid, s_n0=d_hidden), wr=dict(base=ya, s_n0=d_out, s_r=1))
    b.chain(k0=batch, r=d_out, reduce="sum", rd=dict(base=ya, s_k0=d_out, s_r=1), wr=dict(base=sa, s_r=1))
    b.chain(r=d_out, mfu_ops=["v_sigm", ("vs_mul", dict(sreg=5)), ("vv_a_sub_b", dict(base=ya, s_r=1))],
            rd=dict(base=sa, s_r=1), wr=dict(base=za, s_r=1))
    daddr = b.store(out, batch * d_out + 2 * d_out)
    return b.build(daddr, (batch * d_out + 2 * d_out, n))
