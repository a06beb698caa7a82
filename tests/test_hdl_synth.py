"""RTL: the core stays synthesisable under Yosys (no latches, no combinational loops) and its synthesised
multipliers, DSP blocks and memories are the ones the machine configuration implies.

Runs the coarse stage of hdl/synth.py (elaboration, the checks, word-level optimisation and DSP mapping; no
LUT mapping, which takes about ten minutes) on the ``tiny`` core: about 4 minutes and up to 8 GB (Yosys's peak) on 2 cores.
The expectations come from the configuration and the RTL's structure (one multiplier per MVU lane, two
binary32 multipliers per MFU lane), not from a run.  The Yosys report parsers are checked on canned text
without Yosys.
"""
import shutil

import pytest

from hdl import synth
from npu.area import memory_bits
from npu.config import PRESETS

TINY = PRESETS["tiny"]
#: binary32 multipliers in each MFU lane: the multiply stage's, and the activation stage's table slope
#: (npu_mfu_mul.v, npu_mfu_act.v, both npu_fp32_ops.vh's fp32_mul); each multiplies two 24-bit significands,
#: so each takes one 27x27 DSP block.
FP32_MULS_PER_MFU_LANE = 2


@pytest.fixture(scope="module")
def tiny_coarse(tmp_path_factory):
    if shutil.which("yosys") is None:
        pytest.skip("yosys is not installed: `make setup` run as root installs it (apt-get install yosys)")
    return synth.synthesize(TINY, stage="coarse", workdir=tmp_path_factory.mktemp("synth") / "tiny", timeout=1800)


@pytest.mark.rtl
def test_core_is_synthesisable(tiny_coarse):
    r = tiny_coarse
    assert r.latches == 0, "Yosys inferred latches (see latches*.txt in the synthesis directory)"
    assert r.loops == 0, "combinational loops in the flattened core"
    assert r.check_problems == 0, "Yosys `check` found problems (undriven or multiply driven signals, loops)"
    assert r.synthesisable
    assert r.luts is None and r.longest_path is None             # the coarse stage maps no LUTs


@pytest.mark.rtl
def test_multipliers_and_dsp_blocks_follow_the_configuration(tiny_coarse):
    r, cfg = tiny_coarse, TINY
    # one exact multiplier per MVU lane: tiles x N dot-product engines x lanes, for each format mode
    assert r.multipliers_by_source.get("npu_slice_dot.v") == cfg.macs * len(cfg.mvu_modes)
    # ms-fp9 products are 4-bit sign-magnitude (3-bit magnitudes): too narrow for a DSP block, soft logic
    assert r.units["npu_slice_dot"]["instances"] == cfg.tiles * cfg.native_dim
    assert r.units["npu_slice_dot"]["dsps"] == 0 and r.soft_multipliers == cfg.macs
    # the MFUs' binary32 multipliers, one DSP block each
    fp32 = FP32_MULS_PER_MFU_LANE * cfg.mfus * cfg.native_dim
    assert r.multipliers_by_source.get("npu_fp32_ops.vh") == fp32
    for stage in ("npu_mfu_mul", "npu_mfu_act"):                 # one lane of the stage, per element and MFU
        lanes = cfg.mfus * cfg.native_dim
        assert r.units[stage]["instances"] == lanes
        assert r.units[stage]["dsps"] == lanes and r.units[stage]["hard_multipliers"] == lanes
    # the rest are the streams' address arithmetic: a few, whatever the vector width
    assert fp32 <= r.dsps <= fp32 + 32
    assert r.ffs > 0


@pytest.mark.rtl
def test_memories_are_the_rtl_register_files(tiny_coarse):
    r, cfg = tiny_coarse, TINY
    # kept as memory cells: exactly the vector memory, the matrix register file, the instruction memories
    assert r.bram_bits == memory_bits(cfg)
    by_name = {m.name.split(".")[-1].lstrip("\\"): m for m in r.memories}
    assert {"vrf", "mrf"} <= set(by_name)
    assert by_name["vrf"].depth == cfg.vrf_depth and by_name["vrf"].width == cfg.native_dim * 16
    assert by_name["mrf"].depth == cfg.mrf_tiles


# ----- the parsers, on canned Yosys output (no Yosys needed) ------------------------------------------------
def test_parsers_read_yosys_text():
    assert synth.parse_count("3 objects.") == 3
    assert synth.parse_scc("Found 0 SCCs in module npu_core.\nFound 2 SCCs.\n") == 2
    assert synth.parse_check("found logic loop in module x:\n...\nFound and reported 1 problems.\n") == (1, 1)
    assert synth.parse_ltp("Longest topological path in npu_core (length=57):\n") == 57
    with pytest.raises(synth.ToolchainError):
        synth.parse_count("no number here")
    mems = synth.parse_memories(
        "  cell $mem_v2 \\vrf\n    parameter \\MEMID \"\\\\vrf\"\n    parameter \\RD_CLK_ENABLE 3'001\n"
        "    parameter \\RD_PORTS 3\n    parameter \\SIZE 4096\n    parameter \\WIDTH 512\n    parameter \\WR_PORTS 2\n"
        "  end\n  cell $mul \\m\n  end\n")
    assert len(mems) == 1 and mems[0].bits == 4096 * 512 and mems[0].async_read_ports == 2
    assert mems[0].m20k == 3 * 103                  # 4K x 5 blocks: ceil(512 / 5) per read port
    cells = {"MISTRAL_ALUT6": 10, "MISTRAL_ALUT4": 3, "MISTRAL_ALUT_ARITH": 4, "MISTRAL_FF": 8,
             "MISTRAL_MUL27X27": 2, "MISTRAL_MUL18X18": 3, "$dffe_32": 2}
    assert synth.lut_count(cells) == 17 and synth.ff_bits(cells) == 8 + 64
    assert synth.alm_estimate(cells) == 10 + 2 + 2 and synth.dsp_blocks(cells) == (2 + 2, 5)


def test_hierarchy_counts_instances():
    stat = {"modules": {
        "npu_core": {"num_cells_by_type": {"$paramod$ab\\npu_tile_engine": 2, "MISTRAL_FF": 1}},
        "$paramod$ab\\npu_tile_engine": {"num_cells_by_type": {"npu_slice_dot": 4, "MISTRAL_FF": 10}},
        "npu_slice_dot": {"num_cells_by_type": {"MISTRAL_ALUT6": 3}}}}
    total, units = synth.hierarchy_cells(stat)
    assert total == {"MISTRAL_FF": 21, "MISTRAL_ALUT6": 24}
    assert units["npu_slice_dot"] == {"instances": 8, "cells": {"MISTRAL_ALUT6": 24}}
    assert units["npu_tile_engine"]["cells"] == {"MISTRAL_FF": 20, "MISTRAL_ALUT6": 24}
    stat["modules"]["npu_slice_dot"]["num_memory_bits"] = 64
    stat["modules"]["npu_core"]["num_memory_bits"] = 1000
    assert synth.hierarchy_memory_bits(stat) == 1000 + 8 * 64
    # Yosys 0.23 prints the hierarchy into stat -json; the reader drops those lines
    text = '{\n "modules": {\n  "npu_core": {"num_cells_by_type": {"X": 1}}\n },\n   npu_core   1\n "design": {}\n}'
    assert synth.load_stat_json(text)["modules"]["npu_core"]["num_cells_by_type"] == {"X": 1}


def test_missing_yosys_says_how_to_install(monkeypatch):
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    with pytest.raises(synth.ToolchainError, match="make setup"):
        synth.synthesize(TINY, stage="coarse")


def test_cli_refuses_what_the_rtl_cannot_build(capsys):
    from npu_toolkit.cli import main

    assert main(["synth", "--config", "bw-s10"]) == 2           # 12 tiles > N / lanes: no RTL for it
    err = capsys.readouterr().err
    assert "npu synth: error:" in err and ("cannot build machine 'bw-s10'" in err or "yosys is not installed" in err)
