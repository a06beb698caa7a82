"""Mixed precision: a machine holding several MVU formats, selected per chain by the ``fmt`` field.

Covers the config (``extra_formats``, ``multiplier_bits``), the ISA field, validation, the simulator's
per-mode arithmetic (bit-exact against an independent numpy evaluation and against compiler/reference.py),
the timing rule, the compiler's ``layer_formats``, the report, the program file and the command line.
"""
import json
import math
import re

import numpy as np
import pytest

from compiler.compile import PRECISIONS, compile_model, config_for_layer_formats, read_precision_file
from compiler.errors import CompileError
from compiler.models import nets
from compiler.models.graph import GraphBuilder
from compiler.reference import reference_outputs
from compiler.report import average_bits, report_table
from compiler.verify import verify_model
from npu.config import PRESETS, TINY, ConfigError, NPUConfig
from npu.hostio import run_on_simulator
from npu.isa import IsaError, assemble, decode, disassemble, encode, make, validate_program
from npu.isa.table import BY_MNEMONIC
from npu.npuz import ProgramMetadata, SchemaError, load_program
from npu.numerics import mfu
from npu.numerics.dot import matvec
from npu.numerics.formats import get_format
from npu.numerics.pack import tile_nbytes
from npu.numerics.quantize import quantize
from npu.sim import SimulationError, simulate
from npu.sim.machine import decoded_tile_nbytes
from npu_toolkit.cli import main
from npu.kernels import Builder, to_mfu

#: The block formats mixed pairwise (every one runs on ``tiny``, N = 32).
MIXABLE = ("ms-fp8", "ms-fp9", "msfp12", "mxint8", "mxfp8_e4m3", "mxfp6_e2m3", "mxfp4_e2m1", "bfp24")
PAIRS = [(a, b) for a in MIXABLE for b in MIXABLE if a != b]


def _significand(name: str) -> int:
    """Significand bits computed here from the element encoding (not from BlockFormat.significand_bits)."""
    e = get_format(name).element
    return {"sm": e.bits - 1, "int": e.bits - 1, "fp": e.mbits + 1}[e.kind]


def _signal(shape, rng, phase=0.0) -> np.ndarray:
    """A smooth, image-like signal (sinusoids over the grid) plus a little noise: a real signal's spectrum."""
    idx = np.indices(shape, dtype=np.float64)
    x = sum(np.sin(0.37 * (i + 1) * idx[i] + phase + i) for i in range(len(shape)))
    return (x + 0.1 * rng.standard_normal(shape)).astype(np.float32)


# ----- config ------------------------------------------------------------------------------------------------------
def test_significand_bits_come_from_the_format_table():
    for name in MIXABLE + ("msfp16", "mxfp8_e5m2", "mxfp6_e3m2"):
        assert get_format(name).significand_bits == _significand(name)
    assert [get_format(f).significand_bits for f in ("ms-fp9", "mxint8", "mxfp4_e2m1", "bfp24")] == [3, 7, 2, 15]


def test_presets_are_unchanged_and_extras_round_trip_through_json():
    for cfg in PRESETS.values():
        assert cfg.extra_formats == () and cfg.multiplier_bits is None
        assert cfg.mvu_modes == ((cfg.weight_format, cfg.activation_format),)
        assert cfg.mvu_passes(0) == 1
        assert NPUConfig.from_dict(json.loads(cfg.to_json())) == cfg
    cfg = TINY.replace(extra_formats=("mxint8", "bfp24"), multiplier_bits=4)
    back = NPUConfig.from_dict(json.loads(cfg.to_json()))
    assert back == cfg and back.extra_formats == ("mxint8", "bfp24")
    assert cfg.mvu_modes == (("ms-fp9", "ms-fp9"), ("mxint8", "mxint8"), ("bfp24", "bfp24"))
    assert cfg.mode_of("mxint8", "mxint8") == 1 and cfg.mode_of("mxint8", "ms-fp9") is None
    assert cfg.widest_weight_format == "bfp24"


@pytest.mark.parametrize("extras, message", [
    (("fp16",), "extra_formats[0]='fp16' is not an MVU format"),
    (("mxint8", "mxint8"), "extra_formats[1]='mxint8' is listed twice"),
    (tuple(MIXABLE[:7]) + ("msfp16",), "at most 7"),
    (("nope",), "extra_formats[0]='nope'"),
])
def test_extra_formats_are_validated(extras, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TINY.replace(extra_formats=extras)


def test_an_extra_format_whose_block_does_not_divide_n_is_refused():
    small = TINY.replace(native_dim=16, lanes=8)
    with pytest.raises(ConfigError, match=r"extra_formats\[0\]='mxint8' has blocks of 32"):
        small.replace(extra_formats=("mxint8",))
    with pytest.raises(ConfigError, match="multiplier_bits"):
        TINY.replace(multiplier_bits=0)


# ----- ISA ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", range(8))
def test_fmt_round_trips_through_words_and_text(fmt):
    for ins in (make("mv_mul", mbase=5, fmt=fmt), make("m_load", maddr=3, daddr=64, count=2, fmt=fmt)):
        assert decode(encode(ins)).fields == ins.fields
    text = f"m_load maddr=0, daddr=0, count=1, fmt={fmt} signal=l2c\nchain wait=l2c\nv_rd base=0\n" \
           f"mv_mul mbase=0, fmt={fmt}\nv_wr base=1\nend_chain\nhalt\n"
    prog = assemble(text)
    assert assemble(disassemble(prog.instructions)).words == prog.words
    assert prog.instructions[0].fields["fmt"] == fmt and prog.instructions[3].fields["fmt"] == fmt


def test_fmt_defaults_to_mode_zero():
    assert make("mv_mul", mbase=0).fields["fmt"] == 0
    assert make("m_load", maddr=0, daddr=0).fields["fmt"] == 0
    assert {f.name: f.width for f in BY_MNEMONIC["mv_mul"].fields}["fmt"] == 3


@pytest.mark.parametrize("mnemonic", ["mv_mul", "m_load"])
def test_validation_rejects_a_mode_beyond_the_config(mnemonic):
    cfg = TINY.replace(extra_formats=("mxint8",))
    load_fmt, mul_fmt = (2, 0) if mnemonic == "m_load" else (0, 2)
    text = f"m_load maddr=0, daddr=0, count=1, fmt={load_fmt} signal=l2c\nchain wait=l2c\nv_rd base=0\n" \
           f"mv_mul mbase=0, fmt={mul_fmt}\nv_wr base=1\nend_chain\nhalt\n"
    prog = assemble(text)
    validate_program(prog.instructions)                       # no config: any 3-bit mode is well formed
    with pytest.raises(IsaError, match=rf"{mnemonic}: field fmt=2 but tiny has MVU format modes 0\.\.1"):
        validate_program(prog.instructions, cfg)
    with pytest.raises(SimulationError, match=rf"{mnemonic}: field fmt=2"):
        simulate(prog.words, cfg)


def test_m_load_size_follows_its_mode():
    cfg = TINY.replace(extra_formats=("bfp24",), dram_bytes=1 << 12)
    big = tile_nbytes("bfp24", 32)
    assert big > tile_nbytes("ms-fp9", 32)
    count = (1 << 12) // big + 1                       # fits DRAM in ms-fp9, not in bfp24
    ok = [make("m_load", maddr=0, daddr=0, count=count, fmt=0), make("halt")]
    validate_program(ok, cfg)
    with pytest.raises(IsaError, match="m_load: field daddr: transfer ends at byte"):
        validate_program([make("m_load", maddr=0, daddr=0, count=count, fmt=1), make("halt")], cfg)


# ----- simulator ---------------------------------------------------------------------------------------------------
def _two_layer_program(cfg: NPUConfig, rng, fmts=(0, 1), load_fmts=None):
    """y = W2 relu(W1 x): layer 1 in mode fmts[0], layer 2 in mode fmts[1]; returns (kernel, x, w1, w2)."""
    n = cfg.native_dim
    load_fmts = load_fmts or fmts
    b = Builder(cfg)
    x = to_mfu(_signal((3, 2 * n), rng), cfg)
    w1 = (rng.standard_normal((2 * n, 2 * n)) / 8).astype(np.float32)
    w2 = (rng.standard_normal((n, 2 * n)) / 8).astype(np.float32)
    xa = b.load_vectors(x.reshape(-1, n), name="x")
    m1 = b.load_weights(w1, fmt=load_fmts[0])
    m2 = b.load_weights(w2, fmt=load_fmts[1])
    h = b.alloc(3 * 2, "h")
    out = b.alloc(3, "out")
    b.chain(n0=3, c=2, r=2, mbase=m1, fmt=fmts[0], mfu_ops=["v_relu"], rd=dict(base=xa, s_n0=2),
            wr=dict(base=h, s_n0=2, s_r=1))
    b.chain(n0=3, c=2, r=1, mbase=m2, fmt=fmts[1], rd=dict(base=h, s_n0=2), wr=dict(base=out, s_n0=1))
    daddr = b.store(out, 3)
    return b.build(daddr, (3, n)), x, w1, w2


def _numpy_two_layers(cfg, x, w1, w2, fmts):
    """The same network from npu.numerics directly: quantise, exact block dot, MFU rounding."""
    n, m = cfg.native_dim, cfg.mfu_format
    (w1f, x1f), (w2f, x2f) = cfg.mode_formats(fmts[0]), cfg.mode_formats(fmts[1])
    h = mfu.relu(mfu.accumulator_to_format(matvec(quantize(w1, w1f, n), quantize(x, x1f, n), n), m), m)
    h = np.asarray(h, np.float32)
    return np.asarray(mfu.accumulator_to_format(matvec(quantize(w2, w2f, n), quantize(h, x2f, n), n), m))


def _bits(a) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view(np.uint16 if a.dtype.itemsize == 2 else np.uint32)


@pytest.mark.parametrize("first, second", PAIRS)
def test_simulator_matches_numpy_for_every_pair_of_formats(first, second):
    cfg = TINY.replace(weight_format=first, activation_format=first, extra_formats=(second,))
    rng = np.random.default_rng(MIXABLE.index(first) * 10 + MIXABLE.index(second))
    for fmts in ((0, 1), (1, 0)):
        kernel, x, w1, w2 = _two_layer_program(cfg, rng, fmts)
        got = kernel.output(kernel.run())
        want = np.asarray(_numpy_two_layers(cfg, x, w1, w2, fmts), got.dtype)
        assert np.array_equal(_bits(got), _bits(want)), (first, second, fmts)


def test_mode_zero_tiles_run_exactly_as_on_a_single_format_machine():
    rng = np.random.default_rng(3)
    kernel, *_ = _two_layer_program(TINY, rng, (0, 0))
    plain = kernel.run()
    multi = kernel.run(config=TINY.replace(extra_formats=("mxint8", "bfp24")))
    assert np.array_equal(kernel.output(plain), kernel.output(multi))
    assert plain.stats.total_cycles == multi.stats.total_cycles


def test_multiplying_tiles_loaded_in_another_mode_is_an_error():
    cfg = TINY.replace(extra_formats=("mxint8",))
    kernel, *_ = _two_layer_program(cfg, np.random.default_rng(1), fmts=(0, 1), load_fmts=(0, 0))
    with pytest.raises(SimulationError, match=r"mv_mul.*fmt=1 \(mxint8/mxint8\) multiplies MRF tile \d+, which "
                                              r"was loaded in mode 0"):
        kernel.run()


def test_decoded_tiles_are_sized_for_the_widest_format():
    # msfp12 has blocks of 16: two weight scales per tile row on N = 32, where ms-fp9 has one
    mixed = TINY.replace(extra_formats=("msfp12",))
    assert decoded_tile_nbytes(mixed) > decoded_tile_nbytes(TINY)
    assert decoded_tile_nbytes(mixed) == decoded_tile_nbytes(TINY.replace(weight_format="msfp12",
                                                                          activation_format="msfp12"))
    assert mixed.widest_weight_format == "msfp12"
    assert TINY.replace(extra_formats=("mxint8", "bfp24")).widest_weight_format == "bfp24"


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_a_format_wider_than_the_multipliers_takes_more_passes(bits):
    cfg = TINY.replace(extra_formats=("mxint8", "bfp24"), multiplier_bits=bits)
    rng = np.random.default_rng(5)
    busy = {}
    for mode in range(3):
        kernel, *_ = _two_layer_program(cfg, rng, (mode, mode))
        busy[mode] = kernel.run("timing").stats.mvu_busy
    passes = {mode: math.ceil(max(_significand(f) for f in cfg.mode_formats(mode)) / bits) for mode in range(3)}
    for mode in (1, 2):
        assert busy[mode] * passes[0] == busy[0] * passes[mode], (bits, busy, passes)
    assert cfg.mvu_passes(2) == passes[2]
    # unset, the multipliers are as wide as the widest format: everything at full rate
    full = cfg.replace(multiplier_bits=None)
    assert full.effective_multiplier_bits == 15 and all(full.mvu_passes(m) == 1 for m in range(3))


# ----- compiler ----------------------------------------------------------------------------------------------------
def _small_net(seed=0):
    g = GraphBuilder("two_convs", seed, input_shape=(1, 8, 10, 10))
    y = g.relu(g.conv(g.input_name, 8, 32, 3, bias=True))
    y = g.relu(g.conv(y, 32, 16, 3, bias=True))
    return g.finish(y, [1, 16, 10, 10])


def _run_compiled(compiled, x):
    prog = compiled.program
    outs, result = run_on_simulator(prog, {prog.inputs[0].name: x})
    return outs[prog.outputs[0].name], result


@pytest.mark.parametrize("first, second", PAIRS)
def test_a_compiled_mixed_network_is_bit_exact_with_the_reference(first, second):
    model = _small_net()
    cfg = TINY.replace(weight_format=first, activation_format=first)
    compiled = compile_model(model, cfg, layer_formats={"conv2": second})
    assert compiled.config.extra_formats == (second,)
    x = _signal((1, 8, 10, 10), np.random.default_rng(0))
    got, _ = _run_compiled(compiled, x)
    want = reference_outputs(compiled, {compiled.program.inputs[0].name: x})
    want = next(iter(want.values()))
    assert np.array_equal(_bits(np.asarray(got, np.float16)), _bits(np.asarray(want, np.float16).reshape(got.shape)))
    fmts = {ins.spec.mnemonic: ins.fields["fmt"] for ins in decode_all(compiled.program.words)
            if ins.spec.mnemonic in ("mv_mul", "m_load") and ins.fields["fmt"]}
    assert fmts == {"mv_mul": 1, "m_load": 1}


def decode_all(words):
    from npu.isa.encoding import decode_program
    return decode_program(words)


def test_layer_formats_extend_the_machine_in_a_stable_order():
    a = config_for_layer_formats(TINY, {"x": "mxfp4", "y": "mxint8", "z": "ms-fp9", "w": "bfp24"})
    b = config_for_layer_formats(TINY, {"w": "bfp24", "y": "mxint8", "x": "mxfp4_e2m1"})
    assert a.extra_formats == b.extra_formats == ("bfp24", "mxint8", "mxfp4_e2m1")
    given = TINY.replace(extra_formats=("mxint8",))
    assert config_for_layer_formats(given, {"y": "mxint8"}) is given
    assert config_for_layer_formats(given, {"y": "bfp24"}).extra_formats == ("mxint8", "bfp24")


def test_layer_format_errors_name_the_layer_and_list_the_layers():
    model = _small_net()
    with pytest.raises(CompileError, match=r"'conv9' is no layer of the compiled graph; layers with an MVU "
                                           r"format: conv1, conv2"):
        compile_model(model, "tiny", layer_formats={"conv9": "mxint8"})
    with pytest.raises(CompileError, match=r"'globalaveragepool1' has no matrix-vector product"):
        compile_model(nets.resnet_small(), "tiny", layer_formats={"globalaveragepool1": "mxint8"})
    with pytest.raises(CompileError, match=r"layer 'conv1': format 'fp16' is neither a precision"):
        compile_model(model, "tiny", layer_formats={"conv1": "fp16"})
    with pytest.raises(CompileError, match="need MVU modes"):
        compile_model(model, "tiny", layer_formats={f"l{i}": f for i, f in enumerate(MIXABLE + ("msfp16",))})


def test_verify_reports_every_layer_of_a_mixed_compile_bit_exact():
    model = nets.resnet_small()
    layers = {"conv2": "mxint8", "conv5": "mxfp4", "conv7": "msfp12", "fc1": "bfp24"}
    compiled = compile_model(model, "tiny", "ms-fp9", layer_formats=layers)
    report = verify_model(model, compiled.config, "mixed", compiled=compiled)
    assert report.layers and all(c.exact for c in report.layers), report.table()
    meta = compiled.program.metadata.layer_formats
    assert meta["conv2"] == {"weight": "mxint8", "activation": "mxint8"}
    assert meta["conv5"]["weight"] == "mxfp4_e2m1" and meta["conv1"]["weight"] == "ms-fp9"


def test_mode_zero_programs_are_unchanged_by_a_machine_with_extra_formats():
    model = _small_net(1)
    plain = compile_model(model, "tiny", "ms-fp9")
    multi = compile_model(model, TINY.replace(extra_formats=("mxint8", "bfp24")), "ms-fp9",
                          layer_formats={"conv1": "ms-fp9"})
    assert multi.program.words == plain.program.words and multi.program.dram == plain.program.dram
    x = _signal((1, 8, 10, 10), np.random.default_rng(1))
    a, ra = _run_compiled(plain, x)
    b, rb = _run_compiled(multi, x)
    assert np.array_equal(_bits(np.asarray(a)), _bits(np.asarray(b)))
    assert ra.stats.total_cycles == rb.stats.total_cycles


def test_report_shows_formats_and_average_bits():
    model = _small_net()
    compiled = compile_model(model, "tiny", "ms-fp9", layer_formats={"conv2": "mxint8"})
    text = report_table(compiled, None)
    assert "mxint8/mxint8" in text and "ms-fp9/ms-fp9" in text
    layers = {layer.name: layer for layer in compiled.layers}
    w1, w2 = layers["conv1"].weights, layers["conv2"].weights
    assert (w1, w2) == (32 * 8 * 9, 16 * 32 * 9)
    fp9, int8 = 4 + 5 / 32, 8 + 8 / 32
    wbits, abits = average_bits(compiled)
    assert wbits == pytest.approx((fp9 * w1 + int8 * w2) / (w1 + w2))
    r1, r2 = layers["conv1"].mvu_reads, layers["conv2"].mvu_reads
    assert r1 > 0 and r2 > 0
    assert abits == pytest.approx((fp9 * r1 + int8 * r2) / (r1 + r2))
    assert f"weights {wbits:.3g}" in text


def test_program_file_keeps_the_layer_formats(tmp_path):
    compiled = compile_model(_small_net(), "tiny", "ms-fp9", layer_formats={"conv2": "mxfp6"})
    path = tmp_path / "m.npuz"
    compiled.save(path)
    back = load_program(path)
    assert back.config.extra_formats == ("mxfp6_e2m3",)
    assert back.metadata.layer_formats["conv2"] == {"weight": "mxfp6_e2m3", "activation": "mxfp6_e2m3"}
    with pytest.raises(SchemaError, match="layer_formats"):
        ProgramMetadata.from_dict({"layer_formats": {"conv2": "mxfp6"}})


# ----- command line ------------------------------------------------------------------------------------------------
def test_cli_compile_takes_a_precision_file(tmp_path, capsys):
    import onnx

    model = tmp_path / "m.onnx"
    onnx.save(_small_net(), model)
    spec = tmp_path / "p.json"
    spec.write_text(json.dumps({"default": "ms-fp9", "layers": {"conv2": "mxint8"}}))
    out = tmp_path / "m.npuz"
    assert main(["compile", str(model), "--config", "tiny", "--precision", str(spec), "-o", str(out)]) == 0
    assert "mxint8/mxint8" in capsys.readouterr().out
    assert load_program(out).metadata.layer_formats["conv2"]["weight"] == "mxint8"


@pytest.mark.parametrize("content, message", [
    ({"default": "ms-fp99"}, 'key "default"'),
    ({"layers": {"conv2": "int4"}}, "key \"layers\".'conv2'"),
    ({"layers": ["conv2"]}, 'key "layers" must be an object'),
    ({"defaults": "ms-fp9"}, "unknown key"),
])
def test_precision_file_errors_name_the_file_and_key(tmp_path, content, message):
    spec = tmp_path / "p.json"
    spec.write_text(json.dumps(content))
    with pytest.raises(CompileError, match=re.escape(str(spec)) + ".*" + re.escape(message)):
        read_precision_file(spec)


def test_cli_reports_a_bad_precision_file(tmp_path, capsys):
    spec = tmp_path / "p.json"
    spec.write_text("{not json")
    assert main(["compile", str(tmp_path / "m.onnx"), "--config", "tiny", "--precision", str(spec)]) == 2
    err = capsys.readouterr().err
    assert str(spec) in err and "invalid JSON" in err
    assert "ms-fp9" in PRECISIONS


# ----- RTL: every mode of a machine whose formats share one block size -----------------------------------------------
#: Machines for the RTL: the modes' formats share the block size (= native_dim = 32 on tiny).
RTL_MACHINES = {
    "mx": TINY.replace(weight_format="mxfp6_e2m3", activation_format="mxfp6_e2m3",
                       extra_formats=("mxint8", "mxfp4_e2m1")),
    "bfp": TINY.replace(extra_formats=("bfp24",)),
}


@pytest.mark.rtl
@pytest.mark.parametrize("machine, pairs", [("mx", [(0, 1), (1, 2), (2, 0), (2, 2)]), ("bfp", [(0, 1), (1, 0)])])
def test_the_rtl_runs_every_mode_bit_exactly(machine, pairs):
    from hdl.core import run_program
    from hdl.toolchain import ToolchainError

    cfg = RTL_MACHINES[machine]
    rng = np.random.default_rng(7)
    for fmts in pairs:
        kernel, *_ = _two_layer_program(cfg, rng, fmts)
        run = run_program(kernel.words, kernel.dram, cfg)
        sim = kernel.run()
        nbytes = kernel.out_bytes
        assert run.dram[kernel.out_addr:kernel.out_addr + nbytes] == sim.dram(kernel.out_addr, nbytes), fmts
    # multiplying tiles loaded in another mode: the simulator's SimulationError is the core's error output
    mixed, *_ = _two_layer_program(cfg, rng, (0, 1), load_fmts=(0, 0))
    with pytest.raises(ToolchainError, match="flagged an instruction"):
        run_program(mixed.words, mixed.dram, cfg)


@pytest.mark.rtl
def test_a_compiled_mixed_network_runs_on_the_rtl_like_on_the_simulator(tmp_path):
    from runtime import Session

    cfg = RTL_MACHINES["mx"]
    compiled = compile_model(_small_net(), cfg, layer_formats={"conv1": "mxfp4_e2m1", "conv2": "mxint8"})
    assert compiled.config == cfg
    path = tmp_path / "mixed.npuz"
    compiled.save(path)
    x = _signal((1, 8, 10, 10), np.random.default_rng(5))
    sim = Session(path).score_numpy_array(x)
    rtl = Session(path, backend="rtl").score_numpy_array(x)
    assert np.array_equal(_bits(np.asarray(rtl.output)), _bits(np.asarray(sim.output)))
    assert abs(rtl.stats.cycles / sim.stats.cycles - 1) < 0.5


def test_the_rtl_refuses_modes_with_different_block_sizes():
    from hdl.core import UnsupportedConfig, core_parameters

    cfg = PRESETS["tiny"].replace(native_dim=32, extra_formats=("msfp12",))
    with pytest.raises(UnsupportedConfig, match=r"do not share one block size \(ms-fp9: block 32, msfp12: block 16\)"):
        core_parameters(cfg)
