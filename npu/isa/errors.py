"""Errors of the ISA layer: encoding, decoding, validation and assembly."""
from __future__ import annotations


class IsaError(ValueError):
    """An instruction or program that the ISA does not allow (message names where and which field)."""


class AsmError(IsaError):
    """Errors in assembly text; the message holds one ``source:line: ...`` line per error."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))
