"""A decoded program in the form the simulator executes.

Binary words are decoded and validated once (``npu.isa``); chains become
:class:`ChainOp` records holding everything one batched execution needs,
DMA instructions become :class:`DmaOp`.  Both functional and timing models
walk this list.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import NPUConfig
from ..isa.errors import IsaError
from ..isa.table import BY_MNEMONIC, MFU_SLOTS, REDUCE_MODES, Queue
from ..isa.validate import instruction_groups, validate_program
from .errors import SimulationError


@dataclass(frozen=True)
class MfuOp:
    """One MFU operation of a chain: a vector operand, a scalar register, or none."""

    mnemonic: str
    index: int                     # instruction index
    base: int = 0
    s_n0: int = 0
    s_n1: int = 0
    s_r: int = 0
    sreg: int = -1


@dataclass(frozen=True)
class ChainOp:
    """One chain: loop counts, input read, optional matrix, MFU ops, write."""

    index: int                     # index of the `chain` instruction
    end_index: int                 # index of `end_chain`
    n0: int
    n1: int
    k0: int
    k1: int
    c: int
    r: int
    reduce: str
    rd: dict                       # v_rd fields
    mbase: int | None              # mv_mul tile base, None without mv_mul
    mfu: tuple[MfuOp, ...]
    wr: dict                       # v_wr fields
    wait: frozenset = frozenset()
    signal: frozenset = frozenset()
    queue: Queue = Queue.COMPUTE
    fmt: int = 0                   # mv_mul's MVU format mode (NPUConfig.mvu_modes)
    #: What the functional model derives from the chain alone (checks, address arrays), kept for later runs.
    derived: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def iterations(self) -> int:
        """Output iterations n0 * n1."""
        return self.n0 * self.n1

    @property
    def k(self) -> int:
        """Input vectors per iteration and row: k0 * k1 * c."""
        return self.k0 * self.k1 * self.c


@dataclass(frozen=True)
class SingleOp:
    """An instruction that runs on its own (not part of a chain)."""

    mnemonic: str
    index: int
    fields: dict
    wait: frozenset = frozenset()
    signal: frozenset = frozenset()

    @property
    def queue(self) -> Queue:
        """Stream that executes it (``halt`` belongs to all of them)."""
        return BY_MNEMONIC[self.mnemonic].queue


class DmaOp(SingleOp):
    """v_load / v_store / m_load."""


class ScalarOp(SingleOp):
    """s_wr, nop or halt."""


@dataclass
class SimProgram:
    """The executable form of a program, plus its optional region table."""

    ops: list
    instruction_count: int
    regions: list[tuple[str, int, int]] = field(default_factory=list)
    #: (config, npu.sim.memory.Footprint) once computed: the run's working set depends on nothing else.
    footprint: tuple | None = field(default=None, compare=False, repr=False)
    #: (config, tile bytes, npu.sim.timing.Schedule, its npu.sim.stats.SimStats) once a full or functional run
    #: has placed every op.
    timeline: tuple | None = field(default=None, compare=False, repr=False)


def build_program(instrs, config: NPUConfig, regions=None) -> SimProgram:
    """Validate decoded instructions for ``config`` and group them into executable ops."""
    try:
        validate_program(instrs, config)
    except IsaError as exc:
        raise SimulationError(str(exc), exc.index) from None
    ops: list = []
    for i, group in instruction_groups(instrs):
        ins = group[0]
        name = ins.spec.mnemonic
        if name == "chain":
            ops.append(_chain(i, group))
        elif name in ("v_load", "v_store", "m_load"):
            ops.append(DmaOp(name, i, dict(ins.fields), frozenset(ins.wait), frozenset(ins.signal)))
        elif name in ("s_wr", "nop"):
            ops.append(ScalarOp(name, i, dict(ins.fields), frozenset(ins.wait), frozenset(ins.signal)))
        elif name == "halt":
            ops.append(ScalarOp(name, i, {}, frozenset(ins.wait), frozenset(ins.signal)))
        else:   # validate_program rejects everything else outside a chain
            raise SimulationError("instruction outside a chain", i, mnemonic=name)
    return SimProgram(ops, len(instrs), list(regions or []))


def _chain(index: int, group) -> ChainOp:
    """The ChainOp of a validated chain whose `chain` instruction is at ``index``."""
    head, rd_ins, end = group[0], group[1], group[-1]
    f = head.fields
    mbase = None
    fmt = 0
    mfu = []
    wr: dict = {}
    for offset, p in enumerate(group[2:-1], start=2):
        name = p.spec.mnemonic
        if name == "mv_mul":
            mbase = p.fields["mbase"]
            fmt = p.fields.get("fmt", 0)
        elif name in MFU_SLOTS:
            pf = p.fields
            mfu.append(MfuOp(name, index + offset,
                             base=pf.get("base", 0), s_n0=pf.get("s_n0", 0), s_n1=pf.get("s_n1", 0),
                             s_r=pf.get("s_r", 0), sreg=pf.get("sreg", -1)))
        elif name == "v_wr":
            wr = dict(p.fields)
    return ChainOp(index=index, end_index=index + len(group) - 1, n0=f["n0"], n1=f["n1"], k0=f["k0"],
                   k1=f["k1"], c=f["c"], r=f["r"], reduce=REDUCE_MODES[f["reduce"]], rd=dict(rd_ins.fields),
                   mbase=mbase, mfu=tuple(mfu), wr=wr, wait=frozenset(head.wait), signal=frozenset(end.signal),
                   fmt=fmt)
