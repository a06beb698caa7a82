"""Dilated convolutions (ONNX Conv ``dilations``): a tap stride of the window read, bit-exact everywhere.

Dilation d reads tap (ky, kx) ``d*ky`` rows and ``d*kx`` pixels from the window's origin, so codegen only
multiplies the read's tap strides (``s_k0``, ``s_k1``) by it; whatever reasons about a window's size (output
size, row bands, weight-rounding statistics) uses its extent d*(k-1)+1, and a dilated first layer is not packed
by the host.  Each model compiles at ``wide`` on ``tiny`` and
``bw-s10`` and every layer equals the numerics contract's evaluation bit for bit and matches onnxruntime
(``compiler.verify``): a stem, dilation 2, SSD300's conv6 (3x3, dilation 6, pads 6, 512 -> 1024 channels on
19x19 at N = 128; a smaller copy at N = 32) and conv7, grouped, depthwise, strided and per-axis dilations,
asymmetric pads, a dilated first layer, and a dilated layer run in row bands.  The RTL runs a compiled dilated
network bit for bit like the simulator.
"""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compiler.compile import compile_model
from compiler.errors import CompileError, UnsupportedModelError
from compiler.ir import Conv
from compiler.models.graph import GraphBuilder
from compiler.models.photos import load_photos
from compiler.reference import Reference, dilated_windows
from compiler.verify import verify_model
from npu.config import PRESETS
from npu.hostio import windows
from npu.isa.encoding import decode_program

CONFIGS = ["tiny", "bw-s10"]


# --- model builders -------------------------------------------------------------------------------------------

def _dconv(g: GraphBuilder, x: str, cin: int, cout: int, kernel, dilation, pads, stride: int = 1,
           group: int = 1) -> str:
    """A Conv with He-normal weights and a bias; ``kernel`` / ``dilation`` are an int or (h, w); ``pads`` a
    list or an ``auto_pad`` value."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    fan_in = cin // group * kh * kw
    w = g.rng.standard_normal((cout, cin // group, kh, kw)).astype(np.float32) * np.float32(np.sqrt(2 / fan_in))
    b = 0.05 * g.rng.standard_normal(cout)
    name = f"dconv{len(g.nodes)}"
    padding = {"auto_pad": pads} if isinstance(pads, str) else {"pads": list(pads)}
    return g.op("Conv", [x, g.const(f"{name}.w", w), g.const(f"{name}.b", b)], kernel_shape=[kh, kw],
                dilations=[dh, dw], strides=[stride, stride], group=group, **padding)


def _finish(g: GraphBuilder, y: str) -> onnx.ModelProto:
    """The checked model with output ``y``, its shape from ONNX's shape inference."""
    graph = helper.make_graph(g.nodes, g.name, [g.input], [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)],
                              g.inits)
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    dims = onnx.shape_inference.infer_shapes(probe, strict_mode=True).graph.output[0].type.tensor_type.shape.dim
    return g.finish(y, [d.dim_value for d in dims])


def _layers() -> onnx.ModelProto:
    """Stem, 3x3 dilation 2, strided dilation 2 with asymmetric pads, grouped with per-axis dilations (2, 3),
    depthwise dilation 3, 3x1 dilation 4, then a 1x1."""
    g = GraphBuilder("dilated_layers", seed=3, input_shape=(1, 3, 32, 32))
    x = g.relu(g.conv(g.input_name, 3, 16, 3, bias=True))
    x = g.relu(_dconv(g, x, 16, 40, 3, 2, [2] * 4))
    x = g.relu(_dconv(g, x, 40, 48, 3, 2, [1, 2, 3, 0], stride=2))          # 16 x 15
    x = g.relu(_dconv(g, x, 48, 48, 3, (2, 3), [2, 3, 2, 3], group=4))
    x = g.relu(_dconv(g, x, 48, 48, 3, 3, [3] * 4, group=48))                 # depthwise
    x = g.relu(_dconv(g, x, 48, 24, (3, 1), (4, 1), [4, 0, 4, 0]))
    return _finish(g, g.relu(g.conv(x, 24, 32, 1, bias=True)))


def _conv6(hw: int, cin: int, c6: int, c7: int) -> onnx.ModelProto:
    """SSD300's conv6/conv7: a 3x3/2 stem to hw x hw x cin, 3x3 dilation 6 pads 6 to c6, 1x1 to c7 (ReLUs)."""
    g = GraphBuilder(f"conv6_{hw}_{cin}", seed=5, input_shape=(1, 3, 2 * hw, 2 * hw))
    x = g.relu(g.conv(g.input_name, 3, cin, 3, stride=2, bias=True))
    x = g.relu(_dconv(g, x, cin, c6, 3, 6, [6] * 4))
    return _finish(g, g.relu(g.conv(x, c6, c7, 1, bias=True)))


def _dilated_stem() -> onnx.ModelProto:
    """A dilated first layer (left unpacked: the host's packings gather contiguous windows), then a 1x1.

    On tiny the padded 32 x 32 input is over a quarter of the vector memory, so it stays in DRAM and the
    dilated layer reads it in row bands.
    """
    g = GraphBuilder("dilated_stem", seed=7, input_shape=(1, 3, 32, 32))
    x = g.relu(_dconv(g, g.input_name, 3, 16, 3, 2, [2] * 4))
    return _finish(g, g.relu(g.conv(x, 16, 16, 1, bias=True)))


def _banded() -> onnx.ModelProto:
    """On tiny, the 64 x 64 maps do not fit the vector memory together: the dilated layers run in row bands."""
    g = GraphBuilder("dilated_banded", seed=9, input_shape=(1, 3, 64, 64))
    x = g.relu(g.conv(g.input_name, 3, 32, 3, bias=True))
    x = g.relu(_dconv(g, x, 32, 32, 3, 3, [3] * 4))
    x = g.relu(_dconv(g, x, 32, 32, 3, 4, [4, 2, 4, 2], stride=2))
    return _finish(g, x)


def _rtl_net() -> onnx.ModelProto:
    """Small enough for RTL simulation: strided with asymmetric pads, grouped per-axis, and dilation 3."""
    g = GraphBuilder("dilated_rtl", seed=11, input_shape=(1, 3, 12, 12))
    x = g.relu(g.conv(g.input_name, 3, 16, 3, bias=True))
    x = g.relu(_dconv(g, x, 16, 40, 3, 2, [1, 2, 3, 0], stride=2))
    x = g.relu(_dconv(g, x, 40, 40, 3, (2, 3), [2, 3, 2, 3], group=4))
    x = g.relu(_dconv(g, x, 40, 48, 3, 3, [3] * 4))
    return _finish(g, g.relu(g.conv(x, 48, 16, 1, bias=True)))


MODELS = {
    "layers": _layers,
    "conv6_10x10": lambda: _conv6(10, 64, 96, 64),
    "dilated_stem": _dilated_stem,
    "banded": _banded,
}


def _photos(compiled) -> list[np.ndarray]:
    recipe = compiled.program.metadata.preprocess
    return [recipe.array(img) for _, img in load_photos(["chelsea", "coffee"])]


def _verify(model: onnx.ModelProto, config: str):
    compiled = compile_model(model, config, "wide")
    inputs = _photos(compiled)
    assert all(np.std(x) > 0.1 for x in inputs)                              # the inputs carry signal
    report = verify_model(model, config, "wide", inputs, compiled=compiled)
    assert report.ok, report.table()
    return compiled, report


def _dilated(graph) -> list[Conv]:
    return [n for n in graph.nodes() if isinstance(n, Conv) and n.dilation != (1, 1)]


# --- tests ----------------------------------------------------------------------------------------------------

def test_dilated_windows_are_the_windows_of_the_dilated_kernel():
    """Dilation d's windows are those of the (d*(k-1)+1)-sized kernel at every d-th tap."""
    x = np.random.default_rng(0).standard_normal((5, 9, 11)).astype(np.float32)
    kernel, dilation, stride, pads = (3, 2), (2, 4), (2, 1), (1, 3, 2, 0)
    ext = (5, 5)                                  # d*(k-1)+1 rows and columns
    oh, ow = (9 + 3 - ext[0]) // 2 + 1, (11 + 3 - ext[1]) // 1 + 1
    full = windows(x, ext, stride, pads, (oh, ow)).reshape(oh * ow, *ext, 5)
    got = dilated_windows(x, kernel, stride, pads, (oh, ow), dilation)
    assert np.array_equal(got, full[:, ::2, ::4].reshape(oh * ow, 6, 5))
    assert np.array_equal(dilated_windows(x, kernel, stride, pads, (oh, ow)), windows(x, kernel, stride, pads,
                                                                                      (oh, ow)))


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("name", list(MODELS))
def test_the_dilated_model_is_bit_exact_and_matches_onnxruntime_at_every_layer(name, config):
    compiled, report = _verify(MODELS[name](), config)
    assert _dilated(compiled.graph)
    assert len(report.layers) >= 2


def test_ssd300_conv6_and_conv7_at_full_size_on_bw_s10():
    """3x3, dilation 6, pads 6 on 19 x 19, 512 -> 1024 channels, then the 1x1 conv7 (1024 -> 1024)."""
    compiled, report = _verify(_conv6(19, 512, 1024, 1024), "bw-s10")
    (conv6,) = _dilated(compiled.graph)
    assert conv6.dilation == (6, 6) and conv6.pads == (6,) * 4 and conv6.extent == (13, 13)
    assert [c.shape for c in report.layers] == [(512, 19, 19), (1024, 19, 19), (1024, 19, 19)]


def test_the_window_read_steps_by_the_dilation():
    compiled = compile_model(_conv6(10, 64, 96, 64), "tiny", "wide")
    (conv6,) = _dilated(compiled.graph)
    src = compiled.plan.layout(conv6.inputs[0])
    instrs = decode_program(compiled.program.words)
    first, last = next((a, b) for name, a, b in compiled.program.regions if name == conv6.name)
    taps = {(ins.fields["s_k0"], ins.fields["s_k1"]) for ins in instrs[first:last + 1] if ins.mnemonic == "v_rd"}
    assert taps == {(6 * src.row_stride, 6 * src.stride)}


def _banded_steps(compiled) -> list[int]:
    steps = {nd.name: i for i, nd in enumerate(compiled.plan.steps)}
    return [steps[c.name] for c in _dilated(compiled.graph) if steps[c.name] in compiled.plan.band_rows]


def test_a_dilated_first_layer_is_not_packed_and_the_banded_layers_run_in_bands():
    stem = compile_model(_dilated_stem(), "tiny", "wide")
    assert not stem.graph.metadata.get("input_packing")
    (conv,) = _dilated(stem.graph)
    assert conv.column_phases == 1 and conv.weight.shape == (16, 3, 3, 3)
    assert stem.plan.storage_of(conv.inputs[0]).dram and _banded_steps(stem)
    banded = compile_model(_banded(), "tiny", "wide")
    assert len(_banded_steps(banded)) == 2
    assert all(banded.plan.storage_of(c.inputs[0]).dram for c in _dilated(banded.graph))


def test_a_dilated_kernel_wider_than_the_padded_input_is_refused_clearly():
    g = GraphBuilder("too_dilated", seed=1, input_shape=(1, 8, 8, 8))
    y = _dconv(g, g.input_name, 8, 8, 3, 6, [1] * 4)
    model = g.finish(y, (1, 8, 1, 1))
    assert y == "conv1"
    with pytest.raises(UnsupportedModelError, match=r"node 'conv1' \(Conv\): kernel \[3, 3\] with dilations "
                                                    r"\[6, 6\] spans 13x13 input pixels, more than the padded "
                                                    r"input 10x10 \(8x8 with pads \[1, 1, 1, 1\]\)"):
        compile_model(model, "tiny", "wide")


def test_same_auto_padding_with_dilation_is_refused_as_onnxruntime_does():
    g = GraphBuilder("same_dilated", seed=1, input_shape=(1, 8, 8, 8))
    model = _finish(g, _dconv(g, g.input_name, 8, 8, 3, 2, "SAME_UPPER"))
    with pytest.raises(UnsupportedModelError, match=r"auto_pad=SAME_UPPER with dilations \[2, 2\] is not "
                                                    r"supported.*explicit pads"):
        compile_model(model, "tiny", "wide")


def test_a_tap_stride_beyond_the_instruction_set_is_a_clear_compile_error():
    """Dilation 100 over rows of 400 vectors needs s_k0 = 40000 (the stride fields are signed 16 bits)."""
    g = GraphBuilder("far_taps", seed=1, input_shape=(1, 32, 201, 400))
    y = _dconv(g, g.input_name, 32, 32, (3, 1), (100, 1), [0] * 4)
    model = g.finish(y, (1, 32, 1, 400))
    big = PRESETS["tiny"].replace(vrf_depth=1 << 18, dram_bytes=1 << 28)
    with pytest.raises(CompileError, match=r"dilation 100 over input rows of 400 vectors needs a tap stride "
                                           r"s_k0=40000.*largest stride 32767"):
        compile_model(model, big, "wide")


def test_bias_correction_of_a_dilated_conv_cancels_its_mean_output_error_on_the_calibration_data():
    """The calibration rows are the dilated windows: corrected, the mean output over the calibration inputs is
    the float layer's (to the bfp24 activations' rounding), as it could not be from undilated windows."""
    g = GraphBuilder("one_dilated", seed=4, input_shape=(1, 40, 12, 12))
    model = _finish(g, _dconv(g, g.input_name, 40, 24, 3, 3, [3] * 4))
    rng = np.random.default_rng(0)
    cal = [np.abs(rng.standard_normal((1, 40, 12, 12))).astype(np.float32) + 0.5 for _ in range(3)]
    cfg = PRESETS["tiny"].replace(weight_format="mxfp4_e2m1", activation_format="bfp24", mfu_format="fp32")

    def mean_output(compiled) -> np.ndarray:
        ref = Reference(compiled.graph, cfg, exact=True)
        return np.mean([next(iter(ref.run({"data": x}, compiled.program.inputs).values())).reshape(24, -1)
                        .mean(axis=1) for x in cal], axis=0)

    want = mean_output(compile_model(model, cfg, None))
    scale = np.abs(want).max()
    uncorrected = mean_output(compile_model(model, cfg, None, weight_rounding="gptq", calibration=cal))
    assert np.abs(uncorrected - want).max() > 1e-3 * scale
    for method in ("mse", "gptq"):
        got = mean_output(compile_model(model, cfg, None, weight_rounding=method, bias_correction=True,
                                        calibration=cal))
        assert np.abs(got - want).max() < 1e-5 * scale, method


def test_a_gptq_rounded_dilated_network_is_bit_exact():
    model = _layers()
    cal = _photos(compile_model(model, "tiny", "ms-fp9"))
    compiled = compile_model(model, "tiny", "ms-fp9", weight_rounding="gptq", bias_correction=True,
                             calibration=cal[:1])
    meta = compiled.program.metadata.weight_rounding
    assert meta["method"] == "gptq" and meta["calibration_inputs"] == 1
    assert len(_dilated(compiled.graph)) == 5
    report = verify_model(model, "tiny", "ms-fp9", cal[1:], compiled=compiled)
    assert all(c.exact for c in report.layers), report.table()


def test_pooling_still_refuses_dilation():
    g = GraphBuilder("dilated_pool", seed=1, input_shape=(1, 8, 8, 8))
    y = g.op("MaxPool", [g.input_name], kernel_shape=[2, 2], dilations=[2, 2])
    model = g.finish(y, (1, 8, 6, 6))
    with pytest.raises(UnsupportedModelError, match="not supported for pooling; only dilation 1"):
        compile_model(model, "tiny", "wide")


@pytest.mark.rtl
@pytest.mark.parametrize("name", ["rtl_net", "dilated_stem"])
def test_a_compiled_dilated_network_runs_on_the_rtl_like_on_the_simulator(tmp_path, name):
    from runtime import Session

    model = {"rtl_net": _rtl_net, "dilated_stem": _dilated_stem}[name]()
    compiled = compile_model(model, "tiny", "ms-fp9")
    assert _dilated(compiled.graph)
    path = tmp_path / "dilated.npuz"
    compiled.save(path)
    x = _photos(compiled)[0]
    sim = Session(path).score_numpy_array(x)
    rtl = Session(path, backend="rtl").score_numpy_array(x)
    bits = lambda a: np.ascontiguousarray(a, np.float32).view(np.uint32)  # noqa: E731
    assert np.array_equal(bits(rtl.output), bits(sim.output))
    assert rtl.stats.cycles > 0
    report = verify_model(model, "tiny", "ms-fp9", [x], compiled=compiled)
    assert all(c.exact for c in report.layers), report.table()
