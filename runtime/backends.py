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

from compiler.io import run_on_simulator, run_warm


@dataclass(frozen=True)
class RunStats:
    """What one run cost on the (simulated) machine."""

    cycles: int
    latency_us: float
    mac_utilisation: float
    warm: bool                 # the weights were already resident in the MRF

    def to_dict(self) -> dict:
        """JSON form."""
        return {"cycles": self.cycles, "latency_us": self.latency_us, "mac_utilisation": self.mac_utilisation,
                "warm": self.warm}


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
        self._resident = None
        self._lock = threading.Lock()

    def run(self, feeds):
        """Simulate one inference (full mode: arithmetic and timing)."""
        with self._lock:
            if self._resident is not None:
                outs, result = run_warm(self.program, feeds, self._resident)
                warm = True
            else:
                outs, result = run_on_simulator(self.program, feeds)
                warm = False
                if self.program.warm() is not None:
                    self._resident = result
        st = result.stats
        return outs, RunStats(st.total_cycles, st.latency_us, st.mac_utilisation, warm)


#: Backend name -> factory(program).
BACKENDS: dict[str, Callable] = {"sim": SimBackend}


def make_backend(name: str, program) -> Backend:
    """The backend called ``name`` for ``program``."""
    if name not in BACKENDS:
        raise ValueError(f"backend {name!r} is not available; choose one of {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name](program)
