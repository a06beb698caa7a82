"""The instruction set: one table (table.py) drives encoding, assembly, and (through npu.generate) docs and the
Verilog header."""
from .assembler import AssembledProgram, assemble
from .disassembler import disassemble
from .encoding import Instruction, decode, decode_program, encode, encode_program, make
from .errors import AsmError, IsaError
from .validate import validate_program

__all__ = ["AssembledProgram", "assemble", "disassemble", "Instruction", "decode", "decode_program", "encode",
           "encode_program", "make", "AsmError", "IsaError", "validate_program"]
