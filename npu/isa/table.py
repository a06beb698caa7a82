"""The instruction table: the single source of truth for the ISA encoding.

Every instruction is one 128-bit word.  Bits [5:0] hold the opcode, bits
[9:6] the dependency-token flags, and the operand fields follow from bit 10
upwards, LSB first, in the order listed here.  The encoder, the decoder, the
assembler, the disassembler, the table in ``docs/isa.md`` and the Verilog
decoder header are all generated from :data:`INSTRUCTIONS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

WORD_BITS = 128
WORD_BYTES = WORD_BITS // 8
OPCODE_BITS = 6
DEPS_BITS = 4
HEADER_BITS = OPCODE_BITS + DEPS_BITS


class Queue(str, Enum):
    """Which of the three decoupled streams executes an instruction."""

    LOAD = "load"
    COMPUTE = "compute"
    STORE = "store"
    ALL = "all"          # halt: every stream drains and stops


class Kind(str, Enum):
    """What a field's value means; drives range checks against a config."""

    UINT = "uint"        # plain unsigned integer
    COUNT = "count"      # loop or transfer count, 1 .. 2^w-1 (0 is illegal)
    STRIDE = "stride"    # signed two's-complement address step
    VADDR = "vaddr"      # vector-memory address, in native vectors
    MADDR = "maddr"      # matrix-register-file address, in tiles
    DADDR = "daddr"      # DRAM byte address
    SREG = "sreg"        # scalar register index
    ENUM = "enum"        # small named choice
    F32 = "f32"          # IEEE binary32 bit pattern
    LANE = "lane"        # element index within a native vector
    MODE = "mode"        # MVU format mode: 0 .. len(config.extra_formats)


@dataclass(frozen=True)
class Field:
    """One operand field of an instruction word."""

    name: str
    width: int
    kind: Kind
    doc: str
    choices: tuple[str, ...] = ()     # for Kind.ENUM: value i is choices[i]
    default: int | None = None        # value used when the assembly text omits the field

    @property
    def signed(self) -> bool:
        """Whether the field is two's complement."""
        return self.kind is Kind.STRIDE


@dataclass(frozen=True)
class InstructionSpec:
    """One instruction: mnemonic, opcode, stream, operand fields, meaning."""

    mnemonic: str
    opcode: int
    queue: Queue
    fields: tuple[Field, ...]
    doc: str

    def field_offsets(self) -> list[tuple[Field, int]]:
        """Each field with its least-significant bit position in the word."""
        out, pos = [], HEADER_BITS
        for f in self.fields:
            out.append((f, pos))
            pos += f.width
        return out

    @property
    def used_bits(self) -> int:
        """Bits of the word this instruction uses (header included)."""
        return HEADER_BITS + sum(f.width for f in self.fields)


# Dependency tokens.  Header bit i of [9:6] is DEP_BITS[i].  Each stream may
# only wait on / signal the queues that touch it (see docs/isa.md).
DEP_BITS = ("wait_prev", "wait_next", "signal_prev", "signal_next")
TOKEN_QUEUES = {
    # token name: (producer stream, consumer stream)
    "l2c": (Queue.LOAD, Queue.COMPUTE),     # data loaded, compute may read it
    "c2l": (Queue.COMPUTE, Queue.LOAD),     # compute done with a buffer, load may overwrite
    "c2s": (Queue.COMPUTE, Queue.STORE),    # results written, store may send them
    "s2c": (Queue.STORE, Queue.COMPUTE),    # store done with a buffer, compute may overwrite
}
# Per stream: which token each header bit means.
DEP_MEANING = {
    Queue.LOAD: {"wait_next": "c2l", "signal_next": "l2c"},
    Queue.COMPUTE: {"wait_prev": "l2c", "wait_next": "s2c", "signal_prev": "c2l", "signal_next": "c2s"},
    Queue.STORE: {"wait_prev": "c2s", "signal_prev": "s2c"},
    Queue.ALL: {},
}

REDUCE_MODES = ("none", "sum", "max")


def _vaddr(name: str, doc: str) -> Field:
    return Field(name, 20, Kind.VADDR, doc)


def _stride(name: str, doc: str) -> Field:
    return Field(name, 16, Kind.STRIDE, doc, default=0)


def _count(name: str, width: int, doc: str) -> Field:
    return Field(name, width, Kind.COUNT, doc, default=1)


#: Width of the ``fmt`` field of mv_mul and m_load: MVU format modes 0..7 (``NPUConfig.mvu_modes``).
FMT_BITS = 3


def _fmt(doc: str) -> Field:
    return Field("fmt", FMT_BITS, Kind.MODE, doc, default=0)


_OUT_STRIDES = (
    _stride("s_n0", "address step per iteration of output loop n0"),
    _stride("s_n1", "address step per iteration of output loop n1"),
    _stride("s_r", "address step per output row r"),
)
_OPERAND = (_vaddr("base", "vector-memory address of the operand at iteration 0"),) + _OUT_STRIDES
_SREG = (Field("sreg", 4, Kind.SREG, "scalar register holding the operand"),)
_DMA = (
    _vaddr("vaddr", "vector-memory address of the first vector"),
    Field("daddr", 32, Kind.DADDR, "DRAM byte address of the first vector"),
    _count("rows", 12, "number of rows transferred"),
    _count("row_len", 12, "vectors per row (contiguous in both memories)"),
    Field("dstride", 24, Kind.UINT, "DRAM bytes between row starts", default=0),
    Field("vstride", 16, Kind.UINT, "vector-memory vectors between row starts", default=0),
)


def _mfu_vv(mnemonic: str, opcode: int, doc: str) -> InstructionSpec:
    return InstructionSpec(mnemonic, opcode, Queue.COMPUTE, _OPERAND, doc)


def _mfu_vs(mnemonic: str, opcode: int, doc: str) -> InstructionSpec:
    return InstructionSpec(mnemonic, opcode, Queue.COMPUTE, _SREG, doc)


def _mfu_v(mnemonic: str, opcode: int, doc: str) -> InstructionSpec:
    return InstructionSpec(mnemonic, opcode, Queue.COMPUTE, (), doc)


INSTRUCTIONS: tuple[InstructionSpec, ...] = (
    InstructionSpec("nop", 0, Queue.COMPUTE, (), "do nothing (may carry dependency tokens)"),
    InstructionSpec("halt", 1, Queue.ALL, (), "end of program: every stream drains, then the machine stops"),
    InstructionSpec("s_wr", 2, Queue.COMPUTE, (
        Field("sreg", 4, Kind.SREG, "scalar register to write"),
        Field("value", 32, Kind.F32, "binary32 value (bit pattern)"),
    ), "write a scalar register"),
    InstructionSpec("chain", 3, Queue.COMPUTE, (
        _count("n0", 12, "outer output loop count"),
        _count("n1", 12, "inner output loop count"),
        _count("k0", 12, "outer reduction loop count"),
        _count("k1", 12, "inner reduction loop count"),
        _count("c", 12, "contiguous vectors read per reduction step"),
        _count("r", 12, "output rows per iteration (matrix rows, or vectors)"),
        Field("reduce", 2, Kind.ENUM, "how a chain without mv_mul combines its reduction reads",
              choices=REDUCE_MODES, default=0),
    ), "open a chain and set its loop counts; carries the chain's wait tokens"),
    InstructionSpec("v_rd", 4, Queue.COMPUTE, (
        _vaddr("base", "vector-memory address read at iteration 0"),
        _stride("s_n0", "address step per iteration of output loop n0"),
        _stride("s_n1", "address step per iteration of output loop n1"),
        _stride("s_k0", "address step per iteration of reduction loop k0"),
        _stride("s_k1", "address step per iteration of reduction loop k1"),
        _stride("s_r", "address step per output row r (0 when mv_mul follows)"),
    ), "read the chain's input vectors from the vector memory"),
    InstructionSpec("mv_mul", 5, Queue.COMPUTE, (
        Field("mbase", 16, Kind.MADDR, "first tile of the row-major r x (k0*k1*c) tile matrix"),
        _fmt("MVU format mode of the chain: its weight and activation formats (0: the machine's own pair)"),
    ), "multiply the gathered input by a matrix of tiles in the MRF"),
    _mfu_vv("vv_add", 6, "x + y"),
    _mfu_vv("vv_a_sub_b", 7, "x - y"),
    _mfu_vv("vv_b_sub_a", 8, "y - x"),
    _mfu_vv("vv_mul", 9, "x * y"),
    _mfu_vv("vv_max", 10, "max(x, y)"),
    _mfu_vs("vs_add", 11, "x + s"),
    _mfu_vs("vs_mul", 12, "x * s"),
    _mfu_vs("vs_max", 13, "max(x, s)"),
    _mfu_v("v_relu", 14, "max(x, +0)"),
    _mfu_v("v_sigm", 15, "sigmoid(x), by the table in docs/numerics.md"),
    _mfu_v("v_tanh", 16, "tanh(x), by the table in docs/numerics.md"),
    InstructionSpec("v_wr", 17, Queue.COMPUTE, _OPERAND + (
        Field("lo", 12, Kind.LANE, "first element written", default=0),
        Field("hi", 13, Kind.LANE, "one past the last element written; 0 means N", default=0),
    ), "write the chain's result vectors (elements lo..hi-1) to the vector memory"),
    InstructionSpec("end_chain", 18, Queue.COMPUTE, (), "close a chain; carries the chain's signal tokens"),
    InstructionSpec("v_load", 19, Queue.LOAD, _DMA, "DMA vectors from DRAM into the vector memory"),
    InstructionSpec("v_store", 20, Queue.STORE, _DMA, "DMA vectors from the vector memory to DRAM"),
    InstructionSpec("m_load", 21, Queue.LOAD, (
        Field("maddr", 16, Kind.MADDR, "first MRF tile written"),
        Field("daddr", 32, Kind.DADDR, "DRAM byte address of the first packed tile"),
        _count("count", 16, "tiles transferred (contiguous in DRAM and MRF)"),
        _fmt("MVU format mode whose weight format the packed tiles are in (sets their byte size)"),
    ), "DMA packed weight tiles from DRAM into the matrix register file"),
    _mfu_vv("vv_min", 22, "min(x, y)"),
    _mfu_vs("vs_min", 23, "min(x, s)"),
)

#: MFU slot each MFU instruction occupies; an MFU runs mul -> add -> act in order.
MFU_SLOTS = {
    "vv_mul": 0, "vs_mul": 0,
    "vv_add": 1, "vv_a_sub_b": 1, "vv_b_sub_a": 1, "vv_max": 1, "vv_min": 1, "vs_add": 1, "vs_max": 1,
    "vs_min": 1,
    "v_relu": 2, "v_sigm": 2, "v_tanh": 2,
}
MFU_SLOT_NAMES = ("mul", "add", "act")

BY_MNEMONIC = {spec.mnemonic: spec for spec in INSTRUCTIONS}
BY_OPCODE = {spec.opcode: spec for spec in INSTRUCTIONS}


def _check_table() -> None:
    seen_ops: set[int] = set()
    for spec in INSTRUCTIONS:
        assert spec.opcode not in seen_ops and spec.opcode < (1 << OPCODE_BITS), spec.mnemonic
        seen_ops.add(spec.opcode)
        assert spec.used_bits <= WORD_BITS, (spec.mnemonic, spec.used_bits)
        names = [f.name for f in spec.fields]
        assert len(set(names)) == len(names), spec.mnemonic
        for f in spec.fields:
            if f.kind is Kind.ENUM:
                assert 0 < len(f.choices) <= (1 << f.width), (spec.mnemonic, f.name)


_check_table()
