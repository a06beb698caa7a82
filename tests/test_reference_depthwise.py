"""The reference's depthwise shortcut gives the bits of the whole (mostly zero) matrix product, in every format."""
import numpy as np
import pytest

from compiler.ir import Conv
from compiler.reference import Reference
from npu.config import PRESETS
from npu.hostio import windows
from npu.numerics.formats import block_formats


class _Shapes:
    def __init__(self, c, h):
        self.shapes = {"x": (c, h, h), "y": (c, h, h)}


@pytest.mark.parametrize("fmt", [f.name for f in block_formats()])
@pytest.mark.parametrize("exact", [False, True])
def test_depthwise_shortcut_matches_the_matrix_product_bit_for_bit(fmt, exact):
    base = PRESETS["tiny"]
    n = base.native_dim
    try:
        cfg = base.replace(weight_format=fmt, activation_format=fmt, mfu_format="fp16")
    except ValueError as exc:        # a format whose block does not divide the native vector
        pytest.skip(str(exc))
    rng = np.random.default_rng(1)
    c, h = 3 * n // 2 + 5, 7          # two output vectors, the second part-filled
    # channel and weight magnitudes spread over many octaves: shared block scales matter
    w = (rng.standard_normal((c, 1, 3, 3)) * np.exp2(rng.integers(-8, 8, (c, 1, 1, 1)))).astype(np.float32)
    w[0, 0, 1, 1] = 0.0
    x = (rng.standard_normal((c, h, h)) * np.exp2(rng.integers(-8, 8, (c, 1, 1)))).astype(np.float32)
    x[:, 0, 0] = 0.0
    nd = Conv("dw", ["x"], ["y"], weight=w, groups=c, pads=(1, 1, 1, 1))
    ref = Reference(_Shapes(c, h), cfg, exact=exact)
    xv = np.zeros((-(-c // n) * n, h, h), np.float32)
    xv[:c] = x
    win = windows(xv, (3, 3), (1, 1), (1, 1, 1, 1), (h, h))
    product = ref.ar.for_layer(nd)
    fast = ref._grouped(nd, win, product)
    dense = ref._grouped(nd, win, product, shortcut=False)
    assert fast.dtype == dense.dtype and fast.shape == dense.shape
    if exact:
        np.testing.assert_allclose(fast, dense, rtol=1e-12, atol=0)
    else:
        assert np.array_equal(fast.view(np.uint32), dense.view(np.uint32)), fmt
        assert np.count_nonzero(fast) > 200                      # the comparison saw real values
