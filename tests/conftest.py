"""Shared test set-up."""
import os

import npu._threads  # noqa: F401  (before numpy loads OpenBLAS: see npu/_threads.py)

# The RTL fast path builds its models at -O0 without profile-guided optimisation in the suite (hdl/fast.py):
# the suite's programs are short, and the optimised build costs minutes per machine.  The benchmarks keep
# the optimised profile.
os.environ.setdefault("NPU_RTL_PROFILE", "quick")
