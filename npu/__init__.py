"""The NPU: configuration presets, numeric formats, ISA and simulator."""
from . import _threads  # noqa: F401  (before numpy: see npu/_threads.py)

__version__ = "0.1.0"
