"""Errors of the ISA layer: encoding, decoding, validation and assembly."""
from __future__ import annotations


class IsaError(ValueError):
    """An instruction or program that the ISA does not allow (message names where and which field).

    ``index`` is the (first) offending instruction's index when known.
    """

    def __init__(self, message: str, index: int | None = None):
        super().__init__(message)
        self.index = index


class AsmError(IsaError):
    """Errors in assembly text; the message holds one ``source:line: ...`` line per error."""

    def __init__(self, errors: list[str], index: int | None = None):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors), index)
