"""Where the simulator's threads run during a full run: the calling thread and its kernel threads apart.

A full run alternates Python (the schedule, address arithmetic) with
Numba parallel loops, a few hundred of them per ResNet-50 inference.  The
kernel threads wait passively between loops (``npu/_threads.py``), and on
virtual machines Linux often wakes a waiting thread on the CPU of the thread
that wakes it: an idle virtual CPU counts as busy to the scheduler.  The
two threads then share one CPU until the load balancer moves one, which
can take longer than the run: measured on a 2-core KVM guest, ResNet-50's
ms-fp9 chains took 37 ms of wall time for 37 ms of CPU time in most runs.

:func:`threads_apart` pins the calling thread to the CPU it is on and each
kernel thread of its Numba pool to the others for the length of a run, and
puts every affinity back afterwards (the same chains: 25 ms wall, 43 ms
CPU).  It does nothing when the process may use one CPU, Numba runs one
thread, the platform has no thread affinity, another thread of the process
is inside a run already (two calling threads pinned to the CPU they share
would stay there), or ``NPU_SIM_PIN=0`` is set.
"""
from __future__ import annotations

import ctypes
import os
import threading
from contextlib import contextmanager

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: Whether runs may pin their threads (``NPU_SIM_PIN=0`` in the environment turns it off).
ENABLED = os.environ.get("NPU_SIM_PIN", "1") != "0" and hasattr(os, "sched_setaffinity")

_lock = threading.Lock()
_active = 0


def _libc_sched_getcpu():
    try:
        fn = ctypes.CDLL(None).sched_getcpu
    except (AttributeError, OSError):
        return None
    fn.restype, fn.argtypes = ctypes.c_int, []
    return fn


#: The CPU the calling thread runs on (libc ``sched_getcpu``), or None where libc has none.
_sched_getcpu = _libc_sched_getcpu()


@intrinsic
def _os_thread_id(typingctx):
    """The calling OS thread's id (libc ``gettid``)."""
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "gettid")
        return builder.sext(builder.call(fn, []), ir.IntType(64))
    return types.int64(), codegen


@numba.njit(cache=True, parallel=True)
def _pool_thread_ids(out):
    """``out[t]`` = the OS thread id of Numba thread ``t`` (one iteration per thread)."""
    for _ in numba.prange(out.size):
        out[numba.get_thread_id()] = _os_thread_id()


def _kernel_threads(caller: int) -> list[int]:
    """OS thread ids of the calling thread's Numba pool, the caller excluded (empty when unknown).

    Asked afresh each run (one parallel loop): the pool's threads may have changed, and the ids of
    threads that ended are reused."""
    ids = np.zeros(numba.get_num_threads(), np.int64)
    _pool_thread_ids(ids)
    if len(set(ids.tolist())) != ids.size or caller not in ids:
        return []
    return [int(t) for t in ids if t != caller]


@contextmanager
def threads_apart():
    """For the ``with`` body: the calling thread on its current CPU, its Numba pool's threads on the others."""
    global _active
    if not ENABLED or _sched_getcpu is None or numba.get_num_threads() < 2:
        yield
        return
    with _lock:
        first = _active == 0
        _active += 1
    saved = []
    try:
        if first:
            caller = threading.get_native_id()
            allowed = os.sched_getaffinity(0)
            cpu = _sched_getcpu()
            try:
                others = _kernel_threads(caller) if len(allowed) > 1 and cpu in allowed else []
            except Exception:                        # pragma: no cover - a libc or Numba without what this needs
                others = []
            if others:
                for tid in [caller] + others:
                    try:
                        saved.append((tid, os.sched_getaffinity(tid)))
                        os.sched_setaffinity(tid, {cpu} if tid == caller else allowed - {cpu})
                    except OSError:                  # a thread that has gone, or a CPU set we may not use
                        pass
        yield
    finally:
        for tid, cpus in saved:
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass
        with _lock:
            _active -= 1
