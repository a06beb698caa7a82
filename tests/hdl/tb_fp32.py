"""cocotb testbenches: binary32 addition and multiplication, binary32 -> fp16 rounding against numpy / npu.numerics.mfu."""
import os

import cocotb
import numpy as np
from cocotb.triggers import Timer

from npu.numerics import mfu

CANON32 = 0x7FC00000
SPECIAL32 = np.array([0, 0x80000000, 1, 0x80000001, 0x007FFFFF, 0x00800000, 0x80800000, 0x3F800000, 0xBF800000,
                      0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0x33800000,
                      0x3F800001, 0x4B800000, 0x34000000, 0x477FE000, 0x477FF000, 0x38800000, 0x33000000,
                      0x33000001, 0x387FC000], np.uint32)


def _pairs(rng, n):
    a = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    b = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    near = rng.integers(0, n, n // 3)               # close magnitudes, opposite signs: cancellation
    b[near] = (a[near].astype(np.int64) + rng.integers(-40, 40, len(near))).astype(np.uint32) ^ np.uint32(1 << 31)
    shift = rng.integers(0, n, n // 3)              # exponent differences around the 24..27 binade edge
    b[shift] = (a[shift].astype(np.int64) - (rng.integers(20, 30, len(shift)) << 23)).clip(0).astype(np.uint32)
    sa, sb = np.meshgrid(SPECIAL32, SPECIAL32)
    return np.concatenate([sa.ravel(), a]), np.concatenate([sb.ravel(), b])


@cocotb.test()
async def fp32_add_or_mul_is_ieee_rne(dut):
    if not hasattr(dut, "b"):
        return
    op = os.environ.get("NPU_FP32_OP", "add")
    rng = np.random.default_rng(1)
    a, b = _pairs(rng, 6000)
    if op == "mul":                                 # products near the overflow and subnormal edges
        edge = rng.integers(0, len(a), len(a) // 2)
        ea = ((a[edge] >> 23) & 0xFF).astype(np.int64)
        target = rng.choice([127 + 254, 127], len(edge)) + rng.integers(-3, 4, len(edge))   # e_a + e_b
        eb = np.clip(target - ea, 0, 254).astype(np.uint32)
        b[edge] = (b[edge] & np.uint32(0x807FFFFF)) | (eb << np.uint32(23))
    with np.errstate(all="ignore"):
        fa, fb = a.view(np.float32), b.view(np.float32)
        ref = (fa * fb if op == "mul" else fa + fb).view(np.uint32)
    ref = np.where(np.isnan(ref.view(np.float32)), np.uint32(CANON32), ref)
    bad = []
    for x, y, e in zip(a, b, ref):
        dut.a.value = int(x)
        dut.b.value = int(y)
        await Timer(1, unit="ns")
        if int(dut.z.value) != int(e):
            bad.append(f"0x{int(x):08x} {op} 0x{int(y):08x} = 0x{int(dut.z.value):08x}, IEEE 0x{int(e):08x}")
    assert not bad, f"{len(bad)} mismatches, first: " + "; ".join(bad[:5])


@cocotb.test()
async def fp32_to_fp16_rounds_like_the_contract(dut):
    if hasattr(dut, "b"):
        return
    rng = np.random.default_rng(2)
    a = np.concatenate([SPECIAL32, rng.integers(0, 1 << 32, 4000, dtype=np.uint64).astype(np.uint32),
                        # values in fp16's range, with ties and subnormal results
                        (rng.integers(0x33000000, 0x47800000, 6000, dtype=np.uint64).astype(np.uint32) |
                         (rng.integers(0, 2, 6000, dtype=np.uint64).astype(np.uint32) << 31))])
    ref = mfu.accumulator_to_format(a.view(np.float32), "fp16").astype(np.float16).view(np.uint16)
    bad = []
    for x, e in zip(a, ref):
        dut.a.value = int(x)
        await Timer(1, unit="ns")
        if int(dut.z.value) != int(e):
            bad.append(f"fp16(0x{int(x):08x}) = 0x{int(dut.z.value):04x}, contract 0x{int(e):04x}")
    assert not bad, f"{len(bad)} mismatches, first: " + "; ".join(bad[:5])
