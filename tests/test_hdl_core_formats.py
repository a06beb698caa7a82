"""RTL: the whole core on another machine: MXFP8 (E4M3) blocks and fp32 MFUs (32-bit vector elements).

A separate Verilator build of the core (about 3 minutes), in its own file so
that a parallel test run can build it beside the ms-fp9 core.  MXINT8, the
other minifloats and bf16 are checked block by block in test_hdl_units.py.
"""
import pytest

from test_hdl_core import run_core_testbench

pytestmark = pytest.mark.rtl


def test_core_runs_programs_with_mx_blocks_and_fp32_mfus_bit_exactly(tmp_path):
    run_core_testbench(tmp_path, "mxfp8_e4m3", "fp32", models=False)
