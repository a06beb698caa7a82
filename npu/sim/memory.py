"""How much host memory a simulation needs, known from the program before it runs.

Every size the functional model allocates follows from the instruction
fields (they are immediates) and the configuration, so the working set is
computed up front (:func:`footprint`) and a run that would exceed the
memory budget is refused with a SimulationError naming the instruction
that pushes it over, before anything is allocated.  The estimate is an
upper bound of what :class:`npu.sim.machine.Machine` holds at once:

* the DRAM: the initial image, grown to the highest byte any transfer
  reaches (``m_load``, ``v_load``, ``v_store``);
* the vector memory: ``vrf_depth`` vectors in the MFU format;
* with an MXFP8 E4M3 mode, the input conversions the fused kernel keeps
  for later chains (``Machine.KEPT_CONVERSION_BYTES``);
* the decoded weight tiles the matrix register file refers to (binary32
  elements): at most twice the decoded size of the whole MRF, each tile
  counted at the size of the widest of the machine's MVU format modes
  (``NPUConfig.mvu_modes``);
* what the decoded program keeps for later runs: each chain's address
  arrays (at most ``Machine.BATCH_CACHE_BYTES`` per chain) and its
  integer GEMM's packed weights;
* the largest working arrays of a single instruction: a transfer's rows, a
  tile decode (``DECODE_CHUNK_ELEMENTS`` at a time), a chain batch
  (``Machine.CHUNK_ELEMENTS`` elements of gathered inputs, block sums and
  results) and the chain's hazard analysis.

Not counted: the process-wide caches, each bounded on its own (decoded
weight tiles ``TILE_CACHE_BYTES``, decoded programs ``DECODED_PROGRAMS``),
the caller's own copy of the DRAM image, and the interpreter.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import NPUConfig
from ..numerics import int_gemm
from ..numerics.dot import reduction_block
from ..numerics.formats import get_format
from ..numerics.pack import tile_nbytes
from .errors import SimulationError
from .program import ChainOp, DmaOp, SimProgram

#: Default host-memory budget of one simulation (``simulate(memory_budget=...)``): 2 GiB.
DEFAULT_MEMORY_BUDGET = 2 << 30
#: Bytes per weight element the decode of one chunk of tiles may use (odd widths unpack through bit planes).
_DECODE_BYTES_PER_ELEMENT = 64
#: Small arrays of a run not modelled one by one (registers, queues, statistics, format tables): 64 KiB.
RUN_OVERHEAD = 64 << 10


@dataclass(frozen=True)
class OpMemory:
    """What one op adds to the working set."""

    index: int
    mnemonic: str
    dram_end: int        #: highest DRAM byte (exclusive) it reaches (0: none)
    weights: int         #: decoded tile bytes it adds to the MRF's sets
    kept: int            #: bytes of arrays the program keeps for later runs
    transient: int       #: bytes of working arrays while it runs
    earliest_end: int    #: a lower bound of the cycle it ends at (the cycles of its stream up to it)


@dataclass(frozen=True)
class Footprint:
    """The working set of a program on a machine (full and functional modes), in bytes."""

    machine: int                 #: vector memory, MRF bookkeeping, zero tile, kept conversions, RUN_OVERHEAD
    dram_extent: int             #: highest DRAM byte (exclusive) any transfer reaches
    weights_limit: int           #: most decoded tile bytes the MRF's sets hold (twice the decoded MRF)
    held: int                    #: decoded weights and kept arrays at the end, at most
    transient: int               #: the largest single op's working arrays
    ops: tuple[OpMemory, ...]

    def total(self, image_bytes: int = 0) -> int:
        """An upper bound of the bytes a run with a DRAM image of ``image_bytes`` bytes needs."""
        return self.machine + max(self.dram_extent, image_bytes) + self.held + self.transient

    def check(self, budget: int | None, image_bytes: int = 0, cycle_budget: int | None = None) -> None:
        """Raise SimulationError naming the instruction that would pass ``budget`` bytes.

        Ops that cannot end within ``cycle_budget`` never run (the cycle
        budget stops the run first), so they do not count.
        """
        if budget is None or self.total(image_bytes) <= budget:
            return
        base = self.machine + image_bytes
        if base > budget:
            raise SimulationError(
                f"the DRAM image ({_size(image_bytes)}) and the machine's memories ({_size(self.machine)}) need "
                f"{_size(base)} of host memory, more than the simulator's memory budget of {_size(budget)} "
                f"(simulate(memory_budget=...))")
        dram, weights, kept = image_bytes, 0, 0
        for op in self.ops:
            if cycle_budget is not None and op.earliest_end > cycle_budget:
                continue
            dram = max(dram, op.dram_end)
            need = self.machine + dram + weights + kept + op.transient
            if need > budget:
                parts = [f"DRAM up to byte {dram:,}", f"the machine's memories {_size(self.machine)}"]
                if weights + kept:
                    parts.append(f"decoded weights and kept arrays {_size(weights + kept)}")
                if op.transient:
                    parts.append(f"this instruction's working arrays {_size(op.transient)}")
                raise SimulationError(
                    f"the run would need about {_size(need)} of host memory ({', '.join(parts)}), more than the "
                    f"simulator's memory budget of {_size(budget)} (simulate(memory_budget=...))",
                    op.index, mnemonic=op.mnemonic)
            weights = min(weights + op.weights, self.weights_limit)
            kept += op.kept


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def footprint(prog: SimProgram, config: NPUConfig) -> Footprint:
    """The working set of ``prog`` on ``config`` (kept on the program: it depends on nothing else)."""
    known = prog.footprint
    if known is not None and known[0] == config:
        return known[1]
    from .machine import DECODE_CHUNK_ELEMENTS, Machine, batch_address_bytes, chain_batch, decoded_tile_nbytes
    from .timing import op_cost

    n = config.native_dim
    vb = config.vector_bytes
    # per MVU format mode: packed tile bytes, weight scales per tile row, reduction blocks and activation
    # blocks per vector; decoded tiles are sized for the widest mode (decoded_tile_nbytes)
    modes = []
    for w, a in config.mvu_modes:
        wfmt, xfmt = get_format(w), get_format(a)
        modes.append((tile_nbytes(wfmt, n), n // wfmt.block_for(n), n // reduction_block(wfmt, xfmt, n),
                      n // xfmt.block_for(n)))
    tile_bytes = modes[0][0]
    dec_tile = decoded_tile_nbytes(config)
    hold = 2 * config.mrf_tiles * dec_tile
    isz = config.mfu_bytes
    machine = config.vrf_depth * vb + 16 * config.mrf_tiles + dec_tile + RUN_OVERHEAD
    if any(w == a == "mxfp8_e4m3" for w, a in config.mvu_modes):
        machine += Machine.KEPT_CONVERSION_BYTES                 # E4M3 input conversions kept for later chains
    weights = kept = dram_extent = peak = 0
    stream_cycles: dict = {}
    ops = []
    for op in prog.ops:
        dram_end = transient = added = keep = 0
        if isinstance(op, DmaOp):
            f = op.fields
            if op.mnemonic == "m_load":
                count = f["count"]
                m_tile_bytes, per_row = modes[f.get("fmt", 0)][:2]
                dram_end = f["daddr"] + count * m_tile_bytes
                decoding = min(count, max(1, DECODE_CHUNK_ELEMENTS // (n * n)))
                added = count * dec_tile
                transient = (decoding * n * n * _DECODE_BYTES_PER_ELEMENT
                             + count * (2 * m_tile_bytes + n * per_row * 40 + 64) + added)
            else:
                dram_end = f["daddr"] + (f["rows"] - 1) * f["dstride"] + f["row_len"] * vb
                transient = f["rows"] * f["row_len"] * (vb + 24) + 16 * f["rows"]
        elif isinstance(op, ChainOp):
            sub, x_blocks = modes[op.fmt][2:]
            transient, keep = _chain_memory(op, config, sub, x_blocks, isz, dec_tile, Machine, chain_batch,
                                            batch_address_bytes)
        queue = op.queue
        end = stream_cycles[queue] = stream_cycles.get(queue, 0) + op_cost(op, config, tile_bytes).cycles
        weights = min(weights + added, hold)
        kept += keep
        dram_extent = max(dram_extent, min(dram_end, config.dram_bytes))
        peak = max(peak, transient)
        ops.append(OpMemory(op.index, getattr(op, "mnemonic", "chain"), min(dram_end, config.dram_bytes), added,
                            keep, transient, end))
    result = Footprint(machine, dram_extent, hold, weights + kept, peak, tuple(ops))
    prog.footprint = (config, result)
    return result


def _chain_memory(ch: ChainOp, config: NPUConfig, sub: int, x_blocks: int, isz: int, dec_tile: int, machine,
                  chain_batch, batch_address_bytes) -> tuple[int, int]:
    """(working bytes while the chain runs, bytes the program keeps for later runs) of one chain."""
    n, depth = config.native_dim, config.vrf_depth
    p, r, k = ch.iterations, ch.r, ch.k
    m = min(p, chain_batch(ch, n, sub))
    addresses = batch_address_bytes(ch, p)
    kept = addresses if addresses <= machine.BATCH_CACHE_BYTES else 0
    batch = 2 * batch_address_bytes(ch, m)                       # a batch's addresses while they are built
    if ch.mbase is None:
        batch += m * r * n * (8 + isz)                            # binary32 reduction, result bits, margin
    else:
        tiles = r * k
        batch += m * (k * n * 16 + k * x_blocks * 32 + k * sub * r * n * 16 + k * sub * 40 + r * n * isz)
        batch += tiles * (dec_tile + n * sub * 24 + n * n * 14)   # tiles gathered from several loads, scales
        if p * tiles * n * n >= int_gemm.MIN_MACS:
            kept += 2 * tiles * n * n                             # the integer GEMM's packed weights
    # hazard analysis (first run): a table over the vector memory, the writes, reads a chunk at a time
    writes = min(p * r, depth)
    hazards = depth * 9 + writes * 32 + min(p * r * k, machine.HAZARD_CHUNK + r * k) * 48
    return kept + max(batch, hazards), kept
