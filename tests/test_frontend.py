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
             _node("MaxPool", ["grouped"], "dilated", kernel_shape=[3, 3], dilations=[2, 2], pads=[2] * 4),
             _node("LeakyRelu", ["dilated"], "leaky"),
             _node("AveragePool", ["leaky"], "pool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)]
    model = _model(nodes, [_w("w1", 4, 2, 3, 3)], ["N", 4, 4, 4], in_shape=("N", 4, 8, 8),
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


# --- malformed models: one user error naming what and where, never a traceback (tests/test_fuzz_onnx.py) --------

def _unchecked(nodes, inits, in_shape=(1, 4, 8, 8), out_rank=4, opset=13, name="hand_built"):
    """A model as a broken exporter might write it: not passed through onnx's checker."""
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("data", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * out_rank)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def test_an_empty_file_or_one_without_a_graph_says_so(tmp_path):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"empty\.onnx: the file is empty \(0 bytes\), not an ONNX model"):
        compile_model(empty, "tiny", "wide")
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(b"\x08\x08")                    # a ModelProto holding ir_version 8 and nothing else
    with pytest.raises(ModelLoadError, match=r"bare\.onnx \(2 bytes\): not an ONNX model \(no graph\)"):
        compile_model(bare, "tiny", "wide")


def test_text_that_is_not_utf8_is_a_load_error_naming_the_field(tmp_path):
    """protobuf hands a string field holding invalid UTF-8 to Python as bytes; onnx then failed deep inside."""
    model = _model([_node("Relu", ["data"], "y")], [], [1, 4, 8, 8])
    raw = model.SerializeToString().replace(b"hand_built", b"hand\xabbuilt")
    path = tmp_path / "garbled.onnx"
    path.write_bytes(raw)
    with pytest.raises(ModelLoadError, match=r"garbled\.onnx .*the text field model\.graph\.name is not valid UTF-8"):
        compile_model(path, "tiny", "wide")


def _conv_with_weight(weight: onnx.TensorProto):
    return _unchecked([_node("Conv", ["data", weight.name], "y")], [weight], in_shape=(1, 16, 8, 8))


def _big_weight(dims=None, dtype=None, drop_raw=False):
    """A 64x16x3x3 weight (too large for the checker's copy of the model) with its dims or type changed."""
    t = numpy_helper.from_array(RNG.standard_normal((64, 16, 3, 3)).astype(np.float32), "w")
    if dims is not None:
        del t.dims[:]
        t.dims.extend(dims)
    if dtype is not None:
        t.data_type = dtype
    return t


def _float_data_weight(dims, count):
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=dims)
    t.float_data.extend([0.5] * count)
    return t


@pytest.mark.parametrize("weight, message", [
    (_big_weight(dims=[65, 16, 3, 3]), r"initializer 'w' holds 36,864 bytes of data, but its dims \[65, 16, 3, 3\] "
                                       r"of FLOAT need 37,440"),
    (_big_weight(dims=[63, 16, 3, 3]), r"initializer 'w' holds 36,864 bytes.*need 36,288"),
    (_big_weight(dims=[]), r"initializer 'w' holds 36,864 bytes of data, but its dims \[\] of FLOAT need 4"),
    (_big_weight(dims=[-1, 16, 3, 3]), r"initializer 'w' has dims \[-1, 16, 3, 3\]; a dimension cannot be negative"),
    (_big_weight(dtype=999), r"initializer 'w' has unknown element type 999, which is not an ONNX tensor element type"),
    (_float_data_weight([64, 16, 3, 3], 100), r"initializer 'w' holds 100 values in float_data, but its dims "
                                             r"\[64, 16, 3, 3\] need 9,216"),
])
def test_an_initializer_whose_dims_disagree_with_its_data_is_a_load_error_naming_it(weight, message):
    """Large initializers skip onnx's checker; numpy_helper.to_array raised 'cannot reshape' for them."""
    with pytest.raises(ModelLoadError, match=message):
        compile_model(_conv_with_weight(weight), "tiny", "wide")


def test_a_missing_initializer_names_the_node_and_the_tensor():
    nodes = [_node("Conv", ["data", "w"], "c"), _node("Relu", ["c"], "y")]
    with pytest.raises(ModelLoadError, match=r"node 'c' \(Conv\) reads tensor 'w', which is no graph input, "
                                             r"initializer or node output \(a missing initializer\?\)"):
        compile_model(_unchecked(nodes, []), "tiny", "wide")
    unnamed = [helper.make_node("Relu", ["data"], ["r"]), helper.make_node("Conv", ["r", "w"], ["y"])]
    with pytest.raises(ModelLoadError, match=r"node 'Conv_1' \(Conv\) reads tensor 'w'"):
        compile_model(_unchecked(unnamed, []), "tiny", "wide")
    backwards = [_node("Relu", ["c"], "y"), _node("Conv", ["data", "w"], "c")]
    with pytest.raises(ModelLoadError, match=r"node 'y' \(Relu\) reads tensor 'c' before node 'c' writes it: the "
                                             r"nodes are not in topological order"):
        compile_model(_unchecked(backwards, [_w("w", 4, 4, 1, 1)]), "tiny", "wide")
    nowhere = _unchecked([_node("Relu", ["data"], "r")], [])
    with pytest.raises(ModelLoadError, match=r"graph output 'y' is no graph input, initializer or node output"):
        compile_model(nowhere, "tiny", "wide")


def test_the_checkers_whole_message_is_kept_on_one_line():
    """Only the first line used to be kept, which drops the node the checker names on the next lines."""
    bn = helper.make_node("BatchNormalization", ["data", "s", "b", "m"], ["y"], name="bn3")
    model = _unchecked([bn], [_w(n, 4) for n in "sbm"])
    with pytest.raises(ModelLoadError) as info:
        compile_model(model, "tiny", "wide")
    text = str(info.value)
    assert "has input size 4 not in range [min=5, max=5]" in text and "Name: bn3 OpType: BatchNormalization" in text
    assert "\n" not in text and len(text) < 700


def test_an_unknown_input_element_type_is_named():
    model = _unchecked([_node("Relu", ["data"], "y")], [])
    model.graph.input[0].type.tensor_type.elem_type = 999
    with pytest.raises((ModelLoadError, UnsupportedModelError), match="999"):
        compile_model(model, "tiny", "wide")


def _problem(model) -> str:
    with pytest.raises(UnsupportedModelError) as info:
        compile_model(model, "tiny", "wide")
    (problem,) = info.value.problems
    return str(problem)


def _conv(attrs=None, weight=(4, 4, 3, 3), bias=None, in_shape=(1, 4, 8, 8)):
    inits = [weight if isinstance(weight, TensorProto) else
             numpy_helper.from_array(RNG.standard_normal(weight).astype(np.float32), "w")]
    ins = ["data", "w"]
    if bias is not None:
        inits.append(numpy_helper.from_array(np.asarray(bias, np.float32), "b"))
        ins.append("b")
    return _unchecked([_node("Conv", ins, "y", **(attrs or {}))], inits, in_shape)


def _pool(**attrs):
    return _unchecked([_node("MaxPool", ["data"], "y", **attrs)], [])


def _with_consts(op, consts, opset=13, out_rank=4, **attrs):
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    return _unchecked([_node(op, ["data", *consts], "y", **attrs)], inits, opset=opset, out_rank=out_rank)


@pytest.mark.parametrize("model, message", [
    # each of these reached a ZeroDivisionError, an IndexError, an IsaError or a ValueError from numpy, or compiled
    # silently into something onnxruntime would not run
    (_conv({"strides": [0, 0]}), "node 'y' (Conv): strides=[0, 0]; 2 integers >= 1 are needed"),
    (_conv({"pads": [-1, 0, 0, 0]}), "pads=[-1, 0, 0, 0]; 4 integers >= 0 are needed"),
    (_conv({"kernel_shape": [5, 5]}), "kernel_shape [5, 5] does not match the weight's [3, 3]"),
    (_conv(weight=(0, 4, 3, 3)), "weight of shape [0, 4, 3, 3]; every dimension must be at least 1"),
    (_conv(weight=helper.make_tensor("w", TensorProto.STRING, [4, 4, 1, 1], [b"a"] * 16)),
     "the weight ('w') has element type object; a real number type is needed"),
    (_conv(bias=np.zeros((2, 2))), "the bias has shape [2, 2]; 4 values (one per channel) are needed"),
    (_conv(bias=np.zeros(3)), "the bias has shape [3]; 4 values (one per channel) are needed"),
    (_pool(kernel_shape=[0, 0]), "node 'y' (MaxPool): kernel [0, 0]; a 2-d kernel of at least 1 x 1 is needed"),
    (_pool(kernel_shape=[2, 2], strides=[0, 1]), "strides=[0, 1]; 2 integers >= 1 are needed"),
    (_unchecked([_node("ReduceMean", ["data"], "y", axes=[6, 7])], []),
     "ReduceMean over axes [6, 7] of a 4-d tensor; an axis must be in [-4, 3]"),
    (_with_consts("Reshape", {"s": np.array([-1, -1], np.int64)}, out_rank=2),
     r"reshape of [1, 4, 8, 8] to [-1, -1]; only flattening to N x K is supported"),
    (_with_consts("Reshape", {"s": np.array([0, 256], np.int64)}, opset=14, out_rank=2, allowzero=1),
     "reshape to [0, 256] with allowzero=1 makes an empty tensor"),
    (_with_consts("Pad", {"p": np.array([1, 1, 1], np.int64), "v": np.float32(0), "a": np.array([2, 3], np.int64)},
                  opset=18), "pads [1, 1, 1] over axes [2, 3]: distinct axes in [-4, 3] and two pads per axis"),
    (_with_consts("BatchNormalization", {k: np.ones(3, np.float32) for k in ("s", "b", "m", "v")}),
     "node 'y' (BatchNormalization): scale has shape [3]; 4 values (one per channel) are needed"),
    (_with_consts("Mul", {"k": np.ones((2, 1, 1, 1, 1), np.float32)}, out_rank=5),
     "does not broadcast per channel"),
    (_unchecked([_node("Flatten", ["data"], "f"), _node("Gemm", ["f", "w", "c"], "y")],
                [_w("w", 256, 5), _w("c", 7)], out_rank=2), r"C of shape [7] does not broadcast to the 5 outputs"),
    (_unchecked([_node("Flatten", ["data"], "f"), _node("Gemm", ["f", "w"], "y")], [_w("w", 256)], out_rank=2),
     "B of shape [256]; a 2-d matrix is needed"),
    (_unchecked([_node("Relu", ["w"], "y")], [_w("w", 4, 4, 3, 3)]),
     "node 'y' (output): the output is a constant: it does not depend on the model's input"),
])
def test_malformed_attributes_and_constants_are_reported_with_their_node(model, message):
    assert message in _problem(model)


def test_dropout_with_empty_constant_inputs_is_read_as_inference_mode():
    empty = {"r": np.zeros(0, np.float32), "t": np.zeros(0, bool)}
    model = _with_consts("Dropout", empty)
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8]))
    assert _kinds(import_onnx(model)) == Counter()                           # an identity, removed


def test_an_nhwc_classifier_whose_weight_does_not_fit_the_flattened_map_is_reported():
    """fold_layout used to permute the weight's rows before anyone checked their number (an IndexError)."""
    nodes = [_node("Transpose", ["data"], "t", perm=[0, 2, 3, 1]), _node("Reshape", ["t", "s"], "f"),
             _node("Gemm", ["f", "w"], "y")]
    model = _unchecked(nodes, [numpy_helper.from_array(np.array([1, 256], np.int64), "s"),
                               numpy_helper.from_array(np.zeros((0, 3), np.float32), "w")], out_rank=2)
    with pytest.raises(UnsupportedModelError) as info:
        compile_model(model, "tiny", "wide")
    problems = {p.node: p.message for p in info.value.problems}
    assert problems["y"] == "weight of shape [3, 0]; a 2-d matrix of at least 1 x 1 is needed"
    assert "Transpose is not supported" in problems["t"]                    # left in place, not folded


@pytest.mark.parametrize("model, message", [
    (_unchecked([_node("Relu", ["data"], "y")], [], in_shape=(1, 3, 100000, 100000)),
     "shape [1, 3, 100000, 100000] has 30,000,000,000 elements, more than the compiler's limit of 268,435,456"),
    (_unchecked([helper.make_node("ConstantOfShape", ["s"], ["w"], name="make_w",
                                  value=numpy_helper.from_array(np.ones(1, np.float32))), _node("Conv", ["data", "w"], "y")],
                [numpy_helper.from_array(np.array([4, 4, 65535, 65535], np.int64), "s")]),
     "node 'make_w' (ConstantOfShape): its result 'w' would have shape [4, 4, 65535, 65535] (68,717,379,600 "
     "elements), more than the compiler's limit of 268,435,456"),
    (_unchecked([helper.make_node("ConstantOfShape", ["s"], ["a"], name="a"), _node("MatMul", ["a", "a"], "m"),
                 _node("Add", ["data", "m"], "y")], [numpy_helper.from_array(np.array([4096, 4096], np.int64), "s")]),
     "node 'm' (MatMul): evaluating it at compile time would take about 68,719,476,736 multiply-adds, more than the "
     "compiler's limit of 1,073,741,824"),
])
def test_huge_declared_shapes_are_refused_before_anything_large_is_allocated(model, message):
    import tracemalloc

    tracemalloc.start()
    try:
        assert message in _problem(model)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 << 20                  # the 4096 x 4096 constant of the MatMul case is 64 MiB


def test_an_initializer_declaring_a_huge_shape_is_refused_before_its_data_is_read():
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[65535, 65535, 3, 3])
    with pytest.raises(ModelLoadError, match=r"initializer 'w' declares dims \[65535, 65535, 3, 3\] "
                                             r"\(38,653,526,025 elements\), more than the compiler's limit of 268,435,456"):
        compile_model(_conv_with_weight(t), "tiny", "wide")


def test_a_loop_on_constants_is_not_run_at_compile_time():
    """A Loop's trip count can be 10**12: evaluating it would hang, whatever the size of its inputs."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [])])
    inits = [numpy_helper.from_array(np.array(10 ** 12, np.int64), "n"), numpy_helper.from_array(np.array(True), "c"),
             numpy_helper.from_array(np.array(1.0, np.float32), "v")]
    model = _unchecked([helper.make_node("Loop", ["n", "c", "v"], ["k"], name="loop", body=body),
                        _node("Mul", ["data", "k"], "y")], inits)
    assert "node 'loop' (Loop): operators with subgraphs (Loop) are not evaluated at compile time" in _problem(model)


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
