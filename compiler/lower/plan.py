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

import networkx as nx

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


def _order_shared_vectors(graph: Graph, order: list[Node], views, shapes, n: int) -> list[Node]:
    """The step order, changed where needed so that vectors shared by the tensors of a concatenation stay right.

    Tensors of one concatenation share the vector holding the channels where
    one ends and the next begins.  A layer whose output starts at a vector
    boundary writes whole vectors, so it must run before the layers writing
    later channels of its last vector; a layer reading a tensor must run
    before other channels of its vectors are written (it would see them: as
    operands of its block format, or copied into its own output's spare
    lanes).  Layers are moved to meet this where the graph allows; where it
    does not, a CompileError names the layers.  A layer reading a tensor
    that starts inside a vector is a CompileError (it would read the lanes
    from the vector's first on).  Since nothing can read a tensor that
    starts inside a vector, no layer writing whole vectors can depend on one
    that writes later lanes of them.
    """
    producer = {t: nd for nd in order for t in nd.outputs if not isinstance(nd, (Concat, Flatten))}
    members: dict[str, list[tuple[int, int, str]]] = {}
    for t, (root, off) in views.items():
        if root in views and t != root and t in producer:
            members.setdefault(root, []).append((off, off + shapes[t][0], t))
    if not members:
        return order

    def foreign(t: str) -> list[str]:
        """Tensors written by other layers into the vectors of tensor ``t`` (not its channels)."""
        root, off = views[t]
        lo, hi = off, off + shapes[t][0]
        span = (lo // n * n, -(-hi // n) * n)
        return [u for a, b, u in members.get(root, []) if (b <= lo or a >= hi) and a < span[1] and b > span[0]]

    rules = []                        # (first, then, tensor, why): node ``first`` must run before node ``then``
    for t, (root, off) in views.items():
        if root not in members or shapes.get(t) is None:
            continue
        readers = [nd for nd in order if t in nd.inputs and not isinstance(nd, (Concat, Flatten))]
        if off % n and readers:
            raise CompileError(f"node {readers[0].name!r} ({readers[0].kind}) reads {t!r}, which starts at channel "
                               f"{off} of a concatenation, inside a vector of {n}; a layer can only read a tensor "
                               f"that starts at a vector boundary (concatenate tensors of multiples of {n} "
                               f"channels, or read the whole concatenation)")
        for u in foreign(t):
            if t in producer and off % n == 0:
                rules.append((producer[t], producer[u], t, "write"))
            rules += [(r, producer[u], t, "read") for r in readers if r is not producer[u]]
    dag = graph.dag.copy()
    for first, then, t, why in rules:
        if first is then or dag.has_edge(first.name, then.name):
            continue
        if not nx.has_path(dag, then.name, first.name):
            dag.add_edge(first.name, then.name)
        else:
            doing = "writes whole vectors of" if why == "write" else "reads"
            raise CompileError(f"node {first.name!r} ({first.kind}) {doing} {t!r}, which shares vectors of a "
                               f"concatenation with channels that node {then.name!r} ({then.kind}) writes, and "
                               f"{first.name!r} must run after {then.name!r}; concatenate tensors of multiples "
                               f"of {n} channels here")
    rank = {nd.name: i for i, nd in enumerate(order)}
    return [graph.node(name) for name in nx.lexicographical_topological_sort(dag, key=rank.__getitem__)]


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
        elif views[t][1]:
            raise CompileError(f"the model's input {t!r} is concatenated after other tensors (at channel "
                               f"{views[t][1]}); an input can only be the first tensor of a concatenation")
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
    order = _order_shared_vectors(graph, order, views, shapes, n)
    steps = [nd for nd in order if not isinstance(nd, (Concat, Flatten))]
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


#: Largest loop count of a chain (n0, n1, k0, k1, c, r are 12-bit fields of the instruction set).
MAX_COUNT = 4095


def check_counts(plan: Plan) -> None:
    """CompileError naming the layer when one of its chain loops would need more than MAX_COUNT iterations.

    Output rows are split over several chains by code generation; output
    columns, window taps and output vectors per pixel must each fit one
    chain's loop counts.
    """
    n = plan.native_dim
    for nd in plan.steps:
        out = nd.outputs[0]
        c, h, w = plan.shapes[out]
        vectors = -(-(plan.lane_offset(out) + c) // n)
        limits = []
        if isinstance(nd, Conv):
            limits.append((f"its output {out!r} is {w} pixels wide", -(-w // nd.column_phases)))
            limits.append((f"its kernel is {nd.kernel[0]}x{nd.kernel[1]}", max(nd.kernel)))
        else:
            limits.append((f"its output {out!r} is {w} pixels wide", w))
            limits.append((f"its output {out!r} has {c} channels ({vectors} vectors of {n})", vectors))
            if isinstance(nd, GlobalPool):
                _, ih, iw = plan.shapes[nd.inputs[0]]
                limits.append((f"it pools a {ih}x{iw} image in one window", max(ih, iw)))
            elif isinstance(nd, Pool):
                limits.append((f"its window is {nd.kernel[0]}x{nd.kernel[1]}", max(nd.kernel)))
        for what, count in limits:
            if count > MAX_COUNT:
                raise CompileError(f"node {nd.name!r} ({nd.kind}): {what}; a chain loops at most {MAX_COUNT} times "
                                   f"(the instruction set's 12-bit counts)")


def check_dram(plan: Plan, config: NPUConfig, const_vectors: int) -> None:
    """CompileError when the inputs, outputs and spilled tensors alone need more DRAM than the machine has.

    Checked before code generation allocates the DRAM image; the weights are
    added and the whole image checked again once it is built.
    """
    n, vec = config.native_dim, config.vector_bytes
    tensors = {plan.views[t][0] for t in plan.views}
    sizes = {name: plan.storages[name].size(n) * vec for name in tensors
             if plan.storages[name].dram or plan.storages[name].first < 0 or
             plan.storages[name].last >= len(plan.steps)}
    need = sum(sizes.values()) + const_vectors * vec
    if need > config.dram_bytes:
        largest = sorted(sizes, key=sizes.get, reverse=True)[:3]
        names = ", ".join(f"{t!r} ({sizes[t]:,} bytes)" for t in largest)
        raise CompileError(f"the model's inputs, outputs and spilled tensors need {need:,} bytes of DRAM, more than "
                           f"the {config.dram_bytes:,} that {config.name} has (the largest: {names})")


def band_input_rows(rows: int, stride: int, kernel: int, padded_height: int) -> int:
    """Input rows (border included) that ``rows`` output rows of a layer read; ``kernel`` is the rows one
    window spans (``Conv.extent`` for a dilated convolution)."""
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
    """Input rows and columns one window of ``nd`` spans (a dilated convolution's taps are spread over more)."""
    return nd.extent if isinstance(nd, Conv) else tuple(nd.kernel)


def _pinned(plan: Plan, st: Storage) -> str | None:
    """Why storage ``st`` must stay in the vector memory (None when it can move to DRAM)."""
    if st.dram:
        return "it is already in DRAM"
    if st.lane_writes:
        return "it is a concatenation buffer that several layers write lanes of"
    if len(st.producers) > 1:
        return "several layers write it"
    for i in st.producers + st.consumers:
        s = plan.steps[i]
        if not isinstance(s, (Conv, Pool)):
            verb = "written" if i in st.producers else "read"
            return f"it is {verb} by node {s.name!r} ({s.kind}), which cannot run in row bands"
    for i in st.consumers:
        s = plan.steps[i]
        if plan.views[s.inputs[0]][0] != st.name or any(plan.views[t][0] == st.name for t in s.inputs[1:]):
            return f"node {s.name!r} reads it as a second operand (a residual), which is not banded"
    return None


def spillable(plan: Plan, st: Storage) -> bool:
    """Whether storage ``st`` can live in DRAM (every layer touching it runs in row bands)."""
    return _pinned(plan, st) is None


def _band_buffer(name: str) -> tuple[int, str] | None:
    """(step, which) of a row-band staging buffer's name ``'<step>.in0'``, else None."""
    step, _, which = name.partition(".")
    return (int(step), which) if which and step.isdigit() else None


def _no_room(plan: Plan, config: NPUConfig, exc: MemoryPlanError, sizes: dict[str, int], reserved: int) -> str:
    """The CompileError message when the buffers alive at one step cannot all fit and none can be spilled."""
    n = config.native_dim
    if 0 <= exc.step < len(plan.steps):
        nd = plan.steps[exc.step]
        where = f"at node {nd.name!r} ({nd.kind}, step {exc.step})"
    else:
        where = "before the first layer"
    parts, reasons = [], []
    for name in exc.alive:
        band = _band_buffer(name)
        if band is not None:
            step, which = band
            rows = plan.band_rows.get(step, 1)
            side = "output" if which.startswith("out") else "input"
            parts.append(f"a row-band staging buffer of node {plan.steps[step].name!r} ({sizes[name]:,} vectors for "
                         f"the {side} rows of {rows} output row(s))")
            continue
        st = plan.storages[name]
        parts.append(f"tensor {name!r} ({st.channels}x{st.height}x{st.width}, {st.size(n):,} vectors)")
        reasons.append(f"{name!r}: {_pinned(plan, st)}")
    need = sum(sizes[a] for a in exc.alive) + reserved
    text = (f"{where}: {'; '.join(parts)} and {reserved:,} constant vectors need {need:,} vectors together, "
            + (f"more than the {config.vrf_depth:,} the vector memory of {config.name} holds"
               if need > config.vrf_depth else f"and the {config.vrf_depth:,} of the vector memory of "
               f"{config.name} cannot hold them side by side there (the tensors placed before fragment it)"))
    if reasons:
        text += f"; none can move to DRAM ({'; '.join(reasons)})"
    return text + "; a machine with a larger vector memory is needed"


def place(plan: Plan, config: NPUConfig, *, reserved: int, input_in_dram: set[str] = frozenset()) -> None:
    """Choose vector-memory addresses (spilling storages to DRAM when needed) for every storage.

    ``input_in_dram`` names input storages to keep in DRAM; those that some
    layer cannot read in row bands stay in the vector memory.
    """
    n = config.native_dim
    for name in input_in_dram:
        if spillable(plan, plan.storages[name]):
            plan.storages[name].dram = True
    while True:
        buffers = [Buffer(st.name, st.size(n), st.first, st.last) for st in plan.storages.values() if not st.dram]
        plan.band_rows.clear()
        for i, nd in enumerate(plan.steps):
            touches = [plan.storage_of(t) for t in nd.inputs + nd.outputs]
            if not any(st.dram for st in touches):
                continue
            if not isinstance(nd, (Conv, Pool)):
                raise CompileError(f"node {nd.name!r} ({nd.kind}) touches a tensor in DRAM but cannot run in row "
                                   f"bands (a compiler bug: only convolutions and pooling should)")
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
            candidates = [st for st in alive if spillable(plan, st)]
            if not candidates:
                try:                        # nothing can move: another placement may still fit
                    addrs = plan_memory(buffers, config.vrf_depth, reserved=reserved, alternate=True)
                    break
                except MemoryPlanError:
                    raise CompileError(_no_room(plan, config, exc, {b.name: b.size for b in buffers}, reserved)) \
                        from None
            max(candidates, key=lambda st: st.size(n)).dram = True
    for st in plan.storages.values():
        st.vaddr = addrs.get(st.name, -1)
    plan.band_buffers = {}
    for name, addr in addrs.items():
        band = _band_buffer(name)
        if band is not None:
            plan.band_buffers.setdefault(band[0], {})[band[1]] = addr
