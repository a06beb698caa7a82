"""The MVU input path: gathering vectors and quantising them in one pass equals doing it in two steps."""
import ml_dtypes
import numpy as np
import pytest

from npu.numerics.formats import block_formats
from npu.numerics.quantize import gather_quantize_to_values, quantize_to_values


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
