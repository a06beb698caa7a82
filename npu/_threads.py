"""Thread-pool settings that must be in place before numpy loads OpenBLAS and Numba starts OpenMP.

After every GEMM, OpenBLAS worker threads busy-wait (about 2^28 cycles by
default) for more work.  The simulator follows each GEMM with parallel Numba
kernels, which then fight the spinning workers for the same cores (measured:
a 56x56x64 convolution simulates 1.7x slower).  A short spin fixes that.

Numba's OpenMP threads likewise spin after each parallel loop by default,
starving the OpenBLAS workers of the next GEMM: a ResNet-50 simulation on
two cores took 0.64 s with spinning and 0.52 s with passive waiting, and
1.4-8 s instead of 0.6 s while another process kept one core busy.  A
short spin (``GOMP_SPINCOUNT=1000``, some 20-30 us) saves the 45 us a
passive thread takes to wake on a 2-core KVM guest, one per fused chain:
an mxfp8 ResNet-50 run took 29-30 ms instead of 33-35 ms on an idle
machine, but ms-fp9 runs took up to 1.5x as long with a busy loop on one
core (docs/architecture.md, "Threads"), so passive waiting stays the
default; set ``GOMP_SPINCOUNT`` where the cores are the simulator's alone.

The settings only take effect if numpy has not been imported (OpenBLAS) and
no Numba parallel loop has run (OpenMP) yet, so the entry points (the
``npu`` package itself, pytest's conftest) import this module first; users
embedding the library can set ``OPENBLAS_THREAD_TIMEOUT=4`` and
``OMP_WAIT_POLICY=PASSIVE`` themselves.
"""
import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
