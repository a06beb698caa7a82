"""cocotb testbench: one MVU reduction block against npu.numerics.dot.block_partial_sums."""
import os

import cocotb
import numpy as np
from cocotb.triggers import Timer

from npu.numerics.dot import block_partial_sums
from npu.numerics.quantize import quantize


@cocotb.test()
async def block_sums_match_the_contract(dut):
    fmt = os.environ["NPU_BLOCK_FORMAT"]
    n = int(os.environ["NPU_BLOCK"])
    rng = np.random.default_rng(3)
    rows = 600
    # magnitudes over many binades (scales near both ends), some zero blocks and some NaN blocks
    mags = 2.0 ** rng.integers(-18, 18, (rows, 1))
    w = (rng.standard_normal((rows, n)) * mags).astype(np.float32)
    x = (rng.standard_normal((rows, n)) * 2.0 ** rng.integers(-18, 18, (rows, 1))).astype(np.float32)
    w[::50] = 0
    x[7::97, 3] = np.nan
    wq, xq = quantize(w, fmt, n), quantize(x, fmt, n)
    bits = wq.fmt.element.bits
    element = wq.fmt.element
    if element.kind == "fp":                      # NaN / infinity element codes, where the format has them
        all_codes = np.arange(1 << bits, dtype=np.uint8)
        special = all_codes[~np.isfinite(all_codes.view(element.dtype).astype(np.float32))]
        if special.size:
            rows_hit = np.arange(11, rows, 53)
            wq.codes[rows_hit, rng.integers(0, n, rows_hit.size)] = rng.choice(special, rows_hit.size)
    bad = []
    for i in range(rows):
        ref = block_partial_sums(
            type(wq)(wq.fmt, wq.block, wq.scales[i:i + 1], wq.codes[i:i + 1]),
            type(xq)(xq.fmt, xq.block, xq.scales[i:i + 1], xq.codes[i:i + 1]), n)[0, 0, 0]
        expected = 0x7FC00000 if np.isnan(ref) else int(np.float32(ref).view(np.uint32))
        dut.w_codes.value = sum(int(c) << (j * bits) for j, c in enumerate(wq.codes[i]))
        dut.x_codes.value = sum(int(c) << (j * bits) for j, c in enumerate(xq.codes[i]))
        dut.w_scale.value = int(wq.scales[i, 0])
        dut.x_scale.value = int(xq.scales[i, 0])
        await Timer(1, unit="ns")
        if int(dut.p.value) != expected:
            bad.append(f"row {i}: 0x{int(dut.p.value):08x}, contract 0x{expected:08x}")
    assert not bad, f"{len(bad)} mismatches, first: " + "; ".join(bad[:5])
