"""The NPU: configuration presets, numeric formats, ISA and (later) the simulator."""

__version__ = "0.1.0"
