"""Grouped and depthwise convolution, Clip (ReLU6) and Pad: front end, passes, lowering, every layer checked.

Each model runs through ``verify_model``: every tensor the program
materialises equals the numpy evaluation of the numerics contract bit for
bit, and the compiled graph equals onnxruntime's model in binary64.
"""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.compile import compile_model
from compiler.frontend import import_onnx
from compiler.errors import UnsupportedModelError
from compiler.ir import Clip, Conv, Pad
from compiler.models import nets
from compiler.verify import verify_model

RNG = np.random.default_rng(0)


def _model(nodes, inits, in_shape, out_name, out_shape, opset=13, extra_inputs=()):
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("data", TensorProto.FLOAT, in_shape),
                                       *extra_inputs],
                          [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    return m


def _w(*shape, scale=0.3):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _grouped(c: int, groups: int, hw: int = 12, cout: int | None = None):
    """3x3 grouped conv (+bias, ReLU6) then a 1x1 back down: output vectors that span several groups."""
    cout = cout or c
    inits = {"w0": _w(c, 3, 3, 3), "w1": _w(cout, c // groups, 3, 3), "b1": _w(cout), "w2": _w(8, cout, 1, 1),
             "lo": np.float32(0), "hi": np.float32(6)}
    nodes = [helper.make_node("Conv", ["data", "w0"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["a", "w1", "b1"], ["b"], pads=[1, 1, 1, 1], group=groups),
             helper.make_node("Clip", ["b", "lo", "hi"], ["c"]),
             helper.make_node("Conv", ["c", "w2"], ["out"])]
    return _model(nodes, inits, [1, 3, hw, hw], "out", [1, 8, hw, hw])


@pytest.mark.parametrize("preset", ["tiny", "bw-a10"])
@pytest.mark.parametrize("c, groups, cout", [(48, 48, None), (72, 4, None), (96, 2, 256), (200, 200, None),
                                             (40, 8, 80)])
def test_grouped_convolutions_match_every_layer(preset, c, groups, cout):
    model = _grouped(c, groups, cout=cout)
    for precision in ("wide", "mxint8"):
        report = verify_model(model, preset, precision)
        assert report.ok, report.table()
        if precision == "wide":
            assert min(r.cosine for r in report.layers) > 0.99999
    conv = next(nd for nd in report.compiled.graph.topological() if isinstance(nd, Conv) and nd.groups > 1)
    assert conv.groups == groups and conv.clip_max == 6.0 and conv.relu


def test_depthwise_chains_read_only_their_own_input_vector():
    """A depthwise layer of 4 vectors is 4 chains of kh*kw tiles each, not one chain of 4*kh*kw per vector."""
    compiled = compile_model(_grouped(128, 128), "tiny", "ms-fp9")           # N = 32: 4 vectors
    info = next(layer for layer in compiled.layers if layer.name == "Conv_1" or layer.tiles == 4 * 9)
    assert info.tiles == 4 * 9


def test_grouped_mac_count_is_the_models():
    compiled = compile_model(_grouped(72, 4), "tiny", "wide")
    layer = [lay for lay in compiled.layers if lay.kind == "Conv"][1]
    assert layer.macs == 72 * (72 // 4) * 9 * 12 * 12


def _pad_model(pads, consumer: str, relu_first: bool, opset: int = 13):
    inits = {"w0": _w(8, 3, 3, 3), "w1": _w(8, 8, 3, 3)}
    pre = [helper.make_node("Conv", ["data", "w0"], ["a0"], pads=[1, 1, 1, 1])]
    if relu_first:
        pre.append(helper.make_node("Relu", ["a0"], ["a"]))
    else:
        pre.append(helper.make_node("Identity", ["a0"], ["a"]))
    if opset >= 11:
        inits["pads"] = np.array(pads, np.int64)
        pad = helper.make_node("Pad", ["a", "pads"], ["p"], mode="constant")
    else:
        pad = helper.make_node("Pad", ["a"], ["p"], mode="constant", pads=list(pads), value=0.0)
    h = 10 + pads[2] + pads[6]
    w = 10 + pads[3] + pads[7]
    if consumer == "conv":
        tail = helper.make_node("Conv", ["p", "w1"], ["out"], strides=[2, 2])
        out = [1, 8, (h - 3) // 2 + 1, (w - 3) // 2 + 1]
    elif consumer == "max":
        tail = helper.make_node("MaxPool", ["p"], ["out"], kernel_shape=[3, 3], strides=[2, 2])
        out = [1, 8, (h - 3) // 2 + 1, (w - 3) // 2 + 1]
    else:
        tail = helper.make_node("Relu", ["p"], ["out"])
        out = [1, 8, h, w]
    return _model(pre + [pad, tail], inits, [1, 3, 10, 10], "out", out, opset)


@pytest.mark.parametrize("pads, consumer, relu_first, folded", [
    ([0, 0, 0, 0, 0, 0, 1, 1], "conv", False, True),          # TF "SAME" before a stride-2 conv
    ([0, 0, 1, 2, 0, 0, 2, 1], "conv", True, True),
    ([0, 0, 1, 1, 0, 0, 1, 1], "max", True, True),            # over ReLU output: the zero border is exact
    ([0, 0, 1, 1, 0, 0, 1, 1], "max", False, False),          # negative inputs: padded zeros are real values
    ([0, 0, 2, 0, 0, 0, 1, 3], "relu", False, False),         # nothing to fold into: a copy into zeros
])
@pytest.mark.parametrize("opset", [9, 13])
def test_pad_folds_or_is_lowered(pads, consumer, relu_first, folded, opset):
    model = _pad_model(pads, consumer, relu_first, opset)
    graph = import_onnx(model)
    assert any(isinstance(nd, Pad) for nd in graph.nodes()) != folded
    for preset in ("tiny", "bw-s10"):
        report = verify_model(model, preset, "wide")
        assert report.ok, report.table()


@pytest.mark.parametrize("bounds, fused", [((0.0, 6.0), True), ((None, 3.0), True), ((-1.0, 2.0), False),
                                           ((0.5, None), False)])
def test_clip_fuses_into_the_convolution_or_runs_on_its_own(bounds, fused):
    lo, hi = bounds
    inits = {"w": _w(40, 3, 3, 3, scale=1.0)}
    ins = ["c", "", ""]
    if lo is not None:
        inits["lo"], ins[1] = np.float32(lo), "lo"
    if hi is not None:
        inits["hi"], ins[2] = np.float32(hi), "hi"
    nodes = [helper.make_node("Conv", ["data", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ins, ["out"])]
    model = _model(nodes, inits, [1, 3, 9, 9], "out", [1, 40, 9, 9])
    graph = import_onnx(model)
    assert any(isinstance(nd, Clip) for nd in graph.nodes()) != fused
    for precision in ("wide", "ms-fp9"):
        report = verify_model(model, "tiny", precision)
        assert report.ok, report.table()
    out = report.compiled                     # the clip's bounds hold on the NPU's values
    x = np.random.default_rng(1).standard_normal((1, 3, 9, 9)).astype(np.float32) * 3
    from npu.hostio import run_on_simulator
    y = next(iter(run_on_simulator(out.program, {"data": x}, mode="functional")[0].values()))
    assert (lo is None or y.min() >= lo) and (hi is None or y.max() <= hi)


@pytest.mark.parametrize("lo, hi", [(0.5, 0.75), (0.25, None), (-2.0, -0.5), (None, -0.25)])
def test_a_clip_that_moves_zero_keeps_the_spare_lanes_of_its_vectors_zero(lo, hi):
    """Clip(0.5, 0.75) of 4 channels wrote 0.5 into the 28 lanes beyond them; the next convolution's block
    format then saw them, and its bits departed from the numerics contract."""
    inits = {"w": _w(4, 3, 3, 3), "w2": _w(8, 4, 3, 3)}
    ins = ["c", "", ""]
    if lo is not None:
        inits["lo"], ins[1] = np.float32(lo), "lo"
    if hi is not None:
        inits["hi"], ins[2] = np.float32(hi), "hi"
    nodes = [helper.make_node("Conv", ["data", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Clip", ins, ["k"]),
             helper.make_node("Conv", ["k", "w2"], ["out"], pads=[1, 1, 1, 1])]
    model = _model(nodes, inits, [1, 3, 6, 6], "out", [1, 8, 6, 6])
    for precision in ("wide", "ms-fp9"):
        report = verify_model(model, "tiny", precision)
        assert report.ok, report.table()


def test_clip_attributes_of_old_opsets():
    nodes = [helper.make_node("Conv", ["data", "w"], ["c"]), helper.make_node("Clip", ["c"], ["out"], min=0.0,
                                                                              max=6.0)]
    model = _model(nodes, {"w": _w(8, 3, 1, 1)}, [1, 3, 4, 4], "out", [1, 8, 4, 4], opset=7)
    conv = next(nd for nd in import_onnx(model).nodes() if isinstance(nd, Conv))
    assert conv.relu and conv.clip_max == 6.0


@pytest.mark.parametrize("attrs, inits, message", [
    ({"mode": "reflect"}, {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}, "only constant"),
    ({}, {"pads": np.array([0, 1, 0, 0, 0, 1, 0, 0], np.int64)}, "channel"),
    ({}, {"pads": np.array([0, 0, -1, 0, 0, 0, 0, 0], np.int64)}, "negative"),
    ({}, {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "v": np.float32(1.5)}, "only zero padding"),
])
def test_unsupported_padding_is_named(attrs, inits, message):
    ins = ["data", "pads"] + (["v"] if "v" in inits else [])
    h = 4 + int(inits["pads"][2] + inits["pads"][6])
    c = 3 + int(inits["pads"][1] + inits["pads"][5])
    nodes = [helper.make_node("Pad", ins, ["out"], **attrs)]
    model = _model(nodes, inits, [1, 3, 4, 4], "out", [1, c, h, 4 + int(inits["pads"][3] + inits["pads"][7])])
    with pytest.raises(UnsupportedModelError, match=message):
        compile_model(model, "tiny", "wide")


def test_group_that_does_not_divide_is_refused():
    w = _w(6, 2, 3, 3)
    nodes = [helper.make_node("Conv", ["data", "w"], ["out"], group=2)]
    model = onnx.helper.make_model(onnx.helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 5, 5])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 6, 3, 3])], [numpy_helper.from_array(w, "w")]),
        opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(UnsupportedModelError, match="group=2"):
        compile_model(model, "tiny", "wide")


def test_an_unsupported_node_is_reported_once_not_with_its_echoes():
    """An operator of unknown shape leaves every later shape unknown: one cause, then one line for the rest."""
    inits = {}
    nodes = [helper.make_node("Blur", ["data"], ["p"], domain="com.example")]
    prev = "p"
    for i in range(6):
        inits[f"w{i}"] = _w(8, 3 if i == 0 else 8, 3, 3)
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        prev = f"c{i}"
    nodes.append(helper.make_node("Relu", [prev], ["out"]))
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 8, 8])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)])
    with pytest.raises(UnsupportedModelError) as err:
        compile_model(model, "tiny", "wide")
    text = str(err.value)
    assert "com.example.Blur" in text and "outside the default ONNX domain" in text
    assert "is unknown" not in text
    assert "7 later node(s)" in text                           # six convolutions and the ReLU
    assert text.count("\n  - ") == 2


@pytest.mark.parametrize("preset", ["tiny", "bw-a10", "bw-s10"])
def test_small_mobile_network_every_layer(preset):
    model = nets.mobile_small()
    for precision in ("wide", "ms-fp9", "mxfp6"):
        report = verify_model(model, preset, precision)
        assert report.ok, report.table()
    kinds = [nd.kind for nd in report.compiled.graph.topological()]
    assert "Clip" in kinds and "Pad" not in kinds
