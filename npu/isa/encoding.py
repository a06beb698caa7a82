"""Binary encoding of instructions, generated from the table in ``table.py``."""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import IsaError
from .table import (BY_MNEMONIC, BY_OPCODE, DEP_BITS, DEP_MEANING, HEADER_BITS, OPCODE_BITS, WORD_BITS,
                    WORD_BYTES, InstructionSpec, Kind)

#: Most instructions a program may have for the toolkit to decode, assemble or load (a decoded instruction
#: takes about 1 KB of host memory; the largest compiled network, VGG-16 on bw-s10, has 3,356).
MAX_INSTRUCTIONS = 1 << 18


@dataclass(frozen=True)
class Instruction:
    """One decoded instruction: its table entry, raw field values and tokens.

    Field values are plain ints: strides signed, F32 as the 32-bit pattern,
    ENUM as the choice index.
    """

    spec: InstructionSpec
    fields: dict = field(default_factory=dict)
    wait: frozenset = frozenset()
    signal: frozenset = frozenset()

    @property
    def mnemonic(self) -> str:
        """The instruction's mnemonic."""
        return self.spec.mnemonic

    def __hash__(self) -> int:
        return hash((self.spec.opcode, tuple(sorted(self.fields.items())), self.wait, self.signal))


def make(mnemonic: str, wait=(), signal=(), **values) -> Instruction:
    """Build an instruction by mnemonic; omitted fields take their defaults, enum fields take names."""
    spec = BY_MNEMONIC[mnemonic]
    fields = {}
    for f in spec.fields:
        if f.name in values:
            value = values.pop(f.name)
            if f.kind is Kind.ENUM and isinstance(value, str):
                if value not in f.choices:
                    raise IsaError(f"{mnemonic}: field {f.name}={value!r} is not one of {', '.join(f.choices)}")
                value = f.choices.index(value)
            fields[f.name] = int(value)
        elif f.default is not None:
            fields[f.name] = f.default
        else:
            raise IsaError(f"{mnemonic}: field {f.name} is required")
    if values:
        raise IsaError(f"{mnemonic}: unknown field(s) {', '.join(sorted(values))}")
    return Instruction(spec, fields, frozenset(wait), frozenset(signal))


def field_range(f) -> tuple[int, int]:
    """Inclusive (low, high) of the values a field's width allows."""
    if f.signed:
        return -(1 << (f.width - 1)), (1 << (f.width - 1)) - 1
    if f.kind is Kind.COUNT:
        return 1, (1 << f.width) - 1
    if f.kind is Kind.ENUM:
        return 0, len(f.choices) - 1
    return 0, (1 << f.width) - 1


def check_fields(spec: InstructionSpec, fields: dict, where: str) -> None:
    """Raise IsaError if a field is missing, unknown or out of its range."""
    for f in spec.fields:
        if f.name not in fields:
            raise IsaError(f"{where}{spec.mnemonic}: field {f.name} missing")
        lo, hi = field_range(f)
        v = fields[f.name]
        if not lo <= v <= hi:
            raise IsaError(f"{where}{spec.mnemonic}: field {f.name}={v} outside [{lo}, {hi}]")
    extra = set(fields) - {f.name for f in spec.fields}
    if extra:
        raise IsaError(f"{where}{spec.mnemonic}: unknown field(s) {', '.join(sorted(extra))}")


def _dep_bits(spec: InstructionSpec, wait, signal, where: str) -> int:
    meaning = DEP_MEANING[spec.queue]
    bits = 0
    for pos, bit_name in enumerate(DEP_BITS):
        token = meaning.get(bit_name)
        group = wait if bit_name.startswith("wait") else signal
        if token is not None and token in group:
            bits |= 1 << pos
    allowed_wait = {t for b, t in meaning.items() if b.startswith("wait")}
    allowed_signal = {t for b, t in meaning.items() if b.startswith("signal")}
    for kind, group, allowed in (("wait", wait, allowed_wait), ("signal", signal, allowed_signal)):
        bad = set(group) - allowed
        if bad:
            raise IsaError(f"{where}{spec.mnemonic} ({spec.queue.value} stream) cannot {kind} on "
                           f"{', '.join(sorted(bad))}; allowed: {', '.join(sorted(allowed)) or 'none'}")
    return bits


def encode(instr: Instruction, index: int | None = None) -> int:
    """The 128-bit word of an instruction."""
    where = f"instruction {index}: " if index is not None else ""
    spec = instr.spec
    check_fields(spec, instr.fields, where)
    word = spec.opcode | (_dep_bits(spec, instr.wait, instr.signal, where) << OPCODE_BITS)
    for f, pos in spec.field_offsets():
        v = instr.fields[f.name] & ((1 << f.width) - 1)
        word |= v << pos
    return word


def encode_program(instrs) -> bytes:
    """Little-endian 16-byte words of a list of instructions."""
    return b"".join(encode(ins, i).to_bytes(WORD_BYTES, "little") for i, ins in enumerate(instrs))


def decode(word: int, index: int | None = None) -> Instruction:
    """The instruction of a 128-bit word; IsaError names the index and reason."""
    where = f"instruction {index}: " if index is not None else ""
    if not 0 <= word < (1 << WORD_BITS):
        raise IsaError(f"{where}word does not fit {WORD_BITS} bits", index)
    opcode = word & ((1 << OPCODE_BITS) - 1)
    spec = BY_OPCODE.get(opcode)
    if spec is None:
        raise IsaError(f"{where}unknown opcode {opcode}", index)
    if word >> spec.used_bits:
        raise IsaError(f"{where}{spec.mnemonic}: reserved bits above bit {spec.used_bits - 1} are not zero", index)
    deps = (word >> OPCODE_BITS) & ((1 << (HEADER_BITS - OPCODE_BITS)) - 1)
    meaning = DEP_MEANING[spec.queue]
    wait, signal = set(), set()
    for pos, bit_name in enumerate(DEP_BITS):
        if deps >> pos & 1:
            token = meaning.get(bit_name)
            if token is None:
                raise IsaError(f"{where}{spec.mnemonic}: dependency bit {bit_name} has no meaning on the "
                               f"{spec.queue.value} stream", index)
            (wait if bit_name.startswith("wait") else signal).add(token)
    fields = {}
    for f, pos in spec.field_offsets():
        v = (word >> pos) & ((1 << f.width) - 1)
        if f.signed and v >> (f.width - 1):
            v -= 1 << f.width
        fields[f.name] = v
    lo_hi = {f.name: field_range(f) for f in spec.fields}
    for name, v in fields.items():
        lo, hi = lo_hi[name]
        if not lo <= v <= hi:
            raise IsaError(f"{where}{spec.mnemonic}: field {name}={v} outside [{lo}, {hi}]", index)
    return Instruction(spec, fields, frozenset(wait), frozenset(signal))


def decode_program(data: bytes) -> list[Instruction]:
    """Decode a whole binary program (a multiple of 16 bytes, at most MAX_INSTRUCTIONS words)."""
    if len(data) % WORD_BYTES:
        raise IsaError(f"program is {len(data)} bytes, not a multiple of the {WORD_BYTES}-byte word")
    if len(data) // WORD_BYTES > MAX_INSTRUCTIONS:
        raise IsaError(f"program of {len(data) // WORD_BYTES:,} instructions; the toolkit decodes at most "
                       f"{MAX_INSTRUCTIONS:,} (npu.isa.encoding.MAX_INSTRUCTIONS)")
    return [decode(int.from_bytes(data[i:i + WORD_BYTES], "little"), i // WORD_BYTES)
            for i in range(0, len(data), WORD_BYTES)]
