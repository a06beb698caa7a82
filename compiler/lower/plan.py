"""Placement: which buffer holds each tensor, its zero border, its lifetime and its address.

Every activation tensor is a view of a *storage*: a concatenation's inputs
are views at channel offsets of the concatenation's storage, so DenseNet's
layers write their channels straight into one shared buffer; a Flatten of a
C x 1 x 1 tensor is the same storage.  Storages live in the vector memory,
placed by liveness (``compiler.memory``); when they do not fit, the largest
spillable storage at the overflowing step moves to DRAM and its producer and
consumers run in row bands through small staging buffers.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from npu.config import NPUConfig
from npu.layout import ActLayout

from ..errors import CompileError, MemoryPlanError
from ..ir import Concat, Conv, Flatten, Graph, GlobalPool, Node, Pad, Pool
from ..memory import Buffer, plan_memory


@dataclass
class Storage:
    """One buffer of activations in vector memory (or DRAM when spilled)."""

    name: str
    channels: int
    height: int
    width: int
    pad: int = 0
    first: int = 0
    last: int = 0
    dram: bool = False
    vaddr: int = -1
    daddr: int = -1
    lane_writes: bool = False     # several producers write lanes of one vector (concatenation)
    zero_fill: bool = False       # producers write only part of it (padding): zero it all first
    producers: list = field(default_factory=list)
    consumers: list = field(default_factory=list)

    def layout(self, n: int) -> ActLayout:
        """The whole buffer as a layout at its vector-memory address."""
        return ActLayout(self.channels, self.height, self.width, self.pad, n, max(self.vaddr, 0))

    def size(self, n: int) -> int:
        """Vectors the buffer occupies, border included."""
        return self.layout(n).size


@dataclass
class Plan:
    """Steps (compute nodes in order), storages and tensor views, with every address chosen."""

    steps: list[Node]
    storages: dict[str, Storage]
    views: dict[str, tuple[str, int]]             # tensor -> (storage, channel offset)
    shapes: dict[str, tuple[int, int, int]]
    native_dim: int
    band_rows: dict[int, int] = field(default_factory=dict)   # step -> output rows per band (DRAM layers)
    band_buffers: dict[int, dict[str, int]] = field(default_factory=dict)
    const_vectors: int = 0

    def storage_of(self, tensor: str) -> Storage:
        """The storage holding ``tensor``."""
        return self.storages[self.views[tensor][0]]

    def layout(self, tensor: str) -> ActLayout:
        """``tensor`` as a layout (a view at its channel offset inside its storage)."""
        st = self.storage_of(tensor)
        off = self.views[tensor][1]
        c, h, w = self.shapes[tensor]
        n = self.native_dim
        return ActLayout(c, h, w, st.pad, n, max(st.vaddr, 0) + off // n, pitch=st.layout(n).vectors)

    def lane_offset(self, tensor: str) -> int:
        """Lane of the first channel of ``tensor`` within its vector."""
        return self.views[tensor][1] % self.native_dim


def _chw(shape) -> tuple[int, int, int]:
    return tuple(shape) if len(shape) == 3 else (int(shape[0]), 1, 1)


def _reads_with_pad(node: Node) -> int:
    if isinstance(node, (Conv, Pool)):
        return max(node.pads)
    return 0


def build_plan(graph: Graph, config: NPUConfig) -> Plan:
    """Storages and views for every tensor, and the step order; addresses are chosen by :func:`place`."""
    n = config.native_dim
    order = list(graph.topological())
    steps = [nd for nd in order if not isinstance(nd, (Concat, Flatten))]
    live = {t for nd in order for t in nd.inputs + nd.outputs} | set(graph.inputs) | set(graph.outputs)
    shapes = {t: _chw(s) for t, s in graph.shapes.items() if t in live and t not in graph.constants}
    views: dict[str, tuple[str, int]] = {}
    storages: dict[str, Storage] = {}

    def new_storage(t: str) -> Storage:
        c, h, w = shapes[t]
        st = Storage(t, c, h, w)
        storages[t] = st
        views[t] = (t, 0)
        return st

    # concatenations, outermost first: inputs become views of the output's storage
    for nd in reversed(order):
        if isinstance(nd, Concat):
            out = nd.outputs[0]
            if out not in views:
                new_storage(out)
            root, base = views[out]
            storages[root].lane_writes = True
            off = base
            for t in nd.inputs:
                if t in views:
                    raise CompileError(f"tensor {t!r} is concatenated twice; each tensor may join one "
                                       f"concatenation")
                views[t] = (root, off)
                off += shapes[t][0]
    for t in graph.inputs:
        if t not in views:
            new_storage(t)
    for nd in order:
        if isinstance(nd, Flatten):
            src = nd.inputs[0]
            if shapes[src][1:] != (1, 1):
                raise CompileError(f"node {nd.name!r}: flattening a {list(shapes[src])} tensor is only supported "
                                   f"as input of a fully connected layer")
            views[nd.outputs[0]] = views[src]
            continue
        if isinstance(nd, Concat):
            continue
        for t in nd.outputs:
            if t not in views:
                new_storage(t).zero_fill = isinstance(nd, Pad)
    for t, (root, off) in views.items():
        if off % n and isinstance(graph.producer(t), (Pool, GlobalPool)) :
            raise CompileError(f"tensor {t!r} starts at channel {off} of a concatenation, inside a vector; only "
                               f"convolutions can write there")
    plan = Plan(steps, storages, views, shapes, n)
    end = len(steps)
    for st in storages.values():
        st.first, st.last = end, -1
    for t in graph.inputs:
        plan.storage_of(t).first = -1
    for i, nd in enumerate(steps):
        for t in nd.outputs:
            st = plan.storage_of(t)
            st.first = min(st.first, i)
            st.producers.append(i)
        for t in nd.inputs:
            st = plan.storage_of(t)
            st.last = max(st.last, i)
            st.pad = max(st.pad, _reads_with_pad(nd))
            st.consumers.append(i)
    for t in graph.outputs:
        plan.storage_of(t).last = end
    for st in storages.values():
        st.last = max(st.last, st.first)
    return plan


def band_input_rows(rows: int, stride: int, kernel: int, padded_height: int) -> int:
    """Input rows (border included) that ``rows`` output rows of a layer read."""
    return min((rows - 1) * stride + kernel, padded_height)


def _band_rows(plan: Plan, step: int, config: NPUConfig) -> int:
    """Output rows per band so that each staging buffer takes at most 1/16 of the vector memory."""
    nd = plan.steps[step]
    src, dst = plan.layout(nd.inputs[0]), plan.layout(nd.outputs[0])
    kh = _kernel(nd)[0]
    budget = config.vrf_depth // 16
    rows = dst.height
    while rows > 1 and (band_input_rows(rows, nd.stride[0], kh, src.height + 2 * src.pad) * src.row_stride > budget
                        or rows * dst.row_stride > budget):
        rows -= 1
    return rows


def _kernel(nd: Node) -> tuple[int, int]:
    return tuple(nd.weight.shape[2:]) if isinstance(nd, Conv) else tuple(nd.kernel)


def _spillable(plan: Plan, st: Storage) -> bool:
    if st.lane_writes or st.dram:
        return False
    steps = [plan.steps[i] for i in st.producers + st.consumers]
    only_main_input = all(plan.views[s.inputs[0]][0] == st.name and
                          all(plan.views[t][0] != st.name for t in s.inputs[1:]) for s in
                          (plan.steps[i] for i in st.consumers))
    return all(isinstance(s, (Conv, Pool)) for s in steps) and len(st.producers) <= 1 and only_main_input


def place(plan: Plan, config: NPUConfig, *, reserved: int, input_in_dram: set[str] = frozenset()) -> None:
    """Choose vector-memory addresses (spilling storages to DRAM when needed) for every storage."""
    n = config.native_dim
    for name in input_in_dram:
        plan.storages[name].dram = True
    while True:
        buffers = [Buffer(st.name, st.size(n), st.first, st.last) for st in plan.storages.values() if not st.dram]
        plan.band_rows.clear()
        for i, nd in enumerate(plan.steps):
            touches = [plan.storage_of(t) for t in nd.inputs + nd.outputs]
            if not any(st.dram for st in touches):
                continue
            rows = _band_rows(plan, i, config)
            plan.band_rows[i] = rows
            src, dst = plan.layout(nd.inputs[0]), plan.layout(nd.outputs[0])
            in_rows = band_input_rows(rows, nd.stride[0], _kernel(nd)[0], src.height + 2 * src.pad)
            if plan.storage_of(nd.inputs[0]).dram:
                buffers += [Buffer(f"{i}.in{k}", in_rows * src.row_stride, i, i) for k in (0, 1)]
            if plan.storage_of(nd.outputs[0]).dram:
                buffers += [Buffer(f"{i}.out{k}", rows * dst.row_stride, i, i) for k in (0, 1)]
        try:
            addrs = plan_memory(buffers, config.vrf_depth, reserved=reserved)
            break
        except MemoryPlanError as exc:
            alive = [plan.storages[a] for a in exc.alive if a in plan.storages]
            candidates = [st for st in alive if _spillable(plan, st)]
            if not candidates:
                raise CompileError(f"{exc}; no buffer alive there can be spilled to DRAM (only tensors produced "
                                   f"and read by convolutions and pooling can)") from None
            max(candidates, key=lambda st: st.size(n)).dram = True
    for st in plan.storages.values():
        st.vaddr = addrs.get(st.name, -1)
    plan.band_buffers = {}
    for name, addr in addrs.items():
        if "." in name and name.split(".")[0].isdigit():
            step, which = name.split(".")
            plan.band_buffers.setdefault(int(step), {})[which] = addr
