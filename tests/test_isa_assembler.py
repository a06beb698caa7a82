"""Assembler and validator: syntax, symbols, regions, and every error naming line and field."""
import re
from pathlib import Path

import pytest

from npu.config import PRESETS
from npu_toolkit.testing.examples import conv3x3_source
from npu.isa.assembler import assemble
from npu.isa.disassembler import disassemble
from npu.isa.errors import AsmError, IsaError
from npu.isa.validate import instruction_groups, mfu_assignment, validate_program

TINY = PRESETS["tiny"]
DOCS = Path(__file__).resolve().parent.parent / "docs"


def errors_of(text, config=TINY):
    with pytest.raises(AsmError) as err:
        assemble(text, config, source="prog.s")
    return str(err.value).splitlines()


@pytest.mark.parametrize("preset", ["tiny", "bw-a10", "bw-s10"])
def test_builtin_conv_program_assembles_and_round_trips(preset):
    cfg = PRESETS[preset]
    prog = assemble(conv3x3_source(cfg), cfg)
    names = [i.mnemonic for i in prog.instructions]
    assert names == ["v_load", "v_load", "m_load", "chain", "v_rd", "mv_mul", "vv_add", "v_relu", "v_wr",
                     "end_chain", "v_store", "halt"]
    assert [r[0] for r in prog.regions] == ["load", "conv", "store"]
    assert prog.regions[1] == ("conv", 3, 9)
    again = assemble(disassemble(prog.instructions), cfg)
    assert again.words == prog.words


def test_isa_doc_example_assembles_on_tiny():
    text = (DOCS / "isa.md").read_text()
    example = text.split("### Example: 3x3 convolution", 1)[1].split("```")[1]
    prog = assemble(example, TINY, source="isa.md")
    assert len(prog.instructions) == 12
    assert prog.words == assemble(conv3x3_source(TINY), TINY).words


def test_symbols_labels_and_expressions():
    prog = assemble("""
        .equ W, 56
        .equ ROW, (W + 2) * 2     ; 116
    start:
        nop
    next: nop                     # label and instruction on one line
        s_wr sreg=1, value=1/49
        v_load vaddr=ROW*3 - 1, daddr=0x1_000, rows=next+1, row_len=ROW // 4 % 7, dstride=0b100
        halt
    """, TINY)
    ld = prog.instructions[3]
    assert prog.symbols["start"] == 0 and prog.symbols["next"] == 1 and prog.symbols["ROW"] == 116
    assert ld.fields == {"vaddr": 347, "daddr": 4096, "rows": 2, "row_len": 1, "dstride": 4, "vstride": 0}
    assert prog.lines == [5, 6, 7, 8, 9]


def test_every_error_is_reported_with_its_line_and_field():
    lines = errors_of("""nop
vv_ad base=1
chain n0=0, n1=2
v_load vaddr=1, daddr=0, rows=1, row_len=1, colour=3
v_load vaddr=1, vaddr=2, daddr=0, rows=1, row_len=1
m_load maddr=0, count=2
s_wr sreg=1, value=UNDEFINED_THING
v_store vaddr=0, daddr=0, rows=1, row_len=1   wait=l2c
chain n0=1 reduce=mean
.bogus 1
halt""")
    joined = "\n".join(lines)
    assert re.search(r"prog\.s:2: unknown mnemonic 'vv_ad'; did you mean vv_add\?", joined)
    assert re.search(r"prog\.s:3: chain: field n0: value 0 outside \[1, 4095\]", joined)
    assert re.search(r"prog\.s:4: v_load: unknown field 'colour'", joined)
    assert re.search(r"prog\.s:5: v_load: field vaddr given twice", joined)
    assert re.search(r"prog\.s:6: m_load: field daddr is required", joined)
    assert re.search(r"prog\.s:7: s_wr: field value: undefined symbol 'UNDEFINED_THING'", joined)
    assert re.search(r"prog\.s:8: v_store runs on the store stream and cannot wait on l2c; allowed: c2s", joined)
    assert re.search(r"prog\.s:9: chain: field reduce: 'mean' is not one of none, sum, max", joined)
    assert re.search(r"prog\.s:10: unknown directive '.bogus'", joined)
    assert len(lines) == 9


def test_duplicate_labels_and_bad_expressions():
    lines = errors_of("a: nop\na: nop\nv_load vaddr=1/2, daddr=0, rows=1, row_len=1\nhalt")
    assert any("prog.s:2: duplicate label 'a' (first defined on line 1)" in x for x in lines)
    assert any("prog.s:3:" in x and "use // for integer division" in x for x in lines)


def chain_text(counts="n0=4, n1=4", rd="base=0, s_n0=4, s_n1=1", body="", wr="base=100, s_n0=4, s_n1=1"):
    return f"chain {counts}\nv_rd {rd}\n{body}v_wr {wr}\nend_chain\nhalt\n"


def test_address_extents_are_checked_against_the_config():
    depth = TINY.vrf_depth
    # last vector reached: base + 3*s_n0 + 3*s_n1 = depth - 1 -> legal; one more -> illegal
    ok = chain_text(rd=f"base={depth - 1 - 15}, s_n0=4, s_n1=1")
    assemble(ok, TINY)
    lines = errors_of(chain_text(rd=f"base={depth - 15}, s_n0=4, s_n1=1"))
    assert lines and "prog.s:2:" in lines[0] and "v_rd: field base reaches vector addresses" in lines[0]
    assert f"{depth - 15}..{depth}" in lines[0]
    neg = errors_of(chain_text(wr="base=2, s_n0=-1, s_n1=1"))   # reaches -1..5
    assert "prog.s:3:" in neg[0] and "v_wr: field base" in neg[0] and "0..4095" in neg[0]
    # matrix tiles: r * k0*k1*c tiles from mbase must fit the MRF
    tiles = TINY.mrf_tiles
    mv = chain_text(counts="n0=1, n1=1, k0=1, k1=1, c=2, r=2", rd="base=0", body=f"mv_mul mbase={tiles - 4}\n")
    assemble(mv, TINY)
    lines = errors_of(chain_text(counts="n0=1, n1=1, k0=1, k1=1, c=2, r=2", rd="base=0",
                                 body=f"mv_mul mbase={tiles - 3}\n"))
    assert "mv_mul: field mbase" in lines[0] and f"{tiles - 3}..{tiles}" in lines[0]
    # DMA into the MRF and out of DRAM
    assert "m_load: field maddr" in errors_of(f"m_load maddr={tiles - 1}, daddr=0, count=2\nhalt")[0]
    assert "beyond DRAM" in errors_of(f"v_store vaddr=0, daddr={TINY.dram_bytes - 64}, rows=1, row_len=2\nhalt")[0]


def test_chain_grammar_rules():
    assert "must end with halt" in errors_of("nop")[0]
    assert "halt must be the last" in "\n".join(errors_of("halt\nnop\nhalt"))
    assert "outside a chain" in errors_of("v_relu\nhalt")[0]
    assert "not closed by end_chain" in errors_of("chain\nv_rd base=0\nv_wr base=1\nhalt")[0]
    assert "starts with v_rd" in errors_of("chain\nv_relu\nv_wr base=1\nend_chain\nhalt")[0]
    assert "exactly one v_wr" in errors_of("chain\nv_rd base=0\nend_chain\nhalt")[0]
    assert "must follow v_rd directly" in errors_of(
        "chain\nv_rd base=0\nv_relu\nmv_mul mbase=0\nv_wr base=1\nend_chain\nhalt")[0]
    assert "reduce=sum but the chain has mv_mul" in errors_of(
        "chain reduce=sum\nv_rd base=0\nmv_mul mbase=0\nv_wr base=1\nend_chain\nhalt")[0]
    assert "k0, k1, c must be 1" in errors_of("chain k0=3\nv_rd base=0\nv_wr base=9\nend_chain\nhalt")[0]
    assert "end_chain cannot wait" in errors_of("chain\nv_rd base=0\nv_wr base=1\nend_chain wait=l2c\nhalt")[0]
    assert "chain cannot signal" in errors_of("chain signal=c2s\nv_rd base=0\nv_wr base=1\nend_chain\nhalt")[0]
    assert "lo < hi" in errors_of("chain\nv_rd base=0\nv_wr base=1, lo=5, hi=5\nend_chain\nhalt")[0]
    assert "scalar registers" in "\n".join(
        errors_of("s_wr sreg=15, value=1.0\nhalt", TINY.replace(scalar_regs=8)))


def test_mfu_capacity_follows_the_slot_rule():
    body = "vv_add base=200\nvv_add base=201\nv_relu\n"          # add | add, act -> 2 MFUs
    assemble(chain_text(body=body), TINY)
    one = TINY.replace(mfus=1)
    lines = errors_of(chain_text(body=body), one)
    assert "MFU op 2 (vv_add) needs MFU 2 but the machine has 1" in lines[0]
    assert mfu_assignment(["vv_mul", "vv_add", "v_sigm", "vs_mul", "v_tanh"]) == [(0, 0), (0, 1), (0, 2),
                                                                                  (1, 0), (1, 2)]
    assert mfu_assignment(["v_relu", "vv_mul"]) == [(0, 2), (1, 0)]
    assert mfu_assignment(["vs_min", "v_relu"]) == [(0, 1), (0, 2)]            # ReLU6 on one MFU
    assert mfu_assignment(["vs_max", "vs_min"]) == [(0, 1), (1, 1)]            # a clip needs two


def test_validator_alone_reports_instruction_indices():
    prog = assemble("chain\nv_rd base=0\nv_wr base=1\nend_chain\nhalt")      # no config: grammar only
    with pytest.raises(IsaError, match=r"instruction 2: v_wr: field base reaches vector addresses 1\.\.1"):
        validate_program(prog.instructions, TINY.replace(vrf_depth=1))


def test_instruction_groups_walk_chains_singles_and_unclosed_chains():
    prog = assemble("nop\nchain\nv_rd base=0\nv_relu\nv_wr base=1\nend_chain\nhalt").instructions
    walk = [(i, [ins.mnemonic for ins in group]) for i, group in instruction_groups(prog)]
    assert walk == [(0, ["nop"]), (1, ["chain", "v_rd", "v_relu", "v_wr", "end_chain"]), (6, ["halt"])]
    # an unclosed chain stops before the first instruction that is not a chain part; the walk goes on there
    broken = prog[1:4] + prog[:1] + prog[4:]          # chain v_rd v_relu nop v_wr end_chain halt
    walk = [(i, [ins.mnemonic for ins in group]) for i, group in instruction_groups(broken)]
    assert walk == [(0, ["chain", "v_rd", "v_relu"]), (3, ["nop"]), (4, ["v_wr"]), (5, ["end_chain"]),
                    (6, ["halt"])]
