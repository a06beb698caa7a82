"""Code generation: a placed plan -> instruction streams, DRAM image and tensor descriptions.

Per step (one IR node) this emits the chains of ``compiler.lower.emit``:
weights are packed per chunk of output vectors that fits half the matrix
register file, streamed into the MRF as a ring (a load waits only for the
chain that last used its tiles, so weights prefetch while earlier layers
compute); layers touching a spilled tensor run in row bands through
double-buffered staging buffers.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from npu.config import NPUConfig
from npu.isa.encoding import Instruction, field_range, make
from npu.isa.table import BY_MNEMONIC
from npu.numerics import mfu
from npu.numerics.formats import get_format
from npu.numerics.pack import pack_floats
from npu.npuz import TensorDesc, TensorLayout

from ..ir import Add, Affine, Clip, Conv, GlobalPool, Graph, Node, Pad, Pool, Relu
from npu.layout import ActLayout
from ..errors import CompileError
from .plan import MAX_COUNT, Plan, band_input_rows
from .streams import Streams
from .weights import conv_matrix, pack_tiles

AVG_SREG = 0              # scalar register holding the average-pooling factor
CLIP_MAX_SREG = 1         # scalar register holding a clip's upper bound (ReLU6: 6)
CLIP_MIN_SREG = 2         # scalar register holding a clip's lower bound, when it is not 0
DRAM_ALIGN = 64


@dataclass
class LayerInfo:
    """What the report needs about one step."""

    name: str
    kind: str
    macs: int
    tiles: int
    weight_bytes: int
    banded: bool = False
    weight_format: str = ""       # MVU layers: the formats its chains multiply in ("" for other layers)
    activation_format: str = ""
    weights: int = 0              # weight values of the layer (the model's, before padding to tiles)
    mvu_reads: int = 0            # activation values the MVU reads (every chain's input vectors x N)


@dataclass
class Generated:
    """The program and everything that goes into the program file."""

    instructions: list[Instruction]
    regions: list[tuple[str, int, int]]
    warm_instructions: list[Instruction]      # the same inference with the weights already in the MRF
    warm_regions: list[tuple[str, int, int]]
    dram: bytes
    inputs: list[TensorDesc]
    outputs: list[TensorDesc]
    layers: list[LayerInfo]
    weight_tiles: int
    const_vectors: int


class DramImage:
    """The initial DRAM contents, allocated front to back."""

    def __init__(self):
        self.buf = bytearray()

    def add(self, data: bytes) -> int:
        """Append ``data`` (aligned); returns its address."""
        self.reserve(0)
        addr = len(self.buf)
        self.buf += data
        return addr

    def reserve(self, nbytes: int) -> int:
        """Append ``nbytes`` zero bytes (aligned); returns their address."""
        self.buf += bytes(-len(self.buf) % DRAM_ALIGN)
        addr = len(self.buf)
        self.buf += bytes(nbytes)
        return addr


class ConstPool:
    """Vectors the chains read as operands (zero, biases, scales), placed from vector address 0."""

    def __init__(self, n: int):
        self.n = n
        self.vectors: list[np.ndarray] = [np.zeros((1, n), np.float32)]   # address 0: the zero vector
        self.size = 1
        self.addr: dict[tuple[str, str], int] = {}

    @classmethod
    def for_plan(cls, plan: Plan) -> "ConstPool":
        """Every bias, scale and shift vector the plan's steps read, keyed by (node name, role)."""
        pool = cls(plan.native_dim)
        for nd in plan.steps:
            lane0 = plan.lane_offset(nd.outputs[0])
            if isinstance(nd, Conv) and nd.bias is not None:
                pool.addr[(nd.name, "bias")] = pool.add(nd.bias, lane0)
            elif isinstance(nd, Affine):
                pool.addr[(nd.name, "scale")] = pool.add(nd.scale, lane0)
                pool.addr[(nd.name, "shift")] = pool.add(nd.shift, lane0)
            elif isinstance(nd, Clip) and plan.shapes[nd.outputs[0]][0] % plan.native_dim:
                # a bound that would turn the zero lanes beyond the channels into nonzero values is read
                # from a vector that is zero there (those lanes take part in the next layer's block format)
                c = plan.shapes[nd.outputs[0]][0]
                if nd.lo is not None and nd.lo > 0:
                    pool.addr[(nd.name, "lo")] = pool.add(np.full(c, nd.lo, np.float32), lane0)
                if nd.hi is not None and nd.hi < 0:
                    pool.addr[(nd.name, "hi")] = pool.add(np.full(c, nd.hi, np.float32), lane0)
        return pool

    def add(self, values: np.ndarray, lane0: int = 0) -> int:
        """Store ``values`` from lane ``lane0`` on, zero-padded to whole vectors; returns the address."""
        count = -(-(lane0 + len(values)) // self.n)
        v = np.zeros(count * self.n, np.float32)
        v[lane0:lane0 + len(values)] = values
        addr = self.size
        self.vectors.append(v.reshape(count, self.n))
        self.size += count
        return addr

    def image(self) -> np.ndarray:
        """All constant vectors, (size, N) float32."""
        return np.concatenate(self.vectors)


@dataclass
class _Ring:
    """Matrix-register-file tiles used as a ring: allocations remember the compute item that read them."""

    capacity: int
    head: int = 0
    users: list = field(default_factory=list)     # (start, end, compute item)
    wrapped: bool = False

    def alloc(self, count: int) -> tuple[int, int]:
        """(first tile, compute item that must finish before the tiles may be overwritten; -1 for none)."""
        if count > self.capacity:
            raise CompileError(f"{count} weight tiles exceed the matrix register file ({self.capacity} tiles)")
        if self.head + count > self.capacity:
            self.head = 0
            self.wrapped = True
        start, end = self.head, self.head + count
        self.head = end
        wait = max((u for s, e, u in self.users if s < end and start < e), default=-1)
        self.users = [(s, e, u) for s, e, u in self.users if not (s < end and start < e)]
        return start, wait

    def use(self, start: int, count: int, compute_item: int) -> None:
        """Record that ``compute_item`` reads tiles start..start+count-1."""
        self.users.append((start, start + count, compute_item))


@dataclass
class _Pass:
    """One chain sweep of a convolution: a column phase's chunk of output vectors, with its packed weights."""

    body: object                  # body(origin, out_base, rows, maddr) -> the chain's instructions
    tiles: int
    image: bytes


def _weight_sets(passes: list[_Pass], capacity: int) -> list[list[_Pass]]:
    """Consecutive passes grouped so that each group's weight tiles fit ``capacity`` together."""
    sets: list[list[_Pass]] = []
    for ps in passes:
        if sets and sum(q.tiles for q in sets[-1]) + ps.tiles <= capacity:
            sets[-1].append(ps)
        else:
            sets.append([ps])
    return sets


def _row_chunks(height: int) -> list[tuple[int, int]]:
    """(first row, rows) of the chains that sweep ``height`` output rows (a chain's row count is 12 bits)."""
    return [(y0, min(MAX_COUNT, height - y0)) for y0 in range(0, height, MAX_COUNT)]


def _zero_fill(base: int, size: int, zero_addr: int = 0) -> list[list[Instruction]]:
    """Chains writing zero to vectors base..base+size-1."""
    out = []
    while size > 0:
        r = min(size, MAX_COUNT)
        n0 = min(size // r, MAX_COUNT)
        out.append([make("chain", n0=n0, r=r), make("v_rd", base=zero_addr),
                    make("v_wr", base=base, s_n0=r, s_r=1), make("end_chain")])
        base += n0 * r
        size -= n0 * r
    return out


def _zero_border(lay: ActLayout) -> list[list[Instruction]]:
    """Chains writing zero to the border of a zero-bordered layout."""
    p = lay.pad
    if p == 0:
        return []
    top = p * lay.row_stride
    start = lay.base
    bottom = lay.addr(lay.height, -p)
    out = _zero_fill(start, top) + _zero_fill(bottom, top)
    side = p * lay.stride
    for y0 in range(0, lay.height, MAX_COUNT):
        rows = min(MAX_COUNT, lay.height - y0)
        out.append([make("chain", n0=rows, n1=2, r=side), make("v_rd", base=0),
                    make("v_wr", base=lay.addr(y0, -p), s_n0=lay.row_stride, s_n1=(lay.width + p) * lay.stride,
                         s_r=1),
                    make("end_chain")])
    return out


def _peel_max_taps(kernel: tuple[int, int], mfus: int) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """(taps the chain's read covers, last taps taken as ``vv_max`` operands) of a max-pooling window.

    The read must stay a rectangle at the window's start, so a line (1 x k
    or k x 1) gives up to ``mfus`` trailing taps and a wider window its last
    row when that row fits the MFUs; the running maximum keeps window order.
    """
    kh, kw = kernel
    if kh == 1 or kw == 1:
        peel = min(mfus, kh * kw - 1)
        line = [(0, t) if kh == 1 else (t, 0) for t in range(kh * kw)]
        keep = kh * kw - peel
        return ((1, keep) if kh == 1 else (keep, 1)), line[keep:]
    if kw <= mfus:
        return (kh - 1, kw), [(kh - 1, t) for t in range(kw)]
    return kernel, []


def _chunk_weight(nd: Conv, phase: int, lane0: int, row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
    """(row1-row0, col1-col0, kh, kw) dense weights: output lanes row0.. of a chunk over input channels col0..

    Output channel o sits at lane ``lane0 + o``; with groups, it is connected
    only to the input channels of its group (zero elsewhere).
    """
    w = nd.phase_weight(phase)
    cout, cin_g, kh, kw = w.shape
    cout_g = cout // nd.groups
    out = np.zeros((row1 - row0, col1 - col0, kh, kw), np.float32)
    for g in range(nd.groups):
        o0, o1 = max(g * cout_g, row0 - lane0), min((g + 1) * cout_g, row1 - lane0)
        if o0 >= o1:
            continue
        c0 = g * cin_g - col0
        if c0 < 0 or c0 + cin_g > col1 - col0:
            raise ValueError(f"group {g} reads channels outside the chunk's input vectors")
        out[lane0 + o0 - row0:lane0 + o1 - row0, c0:c0 + cin_g] = w[o0:o1]
    return out


@functools.lru_cache(maxsize=None)
def _ranges(spec) -> tuple[tuple[str, int, int, bool], ...]:
    return tuple((f.name, *field_range(f), f.signed) for f in spec.fields)


def _check_fields(streams: Streams, nodes: dict[str, Node]) -> None:
    """CompileError naming the layer when an instruction field does not fit its width (the encoder's check, early).

    A count, stride or address beyond its field is a machine limit the
    layer exceeds; a count below 1 or a negative address is a compiler bug.
    """
    for items in streams.items.values():
        for it in items:
            for ins in it.instrs:
                for name, lo, hi, signed in _ranges(ins.spec):
                    v = ins.fields[name]
                    if lo <= v <= hi:
                        continue
                    nd = nodes.get(it.region)
                    where = f"node {nd.name!r} ({nd.kind})" if nd is not None else f"the {it.region or 'setup'} code"
                    if v > hi or signed:
                        raise CompileError(f"{where}: {ins.mnemonic} needs {name}={v}, beyond the instruction "
                                           f"set's [{lo}, {hi}]; the layer's tensors are too large for one "
                                           f"instruction")
                    raise CompileError(f"{where}: {ins.mnemonic} field {name}={v} is outside [{lo}, {hi}] (a "
                                       f"compiler bug; please report it with the model)")


def _tap_strides(nd: Conv, src: ActLayout) -> tuple[int, int]:
    """(s_k0, s_k1) of a convolution's window read: its dilation times the input's row and pixel strides.

    A dilated convolution is a tap stride of the read, nothing more; a
    CompileError names the layer when a stride does not fit its field.
    """
    strides = []
    for name, d, unit, what in (("s_k0", nd.dilation[0], src.row_stride, "rows"),
                                ("s_k1", nd.dilation[1], src.stride, "pixels")):
        top = next(hi for f, _lo, hi, _signed in _ranges(BY_MNEMONIC["v_rd"]) if f == name)
        if d * unit > top:
            raise CompileError(f"node {nd.name!r} (Conv): dilation {d} over input {what} of {unit} vectors needs "
                               f"a tap stride {name}={d * unit} in its window read, beyond the instruction set's "
                               f"largest stride {top}; use a smaller dilation, or an input with fewer channels or "
                               f"a narrower (less padded) image")
        strides.append(d * unit)
    return strides[0], strides[1]


def _f32_bits(x: float) -> int:
    return int(np.float32(x).view(np.uint32))


class Codegen:
    """Emits one compiled program for a placed plan."""

    def __init__(self, graph: Graph, plan: Plan, config: NPUConfig, consts: ConstPool, progress=None):
        self.g, self.plan, self.cfg = graph, plan, config
        self.n = config.native_dim
        self.vec_bytes = self.n * mfu.mfu_format(config.mfu_format).bits // 8
        self.s = Streams()
        self.dram = DramImage()
        self.consts = consts
        self.ring = _Ring(config.mrf_tiles)
        self.layers: list[LayerInfo] = []
        self.tiles = 0
        self.ready_load = -1          # load item every compute must follow (constants, VRF inputs)
        self.progress = progress

    # --- helpers --------------------------------------------------------------------------------
    def _vec_image(self, vectors: np.ndarray) -> bytes:
        return pack_floats(mfu.to_format(vectors, self.cfg.mfu_format), self.cfg.mfu_format)

    def _loads(self, vaddr: int, daddr: int, count: int) -> list[Instruction]:
        """v_loads of ``count`` contiguous vectors."""
        out = []
        while count > 0:
            row_len = min(count, MAX_COUNT)
            rows = min(count // row_len, MAX_COUNT)
            out.append(make("v_load", vaddr=vaddr, daddr=daddr, rows=rows, row_len=row_len,
                            dstride=row_len * self.vec_bytes, vstride=row_len))
            vaddr += rows * row_len
            daddr += rows * row_len * self.vec_bytes
            count -= rows * row_len
        return out

    def _stores(self, vaddr: int, daddr: int, count: int) -> list[Instruction]:
        return [make("v_store", **{k: v for k, v in ins.fields.items()}) for ins in self._loads(vaddr, daddr, count)]

    # --- program --------------------------------------------------------------------------------
    def generate(self) -> Generated:
        """Emit every step; returns the program, DRAM image and tensor descriptions."""
        plan = self.plan
        # weights are packed while emitting; constants, inputs, spills and outputs follow them in DRAM
        self._weights: list[tuple[int, bytes]] = []
        self.s.begin("setup")
        inputs = self._inputs()
        for st in plan.storages.values():
            if st.dram and st.daddr < 0:          # spilled tensors: their whole padded image, border zero
                st.daddr = self.dram.reserve(st.size(self.n) * self.vec_bytes)
        self.last_store = -1
        for i, nd in enumerate(plan.steps):
            self.s.begin(nd.name)
            self._zero_new_storages(i)
            self._emit(i, nd)
            if self.progress:
                self.progress(i + 1, len(plan.steps))
        outputs = self._outputs()
        _check_fields(self.s, {nd.name: nd for nd in plan.steps})
        instrs, regions = self.s.finish()
        self._count_mvu_reads(instrs, regions)
        warm, warm_regions = self.s.finish(skip=frozenset({"weights"}))
        if self.ring.wrapped:
            warm, warm_regions = [], []          # the weights do not all fit: every run streams them
        return Generated(instrs, regions, warm, warm_regions, bytes(self.dram.buf), inputs, outputs, self.layers, self.tiles,
                         self.consts.size)

    def _count_mvu_reads(self, instrs: list[Instruction], regions) -> None:
        """Fill each layer's ``mvu_reads``: the input values of its mv_mul chains (n0*n1*k0*k1*c vectors of N)."""
        by_name = {layer.name: layer for layer in self.layers}
        for name, start, end in regions:
            layer = by_name.get(name)
            if layer is None or not layer.weight_format:
                continue
            for j in range(start, min(end + 1, len(instrs) - 2)):
                ins = instrs[j]
                if ins.spec.mnemonic == "chain" and instrs[j + 2].spec.mnemonic == "mv_mul":
                    f = ins.fields
                    layer.mvu_reads += f["n0"] * f["n1"] * f["k0"] * f["k1"] * f["c"] * self.n

    def _inputs(self) -> list[TensorDesc]:
        descs = []
        plan = self.plan
        # constants go first so every chain can rely on them
        const_addr = self.dram.add(self._vec_image(self.consts.image()))
        self._const_load = self.s.load(self._loads(0, const_addr, self.consts.size))
        self.ready_load = self._const_load
        for t in self.g.inputs:
            st = plan.storage_of(t)
            lay = st.layout(self.n)
            nbytes = lay.size * self.vec_bytes
            st.daddr = self.dram.reserve(nbytes)
            if not st.dram:
                self.ready_load = self.s.load(self._loads(lay.base, st.daddr, lay.size))
            descs.append(self._desc(t, st, lay, nbytes))
        return descs

    def _desc(self, t: str, st, lay: ActLayout, nbytes: int) -> TensorDesc:
        params = TensorLayout(self.plan.shapes[t][0], lay.height, lay.width, lay.pad, lay.stride, self.n,
                              channel_offset=self.plan.views[t][1],
                              order=self.g.metadata.get("io_order", {}).get(t, "chw"),
                              **self.g.metadata.get("input_packing", {}).get(t, {}))
        shape = self.g.metadata.get("original_shapes", {}).get(t, self.g.shapes[t])
        return TensorDesc(t, tuple(int(x) for x in shape), "hwc-padded", self.cfg.mfu_format, st.daddr, nbytes,
                          params)

    def _outputs(self) -> list[TensorDesc]:
        descs = []
        self.s.begin("output")
        for t in self.g.outputs:
            st = self.plan.storage_of(t)
            lay = st.layout(self.n)
            nbytes = lay.size * self.vec_bytes
            if not st.dram:
                st.daddr = self.dram.reserve(nbytes)
                self.s.store(self._stores(lay.base, st.daddr, lay.size), after_compute=self.s.last_compute)
            descs.append(self._desc(t, st, lay, nbytes))
        return descs

    def _zero_new_storages(self, i: int) -> None:
        for st in self.plan.storages.values():
            if st.first != i or st.dram:
                continue
            lay = st.layout(self.n)
            chains = _zero_fill(lay.base, lay.size) if st.lane_writes or st.zero_fill else _zero_border(lay)
            for ch in chains:
                self._compute(ch)

    def _compute(self, instrs, after_load=-1) -> int:
        """Append a compute item after the constants/inputs, any pending store, and ``after_load`` (index or list)."""
        loads = [after_load] if isinstance(after_load, int) else list(after_load)
        return self.s.compute(instrs, after_load=loads + [self.ready_load], after_store=self.last_store)

    # --- steps ----------------------------------------------------------------------------------
    def _emit(self, i: int, nd: Node) -> None:
        if isinstance(nd, Conv):
            self._conv(i, nd)
        elif isinstance(nd, (Pool, GlobalPool)):
            self._pool(i, nd)
        elif isinstance(nd, Add):
            self._elementwise(i, nd, [make("vv_add", base=0)], nd.relu, nd.clip_max)
        elif isinstance(nd, Affine):
            scale, shift = self.consts.addr[(nd.name, "scale")], self.consts.addr[(nd.name, "shift")]
            self._elementwise(i, nd, [make("vv_mul", base=scale, s_r=1), make("vv_add", base=shift, s_r=1)],
                              nd.relu, nd.clip_max)
        elif isinstance(nd, Relu):
            self._elementwise(i, nd, [], True)
        elif isinstance(nd, Clip):
            relu = nd.lo == 0.0
            lo_vec, hi_vec = self.consts.addr.get((nd.name, "lo")), self.consts.addr.get((nd.name, "hi"))
            ops = []
            if lo_vec is not None:
                ops.append(make("vv_max", base=lo_vec, s_r=1))
            elif nd.lo is not None and not relu:
                self._compute([make("s_wr", sreg=CLIP_MIN_SREG, value=_f32_bits(nd.lo))])
                ops.append(make("vs_max", sreg=CLIP_MIN_SREG))
            if hi_vec is not None:
                ops.append(make("vv_min", base=hi_vec, s_r=1))
            self._elementwise(i, nd, ops, relu, nd.hi if hi_vec is None else None)
        elif isinstance(nd, Pad):
            self._pad(i, nd)
        else:
            raise CompileError(f"node {nd.name!r}: {nd.kind} cannot be lowered")

    def _check_vram(self, nd: Node) -> None:
        for t in nd.inputs + nd.outputs:
            if self.plan.storage_of(t).dram:
                raise CompileError(f"node {nd.name!r} ({nd.kind}) reads or writes spilled tensor {t!r}; only "
                                   f"convolutions and pooling run in bands")

    def _elementwise(self, i: int, nd: Node, ops: list[Instruction], relu: bool,
                     clip_max: float | None = None) -> None:
        self._check_vram(nd)
        if clip_max is not None:
            self._compute([make("s_wr", sreg=CLIP_MAX_SREG, value=_f32_bits(clip_max))])
        src = self.plan.layout(nd.inputs[0])
        dst = self.plan.layout(nd.outputs[0])
        if self.plan.lane_offset(nd.outputs[0]) or self.plan.lane_offset(nd.inputs[0]):
            raise CompileError(f"node {nd.name!r}: elementwise layers must start at a vector boundary")
        self.layers.append(LayerInfo(nd.name, nd.kind, 0, 0, 0))
        for y0, rows in _row_chunks(dst.height):
            body = [make("chain", n0=rows, n1=dst.width, r=dst.vectors),
                    make("v_rd", base=src.addr(y0, 0), s_n0=src.row_stride, s_n1=src.stride, s_r=1)]
            for op in ops:
                if op.mnemonic == "vv_add" and isinstance(nd, Add):
                    b = self.plan.layout(nd.inputs[1])
                    op = make("vv_add", base=b.addr(y0, 0), s_n0=b.row_stride, s_n1=b.stride, s_r=1)
                body.append(op)
            if relu:
                body.append(make("v_relu"))
            if clip_max is not None:
                body.append(make("vs_min", sreg=CLIP_MAX_SREG))
            body += [make("v_wr", base=dst.addr(y0, 0), s_n0=dst.row_stride, s_n1=dst.stride, s_r=1),
                     make("end_chain")]
            self._compute(body)

    def _pad(self, i: int, nd: Pad) -> None:
        """Copy the input into the interior of the (zero-filled) padded output."""
        self._check_vram(nd)
        src = self.plan.layout(nd.inputs[0])
        dst = self.plan.layout(nd.outputs[0])
        if self.plan.lane_offset(nd.outputs[0]) or self.plan.lane_offset(nd.inputs[0]):
            raise CompileError(f"node {nd.name!r}: padding must start at a vector boundary")
        top, left = nd.pads[0], nd.pads[1]
        self.layers.append(LayerInfo(nd.name, nd.kind, 0, 0, 0))
        for y0, rows in _row_chunks(src.height):
            self._compute([make("chain", n0=rows, n1=src.width, r=src.vectors),
                           make("v_rd", base=src.addr(y0, 0), s_n0=src.row_stride, s_n1=src.stride, s_r=1),
                           make("v_wr", base=dst.addr(top + y0, left), s_n0=dst.row_stride, s_n1=dst.stride,
                                s_r=1),
                           make("end_chain")])

    def _pool(self, i: int, nd) -> None:
        src = self.plan.layout(nd.inputs[0])
        dst = self.plan.layout(nd.outputs[0])
        if isinstance(nd, GlobalPool):
            kernel, stride, pads, mode = (src.height, src.width), (1, 1), (0, 0, 0, 0), nd.mode
        else:
            kernel, stride, pads, mode = nd.kernel, nd.stride, nd.pads, nd.mode
        pre = []
        if mode == "avg":
            pre = [make("s_wr", sreg=AVG_SREG, value=_f32_bits(1.0 / (kernel[0] * kernel[1])))]
        read, peeled = _peel_max_taps(kernel, self.cfg.mfus) if mode == "max" else (kernel, [])

        def body(origin, out_base, rows):
            ops = [make("chain", n0=rows, n1=dst.width, k0=read[0], k1=read[1], c=1, r=dst.vectors,
                        reduce="max" if mode == "max" else "sum"),
                   make("v_rd", base=origin, s_n0=stride[0] * src.row_stride, s_n1=stride[1] * src.stride,
                        s_k0=src.row_stride, s_k1=src.stride, s_r=1)]
            # the window's last taps, in window order after the read ones: one MFU max each
            ops += [make("vv_max", base=origin + ky * src.row_stride + kx * src.stride,
                         s_n0=stride[0] * src.row_stride, s_n1=stride[1] * src.stride, s_r=1)
                    for ky, kx in peeled]
            if mode == "avg":
                ops.append(make("vs_mul", sreg=AVG_SREG))
            return ops + [make("v_wr", base=out_base, s_n0=dst.row_stride, s_n1=dst.stride, s_r=1),
                          make("end_chain")]

        if self.plan.lane_offset(nd.outputs[0]):
            raise CompileError(f"node {nd.name!r}: pooling output starts inside a vector of a concatenation; only "
                               f"convolutions can write there")
        self.layers.append(LayerInfo(nd.name, nd.kind, 0, 0, 0, banded=i in self.plan.band_rows))
        if pre:
            self._compute(pre)
        self._sweep(i, nd, src, dst, kernel, stride, pads, [body], after_load=-1)

    def _lanes(self, nd: Node, r0: int = 0, r1: int | None = None) -> dict:
        """The v_wr lane mask for output vectors r0..r1-1 of ``nd`` (empty: whole vectors).

        A tensor at channel offset 0 is its vectors' first writer (the plan
        orders the layers so), so it writes whole vectors, its padding lanes
        being zero.  A tensor starting inside a vector writes only its lanes,
        one vector per chain.
        """
        lo = self.plan.lane_offset(nd.outputs[0])
        if lo == 0:
            return {}
        c = self.plan.shapes[nd.outputs[0]][0]
        r1 = r0 + 1 if r1 is None else r1
        if r1 - r0 != 1:
            raise CompileError(f"node {nd.name!r}: a lane-masked write must cover one vector per chain")
        first = lo if r0 == 0 else 0
        end = min(lo + c - r0 * self.n, self.n)
        return {"lo": first, "hi": end % self.n}

    def _conv(self, i: int, nd: Conv) -> None:
        n = self.n
        if self.plan.views[nd.inputs[0]][0] == self.plan.views[nd.outputs[0]][0] and max(nd.kernel) > 1:
            raise CompileError(f"node {nd.name!r}: a {nd.kernel[0]}x{nd.kernel[1]} convolution reads and writes "
                               f"the same concatenation buffer, so later pixels would read channels it has "
                               f"just written; put a layer (e.g. BatchNorm/ReLU, as DenseNet does) between the "
                               f"concatenated tensor and the convolution")
        src = self.plan.layout(nd.inputs[0])
        dst = self.plan.layout(nd.outputs[0])
        lane0 = self.plan.lane_offset(nd.outputs[0])
        kh, kw = nd.kernel
        tap_rows, tap_cols = _tap_strides(nd, src)
        cout, phases = nd.out_channels, nd.column_phases
        if phases > 1 and lane0:
            raise CompileError(f"node {nd.name!r}: a convolution with column phases cannot write inside a vector "
                               f"of a concatenation")
        out_vectors = -(-(lane0 + cout) // n)
        cap = max(self.cfg.mrf_tiles // 2, 1)
        chunks = self._conv_chunks(nd, lane0, out_vectors, src.vectors, cap)
        bias = self.consts.addr.get((nd.name, "bias"))
        residual = self.plan.layout(nd.inputs[1]) if nd.residual else None
        c, oh, ow = self.plan.shapes[nd.outputs[0]]
        wname = nd.weight_format or self.cfg.weight_format
        aname = nd.activation_format or self.cfg.activation_format
        fmt = self.cfg.mode_of(wname, aname)
        if fmt is None:
            raise CompileError(f"node {nd.name!r}: weights {wname} with activations {aname} is none of the MVU "
                               f"format modes of {self.cfg.name} (extra_formats: "
                               f"{', '.join(self.cfg.extra_formats) or 'none'})")
        wfmt = get_format(wname)
        info = LayerInfo(nd.name, "Conv" if (kh, kw) != (1, 1) or oh * ow > 1 else "Dense",
                         macs=nd.macs((oh, ow)), tiles=0, weight_bytes=0, banded=i in self.plan.band_rows,
                         weight_format=wfmt.name, activation_format=get_format(aname).name,
                         weights=int(nd.weight.size))
        self.layers.append(info)
        if nd.clip_max is not None:
            self._compute([make("s_wr", sreg=CLIP_MAX_SREG, value=_f32_bits(nd.clip_max))])
        # One pass per column phase and chunk of output vectors.  Phase p computes output columns p, p + P, ...;
        # its window for column P*m + p starts at input column m.  A chunk reads input vectors a..b-1 (all of
        # them, or those holding its groups' channels).
        passes: list[_Pass] = []
        for p in range(phases):
            columns = len(range(p, dst.width, phases))
            if columns == 0:                  # an output narrower than the strip: this phase has no column
                continue
            for r0, r1, a, b in chunks:
                w = _chunk_weight(nd, p, lane0, r0 * n, r1 * n, a * n, b * n)
                image = pack_tiles(conv_matrix(w, b - a, r1 - r0, n), wfmt, n)
                lanes = self._lanes(nd, r0, r1) if lane0 else {}

                def body(origin, out_base, rows, maddr, r0=r0, r1=r1, a=a, b=b, lanes=lanes, p=p, columns=columns):
                    ops = [make("chain", n0=rows, n1=columns, k0=kh, k1=kw, c=b - a, r=r1 - r0),
                           make("v_rd", base=origin + a, s_n0=nd.stride[0] * src.row_stride,
                                s_n1=nd.stride[1] * src.stride, s_k0=tap_rows, s_k1=tap_cols),
                           make("mv_mul", mbase=maddr, fmt=fmt)]
                    if bias is not None:
                        ops.append(make("vv_add", base=bias + r0, s_r=1))
                    if residual is not None:
                        y0 = self._band_y0
                        ops.append(make("vv_add", base=residual.addr(y0, p) + r0, s_n0=residual.row_stride,
                                        s_n1=phases * residual.stride, s_r=1))
                    if nd.relu:
                        ops.append(make("v_relu"))
                    if nd.clip_max is not None:
                        ops.append(make("vs_min", sreg=CLIP_MAX_SREG))
                    return ops + [make("v_wr", base=out_base + p * dst.stride + r0, s_n0=dst.row_stride,
                                       s_n1=phases * dst.stride, s_r=1, **lanes), make("end_chain")]

                tiles = (r1 - r0) * kh * kw * (b - a)
                passes.append(_Pass(body, tiles, image))
                info.tiles += tiles
                info.weight_bytes += len(image)
                self.tiles += tiles
        # Unbanded, each pass sweeps the whole output on its own weights.  Banded, the passes whose weights fit
        # the MRF together run band by band, so every band of a spilled output is complete when it is stored.
        sets = [[ps] for ps in passes] if i not in self.plan.band_rows else _weight_sets(passes, cap)
        for k_set, wset in enumerate(sets):
            count = sum(ps.tiles for ps in wset)
            daddr = self.dram.add(b"".join(ps.image for ps in wset))
            maddr, wait = self.ring.alloc(count)
            load = self.s.load([make("m_load", maddr=maddr, daddr=daddr, count=count, fmt=fmt)], after_compute=wait,
                               kind="weights")
            bodies, offset = [], maddr
            for ps in wset:
                bodies.append(lambda origin, out_base, rows, ps=ps, m=offset: ps.body(origin, out_base, rows, m))
                offset += ps.tiles
            items = self._sweep(i, nd, src, dst, nd.extent, nd.stride, nd.pads, bodies, after_load=load,
                                merge=k_set > 0)
            for it in items:
                self.ring.use(maddr, count, it)

    def _conv_chunks(self, nd: Conv, lane0: int, out_vectors: int, in_vectors: int,
                     cap: int) -> list[tuple[int, int, int, int]]:
        """(r0, r1, a, b): output vectors r0..r1-1 computed together from input vectors a..b-1.

        Output vectors that read the same input vectors share a chain while
        their tiles fit ``cap``; a grouped convolution's output vector reads
        only the vectors holding its groups' input channels.
        """
        n = self.n
        kh, kw = nd.kernel
        cout, cin_g = nd.out_channels, nd.weight.shape[1]
        cout_g = cout // nd.groups
        ranges = []
        for r in range(out_vectors):
            lo, hi = max(r * n - lane0, 0), min((r + 1) * n - lane0, cout) - 1
            if nd.groups == 1:
                ranges.append((0, in_vectors))
            else:
                ranges.append(((lo // cout_g) * cin_g // n, -(-((hi // cout_g) + 1) * cin_g // n)))
        chunks: list[tuple[int, int, int, int]] = []
        for r, (a, b) in enumerate(ranges):
            k = kh * kw * (b - a)
            if k > cap:
                raise CompileError(f"node {nd.name!r}: one output vector needs {k} weight tiles, more than half the "
                                   f"matrix register file ({self.cfg.mrf_tiles} tiles)")
            if chunks and not lane0 and chunks[-1][2:] == (a, b) and (r + 1 - chunks[-1][0]) * k <= cap:
                chunks[-1] = (chunks[-1][0], r + 1, a, b)
            else:
                chunks.append((r, r + 1, a, b))
        return chunks

    def _sweep(self, i: int, nd: Node, src: ActLayout, dst: ActLayout, kernel, stride, pads, bodies,
               after_load: int, merge: bool = False) -> list[int]:
        """Run each ``body(origin, out_base, rows)`` over all output rows, in bands if a tensor is spilled.

        ``kernel`` is the input rows and columns one window spans (a dilated
        convolution's ``extent``): a band loads the input rows its windows
        reach.

        Banded, every body runs on a band before the band is stored, so bodies
        that write different columns or vectors of one output (column phases,
        chunks of output vectors) all land in it.  With ``merge`` an earlier
        sweep of the same step has already stored part of each band of a
        spilled output: the band is read back before the bodies add theirs.
        """
        top, left = pads[0], pads[1]
        if top > src.pad or left > src.pad:
            raise CompileError(f"node {nd.name!r}: padding {pads} exceeds the input's zero border {src.pad}")
        sst, dstst = self.plan.storage_of(nd.inputs[0]), self.plan.storage_of(nd.outputs[0])
        if i not in self.plan.band_rows:        # one chain per body, or per MAX_COUNT rows of a taller output
            items = []
            for y0, rows in _row_chunks(dst.height):
                self._band_y0 = y0
                items += [self._compute(body(src.addr(y0 * stride[0] - top, -left), dst.addr(y0, 0), rows),
                                        after_load) for body in bodies]
            return items
        rows_per = self.plan.band_rows[i]
        bufs = self.plan.band_buffers.get(i, {})
        items = []
        in_reader = [-1, -1]
        out_store = [-1, -1]
        if dstst.dram and not merge:
            for k in (0, 1):
                for ch in _zero_fill(bufs[f"out{k}"], rows_per * dst.row_stride):
                    self._compute(ch)
        step_start = self.s.last_compute
        for b, y0 in enumerate(range(0, dst.height, rows_per)):
            rows = min(rows_per, dst.height - y0)
            self._band_y0 = y0
            slot = b % 2
            need_load = [after_load]
            if sst.dram:
                a = y0 * stride[0] - top + src.pad
                count = band_input_rows(rows, stride[0], kernel[0], src.height + 2 * src.pad - a)
                buf = bufs[f"in{slot}"]
                gate = max(in_reader[slot], step_start)
                ld = self.s.load(self._loads(buf, sst.daddr + a * src.row_stride * self.vec_bytes,
                                             count * src.row_stride), after_compute=gate,
                                 after_store=self.last_store)
                need_load.append(ld)
                origin = buf + (src.pad - left) * src.stride
            else:
                origin = src.addr(y0 * stride[0] - top, -left)
            if dstst.dram:
                out_buf = bufs[f"out{slot}"]
                out_base = out_buf + dst.pad * dst.stride
                band_daddr = dstst.daddr + (y0 + dst.pad) * dst.row_stride * self.vec_bytes
                if merge:
                    need_load.append(self.s.load(self._loads(out_buf, band_daddr, rows * dst.row_stride),
                                                 after_compute=step_start,
                                                 after_store=max(self.last_store, out_store[slot])))
                saved = self.last_store
                self.last_store = max(self.last_store, out_store[slot])
                band_items = [self._compute(body(origin, out_base, rows), need_load) for body in bodies]
                self.last_store = saved
                out_store[slot] = self.s.store(self._stores(out_buf, band_daddr, rows * dst.row_stride),
                                               after_compute=band_items[-1])
            else:
                band_items = [self._compute(body(origin, dst.addr(y0, 0), rows), need_load) for body in bodies]
            in_reader[slot] = band_items[-1]
            items += band_items
        if dstst.dram:
            self.last_store = max(out_store)
        return items
