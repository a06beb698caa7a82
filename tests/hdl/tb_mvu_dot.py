"""cocotb testbench: a whole MVU reduction (conversion, block sums, binary32 accumulation, fp16 output)
against npu.numerics (quantize, matvec, accumulator_to_format)."""
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

from npu.numerics import mfu
from npu.numerics.dot import matvec
from npu.numerics.quantize import quantize


@cocotb.test()
async def reductions_match_the_contract(dut):
    fmt = os.environ["NPU_BLOCK_FORMAT"]
    n = int(os.environ["NPU_BLOCK"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.valid.value = 0
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    rng = np.random.default_rng(5)
    bits_w = None
    bad = []
    for trial in range(150):
        k = int(rng.integers(1, 10))                             # blocks in the reduction (taps x channel tiles)
        scale = 2.0 ** rng.integers(-12, 12, (1, k)).repeat(n, axis=1)
        w = (rng.standard_normal((1, k * n)) * scale).astype(np.float32)
        x = (rng.standard_normal((1, k * n)) * 2.0 ** rng.integers(-12, 12)).astype(np.float16)
        if trial % 17 == 0:
            x[0, :n] = 0
        wq = quantize(w, fmt, n)
        expected_acc = matvec(wq, quantize(x.astype(np.float32), fmt, n), n)[0, 0]
        expected = int(np.asarray(mfu.accumulator_to_format(np.float32(expected_acc), "fp16")).view(np.uint16))
        bits_w = wq.fmt.element.bits
        for b in range(k):
            dut.valid.value = 1
            dut.first.value = int(b == 0)
            dut.last.value = int(b == k - 1)
            dut.w_codes.value = sum(int(c) << (j * bits_w) for j, c in enumerate(wq.codes[0, b * n:(b + 1) * n]))
            dut.w_scale.value = int(wq.scales[0, b])
            dut.x.value = sum(int(v) << (16 * j) for j, v in enumerate(x[0, b * n:(b + 1) * n].view(np.uint16)))
            await RisingEdge(dut.clk)
        dut.valid.value = 0
        await RisingEdge(dut.clk)
        acc = int(dut.acc.value)
        if acc != int(np.float32(expected_acc).view(np.uint32)) or int(dut.result.value) != expected:
            bad.append(f"trial {trial} (k={k}): acc 0x{acc:08x} vs 0x{int(np.float32(expected_acc).view(np.uint32)):08x},"
                       f" fp16 0x{int(dut.result.value):04x} vs 0x{expected:04x}")
    assert not bad, f"{len(bad)} mismatches, first: " + "; ".join(bad[:3])
