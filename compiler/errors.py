"""Every error the compiler raises to its users, in one place.

* ``ModelLoadError``: the file is not a readable ONNX model.
* ``UnsupportedModelError``: the model uses operators, attributes or
  shapes the compiler cannot lower; it lists every ``Problem`` at once.
* ``CompileError``: the model cannot be mapped onto the chosen machine.
* ``MemoryPlanError``: the buffers alive at one step do not fit the vector
  memory (the planner's own signal; ``place`` turns it into spilling or a
  ``CompileError``).
"""
from __future__ import annotations

from dataclasses import dataclass


class ModelLoadError(ValueError):
    """The file is not a readable ONNX model (names the file and what is wrong)."""


@dataclass(frozen=True)
class Problem:
    """One reason a model cannot be compiled, tied to a node."""

    node: str
    op_type: str
    message: str

    def __str__(self) -> str:
        return f"node {self.node!r} ({self.op_type}): {self.message}"


class UnsupportedModelError(ValueError):
    """The model uses operators, attributes or shapes the compiler cannot lower; lists every problem."""

    def __init__(self, problems: list[Problem], source: str = "model"):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s) must be fixed before it can be compiled:\n"
                         f"{lines}")


class CompileError(ValueError):
    """The model cannot be mapped onto the chosen machine (names the layer and the limit)."""


class MemoryPlanError(ValueError):
    """The buffers alive at some step do not fit the memory; ``step`` and ``alive`` say where and which."""

    def __init__(self, message: str, step: int = -1, alive: tuple[str, ...] = ()):
        super().__init__(message)
        self.step = step
        self.alive = alive


#: The errors a command line reports as one message (not a traceback).
USER_ERRORS = (ModelLoadError, UnsupportedModelError, CompileError)
