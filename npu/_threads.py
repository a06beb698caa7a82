"""Thread-pool settings that must be in place before numpy loads OpenBLAS.

After every GEMM, OpenBLAS worker threads busy-wait (about 2^28 cycles by
default) for more work.  The simulator follows each GEMM with parallel Numba
kernels, which then fight the spinning workers for the same cores (measured:
a 56x56x64 convolution simulates 1.7x slower).  A short spin fixes that.  The
setting only takes effect if numpy has not been imported yet, so the entry
points (the ``npu`` command, pytest's conftest) import this module first;
users embedding the library can set ``OPENBLAS_THREAD_TIMEOUT=4`` themselves.
"""
import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
