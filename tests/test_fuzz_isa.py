"""Fuzzing the ISA's front doors: assembly text, binary words, and the simulator that takes them.

Properties:

* the assembler either assembles a text or raises AsmError whose every
  line names the source and line (``source:N: ...``), never another
  exception, and in bounded time and memory;
* the decoder either decodes 16-byte words or raises IsaError naming the
  instruction; whatever decodes disassembles to text that assembles back
  to the same words;
* the simulator runs random words or raises SimulationError (naming the
  instruction when one is at fault), never another exception, within its
  cycle and memory budgets.

Each problem the fuzzing found is a regression test below.
"""
from __future__ import annotations

import re
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npu.config import PRESETS
from npu.isa import AsmError, IsaError, assemble, disassemble
from npu.isa.assembler import MAX_EXPRESSION_CHARS
from npu.isa.encoding import MAX_INSTRUCTIONS, decode, decode_program, encode_program, make
from npu.isa.table import INSTRUCTIONS, WORD_BYTES
from npu.sim import SimulationError, simulate

TINY = PRESETS["tiny"]
LINE = re.compile(r"^f\.s:\d+: ")
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

TOKENS = sorted({s.mnemonic for s in INSTRUCTIONS} | {f.name for s in INSTRUCTIONS for f in s.fields}) + [
    "=", ",", " ", "  ", "\n", "\t", ";", "#", ":", ".equ", ".set", ".region", ".bogus", "wait=", "signal=", "l2c",
    "c2s", "s2c", "c2l", "|", "(", ")", "+", "-", "*", "//", "/", "%", "**", "0x", "0", "1", "9", "4095", "4096",
    "99999999999", "1e308", "1.5", "-0.0", "nan", "inf", "bits(", "A", "B", "lambda", "[", "]", "'", '"', "\\",
    "\x00", "é", "\r", "<<", "not", "True", "None", "@", "A:", "A*A", "halt\n"]
text = st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=3)), max_size=50).map("".join)


def assemble_or_line_error(source: str, config=None):
    """Assemble; on AsmError check that every line names the source and line.  Returns the program or None."""
    try:
        return assemble(source, config, source="f.s")
    except AsmError as exc:
        lines = str(exc).splitlines()
        assert lines and all(LINE.match(line) for line in lines), str(exc)
        return None


@settings(FUZZ, max_examples=300)
@given(text, st.booleans())
def test_fuzz_assembler_text(source, with_config):
    prog = assemble_or_line_error(source, TINY if with_config else None)
    if prog is not None:
        assert len(prog.words) == WORD_BYTES * len(prog.instructions)


@settings(FUZZ, max_examples=150)
@given(st.lists(st.tuples(st.sampled_from([s.mnemonic for s in INSTRUCTIONS]),
                          st.lists(st.tuples(st.sampled_from(sorted({f.name for s in INSTRUCTIONS for f in s.fields})),
                                             st.one_of(st.integers(-(1 << 40), 1 << 40), st.sampled_from(
                                                 ["A*A", "1.5", "bits(0x7fc00000)", "-1", "4096", "nan", "x"]))),
                                   max_size=4)), max_size=8))
def test_fuzz_assembler_instructions(lines):
    """Real mnemonics with random fields and values: range and kind errors name the line."""
    source = ".equ A, 65536\n"
    source += "\n".join(f"{m} " + ", ".join(f"{k}={v}" for k, v in ops) for m, ops in lines) + "\nhalt\n"
    assemble_or_line_error(source, TINY)


# ----- assembler regressions ---------------------------------------------------------------------------
def bounded(source: str, config=TINY) -> str:
    """The assembler's error for ``source``, produced quickly and without growing memory."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(AsmError) as info:
            assemble(source, config, source="f.s")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 5 and peak < 64 << 20, (time.perf_counter() - t0, peak)
    assert all(LINE.match(line) for line in str(info.value).splitlines()), str(info.value)
    return str(info.value)


def test_symbols_that_square_each_other_are_bounded():
    """Found by fuzzing: each .equ squaring the previous one doubled the digits; 24 lines never finished."""
    source = ".equ A0, 99999999999\n" + "".join(f".equ A{i + 1}, A{i}*A{i}\n" for i in range(24)) + "halt\n"
    assert "f.s:2: .equ A1: 'A0*A0': value outside +-2**64" in bounded(source)


@pytest.mark.parametrize("source, message", [
    ("s_wr sreg=0, value=" + "9" * 400 + "\nhalt\n", "f.s:1: s_wr: field value:"),          # was OverflowError
    (".equ A, 1" + "0" * 30 + "\ns_wr sreg=0, value=A*1.0\nhalt\n", "value outside +-2**64"),
    ("halt\n.equ A, " + "-" * 100_000 + "1\n", "f.s:2: .equ A: expression of 100,001 characters"),   # was MemoryError
    ("halt\n.equ A, " + "1+" * 100_000 + "1\n", "f.s:2: .equ A: expression of"),            # was RecursionError
    ("halt\n.equ A, " + "-" * 4000 + "1\n", "is nested too deeply"),                      # was RecursionError
    ("halt\n.equ A, " + "(" * 500 + "1" + ")" * 500 + "\n", "cannot parse expression"),
    ("a:\nb: c:\n", "f.s:2: the text holds no instructions"),                           # named no line
    ("", "f.s:1: the text holds no instructions"),
])
def test_assembler_findings(source, message):
    assert message in bounded(source)


def test_the_instruction_limit_names_the_line():
    source = "nop\n" * MAX_INSTRUCTIONS + "halt\n"
    t0 = time.perf_counter()
    with pytest.raises(AsmError, match=f"f.s:{MAX_INSTRUCTIONS + 1}: more than {MAX_INSTRUCTIONS:,} instructions"):
        assemble(source, source="f.s")
    assert time.perf_counter() - t0 < 10
    assert MAX_EXPRESSION_CHARS == 4096


# ----- binary words --------------------------------------------------------------------------------
OPCODES = [s.opcode for s in INSTRUCTIONS]
word = st.one_of(
    st.integers(0, (1 << 128) - 1),                                              # anything
    st.builds(lambda op, rest: (rest << 6) | op, st.sampled_from(OPCODES), st.integers(0, (1 << 122) - 1)),
    st.builds(lambda op, low: (low << 6) | op, st.sampled_from(OPCODES), st.integers(0, (1 << 70) - 1)),
    st.builds(lambda spec, deps, f: spec.opcode | (deps << 6) | ((f & ((1 << (spec.used_bits - 10)) - 1)) << 10),
              st.sampled_from(INSTRUCTIONS), st.integers(0, 15), st.integers(0, (1 << 118) - 1)))


@settings(FUZZ, max_examples=400)
@given(st.lists(word, max_size=8))
def test_fuzz_decoder_and_disassembler(ws):
    data = b"".join(w.to_bytes(WORD_BYTES, "little") for w in ws)
    try:
        instrs = decode_program(data)
    except IsaError as exc:
        assert re.match(r"instruction \d+: ", str(exc)) and exc.index is not None, str(exc)
        return
    text = disassemble(data)
    assert assemble(text).words == data                       # whatever decodes round-trips through text
    assert [decode(w) for w in ws] == instrs


@settings(FUZZ, max_examples=200)
@given(st.binary(max_size=100))
def test_fuzz_decoder_on_raw_bytes(data):
    try:
        decode_program(data)
    except IsaError as exc:
        assert str(exc)


def test_decoding_is_bounded():
    t0 = time.perf_counter()
    with pytest.raises(IsaError, match=f"the toolkit decodes at most {MAX_INSTRUCTIONS:,}"):
        decode_program(bytes(WORD_BYTES * (MAX_INSTRUCTIONS + 1)))
    with pytest.raises(SimulationError, match="decodes at most"):
        simulate(bytes(WORD_BYTES * (MAX_INSTRUCTIONS + 1)), TINY)
    assert time.perf_counter() - t0 < 2


# ----- the simulator's front --------------------------------------------------------------------
@settings(FUZZ, max_examples=250)
@given(st.lists(word, max_size=8), st.booleans(), st.sampled_from(["full", "timing", "functional"]),
       st.sampled_from(["tiny", "bw-s10"]))
def test_fuzz_simulator_on_random_words(ws, halt, mode, config):
    """Random words (any bits, valid opcodes with random fields): a run, or a SimulationError naming the
    instruction (whole-program problems name none), within a small cycle and memory budget."""
    data = b"".join(w.to_bytes(WORD_BYTES, "little") for w in ws) + (encode_program([make("halt")]) if halt else b"")
    tracemalloc.start()
    try:
        simulate(data, PRESETS[config], mode=mode, cycle_budget=50_000, memory_budget=64 << 20)
    except SimulationError as exc:
        msg = str(exc)
        assert msg
        if exc.index is not None:
            assert msg.startswith(f"instruction {exc.index}"), msg
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 160 << 20, peak
