"""Host fallback: operators the NPU does not run go to onnxruntime between NPU segments, and the model still matches.

Small instances of the shapes that need it, built with the project's graph builder and trained-free seeded
weights but fed real photographs: a ZFNet-style network with LRN after its ReLUs (opset 9 and 13), a Softmax in
the middle of a graph, a model whose first operator runs on the host, and an SSD-style branch (an L2
normalisation on the host feeding a head, while the trunk goes on) that gives an NPU segment two inputs.  Every
NPU layer is compared with onnxruntime (``verify_segmented``: bit-exact with the numerics contract, cosine at
``wide``), and the whole program, scored by ``Session``, with onnxruntime's outputs.
"""
import json
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from compiler.compile import compile_model
from compiler.errors import CompileError, UnsupportedModelError
from compiler.models.graph import GraphBuilder
from compiler.models.photos import load_photos
from compiler.partition import SegmentedModel, compile_with_host_fallback, split
from compiler.report import host_macs, split_table
from compiler.verify import verify_segmented
from npu.npuz import ProgramFileError, load_program
from npu.preprocess import Preprocess
from npu.segments import load_segmented, open_program
from runtime.segments import HostSegmentError, check_host_model
from runtime.session import Session

HW = 32
PHOTOS = ["chelsea", "coffee", "astronaut"]


def _photos(side: int = HW) -> list[np.ndarray]:
    recipe = Preprocess.for_input(side)
    return [recipe.array(p) for _, p in load_photos(PHOTOS)]


def _finish(g: GraphBuilder, outputs: dict[str, tuple], opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(g.nodes, g.name, [g.input],
                              [helper.make_tensor_value_info(t, TensorProto.FLOAT, list(s)) for t, s in outputs.items()],
                              g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def zfnet_small(opset: int = 13) -> onnx.ModelProto:
    """Conv-ReLU-LRN-MaxPool twice (as ZFNet and AlexNet), then a classifier with a final Softmax."""
    g = GraphBuilder("zfnet_small", seed=0, input_shape=(1, 3, HW, HW))
    x = g.relu(g.conv(g.input_name, 3, 16, 3, bias=True))
    x = g.op("LRN", [x], size=5, alpha=1e-4, beta=0.75, bias=1.0)
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    x = g.relu(g.conv(x, 16, 24, 3, bias=True))
    x = g.op("LRN", [x], size=5, alpha=1e-4, beta=0.75, bias=1.0)
    x = g.relu(g.conv(x, 24, 24, 3, bias=True))
    p = g.op("GlobalAveragePool", [x])
    y = g.op("Softmax", [g.dense(g.op("Flatten", [p], axis=1), 24, 10)], axis=1)
    return _finish(g, {y: (1, 10)}, opset)


def mid_softmax(opset: int = 13) -> onnx.ModelProto:
    """A Softmax over the channels in the middle of the graph (an attention-like gate), then more convolutions."""
    g = GraphBuilder("mid_softmax", seed=1, input_shape=(1, 3, HW, HW))
    x = g.relu(g.conv(g.input_name, 3, 16, 3, bias=True))
    s = g.op("Softmax", [g.conv(x, 16, 16, 1, bias=True)], axis=1)
    x = g.relu(g.conv(s, 16, 16, 3, bias=True))
    y = g.dense(g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1), 16, 10)
    return _finish(g, {y: (1, 10)}, opset)


def host_first(opset: int = 13) -> onnx.ModelProto:
    """The model starts with an operator the NPU does not run (Abs), then convolutions."""
    g = GraphBuilder("host_first", seed=2, input_shape=(1, 3, HW, HW))
    x = g.op("Abs", [g.input_name])
    x = g.relu(g.conv(x, 3, 16, 3, bias=True))
    y = g.dense(g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1), 16, 10)
    return _finish(g, {y: (1, 10)}, opset)


def l2norm_branch(opset: int = 13) -> onnx.ModelProto:
    """SSD's shape: an L2 normalisation (with a learned scale) of a feature map on the host, a head on it joined
    with a projection of the unnormalised map, and the trunk going on from that map; two outputs."""
    g = GraphBuilder("l2norm_branch", seed=3, input_shape=(1, 3, HW, HW))
    f = g.relu(g.conv(g.input_name, 3, 16, 3, bias=True))
    sq = g.op("Mul", [f, f])
    axes = g.const("axes", np.array([1], np.int64), np.int64)
    norm = g.op("Add", [g.op("Sqrt", [g.op("ReduceSum", [sq, axes], keepdims=1)]), g.const("eps", np.array(1e-10))])
    scaled = g.op("Mul", [g.op("Div", [f, norm]), g.const("scale", np.full((1, 16, 1, 1), 20.0))])
    head1 = g.op("Add", [g.conv(scaled, 16, 8, 3, bias=True), g.conv(f, 16, 8, 1)])   # joins both sides
    t = g.relu(g.conv(g.op("MaxPool", [f], kernel_shape=[2, 2], strides=[2, 2]), 16, 24, 3, bias=True))
    head2 = g.conv(t, 24, 8, 3, bias=True)
    return _finish(g, {head1: (1, 8, HW, HW), head2: (1, 8, HW // 2, HW // 2)}, opset)


def _cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _check_end_to_end(model: onnx.ModelProto, compiled, tmp_path, min_cosine: float = 0.9999) -> None:
    """The saved program, scored by Session, against onnxruntime on photographs: every output, every photo."""
    path = tmp_path / "model.npuz"
    compiled.save(path)
    session = Session(path)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = ref.get_inputs()[0].name
    for x in _photos():
        got = session.score_numpy_array(x)
        want = dict(zip([o.name for o in ref.get_outputs()], ref.run(None, {name: x})))
        assert set(got.outputs) == set(want)
        for t, y in want.items():
            assert got.outputs[t].shape == y.shape
            assert _cosine(got.outputs[t], y) >= min_cosine, t
        if len(want) == 1:
            assert int(np.argmax(got.output)) == int(np.argmax(next(iter(want.values()))))
        assert got.stats.host_us > 0 and got.stats.cycles > 0


def _host_nodes(compiled: SegmentedModel) -> set[str]:
    return {p["node"] for p in compiled.host_ops}


@pytest.mark.parametrize("config", ["tiny", "bw-s10"])
@pytest.mark.parametrize("opset", [9, 13])
def test_lrn_runs_on_the_host_and_every_npu_layer_matches(config, opset, tmp_path):
    model = zfnet_small(opset)
    with pytest.raises(UnsupportedModelError, match="LRN"):
        compile_model(model, config, "wide")
    compiled = compile_with_host_fallback(model, config, "wide")
    assert isinstance(compiled, SegmentedModel)
    assert _host_nodes(compiled) == {"lrn1", "lrn2"}     # the padded MaxPool after the LRN stays on the NPU
    assert [s.kind for s in compiled.program.segments] == ["npu", "host", "npu", "host", "npu"]
    assert "MaxPool maxpool1" in compiled.program.segments[2].nodes
    report = verify_segmented(model, compiled, "wide", _photos())
    assert report.ok, report.table()
    assert len(report.layers) >= 5 and all(c.exact for c in report.layers)
    _check_end_to_end(model, compiled, tmp_path)


def test_mid_graph_softmax_runs_on_the_host(tmp_path):
    model = mid_softmax()
    compiled = compile_with_host_fallback(model, "bw-s10", "wide")
    assert _host_nodes(compiled) == {"softmax1"}
    assert verify_segmented(model, compiled, "wide", _photos()).ok
    _check_end_to_end(model, compiled, tmp_path)


def test_a_host_operator_first(tmp_path):
    model = host_first()
    compiled = compile_with_host_fallback(model, "tiny", "wide")
    assert [s.kind for s in compiled.program.segments] == ["host", "npu"]
    assert verify_segmented(model, compiled, "wide", _photos()).ok
    _check_end_to_end(model, compiled, tmp_path)


@pytest.mark.parametrize("config", ["tiny", "bw-s10"])
def test_l2norm_branch_gives_an_npu_segment_two_inputs(config, tmp_path):
    model = l2norm_branch()
    compiled = compile_with_host_fallback(model, config, "wide")
    assert {p["op"] for p in compiled.host_ops} == {"Mul", "ReduceSum", "Sqrt", "Add", "Div"}
    kinds = [s.kind for s in compiled.program.segments]
    assert kinds == ["npu", "host", "npu"], kinds
    ins = compiled.program.segments[2].inputs
    assert len(ins) == 2 and "div1" in ins                        # the normalised map, and the projection
    assert len(compiled.program.segments[0].outputs) == 3         # the map, the projection, the trunk's head
    report = verify_segmented(model, compiled, "wide", _photos())
    assert report.ok, report.table()
    _check_end_to_end(model, compiled, tmp_path)


def test_a_model_the_npu_runs_whole_is_compiled_as_before():
    from compiler.models import nets

    compiled = compile_with_host_fallback(nets.vgg_small(), "tiny", "ms-fp9")
    plain = compile_model(nets.vgg_small(), "tiny", "ms-fp9")
    assert not isinstance(compiled, SegmentedModel)
    assert compiled.program.words == plain.program.words and compiled.program.dram == plain.program.dram


def test_split_keeps_each_side_together():
    from compiler.frontend import load_onnx
    from compiler.passes.fold_constants import fold_constants

    graph = fold_constants(load_onnx(l2norm_branch()))
    names = [n.name for n in graph.topological()]
    host = {"mul1", "reducesum1", "sqrt1", "add1", "div1"}
    plan = split(graph, names, host)
    assert [p[1] for p in plan] == ["npu", "host", "npu"]
    for name, kind, nodes, ins, outs in plan:
        assert all((n in host) == (kind == "host") for n in nodes)
    seen = set()
    for _, _, nodes, ins, _ in plan:               # topological: every input is written earlier
        assert all(t == "data" or t in seen for t in ins)
        seen |= {t for n in nodes for t in graph.node(n).outputs}


def test_split_report_counts_host_macs_from_shapes():
    g = GraphBuilder("host_conv", seed=4, input_shape=(1, 3, 8, 8))
    y = g.conv(g.input_name, 3, 8, 3)
    assert host_macs(g.finish(y, (1, 8, 8, 8))) == 8 * 8 * 8 * 3 * 3 * 3
    compiled = compile_with_host_fallback(zfnet_small(), "tiny", "wide")
    table = split_table(compiled, {}, {"segment1": 1e-4, "segment3": 2e-4})
    assert "lrn1 (LRN)" in table and "segment3   host" in table
    assert "300.0" in table                      # the two host segments' 100 + 200 us


def test_segmented_file_round_trips_and_is_checked(tmp_path):
    compiled = compile_with_host_fallback(zfnet_small(), "tiny", "wide")
    path = tmp_path / "z.npuz"
    compiled.save(path)
    loaded = load_segmented(path)
    assert [s.kind for s in loaded.segments] == [s.kind for s in compiled.program.segments]
    assert loaded.host_ops == compiled.host_ops
    assert isinstance(open_program(path), type(loaded))
    with pytest.raises(ProgramFileError, match="NPU and host segments"):
        load_program(path)
    # a changed byte in a member: its checksum fails
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    bad = dict(members)
    data = bytearray(bad["segment1.onnx"])
    data[-1] ^= 1
    bad["segment1.onnx"] = bytes(data)
    _write(tmp_path / "bad.npuz", bad)
    with pytest.raises(ProgramFileError, match="checksum mismatch in segment1.onnx"):
        load_segmented(tmp_path / "bad.npuz")
    # the header changed without its checksum
    header = json.loads(members["header.json"])
    header["segments"][1]["inputs"] = ["nowhere"]
    _write(tmp_path / "hdr.npuz", {**members, "header.json": json.dumps(header).encode()})
    with pytest.raises(ProgramFileError, match="header_sha256"):
        load_segmented(tmp_path / "hdr.npuz")
    # a member missing
    _write(tmp_path / "short.npuz", {k: v for k, v in members.items() if k != "segment2.npuz"})
    with pytest.raises(ProgramFileError, match="missing: segment2.npuz"):
        load_segmented(tmp_path / "short.npuz")


def test_segment_table_must_be_consistent(tmp_path):
    compiled = compile_with_host_fallback(zfnet_small(), "tiny", "wide")
    prog = compiled.program
    prog.segments[2].inputs = ["not_written_yet"]
    with pytest.raises(ProgramFileError, match=r"segments\[2\].inputs\[0\].*neither a model input"):
        prog.save(tmp_path / "x.npuz")
    assert not (tmp_path / "x.npuz").exists()


def _write(path, members: dict) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def test_hostile_host_segments_are_refused():
    compiled = compile_with_host_fallback(zfnet_small(), "tiny", "wide")
    seg = compiled.program.segments[1]
    check_host_model(seg)                                  # the compiler's own passes
    model = onnx.load_model_from_string(seg.onnx)
    # a weight stored outside the file: onnxruntime would read a file the program names
    t = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    t.data_location = TensorProto.EXTERNAL
    t.ClearField("float_data")
    ext = t.external_data.add()
    ext.key, ext.value = "location", "/etc/passwd"
    model.graph.initializer.append(t)
    seg.onnx = model.SerializeToString()
    with pytest.raises(HostSegmentError, match="external data"):
        check_host_model(seg)
    # an operator of another domain
    model = onnx.load_model_from_string(compiled.models["segment1"].SerializeToString())
    model.graph.node[0].domain = "com.microsoft"
    seg.onnx = model.SerializeToString()
    with pytest.raises(HostSegmentError, match="outside the default ONNX domain"):
        check_host_model(seg)
    seg.onnx = b"\x00garbage"
    with pytest.raises(HostSegmentError, match="not an ONNX model"):
        check_host_model(seg)


def test_cli_compiles_with_fallback_and_refuses_without(tmp_path, capsys):
    from npu_toolkit.cli import main

    src = tmp_path / "zf.onnx"
    onnx.save(zfnet_small(9), src)
    assert main(["compile", str(src), "--config", "tiny", "--precision", "wide", "-o", str(tmp_path / "a.npuz")]) == 0
    out = capsys.readouterr().out
    assert "split between the NPU and the host" in out and "lrn2 (LRN)" in out
    assert main(["compile", str(src), "--config", "tiny", "--precision", "wide", "--no-host-fallback", "-o",
                 str(tmp_path / "b.npuz")]) != 0
    assert "LRN is not supported" in capsys.readouterr().err
    assert not (tmp_path / "b.npuz").exists()
    assert main(["verify", str(src), "--config", "tiny"]) == 0
    assert "every NPU layer meets its expectation" in capsys.readouterr().out


# --- fuzzing the segmented program file ----------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings          # noqa: E402
from hypothesis import strategies as st                     # noqa: E402


@pytest.fixture(scope="module")
def segmented_members(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzzseg") / "z.npuz"
    compile_with_host_fallback(zfnet_small(), "tiny", "wide").save(path)
    with zipfile.ZipFile(path) as zf:
        return path.read_bytes(), {i.filename: zf.read(i) for i in zf.infolist()}


def _resigned(members: dict, header: dict) -> dict:
    """The members with ``header`` as header.json, its own checksum recomputed (so the schema checks are reached)."""
    from npu.npuz import header_digest

    header = dict(header)
    header["header_sha256"] = header_digest(header)
    return {**members, "header.json": json.dumps(header).encode()}


FIELD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2, 1 << 40), st.text(max_size=8),
                         st.lists(st.integers(-1, 5), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(),
                                                                                   max_size=2))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_segmented_files_are_refused_or_load(segmented_members, tmp_path_factory, data):
    raw, members = segmented_members
    header = json.loads(members["header.json"])
    kind = data.draw(st.sampled_from(["flip", "cut", "field", "segment-field", "drop"]))
    if kind == "flip":
        blob = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 8))):
            blob[data.draw(st.integers(0, len(blob) - 1))] ^= data.draw(st.integers(1, 255))
        out = bytes(blob)
    elif kind == "cut":
        out = raw[:data.draw(st.integers(0, len(raw) - 1))]
    else:
        if kind == "field":
            key = data.draw(st.sampled_from(sorted(header)))
            header[key] = data.draw(FIELD_VALUES)
        elif kind == "segment-field":
            k = data.draw(st.integers(0, len(header["segments"]) - 1))
            key = data.draw(st.sampled_from(["kind", "name", "inputs", "outputs", "nodes", "extra"]))
            header["segments"][k][key] = data.draw(FIELD_VALUES)
        else:
            header["segments"].pop(data.draw(st.integers(0, len(header["segments"]) - 1)))
        path = tmp_path_factory.mktemp("m") / "m.npuz"
        _write(path, _resigned(members, header))
        out = path.read_bytes()
    path = tmp_path_factory.mktemp("f") / "f.npuz"
    path.write_bytes(out)
    try:
        program = open_program(path)
    except ProgramFileError as exc:
        assert str(path) in str(exc)
        return
    if hasattr(program, "segments"):
        program.check()


def test_a_model_with_nothing_for_the_npu_is_refused():
    g = GraphBuilder("all_host", seed=5, input_shape=(1, 3, HW, HW))
    y = g.op("Sqrt", [g.op("Abs", [g.input_name])])
    with pytest.raises(CompileError, match="every operator would run on the host"):
        compile_with_host_fallback(_finish(g, {y: (1, 3, HW, HW)}, 13), "tiny", "wide")
