"""Cycle-approximate, bit-exact simulator of the NPU.

>>> result = simulate(program_words, config, dram=image)
>>> result.stats.total_cycles, result.dram(addr, nbytes)

Modes: ``"full"`` (timing + arithmetic, ops applied in the order the
streams issue them), ``"timing"`` (no arithmetic, for design-space sweeps)
and ``"functional"`` (arithmetic in a token-respecting order that does not
depend on timing; no statistics).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import NPUConfig
from .errors import CycleBudgetExceeded, SimulationError
from .dram import DramImage
from .machine import Machine
from .memory import DEFAULT_MEMORY_BUDGET, Footprint, footprint
from .placement import threads_apart
from .program import SimProgram, build_program
from .stats import SimStats, collect
from .timing import Schedule, replay, schedule
from .trace import write_trace

MODES = ("full", "timing", "functional")
#: Default cycle budget: 2 s of hardware time at 500 MHz (a ResNet-50 inference needs about 1e5 on bw-s10).
DEFAULT_CYCLE_BUDGET = 1_000_000_000


@dataclass
class SimResult:
    """What a run produced: the final machine state (if any), timing and statistics."""

    config: NPUConfig
    mode: str
    machine: Machine | None
    schedule: Schedule | None
    stats: SimStats | None
    program: SimProgram

    def dram(self, addr: int, nbytes: int) -> bytes:
        """Bytes of DRAM after the run."""
        if self.machine is None:
            raise SimulationError("a timing-only run keeps no memory contents")
        return self.machine.dram.bytes(addr, nbytes)

    def vectors(self, addr: int, count: int) -> np.ndarray:
        """Vector-memory contents after the run, (count, N) in the MFU format."""
        if self.machine is None:
            raise SimulationError("a timing-only run keeps no memory contents")
        depth = self.config.vrf_depth
        if addr < 0 or count < 0 or addr + count > depth:
            raise SimulationError(f"vectors {addr}..{addr + count - 1} lie outside the vector memory 0..{depth - 1}")
        return self.machine.vmem[addr: addr + count].copy()

    def write_trace(self, path: str | Path) -> None:
        """Write the per-instruction timeline as Chrome trace / Perfetto JSON."""
        if self.schedule is None:
            raise SimulationError("a functional-only run has no timeline; use mode='full' or 'timing'")
        write_trace(path, self.schedule, self.config, self.program.regions)


#: Decoded, validated programs by (instruction words, regions, config), least recently used first.
_DECODED: OrderedDict = OrderedDict()
DECODED_PROGRAMS = 8


def _decode(program, config: NPUConfig) -> SimProgram:
    """The executable form of ``program``; binary programs run again (a serving session) are decoded once."""
    from ..isa.encoding import decode_program
    from ..isa.errors import IsaError

    if isinstance(program, SimProgram):
        return program
    regions = getattr(program, "regions", None)
    instrs = getattr(program, "instructions", None)
    if instrs is None and hasattr(program, "words"):      # a ProgramFile (.npuz)
        program = program.words
    if instrs is not None:
        if not instrs:
            raise _empty()
        return build_program(instrs, config, regions)
    if isinstance(program, (str, Path)):
        program = Path(program).read_bytes()
    words = bytes(program)
    key = (words, tuple(map(tuple, regions or ())), config)
    prog = _DECODED.get(key)
    if prog is not None:
        _DECODED.move_to_end(key)
        return prog
    try:
        instrs = decode_program(words)
    except IsaError as exc:
        raise SimulationError(str(exc), exc.index) from None
    if not instrs:
        raise _empty()
    prog = _DECODED[key] = build_program(instrs, config, regions)
    while len(_DECODED) > DECODED_PROGRAMS:
        _DECODED.popitem(last=False)
    return prog


def clear_program_cache() -> None:
    """Forget every decoded program (the next run of each decodes it again)."""
    _DECODED.clear()


def _image_bytes(dram) -> int:
    if dram is None:
        return 0
    if isinstance(dram, (np.ndarray, DramImage)):
        return int(dram.nbytes)
    return len(memoryview(dram).cast("B"))


def _empty() -> SimulationError:
    return SimulationError("empty program: no instructions (a program ends with halt)")


def _placed(prog: SimProgram, config: NPUConfig, tile_bytes: int, cycle_budget, on_issue) -> Schedule:
    """:func:`schedule` for a full or functional run, placed once per decoded program and replayed after."""
    known = prog.timeline
    if known is not None and known[0] == config and known[1] == tile_bytes:
        return replay(known[2], cycle_budget=cycle_budget, on_issue=on_issue)
    sched = schedule(prog, config, tile_bytes, cycle_budget=cycle_budget, on_issue=on_issue)
    prog.timeline = (config, tile_bytes, sched, collect(sched, config, prog.instruction_count, prog.regions))
    return sched


def _stats(prog: SimProgram, config: NPUConfig, sched: Schedule) -> SimStats:
    """The statistics of a run's schedule: for a replayed placement a copy of those collected when it was placed."""
    known = prog.timeline
    if known is not None and known[2] is sched:
        return known[3].copy()
    return collect(sched, config, prog.instruction_count, prog.regions)


def simulate(program, config: NPUConfig, *, dram: DramImage | bytes | np.ndarray | None = None, mode: str = "full",
             cycle_budget: int | None = DEFAULT_CYCLE_BUDGET, mrf_from: "SimResult | None" = None,
             observe=None, memory_budget: int | None = DEFAULT_MEMORY_BUDGET) -> SimResult:
    """Run ``program`` (binary words, an assembled program, a ProgramFile, or a path) on ``config``.

    ``dram`` is the initial DRAM image (inputs, weights): a
    :class:`DramImage` (the program's immutable image and the inputs over
    it; a run over the same base as an earlier one skips copying and
    comparing its unchanged weights, see ``npu.sim.dram``), ``bytes``, or
    any byte buffer or array (copied).  ``mrf_from`` starts
    the matrix register file with the contents it had at the end of an
    earlier run (a warm program whose weights stay resident).  ``observe(op,
    machine)`` is called after each op has changed the machine's state (full
    and functional modes), so a debugger can read tensors as they complete.
    Raises
    SimulationError for illegal programs and CycleBudgetExceeded when the run
    would pass ``cycle_budget`` cycles.  ``memory_budget`` bounds the host
    memory of a full or functional run (``npu.sim.memory``): a program whose
    working set, computed from its instructions before anything is
    allocated, exceeds it is refused with a SimulationError naming the
    instruction (None: no limit).
    """
    if mode not in MODES:
        raise SimulationError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    prog = _decode(program, config)
    machine = None
    if mode != "timing":
        need = footprint(prog, config)
        need.check(memory_budget, _image_bytes(dram), cycle_budget)
        try:
            machine = Machine(config, dram, need.dram_extent)
        except MemoryError:
            raise SimulationError(f"the host ran out of memory allocating the machine's memories (DRAM up to byte "
                                  f"{max(need.dram_extent, _image_bytes(dram)):,}, {config.vrf_depth:,} vectors)"
                                  ) from None
    if machine is not None and mrf_from is not None:
        if mrf_from.machine is None or mrf_from.config != config:
            raise SimulationError("mrf_from must be a full or functional run on the same machine")
        machine.adopt_mrf(mrf_from.machine)
    from ..numerics.pack import tile_nbytes

    tile_bytes = tile_nbytes(config.weight_format, config.native_dim)
    if mode == "functional":
        from .timing import dataflow_order

        # the budget is checked on the timing model, so every mode stops at the same point
        _placed(prog, config, tile_bytes, cycle_budget, None)
        with threads_apart():
            for op in dataflow_order(prog):
                machine.execute(op)
                if observe is not None:
                    observe(op, machine)
        return SimResult(config, mode, machine, None, None, prog)
    on_issue = machine.execute if machine is not None else None
    if on_issue is not None and observe is not None:
        def on_issue(op):
            machine.execute(op)
            observe(op, machine)
    if machine is None:                                # timing-only: placing the ops is the run
        sched = schedule(prog, config, tile_bytes, cycle_budget=cycle_budget)
    else:
        with threads_apart():
            sched = _placed(prog, config, tile_bytes, cycle_budget, on_issue)
    stats = _stats(prog, config, sched)
    return SimResult(config, mode, machine, sched, stats, prog)


__all__ = ["simulate", "clear_program_cache", "SimResult", "SimulationError", "CycleBudgetExceeded", "MODES",
           "DEFAULT_CYCLE_BUDGET", "DEFAULT_MEMORY_BUDGET", "Footprint", "footprint"]
