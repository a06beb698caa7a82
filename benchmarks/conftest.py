"""Print the throughput figures kept in ``benchmark.extra_info`` after a benchmark run."""
import npu._threads  # noqa: F401  (before numpy loads OpenBLAS: see npu/_threads.py)


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    rows = [b for b in getattr(session, "benchmarks", []) or [] if "npu_values_per_s" in (b.extra_info or {})]
    if not rows:
        return
    tr = terminalreporter
    tr.section("quantisation throughput (best of the rounds)")
    tr.write_line(f"{'case':44s} {'npu Mval/s':>11s} {'numpy Mval/s':>13s} {'speedup':>8s}")
    for b in rows:
        e = b.extra_info
        tr.write_line(f"{b.name:44s} {e['npu_values_per_s'] / 1e6:11.1f} {e['numpy_values_per_s'] / 1e6:13.1f} "
                      f"{e['speedup_vs_numpy']:8.1f}x")
