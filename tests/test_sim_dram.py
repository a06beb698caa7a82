"""A DRAM image as an immutable base and writes over it (npu.sim.dram) runs exactly as the same bytes copied.

Runs over one base share its unchanged weights (no compare) and take the
buffer of a memory that is gone (putting back what its image and run
changed); each case checks the whole DRAM after the run against a run on
the same bytes given as a mutable buffer, and the convolution's output
against its reference.
"""
import numpy as np
import pytest

from npu.config import PRESETS
from npu.isa import assemble
from npu.numerics.pack import unpack_floats
from npu.sim import dram as dram_mod
from npu.sim import simulate
from npu.sim.dram import Dram, DramImage
from npu.sim.errors import SimulationError
from npu_toolkit.testing.examples import conv3x3_dram_image, conv3x3_reference, conv3x3_source

TINY = PRESETS["tiny"]
PROG = assemble(conv3x3_source(TINY), TINY)
B = np.zeros(32, np.float32)


def _weights(seed):
    return (np.random.default_rng(seed).standard_normal((32, 3, 3, 64)) / 24).astype(np.float32)


def _input(seed):
    return np.random.default_rng(seed).standard_normal((8, 8, 64)).astype(np.float32)


def _parts(x, w):
    """(image bytes, byte range of the input, byte range of the weights) of the example convolution."""
    image = conv3x3_dram_image(TINY, x, w, B)
    x_end = len(conv3x3_dram_image(TINY, x, w[:0], B)) - 32 * 2          # padded input, then bias, then tiles
    w_start = len(conv3x3_dram_image(TINY, x, w[:0], B))
    return image, (0, x_end), (w_start, len(image))


def _output(res, image_len):
    return unpack_floats(res.dram(image_len, 8 * 8 * 32 * 2), "fp16").reshape(8, 8, 32)


def _as_mutable(image: DramImage) -> bytearray:
    out = bytearray(image.base)
    for addr, data in image.writes:
        out += bytes(max(0, addr + len(data) - len(out)))
        out[addr:addr + len(data)] = data
    return out


def _check(image: DramImage, x, w, image_len, bias=B):
    got = simulate(PROG, TINY, dram=image)
    want = simulate(PROG, TINY, dram=_as_mutable(image))
    assert np.array_equal(got.machine.dram.data, want.machine.dram.data)
    y = _output(got, image_len)
    assert np.array_equal(y.view(np.uint16), conv3x3_reference(TINY, x, w, bias).view(np.uint16))


def test_runs_over_one_base_equal_runs_on_copied_bytes():
    """Inputs written over a base: every run equals a run on the same bytes as a bytearray, the second and third
    on the buffer the one before left (the spare), with what its image and run changed put back: the first
    also writes a bias over the base's, which the later runs must not see."""
    w = _weights(1)
    base, (x0, x1), _ = _parts(np.zeros((8, 8, 64), np.float32), w)
    ones = np.ones(32, np.float32)
    bias = conv3x3_dram_image(TINY, np.zeros((8, 8, 64), np.float32), w[:0], ones)[x1:x1 + 64]
    dram_mod._SPARES.clear()
    for seed in (3, 4, 5):
        x = _input(seed)
        writes = ((x0, conv3x3_dram_image(TINY, x, w, B)[x0:x1]),)
        if seed == 3:
            writes += ((x1, bias),)
        had_spare = bool(dram_mod._SPARES)
        _check(DramImage(base, writes), x, w, len(base), ones if seed == 3 else B)
        assert had_spare == (seed != 3)                   # each run left its buffer to the next


def test_weights_written_over_the_base_are_the_weights_used():
    """Writes over the weight range: the run uses the written weights (the base's are not assumed), and a run
    over the same base without the writes uses the base's again."""
    x, w, w2 = _input(7), _weights(1), _weights(2)
    base, _, (w0, w1) = _parts(x, w)
    other = conv3x3_dram_image(TINY, x, w2, B)[w0:w1]
    for weights, image in [(w, DramImage(base)), (w2, DramImage(base, ((w0, other),))), (w, DramImage(base))]:
        _check(image, x, weights, len(base))


def test_a_held_view_keeps_the_buffer_from_the_next_run():
    """A memory whose bytes an array view still refers to is not taken over by the next run."""
    base, _, _ = _parts(_input(1), _weights(1))
    dram_mod._SPARES.clear()
    memory = Dram(TINY.dram_bytes, DramImage(base), 1 << 16)
    view = memory.span(0, 64)
    del memory
    assert not dram_mod._SPARES
    memory = Dram(TINY.dram_bytes, DramImage(base), 1 << 16)
    del memory
    assert dram_mod._SPARES                                # no view: kept
    assert view.tobytes() == base[:64]


def test_base_region_is_none_where_anything_wrote():
    base = bytes(range(256)) * 16
    memory = Dram(1 << 20, DramImage(base, ((100, b"abc"),)), 1 << 13)
    memory.write_rows(1000, 8, np.ones((2, 4), np.uint8))
    assert memory.base_region(0, 100) is base and memory.base_region(103, 897) is base
    assert memory.base_region(99, 2) is None and memory.base_region(1007, 10) is None
    assert memory.base_region(len(base) - 4, 8) is None                    # past the base
    assert Dram(1 << 20, bytearray(base)).base_region(0, 4) is None        # a mutable image has no base


def test_bad_images_are_refused():
    with pytest.raises(TypeError, match="must be bytes"):
        DramImage(bytearray(8))
    with pytest.raises(SimulationError, match="negative address"):
        DramImage(b"", ((-1, b"x"),))
    with pytest.raises(SimulationError, match="exceeds the configured"):
        Dram(64, DramImage(b"", ((60, b"12345"),)))
