"""Shared test set-up."""
import npu._threads  # noqa: F401  (before numpy loads OpenBLAS: see npu/_threads.py)
