"""The ``npu`` command line: asm/disasm round trip, tables, demo, error handling."""
import re
import subprocess
import sys

import numpy as np
import pytest

from npu_toolkit.cli import main
from npu.config import PRESETS
from npu_toolkit.testing.examples import conv3x3_reference, conv3x3_source


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "npu_toolkit.cli", *args], capture_output=True, text=True, timeout=120)


def test_asm_then_disasm_round_trips_through_files(tmp_path, capsys):
    src = tmp_path / "conv.s"
    src.write_text(conv3x3_source(PRESETS["tiny"]))
    out = tmp_path / "conv.bin"
    assert main(["asm", str(src), "--config", "tiny", "-o", str(out)]) == 0
    words = out.read_bytes()
    # 3 loads, chain + v_rd + mv_mul + vv_add + v_relu + v_wr + end_chain, v_store, halt
    assert len(words) % 16 == 0 and len(words) // 16 == 12
    text = tmp_path / "conv.txt"
    assert main(["disasm", str(out), "-o", str(text)]) == 0
    again = tmp_path / "again.bin"
    (tmp_path / "again.s").write_text(text.read_text())
    assert main(["asm", str(tmp_path / "again.s"), "--config", "tiny", "-o", str(again)]) == 0
    assert again.read_bytes() == words


def test_asm_reports_the_line_and_field_and_exits_2(tmp_path):
    src = tmp_path / "bad.s"
    src.write_text("nop\n  chain n0=0\n halt\n")
    proc = run_cli("asm", str(src), "--config", "tiny")
    assert proc.returncode == 2
    assert f"{src}:2:" in proc.stderr and "n0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_asm_rejects_addresses_beyond_the_configured_memory(tmp_path):
    tiny = PRESETS["tiny"]
    src = tmp_path / "big.s"
    src.write_text(f"v_load vaddr={tiny.vrf_depth}, daddr=0, rows=1, row_len=1\nhalt\n")
    proc = run_cli("asm", str(src), "--config", "tiny")
    assert proc.returncode == 2 and "vaddr" in proc.stderr and ":1:" in proc.stderr
    # the same program fits a machine with a larger vector memory
    assert run_cli("asm", str(src), "--config", "bw-s10").returncode == 0


def test_disasm_of_a_corrupt_binary_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes([63]) + bytes(15))       # opcode 63 is unassigned
    proc = run_cli("disasm", str(bad))
    assert proc.returncode == 2 and "opcode" in proc.stderr and "Traceback" not in proc.stderr
    missing = run_cli("disasm", str(tmp_path / "nope.bin"))
    assert missing.returncode == 2 and "nope.bin" in missing.stderr


def test_tables_list_every_preset_and_format(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in PRESETS:
        assert name in out
    assert main(["formats"]) == 0
    out = capsys.readouterr().out
    for name in ("ms-fp8", "ms-fp9", "msfp12", "msfp16", "mxint8", "mxfp8_e4m3", "mxfp8_e5m2",
                 "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4_e2m1", "fp16", "bf16", "fp32", "int8"):
        assert name in out
    assert main(["presets", "--show", "tiny"]) == 0
    assert '"native_dim": 32' in capsys.readouterr().out


def test_unknown_config_is_a_clear_error():
    proc = run_cli("formats", "--config", "no-such-machine")
    assert proc.returncode == 2 and "no-such-machine" in proc.stderr and "Traceback" not in proc.stderr


def test_demo_scores_images_and_writes_trace_and_chart(tmp_path):
    proc = run_cli("demo", "--config", "tiny", "--model", "resnet_small", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "top-5" in proc.stdout and "china" in proc.stdout and "chelsea" in proc.stdout
    assert "total" in proc.stdout and "util" in proc.stdout
    assert (tmp_path / "resnet_small.trace.json").stat().st_size > 0
    assert (tmp_path / "resnet_small.cycles.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _block(stdout: str, photo: str) -> list[str]:
    """The demo's lines for one photograph: its header and its five rows (NPU | onnxruntime)."""
    lines = stdout.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(f"{photo}  (logits cosine"))
    return lines[i:i + 6]


@pytest.mark.fullsize
def test_demo_names_real_classes_on_the_trained_network(tmp_path):
    """The README's first command: the trained network on bundled photographs, beside onnxruntime."""
    proc = subprocess.run([sys.executable, "-m", "npu_toolkit.cli", "demo", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    cat = _block(proc.stdout, "chelsea")
    npu_top1, ort_top1 = (re.match(r"\s*(.*?)\s+[0-9.]+\s*$", part).group(1) for part in cat[1].split("|"))
    assert any(name in npu_top1 for name in ("tabby", "tiger cat", "Egyptian cat")), cat
    assert npu_top1 == ort_top1
    assert _block(proc.stdout, "coffee")[1].strip().startswith("espresso")
    assert "top-1 agreement with onnxruntime" in proc.stdout
    assert (tmp_path / "efficientnet_lite0.cycles.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_layer_reference_matches_float_with_a_wide_format():
    """With bfp24 operands and fp32 MFU the contract's conv is float32 to ~1e-4."""
    cfg = PRESETS["tiny"].replace(weight_format="bfp24", activation_format="bfp24", mfu_format="fp32")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 4, 32)).astype(np.float32)
    w = (rng.standard_normal((32, 3, 3, 32)) / 17).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    y = conv3x3_reference(cfg, x, w, b)
    xp = np.pad(x.astype(np.float64), ((1, 1), (1, 1), (0, 0)))
    ref = np.zeros((4, 4, 32))
    for ky in range(3):
        for kx in range(3):
            ref += np.einsum("hwc,oc->hwo", xp[ky:ky + 4, kx:kx + 4], w[:, ky, kx, :].astype(np.float64))
    ref = np.maximum(ref + b, 0)
    assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("fmt", ["ms-fp9", "mxfp8_e4m3"])
def test_demo_layer_reference_is_close_in_narrow_formats(fmt):
    cfg = PRESETS["tiny"].replace(weight_format=fmt, activation_format=fmt)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 4, 64)).astype(np.float32)
    w = (rng.standard_normal((32, 3, 3, 64)) / 24).astype(np.float32)
    b = np.zeros(32, np.float32)
    y = conv3x3_reference(cfg, x, w, b).astype(np.float64)
    xp = np.pad(x.astype(np.float64), ((1, 1), (1, 1), (0, 0)))
    ref = sum(np.einsum("hwc,oc->hwo", xp[ky:ky + 4, kx:kx + 4], w[:, ky, kx, :])
              for ky in range(3) for kx in range(3))
    ref = np.maximum(ref, 0)
    cos = (y * ref).sum() / np.linalg.norm(y) / np.linalg.norm(ref)
    assert cos > 0.98


def test_run_simulates_an_assembly_file_with_trace_and_dump(tmp_path):
    import json

    from npu_toolkit.testing.examples import conv3x3_dram_image

    cfg = PRESETS["tiny"]
    src = tmp_path / "conv.s"
    src.write_text(conv3x3_source(cfg))
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 8, 64)).astype(np.float32)
    w = (rng.standard_normal((32, 3, 3, 64)) / 24).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    image = conv3x3_dram_image(cfg, x, w, b)
    (tmp_path / "image.bin").write_bytes(image)
    trace = tmp_path / "trace.json"
    dump = tmp_path / "out.bin"
    proc = run_cli("run", str(src), "--config", "tiny", "--dram", str(tmp_path / "image.bin"),
                   "--trace", str(trace), "--dump", f"{len(image)}:{8 * 8 * 32 * 2}", "--dump-to", str(dump))
    assert proc.returncode == 0, proc.stderr
    assert "total cycles" in proc.stdout and "MVU" in proc.stdout
    events = json.loads(trace.read_text())["traceEvents"]
    assert {e["args"]["name"] for e in events if e["name"] == "thread_name"} >= {"load DMA", "MVU", "MFU", "store DMA"}
    y = np.frombuffer(dump.read_bytes(), np.float16).reshape(8, 8, 32)
    assert np.array_equal(y.view(np.uint16), conv3x3_reference(cfg, x, w, b).view(np.uint16))


def test_run_reports_bad_programs_cleanly(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(16))           # a lone nop: no halt
    proc = run_cli("run", str(bad), "--config", "tiny")
    assert proc.returncode == 2 and "halt" in proc.stderr and "Traceback" not in proc.stderr


def test_run_refuses_a_program_past_its_memory_budget_naming_the_flag(tmp_path):
    """A transfer needing about 22 MiB on tiny runs under the default budget and is refused under 16 MiB."""
    src = tmp_path / "big.s"
    src.write_text("v_load vaddr=0, daddr=0, rows=1024, row_len=256\nhalt\n")
    assert main(["run", str(src), "--config", "tiny", "--mode", "functional"]) == 0
    proc = run_cli("run", str(src), "--config", "tiny", "--memory-budget", "16")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "instruction 0 v_load" in proc.stderr and "memory budget of 16.0 MiB" in proc.stderr, proc.stderr
    proc = run_cli("run", str(src), "--config", "tiny", "--memory-budget", "0")
    assert proc.returncode == 2 and "--memory-budget 0" in proc.stderr
