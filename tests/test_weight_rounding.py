"""Post-training weight rounding (compiler/weight_rounding.py, compiler/passes/round_weights.py).

Rounded weights must be values the machine's own quantisation reproduces
(max rule, RNE) in the MVU's block geometry of every kind of convolution, so
programs stay bit-exact between the simulator and the numpy reference;
``mse`` must never lose to nearest per block, ``gptq`` must lower a layer's
output error on correlated inputs, and bias correction must cancel the mean
output error on the calibration data.
"""
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler import weight_rounding as wr
from compiler.compile import compile_model
from compiler.errors import CompileError
from compiler.ir import Conv
from compiler.lower.codegen import _chunk_weight
from compiler.lower.weights import conv_matrix
from compiler.models import nets
from compiler.models.graph import GraphBuilder
from compiler.passes.pack_input import strip_weights
from compiler.passes.round_weights import _machine_rows, _Stats, round_conv
from compiler.reference import Reference, reference_outputs
from npu.config import PRESETS
from npu.hostio import run_on_simulator
from npu.npuz import ProgramMetadata, SchemaError, load_program
from npu.numerics.formats import block_formats, get_format
from npu.numerics.quantize import fake_quantize
from npu_toolkit.cli import main

TINY = PRESETS["tiny"]                    # N = 32: MX blocks of 32 are one vector
BLOCK_FORMATS = [f.name for f in block_formats()]


def _machine_matrices(nd: Conv, n: int):
    """Every weight matrix the MVU multiplies for ``nd``: one chunk over all vectors per phase, as codegen
    builds them (blocks are aligned to whole vectors, so every chunking has these blocks)."""
    in_vectors = -(-nd.in_channels // n)
    out_vectors = -(-nd.out_channels // n)
    for p in range(nd.column_phases):
        w = _chunk_weight(nd, p, 0, 0, out_vectors * n, 0, in_vectors * n)
        yield conv_matrix(w, in_vectors, out_vectors, n)


def _conv(kind: str, rng) -> Conv:
    if kind == "plain":
        w = rng.standard_normal((40, 70, 3, 3)) * np.exp(rng.standard_normal((40, 1, 1, 1)))
        return Conv("c", ["x"], ["y"], weight=w.astype(np.float32))
    if kind == "grouped":                 # 4 groups of 18 channels: blocks straddle groups
        return Conv("c", ["x"], ["y"], weight=rng.standard_normal((72, 18, 3, 3)).astype(np.float32), groups=4)
    if kind == "depthwise":
        return Conv("c", ["x"], ["y"], weight=rng.standard_normal((48, 1, 3, 3)).astype(np.float32), groups=48)
    assert kind == "strip"                # a 7x7/2 stem over 6-column strips: 3 phases, structural zeros
    w, _taps = strip_weights(rng.standard_normal((16, 3, 7, 7)).astype(np.float32), 2, 6)
    return Conv("c", ["x"], ["y"], weight=w, column_phases=3)


def _synthetic_stats(nd: Conv, rng) -> _Stats:
    """H and the mean row of correlated random inputs for ``nd``'s block-view columns."""
    stats = _Stats(nd, TINY, want_h=True)
    cols = -(-nd.in_channels // 32) * 32 * nd.kernel[0] * nd.kernel[1]
    mix = rng.standard_normal((cols, cols)) / np.sqrt(cols) + np.eye(cols)
    stats.add(np.abs(rng.standard_normal((256, cols))) @ mix)
    return stats


@pytest.mark.parametrize("kind", ["plain", "grouped", "depthwise", "strip"])
@pytest.mark.parametrize("fmt", BLOCK_FORMATS)
def test_rounded_weights_requantise_to_themselves(fmt, kind):
    cfg = TINY.replace(weight_format=fmt, activation_format=fmt)
    for method in wr.METHODS:
        rng = np.random.default_rng(5)
        nd = _conv(kind, rng)
        before = nd.weight.copy()
        stats = _synthetic_stats(nd, rng) if method == "gptq" else None
        round_conv(nd, cfg, method, stats)
        assert nd.weight.dtype == np.float32 and nd.weight.shape == before.shape
        if kind == "strip":               # the phases' structural zeros stay zero
            assert not nd.weight[before == 0].any()
        for m in _machine_matrices(nd, cfg.native_dim):
            assert np.array_equal(fake_quantize(m, fmt, cfg.native_dim), m), (method, kind)
        if method == "nearest":           # exactly the machine's own rounding
            machine = fake_quantize(wr.block_view(before, nd.groups, nd.column_phases, 32), fmt, 32)
            assert np.array_equal(nd.weight, wr.from_block_view(machine, before.shape, nd.groups, nd.column_phases))


@pytest.mark.parametrize("kind", ["plain", "grouped", "depthwise", "strip"])
def test_block_view_round_trips_and_matches_the_machines_matrix(kind):
    nd = _conv(kind, np.random.default_rng(2))
    m = wr.block_view(nd.weight, nd.groups, nd.column_phases, 32)
    assert np.array_equal(wr.from_block_view(m, nd.weight.shape, nd.groups, nd.column_phases), nd.weight)
    mats = list(_machine_matrices(nd, 32))
    rows = nd.out_channels
    for p, mat in enumerate(mats):
        assert np.array_equal(mat[:rows], m[p * rows:(p + 1) * rows])


def test_a_block_the_max_rule_would_rescale_is_repaired():
    """e4m3: 240 * 2**s is on the grid of scale s, but its max rule picks s - 1 where 480 saturates to 448."""
    fmt = get_format("mxfp8_e4m3")
    m = np.zeros((1, 32), np.float32)
    m[0, 0], m[0, 1] = 240.0, 1.0
    assert not wr.is_fixed_point(m.reshape(1, 1, 32).astype(np.float64), fmt).all()
    fixed, repaired = wr.make_representable(m, fmt, 32)
    assert repaired == 1
    assert np.array_equal(fake_quantize(fixed, fmt, 32), fixed)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(BLOCK_FORMATS), seed=st.integers(0, 2**32 - 1),
       spread=st.floats(0.0, 4.0), log_scale=st.floats(-20.0, 20.0))
def test_mse_never_has_larger_block_error_than_nearest(fmt, seed, spread, log_scale):
    rng = np.random.default_rng(seed)
    m = (rng.standard_normal((4, 64)) * np.exp(spread * rng.standard_normal((4, 64))) * 2.0 ** log_scale)
    m = m.astype(np.float32)
    m[rng.random(m.shape) < 0.2] = 0.0
    f = get_format(fmt)
    b = f.block_for(32)
    near, _ = wr.nearest_round(m, f, 32)
    assert np.array_equal(near, fake_quantize(m, f, 32))            # the module's model of the machine's rounding
    q, _ = wr.mse_round(m, f, 32)
    err = lambda v: ((v - m.astype(np.float64)) ** 2).reshape(4, -1, b).sum(-1)     # noqa: E731
    assert (err(q) <= err(near)).all()
    fixed, _ = wr.make_representable(q, f, 32)
    assert np.array_equal(fixed, q)                                  # mse keeps only fixed points


@pytest.mark.parametrize("fmt", ["mxfp4_e2m1", "ms-fp9", "mxint8"])
def test_gptq_lowers_the_output_error_on_correlated_inputs(fmt):
    rng = np.random.default_rng(3)
    k, rows = 128, 24
    x = rng.standard_normal((2048, 16)) @ rng.standard_normal((16, k)) + 0.1 * rng.standard_normal((2048, k))
    w = rng.standard_normal((rows, k)).astype(np.float32)
    near, _ = wr.nearest_round(w, fmt, 32)
    mse, shared = wr.mse_round(w, fmt, 32)
    block = get_format(fmt).block_for(32)
    h = x.T @ x
    q = wr.gptq_round(w[None], h[None], np.repeat(shared, block, axis=-1)[None], fmt)[0]
    q, _ = wr.make_representable(q, fmt, 32)
    assert np.array_equal(fake_quantize(q, fmt, 32), q)
    e_near, e_mse, e_gptq = (wr.layer_output_error(x, w, v) for v in (near, mse, q))
    assert e_gptq < 0.8 * min(e_near, e_mse), (e_near, e_mse, e_gptq)


def _one_conv_model():
    g = GraphBuilder("oneconv", 4, input_shape=(1, 40, 8, 8))
    return g.finish(g.conv(g.input_name, 40, 24, 3, bias=True), [1, 24, 8, 8])


@pytest.mark.parametrize("method", ["nearest", "mse", "gptq"])
def test_bias_correction_cancels_the_mean_output_error_on_the_calibration_data(method):
    model = _one_conv_model()
    rng = np.random.default_rng(0)
    cal = [np.abs(rng.standard_normal((1, 40, 8, 8))).astype(np.float32) + 0.5 for _ in range(3)]
    cfg = TINY.replace(weight_format="mxfp4_e2m1", activation_format="mxfp4_e2m1")
    plain = compile_model(model, cfg, None)
    fixed = compile_model(model, cfg, None, weight_rounding=method, bias_correction=True, calibration=cal)
    raw = compile_model(model, cfg, None, weight_rounding=method, calibration=cal if method == "gptq" else None)
    (nd0,) = [n for n in plain.graph.nodes() if isinstance(n, Conv)]
    (nd1,) = [n for n in fixed.graph.nodes() if isinstance(n, Conv)]
    (nd2,) = [n for n in raw.graph.nodes() if isinstance(n, Conv)]
    ref = Reference(plain.graph, cfg)
    rows = np.concatenate([_machine_rows(ref, nd0, ref.inputs({"data": x}, plain.program.inputs)["data"], cfg)
                           for x in cal])
    out = lambda nd, w: rows @ w.T + nd.bias      # noqa: E731
    view = lambda nd: wr.block_view(nd.weight, 1, 1, 32).astype(np.float64)   # noqa: E731
    want = out(nd0, view(nd0)).mean(axis=0)
    if method != "nearest":
        assert not np.array_equal(view(nd1), view(nd0))
    machine = lambda nd: fake_quantize(view(nd), cfg.weight_format, 32)     # noqa: E731  (what the MVU uses)
    bias_err = np.abs(out(nd1, machine(nd1)).mean(axis=0) - want).max()
    no_corr_err = np.abs(out(nd2, machine(nd2)).mean(axis=0) - want).max()
    assert bias_err < 1e-5 * np.abs(want).max() + 1e-6
    assert no_corr_err > 100 * bias_err


def _bit_exact(compiled, x) -> bool:
    outs, _ = run_on_simulator(compiled.program, {"data": x})
    (y,) = outs.values()
    (ref,) = reference_outputs(compiled, {"data": x}).values()
    return np.array_equal(y.reshape(-1).view(np.uint32), ref.reshape(-1).astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("precision", ["ms-fp9", "mxfp8"])
@pytest.mark.parametrize("method, bias_correction", [("nearest", True), ("mse", False), ("gptq", True)])
def test_rounded_programs_are_bit_exact_between_simulator_and_reference(precision, method, bias_correction):
    """mobile_small: im2col-packed stem, depthwise and grouped convolutions, residuals, a classifier."""
    model = nets.mobile_small()
    rng = np.random.default_rng(1)
    cal = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(2)]
    compiled = compile_model(model, TINY, precision, weight_rounding=method, bias_correction=bias_correction,
                             calibration=cal)
    meta = compiled.program.metadata.weight_rounding
    assert meta["method"] == method and meta["bias_correction"] == bias_correction
    assert _bit_exact(compiled, rng.standard_normal((1, 3, 32, 32)).astype(np.float32))


def test_strip_packed_stem_with_gptq_is_bit_exact():
    g = GraphBuilder("stem", 3, input_shape=(1, 3, 32, 32))
    x = g.conv_bn(g.input_name, 3, 16, 7, stride=2)
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    model = g.finish(g.dense(x, 16, 10), [1, 10])
    cfg = TINY.replace(native_dim=128, vrf_depth=8192)
    rng = np.random.default_rng(2)
    cal = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(2)]
    compiled = compile_model(model, cfg, "mxfp6", weight_rounding="gptq", bias_correction=True, calibration=cal)
    assert compiled.program.inputs[0].params.packing == "strip"
    assert _bit_exact(compiled, rng.standard_normal((1, 3, 32, 32)).astype(np.float32))


def test_compile_model_rejects_unknown_methods_and_missing_calibration():
    model = _one_conv_model()
    with pytest.raises(CompileError, match="unknown"):
        compile_model(model, TINY, "ms-fp9", weight_rounding="adaround")
    with pytest.raises(CompileError, match="calibration"):
        compile_model(model, TINY, "ms-fp9", weight_rounding="gptq")
    with pytest.raises(CompileError, match="calibration"):
        compile_model(model, TINY, "ms-fp9", bias_correction=True)
    with pytest.raises(CompileError, match="calibration input 0"):
        compile_model(model, TINY, "ms-fp9", weight_rounding="gptq", calibration=[np.zeros((3, 5))])


def test_metadata_schema_checks_weight_rounding():
    ok = ProgramMetadata.from_dict({"weight_rounding": {"method": "gptq", "bias_correction": True,
                                                        "calibration_inputs": 4, "repaired_blocks": 0}})
    assert ok.weight_rounding["method"] == "gptq"
    assert ProgramMetadata.from_dict({}).weight_rounding == {}
    for bad in ({"method": "adaround"}, {"bias_correction": "yes"}, {"calibration_inputs": -1}, {"seed": 1}):
        with pytest.raises(SchemaError):
            ProgramMetadata.from_dict({"weight_rounding": bad})


def _png(path, rng, side=40):
    from PIL import Image

    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path)


def test_cli_compile_with_calibration_images(tmp_path, capsys):
    model = tmp_path / "mobile.onnx"
    model.write_bytes(nets.mobile_small().SerializeToString())
    cal = tmp_path / "cal"
    cal.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        _png(cal / f"img{i}.png", rng)
    (cal / "notes.txt").write_text("not an image: ignored")
    out = tmp_path / "m.npuz"
    assert main(["compile", str(model), "--config", "tiny", "--precision", "mxfp4", "--weight-rounding", "gptq",
                 "--bias-correction", "--calibration", str(cal), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "weights rounded: gptq, bias correction (2 calibration inputs)" in text
    meta = load_program(out).metadata.weight_rounding
    assert meta["method"] == "gptq" and meta["bias_correction"] is True and meta["calibration_inputs"] == 2


def test_cli_calibration_errors(tmp_path, capsys):
    model = tmp_path / "mobile.onnx"
    model.write_bytes(nets.mobile_small().SerializeToString())
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"not a png")
    cases = [(["--weight-rounding", "gptq"], "needs --calibration"),
             (["--bias-correction"], "needs --calibration"),
             (["--weight-rounding", "gptq", "--calibration", str(tmp_path / "nowhere")], "no such directory"),
             (["--weight-rounding", "gptq", "--calibration", str(empty)], "no images"),
             (["--weight-rounding", "gptq", "--calibration", str(broken)], "x.png")]
    for extra, message in cases:
        assert main(["compile", str(model), "--config", "tiny", "-o", str(tmp_path / "o.npuz"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
