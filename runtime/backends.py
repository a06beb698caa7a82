"""Where a compiled program runs: a small interface, with the simulator as the first backend.

A backend takes the model's input tensors (numpy, after preprocessing) and
returns its output tensors with the run's cycle statistics.  The RTL backend
(hdl/) plugs in beside the simulator through :data:`BACKENDS`.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from npu.hostio import run_on_simulator, run_warm


@dataclass(frozen=True)
class RunStats:
    """What one run cost on the (simulated) machine."""

    cycles: int
    latency_us: float
    mac_utilisation: float     # the model's MACs / (cycles x peak MACs per cycle), as the compile report counts
    warm: bool                 # the weights were already resident in the MRF
    host_us: float = 0.0       # wall time of the host segments of a host-fallback program (runtime.segments)

    def to_dict(self) -> dict:
        """JSON form."""
        return {"cycles": self.cycles, "latency_us": self.latency_us, "mac_utilisation": self.mac_utilisation,
                "warm": self.warm, "host_us": self.host_us}


def model_macs(program) -> int:
    """The model's multiply-accumulates per inference (the compile report's per-layer sum)."""
    return program.metadata.macs


def mac_utilisation(macs: int, cycles: int, config) -> float:
    """``macs`` over what the MVU could do in ``cycles`` (0 for an empty run)."""
    return macs / (cycles * config.macs) if cycles else 0.0


class Backend(Protocol):
    """Runs one program on input tensors."""

    name: str

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], RunStats]:
        """Outputs by name (model shapes, float32) and the run's statistics."""


class SimBackend:
    """The cycle-approximate simulator.  Weights stay resident between runs when they fit in the MRF."""

    name = "sim"

    def __init__(self, program):
        self.program = program
        self.macs = model_macs(program)
        self._resident = None
        self._lock = threading.Lock()
        self.keep_resident = True     # False: every run loads its weights (the MRF is shared with other programs)

    def run(self, feeds):
        """Simulate one inference (full mode: arithmetic and timing)."""
        with self._lock:
            if self._resident is not None:
                outs, result = run_warm(self.program, feeds, self._resident)
                warm = True
            else:
                outs, result = run_on_simulator(self.program, feeds)
                warm = False
                if self.keep_resident and self.program.warm() is not None:
                    self._resident = result
        st = result.stats
        util = mac_utilisation(self.macs, st.total_cycles, self.program.config)
        return outs, RunStats(st.total_cycles, st.latency_us, util, warm)


class RtlBackend:
    """The Verilog core under Verilator (hdl/), with DRAM as a C++ AXI RAM model: bit-exact with the simulator.

    The first run on a machine configuration compiles the core (several
    minutes; hdl/fast.py); later runs reuse it.  It simulates some tens of
    thousands of cycles a second, thousands of times slower than the simulator.  Each run starts from a fresh machine, so
    the weights are loaded every time.
    """

    name = "rtl"

    def __init__(self, program):
        from hdl.core import core_parameters

        core_parameters(program.config)        # refuse unsupported machines before any run
        self.program = program
        self.macs = model_macs(program)

    def run(self, feeds):
        """Run one inference on the RTL core."""
        from npu.hostio import dram_image_with_inputs, unpack_output
        from hdl.core import run_program

        cfg = self.program.config
        result = run_program(self.program.words, bytes(dram_image_with_inputs(self.program, feeds)), cfg)
        outs = {d.name: unpack_output(d, result.dram[d.daddr:d.daddr + d.nbytes]) for d in self.program.outputs}
        util = mac_utilisation(self.macs, result.cycles, cfg)
        return outs, RunStats(result.cycles, result.cycles / cfg.clock_mhz, util, False)


#: Backend name -> factory(program).
BACKENDS: dict[str, Callable] = {"sim": SimBackend, "rtl": RtlBackend}


def make_backend(name: str, program) -> Backend:
    """The backend called ``name`` for ``program``."""
    if name not in BACKENDS:
        raise ValueError(f"backend {name!r} is not available; choose one of {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name](program)
