"""The cycle-approximate timing model (docs/architecture.md, "Timing model").

Each op gets a cost from the configuration alone (no data dependence), and a
scheduler runs the three streams decoupled: an op starts when its stream is
free and the tokens it waits on have arrived; DMA transfers also share the
one DRAM channel.  The schedule fixes the order in which the functional
model applies ops, so results never depend on the timing mode.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

from ..config import NPUConfig
from ..isa.table import Queue
from ..numerics.pack import tile_nbytes
from .errors import CycleBudgetExceeded, SimulationError
from .program import ChainOp, DmaOp, SimProgram

#: Fixed pipeline latencies, in cycles (documented in docs/architecture.md).
DECODE_LATENCY = 2          # decode + issue of a chain or transfer
VRF_READ_LATENCY = 2        # vector memory read to unit input
MFU_LATENCY = 3             # one MFU: multiply, add/sub/max/min, activation stages
WRITE_LATENCY = 1           # result to vector memory


def mvu_latency(config: NPUConfig) -> int:
    """Cycles from the first input vector to the first MVU output: one tile pass,
    the block-conversion stage, the adder tree and the binary32 accumulator."""
    return config.cycles_per_tile + 1 + math.ceil(math.log2(config.native_dim)) + 2


@functools.lru_cache(maxsize=4096)
def bank_cycles(base: int, loops: tuple[tuple[int, int], ...], banks: int) -> int:
    """Cycles to move the vectors at ``base + sum(i_d * stride_d)`` (``loops``: (count, stride) pairs, every
    i_d < count) through a memory of ``banks`` banks (bank = address mod banks), one vector per bank per
    cycle: the most vectors that fall in one bank."""
    total = math.prod(count for count, _ in loops)
    if banks == 1 or total == 0:
        return total
    hist = [0] * banks
    hist[base % banks] = 1
    for count, stride in loops:
        step = [0] * banks                      # residues of i * stride, i < count
        full, rest = divmod(count, banks)       # i * stride mod banks repeats every `banks` values of i
        for i in range(min(count, banks)):
            step[(i * stride) % banks] += full + (1 if i < rest else 0)
        hist = [sum(hist[a] * step[(b - a) % banks] for a in range(banks)) for b in range(banks)]
    return max(hist)


def _vector_cycles(op: ChainOp, banks: int) -> tuple[int, int]:
    """(write-path cycles, input-read cycles without mv_mul) of a chain on a vector memory of ``banks`` banks:
    the writes and each vector operand's reads (``vv_*``) go one per bank per cycle, and so do a chain's input
    reads when no ``mv_mul`` takes them (the tile engines read their own vectors).  A vector read again
    straight away is read once and held, and so is an operand whose address no output loop moves (a bias:
    one register per row).  The input reads also take at least the K reads of each row one after another
    on each of the ``banks`` pipelines (rows spread over them): a reduction over fewer rows than pipelines
    gains nothing from the other banks."""
    rows = ((op.n0, None), (op.n1, None), (op.r, None))

    def stream(base, loops):
        # a vector read again straight away (innermost loops that do not move the address) is read once and held
        loops = list(loops)
        while loops and (loops[-1][1] == 0 or loops[-1][0] == 1):
            loops.pop()
        return bank_cycles(base, tuple(loops), banks) if loops else 1

    def loops(fields, keys):
        return tuple((count, fields.get(key, 0)) for (count, _), key in zip(rows, keys))

    wr = op.wr
    write = bank_cycles(wr.get("base", 0), loops(wr, ("s_n0", "s_n1", "s_r")), banks)
    for m in op.mfu:
        if m.mnemonic.startswith("vv_"):
            # an operand the same at every iteration (a bias, a scale) is read once per row and held
            held = m.s_n0 == 0 and m.s_n1 == 0
            operand = ((op.r, m.s_r),) if held else ((op.n0, m.s_n0), (op.n1, m.s_n1), (op.r, m.s_r))
            write = max(write, stream(m.base, operand))
    reads = 0
    if op.mbase is None:
        rd = op.rd
        reads = stream(rd.get("base", 0), loops(rd, ("s_n0", "s_n1", "s_r")) + (
            (op.k0, rd.get("s_k0", 0)), (op.k1, rd.get("s_k1", 0)), (op.c, 1)))
        # a row's reduction accumulates in order, one input vector a cycle, on one of the W pipelines
        rows = op.n0 * op.n1 * op.r
        reads = max(reads, -(-rows // banks) * op.k0 * op.k1 * op.c)
    return write, reads


@dataclass(frozen=True)
class OpCost:
    """What one op costs: cycles on its stream and busy cycles per unit.

    ``writes`` and ``reads`` are the cycles a chain's write path (writes and
    vector operands) and its input port (without ``mv_mul``) are busy: the
    vectors themselves on a single-ported machine, the most that fall in one
    bank with ``write_ports`` banks.  With ``mvu_busy`` they are the terms
    whose maximum sets a chain's steady-state cycles.
    """

    cycles: int
    mvu_busy: int = 0
    mfu_busy: int = 0
    dma_busy: int = 0
    dram_bytes: int = 0
    macs: int = 0
    writes: int = 0
    reads: int = 0


@functools.lru_cache(maxsize=256)
def _mode_costs(config: NPUConfig, mode: int) -> tuple[int, int]:
    """(packed tile bytes, MVU passes) of MVU format mode ``mode`` on ``config``."""
    return tile_nbytes(config.mode_formats(mode)[0], config.native_dim), config.mvu_passes(mode)


def dma_bytes(op: DmaOp, config: NPUConfig, tile_bytes: int) -> int:
    """Bytes a transfer moves (``tile_bytes``: a packed tile of mode 0; m_load's ``fmt`` selects another mode's)."""
    f = op.fields
    if op.mnemonic == "m_load":
        fmt = f.get("fmt", 0)
        return f["count"] * (tile_bytes if fmt == 0 else _mode_costs(config, fmt)[0])
    return f["rows"] * f["row_len"] * config.vector_bytes


def op_cost(op, config: NPUConfig, tile_bytes: int) -> OpCost:
    """Cost of one op on ``config``."""
    if isinstance(op, DmaOp):
        nbytes = dma_bytes(op, config, tile_bytes)
        xfer = math.ceil(nbytes / config.dram_bytes_per_cycle)
        return OpCost(cycles=DECODE_LATENCY + config.dram_latency_cycles + xfer, dma_busy=xfer,
                      dram_bytes=nbytes)
    if isinstance(op, ChainOp):
        vectors = op.iterations * op.r
        mfus_used = _mfus_used(op, config)
        fill = DECODE_LATENCY + VRF_READ_LATENCY + MFU_LATENCY * mfus_used + WRITE_LATENCY
        if config.write_ports == 1:
            writes, reads = vectors, (0 if op.mbase is not None else vectors * op.k)
        else:
            writes, reads = _vector_cycles(op, config.write_ports)
        if op.mbase is not None:
            tile_ops = op.iterations * op.r * op.k
            # a format whose significand is wider than the multipliers takes several passes over each tile
            mvu = math.ceil(tile_ops / config.tiles) * config.cycles_per_tile * _mode_costs(config, op.fmt)[1]
            steady = max(mvu, writes)
            fill += mvu_latency(config)
            n = config.native_dim
            return OpCost(cycles=fill + steady, mvu_busy=mvu, mfu_busy=writes if op.mfu else 0,
                          macs=tile_ops * n * n, writes=writes)
        return OpCost(cycles=fill + max(reads, writes), mfu_busy=writes if (op.mfu or op.reduce != "none") else 0,
                      writes=writes, reads=reads)
    return OpCost(cycles=1)


def _mfus_used(op: ChainOp, config: NPUConfig) -> int:
    from ..isa.validate import mfu_assignment

    if not op.mfu:
        return 0
    placement = mfu_assignment([m.mnemonic for m in op.mfu], config.mfus)
    return 1 + max(unit for unit, _slot in placement)


@dataclass
class Scheduled:
    """One op placed in time, with the cycles it stalled and why."""

    op: object
    start: int
    end: int
    cost: OpCost
    stalls: dict = field(default_factory=dict)     # cause -> cycles ("wait l2c", "dram")

    @property
    def stall(self) -> int:
        """Total stall cycles of this op."""
        return sum(self.stalls.values())

    @property
    def stall_cause(self) -> str:
        """The stall causes, '+'-joined ('' when the op did not stall)."""
        return "+".join(sorted(self.stalls))


@dataclass
class Schedule:
    """The whole program placed in time, in issue order."""

    entries: list[Scheduled] = field(default_factory=list)
    total_cycles: int = 0
    #: The ops :func:`replay` issues (every entry's but ``halt``'s), once it has listed them.
    issued: list | None = field(default=None, repr=False, compare=False)


def _queue_of(op) -> Queue:
    return op.queue


def _tokens(op, kind: str) -> list[str]:
    return sorted(getattr(op, kind))


def _split_streams(program: SimProgram):
    streams = {Queue.LOAD: [], Queue.COMPUTE: [], Queue.STORE: []}
    halt = None
    for op in program.ops:
        q = _queue_of(op)
        if q is Queue.ALL:
            halt = op
            break
        streams[q].append(op)
    return streams, halt


def _deadlock(streams, heads, tokens) -> SimulationError:
    blocked, first = [], None
    for q, ops in streams.items():
        if heads[q] < len(ops):
            op = ops[heads[q]]
            first = op.index if first is None else min(first, op.index)
            missing = [t for t in _tokens(op, "wait") if not tokens[t]]
            blocked.append(f"instruction {op.index} ({q.value} stream) waits for {', '.join(missing)}")
    return SimulationError("deadlock: no stream can proceed; " + "; ".join(blocked) +
                           ", and no instruction left can signal it", first)


def dataflow_order(program: SimProgram) -> list:
    """The ops in an order that honours every token, independent of timing.

    Among the streams whose next op has its tokens, the op earliest in the
    program goes first.  For a program whose streams are correctly
    synchronised, applying ops in this order gives the same memory as the
    timed issue order.
    """
    streams, halt = _split_streams(program)
    heads = {q: 0 for q in streams}
    tokens: dict[str, int] = {name: 0 for name in ("l2c", "c2l", "c2s", "s2c")}
    order = []
    pending = sum(len(v) for v in streams.values())
    while pending:
        ready = [ops[heads[q]] for q, ops in streams.items()
                 if heads[q] < len(ops) and all(tokens[t] for t in _tokens(ops[heads[q]], "wait"))]
        if not ready:
            raise _deadlock(streams, heads, {t: [0] * n for t, n in tokens.items()})
        op = min(ready, key=lambda o: o.index)
        for t in _tokens(op, "wait"):
            tokens[t] -= 1
        for t in _tokens(op, "signal"):
            tokens[t] += 1
        heads[_queue_of(op)] += 1
        order.append(op)
        pending -= 1
    if halt is not None:
        order.append(halt)
    return order


def schedule(program: SimProgram, config: NPUConfig, tile_bytes: int, *, cycle_budget: int | None = None,
             on_issue=None) -> Schedule:
    """Place every op in time; ``on_issue(op)`` is called in issue order (the functional model).

    Raises SimulationError on a token deadlock and CycleBudgetExceeded when an
    op (or the final halt) would end past ``cycle_budget``, before that op runs.
    """
    streams, halt = _split_streams(program)
    heads = {q: 0 for q in streams}
    free = {q: 0 for q in streams}
    tokens: dict[str, list[int]] = {name: [] for name in ("l2c", "c2l", "c2s", "s2c")}
    dram_free = 0
    out = Schedule()
    pending = sum(len(v) for v in streams.values())
    while pending:
        best = None
        for q, ops in streams.items():
            if heads[q] >= len(ops):
                continue
            op = ops[heads[q]]
            waits = _tokens(op, "wait")
            if any(not tokens[t] for t in waits):
                continue
            token_ready = max((tokens[t][0] for t in waits), default=0)
            start = max(free[q], token_ready)
            if best is None or (start, op.index) < (best[0], best[2].index):
                best = (start, q, op)
        if best is None:
            raise _deadlock(streams, heads, tokens)
        start, q, op = best
        stalls: dict[str, int] = {}
        if start > free[q]:
            binding = max(_tokens(op, "wait"), key=lambda t: tokens[t][0])
            stalls[f"wait {binding}"] = start - free[q]
        for t in _tokens(op, "wait"):
            tokens[t].pop(0)
        cost = op_cost(op, config, tile_bytes)
        if isinstance(op, DmaOp):
            ready = start + DECODE_LATENCY + config.dram_latency_cycles
            xfer_start = max(ready, dram_free)
            if xfer_start > ready:
                stalls["dram"] = xfer_start - ready
            end = xfer_start + cost.dma_busy
            dram_free = end
        else:
            end = start + cost.cycles
        if cycle_budget is not None and end > cycle_budget:
            raise CycleBudgetExceeded(f"would end at cycle {end}, past the cycle budget of {cycle_budget}",
                                      op.index, mnemonic=getattr(op, "mnemonic", "chain"))
        if on_issue is not None:
            on_issue(op)
        out.entries.append(Scheduled(op, start, end, cost, stalls))
        free[q] = end
        for t in _tokens(op, "signal"):
            tokens[t].append(end)
        heads[q] += 1
        pending -= 1
    total = max(free.values())
    if halt is not None:
        end = total + 1
        if cycle_budget is not None and end > cycle_budget:
            raise CycleBudgetExceeded(f"would end at cycle {end}, past the cycle budget of {cycle_budget}",
                                      halt.index, mnemonic="halt")
        out.entries.append(Scheduled(halt, total, end, OpCost(cycles=1)))
        total = end
    out.total_cycles = total
    return out


def replay(known: Schedule, *, cycle_budget: int | None = None, on_issue=None) -> Schedule:
    """What :func:`schedule` does for the program that ``known`` places, from ``known``: ``on_issue`` called in
    the same issue order, and the same CycleBudgetExceeded before the same op.

    Timing depends on the program and the machine alone, so a program run
    again (a serving session) places its ops once.
    """
    if cycle_budget is None or known.total_cycles <= cycle_budget:     # no op ends past the budget
        if on_issue is not None:
            issued = known.issued
            if issued is None:
                issued = known.issued = [e.op for e in known.entries if _queue_of(e.op) is not Queue.ALL]
            for op in issued:
                on_issue(op)
        return known
    for e in known.entries:
        halt = _queue_of(e.op) is Queue.ALL
        if cycle_budget is not None and e.end > cycle_budget:
            raise CycleBudgetExceeded(f"would end at cycle {e.end}, past the cycle budget of {cycle_budget}",
                                      e.op.index, mnemonic="halt" if halt else getattr(e.op, "mnemonic", "chain"))
        if on_issue is not None and not halt:
            on_issue(e.op)
    return known


__all__ = ["OpCost", "Schedule", "Scheduled", "dataflow_order", "op_cost", "schedule", "mvu_latency", "replay"]
