"""cocotb testbench: a block in the MFU format -> sign-magnitude block format, against npu.numerics.quantize."""
import os

import cocotb
import numpy as np
from cocotb.triggers import Timer

from npu.numerics.mfu import mfu_format
from npu.numerics.quantize import quantize


@cocotb.test()
async def conversion_matches_the_contract(dut):
    fmt = os.environ["NPU_BLOCK_FORMAT"]
    n = int(os.environ["NPU_BLOCK"])
    element = mfu_format(os.environ.get("NPU_INPUT_FORMAT", "fp16"))      # the MFU format of the input
    width = element.bits
    uint = np.uint32 if width == 32 else np.uint16
    rng = np.random.default_rng(4)
    rows = 800
    span = (-26, 17) if element.name == "fp16" else (-140, 120)
    with np.errstate(over="ignore"):
        x = (rng.standard_normal((rows, n)) * 2.0 ** rng.integers(*span, (rows, 1))).astype(element.dtype)
    x[::40] = 0                                                       # zero blocks
    x[5::61, 2] = np.inf                                              # Inf / NaN blocks
    x[9::67, 0] = np.nan
    x[13::31] = rng.integers(0, 1 << width, (len(x[13::31]), n), dtype=np.uint64).astype(uint).view(element.dtype)
    ties = rng.integers(0, rows, rows // 4)                           # exact halves of the element grid
    x[ties, 1] = (np.float32(0.625) * x[ties, 0].astype(np.float32)).astype(element.dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        q = quantize(x.astype(np.float32), fmt, n)
    bits = q.fmt.element.bits
    bad = []
    for i in range(rows):
        dut.x.value = sum(int(v) << (width * j) for j, v in enumerate(x[i].view(uint)))
        await Timer(1, unit="ns")
        codes = int(dut.codes.value)
        got = [(codes >> (j * bits)) & ((1 << bits) - 1) for j in range(n)]
        if int(dut.scale.value) != int(q.scales[i, 0]) or got != [int(c) for c in q.codes[i]]:
            bad.append(f"row {i}: scale {int(dut.scale.value)} vs {int(q.scales[i, 0])}, codes {got[:6]} vs "
                       f"{[int(c) for c in q.codes[i][:6]]}")
    assert not bad, f"{len(bad)} mismatches, first: " + "; ".join(bad[:3])
