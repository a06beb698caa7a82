"""Assembler: readable text -> validated instructions and binary words.

Syntax (docs/isa.md, "Assembly syntax")::

    ; comment (also #)
    .equ ROW, 58            ; named constant
    .region conv1           ; following instructions belong to region conv1
    start:                  ; label: index of the next instruction
        chain  n0=56, n1=56, k0=3, k1=3, c=1, r=1   wait=l2c
        s_wr   sreg=1, value=0.25
"""
from __future__ import annotations

import ast
import difflib
import operator
import re
from dataclasses import dataclass, field

import numpy as np

from ..config import NPUConfig
from .encoding import MAX_INSTRUCTIONS, Instruction, encode_program, field_range
from .errors import AsmError, IsaError
from .table import BY_MNEMONIC, DEP_MEANING, TOKEN_QUEUES, Kind

_COMMENT = re.compile(r"[;#].*$")
_LABEL = re.compile(r"^([A-Za-z_][\w.]*)\s*:\s*(.*)$")
_NAME = re.compile(r"^[A-Za-z_][\w.]*$")
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Div: operator.truediv}
#: Longest operand expression, in characters (bounds the parser's time and memory).
MAX_EXPRESSION_CHARS = 4096
#: Largest magnitude of an integer in an expression, its operands and its intermediate results: no field is wider
#: than 32 bits, and bounding the values keeps a chain of symbols that square each other from growing without end.
MAX_EXPRESSION_MAGNITUDE = 1 << 64


@dataclass
class AssembledProgram:
    """The result of assembling a text: instructions, words, symbols, regions, source lines."""

    instructions: list[Instruction]
    words: bytes
    symbols: dict[str, int] = field(default_factory=dict)
    regions: list[tuple[str, int, int]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


class _ExprError(Exception):
    pass


class _Bits(float):
    """A raw binary32 bit pattern given as bits(0x...)."""

    def __new__(cls, pattern: int):
        obj = float.__new__(cls, 0.0)
        obj.pattern = pattern
        return obj


def evaluate(text: str, symbols: dict[str, int], *, allow_float: bool = False):
    """Value of an operand expression: ints, symbols, + - * // % ( ), and for floats / and bits().

    Expressions are at most MAX_EXPRESSION_CHARS characters and integers at
    most MAX_EXPRESSION_MAGNITUDE in magnitude; _ExprError otherwise.
    """
    text = text.strip()
    if len(text) > MAX_EXPRESSION_CHARS:
        raise _ExprError(f"expression of {len(text):,} characters; the limit is {MAX_EXPRESSION_CHARS:,}")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):                  # ValueError: a literal of too many digits, a NUL
        raise _ExprError(f"cannot parse expression {_short(text)}") from None
    except (RecursionError, MemoryError):
        raise _ExprError(f"expression {_short(text)} is nested too deeply") from None

    def bounded(v):
        if isinstance(v, int) and not -MAX_EXPRESSION_MAGNITUDE <= v <= MAX_EXPRESSION_MAGNITUDE:
            raise _ExprError(f"{_short(text)}: value outside +-2**64")
        return v

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            if isinstance(node.value, float) and not allow_float:
                raise _ExprError(f"{_short(text)}: a float where an integer is needed")
            return bounded(node.value)
        if isinstance(node, ast.Name):
            if allow_float and node.id in ("nan", "inf"):
                return float(node.id)
            if node.id in symbols:
                return bounded(symbols[node.id])
            close = difflib.get_close_matches(node.id, list(symbols), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise _ExprError(f"undefined symbol {node.id!r}{hint}")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            if isinstance(node.op, ast.Div) and not allow_float:
                raise _ExprError(f"{_short(text)}: use // for integer division")
            a, b = ev(node.left), ev(node.right)
            try:
                return bounded(_BINOPS[type(node.op)](a, b))
            except ZeroDivisionError:
                raise _ExprError(f"{_short(text)}: division by zero") from None
            except OverflowError:
                raise _ExprError(f"{_short(text)}: value out of range") from None
        if (allow_float and isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "bits" and len(node.args) == 1 and not node.keywords):
            v = ev(node.args[0])
            if not isinstance(v, int) or not 0 <= v < 1 << 32:
                raise _ExprError(f"bits() takes a 32-bit pattern, got {v!r}")
            return _Bits(v)
        raise _ExprError(f"{_short(text)}: unsupported expression")

    try:
        return ev(tree)
    except RecursionError:
        raise _ExprError(f"expression {_short(text)} is nested too deeply") from None


def _short(text: str) -> str:
    """An expression as quoted in a message (long ones shortened)."""
    return repr(text) if len(text) <= 60 else repr(text[:57] + "...")


def _f32_bits(value) -> int:
    if isinstance(value, _Bits):
        return value.pattern
    with np.errstate(over="ignore"):
        return int(np.array(float(value), np.float32).view(np.uint32))      # float(): ints of any size


def _split_operands(rest: str) -> list[str]:
    """Operands separated by commas or by whitespace before a name=."""
    parts = []
    for chunk in rest.split(","):
        chunk = chunk.strip()
        if not chunk:
            continue
        # "a=1 wait=l2c" -> ["a=1", "wait=l2c"]
        pieces = re.split(r"\s+(?=[A-Za-z_]\w*\s*=)", chunk)
        parts.extend(p.strip() for p in pieces if p.strip())
    return parts


def _strip_labels(line: str) -> tuple[list[str], str]:
    """The labels at the start of a line (comment removed) and the rest of it."""
    body = _COMMENT.sub("", line).strip()
    labels = []
    while not body.startswith("."):
        m = _LABEL.match(body)
        if not m:
            break
        labels.append(m.group(1))
        body = m.group(2).strip()
    return labels, body


def assemble(text: str, config: NPUConfig | None = None, *, source: str = "<string>") -> AssembledProgram:
    """Assemble ``text``; with a ``config`` the program is also validated against that machine.

    Raises AsmError listing every error as ``source:line: message``.  A text
    of more than MAX_INSTRUCTIONS instructions is refused at the line that
    passes the limit.
    """
    errors: list[str] = []
    raw_lines = text.splitlines()
    # pass 1: labels
    symbols: dict[str, int] = {}
    label_lines: dict[str, int] = {}
    count = 0
    for lineno, line in enumerate(raw_lines, 1):
        labels, body = _strip_labels(line)
        for name in labels:
            if name in symbols:
                errors.append(f"{source}:{lineno}: duplicate label {name!r} (first defined on line "
                              f"{label_lines[name]})")
            symbols[name] = count
            label_lines[name] = lineno
        if body and not body.startswith("."):
            count += 1
            if count > MAX_INSTRUCTIONS:
                raise AsmError([f"{source}:{lineno}: more than {MAX_INSTRUCTIONS:,} instructions (the toolkit's limit, "
                                f"npu.isa.encoding.MAX_INSTRUCTIONS)"])
    # pass 2: directives and instructions
    instrs: list[Instruction] = []
    lines: list[int] = []
    regions: list[list] = []
    for lineno, line in enumerate(raw_lines, 1):
        _labels, body = _strip_labels(line)
        if not body:
            continue
        where = f"{source}:{lineno}: "
        if body.startswith("."):
            _directive(body, where, symbols, label_lines, lineno, regions, len(instrs), errors)
            continue
        ins = _instruction(body, where, symbols, errors)
        if ins is not None:
            instrs.append(ins)
            lines.append(lineno)
        else:   # keep indices aligned with pass 1 so labels stay right
            instrs.append(None)
            lines.append(lineno)
    if errors:
        raise AsmError(errors)
    region_list = []
    for i, (name, start) in enumerate(regions):
        end = regions[i + 1][1] - 1 if i + 1 < len(regions) else len(instrs) - 1
        if end >= start:
            region_list.append((name, start, end))
    if config is not None:
        from .validate import validate_program

        if not instrs:
            raise AsmError([f"{source}:{max(len(raw_lines), 1)}: the text holds no instructions (a program ends "
                            f"with halt)"])
        try:
            validate_program(instrs, config, lines=lines, source=source)
        except IsaError as exc:
            raise AsmError(str(exc).splitlines()) from None
    return AssembledProgram(instrs, encode_program(instrs), symbols, region_list, lines)


def _directive(body, where, symbols, label_lines, lineno, regions, index, errors) -> None:
    name, _, rest = body.partition(" ")
    name = name.lower()
    if name in (".equ", ".set"):
        sym, sep, expr = rest.partition(",")
        sym = sym.strip()
        if not sep or not _NAME.match(sym):
            errors.append(f"{where}{name} expects NAME, expression")
            return
        if sym in symbols and sym in label_lines:
            errors.append(f"{where}{sym!r} is already a label (line {label_lines[sym]})")
            return
        try:
            symbols[sym] = evaluate(expr, symbols)
        except _ExprError as exc:
            errors.append(f"{where}{name} {sym}: {exc}")
    elif name == ".region":
        rname = rest.strip()
        if not rname:
            errors.append(f"{where}.region needs a name")
            return
        regions.append((rname, index))
    else:
        errors.append(f"{where}unknown directive {name!r} (known: .equ, .set, .region)")


def _instruction(body: str, where: str, symbols: dict, errors: list[str]) -> Instruction | None:
    mnemonic, _, rest = body.partition(" ")
    mnemonic = mnemonic.strip().lower()
    spec = BY_MNEMONIC.get(mnemonic)
    if spec is None:
        close = difflib.get_close_matches(mnemonic, list(BY_MNEMONIC), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        errors.append(f"{where}unknown mnemonic {mnemonic!r}{hint}")
        return None
    by_name = {f.name: f for f in spec.fields}
    values: dict[str, int] = {}
    wait: set[str] = set()
    signal: set[str] = set()
    ok = True
    seen: set[str] = set()
    for operand in _split_operands(rest):
        key, eq, expr = operand.partition("=")
        key = key.strip().lower()
        if not eq:
            errors.append(f"{where}{mnemonic}: operand {operand!r} is not name=value")
            ok = False
            continue
        if key in seen:
            errors.append(f"{where}{mnemonic}: field {key} given twice")
            ok = False
            continue
        seen.add(key)
        if key in ("wait", "signal"):
            tokens = {t.strip().lower() for t in expr.split("|") if t.strip()}
            meaning = DEP_MEANING[spec.queue]
            allowed = {t for bit, t in meaning.items() if bit.startswith(key)}
            for t in sorted(tokens):
                if t not in TOKEN_QUEUES:
                    errors.append(f"{where}{mnemonic}: {key}: unknown token {t!r} (tokens: "
                                  f"{', '.join(TOKEN_QUEUES)})")
                    ok = False
                elif t not in allowed:
                    errors.append(f"{where}{mnemonic} runs on the {spec.queue.value} stream and cannot {key} on "
                                  f"{t}; allowed: {', '.join(sorted(allowed)) or 'none'}")
                    ok = False
            (wait if key == "wait" else signal).update(tokens)
            continue
        f = by_name.get(key)
        if f is None:
            close = difflib.get_close_matches(key, list(by_name), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            known = ", ".join(by_name) or "none"
            errors.append(f"{where}{mnemonic}: unknown field {key!r}{hint} (fields: {known})")
            ok = False
            continue
        try:
            if f.kind is Kind.ENUM:
                choice = expr.strip().lower()
                if choice not in f.choices:
                    raise _ExprError(f"{choice!r} is not one of {', '.join(f.choices)}")
                values[key] = f.choices.index(choice)
            elif f.kind is Kind.F32:
                values[key] = _f32_bits(evaluate(expr, symbols, allow_float=True))
            else:
                v = evaluate(expr, symbols)
                lo, hi = field_range(f)
                if not lo <= v <= hi:
                    raise _ExprError(f"value {v} outside [{lo}, {hi}] ({f.width}-bit {f.kind.value})")
                values[key] = v
        except _ExprError as exc:
            errors.append(f"{where}{mnemonic}: field {key}: {exc}")
            ok = False
    for f in spec.fields:
        if f.name not in values and f.name not in seen:
            if f.default is None:
                errors.append(f"{where}{mnemonic}: field {f.name} is required ({f.doc})")
                ok = False
            else:
                values[f.name] = f.default
    if not ok:
        return None
    return Instruction(spec, values, frozenset(wait), frozenset(signal))
