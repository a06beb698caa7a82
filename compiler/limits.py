"""The compiler's own size limits: what it refuses, with a message naming the limit, before allocating anything.

These bound the memory and time one compilation may take whatever a model
file declares.  The machine's limits (vector memory, matrix register file,
DRAM, instruction fields) are checked where the compiler maps the model
onto it.
"""
from __future__ import annotations

import math

#: Elements of one tensor (an initializer, a folded constant or an activation): the program file's own
#: limit, 2**28 (1 GiB of float32).  VGG-16's largest weight (fc6) has 102,760,448.
from npu.npuz import MAX_TENSOR_ELEMENTS  # noqa: E402  (re-exported: one home, in the program file)

#: Bytes of one tensor's data in any element type (external data included).
MAX_TENSOR_BYTES = 8 * MAX_TENSOR_ELEMENTS
#: Bytes of all the constants the compiler computes from a model's constants (constant folding): 2 GiB.
MAX_FOLD_BYTES = 1 << 31
#: Multiply-adds of one operator evaluated at compile time (a MatMul or Conv of constants).
MAX_FOLD_MACS = 1 << 30
#: Characters of a message quoted from onnx (its checker, shape inference, the reference evaluator).
MAX_QUOTED = 600


def elements(dims) -> int:
    """The number of elements of ``dims`` (exact, as a Python int: no overflow)."""
    return math.prod(int(d) for d in dims)


def quote(exc: BaseException | str, limit: int = MAX_QUOTED) -> str:
    """A message from a library as one line of at most ``limit`` characters (its whitespace collapsed)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
