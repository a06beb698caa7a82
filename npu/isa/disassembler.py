"""Disassembler: instructions or binary words -> canonical assembly text."""
from __future__ import annotations

import numpy as np

from .encoding import Instruction, decode_program
from .table import Kind


def format_f32(pattern: int) -> str:
    """Shortest text that assembles back to this binary32 pattern."""
    value = np.array(pattern, np.uint32).view(np.float32)
    if np.isnan(value):
        return f"bits({pattern:#010x})"
    if np.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = np.format_float_positional(value, unique=True, trim="-")
    if len(text) > 16:
        text = np.format_float_scientific(value, unique=True, trim="-")
    if not any(ch in text for ch in ".e"):
        text += ".0"                         # keep it a float literal (and the sign of -0.0)
    back = np.array(float(text), np.float32).view(np.uint32)
    return text if int(back) == pattern else f"bits({pattern:#010x})"


def format_instruction(ins: Instruction) -> str:
    """One line of assembly for an instruction."""
    ops = []
    for f in ins.spec.fields:
        v = ins.fields[f.name]
        if f.default is not None and v == f.default:
            continue
        if f.kind is Kind.ENUM:
            text = f.choices[v]
        elif f.kind is Kind.F32:
            text = format_f32(v)
        elif f.kind in (Kind.DADDR,) and v >= 4096:
            text = f"{v:#x}"
        else:
            text = str(v)
        ops.append(f"{f.name}={text}")
    line = f"{ins.spec.mnemonic:<10} {', '.join(ops)}".rstrip()
    deps = []
    if ins.wait:
        deps.append("wait=" + "|".join(sorted(ins.wait)))
    if ins.signal:
        deps.append("signal=" + "|".join(sorted(ins.signal)))
    if deps:
        line = f"{line:<60} {' '.join(deps)}"
    return line.rstrip()


def disassemble(program, *, show_index: bool = False) -> str:
    """Canonical text of a program (instructions or bytes); it re-assembles to the same words."""
    instrs = decode_program(program) if isinstance(program, (bytes, bytearray)) else list(program)
    out = []
    width = len(str(max(len(instrs) - 1, 0)))
    for i, ins in enumerate(instrs):
        line = format_instruction(ins)
        if ins.spec.mnemonic == "chain" or (i and instrs[i - 1].spec.mnemonic == "end_chain"):
            pass
        indent = "    " if ins.spec.mnemonic not in ("chain", "end_chain", "halt") and _in_chain(instrs, i) else ""
        text = f"{indent}{line}"
        out.append(f"{i:>{width}}: {text}" if show_index else text)
    return "\n".join(out) + "\n"


def _in_chain(instrs, i: int) -> bool:
    for j in range(i - 1, -1, -1):
        name = instrs[j].spec.mnemonic
        if name == "chain":
            return True
        if name == "end_chain":
            return False
    return False
