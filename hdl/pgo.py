"""Training programs for the profile-guided build of the fast-path core (hdl/fast.py).

Small kernels of the simulator tests (npu.kernels) that
together exercise the whole core: DMA loads and stores, matrix-vector chains
(the tile engines and the block quantiser), reductions, pooling and every kind
of MFU op including the activation tables.  The profile only steers the C++
compiler's code layout, so the choice changes the model's speed, never its
results.
"""
from __future__ import annotations

import numpy as np

from npu.config import NPUConfig


def training_programs(config: NPUConfig) -> list[tuple[bytes, bytes]]:
    """(program words, DRAM image) of each training kernel that can be built for ``config``."""
    from npu import kernels as sp

    rng = np.random.default_rng(11)
    makers = (
        lambda: sp.conv2d(config, rng, h=6, w=6, cin_v=2, cout_v=2, ksize=3),
        lambda: sp.gemv(config, rng, batch=3, rows=2, k0=2, c=2),
        lambda: sp.mlp(config, rng, batch=2, d_in=2, d_hidden=2, d_out=1),
        lambda: sp.pool(config, rng, h=8, w=8, c_v=2, ksize=3, stride=2, pad=1),
        lambda: sp.global_avg_pool(config, rng, h=4, w=4, c_v=2),
        lambda: sp.elementwise(config, rng, ["vs_mul", "v_sigm", "vv_add", "v_tanh"], rows=6, cols=8),
        lambda: sp.elementwise(config, rng, ["vv_mul", "vv_add", "v_relu", "vs_max", "vv_min"], rows=6, cols=8),
        lambda: sp.lane_concat(config, rng, count=3, lo=5, hi=21),
    )
    out = []
    for make in makers:
        try:
            kernel = make()
        except Exception:       # a kernel this machine cannot hold: the others still train the model
            continue
        out.append((kernel.words, bytes(kernel.dram)))
    return out
