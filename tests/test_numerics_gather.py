"""The MVU input path: gathering vectors and quantising them in one pass equals doing it in two steps."""
import ml_dtypes
import numpy as np
import pytest

from npu.numerics import FormatError, get_format
from npu.numerics.formats import block_formats
from npu.numerics.quantize import gather_quantize_to_integers, gather_quantize_to_values, quantize_to_values


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32], ids=["fp16", "bf16", "fp32"])
@pytest.mark.parametrize("fmt", [f.name for f in block_formats()])
def test_gather_then_quantize_matches_two_steps(dtype, fmt):
    rng = np.random.default_rng(7)
    n = 64
    vec = (rng.standard_normal((50, n)) * np.exp(rng.uniform(-8, 8, (50, 1)))).astype(dtype)
    vec[3, 5] = np.nan                                    # a NaN block and an infinite one
    vec[7, 1] = np.inf
    vec[9] = 0
    # every 16-bit pattern of the format, in vectors of neighbours: subnormals, ties, the largest values
    if np.dtype(dtype).itemsize == 2:
        pats = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(dtype)
        pats = pats[np.isfinite(pats.astype(np.float32))]
        vec = np.concatenate([vec, pats[: pats.size // n * n].reshape(-1, n)])
    addr = rng.integers(0, len(vec), (13 + len(vec), 3))
    addr[13:, 0] = np.arange(len(vec))
    q, s = gather_quantize_to_values(vec, addr, fmt, n)
    rows = vec[addr].reshape(len(addr), 3 * n).astype(np.float32)
    q_ref, s_ref = quantize_to_values(rows, fmt, n)
    assert np.array_equal(s, s_ref)
    assert np.array_equal(q.view(np.uint32), q_ref.view(np.uint32))


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("fmt", ["ms-fp8", "ms-fp9"])
def test_gathered_integers_are_the_values_over_the_quantum(dtype, fmt):
    rng = np.random.default_rng(11)
    n = 64
    vec = (rng.standard_normal((40, n)) * np.exp(rng.uniform(-8, 8, (40, 1)))).astype(dtype)
    vec[3, 5] = np.nan
    addr = rng.integers(0, 40, (17, 3))
    q, s = gather_quantize_to_values(vec, addr, fmt, n)
    ints, s2 = gather_quantize_to_integers(vec, addr, fmt, n, 128)
    assert ints.dtype == np.uint8 and np.array_equal(s, s2)
    quantum = get_format(fmt).element.quantum_min
    assert np.array_equal(ints.astype(np.int64) - 128, (q / quantum).astype(np.int64))
    assert np.array_equal(q / quantum, np.rint(q / quantum))


@pytest.mark.parametrize("fmt, offset", [("mxint8", 100), ("ms-fp9", 250), ("msfp12", 128), ("mxfp8", 128)])
def test_gathered_integers_refuse_formats_that_do_not_fit(fmt, offset):
    vec = np.zeros((4, 32), np.float16)
    with pytest.raises(FormatError, match="uint8"):
        gather_quantize_to_integers(vec, np.zeros((2, 1), np.int64), fmt, 32, offset)
