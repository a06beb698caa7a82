"""ONNX front end: exporter-shaped models end to end, the legality check, unreadable files and each graph pass
(on small hand-built graphs), and the imported reference networks."""
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.compile import compile_model
from compiler.frontend import ModelLoadError, import_onnx, load_onnx
from npu.hostio import run_on_simulator
from compiler.errors import CompileError, UnsupportedModelError
from compiler.ir import OnnxOp
from compiler.models import exporters, nets
from compiler.passes import PASSES, fold_affine, fold_constants, fuse_relu, fuse_residual, remove_dead_nodes, \
    remove_identity, run_passes
from runtime.heads import softmax

#: Largest max-abs error relative to the largest reference value allowed at precision "wide" (as test_compiler.py).
TOLERANCE = 2e-4


# --- helpers --------------------------------------------------------------------------------------------------

def _kinds(graph) -> Counter:
    return Counter(n.kind for n in graph.nodes())


def _reference(source, x: np.ndarray) -> np.ndarray:
    """onnxruntime's output for ``x`` (a path lets onnxruntime read external data itself)."""
    model_bytes = str(source) if isinstance(source, (str, Path)) else source.SerializeToString()
    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _npu(source, x: np.ndarray):
    """(simulated output with host post-processing applied, the compiled model) for ``x``."""
    compiled = compile_model(source, "tiny", "wide")
    (desc,) = compiled.program.inputs
    outs, result = run_on_simulator(compiled.program, {desc.name: x})
    assert result.machine is not None
    (name, y), = outs.items()
    if compiled.program.metadata.postprocess.get(name) == "softmax":
        y = softmax(y)
    return y, compiled


def _assert_matches(source, x: np.ndarray):
    """Compile for tiny/wide, simulate, and compare with onnxruntime; returns the compiled model."""
    ref = _reference(source, x)
    y, compiled = _npu(source, x)
    assert y.shape == ref.shape[1:]                         # the NPU drops the batch dimension
    err = np.abs(y.reshape(-1) - ref.reshape(-1)).max()
    assert np.abs(ref).max() > 0 and err <= TOLERANCE * np.abs(ref).max(), (err, np.abs(ref).max())
    return compiled


def _input(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _until(model, last: str):
    """The graph after the registered passes up to and including ``last`` (not the later ones)."""
    names = [name for name, _ in PASSES]
    return run_passes(load_onnx(model), PASSES[:names.index(last) + 1])


RNG = np.random.default_rng(42)


def _w(name, *shape, scale=0.3):
    return numpy_helper.from_array((scale * RNG.standard_normal(shape)).astype(np.float32), name)


def _bn_inits(prefix, c):
    return [numpy_helper.from_array(v.astype(np.float32), f"{prefix}.{p}") for p, v in
            (("g", 1 + 0.2 * RNG.standard_normal(c)), ("b", 0.5 * RNG.standard_normal(c)),
             ("m", 0.5 * RNG.standard_normal(c)), ("v", 0.5 + RNG.random(c)))]


def _bn(x, prefix, out, **attrs):
    return helper.make_node("BatchNormalization", [x] + [f"{prefix}.{p}" for p in "gbmv"], [out], name=out,
                            **attrs)


def _model(nodes, inits, out_shape, in_shape=(1, 4, 8, 8), opset=17, outputs=("y",)):
    """A checked opset-``opset`` model reading "data"; a string in ``in_shape`` / ``out_shape`` is a symbolic dim."""
    graph = helper.make_graph(nodes, "hand_built",
                              [helper.make_tensor_value_info("data", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, list(out_shape)) for o in outputs],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def _node(op, inputs, out, **attrs):
    return helper.make_node(op, inputs, [out], name=out, **attrs)


# --- exporter-shaped models, end to end -----------------------------------------------------------------------

@pytest.mark.parametrize("opset", [17, 18])
def test_torch_style_model_from_its_external_data_matches_onnxruntime(tmp_path, opset):
    path = exporters.torch_style(tmp_path, opset)
    assert path == tmp_path / "model.onnx"
    data = tmp_path / "model.onnx.data"
    # the exporter's shape: every initializer is external, the batch is symbolic, torch's node names
    bare = onnx.load(str(path), load_external_data=False)
    assert bare.opset_import[0].version == opset and bare.producer_name == "pytorch"
    assert all(t.data_location == TensorProto.EXTERNAL for t in bare.graph.initializer)
    assert data.stat().st_size > path.stat().st_size
    for vi in (bare.graph.input[0], bare.graph.output[0]):
        assert vi.type.tensor_type.shape.dim[0].dim_param == "batch_size"
    ops = Counter(n.op_type for n in bare.graph.node)
    assert {"Shape", "Gather", "Unsqueeze", "Concat", "Reshape", "Gemm", "Constant", "Identity"} <= set(ops)
    assert ops["ReduceMean" if opset == 18 else "GlobalAveragePool"] == 1
    assert "/layer1/layer1.0/conv1/Conv" in {n.name for n in bare.graph.node}

    # the weights the front end uses come from the data file
    graph = import_onnx(path)
    inline = {t.name: numpy_helper.to_array(t) for t in exporters.torch_style_model(opset).graph.initializer}
    conv1 = graph.node("/conv1/Conv")
    assert conv1.source == "Conv+BatchNormalization+Relu"
    assert graph.node("/layer1/layer1.0/conv1/Conv").weight.shape == inline["layer1.0.conv1.weight"].shape
    assert np.array_equal(graph.node("/fc/Gemm").bias, inline["fc.bias"])      # through an Identity, no BN
    fc_weight = graph.node("/fc/Gemm").weight
    assert np.array_equal(fc_weight.reshape(inline["fc.weight"].shape), inline["fc.weight"])

    compiled = _assert_matches(path, _input((1, 3, 32, 32)))
    kinds = _kinds(compiled.graph)
    # 6 convs + fc; the 3x3 max pool runs as a 1x3 and a 3x1 pass (compiler/passes/split_pool.py)
    assert kinds == Counter({"Conv": ops["Conv"] + ops["Gemm"], "Pool": 2 * ops["MaxPool"], "GlobalPool": 1})
    assert sum(getattr(n, "residual", False) for n in compiled.graph.nodes()) == ops["Add"] == 2
    assert compiled.program.metadata.postprocess == {}


@pytest.mark.parametrize("opset", [8, 7])
def test_caffe2_style_model_matches_onnxruntime_after_host_softmax(opset):
    model = exporters.caffe2_style()
    assert model.ir_version == 3 and model.opset_import[0].version == 8
    if opset != 8:                                                           # the same ops, as older zoo files
        model.opset_import[0].version = opset
        onnx.checker.check_model(model)
    inits = {t.name for t in model.graph.initializer}
    assert inits <= {vi.name for vi in model.graph.input}                    # initializers listed as inputs
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["Sum"] == 1 and ops["Dropout"] == 1 and ops["MatMul"] == 1 and ops["Softmax"] == 1
    assert all(a.name != "is_test" for n in model.graph.node for a in n.attribute)
    assert all(any(a.name == "spatial" for a in n.attribute)
               for n in model.graph.node if n.op_type == "BatchNormalization")

    graph = import_onnx(model)
    assert graph.inputs == ["data_0"]                                        # not the weights
    assert graph.metadata["postprocess"] == {"softmaxout_1": "softmax"}
    assert _kinds(graph) == Counter({"Conv": 5, "Pool": 3, "Affine": 1})     # 4 convs + MatMul; 1 BN alone
    affine = next(n for n in graph.nodes() if n.kind == "Affine")
    assert affine.relu

    x = _input((1, 3, 32, 32), seed=1)
    y, compiled = _npu(model, x)
    ref = _reference(model, x)
    assert y.shape == ref.shape[1:] and np.isclose(y.sum(), 1.0, atol=1e-5)
    assert np.abs(y - ref[0]).max() <= TOLERANCE * np.abs(ref).max()
    assert compiled.program.metadata.postprocess == {"softmaxout_1": "softmax"}


# --- the legality check and other refusals --------------------------------------------------------------------

def test_every_problem_of_the_unsupported_model_is_reported_at_once():
    model = exporters.unsupported_model()
    ops = {n.name: n.op_type for n in model.graph.node}
    with pytest.raises(UnsupportedModelError) as info:
        import_onnx(model)
    problems = {p.node: p for p in info.value.problems}
    assert set(problems) == set(exporters.UNSUPPORTED_NODES)
    assert len(info.value.problems) == len(exporters.UNSUPPORTED_NODES)       # one per node, no duplicates
    # what would make each one supported
    fixes = {"reflect": "only constant", "dilation": "only dilation 1", "ceil_mode": "ceil_mode=0",
             "LeakyRelu": "supported:", "Sigmoid": "supported:"}
    for name, (op_type, keyword) in exporters.UNSUPPORTED_NODES.items():
        p = problems[name]
        assert p.op_type == op_type == ops[name]
        assert keyword in p.message and fixes[keyword] in p.message, p
        assert f"node {name!r} ({op_type})" in str(info.value)
    assert str(info.value).count("\n  - ") == len(exporters.UNSUPPORTED_NODES)
    # the same error stops compilation, before any lowering
    with pytest.raises(UnsupportedModelError) as again:
        compile_model(model, "tiny", "wide")
    assert {p.node for p in again.value.problems} == set(problems)


def test_a_group_count_that_does_not_divide_the_channels_is_reported_with_the_other_problems():
    nodes = [_node("Conv", ["data", "w1"], "grouped", group=3, pads=[1] * 4),
             _node("Conv", ["grouped", "w2"], "dilated", dilations=[2, 2], pads=[2] * 4),
             _node("LeakyRelu", ["dilated"], "leaky"),
             _node("MaxPool", ["leaky"], "pool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)]
    model = _model(nodes, [_w("w1", 4, 2, 3, 3), _w("w2", 4, 4, 3, 3)], ["N", 4, 4, 4], in_shape=("N", 4, 8, 8),
                   outputs=("pool",))
    with pytest.raises(UnsupportedModelError) as info:
        import_onnx(model)
    problems = {p.node: p for p in info.value.problems}
    assert {"grouped", "dilated", "leaky", "pool"} <= set(problems)
    assert "group=3 does not divide" in problems["grouped"].message
    assert "dilation" in problems["dilated"].message
    assert problems["leaky"].op_type == "LeakyRelu" and "not supported" in problems["leaky"].message
    assert "ceil_mode" in problems["pool"].message
    assert str(info.value).count("\n  - ") == len(info.value.problems)


def test_training_mode_dropout_is_refused():
    ratio = numpy_helper.from_array(np.array(0.5, np.float32), "ratio")
    train = numpy_helper.from_array(np.array(True), "train")
    model = _model([_node("Dropout", ["data", "ratio", "train"], "y")], [ratio, train], ["N", 4, 8, 8],
                   in_shape=("N", 4, 8, 8))
    with pytest.raises(UnsupportedModelError, match="training-mode Dropout"):
        import_onnx(model)


def test_a_conv_reading_and_writing_one_concatenation_buffer_is_a_clear_compile_error():
    nodes = [_node("Relu", ["data"], "d"), _node("Conv", ["d", "w"], "a", pads=[1] * 4),
             _node("Concat", ["d", "a"], "y", axis=1)]
    model = _model(nodes, [_w("w", 8, 4, 3, 3)], ["N", 12, 8, 8], in_shape=("N", 4, 8, 8))
    with pytest.raises(CompileError, match="same concatenation buffer"):
        compile_model(model, "tiny", "wide")


def test_dynamic_spatial_input_is_refused_naming_each_dimension():
    with pytest.raises(UnsupportedModelError) as info:
        import_onnx(exporters.dynamic_size_model())
    msgs = [(p.node, p.op_type, p.message) for p in info.value.problems]
    assert [m[:2] for m in msgs] == [("input", "input"), ("input", "input")]   # the batch dim is accepted
    assert "height" in msgs[0][2] and "width" in msgs[1][2]
    assert all("is dynamic" in m[2] and "fixed input size" in m[2] for m in msgs)


# --- unreadable files and external data -----------------------------------------------------------------------

def test_garbage_and_truncated_files_are_load_errors_naming_the_file(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    for content in (np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
                    b"\x00\x01 definitely not protobuf" * 10):
        garbage.write_bytes(content)
        with pytest.raises(ModelLoadError, match="garbage.onnx"):
            import_onnx(garbage)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty.onnx"):
        import_onnx(empty)
    whole = exporters.caffe2_style().SerializeToString()
    cut = tmp_path / "cut.onnx"
    for n in np.linspace(1, len(whole) - 1, 25).astype(int):                  # every cut is refused cleanly
        cut.write_bytes(whole[:n])
        with pytest.raises(ModelLoadError, match="cut.onnx"):
            import_onnx(cut)


def test_missing_or_short_external_data_is_a_load_error(tmp_path):
    path = exporters.torch_style(tmp_path)
    data = tmp_path / "model.onnx.data"
    content = data.read_bytes()
    data.write_bytes(content[:len(content) // 2])
    with pytest.raises(ModelLoadError, match="external weight data") as info:
        import_onnx(path)
    assert str(path) in str(info.value)
    data.unlink()
    with pytest.raises(ModelLoadError, match="external weight data"):
        import_onnx(path)
    with pytest.raises(ModelLoadError, match="external weight data"):
        compile_model(path, "tiny", "wide")


def test_weights_split_between_the_model_file_and_a_data_file_are_read_from_both(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save_model(exporters.torch_style_model(18), str(path), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=256)
    bare = onnx.load(str(path), load_external_data=False)
    where = Counter(t.data_location for t in bare.graph.initializer)
    assert where[TensorProto.EXTERNAL] and where[TensorProto.DEFAULT]        # small shape vectors stay inline
    assert (tmp_path / "weights.bin").stat().st_size > 0
    _assert_matches(path, _input((1, 3, 32, 32), seed=8))


def test_a_path_that_does_not_exist_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file") as info:
        import_onnx(tmp_path / "nowhere" / "model.onnx")
    assert "nowhere" in str(info.value)
    with pytest.raises(ModelLoadError, match="no such file"):
        import_onnx(tmp_path)                                                 # a directory is not a model


# --- constant folding -----------------------------------------------------------------------------------------

def test_the_flatten_shape_chain_folds_away():
    model = exporters.torch_style_model(18)
    chain = {n.name for n in model.graph.node if n.op_type in ("Shape", "Gather", "Unsqueeze", "Concat",
                                                                "Constant", "Identity")}
    assert len(chain) == 9                                                   # incl. ReduceMean's axes

    loaded = load_onnx(model)
    assert all(isinstance(n, OnnxOp) for n in loaded.nodes())
    folded = fold_constants(loaded)
    names = {n.name for n in folded.nodes()}
    assert not chain & names
    assert folded.constants["/Concat_output_0"].tolist() == [1, -1]          # the batch fixed to 1
    assert folded.constants["/avgpool/Constant_output_0"].tolist() == [2, 3]
    assert np.array_equal(folded.constants["onnx::Conv_91"], folded.constants["layer1.0.conv2.weight"])
    assert "/Reshape" in names                                               # its data input is not constant

    graph = import_onnx(model)
    assert not any(isinstance(n, OnnxOp) for n in graph.nodes())
    assert not any(n.kind in ("Flatten", "Identity") for n in graph.nodes())
    assert "/Reshape" not in {n.name for n in graph.nodes()}
    fc = graph.node("/fc/Gemm")                                              # reads the pooled map directly
    assert fc.inputs == ["/avgpool/ReduceMean_output_0"] and fc.weight.shape == (exporters.NUM_CLASSES, 32, 1, 1)


def test_a_shape_chain_on_initializers_folds_and_the_classifier_reads_the_pooled_map():
    nodes = [_node("Conv", ["data", "w"], "a", pads=[1] * 4), _node("Relu", ["a"], "r"),
             _node("GlobalAveragePool", ["r"], "p"), _node("Shape", ["p"], "s"),
             _node("Gather", ["s", "zero"], "n", axis=0), _node("Unsqueeze", ["n", "axes"], "n1"),
             _node("Concat", ["n1", "minus1"], "shape", axis=0), _node("Reshape", ["p", "shape"], "f"),
             _node("Identity", ["f"], "f2"), _node("Gemm", ["f2", "fc", "fcb"], "y", transB=1)]
    inits = [_w("w", 8, 4, 3, 3), _w("fc", 5, 8), _w("fcb", 5),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "axes"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    graph = import_onnx(_model(nodes, inits, ["N", 5], in_shape=("N", 4, 8, 8)))
    assert _kinds(graph) == Counter({"Conv": 2, "GlobalPool": 1})
    conv = [n for n in graph.nodes() if n.kind == "Conv" and n.relu][0]
    assert conv.source == "Conv+Relu"
    assert graph.node("y").inputs == ["p"]


# --- individual passes on hand-built graphs -------------------------------------------------------------------

def test_batchnorm_after_conv_folds_into_its_weights():
    nodes = [_node("Conv", ["data", "w"], "c", pads=[1] * 4), _bn("c", "bn", "y")]
    model = _model(nodes, [_w("w", 8, 4, 3, 3)] + _bn_inits("bn", 8), [1, 8, 8, 8])
    before = _until(model, "remove_dead_nodes")                              # just before fold_affine
    assert _kinds(before) == Counter({"Conv": 1, "BatchNorm": 1})
    w0 = before.node("c").weight.copy()
    bn = before.node("y")
    after = fold_affine(before)
    assert _kinds(after) == Counter({"Conv": 1})
    conv = after.node("c")
    assert conv.outputs == ["y"] and conv.source == "Conv+BatchNormalization"
    assert np.allclose(conv.weight, w0 * bn.scale[:, None, None, None], rtol=1e-6)
    assert np.allclose(conv.bias, bn.shift, rtol=1e-6)
    compiled = _assert_matches(model, _input((1, 4, 8, 8), seed=2))
    assert _kinds(compiled.graph) == Counter({"Conv": 1})


def test_batchnorm_without_a_conv_becomes_an_affine():
    nodes = [_bn("data", "bn", "a"), _node("Relu", ["a"], "r"), _node("Conv", ["r", "w"], "y", pads=[1] * 4)]
    model = _model(nodes, [_w("w", 8, 4, 3, 3)] + _bn_inits("bn", 4), [1, 8, 8, 8])
    before = _until(model, "remove_dead_nodes")
    assert before.node("a").kind == "BatchNorm"
    after = fold_affine(before)
    affine = after.node("a")
    assert affine.kind == "Affine" and not affine.relu
    g = {p.name: numpy_helper.to_array(p) for p in model.graph.initializer}
    scale = g["bn.g"] / np.sqrt(g["bn.v"] + 1e-5)
    assert np.allclose(affine.scale, scale, rtol=1e-6)
    assert np.allclose(affine.shift, g["bn.b"] - g["bn.m"] * scale, rtol=1e-5, atol=1e-6)
    # the ReLU then fuses into the Affine, and the padded conv reads it unchanged
    graph = import_onnx(model)
    assert _kinds(graph) == Counter({"Affine": 1, "Conv": 1}) and graph.node("a").relu
    _assert_matches(model, _input((1, 4, 8, 8), seed=3))


def test_relu_after_conv_becomes_the_conv_s_relu_unless_the_conv_output_has_other_readers():
    nodes = [_node("Conv", ["data", "w1"], "c1", pads=[1] * 4), _node("Relu", ["c1"], "r1"),
             _node("Conv", ["r1", "w2"], "c2"), _node("Relu", ["c2"], "r2"), _node("Add", ["r2", "c2"], "y")]
    model = _model(nodes, [_w("w1", 8, 4, 3, 3), _w("w2", 8, 8, 1, 1)], [1, 8, 8, 8])
    before = _until(model, "fuse_residual")                                  # just before fuse_relu
    assert _kinds(before)["Relu"] == 2
    after = fuse_relu(before)
    c1 = after.node("c1")
    assert c1.relu and c1.outputs == ["r1"] and c1.source == "Conv+Relu"
    assert "r1" not in {n.name for n in after.nodes()} and after.node("c2").inputs == ["r1"]
    assert not after.node("c2").relu and after.node("r2").kind == "Relu"    # c2 is also read by the Add
    assert _kinds(after) == Counter({"Conv": 2, "Relu": 1, "Add": 1})
    _assert_matches(model, _input((1, 4, 8, 8), seed=4))


def test_residual_add_fuses_into_the_later_conv():
    nodes = [_node("Conv", ["data", "w1"], "c1", pads=[1] * 4), _node("Relu", ["c1"], "r1"),
             _node("Conv", ["r1", "w2"], "c2", pads=[1] * 4),
             _node("Conv", ["data", "w3"], "c3"),                            # a 1x1 projection shortcut
             _node("Add", ["c3", "c2"], "s"), _node("Relu", ["s"], "y")]
    model = _model(nodes, [_w("w1", 8, 4, 3, 3), _w("w2", 8, 8, 3, 3), _w("w3", 8, 4, 1, 1)], [1, 8, 8, 8])
    before = _until(model, "fold_flatten")                                   # just before fuse_residual
    assert _kinds(before)["Add"] == 1
    after = fuse_residual(before)
    assert "Add" not in _kinds(after)
    fused = [n for n in after.nodes() if getattr(n, "residual", False)]
    assert [n.name for n in fused] == ["c3"]                                 # c3 comes after c2 in the model
    assert fused[0].inputs == ["data", "c2"] and fused[0].outputs == ["s"]
    graph = import_onnx(model)
    c3 = graph.node("c3")
    assert c3.residual and c3.relu and c3.outputs == ["y"] and c3.source == "Conv+Add+Relu"
    assert _kinds(graph) == Counter({"Conv": 3})
    _assert_matches(model, _input((1, 4, 8, 8), seed=5))


def test_a_sum_with_an_identity_shortcut_fuses_with_its_relu_into_the_conv_behind_a_dropout():
    nodes = [_node("Conv", ["data", "w1"], "a", pads=[1] * 4), _node("Relu", ["a"], "r"),
             _node("Conv", ["r", "w2"], "b", pads=[1] * 4), _node("Dropout", ["b"], "d"),
             _node("Sum", ["d", "r"], "s"), _node("Relu", ["s"], "y")]
    model = _model(nodes, [_w("w1", 4, 4, 3, 3), _w("w2", 4, 4, 3, 3)], ["N", 4, 8, 8], in_shape=("N", 4, 8, 8))
    graph = import_onnx(model)
    assert _kinds(graph) == Counter({"Conv": 2})
    second = [n for n in graph.nodes() if n.residual][0]
    assert second.relu and second.inputs[1] == "r" and second.outputs == ["y"]


def test_an_add_of_two_non_conv_tensors_stays_an_add():
    nodes = [_node("MaxPool", ["data"], "p", kernel_shape=[2, 2], strides=[2, 2]),
             _node("AveragePool", ["data"], "q", kernel_shape=[2, 2], strides=[2, 2]),
             _node("Add", ["p", "q"], "s"), _node("Relu", ["s"], "y")]
    model = _model(nodes, [], [1, 4, 4, 4])
    graph = import_onnx(model)
    assert _kinds(graph) == Counter({"Pool": 2, "Add": 1}) and graph.node("s").relu
    _assert_matches(model, _input((1, 4, 8, 8), seed=6))


def test_identity_and_dropout_are_removed():
    nodes = [_node("Conv", ["data", "w"], "c"), _node("Identity", ["c"], "i"),
             _node("Dropout", ["i", "ratio"], "d"), _node("Relu", ["d"], "r"), _node("Identity", ["r"], "y")]
    ratio = numpy_helper.from_array(np.array(0.5, np.float32), "ratio")
    model = _model(nodes, [_w("w", 8, 4, 1, 1), ratio], [1, 8, 8, 8])
    before = _until(model, "lift")
    assert _kinds(before)["Identity"] == 3                                   # Dropout is typed as an Identity
    after = remove_identity(before)
    assert _kinds(after) == Counter({"Conv": 1, "Relu": 1})
    assert after.node("r").inputs == ["c"]
    assert after.node("r").outputs == ["y"] and after.outputs == ["y"]       # the output keeps its name
    graph = import_onnx(model)
    assert _kinds(graph) == Counter({"Conv": 1}) and graph.node("c").outputs == ["y"]
    _assert_matches(model, _input((1, 4, 8, 8), seed=7))


def test_dead_nodes_and_their_constants_are_removed():
    nodes = [_node("Conv", ["data", "w"], "c"), _node("Relu", ["c"], "y"),
             _node("Conv", ["data", "w_dead"], "dead1"), _node("Relu", ["dead1"], "dead2"),
             _node("Add", ["dead2", "y"], "dead3")]
    model = _model(nodes, [_w("w", 8, 4, 1, 1), _w("w_dead", 8, 4, 1, 1)], [1, 8, 8, 8])
    before = _until(model, "host_softmax")                                   # just before remove_dead_nodes
    assert {"dead1", "dead2", "dead3"} <= {n.name for n in before.nodes()} and "w_dead" in before.constants
    after = remove_dead_nodes(before)
    assert {n.name for n in after.nodes()} == {"c", "y"}
    assert not any(t.startswith("dead") for t in after.shapes)
    assert "w_dead" not in after.constants                                   # nothing reads it any more
    graph = import_onnx(model)
    assert _kinds(graph) == Counter({"Conv": 1}) and graph.node("c").relu


# --- the reference networks -----------------------------------------------------------------------------------

def _expected_kinds(model: onnx.ModelProto) -> tuple[Counter, int, int]:
    """(IR node kinds, ReLUs to fuse, residual Adds) expected for a conv net, counted on the ONNX graph itself."""
    nodes = model.graph.node
    ops = Counter(n.op_type for n in nodes)
    producer = {o: n for n in nodes for o in n.output}
    readers = Counter(t for n in nodes for t in n.input)
    outputs = {o.name for o in model.graph.output}
    folded_bn = sum(1 for n in nodes if n.op_type == "BatchNormalization" and n.input[0] in producer
                    and producer[n.input[0]].op_type == "Conv" and readers[n.input[0]] == 1)
    kinds = Counter({
        "Conv": ops["Conv"] + ops["Gemm"] + ops["MatMul"],
        "Pool": ops["MaxPool"] + ops["AveragePool"],
        "GlobalPool": ops["GlobalAveragePool"] + ops["GlobalMaxPool"],
        "Concat": ops["Concat"],
        "Affine": ops["BatchNormalization"] - folded_bn,
        "Flatten": sum(1 for n in nodes if n.op_type == "Flatten" and n.output[0] in outputs),
    })
    return +kinds, ops["Relu"], ops["Add"]


@pytest.mark.fullsize
@pytest.mark.parametrize("name, headless", [("resnet50", False), ("vgg16", True), ("densenet121", False)])
def test_reference_networks_import_with_the_expected_nodes(name, headless):
    model = nets.MODELS[name](headless=headless)
    kinds, relus, adds = _expected_kinds(model)
    graph = import_onnx(model)                                               # raises if there is any problem
    assert _kinds(graph) == kinds
    assert sum(getattr(n, "relu", False) for n in graph.nodes()) == relus    # every ReLU fused
    assert sum(getattr(n, "residual", False) for n in graph.nodes()) == adds  # every residual Add fused
    # folding moves weights around but keeps every one of them
    onnx_weights = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    conv_weights = sum(onnx_weights[n.input[1]] for n in model.graph.node if n.op_type in ("Conv", "Gemm"))
    assert sum(n.weight.size for n in graph.nodes() if n.kind == "Conv") == conv_weights
    assert graph.outputs == [model.graph.output[0].name]
    out_dims = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert graph.shapes[graph.outputs[0]] == tuple(out_dims[1:])
    assert graph.shapes[graph.inputs[0]] == (3, 224, 224)
