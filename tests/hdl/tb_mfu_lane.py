"""cocotb testbench of hdl/rtl/npu_mfu_lane_fp16.v against npu.numerics.mfu (the contract's reference code)."""
import cocotb
import numpy as np
from cocotb.triggers import Timer

from npu.isa.table import BY_MNEMONIC
from npu.numerics import mfu

FMT = "fp16"
OPS = {
    "vv_add": lambda x, y: mfu.add(x, y, FMT),
    "vs_add": lambda x, y: mfu.add(x, y, FMT),
    "vv_a_sub_b": lambda x, y: mfu.sub(x, y, FMT),
    "vv_b_sub_a": lambda x, y: mfu.sub(y, x, FMT),
    "vv_mul": lambda x, y: mfu.mul(x, y, FMT),
    "vs_mul": lambda x, y: mfu.mul(x, y, FMT),
    "vv_max": lambda x, y: mfu.maximum(x, y, FMT),
    "vs_max": lambda x, y: mfu.maximum(x, y, FMT),
    "v_relu": lambda x, y: mfu.relu(x, FMT),
}
SPECIAL = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x8400, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF,
                    0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFE00, 0x7BFE, 0x3BFF, 0x3C01, 0x0200, 0x5BFF, 0x5C00,
                    0x1400, 0x0801], np.uint16)


def stimulus(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Random bit patterns, all pairs of special values, and operands near each other (cancellation, ties)."""
    a = rng.integers(0, 1 << 16, n, dtype=np.uint16)
    b = rng.integers(0, 1 << 16, n, dtype=np.uint16)
    near = rng.integers(0, n, n // 4)
    b[near] = (a[near].astype(np.int32) + rng.integers(-3, 4, len(near))).astype(np.uint16) ^ \
        (rng.integers(0, 2, len(near)) << 15).astype(np.uint16)
    sa, sb = np.meshgrid(SPECIAL, SPECIAL)
    return np.concatenate([sa.ravel(), a]), np.concatenate([sb.ravel(), b])


@cocotb.test()
async def every_op_matches_the_contract(dut):
    rng = np.random.default_rng(int(cocotb.RANDOM_SEED) if hasattr(cocotb, "RANDOM_SEED") else 0)
    for mnemonic, ref in OPS.items():
        xs, ys = stimulus(rng, 1500)
        expected = ref(xs.view(np.float16), ys.view(np.float16)).astype(np.float16).view(np.uint16)
        dut.op.value = BY_MNEMONIC[mnemonic].opcode
        bad = []
        for x, y, e in zip(xs, ys, expected):
            dut.x.value = int(x)
            dut.y.value = int(y)
            await Timer(1, unit="ns")
            got = int(dut.z.value)
            if got != int(e):
                bad.append(f"{mnemonic}(0x{int(x):04x}, 0x{int(y):04x}) = 0x{got:04x}, contract 0x{int(e):04x}")
        assert not bad, f"{len(bad)} mismatches, first: " + "; ".join(bad[:5])
