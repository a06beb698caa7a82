"""The area proxy (npu/area.py): units, monotonicity in every machine dimension, exact memory bits, refusals.
(benchmarks/measure_synthesis.py --write-costs checks the model against the syntheses it is fitted to.)"""
import pytest

from npu import area
from npu.config import PRESETS

TINY = PRESETS["tiny"]


def test_estimate_has_units_and_a_weighted_sum():
    e = area.area_estimate(TINY)
    assert all(isinstance(v, int) and v > 0 for v in (e.luts, e.ffs, e.dsps, e.bram_bits))
    w = area.WEIGHTS
    expected = w["luts"] * e.luts + w["ffs"] * e.ffs + w["dsps"] * e.dsps + w["bram_bits"] * e.bram_bits
    assert e.equivalent == pytest.approx(expected, abs=0.1)
    assert set(e.to_dict()) == {"luts", "ffs", "dsps", "bram_bits", "equivalent"}


def test_memory_bits_are_the_rtl_memories():
    n, depth = TINY.native_dim, TINY.vrf_depth
    tile = 8 * (n + n * n * 4 // 8)                    # ms-fp9: 4-bit element codes, one scale byte per row
    expected = depth * n * 16 + TINY.mrf_tiles * (tile + 3) + 3 * 4096 * 128 + 16 * 32
    assert area.memory_bits(TINY) == expected
    wide = TINY.replace(mfu_format="fp32")
    assert area.memory_bits(wide) - area.memory_bits(TINY) == depth * n * 16


@pytest.mark.parametrize("fmt", ["ms-fp9", "mxint8"])
def test_more_hardware_costs_more(fmt):
    base = TINY.replace(weight_format=fmt, activation_format=fmt, tiles=1, lanes=8)
    est = area.area_estimate(base)
    more_tiles = area.area_estimate(base.replace(tiles=2))
    more_lanes = area.area_estimate(base.replace(lanes=16))
    more_mfus = area.area_estimate(base.replace(mfus=3))
    deeper = area.area_estimate(base.replace(vrf_depth=2 * base.vrf_depth))
    wider = area.area_estimate(base.replace(native_dim=64, lanes=16))
    for bigger in (more_tiles, more_lanes, more_mfus, wider):
        assert bigger.luts > est.luts and bigger.ffs >= est.ffs and bigger.equivalent > est.equivalent
        assert bigger.dsps >= est.dsps
    # registers grow with the rows (tiles, N); a multiplier lane and an MFU stage are combinational modules (the
    # MFU pipeline registers sit in npu_compute, fitted per vector lane at 2 MFUs: see npu/area.py)
    for bigger in (more_tiles, wider):
        assert bigger.ffs > est.ffs
    assert more_mfus.dsps > est.dsps                   # the MFU's binary32 multipliers are DSP blocks
    if fmt == "mxint8":                                # 8 x 8-bit products map to DSP blocks, ms-fp9's do not
        assert more_tiles.dsps > est.dsps and more_lanes.dsps > est.dsps
    assert deeper.bram_bits - est.bram_bits == base.vrf_depth * base.native_dim * 16
    assert (deeper.luts, deeper.ffs, deeper.dsps) == (est.luts, est.ffs, est.dsps)


def test_extra_modes_add_engines():
    mixed = TINY.replace(extra_formats=("mxint8",))
    assert area.area_estimate(mixed).luts > area.area_estimate(TINY).luts


def test_unmeasured_format_is_named(monkeypatch):
    costs = {k: dict(v) for k, v in area.COSTS.items()}
    costs["mvu_lane"].pop("ms-fp9")
    monkeypatch.setattr(area, "COSTS", costs)
    with pytest.raises(area.AreaModelError, match="ms-fp9"):
        area.area_estimate(TINY)


def test_write_ports_are_refused_unless_beyond_the_rtl():
    wide = TINY.replace(write_ports=4)
    with pytest.raises(area.AreaModelError, match="write_ports=4"):
        area.area_estimate(wide)
    one, four = area.area_estimate(TINY), area.area_estimate(wide, beyond_rtl=True)
    # three more MFU chains at the measured lane cost, and the chain-to-bank network: 4 x 32 x 16 x log2(4) muxes
    assert area.rotation_network_luts(wide) == 4 * 32 * 16 * 2 // 2
    lane = area.COSTS["mfu_lane"]["fp16"]
    extra = 3 * TINY.mfus * TINY.native_dim
    assert four.luts - one.luts == pytest.approx(extra * lane[0] + area.rotation_network_luts(wide), abs=2)
    assert four.dsps - one.dsps == pytest.approx(extra * lane[2], abs=2)
    assert four.bram_bits == one.bram_bits and four.equivalent > one.equivalent
    assert area.area_estimate(TINY, beyond_rtl=True) == one
