"""Errors raised while simulating a program."""
from __future__ import annotations


class SimulationError(RuntimeError):
    """A program did something the machine cannot do.

    ``index`` is the instruction index (None for whole-program problems),
    ``field`` the offending field when there is one.
    """

    def __init__(self, message: str, index: int | None = None, field: str | None = None,
                 mnemonic: str | None = None):
        where = []
        if index is not None:
            where.append(f"instruction {index}")
        if mnemonic:
            where.append(mnemonic)
        if field:
            where.append(f"field {field}")
        super().__init__(f"{' '.join(where)}: {message}" if where else message)
        self.index = index
        self.field = field
        self.mnemonic = mnemonic


class CycleBudgetExceeded(SimulationError):
    """The program ran past its cycle budget (a runaway or an undersized budget)."""
