"""The fast path of the RTL core: Verilator with a C++ testbench and DRAM model, no Python per cycle.

``build(config)`` verilates npu_core for the configuration together with
``hdl/harness/npu_sim_main.cpp`` into a stand-alone executable with the "fast"
build profile of hdl/toolchain.py (Verilator -O3, C++ -O2 guided by a profile
of training runs on the kernels of hdl/pgo.py; ``NPU_RTL_PROFILE=quick``, which
the test suite sets, builds at -O0 without the profile in a fraction of the time), cached under ``build/hdl`` by a
hash of the sources, the parameters, the profile and the Verilator version; a
file lock serialises concurrent builds of one configuration.  ``run(words, dram_image,
config)`` runs one program on it: the program and the DRAM image go to the
executable as files in a temporary directory and DRAM comes back the same way.

The C++ DRAM model answers the core's AXI bursts cycle for cycle like the
cocotb testbench's cocotbext-axi AXI RAM (hdl/cosim_tb.py), so the cycle counts
(the core's own ``cycles`` output) are the same on both paths.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from npu.config import NPUConfig

from .core import BUILD, SOURCES, CoreRun, build_dir, core_parameters
from .toolchain import GENERATED, HDL, PROFILES, RTL, ToolchainError, verilator_env, verilator_root

HARNESS = HDL / "harness" / "npu_sim_main.cpp"
#: The environment variable naming the build profile of the fast path ("fast" unless it says "quick").
PROFILE_VARIABLE = "NPU_RTL_PROFILE"
#: Profiles the fast path builds with (hdl/toolchain.py PROFILES).
FAST_PATH_PROFILES = ("fast", "quick")
#: Name of the executable in the build directory.
EXECUTABLE = "npu_sim"
#: Bytes of DRAM the model holds at least (the cocotb testbench's AXI RAM size); addresses wrap modulo it.
DRAM_BYTES = 1 << 24


def build_profile() -> str:
    """The fast path's build profile: ``$NPU_RTL_PROFILE`` ("fast" by default; the test suite sets "quick").

    ToolchainError when the variable names another profile."""
    name = os.environ.get(PROFILE_VARIABLE, "fast") or "fast"
    if name not in FAST_PATH_PROFILES:
        raise ToolchainError(f"{PROFILE_VARIABLE}={name!r}: the fast path builds with one of "
                             f"{', '.join(FAST_PATH_PROFILES)}")
    return name


def _digest(config: NPUConfig) -> str:
    """Hash of everything the fast build of ``config`` depends on."""
    h = hashlib.sha256()
    headers = sorted(RTL.glob("*.vh")) + sorted(GENERATED.glob("*.vh"))
    for path in [*SOURCES, *headers, HARNESS]:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(json.dumps(core_parameters(config), sort_keys=True).encode())
    h.update(json.dumps(PROFILES[build_profile()], sort_keys=True).encode())
    version = verilator_root() / "include" / "verilated_config.h"
    h.update(version.read_bytes() if version.is_file() else b"?")
    return h.hexdigest()[:16]


def fast_build_dir(config: NPUConfig) -> Path:
    """Where the fast build of ``config`` lives: the cocotb build's name, the profile and the hash of its inputs."""
    return BUILD / f"{build_profile()}_{build_dir(config).name[len('core_'):]}_{_digest(config)}"


def _verilate(directory: Path, params: dict) -> None:
    """Generate the C++ model of npu_core with ``params`` and the testbench's makefile in ``directory``."""
    cmd = ["verilator", "--cc", "--exe", "--prefix", "Vtop", "--top-module", "npu_core", "-o", EXECUTABLE,
           "--Mdir", str(directory), *PROFILES[build_profile()]["verilator"], f"-I{GENERATED}", f"-I{RTL}",
           *(f"-G{name}={value}" for name, value in params.items()), *map(str, SOURCES), str(HARNESS)]
    _check(subprocess.run(cmd, env=_env(), capture_output=True, text=True), directory, "verilating")


def _make(directory: Path, extra: str = "", ldflags: str = "") -> None:
    """Compile the model and the testbench in ``directory`` with the profile's optimisation plus ``extra``."""
    p = PROFILES[build_profile()]
    fast = f"{p['opt_fast']} {extra}".strip()
    jobs = str(max(1, min(os.cpu_count() or 1, 4)))
    cmd = ["make", "-C", str(directory), "-f", "Vtop.mk", "-j", jobs, f"OPT_FAST={fast}", f"OPT_GLOBAL={fast}",
           f"OPT_SLOW={p['opt_slow']}", "CFG_CXXFLAGS_PCH_I=-include", f"USER_LDFLAGS={ldflags}"]
    # the wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so the split model would name its
    # precompiled header as a source file; -include makes g++ use it
    _check(subprocess.run(cmd, env=_env(), capture_output=True, text=True), directory, "compiling")


def _env() -> dict[str, str]:
    """The environment for Verilator and make."""
    env = {**os.environ, **verilator_env()}
    env.pop("MAKEFLAGS", None)              # hdl.toolchain.activate() sets the cocotb builds' -O0 there
    return env


def _check(done: subprocess.CompletedProcess, directory: Path, what: str) -> None:
    """ToolchainError with the end of the tool's output unless it succeeded."""
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        raise ToolchainError(f"{what} the fast RTL model in {directory} failed:\n{tail}")


def _clean_objects(directory: Path, *, slow: bool = True) -> None:
    """Remove the compiled objects and the executable, so that make compiles them again; with ``slow``
    false, keep the objects of the model's run-once code (compiled without the profile flags)."""
    for pattern in ("*.o", "*.a", "*.gch", EXECUTABLE):
        for path in directory.glob(pattern):
            if slow or "slow" not in path.name.lower():
                path.unlink()


def build(config: NPUConfig) -> Path:
    """The fast-path executable for ``config``, compiled the first time (several minutes: the model is
    compiled twice, around a training run for profile-guided optimisation)."""
    params = core_parameters(config)
    directory = fast_build_dir(config)
    exe = directory / EXECUTABLE
    stamp = directory / "built"
    directory.mkdir(parents=True, exist_ok=True)
    # one build at a time per configuration (parallel test workers, several sessions): the others wait
    with open(directory.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and exe.is_file():
            return exe
        _verilate(directory, params)
        _clean_objects(directory)
        if PROFILES[build_profile()]["pgo"]:
            from .pgo import training_programs

            data = directory / "pgo"
            shutil.rmtree(data, ignore_errors=True)
            _make(directory, f"-fprofile-generate -fprofile-update=single -fprofile-dir={data}",
                  "-fprofile-generate")
            for words, image in training_programs(config):
                _run_executable(exe, words, image, 200_000)
            _clean_objects(directory, slow=False)
            _make(directory, f"-fprofile-use -fprofile-correction -Wno-missing-profile -fprofile-dir={data}")
        else:
            _make(directory)
        if not exe.is_file():
            raise ToolchainError(f"building the fast RTL model in {directory} left no {EXECUTABLE}")
        (directory / "parameters.json").write_text(json.dumps({"config": config.name, "profile": build_profile(),
                                                               **params}, indent=1))
        stamp.write_text("ok\n")
    return exe


def _run_executable(exe: Path, words: bytes, dram_image: bytes, max_cycles: int) -> tuple[bytes, dict]:
    """Run ``exe`` on one program; returns DRAM after the run and the result record (cycles, error)."""
    with tempfile.TemporaryDirectory(prefix="npu-rtl-") as tmp:
        t = Path(tmp)
        (t / "program.bin").write_bytes(words)
        (t / "dram.bin").write_bytes(dram_image)
        args = [str(exe), str(t / "program.bin"), str(t / "dram.bin"), str(t / "dram_out.bin"),
                str(t / "result.json"), str(max_cycles), str(max(DRAM_BYTES, len(dram_image)))]
        done = subprocess.run(args, capture_output=True, text=True)
        report = t / "result.json"
        if done.returncode != 0 or not report.is_file():
            detail = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
            raise ToolchainError(f"the RTL simulation failed: {detail}")
        return (t / "dram_out.bin").read_bytes(), json.loads(report.read_text())


def run(words: bytes, dram_image: bytes, config: NPUConfig, *, max_cycles: int = 50_000_000) -> CoreRun:
    """Run one program on the fast-path core; returns DRAM (as long as ``dram_image``) and the cycle count.

    ToolchainError when the core flags an error, does not halt within ``max_cycles`` or the DRAM model
    refuses a burst."""
    dram, info = _run_executable(build(config), words, dram_image, max_cycles)
    if info.get("error"):
        raise ToolchainError(f"the RTL core stopped: {info['error']}")
    return CoreRun(dram, int(info["cycles"]))
