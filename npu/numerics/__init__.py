"""Numeric formats of the NPU and the bit-exact arithmetic contract (docs/numerics.md)."""
from .formats import BlockFormat, FloatFormat, FormatError, IntChannelFormat, FORMATS, block_formats, get_format
from .quantize import BlockTensor, dequantize, fake_quantize, quantize

__all__ = [
    "BlockFormat", "FloatFormat", "FormatError", "IntChannelFormat", "FORMATS", "block_formats",
    "get_format", "BlockTensor", "dequantize", "fake_quantize", "quantize",
]
