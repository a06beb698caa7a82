"""cocotb testbench of the MFU stages (hdl/rtl/npu_mfu_{mul,add,act}.v) against npu.numerics.mfu."""
import os

import cocotb
import numpy as np
from cocotb.triggers import Timer

from npu.isa.table import BY_MNEMONIC, MFU_SLOTS
from npu.numerics import mfu

FMT = os.environ.get("NPU_MFU_FORMAT", "fp16")
OPS = {
    "vv_add": lambda x, y: mfu.add(x, y, FMT),
    "vs_add": lambda x, y: mfu.add(x, y, FMT),
    "vv_a_sub_b": lambda x, y: mfu.sub(x, y, FMT),
    "vv_b_sub_a": lambda x, y: mfu.sub(y, x, FMT),
    "vv_mul": lambda x, y: mfu.mul(x, y, FMT),
    "vs_mul": lambda x, y: mfu.mul(x, y, FMT),
    "vv_max": lambda x, y: mfu.maximum(x, y, FMT),
    "vs_max": lambda x, y: mfu.maximum(x, y, FMT),
    "vv_min": lambda x, y: mfu.minimum(x, y, FMT),
    "vs_min": lambda x, y: mfu.minimum(x, y, FMT),
    "v_relu": lambda x, y: mfu.relu(x, FMT),
    "v_sigm": lambda x, y: mfu.sigmoid(x, FMT),
    "v_tanh": lambda x, y: mfu.tanh(x, FMT),
}
#: zeros, subnormals, the smallest normal, one, the largest finite, infinities, NaNs, per format
SPECIAL = {
    "fp16": [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x8400, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF, 0x7C00,
             0xFC00, 0x7E00, 0x7C01, 0xFE00, 0x7BFE, 0x3BFF, 0x3C01, 0x0200, 0x5BFF, 0x5C00, 0x1400, 0x0801,
             0xC800, 0xC7FF, 0x4800, 0x47FF, 0xC801],                      # -8, 8 and their neighbours
    "bf16": [0x0000, 0x8000, 0x0001, 0x8001, 0x007F, 0x0080, 0x8080, 0x3F80, 0xBF80, 0x7F7F, 0xFF7F, 0x7F80,
             0xFF80, 0x7FC0, 0x7F81, 0xFFC0, 0x3F7F, 0x3F81, 0xC100, 0xC0FF, 0x4100, 0x40FF, 0xC101],
    "fp32": [0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x007FFFFF, 0x00800000, 0x80800000, 0x3F800000,
             0xBF800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFC00000,
             0xC1000000, 0xC0FFFFFF, 0x41000000, 0x40FFFFFF, 0xC1000001, 0x3F7FFFFF, 0x33800000],
}


def stimulus(rng: np.random.Generator, n: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Random bit patterns, all pairs of special values, operands near each other (cancellation, ties)
    and values in the activation tables' range [-8, 8]."""
    uint = np.uint32 if width == 32 else np.uint16
    a = rng.integers(0, 1 << width, n, dtype=np.uint64).astype(uint)
    b = rng.integers(0, 1 << width, n, dtype=np.uint64).astype(uint)
    near = rng.integers(0, n, n // 4)
    b[near] = (a[near].astype(np.int64) + rng.integers(-3, 4, len(near))).astype(uint) ^ \
        (rng.integers(0, 2, len(near)) << (width - 1)).astype(uint)
    table = rng.integers(0, n, n // 3)
    a[table] = mfu.to_format(rng.uniform(-8.5, 8.5, len(table)).astype(np.float32), FMT).view(uint)
    special = np.array(SPECIAL[FMT], uint)
    sa, sb = np.meshgrid(special, special)
    return np.concatenate([sa.ravel(), a]), np.concatenate([sb.ravel(), b])


@cocotb.test()
async def every_op_matches_the_contract(dut):
    fmt = mfu.mfu_format(FMT)
    uint = np.uint32 if fmt.bits == 32 else np.uint16
    digits = fmt.bits // 4
    assert set(OPS) == set(MFU_SLOTS), "every MFU instruction of npu/isa/table.py needs a reference here"
    rng = np.random.default_rng(int(cocotb.RANDOM_SEED) if hasattr(cocotb, "RANDOM_SEED") else 0)
    for mnemonic, ref in OPS.items():
        xs, ys = stimulus(rng, 1500, fmt.bits)
        expected = ref(xs.view(fmt.dtype), ys.view(fmt.dtype)).astype(fmt.dtype).view(uint)
        dut.op.value = BY_MNEMONIC[mnemonic].opcode
        bad = []
        for x, y, e in zip(xs, ys, expected):
            dut.x.value = int(x)
            dut.y.value = int(y)
            await Timer(1, unit="ns")
            got = int(dut.z.value)
            if got != int(e):
                bad.append(f"{mnemonic}(0x{int(x):0{digits}x}, 0x{int(y):0{digits}x}) = 0x{got:0{digits}x}, "
                           f"contract 0x{int(e):0{digits}x}")
        assert not bad, f"{FMT}: {len(bad)} mismatches, first: " + "; ".join(bad[:5])
