"""A strip-packed first layer whose output is spilled to DRAM: every column phase lands in every stored band.

Each column phase (and each chunk of output vectors) used to sweep the
spilled output on its own and store whole row bands, erasing the columns
the other phases had stored: at 176 x 176 and up, only one output column in
14 survived (one in 3 for a 7x7/2 stem at 448).  Checked element by element
against onnxruntime (wide formats) and bit for bit against the numpy
evaluation of the numerics contract.
"""
import numpy as np
import onnxruntime as ort
import pytest

from compiler.compile import compile_model
from compiler.io import run_on_simulator
from compiler.models.graph import GraphBuilder
from compiler.reference import reference_outputs
from npu.config import PRESETS


def _first_conv(size: int, k: int, stride: int, cout: int = 64):
    g = GraphBuilder("first_conv", 7, input_shape=(1, 3, size, size))
    y = g.relu(g.conv(g.input_name, 3, cout, k, stride, bias=True))
    out = -(-size // stride)
    return g.finish(y, [1, cout, out, out])


def _check(model, cfg, precision, size):
    compiled = compile_model(model, cfg, precision)
    conv = compiled.plan.steps[0]
    assert conv.column_phases > 1 and compiled.plan.storage_of(conv.outputs[0]).dram
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    (y,) = run_on_simulator(compiled.program, {"data": x}, mode="functional")[0].values()
    (ref,) = reference_outputs(compiled, {"data": x}).values()
    assert np.array_equal(y.view(np.uint32), ref.astype(np.float32).view(np.uint32))
    return y, x


@pytest.mark.parametrize("size, k, stride", [(176, 3, 1), (184, 3, 1), (192, 3, 1), (224, 3, 1), (448, 7, 2)])
def test_first_convolution_with_a_spilled_output_is_exact(size, k, stride):
    model = _first_conv(size, k, stride)
    y, x = _check(model, "bw-s10", "wide", size)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"data": x})[0]
    assert np.abs(y - want[0]).max() <= 2e-4 * np.abs(want).max()


def test_chunks_of_output_vectors_land_in_one_spilled_band():
    """More output vectors than one weight set holds: each set reads the stored band back and adds its part."""
    cfg = PRESETS["tiny"].replace(vrf_depth=1536, mrf_tiles=8)
    model = _first_conv(40, 3, 1, cout=128)
    y, x = _check(model, cfg, "wide", 40)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"data": x})[0]
    assert np.abs(y - want[0]).max() <= 2e-4 * np.abs(want).max()
