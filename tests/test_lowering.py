"""Layer emitters, run on the simulator, against float references of the same layers.

With a wide format (bfp24 operands, fp32 MFU) the NPU result must match
float64 numpy to about 1e-4 relative; with ms-fp9 it must stay close
(cosine >= 0.98: one ms-fp9 layer on Gaussian data gives about 0.985).
"""
from dataclasses import replace

import numpy as np
import pytest

from npu.layout import ActLayout
from compiler.lower.emit import emit_add, emit_conv, emit_pool
from compiler.lower.weights import conv_matrix, dense_matrix, pack_tiles
from npu.config import PRESETS
from npu.isa.encoding import decode_program, encode_program, make
from npu.numerics import mfu
from npu.numerics.pack import pack_floats, unpack_floats
from npu.sim import simulate

TINY = PRESETS["tiny"]
WIDE = TINY.replace(weight_format="bfp24", activation_format="bfp24", mfu_format="fp32")


def conv_ref(x, w, b, stride, pad):
    """Float64 convolution of C x H x W input with (Cout, Cin, kh, kw) weights, symmetric padding."""
    cout, cin, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad)))
    ho = (xp.shape[1] - kh) // stride + 1
    wo = (xp.shape[2] - kw) // stride + 1
    y = np.zeros((cout, ho, wo))
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[:, ky:ky + stride * ho:stride, kx:kx + stride * wo:stride]
            y += np.einsum("chw,oc->ohw", patch, w[:, :, ky, kx].astype(np.float64))
    return y + (0 if b is None else b[:, None, None])


class Program:
    """Collects vector-memory data, weight tiles and chains, then runs them on the simulator."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.dram = bytearray()
        self.loads, self.chains = [], []
        self.tiles = 0
        self.next_vector = 0

    def place(self, layout_args, data=None) -> ActLayout:
        lay = ActLayout(*layout_args, native_dim=self.cfg.native_dim, base=self.next_vector)
        self.next_vector += lay.size
        if data is not None:
            self.load_vectors(lay.base, lay.to_vectors(data))
        return lay

    def load_vectors(self, vaddr, vectors):
        raw = pack_floats(mfu.to_format(vectors, self.cfg.mfu_format), self.cfg.mfu_format)
        self.loads.append(make("v_load", vaddr=vaddr, daddr=len(self.dram), row_len=len(vectors)))
        self.dram += raw

    def vector_constant(self, values) -> int:
        n = self.cfg.native_dim
        vecs = np.zeros((-(-len(values) // n), n), np.float32)
        vecs.reshape(-1)[:len(values)] = values
        addr = self.next_vector
        self.next_vector += len(vecs)
        self.load_vectors(addr, vecs)
        return addr

    def weights(self, matrix) -> int:
        n = self.cfg.native_dim
        count = matrix.shape[0] // n * (matrix.shape[1] // n)
        self.loads.append(make("m_load", maddr=self.tiles, daddr=len(self.dram), count=count))
        self.dram += pack_tiles(matrix, self.cfg.weight_format, n)
        base, self.tiles = self.tiles, self.tiles + count
        return base

    def run(self, out: ActLayout):
        """Loads (last one signals l2c), the chains (first waits, last signals c2s), a store, halt."""
        loads = self.loads[:-1] + [replace(self.loads[-1], signal=frozenset({"l2c"}))]
        chains = [ins for ch in self.chains for ins in ch]
        first = next(i for i, ins in enumerate(chains) if ins.mnemonic == "chain")
        chains[first] = replace(chains[first], wait=frozenset({"l2c"}))
        chains[-1] = replace(chains[-1], signal=frozenset({"c2s"}))
        store = make("v_store", vaddr=out.base, daddr=len(self.dram), row_len=out.size, wait={"c2s"})
        res = simulate(encode_program(loads + chains + [store, make("halt")]), self.cfg, dram=bytes(self.dram))
        vec = unpack_floats(res.dram(len(self.dram), out.size * self.cfg.vector_bytes), self.cfg.mfu_format)
        return out.from_vectors(vec.reshape(out.size, -1).astype(np.float64)), res


def relerr(y, ref):
    return np.abs(y - ref).max() / np.abs(ref).max()


def cosine(y, ref):
    return float((y * ref).sum() / np.linalg.norm(y) / np.linalg.norm(ref))


@pytest.mark.parametrize("cin, cout, k, stride, pad, hw", [
    (32, 32, 3, 1, 1, 8), (40, 70, 3, 2, 1, 9), (16, 32, 1, 1, 0, 6), (3, 32, 7, 2, 3, 16), (64, 32, 5, 1, 2, 7),
])
@pytest.mark.parametrize("cfg", [WIDE, TINY], ids=["bfp24-fp32", "ms-fp9-fp16"])
def test_conv_bias_relu(cfg, cin, cout, k, stride, pad, hw):
    rng = np.random.default_rng(cin * 7 + k)
    x = rng.standard_normal((cin, hw, hw)).astype(np.float32)
    w = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
    b = (0.1 * rng.standard_normal(cout)).astype(np.float32)
    ref = np.maximum(conv_ref(x, w, b, stride, pad), 0)
    p = Program(cfg)
    src = p.place((cin, hw, hw, pad), x)
    dst = p.place((cout, ref.shape[1], ref.shape[2], 0))
    n = cfg.native_dim
    mbase = p.weights(conv_matrix(w, src.vectors, dst.vectors, n))
    bias = p.vector_constant(b)
    p.chains.append(emit_conv(src, dst, kernel=(k, k), stride=(stride, stride), pads=(pad, pad), mbase=mbase,
                              bias_addr=bias, relu=True))
    y, _ = p.run(dst)
    if cfg is WIDE:
        assert relerr(y, ref) < 1e-4
    else:
        assert cosine(y, ref) > 0.98


def test_residual_block_and_pools_wide():
    """conv+bias -> add residual -> ReLU, then max pool 3x3/2 with padding, global average pool, dense."""
    cfg = WIDE
    rng = np.random.default_rng(11)
    x = np.abs(rng.standard_normal((32, 8, 8))).astype(np.float32)
    w = (rng.standard_normal((32, 32, 3, 3)) / 17).astype(np.float32)
    b = (0.1 * rng.standard_normal(32)).astype(np.float32)
    fc = (rng.standard_normal((10, 32)) / 6).astype(np.float32)
    p = Program(cfg)
    src = p.place((32, 8, 8, 1), x)
    mid = p.place((32, 8, 8, 1))                          # bordered: the max pool pads by 1
    pooled = p.place((32, 4, 4, 0))
    gap = p.place((32, 1, 1, 0))
    logits = p.place((10, 1, 1, 0))
    n = cfg.native_dim
    mconv = p.weights(conv_matrix(w, 1, 1, n))
    mfc = p.weights(dense_matrix(fc, 1, 1, n))
    bias = p.vector_constant(b)
    p.chains.append(emit_conv(src, mid, kernel=(3, 3), pads=(1, 1), mbase=mconv, bias_addr=bias, residual=src,
                              relu=True))
    p.chains.append(emit_pool(mid, pooled, kind="max", kernel=(3, 3), stride=(2, 2), pads=(1, 1)))
    p.chains.append([make("s_wr", sreg=2, value=int(np.float32(1 / 16).view(np.uint32)))] +
                    emit_pool(pooled, gap, kind="avg", kernel=(4, 4), scale_sreg=2))
    p.chains.append(emit_conv(gap, logits, kernel=(1, 1), mbase=mfc))
    y, res = p.run(logits)
    h = np.maximum(conv_ref(x, w, b, 1, 1) + x, 0)
    hp = np.pad(h, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    mp = np.max([hp[:, ky:ky + 8:2, kx:kx + 8:2] for ky in range(3) for kx in range(3)], axis=0)
    ref = fc.astype(np.float64) @ mp.mean(axis=(1, 2))
    assert relerr(y.reshape(-1), ref) < 1e-4
    assert res.stats.macs > 0


def test_emit_add_and_errors():
    cfg = WIDE
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 40, 3, 5)).astype(np.float32)
    p = Program(cfg)
    la = p.place((40, 3, 5, 1), a)
    lb = p.place((40, 3, 5, 0), b)
    out = p.place((40, 3, 5, 2))
    p.chains.append(emit_add(la, lb, out, relu=True))
    y, _ = p.run(out)
    assert np.array_equal(y, np.maximum(a.astype(np.float64) + b, 0).astype(np.float32).astype(np.float64))
    with pytest.raises(ValueError, match="exceeds the input's 1-pixel zero border"):
        emit_conv(la, out, kernel=(5, 5), pads=(2, 2), mbase=0)
    with pytest.raises(ValueError, match="needs the scalar register"):
        emit_pool(la, out, kind="avg", kernel=(2, 2))


def test_layout_round_trip_and_addresses():
    lay = ActLayout(70, 3, 4, 2, 32, base=100)
    x = np.arange(70 * 12, dtype=np.float32).reshape(70, 3, 4)
    v = lay.to_vectors(x)
    assert v.shape == (lay.size, 32) and lay.vectors == 3 and lay.size == 7 * 8 * 3
    assert np.array_equal(lay.from_vectors(v), x)
    assert lay.addr(0, 0) == 100 + (2 * 8 + 2) * 3 and lay.addr(-2, -2) == 100
    assert not v.reshape(7, 8, 96)[:2].any() and not v.reshape(7, 8, 96)[:, :, 70:].any()
    with pytest.raises(ValueError, match="outside the tensor"):
        lay.addr(-3, 0)


# --- planning and code generation of whole models: limits are CompileErrors, shared vectors stay right ----------
# (the classes the ONNX fuzzing of tests/test_fuzz_onnx.py found, each with its minimal model)

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from compiler.compile import compile_model  # noqa: E402
from compiler.errors import CompileError  # noqa: E402
from compiler.verify import verify_model  # noqa: E402
from npu.hostio import run_on_simulator  # noqa: E402


def _onnx(nodes, inits, in_shape, out_shape, opset=13, out="y"):
    inits = [numpy_helper.from_array(np.asarray(v, np.int64 if k.startswith("shape") else np.float32), k)
             for k, v in inits.items()]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("data", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, list(out_shape))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def _n(op, ins, out, **attrs):
    return helper.make_node(op, ins, [out], name=out, **attrs)


def _rand(*shape, seed=0, scale=0.4):
    return scale * np.random.default_rng(seed).standard_normal(shape)


def _matches_onnxruntime(model, config="tiny"):
    """Compile at wide, simulate on a seeded input and compare the output with onnxruntime (2e-4 of its max)."""
    compiled = compile_model(model, config, "wide")
    (desc,) = compiled.program.inputs
    x = np.random.default_rng(1).standard_normal((1, *desc.shape)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"data": x})[0].reshape(-1).astype(np.float64)
    outs, _ = run_on_simulator(compiled.program, {desc.name: x}, mode="functional")
    (y,) = outs.values()
    assert y.size == ref.size and np.abs(y.reshape(-1) - ref).max() <= 2e-4 * np.abs(ref).max()
    return compiled


def _verified(model, config="tiny", precision="wide"):
    """Every tensor the program writes, bit for bit against the numerics contract and against onnxruntime."""
    report = verify_model(model, config, precision)
    assert report.ok, report.table()
    return report.compiled


@pytest.mark.parametrize("op", ["GlobalAveragePool", "Relu"])
def test_a_layer_that_cannot_run_in_bands_over_an_input_too_large_for_the_vector_memory_is_a_compile_error(op):
    """The input was put in DRAM and banding asked the layer for a kernel (AttributeError: no 'kernel')."""
    model = _onnx([_n(op, ["data"], "y")], {}, [1, 64, 128, 128], [1, 64, 1, 1] if op[0] == "G" else [1, 64, 128, 128])
    kind = "GlobalPool" if op[0] == "G" else "Relu"
    with pytest.raises(CompileError, match=rf"tensor 'data' \(64x128x128, 32,768 vectors\) and 1 constant vectors need "
                                           rf"32,769 vectors together, more than the 4,096 the vector memory of tiny "
                                           rf"holds; none can move to DRAM \('data': it is read by node 'y' \({kind}\), "
                                           rf"which cannot run in row bands\)"):
        compile_model(model, "tiny", "wide")


def test_global_pooling_of_a_large_input_that_fits_still_runs():
    _matches_onnxruntime(_onnx([_n("GlobalAveragePool", ["data"], "y")], {}, [1, 64, 30, 30], [1, 64, 1, 1]))


def test_layers_taller_than_one_chain_run_in_several_chains():
    """5000 rows: a chain's row count is 12 bits (IsaError 'field n0=5000 outside [1, 4095]' at encoding)."""
    nodes = [_n("Relu", ["data"], "r"), _n("Conv", ["r", "w"], "c", pads=[1, 0, 1, 0]), _n("Clip", ["c", "lo", "hi"], "y")]
    model = _onnx(nodes, {"w": _rand(8, 3, 3, 1), "lo": -0.5, "hi": 0.5}, [1, 3, 5000, 1], [1, 8, 5000, 1])
    compiled = _verified(model, "bw-s10")
    assert not compiled.plan.band_rows                          # all in the vector memory: the rows were split
    counts = [ins.fields["n0"] for ins in decode_program(compiled.program.words) if ins.mnemonic == "chain"]
    assert max(counts) == 4095 and 5000 - 4095 in counts


def test_a_row_wider_than_one_chain_is_a_compile_error_naming_the_layer():
    model = _onnx([_n("Relu", ["data"], "y")], {}, [1, 1, 1, 5000], [1, 1, 1, 5000])
    with pytest.raises(CompileError, match=r"node 'y' \(Relu\): its output 'y' is 5000 pixels wide; a chain loops at "
                                           r"most 4095 times"):
        compile_model(model, "bw-s10", "wide")


def test_an_input_wider_than_the_image_recipe_takes_is_a_compile_error():
    """Preprocess.for_input raised ValueError 'recipe crop=5000: must be an integer in [1, 4096]'."""
    model = _onnx([_n("Conv", ["data", "w"], "y")], {"w": _rand(4, 3, 3, 3)}, [1, 3, 8, 5000], [1, 4, 6, 4998])
    with pytest.raises(CompileError, match=r"input 'data' is 5000 pixels wide; the program's image recipe takes at "
                                           r"most 4096 \(npu.preprocess.MAX_SIDE\)"):
        compile_model(model, "bw-s10", "wide")


def test_an_instruction_field_a_layer_overflows_is_a_compile_error_naming_the_layer():
    """Strides are 16-bit: 4 rows of 2000 pixels x 5 vectors is a row step of 40,000 (the encoder's IsaError)."""
    model = _onnx([_n("Conv", ["data", "w"], "y", strides=[4, 1])], {"w": _rand(128, 640, 1, 1)},
                  [1, 640, 4, 2000], [1, 128, 1, 2000])
    with pytest.raises(CompileError, match=r"node 'y' \(Conv\): v_rd needs s_n0=40000, beyond the instruction set's "
                                           r"\[-32768, 32767\]"):
        compile_model(model, "bw-s10", "wide")


def test_tensors_larger_than_the_dram_are_refused_before_the_dram_image_is_built():
    model = _onnx([_n("MaxPool", ["data"], "y", kernel_shape=[1, 1])], {}, [1, 32, 400, 400], [1, 32, 400, 400])
    with pytest.raises(CompileError, match=r"the model's inputs, outputs and spilled tensors need 40,96\d,\d+ bytes of "
                                           r"DRAM, more than the 16,777,216 that tiny has"):
        compile_model(model, "tiny", "wide")


def test_buffers_that_only_fit_placed_at_both_ends_of_the_vector_memory_are_placed_so():
    """First fit left a hole too small for the padded copy; none of these tensors can be spilled (Affine, Pad)."""
    nodes = [_n("BatchNormalization", ["data", "g", "b", "m", "v"], "bn"), _n("Pad", ["bn", "shape_p"], "p"),
             _n("Sub", ["p", "k"], "y")]
    inits = {"g": 1 + _rand(4), "b": _rand(4), "m": _rand(4), "v": 1 + np.abs(_rand(4)),
             "shape_p": [0, 0, 1, 2, 0, 0, 1, 2], "k": _rand(4, 1, 1)}
    _verified(_onnx(nodes, inits, [1, 4, 40, 40], [1, 4, 42, 44]))


def _concat_model(order, first="Relu", c_first=4, c_second=5):
    """Concat([first(conv_a(x)), conv_b(x)]), the nodes written in ``order`` (conv_b may come before the others)."""
    nodes = {"conv_a": _n("Conv", ["data", "wa"], "a0"), "first": _n(first, ["a0"], "a"),
             "conv_b": _n("Conv", ["data", "wb"], "b"), "cat": _n("Concat", ["a", "b"], "y", axis=1)}
    inits = {"wa": _rand(c_first, 3, 1, 1), "wb": _rand(c_second, 3, 1, 1, seed=1)}
    return _onnx([nodes[k] for k in order], inits, [1, 3, 4, 4], [1, c_first + c_second, 4, 4])


@pytest.mark.parametrize("first", ["Relu", "Identity"])
def test_the_first_tensor_of_a_shared_vector_is_written_before_the_next_one(first):
    """Writing conv_b's channels 4..8 first, then the whole vector of 'a' over them, gave cosine 0.39."""
    compiled = _verified(_concat_model(["conv_b", "conv_a", "first", "cat"], first))
    writer = {t: i for i, nd in enumerate(compiled.plan.steps) for t in nd.outputs}
    first, second = compiled.graph.node("y").inputs                    # the Concat, after the passes
    assert writer[first] < writer[second]


@pytest.mark.parametrize("nodes, message", [
    ([_n("Conv", ["data", "wa"], "a"), _n("Conv", ["data", "wb"], "b"), _n("MaxPool", ["b"], "p", kernel_shape=[1, 1]),
      _n("Concat", ["a", "b"], "c", axis=1), _n("Conv", ["c", "wc"], "d"), _n("Add", ["d", "p"], "y")],
     r"node 'p' \(Pool\) reads 'b', which starts at channel 4 of a concatenation, inside a vector of 32"),
    ([_n("Conv", ["data", "wb"], "b"), _n("Relu", ["b"], "a"), _n("Concat", ["a", "b"], "y", axis=1)],
     r"node 'a' \(Relu\) reads 'b', which starts at channel 5"),
    # the residual z of w needs 'b', but w reads 'a' (whose vector holds 'b' then); spare lanes must be zero
    ([_n("Conv", ["data", "wa"], "a"), _n("Conv", ["data", "wb"], "b"), _n("Concat", ["a", "b"], "c", axis=1),
      _n("Conv", ["c", "wz"], "z"), _n("Conv", ["a", "ww"], "w"), _n("Add", ["w", "z"], "y")],
     r"node 'w' \(Conv\) reads 'a', which shares vectors of a concatenation with channels that node 'b' \(Conv\) "
     r"writes, and 'w' must run after 'b'"),
])
def test_reading_a_tensor_whose_vectors_another_tensor_shares_is_a_compile_error_when_it_cannot_come_first(
        nodes, message):
    """A pooling layer read lane 0 onwards: channels of 'a' instead of those of 'b'."""
    inits = {"wa": _rand(4, 3, 1, 1), "wb": _rand(5, 3, 1, 1), "wc": _rand(5, 9, 1, 1), "wz": _rand(4, 9, 1, 1),
             "ww": _rand(4, 4, 1, 1)}
    used = {t for nd in nodes for t in nd.input}
    c = {"Concat": 10, "Add": 5 if nodes[-2].output[0] == "d" else 4}[nodes[-1].op_type]
    model = _onnx(nodes, {k: v for k, v in inits.items() if k in used}, [1, 3, 4, 4], [1, c, 4, 4])
    with pytest.raises(CompileError, match=message):
        compile_model(model, "tiny", "wide")


def test_the_model_input_after_other_channels_of_a_concatenation_is_copied_into_place():
    """The host writes an input from lane 0: after other channels it would land on theirs, so an identity 1x1
    convolution (compiler/passes/align_concat.py) copies it to its channels."""
    conv = _n("Conv", ["data", "w"], "c")
    first = _verified(_onnx([conv, _n("Concat", ["data", "c"], "y", axis=1)], {"w": _rand(5, 3, 1, 1)}, [1, 3, 4, 4],
                            [1, 8, 4, 4]))
    assert not [nd for nd in first.graph.nodes() if nd.source == "Concat (alignment)"]
    after = _verified(_onnx([conv, _n("Concat", ["c", "data"], "y", axis=1)], {"w": _rand(5, 3, 1, 1)},
                            [1, 3, 4, 4], [1, 8, 4, 4]))
    assert [nd.inputs for nd in after.graph.nodes() if nd.source == "Concat (alignment)"] == [["data"]]


def test_verify_reads_a_concatenation_of_the_input_alone_and_checks_several_inputs():
    _verified(_onnx([_n("Concat", ["data"], "c", axis=1), _n("Relu", ["c"], "y")], {}, [1, 4, 3, 3], [1, 4, 3, 3]))
    graph = helper.make_graph([_n("Add", ["data", "other"], "y")], "two",
                              [helper.make_tensor_value_info(t, TensorProto.FLOAT, [1, 4, 3, 3]) for t in ("data", "other")],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    report = verify_model(model, "tiny", "wide")            # one seeded array per input
    assert report.ok and [c.tensor for c in report.layers] == ["y"] and report.layers[0].exact
    with pytest.raises(CompileError, match="give each input as a dict"):
        verify_model(model, "tiny", "wide", [np.zeros((1, 4, 3, 3), np.float32)])
