"""Block quantisation throughput: ``npu.numerics.quantize`` against plain vectorised numpy.

Run with::

    .venv/bin/pytest benchmarks/bench_quantize.py --benchmark-only

(or ``make bench``).  Files here are named ``bench_*.py`` and live outside
``testpaths``, so the normal test run never collects them.

Each case quantises a float32 tensor of shape (-1, 128) (native_dim 128) and
times, in the same run, a numpy implementation of the same rule
(docs/numerics.md section 2) that produces the same outputs (scale codes and
element codes).  Before timing, both are checked to agree exactly (codes,
scales and decoded values).  ``extra_info`` records values/s for both and
the speed ratio.
"""
from __future__ import annotations

import time

import ml_dtypes
import numpy as np
import pytest

from npu.numerics import dequantize, quantize

NATIVE_DIM = 128
SIZES = {"8M": 8 * 2**20, "50M": 50_000_000}

# The rule's parameters, from the doc's table: kind, block, scale bits, bias, emax_elem, element params
RULES = {
    "ms-fp9": ("sm", NATIVE_DIM, 5, 15, 0, dict(f=2, mag_max=7, bits=4)),
    "mxint8": ("int", 32, 8, 127, 0, dict(f=6, mag_max=127)),
    "mxfp8_e4m3": ("fp", 32, 8, 127, 8, dict(mbits=3, emin=-6, largest=448.0, dtype=ml_dtypes.float8_e4m3fn)),
    "mxfp4_e2m1": ("fp", 32, 8, 127, 2, dict(mbits=1, emin=0, largest=6.0, dtype=ml_dtypes.float4_e2m1fn)),
}


def numpy_quantize(x: np.ndarray, name: str, chunk: int = 1 << 20):
    """The section-2 rule in vectorised numpy: (scale codes, element codes), blocks along the last axis."""
    kind, B, sbits, bias, emax, p = RULES[name]
    s_min, s_max, nan_code = -bias, (1 << sbits) - 2 - bias, (1 << sbits) - 1
    flat = x.reshape(-1, B)
    scales = np.empty(flat.shape[0], np.uint8)
    codes = np.empty(flat.shape, np.uint8)
    step = max(chunk // B, 1)
    for lo in range(0, flat.shape[0], step):
        v = flat[lo:lo + step]
        bad = ~np.isfinite(v).all(axis=1)
        a = np.abs(v).max(axis=1)
        _, e = np.frexp(a)                                            # a = m 2^e, m in [0.5, 1)
        s = np.where(a == 0, s_min, np.clip(e - 1 - emax, s_min, s_max))
        u = np.ldexp(np.where(bad[:, None], 0.0, v).astype(np.float64), -s[:, None])   # exact v / 2^s
        au = np.abs(u)
        if kind in ("sm", "int"):
            m = np.minimum(np.rint(np.ldexp(au, p["f"])), p["mag_max"]).astype(np.int64)
            neg = (u < 0) & (m > 0)
            c = np.where(neg, (m | (1 << (p["bits"] - 1))) if kind == "sm" else (-m) & 0xFF, m)
        else:
            _, ee = np.frexp(au)
            el = np.maximum(ee - 1, p["emin"]) - p["mbits"]            # exponent of the quantum
            q = np.minimum(np.ldexp(np.rint(np.ldexp(au, -el)), el), p["largest"])
            q = np.where(u < 0, -q, q)
            q = np.where(q == 0, 0.0, q)                                # +0
            c = q.astype(np.float32).astype(p["dtype"]).view(np.uint8)
        c[bad] = 0
        codes[lo:lo + step] = c
        scales[lo:lo + step] = np.where(bad, nan_code, s + bias)
    return scales.reshape(x.shape[:-1] + (x.shape[-1] // B,)), codes.reshape(x.shape)


def _decode(scales, codes, name):
    """Decoded values of the numpy version's output (for the equality check)."""
    kind, B, sbits, bias, _, p = RULES[name]
    if kind == "fp":
        el = codes.view(p["dtype"]).astype(np.float64)
    elif kind == "int":
        el = np.ldexp(codes.view(np.int8).astype(np.float64), -p["f"])
    else:
        mag = (codes & ((1 << (p["bits"] - 1)) - 1)).astype(np.float64)
        el = np.ldexp(np.where(codes >> (p["bits"] - 1), -mag, mag), -p["f"])
    sc = np.where(scales == (1 << sbits) - 1, np.nan, np.ldexp(1.0, scales.astype(np.int64) - bias))
    return el * np.repeat(sc, B, axis=-1)


_DATA: dict[str, np.ndarray] = {}


def data(size_key: str) -> np.ndarray:
    if size_key not in _DATA:
        n = SIZES[size_key]
        rng = np.random.default_rng(0)
        x = rng.standard_normal(n, dtype=np.float32).reshape(-1, NATIVE_DIM)
        x *= np.exp2(rng.integers(-20, 20, (x.shape[0], 1))).astype(np.float32)   # varied block scales
        _DATA.clear()
        _DATA[size_key] = x
    return _DATA[size_key]


ROUNDS = 3


@pytest.mark.parametrize("size_key", list(SIZES))
@pytest.mark.parametrize("name", list(RULES))
def test_quantize_throughput(benchmark, name, size_key):
    x = data(size_key)
    n = x.size
    # apples to apples: both produce the same scale codes, element codes and decoded values
    t = quantize(x, name, native_dim=NATIVE_DIM)
    ns, nc = numpy_quantize(x, name)
    assert np.array_equal(t.scales, ns)
    assert np.array_equal(t.codes, nc)
    assert np.array_equal(dequantize(t), _decode(ns, nc, name), equal_nan=True)
    del t, ns, nc

    benchmark.pedantic(quantize, args=(x, name), kwargs={"native_dim": NATIVE_DIM},
                       rounds=ROUNDS, iterations=1, warmup_rounds=1)
    npu_best = benchmark.stats.stats.min

    numpy_times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        numpy_quantize(x, name)
        numpy_times.append(time.perf_counter() - t0)
    numpy_best = min(numpy_times)

    benchmark.extra_info.update({
        "format": name,
        "values": n,
        "npu_values_per_s": n / npu_best,
        "numpy_values_per_s": n / numpy_best,
        "numpy_best_s": numpy_best,
        "speedup_vs_numpy": numpy_best / npu_best,
    })
