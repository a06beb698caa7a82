"""Synthesis of the RTL core with Yosys: FPGA resource estimates and synthesisability checks per machine.

``synthesize(config)`` runs Yosys on ``npu_core`` (the sources of ``hdl.core.SOURCES``, the parameters of
``hdl.core.core_parameters(config)``, the generated headers and ``hdl/rtl`` on the include path) through
the steps of Yosys 0.23's ``synth_intel_alm -family cyclone10gx`` (Cyclone 10 GX has the Arria 10 fabric:
ALMs of fracturable 6-input LUTs, variable-precision DSP blocks of one 27x27 or two 18x19 multipliers,
M20K memory) with these changes, each said in docs/architecture.md "Synthesis":

* the design is synthesised per module, not flattened, and the counts are multiplied by the instances
  (:func:`hierarchy_cells`): the flattened flow took most of an hour and 18 GB on ``tiny``;
* the memories are kept as memory cells (``memory -nomap -norom``) and counted as bits (``bram_bits``),
  not mapped to M20K or flattened into flip-flops: the core reads its register files asynchronously,
  which M20K blocks cannot do;
* the SAT-based resource sharing (``share``) is left out: it took more than 14 GB on ``tiny``;
* LUTs are mapped by ``abc -lut 6`` instead of ``abc9``, which stops on the kept memory cells (it takes an
  asynchronously read memory for a combinational path from its write port to its read port);
* indexed part-selects are mapped to word multiplexers by ``hdl/synth/shiftx_bmux.v`` first.

It also checks the netlist: latches (after ``proc`` and removal of unused logic), combinational loops
(``scc`` and ``check`` on the flattened design), and, when the mapped netlist is small enough to
flatten, the longest combinational path (``ltp``, in cells; ``sta``, in ns of cell delays), in a second
Yosys run on the mapped netlist, so that a flatten that runs out of memory loses the path, not the
resources.

``stage="coarse"`` stops after the word-level optimisation and the DSP mapping (no LUT mapping): the
checks, the multipliers, the flip-flop bits and the memories, in a fraction of the time; the test suite
uses it.  ``npu synth --config NAME|FILE [--json]`` runs the full flow from the command line.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from npu.config import NPUConfig

from .core import BUILD, SOURCES, core_parameters
from .toolchain import GENERATED, RTL, ToolchainError

#: The Yosys target family: Cyclone 10 GX, the Arria 10 fabric (the Azure Brainwave boards were Arria 10).
FAMILY = "cyclone10gx"
#: Where each configuration's script, log and reports go.
SYNTH_BUILD = BUILD.parent / "synth"
#: Sources read with ``read_verilog -nolatches`` (see :func:`synthesis_script`): the block quantisers.
NOLATCH_SOURCES = ("npu_bfp_quantize.v", "npu_mx_quantize.v")
#: Block size at which the quantisers' latch check runs on their own (the per-element code is the same for any B).
QUANTIZER_CHECK_B = 8
#: Yosys's M20K configurations (depth, width) of a simple dual-port block, for the M20K estimate.
M20K_SHAPES = ((512, 40), (1024, 20), (2048, 10), (4096, 5), (8192, 2), (16384, 1))
#: Multiplier mapping of synth_intel_alm for cyclone10gx (Yosys 0.23): 27x27 when one operand has
#: 19..27 bits, else 18x18 when both have 4..18 bits; narrower products stay in soft logic.
DSP_MAPPING = (
    "techmap -map +/mul2dsp.v -D DSP_A_MAXWIDTH=27 -D DSP_B_MAXWIDTH=27 -D DSP_A_MINWIDTH=19 -D DSP_B_MINWIDTH=4 "
    "-D DSP_NAME=__MUL27X27",
    "chtype -set $mul t:$__soft_mul",
    "techmap -map +/mul2dsp.v -D DSP_A_MAXWIDTH=27 -D DSP_B_MAXWIDTH=27 -D DSP_A_MINWIDTH=4 -D DSP_B_MINWIDTH=19 "
    "-D DSP_NAME=__MUL27X27",
    "chtype -set $mul t:$__soft_mul",
    "techmap -map +/mul2dsp.v -D DSP_A_MAXWIDTH=18 -D DSP_B_MAXWIDTH=18 -D DSP_A_MINWIDTH=4 -D DSP_B_MINWIDTH=4 "
    "-D DSP_NAME=__MUL18X18",
    "chtype -set $mul t:$__soft_mul",
)
#: The map file of indexed part-selects (see :func:`synthesis_script`).
SHIFTX_MAP = Path(__file__).resolve().parent / "synth" / "shiftx_bmux.v"
QUANTIZERS = ("npu_bfp_quantize", "npu_mx_quantize")
REPORTS = ("latches_npu_bfp_quantize.txt", "latches_npu_mx_quantize.txt", "latches.txt", "check.txt", "scc.txt",
           "multipliers.txt", "memory_stat.json", "coarse_stat.json", "stat.json", "ltp.txt", "sta.txt", "memories.il")
LATCH_CELLS = "t:$dlatch t:$adlatch t:$dlatchsr t:$_DLATCH* t:$_DLATCHSR*"
STAGES = ("coarse", "full")
#: The mapped netlist a full run writes for the timing run (RTLIL).
MAPPED = "mapped.il"
#: Why the last timing run failed (:func:`run_timing`), so that ``reuse`` does not try again.
TIMING_FAILED = "timing_failed.txt"
#: The digest of the sources a finished run synthesised (:func:`sources_digest`), for ``reuse``.
DIGEST = "sources.sha256"


@dataclass(frozen=True)
class Memory:
    """One memory cell the synthesis kept: ``width`` x ``depth`` bits with its port counts."""

    name: str
    width: int
    depth: int
    read_ports: int
    write_ports: int
    async_read_ports: int

    @property
    def bits(self) -> int:
        """Storage bits (width x depth)."""
        return self.width * self.depth

    @property
    def m20k(self) -> int:
        """M20K blocks if every read port had its own simple dual-port replica (registered reads)."""
        one = min(math.ceil(self.depth / d) * math.ceil(self.width / w) for d, w in M20K_SHAPES)
        return one * max(self.read_ports, 1)


@dataclass(frozen=True)
class SynthesisReport:
    """What Yosys made of the core for one machine configuration.

    ``luts`` counts Arria 10 ALUTs (6-input and smaller LUTs and the arithmetic LUTs of carry chains),
    ``alms`` is a packing estimate (:func:`alm_estimate`), ``ffs`` flip-flops, ``dsps`` DSP blocks (a 27x27
    multiplier takes one, an 18x18 half of one), ``hard_multipliers`` the DSP multipliers,
    ``soft_multipliers`` the word-level multipliers left to soft logic (:func:`soft_multipliers`),
    ``bram_bits`` the bits of the kept memories.  ``latches``
    and ``loops`` must be zero for a synthesisable core; ``longest_path`` is the longest combinational
    path in mapped cells (LUTs, each carry-chain bit, DSPs) between flip-flops, memory ports and I/O
    (``ltp``), ``longest_path_ns`` the latest arrival time by the cells' Cyclone 10 GX delays without
    routing (``sta``); both None when the netlist was not flattened (:func:`timing_affordable`).  The
    coarse stage has no LUT mapping: ``luts``, ``alms`` and the paths are None and ``ffs`` counts the
    flip-flop bits of the word-level netlist.  ``notes`` says why a longest path is missing when the
    timing run (:func:`run_timing`) failed.  ``units`` holds the resources of every module kind (all
    its instances), ``memories`` the memory cells (one per module that holds it).
    """

    config: str
    stage: str
    family: str
    yosys: str
    luts: int | None
    alms: int | None
    ffs: int
    dsps: int
    hard_multipliers: int
    soft_multipliers: int
    bram_bits: int
    m20k: int
    latches: int
    loops: int
    check_problems: int
    longest_path: int | None
    longest_path_ns: float | None
    seconds: float
    cpu_seconds: float
    multipliers_by_source: dict[str, int] = field(default_factory=dict)
    memories: tuple[Memory, ...] = ()
    units: dict[str, dict[str, int]] = field(default_factory=dict)
    cells: dict[str, int] = field(default_factory=dict)
    parameters: dict[str, int | str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """Plain dict (JSON-ready), memories with their bits."""
        out = asdict(self)
        out["memories"] = [dict(asdict(m), bits=m.bits, m20k=m.m20k) for m in self.memories]
        return out

    def to_json(self) -> str:
        """JSON text of this report."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @property
    def synthesisable(self) -> bool:
        """No latches and no combinational loops."""
        return self.latches == 0 and self.loops == 0


def yosys_path() -> str:
    """The ``yosys`` executable on PATH; ToolchainError saying how to install it if there is none."""
    path = shutil.which("yosys")
    if path is None:
        raise ToolchainError("yosys is not installed (npu synth and the synthesis tests need it): `make setup` "
                             "run as root installs it from Debian (apt-get install yosys); any Yosys >= 0.23 "
                             "on PATH will do")
    return path


def yosys_version() -> str:
    """``yosys -V`` (for example 'Yosys 0.23 (git sha1 7ce5011c24b)')."""
    out = subprocess.run([yosys_path(), "-V"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or out.stderr.strip()


def _quote(path: Path | str) -> str:
    """A path as a Yosys script argument (double quotes only when it has spaces: read_verilog takes them)."""
    text = str(path)
    return f'"{text}"' if " " in text else text


def synthesis_script(config: NPUConfig, workdir: Path, stage: str = "full", flat_checks: bool = True) -> str:
    """The Yosys script that synthesises ``npu_core`` for ``config`` and writes its reports into ``workdir``.

    Checks first, on the flattened design: latches after ``proc`` and ``opt_clean``, then ``check`` and
    ``scc`` (combinational loops) and the word-level multipliers.  The resources come from the
    hierarchical design (each distinct module synthesised once; :func:`hierarchy_cells` multiplies by
    the instance counts), which takes minutes where the flattened flow took most of an hour and 18 GB;
    the full stage writes the mapped netlist (:data:`MAPPED`), which :func:`timing_script` flattens in a
    Yosys run of its own for ``ltp`` and ``sta``.  ``flat_checks=False`` runs ``check``, ``scc`` and the
    multiplier list per module instead (loops within a module only, multipliers per module definition):
    flattening a core larger than ``tiny`` for them runs out of 12 GB (:func:`checks_affordable`).

    The block quantisers (:data:`NOLATCH_SOURCES`) are read with ``-nolatches``: the inner loop variable
    of their rounding loop is assigned on some paths only, which makes Yosys 0.23's ``proc_dlatch`` take
    time exponential in the block size (half a second at B = 8, half a minute at B = 16, no end in sight
    at B = 32) for a latch that ``opt_clean`` removes as unused.  ``-nolatches`` turns hold paths into
    don't-cares, so the quantisers' own latch check runs first, alone, at B = :data:`QUANTIZER_CHECK_B`
    (the per-element code is the same for every B).  ``hdl/synth/shiftx_bmux.v`` maps indexed part-selects
    (``A[k * W +: W]``: the activation tables, the tile engines' slices) to word multiplexers before
    Yosys's generic barrel shifter would take minutes and gigabytes on them.
    """
    return _flow_script("npu_core", core_parameters(config), workdir, stage, f"machine {config.name!r}",
                        flat_checks=flat_checks)


def _flow_script(top: str, params: dict, workdir: Path, stage: str, what: str,
                 sources: list[Path] | None = None, flat_checks: bool = True) -> str:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    inc = f"-I{_quote(GENERATED)} -I{_quote(RTL)}"
    by_name = {s.name: s for s in SOURCES}
    if " " in str(workdir):
        raise ValueError(f"the synthesis directory must not contain spaces (Yosys's tee): {workdir}")
    rep = {name: str(workdir / name) for name in REPORTS}
    out = [f"# generated by hdl/synth.py for {what} (stage {stage}); "
           f"run again with: yosys -s {workdir / 'synth.ys'}"]
    # 1. the quantisers' latch check, at a small block size, without -nolatches
    quantizers = [by_name[n] for n in ("npu_round_float.v", "npu_block_scale.v", *NOLATCH_SOURCES) if n in by_name]
    for q in QUANTIZERS:
        out += [f"read_verilog -defer {inc} " + " ".join(_quote(s) for s in quantizers),
                f"hierarchy -top {q} -chparam B {QUANTIZER_CHECK_B}",
                "proc", "opt_clean",
                f"tee -q -o {rep[f'latches_{q}.txt']} select -count {LATCH_CELLS}",
                "design -reset"]
    # 2. the core with the machine's parameters, the target's cell library
    if top == "npu_core":
        for src in SOURCES:
            flag = " -nolatches" if src.name in NOLATCH_SOURCES else ""
            out.append(f"read_verilog -defer{flag} {inc} {_quote(src)}")
        out.append(f"hierarchy -check -top {top} " + " ".join(f"-chparam {k} {v}" for k, v in params.items()))
    else:   # a unit: elaborated with its defaults, then re-derived (hierarchy -chparam trips over default values)
        for src in sources or SOURCES:
            flag = " -nolatches" if src.name in NOLATCH_SOURCES else ""
            out.append(f"read_verilog{flag} {inc} {_quote(src)}")
        if params:
            out.append("chparam " + " ".join(f"-set {k} {v}" for k, v in params.items()) + f" {top}")
    for lib in ("alm_sim", "dff_sim", "dsp_sim", "mem_sim", "misc_sim"):
        out.append(f"read_verilog -specify -lib -D {FAMILY} +/intel_alm/common/{lib}.v")
    out += [
        f"hierarchy -check -top {top}",
        "proc", "opt_clean",
        f"tee -q -o {rep['latches.txt']} select -count {LATCH_CELLS}",
    ]
    checks = [f"tee -q -o {rep['check.txt']} check", f"tee -q -o {rep['scc.txt']} scc",
              f"tee -q -o {rep['multipliers.txt']} select -list t:$mul"]
    if flat_checks:     # 3. loops and multipliers on the flattened design
        out += ["design -save elaborated", "flatten", "opt_expr", "opt_clean", *checks, "design -load elaborated"]
    else:               # 3. per module: loops within modules, multipliers per module definition
        out += checks
    out += [
        # 4. synth_intel_alm's coarse steps, per module (no flatten, no share)
        "tribuf -logic", "deminout", "opt_expr", "opt_clean",
        "opt -nodffe -nosdff", "fsm", "opt", "wreduce", "peepopt", "opt_clean",
        "opt_expr -fine", "wreduce",      # exposes the constant bits of part-select offsets to the next map
        f"techmap -map {_quote(SHIFTX_MAP)}",
        "techmap -map +/cmp2lut.v -D LUT_WIDTH=6", "opt_expr", "opt_clean",
        *DSP_MAPPING,
        "alumacc",
        "techmap -map +/intel_alm/common/arith_alm_map.v -map +/intel_alm/common/dsp_map.v",
        "opt",
        f"tee -q -o {rep['memory_stat.json']} stat -json",     # memory bits per module, before memory_collect
        "memory -nomap -norom", "opt_clean",
        f"tee -q -o {rep['coarse_stat.json']} stat -json -width",
    ]
    if stage == "full":
        # 5. synth_intel_alm's map_ffs and map_luts (memories stay memory cells)
        out += [
            "techmap",
            "dfflegalize -cell $_DFFE_PN0P_ 0 -cell $_SDFFCE_PP0P_ 0",
            "techmap -map +/intel_alm/common/dff_map.v",
            "opt -full -undriven -mux_undef", "clean -purge",
            # abc, not synth_intel_alm's abc9: abc9 sees an asynchronously read memory cell as a combinational
            # box from its write port to its read port, and the compute stream's read-MFU-write path as a loop
            "abc -lut 6",
            "techmap -map +/intel_alm/common/alm_map.v",
            "opt -fast", "clean",
            f"tee -q -o {rep['stat.json']} stat -json",
            f"write_rtlil {_quote(workdir / MAPPED)}",      # for the timing run (:func:`timing_script`)
        ]
    out.append(f"tee -q -o {rep['memories.il']} dump t:$mem_v2")      # the memories' shapes and ports
    return "\n".join(out) + "\n"


def timing_script(top: str, workdir: Path) -> str:
    """The Yosys script that reads the mapped netlist a full run left in ``workdir`` (:data:`MAPPED`),
    flattens it and writes the longest path: ``ltp`` in cells (the core only: it relaxes paths without a
    topological order, minutes on a deep unit) and ``sta`` in ns of the cells' delays.  A run of its own,
    so that a flatten that runs out of memory or time costs the longest path only, not the resources."""
    out = [f"# generated by hdl/synth.py: the longest path of {top}; run again with: "
           f"yosys -s {workdir / 'timing.ys'}"]
    out.append(f"read_rtlil {_quote(workdir / MAPPED)}")       # the top module keeps its 'top' mark
    for lib in ("alm_sim", "dff_sim", "dsp_sim", "mem_sim", "misc_sim"):   # the cells' parameters and delays
        out.append(f"read_verilog -specify -lib -overwrite -D {FAMILY} +/intel_alm/common/{lib}.v")
    out.append("flatten")
    if top == "npu_core":
        out.append(f"tee -q -o {_quote(workdir / 'ltp.txt')} ltp -noff t:MISTRAL_FF t:$mem_v2 %u %n")
    out.append(f"tee -q -o {_quote(workdir / 'sta.txt')} sta")
    return "\n".join(out) + "\n"


# ----- reading Yosys's reports ------------------------------------------------------------------------------
def _number(pattern: str, text: str, command: str, *, last: bool = False) -> int:
    """The integer ``pattern`` captures in ``text`` (the last match with ``last``); ToolchainError naming
    ``command`` when Yosys's output has no such line."""
    found = re.findall(pattern, text)
    if not found:
        raise ToolchainError(f"unexpected `{command}` output: {text.strip()[-200:]!r}")
    return int(found[-1] if last else found[0])


def parse_count(text: str) -> int:
    """The N of ``select -count``'s 'N objects.'."""
    return _number(r"(\d+)\s+objects?\.", text, "select -count")


def parse_scc(text: str) -> int:
    """Strongly connected components (combinational loops) from ``scc``'s 'Found N SCCs.'."""
    return _number(r"Found (\d+) SCCs\.", text, "scc", last=True)


def parse_check(text: str) -> tuple[int, int]:
    """(problems, logic loops) from ``check``: 'Found and reported N problems.' and its 'found logic loop' lines."""
    problems = _number(r"Found and reported (\d+) problems?\.", text, "check")
    return problems, len(re.findall(r"found logic loop", text, re.IGNORECASE))


def parse_ltp(text: str) -> int:
    """Cells on the longest topological path from ``ltp``'s 'Longest topological path in M (length=N):'."""
    return _number(r"Longest topological path in \S+ \(length=(\d+)\)", text, "ltp")


def parse_sta(text: str) -> float:
    """The latest arrival time in ns from ``sta``'s 'Latest arrival time in 'M' is N:' (N in ps)."""
    return _number(r"Latest arrival time in \S+ is (\d+)", text, "sta") / 1000.0


def _const_bits(value: str) -> str:
    """The bits of an RTLIL constant such as 8'00000001 (most significant first)."""
    m = re.fullmatch(r"(\d+)'([01xzm-]*)", value.strip())
    return m.group(2) if m else ""


def parse_memories(text: str) -> tuple[Memory, ...]:
    """The ``$mem_v2`` cells of an RTLIL ``dump``: name, WIDTH, SIZE and port counts."""
    out = []
    for block in re.split(r"\n\s*cell ", "\n" + text)[1:]:
        head, _, body = block.partition("\n")
        kind, _, name = head.strip().partition(" ")
        if kind != "$mem_v2":
            continue
        params = dict(re.findall(r"parameter \\(\w+) (\S+)", body))
        rd = int(params.get("RD_PORTS", "0"))
        clocked = _const_bits(params.get("RD_CLK_ENABLE", "")).count("1")
        memid = params.get("MEMID", name).strip('"').replace("\\\\", "").lstrip("\\")
        out.append(Memory(name=memid, width=int(params["WIDTH"]), depth=int(params["SIZE"]), read_ports=rd,
                          write_ports=int(params.get("WR_PORTS", "0")), async_read_ports=rd - clocked))
    return tuple(sorted(out, key=lambda m: -m.bits))


def base_name(module: str) -> str:
    """The module name of a derived module: 'npu_tile_engine' of '$paramod$0f11...\\npu_tile_engine' and of
    '$paramod\\npu_tile_engine\\N=...'; other names unchanged (without a leading backslash)."""
    name = module.lstrip("\\")
    if name.startswith("$paramod"):
        parts = name.split("\\")
        if len(parts) > 1:
            return parts[1]
    return name


def load_stat_json(text: str) -> dict:
    """``stat -json`` output; Yosys 0.23 prints the design hierarchy (plain text lines) into it when the design
    has a top module, so lines that cannot be JSON are dropped first."""
    keep = [ln for ln in text.splitlines() if not ln.strip() or ln.strip()[0] in '"{}[]']
    try:
        return json.loads("\n".join(keep))
    except json.JSONDecodeError as exc:
        raise ToolchainError(f"cannot read Yosys's stat -json output: {exc}") from None


def _modules(stat_json: dict) -> dict[str, dict[str, int]]:
    return {k.lstrip("\\"): {str(t): int(n) for t, n in v.get("num_cells_by_type", {}).items()}
            for k, v in stat_json.get("modules", {}).items()}


def _top_module(modules: dict[str, dict[str, int]], top: str) -> str:
    if top not in modules:          # a unit re-derived with chparam: $paramod$<hash>\<top>, instantiated nowhere
        used = {k.lstrip("\\") for cells in modules.values() for k in cells}
        derived = [m for m in modules if base_name(m) == top and m not in used]
        top = derived[0] if len(derived) == 1 else top
    if top not in modules:
        raise ToolchainError(f"stat output has no module {top!r} (modules: {', '.join(sorted(modules))[:300]})")
    return top


def _instances(modules: dict[str, dict[str, int]], top: str) -> Counter:
    """How many instances of each module the design under ``top`` holds."""
    instances: Counter = Counter()

    def walk(name: str, times: int) -> None:
        instances[name] += times
        for kind, n in modules[name].items():
            sub = kind.lstrip("\\")
            if sub in modules:
                walk(sub, times * n)

    walk(top, 1)
    return instances


def hierarchy_cells(stat_json: dict, top: str = "npu_core") -> tuple[dict[str, int], dict[str, dict]]:
    """Cell counts of the whole design under ``top`` from per-module ``stat -json`` output (each module's
    cells times its instances), and per module kind (:func:`base_name`): instances and cells of all of them.
    """
    modules = _modules(stat_json)
    top = _top_module(modules, top)
    memo: dict[str, Counter] = {}

    def total(name: str) -> Counter:
        if name not in memo:
            acc: Counter = Counter()
            for kind, n in modules[name].items():
                sub = kind.lstrip("\\")
                if sub in modules:
                    for k, v in total(sub).items():
                        acc[k] += n * v
                else:
                    acc[kind] += n
            memo[name] = acc
        return memo[name]

    units: dict[str, dict] = {}
    for name, count in _instances(modules, top).items():
        unit = units.setdefault(base_name(name), {"instances": 0, "cells": Counter()})
        unit["instances"] += count
        for k, v in total(name).items():
            unit["cells"][k] += count * v
    return dict(total(top)), {k: {"instances": v["instances"], "cells": dict(v["cells"])} for k, v in units.items()}


def hierarchy_memory_bits(stat_json: dict, top: str = "npu_core") -> int:
    """Memory bits of the design under ``top`` (``stat -json`` before ``memory_collect``: each module's
    num_memory_bits times its instances)."""
    modules = _modules(stat_json)
    top = _top_module(modules, top)
    bits = {k.lstrip("\\"): int(v.get("num_memory_bits", 0)) for k, v in stat_json.get("modules", {}).items()}
    return sum(n * bits.get(name, 0) for name, n in _instances(modules, top).items())


_FF_WIDTH = re.compile(r"^\$_?(?:s?dff|adff|aldff|dffsr|sdff|dffe|adffe|aldffe|dffsre|sdffe|sdffce)\w*?_(\d+)$")


def ff_bits(cells: dict[str, int]) -> int:
    """Flip-flop bits of a word-level netlist (``stat -width``: '$dff_32' is a 32-bit register)."""
    total = 0
    for kind, n in cells.items():
        if kind == "MISTRAL_FF":
            total += n
            continue
        m = _FF_WIDTH.match(kind)
        if m:
            total += n * int(m.group(1))
    return total


def alm_estimate(cells: dict[str, int]) -> int:
    """ALMs the mapped LUTs and registers need, packed as an Arria 10 ALM holds them: one 6-input LUT, or
    two smaller LUTs, or two arithmetic bits; four registers.  A packing estimate (Quartus's differs)."""
    lut6 = cells.get("MISTRAL_ALUT6", 0)
    small = sum(n for k, n in cells.items() if re.fullmatch(r"MISTRAL_ALUT[2-5]|MISTRAL_NOT", k))
    arith = cells.get("MISTRAL_ALUT_ARITH", 0)
    logic = lut6 + math.ceil(small / 2) + math.ceil(arith / 2)
    return max(logic, math.ceil(cells.get("MISTRAL_FF", 0) / 4))


def lut_count(cells: dict[str, int]) -> int:
    """ALUTs of a mapped netlist: the MISTRAL_ALUT* cells (including carry-chain LUTs) and inverters."""
    return sum(n for k, n in cells.items() if k.startswith("MISTRAL_ALUT") or k == "MISTRAL_NOT")


def dsp_blocks(cells: dict[str, int]) -> tuple[int, int]:
    """(DSP blocks, hard multipliers): a 27x27 multiplier fills a block, two 18x18 (18x19) share one."""
    m27 = sum(n for k, n in cells.items() if k.lstrip("\\") in ("MISTRAL_MUL27X27", "__MUL27X27"))
    m18 = sum(n for k, n in cells.items() if k.lstrip("\\") in ("MISTRAL_MUL18X18", "__MUL18X18"))
    m9 = sum(n for k, n in cells.items() if k.lstrip("\\") in ("MISTRAL_MUL9X9", "__MUL9X9"))
    return m27 + math.ceil(m18 / 2) + math.ceil(m9 / 3), m27 + m18 + m9


def multipliers_by_source(text: str) -> dict[str, int]:
    """Word-level multipliers (``select -list t:$mul`` before DSP mapping) counted by source file (a
    function's multipliers by the header that defines it)."""
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        m = re.search(r"\$mul\$(?:.*/)?([\w.]+\.vh?):\d+", line)
        if m:
            counts[m.group(1)] += 1
        elif "$mul" in line:
            counts["(other)"] += 1
    return dict(sorted(counts.items()))


def soft_multipliers(by_source: dict[str, int], units: dict[str, dict]) -> int:
    """Word-level multipliers left in soft logic: those of the source files whose module got no DSP block
    (``alumacc`` turns them into adder trees, so they are counted before it, by source)."""
    soft = 0
    for source, count in by_source.items():
        unit = units.get(source.removesuffix(".v"))
        if unit is not None and not any(re.search(r"MUL(27X27|18X18|9X9)$", k) for k in unit["cells"]):
            soft += count
    return soft


# ----- running it ---------------------------------------------------------------------------------------------
def workdir_for(config: NPUConfig, stage: str) -> Path:
    """Where the script, log and reports of ``config`` at ``stage`` go (named like the Verilator builds)."""
    from .core import build_dir

    return SYNTH_BUILD / f"{build_dir(config).name}_{stage}"


def _run_yosys(script_text: str, workdir: Path, what: str, timeout: float | None, *, name: str = "synth",
               clear: tuple[str, ...] = REPORTS) -> tuple[float, float]:
    """Run a script in ``workdir`` (written there as <name>.ys, logged to yosys.log, or <name>.log for other
    names than "synth") after removing the ``clear`` reports; (wall, CPU) seconds."""
    yosys = yosys_path()
    workdir.mkdir(parents=True, exist_ok=True)
    for report in clear + ((DIGEST, TIMING_FAILED) if name == "synth" else ()):
        (workdir / report).unlink(missing_ok=True)
    script = workdir / f"{name}.ys"
    script.write_text(script_text)
    log = workdir / ("yosys.log" if name == "synth" else f"{name}.log")
    t0 = time.perf_counter()
    try:
        run = subprocess.run([yosys, "-q", "-l", str(log), "-s", str(script)], capture_output=True, text=True,
                             timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ToolchainError(f"yosys did not finish synthesising {what} within {timeout:g} s; log: {log}") from None
    if run.returncode != 0:
        text = (log.read_text(errors="replace") if log.is_file() else "") + "\n" + run.stderr + "\n" + run.stdout
        errors = [ln.strip() for ln in text.splitlines() if "ERROR" in ln] or text.strip().splitlines()[-3:]
        raise ToolchainError(f"yosys failed synthesising {what} (exit status {run.returncode}): "
                             f"{' / '.join(errors)[:500]}; log: {log}")
    if name == "synth":
        (workdir / DIGEST).write_text(sources_digest() + "\n")
    return time.perf_counter() - t0, log_cpu_seconds(log.read_text(errors="replace"))


def run_timing(top: str, workdir: Path, timeout: float | None, reuse: bool = False) -> str:
    """The longest-path run (:func:`timing_script`) on the mapped netlist of a finished full run in
    ``workdir``: writes ltp.txt (the core) and sta.txt there.  Returns "" when it ran (or ``reuse`` found
    it done), else why not (Yosys failed, for example out of memory under a ``ulimit -v``, or ran
    out of ``timeout``): the resources stand without the longest path."""
    script = timing_script(top, workdir)
    done, failed = workdir / "timing.ys", workdir / TIMING_FAILED
    if reuse and done.is_file() and done.read_text() == script:
        if failed.is_file():
            return failed.read_text().strip()
        if _parsed(parse_sta, workdir / "sta.txt") is not None:
            return ""
    try:
        _run_yosys(script, workdir, f"the longest path of {top}", timeout, name="timing",
                   clear=("ltp.txt", "sta.txt", TIMING_FAILED))
    except ToolchainError as exc:
        failed.write_text(f"no longest path: {exc}\n")
        return failed.read_text().strip()
    return ""


def checks_affordable(config: NPUConfig) -> bool:
    """Whether the elaborated core of ``config`` is small enough to flatten for the loop and multiplier checks
    within 12 GB: the same bound as :func:`timing_affordable` (``tiny`` takes 4.5 GB, N = 64 with 4,096
    MACs ran out of 12 GB).  Larger cores are checked per module; the cross-module loop check is the
    same Verilog as ``tiny``'s."""
    return timing_affordable(config)


def timing_affordable(config: NPUConfig) -> bool:
    """Whether the mapped netlist of ``config`` may be small enough to flatten for ``ltp`` and ``sta``: machines up
    to ``tiny``'s size (N x MFUs <= 64, MACs <= 512).  Flattening tiny's mapped netlist ran out of 12 GB
    (the timing run then fails alone: :func:`run_timing`); N = 16 took 7 GB and five minutes."""
    return config.native_dim * config.mfus <= 64 and config.macs * len(config.mvu_modes) <= 512


def synthesize(config: NPUConfig, *, stage: str = "full", workdir: Path | None = None,
               timeout: float | None = None, timing: bool | None = None, reuse: bool = False) -> SynthesisReport:
    """Synthesise the core for ``config`` with Yosys and read back resources and checks.

    ``stage`` is "full" (mapped to Arria 10 ALUTs, registers and DSP blocks: about ten minutes for ``tiny``)
    or "coarse" (checks, multipliers, register bits and memories, no LUT mapping).  ``timing`` flattens the
    mapped netlist for the longest path (``ltp``, in cells, and ``sta``, in ns of cell delays without
    routing); None: when :func:`timing_affordable`.  Raises ``hdl.core.UnsupportedConfig`` for machines
    the RTL cannot build and ``ToolchainError`` when Yosys is missing or fails (the message names the
    log).  The script, log and reports stay in ``workdir`` (default ``build/synth/<configuration>_<stage>``):
    ``yosys -s <workdir>/synth.ys`` runs it again; ``reuse`` reads them back instead when they come from
    the same script and the same sources (:func:`finished`).
    """
    version = yosys_version()
    workdir = Path(workdir) if workdir is not None else workdir_for(config, stage)
    timing = (timing_affordable(config) if timing is None else timing) and stage == "full"
    flat = checks_affordable(config)
    script = synthesis_script(config, workdir, stage, flat_checks=flat)
    seconds = 0.0
    if not (reuse and finished(workdir, script, stage)):
        seconds, _ = _run_yosys(script, workdir, f"{config.name!r} ({stage})", timeout)
    notes = (run_timing("npu_core", workdir, timeout, reuse),) if timing else ()
    if not flat:
        notes += ("checked per module (not flattened: see hdl.synth.checks_affordable): loops within modules, "
                  "multipliers_by_source per module definition",)
    report = read_reports(config, workdir, stage, seconds, version)
    return replace(report, notes=tuple(n for n in notes if n))


def synthesize_module(top: str, parameters: dict[str, int | str], workdir: Path, *, stage: str = "full",
                      sources: list[Path] | None = None, timeout: float | None = None, reuse: bool = False,
                      timing: bool = True) -> dict:
    """One module of the RTL (``top`` among :data:`hdl.core.SOURCES`' modules) through the same flow as the
    core, for per-unit costs (``sources``: the files it needs, in dependency order; default all of them).
    Returns {"cells": design totals, "units": per module kind (:func:`hierarchy_cells`), "seconds",
    "cpu_seconds", "latches", "loops", "longest_path_ns"}.  ``timing``: flatten the mapped unit in a second
    run for ``sta`` (no ``ltp``; both take minutes on a quantiser, whose path is then None).  ``reuse``: read
    the reports of an earlier run of the same script and sources in ``workdir``."""
    workdir = Path(workdir)
    params = ", ".join(f"{k}={v}" for k, v in parameters.items())
    script = _flow_script(top, parameters, workdir, stage, f"module {top} ({params})", sources)
    seconds = 0.0
    if not (reuse and finished(workdir, script, stage)):
        seconds, _ = _run_yosys(script, workdir, f"{top} ({params}, {stage})", timeout)
    stat = "stat.json" if stage == "full" else "coarse_stat.json"
    cells, units = hierarchy_cells(load_stat_json((workdir / stat).read_text()), top)
    path = {"longest_path_ns": None}
    if stage == "full" and timing:
        note = run_timing(top, workdir, timeout, reuse)
        path = {"longest_path_ns": None if note else parse_sta((workdir / "sta.txt").read_text())}
    return {"cells": cells, "units": units, "seconds": round(seconds, 1),
            "cpu_seconds": log_cpu_seconds((workdir / "yosys.log").read_text(errors="replace")), **path,
            "latches": parse_count((workdir / "latches.txt").read_text()),
            "loops": parse_scc((workdir / "scc.txt").read_text())}


def sources_digest() -> str:
    """SHA-256 over the Verilog the flow reads (hdl/rtl, the generated headers, the shiftx map), so that a
    finished run is reused only for the same sources, not just the same script."""
    digest = hashlib.sha256()
    files = sorted([*RTL.glob("*.v"), *RTL.glob("*.vh"), *GENERATED.glob("*.vh"), SHIFTX_MAP])
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def finished(workdir: Path, script: str, stage: str) -> bool:
    """Whether ``workdir`` holds a completed run of exactly ``script`` on the current sources
    (:data:`DIGEST` written by :func:`_run_yosys` after a run that ended well)."""
    done = workdir / "synth.ys"
    last = "memories.il"
    digest = workdir / DIGEST
    return done.is_file() and done.read_text() == script and (workdir / last).is_file() and \
        digest.is_file() and digest.read_text().strip() == sources_digest() and \
        "End of script" in (workdir / "yosys.log").read_text(errors="replace")[-4000:]


def log_cpu_seconds(log_text: str) -> float:
    """Yosys's own CPU time from its log's 'End of script. ... CPU: user 421.21s system 14.43s'."""
    m = re.findall(r"CPU: user ([\d.]+)s system ([\d.]+)s", log_text)
    return round(float(m[-1][0]) + float(m[-1][1]), 1) if m else 0.0


def _unit_resources(cells: dict[str, int], mapped: bool) -> dict[str, int]:
    dsps, hard = dsp_blocks(cells)
    out = {"ffs": ff_bits(cells), "dsps": dsps, "hard_multipliers": hard}
    if mapped:
        out["luts"] = lut_count(cells)
    return out


def _parsed(parse, path: Path):
    """``parse`` of the report at ``path``, or None when there is none or it is cut short (a timing run that
    failed or was stopped leaves ``ltp`` or ``sta`` output without its result line)."""
    if not path.is_file():
        return None
    try:
        return parse(path.read_text(errors="replace"))
    except ToolchainError:
        return None


def read_reports(config: NPUConfig, workdir: Path, stage: str, seconds: float = 0.0,
                 yosys: str | None = None) -> SynthesisReport:
    """The :class:`SynthesisReport` of a finished run from the report files in ``workdir``."""
    def text(name: str) -> str:
        path = workdir / name
        if not path.is_file():
            raise ToolchainError(f"yosys wrote no {name} in {workdir} (see yosys.log there)")
        return path.read_text(errors="replace")

    latches = parse_count(text("latches.txt")) + sum(parse_count(text(f"latches_{q}.txt")) for q in QUANTIZERS)
    problems, check_loops = parse_check(text("check.txt"))
    loops = max(parse_scc(text("scc.txt")), check_loops)
    memories = parse_memories(text("memories.il"))
    coarse, coarse_units = hierarchy_cells(load_stat_json(text("coarse_stat.json")))
    longest = longest_ns = None
    if stage == "full":
        cells, units = hierarchy_cells(load_stat_json(text("stat.json")))
        luts, alms = lut_count(cells), alm_estimate(cells)
        longest = _parsed(parse_ltp, workdir / "ltp.txt")
        longest_ns = _parsed(parse_sta, workdir / "sta.txt")
    else:
        cells, units, luts, alms = coarse, coarse_units, None, None
    dsps, hard = dsp_blocks(coarse)
    by_source = multipliers_by_source(text("multipliers.txt"))
    soft = soft_multipliers(by_source, coarse_units)
    return SynthesisReport(
        config=config.name, stage=stage, family=FAMILY, yosys=yosys or yosys_version(),
        luts=luts, alms=alms, ffs=ff_bits(cells), dsps=dsps, hard_multipliers=hard, soft_multipliers=soft,
        bram_bits=hierarchy_memory_bits(load_stat_json(text("memory_stat.json"))),
        m20k=sum(m.m20k for m in memories), latches=latches,
        loops=loops, check_problems=problems, longest_path=longest, longest_path_ns=longest_ns,
        seconds=round(seconds, 1),
        cpu_seconds=log_cpu_seconds(text("yosys.log")),
        multipliers_by_source=by_source, memories=memories,
        units={name: {"instances": u["instances"], **_unit_resources(u["cells"], stage == "full")}
               for name, u in sorted(units.items())},
        cells=dict(sorted(cells.items())), parameters=core_parameters(config))


def report_table(reports: list[SynthesisReport]) -> str:
    """A markdown table of synthesis reports (one row per configuration)."""
    head = ("| machine | stage | ALUTs | ALMs (est.) | registers | DSP blocks (hard mult.) | memory bits | "
            "M20K (est.) | latches | loops | longest path: cells / ns | Yosys CPU time |")
    rows = [head, "|" + "---|" * 12]
    for r in reports:
        def n(v):
            return "-" if v is None else f"{v:,}"
        rows.append(f"| `{r.config}` | {r.stage} | {n(r.luts)} | {n(r.alms)} | {r.ffs:,} | {r.dsps:,} "
                    f"({r.hard_multipliers:,}) | {r.bram_bits:,} | {r.m20k:,} | {r.latches} | {r.loops} | "
                    f"{n(r.longest_path)} / {'-' if r.longest_path_ns is None else f'{r.longest_path_ns:.1f}'} | "
                    f"{r.cpu_seconds:,.0f} s |")
    return "\n".join(rows)
