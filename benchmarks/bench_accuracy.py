"""Accuracy of the trained EfficientNet-Lite0 per precision on real photographs (the docs table's smaller run).

    .venv/bin/pytest benchmarks/bench_accuracy.py --benchmark-only -o python_files='bench_*.py' -s

Every photograph goes through ``npu verify`` (bit-exact against the numerics
contract, or the benchmark fails); the logits' cosine to onnxruntime's,
top-1 and top-5 agreement are recorded in ``extra_info`` and printed.  The
full table over 12 photographs and every precision is
``benchmarks/measure_accuracy.py --markdown``.
"""
import pytest

from measure_accuracy import measure, summary

PHOTOS = 4


@pytest.mark.parametrize("precision", ["mxint8", "mxfp8", "ms-fp9"])
def test_accuracy_on_photographs(benchmark, precision):
    (row,) = benchmark.pedantic(lambda: measure(precisions=[precision], photos=PHOTOS, say=lambda _m: None),
                                rounds=1, iterations=1)
    benchmark.extra_info.update(logits_cosine_mean=sum(row.logits_cosine) / PHOTOS,
                                logits_cosine_min=min(row.logits_cosine), top1=row.top1, top5=row.top5)
    print(f"\n{precision}: {summary(row, PHOTOS)}")
