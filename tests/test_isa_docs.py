"""Generated artefacts stay in step with the code tables (instructions, formats, activation tables)."""
import re
from pathlib import Path

from npu.generate import (BEGIN, END, activation_tables_header, format_codes_header, isa_table_markdown,
                          replace_generated, verilog_header)
from npu.isa.table import INSTRUCTIONS
from npu.numerics.formats import ELEMENT_KIND_CODES, FORMATS, FloatFormat

ROOT = Path(__file__).resolve().parent.parent


def test_isa_doc_table_is_generated_from_the_code_table():
    text = (ROOT / "docs" / "isa.md").read_text()
    assert replace_generated(text) == text, "docs/isa.md is stale: python -m npu.generate --write docs/isa.md"
    generated = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert generated.strip() == isa_table_markdown().strip()
    for spec in INSTRUCTIONS:                      # every instruction and field is documented
        assert f"| `{spec.mnemonic}` | {spec.opcode} |" in generated
        for f, pos in spec.field_offsets():
            assert f"| [{pos + f.width - 1}:{pos}] | `{f.name}` | {f.width} |" in generated


def test_verilog_header_is_up_to_date():
    path = ROOT / "hdl" / "generated" / "isa_defs.vh"
    assert path.read_text() == verilog_header(), \
        "hdl/generated/isa_defs.vh is stale: python -m npu.generate --verilog hdl/generated/isa_defs.vh"
    for spec in INSTRUCTIONS:
        assert f"OP_{spec.mnemonic.upper()} = 6'd{spec.opcode};" in path.read_text()


def test_format_codes_header_is_up_to_date():
    path = ROOT / "hdl" / "generated" / "format_codes.vh"
    assert path.read_text() == format_codes_header(), \
        "hdl/generated/format_codes.vh is stale: python -m npu.generate --format-codes hdl/generated/format_codes.vh"


def test_format_codes_header_holds_the_python_codes():
    """FMT_<name> is each MFU format's code and KIND_<kind> each element kind's code, and nothing else."""
    text = (ROOT / "hdl" / "generated" / "format_codes.vh").read_text()
    found = {name: int(value) for name, value in re.findall(r"localparam integer (\w+) = (\d+);", text)}
    expected = {f"FMT_{f.name.upper()}": f.code for f in FORMATS.values() if isinstance(f, FloatFormat)}
    expected.update({f"KIND_{kind.upper()}": code for kind, code in ELEMENT_KIND_CODES.items()})
    assert found == expected


def test_activation_tables_header_is_up_to_date():
    path = ROOT / "hdl" / "generated" / "act_tables.vh"
    assert path.read_text() == activation_tables_header(), \
        "hdl/generated/act_tables.vh is stale: python -m npu.generate --act-tables hdl/generated/act_tables.vh"


def test_activation_tables_header_holds_the_numerics_tables():
    """Entry i of each Verilog table is the binary32 pattern of npu.numerics.mfu's table entry i."""
    import numpy as np

    from npu.numerics import mfu

    text = (ROOT / "hdl" / "generated" / "act_tables.vh").read_text()
    for name, (a, b) in (("SIGMOID", mfu.SIGMOID_TABLE), ("TANH", mfu.TANH_TABLE)):
        for part, values in (("A", a), ("B", b)):
            body = text.split(f"ACT_{name}_{part} = {{", 1)[1].split("};", 1)[0]
            words = [int(w, 16) for w in re.findall(r"32'h([0-9a-f]{8})", body)][::-1]
            assert words == [int(v) for v in np.asarray(values, np.float32).view(np.uint32)]
