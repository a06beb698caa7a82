"""Machine configuration: presets, derived quantities, JSON round trips, errors."""
import json

import pytest

from npu.config import MFU_FORMATS, MVU_FORMATS, PRESETS, ConfigError, NPUConfig, load_config
from npu.numerics.formats import block_formats, mfu_formats


def test_presets_model_the_published_instances():
    s10, a10, tiny = PRESETS["bw-s10"], PRESETS["bw-a10"], PRESETS["tiny"]
    # Stratix-10 class: about 96,000 MACs (published 6 x 400 x 40 = 96,000).
    assert abs(s10.macs - 96_000) / 96_000 < 0.05
    # Arria-10 class as the shipped ResNet-50 firmware needs: N = 128, >= 2 MFUs.
    assert a10.native_dim == 128 and a10.mfus >= 2
    # tiny: small enough for RTL simulation, one MX block per native vector.
    assert tiny.native_dim <= 32 and tiny.macs <= 1024 and tiny.native_dim % 32 == 0


def test_derived_quantities_follow_from_fields():
    c = PRESETS["bw-s10"]
    assert c.macs == c.tiles * c.native_dim * c.lanes
    assert c.cycles_per_tile * c.lanes >= c.native_dim
    assert c.peak_tops == pytest.approx(2 * c.macs * c.clock_mhz * 1e6 / 1e12)
    assert c.dram_bytes_per_cycle == pytest.approx(c.dram_gbps * 1e3 / c.clock_mhz)
    assert c.vector_bytes == c.native_dim * 2        # fp16 vectors


def test_format_names_and_sizes_come_from_the_format_table():
    assert MVU_FORMATS == tuple(f.name for f in block_formats())
    assert MFU_FORMATS == tuple(f.name for f in mfu_formats()) == ("fp16", "bf16", "fp32")
    sizes = {f: PRESETS["tiny"].replace(mfu_format=f).mfu_bytes for f in MFU_FORMATS}
    assert sizes == {"fp16": 2, "bf16": 2, "fp32": 4}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_json_round_trip(tmp_path, name):
    path = tmp_path / f"{name}.json"
    PRESETS[name].save(path)
    assert load_config(path) == PRESETS[name]
    assert load_config(name) is PRESETS[name]


def test_json_override_of_a_base_preset(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"base": "tiny", "name": "tiny-mx", "weight_format": "mxfp4_e2m1"}))
    cfg = load_config(path)
    assert cfg.weight_format == "mxfp4_e2m1" and cfg.native_dim == PRESETS["tiny"].native_dim


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        PRESETS["tiny"].native_dim = 64


@pytest.mark.parametrize("change, needle", [
    ({"native_dim": 100}, "native_dim=100 must be a power of two"),
    ({"lanes": 3}, "lanes=3 must divide native_dim"),
    ({"weight_format": "fp32"}, "weight_format='fp32' is not an MVU format"),
    ({"mfu_format": "ms-fp9"}, "mfu_format='ms-fp9'"),
    ({"native_dim": 16, "lanes": 8, "weight_format": "mxfp8_e4m3"}, "blocks of 32, which must divide native_dim=16"),
    ({"clock_mhz": 0}, "clock_mhz must be a positive number"),
    ({"tiles": 0}, "tiles=0 outside"),
    ({"name": 7}, "config name must be printable text"),
    ({"name": ""}, "config name must be printable text"),
    ({"name": "a\nb"}, "config name must be printable text"),
])
def test_inconsistent_configs_are_rejected_with_the_field_named(change, needle):
    with pytest.raises(ConfigError) as err:
        PRESETS["tiny"].replace(**change)
    assert needle in str(err.value)


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x",\n "native_dim": }')
    with pytest.raises(ConfigError, match=r"line 2 column \d+: invalid JSON"):
        load_config(bad)
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"base": "tiny", "natve_dim": 64}))
    with pytest.raises(ConfigError, match="unknown configuration field.*natve_dim"):
        load_config(unknown)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"name": "p", "native_dim": 32}))
    with pytest.raises(ConfigError, match="missing field"):
        load_config(partial)


def test_from_dict_accepts_exactly_the_fields():
    data = PRESETS["bw-a10"].to_dict()
    assert NPUConfig.from_dict(data) == PRESETS["bw-a10"]
