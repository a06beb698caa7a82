"""Simulator speed against plain numpy float32 doing the same layer.

Run with::

    .venv/bin/pytest benchmarks/bench_sim.py --benchmark-only -o python_files='bench_*.py'

Cases (bw-s10, ms-fp9 weights and activations, fp16 MFU):

* ``gemv``: a 2048 x 2048 matrix times one vector (16 x 16 tiles), full mode,
  against ``w @ x`` in float32;
* ``conv``: a 3x3 stride-1 'same' convolution 56x56x64 -> 64 channels with
  bias and ReLU (channels zero-padded to one N = 128 vector), full mode,
  against a float32 im2col + GEMM of the same 64-channel layer;
* ``conv_timing``: the same program in timing-only mode.

The convolution is also timed in onnxruntime (float32 Conv + Relu, one
session, same weights) in the same run: ``onnxruntime_f32_best_s`` and
``sim_over_onnxruntime``.

Each simulation is checked once against float32 (cosine similarity) before
timing.  ``extra_info`` records the best simulation time, the best reference
time, ``sim_over_reference`` (how many times slower the simulator is) and
``simulated_cycles_per_s`` (simulated machine cycles per wall-clock second).
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from npu import kernels as sp

ROUNDS = 5
CFG = sp.config("bw-s10")
_CACHE: dict = {}


def gemv_case():
    if "gemv" not in _CACHE:
        n = CFG.native_dim
        k = sp.gemv(CFG, np.random.default_rng(0), batch=1, rows=2048 // n, c=2048 // n)
        x = k.inputs["x"].astype(np.float32).reshape(-1)
        w = k.inputs["w"]
        _CACHE["gemv"] = (k, lambda: w @ x, w @ x)
    return _CACHE["gemv"]


def conv_case():
    if "conv" not in _CACHE:
        k = sp.conv2d(CFG, np.random.default_rng(1), h=56, w=56, cin_v=1, cout_v=1, cin=64, cout=64)
        x = k.inputs["x"][..., :64].astype(np.float32)
        wt = k.inputs["wt"][:64, :, :, :64].reshape(64, -1).T.copy()           # (576, 64)
        bias = k.inputs["b"][:64].astype(np.float32)

        def reference():
            xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
            cols = np.concatenate([xp[ky:ky + 56, kx:kx + 56] for ky in range(3) for kx in range(3)], axis=2)
            return np.maximum(cols.reshape(56 * 56, 576) @ wt + bias, 0)

        _CACHE["conv"] = (k, reference, reference())
        _CACHE["conv_ort"] = _onnxruntime_conv(x, k.inputs["wt"][:64, :, :, :64], bias)
    return _CACHE["conv"]


def _onnxruntime_conv(x_hwc, w_ohwi, bias):
    """A callable running the same 3x3 conv + bias + ReLU in onnxruntime (float32, NCHW)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w = np.ascontiguousarray(np.transpose(w_ohwi.astype(np.float32), (0, 3, 1, 2)))   # OIHW
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 56, 56])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 56, 56])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias.astype(np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")   # no spinning threads between runs
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {"x": np.ascontiguousarray(np.transpose(x_hwc, (2, 0, 1))[None])}
    return lambda: sess.run(None, feed)[0]


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def best_of(fn, rounds=ROUNDS) -> float:
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


CASES = {
    "gemv_2048x2048_full": (gemv_case, "full"),
    "conv3x3_56x56x64_full": (conv_case, "full"),
    "conv3x3_56x56x64_timing": (conv_case, "timing"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sim_speed(benchmark, case):
    make, mode = CASES[case]
    kernel, reference, ref_out = make()
    program = kernel.words
    from npu.sim import simulate

    def run():
        return simulate(program, CFG, dram=kernel.dram, mode=mode)

    result = run()
    if mode == "full":
        y = kernel.output(result).astype(np.float32)
        if case.startswith("conv"):
            y = y[..., :64].reshape(-1, 64)
        assert cosine(y.reshape(ref_out.shape), ref_out) > 0.95          # ms-fp9: about 0.98 on Gaussian data
    cycles = result.stats.total_cycles

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    sim_best = benchmark.stats.stats.min
    ref_best = best_of(reference)
    benchmark.extra_info.update({
        "mode": mode,
        "simulated_cycles": cycles,
        "simulated_us": cycles / CFG.clock_mhz,
        "mac_utilisation": result.stats.mac_utilisation,
        "sim_best_s": sim_best,
        "numpy_f32_best_s": ref_best,
        "sim_over_reference": sim_best / ref_best,
        "simulated_cycles_per_s": cycles / sim_best,
    })
    if case.startswith("conv"):
        ort_best = best_of(_CACHE["conv_ort"])
        benchmark.extra_info.update({"onnxruntime_f32_best_s": ort_best, "sim_over_onnxruntime": sim_best / ort_best})


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    """After the module: one line per case with the ratios (written past the output capture)."""
    yield
    session = getattr(request.config, "_benchmarksession", None)
    rows = [b for b in getattr(session, "benchmarks", []) or [] if "sim_over_reference" in (b.extra_info or {})]
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    if not rows or tr is None:
        return
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    with capman.global_and_fixture_disabled():
        tr.write_line("")
        tr.write_line(f"{'case':40s} {'sim s':>8s} {'numpy f32 s':>12s} {'sim/numpy':>10s} {'sim/ort':>8s} "
                      f"{'cycles':>10s} {'cycles/s':>10s}")
        for b in rows:
            e = b.extra_info
            ort = f"{e['sim_over_onnxruntime']:8.3g}" if "sim_over_onnxruntime" in e else f"{'-':>8s}"
            tr.write_line(f"{b.name:40s} {e['sim_best_s']:8.4f} {e['numpy_f32_best_s']:12.6f} "
                          f"{e['sim_over_reference']:10.3g} {ort} {e['simulated_cycles']:10,d} "
                          f"{e['simulated_cycles_per_s']:10.3g}")
