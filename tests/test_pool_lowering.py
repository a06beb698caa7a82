"""Max pooling with MFU operands: separable passes over ReLU outputs, trailing taps as vv_max.

The numpy reference evaluates the compiled graph's pools in window order,
so bit-equality with it and agreement with onnxruntime check that the
two-pass form and the peeled taps give the window's maximum exactly; the
region statistics check the read count the rewrite exists for.
"""
import numpy as np
import onnxruntime as ort
import pytest

from compiler.compile import compile_model
from npu.hostio import run_on_simulator
from compiler.ir import Pool
from compiler.models.graph import GraphBuilder
from compiler.reference import reference_outputs
from npu.config import PRESETS
from npu.sim import simulate

TINY = PRESETS["tiny"]


def _model(kernel: int, stride: int, pad: int, relu: bool):
    g = GraphBuilder(f"pool{kernel}", 5, input_shape=(1, 8, 16, 16))
    x = g.conv(g.input_name, 8, 16, 3, bias=True)
    x = g.relu(x) if relu else x
    x = g.op("MaxPool", [x], kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4)
    x = g.op("Flatten", [x], axis=1)
    side = (16 + 2 * pad - kernel) // stride + 1
    return g.finish(g.dense(x, 16 * side * side, 10), [1, 10])


@pytest.mark.parametrize("kernel, stride, pad, relu, pools", [
    (3, 2, 1, True, [(1, 3), (3, 1)]),        # split: each pass reads one vector, two taps on the MFUs
    (2, 2, 0, True, [(2, 2)]),                # last row (2 taps) on the MFUs
    (3, 2, 0, False, [(3, 3)]),               # may hold -0: kept whole, in window order
])
def test_max_pools_are_exact(kernel, stride, pad, relu, pools):
    model = _model(kernel, stride, pad, relu)
    compiled = compile_model(model, TINY, "ms-fp9")
    assert [n.kernel for n in compiled.graph.topological() if isinstance(n, Pool)] == pools
    x = np.random.default_rng(2).standard_normal((1, 8, 16, 16)).astype(np.float32)
    outs, _ = run_on_simulator(compiled.program, {"data": x})
    (y,) = outs.values()
    (ref,) = reference_outputs(compiled, {"data": x}).values()
    assert np.array_equal(y.reshape(-1).view(np.uint32), ref.reshape(-1).astype(np.float32).view(np.uint32))
    wide, _ = run_on_simulator(compile_model(model, TINY, "wide").program, {"data": x})
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref32 = sess.run(None, {"data": x})[0].reshape(-1)
    assert np.abs(next(iter(wide.values())).reshape(-1) - ref32).max() <= 2e-4 * np.abs(ref32).max()


@pytest.mark.parametrize("kernel, stride, pad, reads_per_output", [(3, 2, 1, 1), (2, 2, 0, 2)])
def test_max_pool_reads_fewer_vectors_per_output(kernel, stride, pad, reads_per_output):
    compiled = compile_model(_model(kernel, stride, pad, True), TINY, "ms-fp9")
    stats = simulate(compiled.program, compiled.config, mode="timing").stats
    pools = [r for r in stats.regions if r.name.startswith("maxpool") and r.ops]
    assert pools and all(r.reads == reads_per_output * r.writes for r in pools)
