"""Decoded weight tiles are cached by the content of their DRAM image, never by address alone."""
import numpy as np

from npu.config import PRESETS
from npu_toolkit.testing.examples import conv3x3_dram_image, conv3x3_reference, conv3x3_source
from npu.isa import assemble
from npu.numerics.pack import unpack_floats
from npu.sim import simulate

TINY = PRESETS["tiny"]


def test_same_addresses_different_weights_give_their_own_results():
    prog = assemble(conv3x3_source(TINY), TINY)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8, 64)).astype(np.float32)
    b = np.zeros(32, np.float32)
    for seed in (1, 2, 1):                       # the third run repeats the first image: a cache hit
        w = (np.random.default_rng(seed).standard_normal((32, 3, 3, 64)) / 24).astype(np.float32)
        image = conv3x3_dram_image(TINY, x, w, b)
        res = simulate(prog, TINY, dram=image)
        y = unpack_floats(res.dram(len(image), 8 * 8 * 32 * 2), "fp16").reshape(8, 8, 32)
        assert np.array_equal(y.view(np.uint16), conv3x3_reference(TINY, x, w, b).view(np.uint16))
