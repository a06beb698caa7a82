"""Area proxy of a machine configuration: FPGA resources from per-unit costs measured by synthesis.

``area_estimate(config)`` gives ALUTs, registers, DSP blocks and memory bits of the RTL core for a
machine, and one scalar, ``equivalent``, that design-space sweeps can rank by.  The unit costs below were
measured with Yosys 0.23 on the RTL (``hdl/synth.py``: the flow of ``synth_intel_alm -family
cyclone10gx``, the Arria 10 fabric, per module, memories kept as memory cells) and are reproduced by::

    .venv/bin/python benchmarks/measure_synthesis.py --second mid64 --formats ms-fp9,mxint8 --write-costs

which synthesises the ``tiny`` core and a second core at another N (``mid64``: N = 64, 4 tiles of 16
lanes), the slice-dots, row roundings and input conversions of the formats given and the MFU stages for
bf16 and fp32, writes :data:`COSTS` here and the measurements to ``build/synth/measurements.json`` (docs/architecture.md
"Synthesis" has the table).  Formats without measured costs (the other MX and ms-fp formats, until the
command runs with them) are refused with :class:`AreaModelError`.

The model, per resource (ALUTs, registers, DSP blocks)::

    tiles x N x lanes x mvu_lane[fmt] + tiles x N x mvu_row[fmt]    for each MVU format mode,
  + N x quantizer[fmt]                                              with its input conversion
  + mfus x N x mfu_lane[mfu format]                                 the MFU stages
  + N x (EW / 16) x vector_lane + fixed                             everything else

``mvu_lane`` and ``mvu_row`` split a tile engine's cost (N dot-product engines of ``lanes`` multiplier
lanes) between its multiplier lanes and its N rows (accumulator, rounding, the tile register's share);
they come from a tile engine synthesised alone per format (the slice-dot modules are the lanes, the
rest of the engine the rows), ``quantizer`` from the input conversion synthesised alone (per element).
``mfu_lane`` is the three MFU stages of one vector element (multiply, add/max, activation); bf16 and fp32
come from the stages synthesised alone.  ``vector_lane`` and ``fixed`` (the vector datapath outside the
MVU and MFUs: the input conversion, the binary32 accumulators, the pipeline registers, the DMA engines,
control) are fitted exactly to the two cores, both fp16 with 2 MFUs; other MFU widths scale the vector
lane by their element bits, which is an assumption, not a measurement.  A fit of two points, so
``fixed`` can come out negative: it is an intercept, not a unit.  An MFU stage's lane module holds
its pipeline register, so ``mfu_lane`` includes it; the per-stage address arithmetic sits in
``npu_compute`` and is fitted into ``vector_lane`` and ``fixed`` at 2 MFUs, so another MFU count is not
charged it.  Memory bits are exact: they
are the RTL's memories (:func:`memory_bits`), which the synthesis keeps as memory cells (their read
multiplexers are inside the memory cells, so no ALUT count includes them).

Beyond the RTL.  The model is counts times unit costs, so it extends to machines the RTL does not build
(more tile engines than N / LANES, formats with several blocks per native vector), as an extrapolation.
``multiplier_bits`` is not charged (the RTL's lanes are as wide as the widest format).  More than one
write port is refused by default (:class:`AreaModelError`): the RTL builds write ports, but their term
here is a model, not fitted to a synthesis; with ``beyond_rtl=True`` (what design-space sweeps use) W
write ports are charged as docs/architecture.md describes them: W - 1 more MFU chains at the measured
MFU-lane cost, and a rotation network from the W chains to the W banks of W x N x element-bits x
log2(W) two-input multiplexers, one ALUT per two of them (a 6-input ALUT is a 4:1 multiplexer), the
vector memory's bits unchanged.  The one synthesis with two ports (``tiny``, 4 engines: 2,605,577
ALUTs, 40,991 registers) is 6.7 % and 6.7 % above this model's 2,441,524 and 38,414.

This module is the bottom layer: it imports nothing from ``hdl`` or ``compiler``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from npu.config import NPUConfig
from npu.numerics.formats import get_format

#: Instruction memory of each of the core's three streams (words of 128 bits; ``npu_core`` IMEM_DEPTH).
IMEM_WORDS = 4096
#: Scalar registers written by s_wr in the compute stream (16 x 32 bits, kept as a memory by Yosys).
SREG_BITS = 16 * 32

#: Published capacity of the Arria 10 GX/GT 1150 (Intel): 427,200 ALMs (two ALUTs each), 1,708,800
#: registers, 1,518 variable-precision DSP blocks (3,036 18x19 multipliers), 2,713 M20K blocks (20 Kbit).
A10_1150 = {"aluts": 2 * 427_200, "registers": 1_708_800, "dsps": 1_518, "memory_bits": 2_713 * 20_480}
#: LUT-equivalent price of each resource: its share of an Arria 10 1150 in ALUTs (a register costs half
#: an ALUT, a DSP block about 563, a memory bit about 0.015).
WEIGHTS = {"luts": 1.0, "ffs": A10_1150["aluts"] / A10_1150["registers"], "dsps": A10_1150["aluts"] / A10_1150["dsps"],
           "bram_bits": A10_1150["aluts"] / A10_1150["memory_bits"]}

#: Unit costs (ALUTs, registers, DSP blocks), measured; see the module docstring for the command.
COSTS: dict[str, dict] = {
    "mvu_lane": {"ms-fp9": [43.25, 0.0, 0.0], "mxint8": [100.125, 0.0, 0.5]},
    "mvu_row": {"ms-fp9": [1248.25, 151.25, 0.0], "mxint8": [1292.25, 151.25, 0.0]},
    "quantizer": {"ms-fp9": [1042.406, 0.0, 0.0], "mxint8": [1068.438, 0.0, 0.0]},
    "mfu_lane": {"bf16": [15365, 48, 2], "fp16": [16190.0, 48.0, 2.0], "fp32": [12492, 96, 2]},
    "vector_lane": {"all": [6595.844, 1897.5, 0.0]},
    "fixed": {"all": [-79796.0, -47810.0, 16.0]},
}


class AreaModelError(ValueError):
    """The cost table has no entry for a format the configuration uses (says which)."""


@dataclass(frozen=True)
class AreaEstimate:
    """Estimated FPGA resources of a machine's core and their LUT-equivalent sum (:data:`WEIGHTS`)."""

    luts: int
    ffs: int
    dsps: int
    bram_bits: int
    equivalent: float

    def to_dict(self) -> dict:
        """Plain dict of the fields."""
        return {"luts": self.luts, "ffs": self.ffs, "dsps": self.dsps, "bram_bits": self.bram_bits,
                "equivalent": self.equivalent}


def element_bits(config: NPUConfig) -> int:
    """Bits of one vector element in the MFU format (16 for fp16 and bf16, 32 for fp32)."""
    return get_format(config.mfu_format).bits


def tile_bits(config: NPUConfig) -> int:
    """Bits of one matrix register file slot: N scale bytes and N x N element codes of the widest mode."""
    n = config.native_dim
    return max(8 * (n + n * n * get_format(w).element.bits // 8) for w, _ in config.mvu_modes)


def memory_bits(config: NPUConfig) -> int:
    """Bits of the core's memories: the vector memory, the matrix register file (each slot with its 3-bit
    mode), the three streams' instruction memories and the scalar registers."""
    vrf = config.vrf_depth * config.native_dim * element_bits(config)
    mrf = config.mrf_tiles * (tile_bits(config) + 3)
    return vrf + mrf + 3 * IMEM_WORDS * 128 + SREG_BITS


def _cost(table: str, key: str) -> tuple[float, float, float]:
    entries = COSTS.get(table, {})
    if key not in entries:
        raise AreaModelError(f"the area model has no {table} cost for {key!r} (measured: "
                             f"{', '.join(sorted(entries)) or 'none'}); add it with benchmarks/measure_synthesis.py")
    return tuple(entries[key])


def rotation_network_luts(config: NPUConfig) -> int:
    """ALUTs of the network from W MFU chains to W vector-memory banks (W = write_ports; none for W = 1):
    W x N x element-bits x log2(W) two-input multiplexers, two to a 6-input ALUT (modelled, not measured)."""
    w = config.write_ports
    if w <= 1:
        return 0
    return w * config.native_dim * element_bits(config) * math.ceil(math.log2(w)) // 2


def lut_equivalent(table: str, key: str) -> float:
    """One unit's measured cost (a :data:`COSTS` entry) as LUT-equivalents (:data:`WEIGHTS`)."""
    luts, ffs, dsps = _cost(table, key)
    return WEIGHTS["luts"] * luts + WEIGHTS["ffs"] * ffs + WEIGHTS["dsps"] * dsps


def area_estimate(config: NPUConfig, *, beyond_rtl: bool = False) -> AreaEstimate:
    """ALUTs, registers, DSP blocks and memory bits of the core for ``config``, and their LUT-equivalent sum.

    AreaModelError when a format of the machine has no measured unit cost, or when it has more than one
    write port and ``beyond_rtl`` is False (the ports' term is modelled; see the module docstring).
    """
    if config.write_ports > 1 and not beyond_rtl:
        raise AreaModelError(f"machine {config.name!r} has write_ports={config.write_ports}; the write ports' "
                             f"area is modelled, not fitted to a synthesis: area_estimate(config, "
                             f"beyond_rtl=True) charges the extra MFU chains and the bank network as modelled")
    n, ew = config.native_dim, element_bits(config)
    total = [0.0, 0.0, 0.0]

    def add(cost, count):
        for i in range(3):
            total[i] += cost[i] * count

    for fmt, _ in config.mvu_modes:                 # each mode has its own input conversion and engines
        name = get_format(fmt).name
        add(_cost("mvu_lane", name), config.tiles * n * config.lanes)
        add(_cost("mvu_row", name), config.tiles * n)
        add(_cost("quantizer", name), n)
    add(_cost("mfu_lane", config.mfu_format), config.write_ports * config.mfus * n)
    add(_cost("vector_lane", "all"), n * ew / 16)
    add(_cost("fixed", "all"), 1)
    total[0] += rotation_network_luts(config)
    luts, ffs, dsps = (max(0, round(v)) for v in total)
    bits = memory_bits(config)
    equivalent = (WEIGHTS["luts"] * luts + WEIGHTS["ffs"] * ffs + WEIGHTS["dsps"] * dsps
                  + WEIGHTS["bram_bits"] * bits)
    return AreaEstimate(luts=luts, ffs=ffs, dsps=dsps, bram_bits=bits, equivalent=round(equivalent, 1))
