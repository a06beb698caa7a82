"""Generated artefacts stay in step with the instruction table."""
from pathlib import Path

from npu.isa.docgen import BEGIN, END, isa_table_markdown, replace_generated, verilog_header
from npu.isa.table import INSTRUCTIONS

ROOT = Path(__file__).resolve().parent.parent


def test_isa_doc_table_is_generated_from_the_code_table():
    text = (ROOT / "docs" / "isa.md").read_text()
    assert replace_generated(text) == text, "docs/isa.md is stale: python -m npu.isa.docgen --write docs/isa.md"
    generated = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert generated.strip() == isa_table_markdown().strip()
    for spec in INSTRUCTIONS:                      # every instruction and field is documented
        assert f"| `{spec.mnemonic}` | {spec.opcode} |" in generated
        for f, pos in spec.field_offsets():
            assert f"| [{pos + f.width - 1}:{pos}] | `{f.name}` | {f.width} |" in generated


def test_verilog_header_is_up_to_date():
    path = ROOT / "hdl" / "generated" / "isa_defs.vh"
    assert path.read_text() == verilog_header(), \
        "hdl/generated/isa_defs.vh is stale: python -m npu.isa.docgen --verilog hdl/generated/isa_defs.vh"
    for spec in INSTRUCTIONS:
        assert f"OP_{spec.mnemonic.upper()} = 6'd{spec.opcode};" in path.read_text()
