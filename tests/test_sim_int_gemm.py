"""The simulator's integer block-sum GEMM (npu.numerics.int_gemm): exact, and bit for bit in whole programs."""
import numpy as np
import pytest

from compiler.compile import compile_model
from npu.hostio import run_on_simulator
from compiler.models import nets
from compiler.reference import reference_outputs
from npu.numerics import get_format, int_gemm
from npu.numerics.dot import gemm_plan, reduction_block
from npu.sim import clear_program_cache
from npu.sim import machine as machine_mod


@pytest.mark.parametrize("wname, xname, expected", [
    ("ms-fp9", "ms-fp9", True), ("ms-fp8", "ms-fp9", True), ("msfp12", "msfp12", True),
    ("mxint8", "mxint8", False),          # 255 x 127 pairs could saturate the int16 pair sums
    ("mxfp8_e4m3", "ms-fp9", False),      # minifloat elements are not integers
    ("msfp16", "msfp16", False),          # 8-bit magnitudes do not fit int8
])
def test_applicable_formats(wname, xname, expected):
    wfmt, xfmt = get_format(wname), get_format(xname)
    plan = gemm_plan(wfmt, xfmt, reduction_block(wfmt, xfmt, 128))
    assert int_gemm.applicable(wfmt, xfmt, plan) is expected


@pytest.mark.parametrize("mag_w, mag_x", [(7, 7), (3, 7), (15, 15)])
def test_block_sums_are_exact(mag_w, mag_x):
    rng = np.random.default_rng(mag_w * 31 + mag_x)
    nb, m, k, n = 5, 37, 64, 96
    w = rng.integers(-mag_w, mag_w + 1, (nb, k, n))
    a = rng.integers(-mag_x, mag_x + 1, (nb, m, k))
    w[0], a[0] = mag_w, mag_x                         # the largest sums, all of one sign
    a[1] = -mag_x
    gemm = int_gemm.IntBlockGemm(w.astype(np.int8))
    got = gemm((a + int_gemm.ZERO_POINT).astype(np.uint8))
    assert got.dtype == np.int32
    assert np.array_equal(got, np.matmul(a, w))


@pytest.mark.parametrize("name, precision", [("resnet_small", "ms-fp9"), ("vgg_small", "ms-fp8"),
                                             ("densenet_small", "ms-fp9")])
def test_simulator_on_the_integer_gemm_equals_the_reference(monkeypatch, name, precision):
    """Every MVU chain on the integer GEMM (no size threshold): the output equals the numpy reference."""
    built = []

    class Counting(int_gemm.IntBlockGemm):
        def __init__(self, w):
            built.append(w.shape)
            super().__init__(w)

    monkeypatch.setattr(int_gemm, "MIN_MACS", 0)
    monkeypatch.setattr(int_gemm, "IntBlockGemm", Counting)
    monkeypatch.setattr(machine_mod, "fused_plan", lambda *a, **k: None)   # AVX-512 VNNI hosts prefer the fused kernel
    clear_program_cache()
    model = nets.MODELS[name]()
    compiled = compile_model(model, "tiny", precision)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(5).standard_normal(dims).astype(np.float32)
    for _ in range(2):                                # the second run reuses the built GEMMs
        outs, _ = run_on_simulator(compiled.program, {"data": x}, mode="functional")
        (y,) = outs.values()
        (ref,) = reference_outputs(compiled, {"data": x}).values()
        assert np.array_equal(y.reshape(-1).view(np.uint32), ref.reshape(-1).astype(np.float32).view(np.uint32))
    chains = sum(1 for layer in compiled.layers if layer.macs)
    assert len(built) >= chains
    clear_program_cache()
