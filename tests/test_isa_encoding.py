"""Binary encoding: table-driven round trips and rejection of illegal words."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npu.isa.disassembler import disassemble
from npu.isa.assembler import assemble
from npu.isa.encoding import Instruction, decode, decode_program, encode, encode_program, field_range
from npu.isa.errors import IsaError
from npu.isa.table import DEP_MEANING, HEADER_BITS, INSTRUCTIONS, OPCODE_BITS, WORD_BITS, Kind


@st.composite
def instructions(draw):
    """Any instruction the table allows, with random in-range fields and legal tokens."""
    spec = draw(st.sampled_from(INSTRUCTIONS))
    fields = {}
    for f in spec.fields:
        lo, hi = field_range(f)
        if f.kind is Kind.F32:
            fields[f.name] = draw(st.integers(0, (1 << 32) - 1))
        else:
            fields[f.name] = draw(st.integers(lo, hi))
    meaning = DEP_MEANING[spec.queue]
    waits = [t for b, t in meaning.items() if b.startswith("wait")]
    signals = [t for b, t in meaning.items() if b.startswith("signal")]
    wait = draw(st.sets(st.sampled_from(waits))) if waits else set()
    signal = draw(st.sets(st.sampled_from(signals))) if signals else set()
    return Instruction(spec, fields, frozenset(wait), frozenset(signal))


@settings(max_examples=400, deadline=None)
@given(instructions())
def test_encode_decode_round_trip(ins):
    word = encode(ins)
    assert 0 <= word < 1 << WORD_BITS
    assert word & ((1 << OPCODE_BITS) - 1) == ins.spec.opcode
    assert decode(word) == ins


@settings(max_examples=200, deadline=None)
@given(st.lists(instructions(), min_size=1, max_size=12))
def test_binary_text_binary_round_trip(instrs):
    words = encode_program(instrs)
    assert len(words) == 16 * len(instrs)
    assert decode_program(words) == instrs
    text = disassemble(instrs)
    again = assemble(text)            # no config: encoding-level round trip only
    assert again.words == words


@settings(max_examples=400, deadline=None)
@given(st.integers(0, (1 << WORD_BITS) - 1))
def test_random_words_decode_or_are_rejected(word):
    try:
        ins = decode(word)
    except IsaError as exc:
        assert "unknown opcode" in str(exc) or "reserved bits" in str(exc) or "outside" in str(exc) \
            or "no meaning" in str(exc)
        return
    assert encode(ins) == word


def test_field_bits_do_not_overlap_and_fit_the_word():
    for spec in INSTRUCTIONS:
        used = (1 << HEADER_BITS) - 1
        for f, pos in spec.field_offsets():
            mask = ((1 << f.width) - 1) << pos
            assert used & mask == 0, (spec.mnemonic, f.name)
            used |= mask
        assert used < 1 << WORD_BITS


def test_fields_land_at_their_documented_bits():
    spec = next(s for s in INSTRUCTIONS if s.mnemonic == "v_rd")
    fields = {f.name: 0 for f in spec.fields}
    fields["s_n0"] = -1
    word = encode(Instruction(spec, fields))
    f, pos = next((f, p) for f, p in spec.field_offsets() if f.name == "s_n0")
    assert (word >> pos) & ((1 << f.width) - 1) == (1 << f.width) - 1     # two's complement
    assert word & ~(((1 << f.width) - 1) << pos) == spec.opcode
    assert decode(word).fields["s_n0"] == -1


def test_illegal_words_are_rejected_with_index_and_reason():
    with pytest.raises(IsaError, match="instruction 1: unknown opcode 63"):
        decode_program(encode_program([decode(1)]) + (63).to_bytes(16, "little"))
    halt = next(s for s in INSTRUCTIONS if s.mnemonic == "halt")
    with pytest.raises(IsaError, match="reserved bits"):
        decode(halt.opcode | 1 << 100)
    chain = next(s for s in INSTRUCTIONS if s.mnemonic == "chain")
    with pytest.raises(IsaError, match="field n0=0 outside"):
        decode(chain.opcode)                                   # all counts zero
    load = next(s for s in INSTRUCTIONS if s.mnemonic == "v_load")
    fields = {f.name: max(field_range(f)[0], 0) for f in load.fields}
    word = encode(Instruction(load, fields)) | 1 << OPCODE_BITS   # wait_prev: meaningless on the load stream
    with pytest.raises(IsaError, match="wait_prev has no meaning on the load stream"):
        decode(word)
    with pytest.raises(IsaError, match="not a multiple"):
        decode_program(bytes(17))


def test_encoder_rejects_out_of_range_fields_and_foreign_tokens():
    spec = next(s for s in INSTRUCTIONS if s.mnemonic == "v_rd")
    fields = {f.name: 0 for f in spec.fields}
    with pytest.raises(IsaError, match="s_k0=40000 outside"):
        encode(Instruction(spec, {**fields, "s_k0": 40000}))
    with pytest.raises(IsaError, match="cannot wait on c2s"):
        encode(Instruction(spec, fields, wait=frozenset({"c2s"})))


def test_f32_immediates_keep_their_bit_patterns():
    for pattern in (0x3E800000, 0x7FC00001, 0xFF800000, 0x00000001, 0x80000000):
        text = disassemble(decode_program(assemble(f"s_wr sreg=3, value=bits({pattern:#x})\nhalt").words))
        assert assemble(text).instructions[0].fields["value"] == pattern
    value = np.float32(0.1)
    ins = assemble("s_wr sreg=0, value=0.1\nhalt").instructions[0]
    assert ins.fields["value"] == int(value.view(np.uint32))
