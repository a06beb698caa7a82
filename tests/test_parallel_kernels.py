"""Each parallel Numba kernel of the simulator starts its threads once per call.

Under ``parallel=True`` Numba turns array expressions outside the ``prange``
loop (``np.zeros(24)``, ``a[:] = 0``) into parallel loops of their own: each
is one more start and join of the thread pool, about 45 us on a 2-core
virtual machine, on every call.  One such ``np.zeros`` cost ResNet-50's
mxfp8 run some 2 ms of its 32.  The kernels the simulator ran on small
E4M3 and ms-fp9 programs are compiled again here, uncached (a cached
kernel keeps no diagnostics), and must each hold exactly one parallel loop.
"""
from __future__ import annotations

import importlib
import pkgutil

import numba
import numpy as np
import pytest
from numba.core.registry import CPUDispatcher

import npu
from npu import kernels as sp
from npu.numerics import fused

pytestmark = pytest.mark.slow


def _parallel_kernels() -> dict[str, CPUDispatcher]:
    """Every ``parallel=True`` dispatcher defined in the npu package, by qualified name."""
    found = {}
    for info in pkgutil.walk_packages(npu.__path__, "npu."):
        try:
            module = importlib.import_module(info.name)
        except ImportError:                          # optional parts whose dependencies are absent
            continue
        for name, obj in vars(module).items():
            if isinstance(obj, CPUDispatcher) and obj.targetoptions.get("parallel") \
                    and obj.py_func.__module__ == module.__name__:
                found[f"{module.__name__}.{name}"] = obj
    return found


def _run_small_programs() -> None:
    for weight, act, mfu_format in [("mxfp8_e4m3", "mxfp8_e4m3", "bf16"), ("ms-fp9", "ms-fp9", "fp16"),
                                    ("ms-fp8", "ms-fp9", "fp16")]:
        cfg = sp.config("tiny", weight=weight, act=act, mfu_format=mfu_format)
        rng = np.random.default_rng(7)
        sp.gemv(cfg, rng, batch=40, rows=2, c=2).run()
        sp.conv2d(cfg, rng, h=6, w=5, cin_v=1, cout_v=1, stride=1).run()
        sp.pool(cfg, rng, h=8, w=8).run()
        sp.global_avg_pool(cfg, rng, h=4, w=4).run()


def test_every_parallel_kernel_the_simulator_runs_has_one_parallel_loop():
    _run_small_programs()
    kernels = {name: d for name, d in _parallel_kernels().items() if d.signatures}
    expected = {"npu.numerics.mfu_kernels.run_chain", "npu.numerics.mfu_kernels.gather_reduce"}
    if fused.AVAILABLE:
        expected |= {"npu.numerics.fused.chain_e4m3", "npu.numerics.fused.chain_int8"}
    assert expected <= set(kernels), f"not run: {sorted(expected - set(kernels))}"
    loops = {}
    for name, d in kernels.items():
        options = {k: v for k, v in d.targetoptions.items() if k not in ("nopython", "cache")}
        fresh = numba.njit(d.signatures[0], **options)(d.py_func)
        diagnostics = fresh.overloads[d.signatures[0]].metadata["parfor_diagnostics"]
        loops[name] = len(diagnostics.get_parfors())
    assert len(loops) >= len(expected) and all(count == 1 for count in loops.values()), loops
