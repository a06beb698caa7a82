"""The simulator's fused MVU chain: exact block sums, accumulation and the MFU pipeline in one pass.

A chain with ``mv_mul`` computes, for each iteration ``m`` and output group
``g``, an accumulator row ``acc[c] = sum_b fl32(P_b)`` in block order
(docs/numerics.md, "Matrix-vector multiply") and runs the MFU pipeline on
it.  Here one Numba pass does all of it, a tile of ``MR`` rows x up to 64
columns at a time: no block-sum array is ever written to memory.

The exact block sums are integer dot products on AVX-512 VNNI, 64 (int8,
``vpdpbusd``) or 32 (int16, ``vpdpwssd``) multiply-adds per instruction,
exactly (int32 accumulation without saturation; every partial sum is bounded
below 2**31).  The tile kernels are LLVM IR in Numba intrinsics, defined in
this file with the kernels that inline them, so that editing them
invalidates those kernels' on-disk Numba caches (Numba checks only the
defining file of a cached function).  They compile only where the host has
AVX-512 F/BW/VL/VNNI (:data:`AVAILABLE`); elsewhere the simulator keeps its
portable paths.  ``NPU_SIM_SIMD=0`` in the environment turns them off.

Operands are integers times a quantum:

* ``int8`` plan (fixed-point elements of at most 7 magnitude bits whose
  activations quantise in binary32: ms-fp8, ms-fp9 activations; ms-fp8,
  ms-fp9, msfp12 weights): activation integers plus a zero point as uint8,
  weight integers as int8; ``D - cw`` (``cw`` = zero point x column sum of
  the block's weights) is the exact block sum in quanta, below 2**24 (the
  float plan's bound), so its binary32 conversion is exact.
* ``e4m3`` plan (MXFP8 E4M3 x E4M3): int16 planes, see the section below.

Every term is ``fl32(S * (xs * ws))`` with ``S`` the exact block sum in
quanta and ``xs * ws`` an exact binary32 power of two (quanta folded in),
which the callers check per batch (:func:`scales_fit`); a NaN scale makes
the term NaN.  The product is an exact power-of-two scaling of ``fl32(S)``,
so it is fused into the accumulator with one FMA (the callers also bound it
below 2**127, so no product overflows).  Columns past the packed panels have
only zero weights: their accumulator is +0, or NaN when any block's scale
product is NaN.
"""
from __future__ import annotations

import math
import os

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .mfu_kernels import _fused_pattern, _pipeline_row, _row_add, _row_add_add_relu, _row_add_relu, _row_round

# =====================================================================================================
# Tile kernels (LLVM IR).  One call computes an MR x 16*nv tile of MVU accumulators over the chain's
# reduction blocks, keeping the block's int32 sums and the binary32 accumulators in registers.
# =====================================================================================================

#: Rows of one micro tile (``MR``).
MICRO_ROWS = 6
#: Columns of one micro tile are ``16 * nv`` for ``nv`` in 1 .. NV_MAX.
NV_MAX = 4
#: Bytes of one K-step of one column (4 int8 or 2 int16 elements).
STEP_BYTES = 4


def _host_has_vnni() -> bool:
    try:
        import llvmlite.binding as llvm
        features = llvm.get_host_cpu_features()
    except Exception:                                   # pragma: no cover - llvmlite without host queries
        return False
    return all(features.get(f, False) for f in ("avx512f", "avx512bw", "avx512vl", "avx512vnni"))


#: Whether the VNNI tile kernels may run on this host.
AVAILABLE = os.environ.get("NPU_SIM_SIMD", "1") != "0" and _host_has_vnni()

_I8, _I32, _I64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
_F32, _F64 = ir.FloatType(), ir.DoubleType()
_V16I, _V16F = ir.VectorType(_I32, 16), ir.VectorType(_F32, 16)
_V8D = ir.VectorType(_F64, 8)
_V8Q = ir.VectorType(_I64, 8)


def _data(context, builder, arrty, arr):
    return cgutils.create_struct_proxy(arrty)(context, builder, value=arr).data


def _int8_kernel(nv: int):
    """The intrinsic computing one MR x 16*nv accumulator tile of an int8-plan chain over all its blocks.

    Arguments (arrays are 1-D, C-contiguous; offsets count elements of their array): ``a`` the
    activation codes (uint8: integers plus the zero point); ``aoff`` (int64) the byte offset in ``a``
    of row ``i``'s block ``b`` at ``aoff[t0 + i * nb + b]``; ``xs`` (binary32) its scale at the same
    index; ``nb``; ``wp`` packed weights (int8; per block, ``steps[b]`` K-steps of ``nv`` x 16
    columns x 4 bytes), ``w0`` the byte offset of block 0; ``steps`` (int64, per block); ``cw``
    (int32, zero point x column sums) and ``ws`` (binary32) per block and column, ``nv * 16`` per
    block from index ``c0``; ``acc`` (binary32) the tile, row ``i`` at ``o0 + i * ldo``.

    Per block: ``D = sum_s vpdpbusd(A[i, s], W[b, s, c])``, then
    ``acc = fma(fl32(D - cw), xs * ws, acc)`` (``D - cw`` is below 2**24: exact in binary32).
    """
    mr = MICRO_ROWS

    def codegen(context, builder, signature, args):
        T = signature.args
        (a, aoff, t0, xs, nb, wp, w0, steps, cw, ws, c0, acc, o0, ldo) = args
        c = lambda v: ir.Constant(_I64, v)                                     # noqa: E731
        pa = builder.bitcast(_data(context, builder, T[0], a), _I8.as_pointer())
        paoff = builder.gep(_data(context, builder, T[1], aoff), [t0])
        pxs = builder.gep(_data(context, builder, T[3], xs), [t0])
        pwp = builder.gep(builder.bitcast(_data(context, builder, T[5], wp), _I8.as_pointer()), [w0])
        psteps = _data(context, builder, T[7], steps)
        pcw = builder.gep(_data(context, builder, T[8], cw), [c0])
        pws = builder.gep(_data(context, builder, T[9], ws), [c0])
        pacc = builder.gep(_data(context, builder, T[11], acc), [o0])
        dp = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V16I, [_V16I, _V16I, _V16I]),
                                            "llvm.x86.avx512.vpdpbusd.512")
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V16F, [_V16F, _V16F, _V16F]),
                                             "llvm.fma.v16f32")
        zero_i = ir.Constant(_V16I, [0] * 16)
        undef_i, undef_f = ir.Constant(_V16I, ir.Undefined), ir.Constant(_V16F, ir.Undefined)
        lane0 = ir.Constant(_I32, 0)
        splat_mask = ir.Constant(ir.VectorType(_I32, 16), [0] * 16)

        def splat(val, undef):
            return builder.shuffle_vector(builder.insert_element(undef, val, lane0), undef, splat_mask)

        def vptr(base, offset, vty):
            return builder.bitcast(builder.gep(base, [offset]), vty.as_pointer())

        first = builder.block
        bhead = builder.append_basic_block("block_head")
        bbody = builder.append_basic_block("block_body")
        shead = builder.append_basic_block("step_head")
        sbody = builder.append_basic_block("step_body")
        bepi = builder.append_basic_block("block_end")
        done = builder.append_basic_block("done")
        builder.branch(bhead)

        # block loop: b, weight pointer, binary32 accumulators
        builder.position_at_end(bhead)
        b = builder.phi(_I64)
        b.add_incoming(c(0), first)
        wptr = builder.phi(_I8.as_pointer())
        wptr.add_incoming(pwp, first)
        facc = []
        for k in range(mr * nv):
            p = builder.phi(_V16F)
            p.add_incoming(ir.Constant(_V16F, [0.0] * 16), first)
            facc.append(p)
        builder.cbranch(builder.icmp_signed("<", b, nb), bbody, done)

        builder.position_at_end(bbody)
        nsteps = builder.load(builder.gep(psteps, [b]))
        rows = [builder.gep(pa, [builder.load(builder.gep(paoff, [builder.add(builder.mul(c(i), nb), b)]))])
                for i in range(mr)]
        builder.branch(shead)

        # K-step loop: int32 block sums
        builder.position_at_end(shead)
        s = builder.phi(_I64)
        s.add_incoming(c(0), bbody)
        wcur = builder.phi(_I8.as_pointer())
        wcur.add_incoming(wptr, bbody)
        iacc = []
        for k in range(mr * nv):
            p = builder.phi(_V16I)
            p.add_incoming(zero_i, bbody)
            iacc.append(p)
        builder.cbranch(builder.icmp_signed("<", s, nsteps), sbody, bepi)
        builder.position_at_end(sbody)
        wv = [builder.load(vptr(wcur, c(64 * v), _V16I), align=1) for v in range(nv)]
        stepped = []
        for i in range(mr):
            av = splat(builder.load(vptr(rows[i], builder.mul(s, c(STEP_BYTES)), _I32), align=1), undef_i)
            for v in range(nv):
                stepped.append(builder.call(dp, [iacc[i * nv + v], av, wv[v]]))
        s.add_incoming(builder.add(s, c(1)), sbody)
        wcur.add_incoming(builder.gep(wcur, [c(64 * nv)]), sbody)
        for p, val in zip(iacc, stepped):
            p.add_incoming(val, sbody)
        builder.branch(shead)

        # end of block: one rounded term per accumulator, fused into it
        builder.position_at_end(bepi)
        cb = builder.mul(b, c(16 * nv))
        cwv = [builder.load(vptr(pcw, builder.add(cb, c(16 * v)), _V16I), align=4) for v in range(nv)]
        wsv = [builder.load(vptr(pws, builder.add(cb, c(16 * v)), _V16F), align=4) for v in range(nv)]
        new_acc = []
        for i in range(mr):
            sxv = splat(builder.load(builder.gep(pxs, [builder.add(builder.mul(c(i), nb), b)])), undef_f)
            for v in range(nv):
                k = i * nv + v
                d = builder.sitofp(builder.sub(iacc[k], cwv[v]), _V16F)
                new_acc.append(builder.call(fma, [d, builder.fmul(sxv, wsv[v]), facc[k]]))
        b.add_incoming(builder.add(b, c(1)), bepi)
        wptr.add_incoming(wcur, bepi)
        for p, val in zip(facc, new_acc):
            p.add_incoming(val, bepi)
        builder.branch(bhead)

        builder.position_at_end(done)
        for i in range(mr):
            row = builder.gep(pacc, [builder.mul(c(i), ldo)])
            for v in range(nv):
                builder.store(facc[i * nv + v], vptr(row, c(16 * v), _V16F), align=4)
        return context.get_dummy_value()

    @intrinsic
    def tile(typingctx, a, aoff, t0, xs, nb, wp, w0, steps, cw, ws, c0, acc, o0, ldo):
        i64 = types.int64
        sig = types.void(a, aoff, i64, xs, i64, wp, i64, steps, cw, ws, i64, acc, i64, i64)
        return sig, codegen
    return tile


# int8 tiles (vpdpbusd: unsigned activation bytes times signed weight bytes), nv = 1 .. 4
tile_i8_1 = _int8_kernel(1)
tile_i8_2 = _int8_kernel(2)
tile_i8_3 = _int8_kernel(3)
tile_i8_4 = _int8_kernel(4)


def _e4m3_kernel(nv: int, w_to_d: float):
    """The intrinsic computing one MR x 16*nv accumulator tile of an MXFP8 E4M3 chain on int16 planes.

    Arguments: ``x0``, ``x1`` activation planes (int16, ``row_bytes`` a vector; ``x1`` laid out as
    ``x0``); the tile's rows ``m0 .. m0 + MR - 1``, those past ``mlast`` repeating it: row ``m``
    reads vectors ``aidx[m * k + kk]`` (int64); block ``b`` is sub-block ``bs[b]`` of tap
    ``bkk[b]``, of ``sub`` per vector, at byte ``64 * bs[b]`` of the vector; per (vector, sub-block)
    ``j = v * sub + s``: ``xscale[j]`` (binary32) the scale, ``xflags[j]`` (uint32) a bit per
    plane-1 activation, ``xunit[j]`` (binary64) the plane-1 quantum in the block's plane-0 units;
    ``kmask[b]`` (uint32) the flag bits within block ``b``'s K-steps; ``nb`` blocks; ``wp`` the
    plane-0 weights as int16 pairs, ``w0`` the byte offset of block 0; ``steps``; ``ws`` (binary32, 16*nv per block from
    ``c0``); ``acc``, ``o0``, ``ldo``; the plane-1 weights: ``w1vec[v0 + b]`` bits ``2v`` and
    ``2v + 1`` for the 8-column halves of 16-column group ``v`` holding some, and the weights by
    K-step chunks (:func:`_plane1_chunks`): ``w1p`` (int16), ``w1s`` (each chunk's K-step),
    ``w1off[v0 * NV_MAX + b * NV_MAX + v]`` (first chunk and count).

    Block sum in plane-0 units ``D0 = sum X0 * W0`` (vpdpwssd, below 2**31); a lane takes
    ``fl32(D0) * (xs * ws)``, fused into the accumulator, unless its 16-column group has plane-1
    weights in the block or its row plane-1 activations.  The other sums, by vpdpwssd over the K-steps
    that hold the plane-1 elements only: ``D1w = sum X0 * W1`` over the group's chunks, and for a row
    with plane-1 activations ``D1x = sum X1 * W0`` and ``D11 = sum X1 * W1``.  The exact block sum
    is ``D = D0 + D1x * xf + (D1w + D11 * xf) * w_to_d``.  Without plane-1 activations the lane takes
    ``fl32(D0 / w_to_d + D1w)`` (an exact int64, rounded once) times ``xs * ws * w_to_d``; with them,
    ``D`` in binary64 (multiples of 2**-10 units below 2**41: exact) times ``xs * ws``, rounded once.
    Every scale product is an exact power-of-two scaling into binary32's normal range, so each way
    gives the bits of ``fl32(D * xs * ws)``.  The branches per group repeat the same pattern on every
    tile (plane-1 weights are static), so they predict well.
    """
    mr = MICRO_ROWS
    width = 16 * nv

    def codegen(context, builder, signature, args):
        T = signature.args
        (x0, x1, aidx, m0, mlast, k, bkk, bs, sub, row_bytes, xscale, xflags, xunit, kmask, nb, wp, w0, steps, ws,
         c0, acc, o0, ldo, w1vec, v0, w1p, w1s, w1off) = args
        c = lambda v: ir.Constant(_I64, v)                                     # noqa: E731
        i8p = _I8.as_pointer()
        px0 = builder.bitcast(_data(context, builder, T[0], x0), i8p)
        px1 = builder.bitcast(_data(context, builder, T[1], x1), i8p)
        paidx = _data(context, builder, T[2], aidx)
        pbkk = _data(context, builder, T[6], bkk)
        pbs = _data(context, builder, T[7], bs)
        pxscale = _data(context, builder, T[10], xscale)
        pxflags = _data(context, builder, T[11], xflags)
        pxunit = _data(context, builder, T[12], xunit)
        pkmask = _data(context, builder, T[13], kmask)
        pwp = builder.gep(builder.bitcast(_data(context, builder, T[15], wp), i8p), [w0])
        psteps = _data(context, builder, T[17], steps)
        pws = builder.gep(_data(context, builder, T[18], ws), [c0])
        pacc = builder.gep(_data(context, builder, T[20], acc), [o0])
        pw1vec = builder.gep(_data(context, builder, T[23], w1vec), [v0])
        pw1p = builder.bitcast(_data(context, builder, T[25], w1p), i8p)
        pw1s = _data(context, builder, T[26], w1s)
        pw1off = builder.gep(_data(context, builder, T[27], w1off), [builder.mul(v0, ir.Constant(_I64, NV_MAX))])
        # each row's taps: rows past mlast repeat it
        arows = []
        for i in range(mr):
            m = builder.add(m0, c(i))
            m = builder.select(builder.icmp_signed(">", m, mlast), mlast, m)
            arows.append(builder.gep(paidx, [builder.mul(m, k)]))
        dp = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V16I, [_V16I, _V16I, _V16I]),
                                            "llvm.x86.avx512.vpdpwssd.512")
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V16F, [_V16F, _V16F, _V16F]),
                                             "llvm.fma.v16f32")
        cttz = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I64, [_I64, ir.IntType(1)]),
                                              "llvm.cttz.i64")
        zero_i = ir.Constant(_V16I, [0] * 16)
        undef_i, undef_f = ir.Constant(_V16I, ir.Undefined), ir.Constant(_V16F, ir.Undefined)
        undef_d = ir.Constant(_V8D, ir.Undefined)
        lane0 = ir.Constant(_I32, 0)
        splat16 = ir.Constant(ir.VectorType(_I32, 16), [0] * 16)
        splat8 = ir.Constant(ir.VectorType(_I32, 8), [0] * 8)
        lo_mask = ir.Constant(ir.VectorType(_I32, 8), list(range(8)))
        hi_mask = ir.Constant(ir.VectorType(_I32, 8), list(range(8, 16)))
        cat_mask = ir.Constant(ir.VectorType(_I32, 16), list(range(16)))
        w_shift = ir.Constant(_V8Q, [round(-math.log2(w_to_d))] * 8)
        w_to_d_f = ir.Constant(_V16F, [w_to_d] * 16)
        w_to_d_v = ir.Constant(_V8D, [w_to_d] * 8)

        def splat(val, undef, mask):
            return builder.shuffle_vector(builder.insert_element(undef, val, lane0), undef, mask)

        def vptr(base, offset, vty):
            return builder.bitcast(builder.gep(base, [offset]), vty.as_pointer())

        def vector_of(i):
            """Row i's vector of block b and its (vector, sub-block) index j."""
            v = builder.load(builder.gep(arows[i], [kk]))
            return v, builder.add(builder.mul(v, sub), sblk)

        first = builder.block
        bhead = builder.append_basic_block("block_head")
        bbody = builder.append_basic_block("block_body")
        shead = builder.append_basic_block("step_head")
        sbody = builder.append_basic_block("step_body")
        bepi = builder.append_basic_block("block_end")
        bnext = builder.append_basic_block("block_next")
        done = builder.append_basic_block("done")
        # the binary32 accumulators live in memory across blocks (with the int32 sums, more than the registers)
        fbuf = cgutils.alloca_once(builder, ir.ArrayType(_V16F, mr * nv))
        dbuf = cgutils.alloca_once(builder, ir.ArrayType(_V16I, mr * nv))      # D0, on the rare paths
        fslot = [builder.gep(fbuf, [ir.Constant(_I32, 0), ir.Constant(_I32, k)]) for k in range(mr * nv)]
        dslot = [builder.gep(dbuf, [ir.Constant(_I32, 0), ir.Constant(_I32, k)]) for k in range(mr * nv)]
        for k in range(mr * nv):
            builder.store(ir.Constant(_V16F, [0.0] * 16), fslot[k], align=64)
        builder.branch(bhead)

        builder.position_at_end(bhead)
        b = builder.phi(_I64)
        b.add_incoming(c(0), first)
        woff = builder.phi(_I64)                       # byte offset of block b in wp
        woff.add_incoming(c(0), first)
        builder.cbranch(builder.icmp_signed("<", b, nb), bbody, done)

        builder.position_at_end(bbody)
        nsteps = builder.load(builder.gep(psteps, [b]))
        kk = builder.load(builder.gep(pbkk, [b]))
        sblk = builder.load(builder.gep(pbs, [b]))
        sub_off = builder.mul(sblk, c(2 * MX_BLOCK))
        offs = [builder.add(builder.mul(vector_of(i)[0], row_bytes), sub_off) for i in range(mr)]
        rows = [builder.gep(px0, [o]) for o in offs]
        wblock = builder.gep(pwp, [woff])
        builder.branch(shead)

        builder.position_at_end(shead)
        s = builder.phi(_I64)
        s.add_incoming(c(0), bbody)
        iacc = []
        for k in range(mr * nv):
            p = builder.phi(_V16I)
            p.add_incoming(zero_i, bbody)
            iacc.append(p)
        builder.cbranch(builder.icmp_signed("<", s, nsteps), sbody, bepi)
        builder.position_at_end(sbody)
        wcur = builder.gep(wblock, [builder.mul(s, c(64 * nv))])
        wv = [builder.load(vptr(wcur, c(64 * v), _V16I), align=1) for v in range(nv)]
        stepped = []
        for i in range(mr):
            av = splat(builder.load(vptr(rows[i], builder.mul(s, c(4)), _I32), align=1), undef_i, splat16)
            for v in range(nv):
                stepped.append(builder.call(dp, [iacc[i * nv + v], av, wv[v]]))
        s.add_incoming(builder.add(s, c(1)), sbody)
        for p, val in zip(iacc, stepped):
            p.add_incoming(val, sbody)
        builder.branch(shead)

        # ----- end of block
        builder.position_at_end(bepi)
        cb = builder.mul(b, c(width))
        wsv = [builder.load(vptr(pws, builder.add(cb, c(16 * v)), _V16F), align=4) for v in range(nv)]
        # each row's vector loaded again (an L1 hit): nothing more held in registers over the K-steps
        jrow = [vector_of(i)[1] for i in range(mr)]
        xsl = [builder.load(builder.gep(pxscale, [j])) for j in jrow]

        def scale(k):
            return builder.fmul(splat(xsl[k // nv], undef_f, splat16), wsv[k % nv])

        def facc(k):
            return builder.load(fslot[k], align=64)

        def plain_of(k, d0):
            return builder.call(fma, [builder.sitofp(d0, _V16F), scale(k), facc(k)])

        kmask_b = builder.zext(builder.load(builder.gep(pkmask, [b])), _I64)
        xbits_in = [builder.and_(builder.zext(builder.load(builder.gep(pxflags, [j])), _I64), kmask_b) for j in jrow]
        rowm = c(0)                                    # a bit per row with plane-1 activations in the block
        for i in range(mr):
            rowm = builder.or_(rowm, builder.shl(builder.zext(builder.icmp_signed("!=", xbits_in[i], c(0)), _I64),
                                                 c(i)))
        vecm = builder.load(builder.gep(pw1vec, [b]))
        lanes_bb = builder.append_basic_block("lanes")
        clean_bb = builder.append_basic_block("clean")
        builder.cbranch(builder.icmp_signed("!=", builder.or_(rowm, vecm), c(0)), lanes_bb, clean_bb)
        builder.position_at_end(clean_bb)
        for k in range(mr * nv):
            builder.store(plain_of(k, iacc[k]), fslot[k], align=64)
        builder.branch(bnext)
        builder.position_at_end(lanes_bb)
        for k in range(mr * nv):
            builder.store(iacc[k], dslot[k], align=64)

        def d0(k):
            return builder.load(dslot[k], align=64)
        pair_bits = c(0x5555555555555555)

        def int_sums(name, count, trip, srcs):
            """Int32 sums, one per activation row pointer of ``srcs``: ``trip(t)`` gives loop trip ``t``'s
            (K-step, weight vector); ``count``: (initial state, state -> continue?, state -> (t, next state))."""
            start, more, advance = count
            entry_bb = builder.block
            head = builder.append_basic_block(f"{name}_head")
            body = builder.append_basic_block(f"{name}_body")
            out = builder.append_basic_block(f"{name}_done")
            builder.branch(head)
            builder.position_at_end(head)
            state = builder.phi(_I64)
            state.add_incoming(start, entry_bb)
            sums = []
            for _ in srcs:
                ph = builder.phi(_V16I)
                ph.add_incoming(zero_i, entry_bb)
                sums.append(ph)
            builder.cbranch(more(state), body, out)
            builder.position_at_end(body)
            t, nxt = advance(state)
            step, wv = trip(t)
            for ph, src in zip(sums, srcs):
                av = splat(builder.load(vptr(src, builder.mul(step, c(4)), _I32), align=1), undef_i, splat16)
                ph.add_incoming(builder.call(dp, [ph, av, wv]), body)
            state.add_incoming(nxt, body)
            builder.branch(head)
            builder.position_at_end(out)
            return sums

        def chunk_sums(v, srcs):
            """Per activation row of ``srcs``: the sum of its elements times group v's plane-1 weights (over the
            chunks: the block's K-steps holding some)."""
            code = builder.load(builder.gep(pw1off, [builder.add(builder.mul(b, c(NV_MAX)), c(v))]))
            first = builder.ashr(code, c(CHUNK_COUNT_BITS))
            count = builder.and_(code, c((1 << CHUNK_COUNT_BITS) - 1))

            def trip(t):
                q = builder.add(first, t)
                return builder.load(builder.gep(pw1s, [q])), builder.load(vptr(pw1p, builder.mul(q, c(64)), _V16I),
                                                                          align=1)
            return int_sums(f"g{v}_w1", (c(0), lambda s: builder.icmp_signed("<", s, count),
                                         lambda s: (s, builder.add(s, c(1)))), trip, srcs)

        def x1_sums(i, v):
            """Row i's plane-1 activations times group v's plane-0 weights (over the K-steps holding some)."""
            bits = xbits_in[i]
            pairs = builder.and_(builder.or_(bits, builder.lshr(bits, c(1))), pair_bits)

            def trip(j):
                step = builder.lshr(j, c(1))
                wv = builder.load(vptr(wblock, builder.add(builder.mul(step, c(64 * nv)), c(64 * v)), _V16I), align=1)
                return step, wv
            return int_sums(f"r{i}g{v}_x1", (pairs, lambda s: builder.icmp_signed("!=", s, c(0)),
                                             lambda s: (builder.call(cttz, [s, ir.Constant(ir.IntType(1), 1)]),
                                                        builder.and_(s, builder.sub(s, c(1))))),
                            trip, [x1rows[i]])[0]

        def half_f64(vec, hmask):
            return builder.sitofp(builder.shuffle_vector(vec, undef_i, hmask), _V8D)

        def exact_row(i, v, d1x, d1w, d11):
            """Row i's accumulators of group v with the exact term: ``D0 + D1x * xf + D1w * w_to_d + D11 * xf *
            w_to_d`` (multiples of 2**-10 units below 2**41: exact in binary64) times the scales, rounded once."""
            k = i * nv + v
            xfv = builder.load(builder.gep(pxunit, [jrow[i]]))
            f_x = splat(xfv, undef_d, splat8)
            f_xw = splat(builder.fmul(xfv, ir.Constant(_F64, w_to_d)), undef_d, splat8)
            halves = []
            for hmask in (lo_mask, hi_mask):
                d = builder.fadd(half_f64(d0(k), hmask), builder.fmul(half_f64(d1x, hmask), f_x))
                d = builder.fadd(d, builder.fmul(half_f64(d1w, hmask), w_to_d_v))
                d = builder.fadd(d, builder.fmul(half_f64(d11, hmask), f_xw))
                sc = builder.fpext(builder.shuffle_vector(scale(k), undef_f, hmask), _V8D)
                term = builder.fptrunc(builder.fmul(d, sc), ir.VectorType(_F32, 8))
                halves.append(builder.fadd(builder.shuffle_vector(facc(k), undef_f, hmask), term))
            return builder.shuffle_vector(halves[0], halves[1], cat_mask)

        def weights_row(i, v, d1w):
            """Row i (no plane-1 activations) of a group with plane-1 weights: ``fl32(D0 / w_to_d + D1w)`` (an
            exact int64, rounded once) times the scales times ``w_to_d``."""
            k = i * nv + v
            halves = []
            for hmask in (lo_mask, hi_mask):
                dh = builder.sext(builder.shuffle_vector(d0(k), undef_i, hmask), _V8Q)
                d1 = builder.sext(builder.shuffle_vector(d1w, undef_i, hmask), _V8Q)
                halves.append(builder.sitofp(builder.add(builder.shl(dh, w_shift), d1), ir.VectorType(_F32, 8)))
            d8 = builder.shuffle_vector(halves[0], halves[1], cat_mask)
            return builder.call(fma, [d8, builder.fmul(scale(k), w_to_d_f), facc(k)])

        def branch_value(cond, make, name):
            """``(value, block)`` pairs of ``make()`` where ``cond`` holds, else None: a phi of them after."""
            here = builder.block
            yes = builder.append_basic_block(f"{name}_yes")
            after = builder.append_basic_block(f"{name}_after")
            builder.cbranch(cond, yes, after)
            builder.position_at_end(yes)
            vals = make()
            yes_end = builder.block
            builder.branch(after)
            builder.position_at_end(after)
            out = []
            for val, other in vals:
                p = builder.phi(val.type)
                p.add_incoming(other, here)
                p.add_incoming(val, yes_end)
                out.append(p)
            return out

        x1rows = [builder.gep(px1, [o]) for o in offs]
        for v in range(nv):
            dirty = builder.icmp_signed("!=", builder.and_(builder.lshr(vecm, c(2 * v)), c(3)), c(0))
            d1w = branch_value(dirty, lambda: [(s, zero_i) for s in chunk_sums(v, rows)], f"g{v}_d1w")
            for i in range(mr):
                k = i * nv + v
                rb = builder.icmp_signed("!=", builder.and_(builder.lshr(rowm, c(i)), c(1)), c(0))
                x1_bb = builder.append_basic_block(f"r{i}g{v}_x1")
                no_x1 = builder.append_basic_block(f"r{i}g{v}_no_x1")
                w1_bb = builder.append_basic_block(f"r{i}g{v}_w1")
                plain_bb = builder.append_basic_block(f"r{i}g{v}_plain")
                row_done = builder.append_basic_block(f"r{i}g{v}_done")
                builder.cbranch(rb, x1_bb, no_x1)
                builder.position_at_end(x1_bb)
                d1x = x1_sums(i, v)
                (d11,) = branch_value(dirty, lambda: [(chunk_sums(v, [x1rows[i]])[0], zero_i)], f"r{i}g{v}_d11")
                builder.store(exact_row(i, v, d1x, d1w[i], d11), fslot[k], align=64)
                builder.branch(row_done)
                builder.position_at_end(no_x1)
                builder.cbranch(dirty, w1_bb, plain_bb)
                builder.position_at_end(w1_bb)
                builder.store(weights_row(i, v, d1w[i]), fslot[k], align=64)
                builder.branch(row_done)
                builder.position_at_end(plain_bb)
                builder.store(plain_of(k, d0(k)), fslot[k], align=64)
                builder.branch(row_done)
                builder.position_at_end(row_done)
        builder.branch(bnext)
        builder.position_at_end(bnext)
        b.add_incoming(builder.add(b, c(1)), bnext)
        woff.add_incoming(builder.add(woff, builder.mul(nsteps, c(64 * nv))), bnext)
        builder.branch(bhead)

        builder.position_at_end(done)
        for i in range(mr):
            row = builder.gep(pacc, [builder.mul(c(i), ldo)])
            for v in range(nv):
                builder.store(facc(i * nv + v), vptr(row, c(16 * v), _V16F), align=4)
        return context.get_dummy_value()

    @intrinsic
    def tile(typingctx, x0, x1, aidx, m0, mlast, k, bkk, bs, sub, row_bytes, xscale, xflags, xunit, kmask, nb, wp, w0,
             steps, ws, c0, acc, o0, ldo, w1vec, v0, w1p, w1s, w1off):
        i64 = types.int64
        sig = types.void(x0, x1, aidx, i64, i64, i64, bkk, bs, i64, i64, xscale, xflags, xunit, kmask, i64, wp, i64,
                         steps, ws, i64, acc, i64, i64, w1vec, i64, w1p, w1s, w1off)
        return sig, codegen
    return tile


@intrinsic
def ctlz32(typingctx, x):
    """Count of leading zero bits of a uint32 (32 for zero; ``llvm.ctlz``, vectorises)."""
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32, [_I32, ir.IntType(1)]),
                                            "llvm.ctlz.i32")
        return builder.call(fn, [args[0], ir.Constant(ir.IntType(1), 0)])
    return types.int32(types.uint32), codegen



_V32 = 32                                              # lanes of the block intrinsics (one MX block)


def _vec(t):
    return ir.VectorType(t, _V32)


@intrinsic
def block_top16(typingctx, src, lo):
    """Largest magnitude bits (``h & 0x7FFF``) of the 32 binary16 bit patterns ``src[lo:lo + 32]`` (uint16)."""
    def codegen(context, builder, signature, args):
        i16 = ir.IntType(16)
        ptr = builder.gep(_data(context, builder, signature.args[0], args[0]), [args[1]])
        h = builder.load(builder.bitcast(ptr, _vec(i16).as_pointer()), align=2)
        mag = builder.and_(h, ir.Constant(_vec(i16), [0x7FFF] * _V32))
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i16, [_vec(i16)]),
                                            "llvm.vector.reduce.umax.v32i16")
        return builder.call(fn, [mag])
    return types.uint16(src, types.int64), codegen


def _e4m3_block_kernel(bf16: bool):
    """The intrinsic converting one MX block of :func:`gather_quantize_e4m3` (finite, not all zero): the 32
    16-bit patterns ``src[lo:lo + 32]`` (binary16, or bfloat16 with ``bf16``) with shared exponent ``sh``
    become plane integers ``x0[o:o + 32]`` and, when the block has plane-1 elements, ``x1[o:o + 32]``; it
    returns the plane-0 unit exponent ``e0`` times 2**32 plus the plane-1 flag bits.

    Lane by lane, with ``a = |v|``: ``ee = max(floor(log2 a) - sh, -6)``, ``u = min(rint(a * 2**(3 - ee - sh))
    * 2**(ee + 6), 448 * 2**9)``, the value in quanta 2**-9.  From binary16 this runs in binary32 (the powers
    of two lie in [2**-12, 2**41], every product is exact); from bfloat16 in binary64 (binary32's range).
    Then ``e0``: the finest unit in [E0X_MIN, E0X] with ``sum u * wmax < 2**31 * 2**(e0 + 9)``; plane 1
    takes the elements that are not multiples of ``2**e0``.
    """
    def codegen(context, builder, signature, args):
        T = signature.args
        src_a, lo_v, sh_v, wmax_v, x0_a, x1_a, o_v = args
        i16 = ir.IntType(16)
        v16, v32i, v32f = _vec(i16), _vec(_I32), _vec(_F32)
        vi64, vf64 = _vec(_I64), _vec(_F64)

        def splat(x, vty):
            undef = ir.Constant(vty, ir.Undefined)
            return builder.shuffle_vector(builder.insert_element(undef, x, ir.Constant(_I32, 0)), undef,
                                          ir.Constant(v32i, [0] * _V32))

        def const(vty, v):
            return ir.Constant(vty, [v] * _V32)

        ptr = builder.gep(_data(context, builder, T[0], src_a), [lo_v])
        h = builder.load(builder.bitcast(ptr, v16.as_pointer()), align=2)
        mag = builder.and_(h, const(v16, 0x7FFF))
        if bf16:                                # binary64 lanes: bfloat16 has binary32's range
            a = builder.fpext(builder.bitcast(builder.shl(builder.zext(mag, v32i), const(v32i, 16)), v32f), vf64)
            fv, iv, mbits, bias = vf64, vi64, 52, 1023
            shv = splat(sh_v, vi64)
        else:                                   # binary32 lanes
            a = builder.fpext(builder.bitcast(mag, ir.VectorType(ir.HalfType(), _V32)), v32f)
            fv, iv, mbits, bias = v32f, v32i, 23, 127
            shv = splat(builder.trunc(sh_v, _I32), v32i)
        rint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(fv, [fv]),
                                              f"llvm.rint.v32f{64 if bf16 else 32}")
        flog = builder.sub(builder.lshr(builder.bitcast(a, iv), const(iv, mbits)), const(iv, bias))
        d = builder.sub(flog, shv)
        ee = builder.select(builder.icmp_signed(">", d, const(iv, -6)), d, const(iv, -6))
        down = builder.bitcast(builder.shl(builder.sub(const(iv, bias + 3), builder.add(ee, shv)), const(iv, mbits)),
                               fv)                                        # 2**(3 - ee - sh)
        up = builder.bitcast(builder.shl(builder.add(ee, const(iv, bias + 6)), const(iv, mbits)), fv)   # 2**(ee + 6)
        q = builder.fmul(builder.call(rint, [builder.fmul(a, down)]), up)
        cap = const(fv, 229376.0)
        q = builder.select(builder.fcmp_ordered("<", q, cap), q, cap)
        u = builder.fptosi(q, v32i)
        add_red = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32, [v32i]),
                                                 "llvm.vector.reduce.add.v32i32")
        prod = builder.mul(builder.sext(builder.call(add_red, [u]), _I64), wmax_v)
        e0 = ir.Constant(_I64, E0X_MIN)                 # (monotone conditions, counted)
        for t in range(E0X_MIN, E0X):
            e0 = builder.add(e0, builder.zext(builder.icmp_signed(">", prod, ir.Constant(_I64, (2 ** 31 - 1) << (t + 9))),
                                              _I64))
        shift = builder.trunc(builder.add(e0, ir.Constant(_I64, 9)), _I32)
        low = builder.sub(builder.shl(ir.Constant(_I32, 1), shift), ir.Constant(_I32, 1))
        neg = builder.icmp_signed("<", h, const(v16, 0))
        su = builder.select(neg, builder.sub(const(v32i, 0), u), u)
        plane1 = builder.icmp_signed("!=", builder.and_(u, splat(low, v32i)), const(v32i, 0))
        p0 = builder.select(plane1, const(v32i, 0), builder.ashr(su, splat(shift, v32i)))
        p1 = builder.select(plane1, su, const(v32i, 0))

        def store(arr, ty, val):
            dst = builder.gep(_data(context, builder, ty, arr), [o_v])
            builder.store(builder.trunc(val, v16), builder.bitcast(dst, v16.as_pointer()), align=2)
        store(x0_a, T[4], p0)
        flags = builder.zext(builder.bitcast(plane1, ir.IntType(_V32)), _I64)
        with builder.if_then(builder.icmp_unsigned("!=", flags, ir.Constant(_I64, 0)), likely=False):
            store(x1_a, T[5], p1)                       # plane 1 only where the block has some
        return builder.or_(builder.shl(e0, ir.Constant(_I64, 32)), flags)

    @intrinsic
    def block(typingctx, src, lo, sh, wmax, x0, x1, o):
        return types.int64(src, types.int64, types.int64, types.int64, x0, x1, types.int64), codegen
    return block


e4m3_block_fp16 = _e4m3_block_kernel(False)
e4m3_block_bf16 = _e4m3_block_kernel(True)

# =====================================================================================================
# Drivers: packing, quantisation, and the chain kernels that run the tiles and the MFU pipeline.
# =====================================================================================================

MR = MICRO_ROWS
#: Columns of a full panel (nv = NV_MAX vectors of 16).
PANEL = 16 * NV_MAX
#: Zero point added to activation integers (uint8 operand of vpdpbusd).
ZERO_POINT = 128
#: Micro tiles one task runs against one weight panel at most (its weights stay in cache).
TILES_PER_TASK = 8
#: Tasks per thread a chain is cut into at least, where it has the rows (static scheduling gives each
#: thread a contiguous share, so fewer, uneven tasks leave a thread idle).
TASKS_PER_THREAD = 2


@numba.njit(cache=True, nogil=True)
def row_tasks(m_rows, groups, threads):
    """(row tasks, rows per task) of a chain of ``m_rows`` iterations and ``groups`` output groups: tasks of
    whole micro tiles, at most :data:`TILES_PER_TASK` of them, as even as the tiles allow, and at least
    ``TASKS_PER_THREAD * threads`` tasks in all when there are enough tiles."""
    tiles = (m_rows + MR - 1) // MR
    if tiles == 0:
        return 0, MR
    tasks_m = (tiles + TILES_PER_TASK - 1) // TILES_PER_TASK
    want = (TASKS_PER_THREAD * threads + groups - 1) // groups
    tasks_m = max(tasks_m, min(want, tiles))
    per_task = MR * ((tiles + tasks_m - 1) // tasks_m)
    return (m_rows + per_task - 1) // per_task, per_task


class PackedWeights:
    """A chain's weights packed for the tile kernels (static per weight image; kept in ``ChainOp.derived``).

    ``wp`` the packed K-steps, per group ``g`` and panel ``p`` from byte ``pan_w0[g, p]``; ``cw`` /
    ``ws`` the per-block column corrections and scales from index ``pan_c0[g, p]``; ``pan_nv[p]``
    16-column vectors per panel; ``steps[b]`` K-steps of block ``b``; ``colnan[g, c]`` whether any
    block's weight scale of column ``c`` is NaN; ``ws_lo``, ``ws_hi`` the range of the finite scales.
    """

    def __init__(self, wp, pan_w0, pan_c0, pan_nv, steps, cw, ws, colnan, extra=None):
        self.wp, self.pan_w0, self.pan_c0, self.pan_nv, self.steps = wp, pan_w0, pan_c0, pan_nv, steps
        self.cw, self.ws, self.colnan = cw, ws, colnan
        finite = ws[np.isfinite(ws)]
        self.ws_lo = float(finite.min()) if finite.size else 1.0
        self.ws_hi = float(finite.max()) if finite.size else 1.0
        self.extra = extra

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.wp, self.cw, self.ws, self.colnan))


def panel_widths(live_out: int) -> np.ndarray:
    """16-column vectors of each panel covering the first ``live_out`` columns (at least one)."""
    vecs = max(1, -(-live_out // 16))
    full, last = divmod(vecs, NV_MAX)
    return np.array([NV_MAX] * full + ([last] if last else []), np.int64)


def pack_weights(wint: np.ndarray, ws: np.ndarray, steps: np.ndarray, elems_per_step: int, zero_point: int,
                 wdtype, extra=None, live_out: int | None = None) -> PackedWeights:
    """Pack integer weights ``wint`` (r, nb, K, N) (K = elements per block) with scales ``ws`` (r, nb, N).

    Block ``b`` keeps its first ``steps[b] * elems_per_step`` elements (the rest must be zero); columns
    past the last non-zero one of every group and block are left out (16 at a time).  ``cw`` holds
    ``zero_point`` times each column's block sum; ``ws`` the scale values (quanta folded in, binary32).
    Layout: per group ``g`` and panel ``p``, blocks in order, each ``steps[b]`` K-steps of the panel's
    ``16 * nv`` columns, ``4`` bytes (one step's elements) per column.
    """
    r, nb, kb, n = wint.shape
    if live_out is None:
        live = np.flatnonzero(wint.any(axis=(0, 1, 2)))
        live_out = int(live[-1]) + 1 if live.size else 0
    nvs = panel_widths(live_out)
    width = int(nvs.sum()) * 16
    cols = min(width, n)
    steps = np.asarray(steps, np.int64)
    step_bytes = elems_per_step * np.dtype(wdtype).itemsize
    pan_bytes = [int(steps.sum()) * 16 * int(nv) * step_bytes for nv in nvs]
    per_group = sum(pan_bytes)
    packed = np.zeros((r, per_group + 64), np.int8)          # 64 spare bytes: never read past the end
    colsum = np.zeros((r, nb, width), np.int64)
    colsum[:, :, :cols] = wint[:, :, :, :cols].astype(np.int64).sum(axis=2)
    wsw = np.ones((r, nb, width), np.float32)
    wsw[:, :, :cols] = ws[:, :, :cols]
    pan_w0 = np.zeros((r, nvs.size), np.int64)
    pan_c0 = np.zeros((r, nvs.size), np.int64)
    table = nb * width                                          # per group: every panel's blocks
    cw = np.zeros((r, table), np.int32)
    wsf = np.ones((r, table), np.float32)
    c0 = off = t0 = 0
    for p, nv in enumerate(nvs):
        cols_p = slice(c0, c0 + 16 * int(nv))
        pan_w0[:, p] = np.arange(r) * packed.shape[1] + off
        pan_c0[:, p] = np.arange(r) * table + t0
        for b in range(nb):
            kk = int(steps[b]) * elems_per_step
            blk = np.zeros((r, kk, 16 * int(nv)), wdtype)
            hi = min(cols_p.stop, cols)
            if hi > c0 and kk:
                blk[:, :min(kk, kb), :hi - c0] = wint[:, b, :kk, c0:hi]
            # (r, steps, elems, cols) -> (r, steps, cols, elems)
            size = blk[0].size * np.dtype(wdtype).itemsize
            blk = blk.reshape(r, int(steps[b]), elems_per_step, 16 * int(nv)).transpose(0, 1, 3, 2)
            packed[:, off: off + size] = np.ascontiguousarray(blk).reshape(r, -1).view(np.int8)
            off += size
        span = slice(t0, t0 + nb * 16 * int(nv))
        cw[:, span] = (zero_point * colsum[:, :, cols_p]).reshape(r, -1)
        wsf[:, span] = wsw[:, :, cols_p].reshape(r, -1)
        t0 += nb * 16 * int(nv)
        c0 += 16 * int(nv)
    colnan = np.isnan(ws).any(axis=1)                                              # (r, N)
    out = PackedWeights(packed.reshape(-1), pan_w0, pan_c0, nvs, steps, cw.reshape(-1), wsf.reshape(-1), colnan,
                        extra)
    return out


#: Largest scale product the kernels take: a block sum (below 2**31) times it stays below 2**127, so no
#: term overflows and a fused multiply-add into the accumulator rounds exactly as the separate add.
SCALE_MAX = 2.0 ** 96


@numba.njit(cache=True, nogil=True)
def block_scales(scodes, rep, table, xscale):
    """Activation scale values per reduction block, and the range of the finite ones (the int8 plan).

    ``xscale[v, s] = table[scodes[v, s // rep]]`` (binary32 value of each scale code, NaN for the NaN
    code).  Returns (smallest, largest) finite value, (1, 1) when there is none.
    """
    lo, hi = np.inf, -np.inf
    for v in range(xscale.shape[0]):
        for s_ in range(xscale.shape[1]):
            x = np.float64(table[scodes[v, s_ // rep]])
            xscale[v, s_] = x
            if x == x:
                lo = min(lo, x)
                hi = max(hi, x)
    return (lo, hi) if lo <= hi else (1.0, 1.0)


@numba.njit(cache=True, nogil=True)
def scales_fit(xs_lo, xs_hi, ws_lo, ws_hi, tiny):
    """Whether every product of finite scales in the ranges is a binary32 power of two in [tiny, SCALE_MAX]."""
    return min(xs_lo, ws_lo, xs_lo * ws_lo) >= tiny and max(xs_hi, ws_hi, xs_hi * ws_hi) <= SCALE_MAX


@numba.njit(cache=True, nogil=True, inline="always")
def _tile_i8(nv, a, aoff, t0, xs, nb, wp, w0, steps, cw, ws, c0, acc, o0, ldo):
    if nv == 4:
        tile_i8_4(a, aoff, t0, xs, nb, wp, w0, steps, cw, ws, c0, acc, o0, ldo)
    elif nv == 3:
        tile_i8_3(a, aoff, t0, xs, nb, wp, w0, steps, cw, ws, c0, acc, o0, ldo)
    elif nv == 2:
        tile_i8_2(a, aoff, t0, xs, nb, wp, w0, steps, cw, ws, c0, acc, o0, ldo)
    else:
        tile_i8_1(a, aoff, t0, xs, nb, wp, w0, steps, cw, ws, c0, acc, o0, ldo)


@numba.njit(cache=True, nogil=True, inline="always")
def _row_tables(aidx, xscale, m0, rows, ntile, sub, row_bytes, blk_bytes, aoff, xs, rownan):
    """Per task: byte offsets and scales of each (row, block) of rows m0 .. m0 + rows - 1 (padded rows
    repeat the last), and whether any of a row's scales is NaN."""
    k = aidx.shape[1]
    nb = k * sub
    for i in range(ntile * MR):
        m = m0 + min(i, rows - 1)
        bad = False
        for kk in range(k):
            v = aidx[m, kk]
            for s in range(sub):
                b = kk * sub + s
                aoff[i * nb + b] = v * row_bytes + s * blk_bytes
                x = xscale[v, s]
                xs[i * nb + b] = x
                bad = bad or x != x
        rownan[i] = bad


@numba.njit(cache=True, nogil=True)
def group_columns(colnan, live):
    """Per output group ``g`` of a chain whose panels cover its first ``live`` columns: ``tails[g]`` the columns
    past the panels of a row without NaN (NaN where ``colnan[g, c]``, else +0), and ``nan_cols[g, :counts[g]]``
    the panel columns with a NaN scale."""
    r, n = colnan.shape
    tails = np.empty((r, n - live), np.float32)
    nan_cols = np.empty((r, live), np.int64)
    counts = np.zeros(r, np.int64)
    for g in range(r):
        for c in range(live, n):
            tails[g, c - live] = np.float32(np.nan) if colnan[g, c] else np.float32(0.0)
        for c in range(live):
            if colnan[g, c]:
                nan_cols[g, counts[g]] = c
                counts[g] += 1
    return tails, nan_cols, counts


@numba.njit(cache=True, nogil=True, inline="always")
def _finish_rows(acc, n, live, m0, rows, g, r, rownan, tail, nan_cols, fmt, ops, sources, scalars, operand_addr,
                 vmem, tables, v, t, w, out, wrows):
    """Columns past the panels (zero weights: ``tail``, :func:`group_columns`), NaN rows and columns (a NaN scale
    in any block, with weights or not: ``nan_cols``), then the MFU pipeline of each row: output row ``o = m * r
    + g`` into ``out[wrows[o]]`` (``out[o]`` when ``wrows`` is empty)."""
    pattern = _fused_pattern(fmt, ops, sources)
    for i in range(rows):
        row = acc[i * n:(i + 1) * n]
        if rownan[i]:
            row[:] = np.float32(np.nan)
        else:
            row[live:] = tail
            for c in nan_cols:
                row[c] = np.float32(np.nan)
    # one loop over the rows per op sequence: the one-pass rows vectorise only so (see mfu_kernels)
    if pattern == 0:
        for i in range(rows):
            o = (m0 + i) * r + g
            _row_round(acc[i * n:(i + 1) * n], o, fmt, operand_addr, vmem, out[wrows[o] if wrows.size else o])
    elif pattern == 1:
        for i in range(rows):
            o = (m0 + i) * r + g
            _row_add(acc[i * n:(i + 1) * n], o, fmt, operand_addr, vmem, out[wrows[o] if wrows.size else o])
    elif pattern == 2:
        for i in range(rows):
            o = (m0 + i) * r + g
            _row_add_relu(acc[i * n:(i + 1) * n], o, fmt, operand_addr, vmem, out[wrows[o] if wrows.size else o])
    elif pattern == 3:
        for i in range(rows):
            o = (m0 + i) * r + g
            _row_add_add_relu(acc[i * n:(i + 1) * n], o, fmt, operand_addr, vmem,
                              out[wrows[o] if wrows.size else o])
    else:
        for i in range(rows):
            o = (m0 + i) * r + g
            _pipeline_row(acc[i * n:(i + 1) * n], o, fmt, ops, sources, scalars, operand_addr, vmem, tables, v, t,
                          w, out, wrows[o] if wrows.size else o)


@numba.njit(cache=True, nogil=True, parallel=True)
def chain_int8(codes, row_bytes, xscale, aidx, sub, blk_bytes, wp, pan_w0, pan_c0, pan_nv, steps, cw, ws, colnan,
               fmt, ops, sources, scalars, operand_addr, vmem, tables, out, wrows, threads):
    """One batch of an MVU chain on the int8 plan: ``out[m * r + g]`` = MFU-format bits of the chain.

    ``codes`` (V * row_bytes,) uint8 activation integers plus :data:`ZERO_POINT`, ``xscale`` (V, sub)
    their block scales (binary32, NaN for a NaN block); iteration ``m`` reads vectors ``aidx[m, :]``
    (rows of ``codes``), each of ``sub`` blocks ``blk_bytes`` apart.  The weights are a
    :class:`PackedWeights`' arrays; ``fmt`` .. ``tables`` as for ``mfu_kernels.run_chain``.  Output row
    ``o`` goes to ``out[wrows[o]]`` (``out[o]`` when ``wrows`` is empty: ``out`` may be the vector
    memory itself when no row of the batch reads what it writes).  ``threads``: the threads the loop
    will run on (:func:`row_tasks`).
    """
    m_rows = aidx.shape[0]
    k = aidx.shape[1]
    nb = k * sub
    r, npan = pan_w0.shape
    n = out.shape[1]
    live = 0
    for p in range(npan):
        live += 16 * pan_nv[p]
    tasks_m, per_task = row_tasks(m_rows, r, threads)
    tails, nan_cols, nan_counts = group_columns(colnan, live)
    for task in numba.prange(tasks_m * r):
        mt = np.int64(task) // r
        g = np.int64(task) - mt * r
        m0 = mt * per_task
        rows = min(per_task, m_rows - m0)
        ntile = (rows + MR - 1) // MR
        aoff = np.empty(ntile * MR * nb, np.int64)
        xs = np.empty(ntile * MR * nb, np.float32)
        rownan = np.empty(ntile * MR, np.bool_)
        _row_tables(aidx, xscale, m0, rows, ntile, sub, row_bytes, blk_bytes, aoff, xs, rownan)
        acc = np.empty(ntile * MR * n, np.float32)
        col = 0
        for p in range(npan):
            for t in range(ntile):
                _tile_i8(pan_nv[p], codes, aoff, t * MR * nb, xs, nb, wp, pan_w0[g, p], steps, cw, ws, pan_c0[g, p],
                         acc, t * MR * n + col, n)
            col += 16 * pan_nv[p]
        v = np.empty(n, np.float32)
        tt = np.empty(n, np.float32)
        w = np.empty(n, np.float32)
        _finish_rows(acc, n, live, m0, rows, g, r, rownan, tails[g], nan_cols[g, :nan_counts[g]], fmt, ops, sources,
                     scalars, operand_addr, vmem, tables, v, tt, w, out, wrows)
    return out


# ----- MXFP8 E4M3 x E4M3 on int16 planes ---------------------------------------------------------
#
# An E4M3 element is m * 2**E with m < 16 and E in [-9, 5] (E = -9: the subnormals and the smallest
# binade), so an exact block sum of 32 products needs up to 41 bits.  Each element goes whole into one
# of two planes:
#
# * plane 0: the elements that are integer multiples of a unit 2**E0, as those integers (int16);
# * plane 1: the others (all below 2**(E0 + 3)), as integers in the quantum 2**-9.
#
# Weights use E0W = -6: plane-0 integers up to 448 * 2**6 = 28672 (int16), plane 1 holds about 0.1 %
# of ResNet-50's weights.  Activations use, per block, the finest unit E0 in [-6, -2] for which
# sum |X0| * max |W0| < 2**31 (E0 = -2 always qualifies: 32 * 1792 * 28672 < 2**31), so one vpdpwssd
# pass gives D = sum X0 * W0 exactly, and plane 1 holds about 0.02 % of activations.  The plane-1
# elements enter as binary64 corrections in D's units (exact: multiples of 2**-10 units, below 2**41 of
# them): an 8-column half with plane-1 weights, or a row with plane-1 activations, forms its exact sum
# in binary64 and rounds once.  Elsewhere the term is fl32(D) * (xs * ws): D may pass 2**24, but scaling
# by a normal binary32 power of two commutes with the rounding, so this is the single rounding of the
# exact product when every scale product is normal (2**-126 or more, checked per batch).

E4M3_TX, E4M3_TW = 7, 11
E0X, E0W = 5 - E4M3_TX, 5 - E4M3_TW
#: The finest activation unit (T = 11: 14 * 2**11 fits int16), taken where the block's sum allows.
E0X_MIN = 5 - 11
#: Block of the MX formats.
MX_BLOCK = 32


@numba.njit(cache=True, nogil=True, inline="always")
def _pow2_f64(e):
    """2.0**e for an integer e in [-1022, 1023], from its bits."""
    return np.int64((e + 1023) << 52).view(np.float64)


#: Rows one parallel task of the quantiser converts.
_QUANT_ROWS = 64


@numba.njit(cache=True, nogil=True, parallel=True)
def gather_quantize_e4m3(vbits, bf16, addr, wmax, x0, x1, scodes, e0x, flags):
    """MXFP8 E4M3 conversion (docs/numerics.md section 2) of rows of gathered 16-bit vectors, as planes.

    Row ``i`` is vectors ``vbits[addr[i, :]]`` (fp16, or bf16 when ``bf16``).  Each block gets a
    plane-0 unit ``2**e0x`` (``e0x`` in [E0X_MIN, E0X]): the finest for which the block's plane-0
    integers ``X0`` satisfy ``sum |X0| * wmax < 2**31`` (``wmax``: the largest plane-0 weight integer
    it meets), so every int32 block sum is exact.  ``x0`` gets ``value / 2**e0x`` for the elements
    that are multiples of ``2**e0x`` (else 0), ``x1`` the others in quanta 2**-9 (else 0), both int16, ``x1``
    only in the blocks that hold some (elsewhere it is left as it was: the kernels read it nowhere else);
    ``scodes`` the E8M0 scale codes (255 for a NaN block, whose elements are 0; 127, scale 1, for an
    all-zero block, whose terms are +0 at any finite scale) and ``flags`` a bit per plane-1 element.

    Element rule, with ``u = |v| / 2**shared``: ``ee = max(floor(log2 u), -6)``, ``q = RNE(u /
    2**(ee - 3))``, value ``q * 2**(ee - 3)`` saturated to 448; a block at a time in vectors of 32
    (:func:`_e4m3_block_kernel`).
    """
    rows, k = addr.shape
    n = vbits.shape[1]
    chunks = (rows + _QUANT_ROWS - 1) // _QUANT_ROWS
    for chunk in numba.prange(chunks):
        for i in range(chunk * _QUANT_ROWS, min(rows, (chunk + 1) * _QUANT_ROWS)):
            _quantize_row_e4m3(vbits, bf16, addr, i, k, n, wmax, x0, x1, scodes, e0x, flags)


@numba.njit(cache=True, nogil=True, inline="always")
def _quantize_block_e4m3(src, lo, bf16, wmax, x0r, x1r, o):
    """One MX block of :func:`gather_quantize_e4m3`: the 16-bit patterns ``src[lo:lo + 32]`` become plane
    integers ``x0r[o:o + 32]`` and, where the block has plane-1 elements, ``x1r[o:o + 32]``; returns (its
    scale code, its plane-0 unit exponent, its plane-1 flag bits)."""
    special = np.uint16(0x7F80) if bf16 else np.uint16(0x7C00)          # the first Inf/NaN magnitude
    top = block_top16(src, lo)
    if top >= special or top == 0:                       # a NaN/Inf block, an all-zero block
        for e in range(MX_BLOCK):
            x0r[o + e] = 0
        return np.int64(255 if top >= special else 127), np.int64(E0X), np.uint32(0)
    if bf16:                                             # floor(log2) of the largest |v|, subnormals too
        wide = np.float64(np.uint32(np.uint32(top) << np.uint32(16)).view(np.float32))
        flog = (wide.view(np.int64) >> 52) - 1023
    else:
        tb = np.int64(top >> np.uint16(10))
        flog = tb - 15 if tb > 0 else np.int64(31 - ctlz32(np.uint32(top))) - 24
    shared = min(max(flog - 8, np.int64(-127)), np.int64(127))
    if bf16:
        packed = e4m3_block_bf16(src, lo, shared, wmax, x0r, x1r, o)
    else:
        packed = e4m3_block_fp16(src, lo, shared, wmax, x0r, x1r, o)
    return shared + 127, packed >> 32, np.uint32(packed & 0xFFFFFFFF)


@numba.njit(cache=True, nogil=True, inline="always")
def _quantize_row_e4m3(vbits, bf16, addr, i, k, n, wmax, x0, x1, scodes, e0x, flags):
    """Row ``i`` of :func:`gather_quantize_e4m3`, a block (32 lanes) at a time."""
    per_vec = n // MX_BLOCK
    x0r, x1r = x0[i], x1[i]
    for j in range(k):
        src = vbits[addr[i, j]]
        for sb in range(per_vec):
            blk = j * per_vec + sb
            code, e0, fl = _quantize_block_e4m3(src, sb * MX_BLOCK, bf16, wmax, x0r, x1r, blk * MX_BLOCK)
            scodes[i, blk] = code
            e0x[i, blk] = e0
            flags[i, blk] = fl


def e4m3_weight_planes(w: np.ndarray):
    """Plane-0 integers (value / 2**E0W, int16: the values that are multiples of 2**E0W) and plane-1
    integers (the others, in quanta 2**-9) of E4M3 values ``w`` (binary32, finite)."""
    scaled = w.astype(np.float64) * 2.0 ** -E0W
    plane0 = scaled == np.round(scaled)
    w0 = np.where(plane0, scaled, 0).astype(np.int16)
    w1 = np.where(plane0, 0, w * 2.0 ** 9).astype(np.int32)
    return w0, w1


class Plane1Weights:
    """A chain's plane-1 weights per (group, panel, block): ``vec[g, p, b]`` bits ``2v`` and ``2v + 1`` for the
    8-column halves of 16-column group ``v`` holding some, and the weights by K-step chunks (``p``, ``s``,
    ``off``: :func:`_plane1_chunks`)."""

    def __init__(self, w1: np.ndarray, nvs: np.ndarray, steps: np.ndarray):
        r, nb, kb, n = w1.shape
        self.vec = np.zeros((r, nvs.size, nb), np.int64)
        c0 = 0
        for p, nv in enumerate(nvs):
            for half in range(2 * int(nv)):
                held = w1[:, :, :, c0 + 8 * half:c0 + 8 * half + 8].any(axis=(2, 3))        # (r, nb)
                self.vec[:, p] |= held.astype(np.int64) << half
            c0 += 16 * int(nv)
        self.p, self.s, self.off = _plane1_chunks(w1, nvs, steps)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.vec, self.p, self.s, self.off))


def _plane1_chunks(w1: np.ndarray, nvs: np.ndarray, steps: np.ndarray):
    """The plane-1 weights by K-step chunks: for every (group, panel, block, 16-column group), each K-step
    holding some as 32 int16 laid out as the plane-0 panel's (the 16 columns' element pairs).  Returns
    (the chunks, int16 (chunks * 32,); each chunk's K-step (chunks,); ``off[g, p, b, v]`` = first chunk
    ``<< CHUNK_COUNT_BITS`` | chunk count, 0 where there is none)."""
    r, nb, kb, n = w1.shape
    off = np.zeros((r, nvs.size, nb, NV_MAX), np.int64)
    chunks, ksteps, pos, c0 = [], [], 0, 0
    for p, nv in enumerate(nvs):
        width = 16 * int(nv)
        part = np.zeros((r, nb, 2 * ((kb + 1) // 2), width), np.int16)
        live = w1[:, :, :, c0:c0 + width]
        part[:, :, :kb, :live.shape[3]] = live
        pairs = part.reshape(r, nb, -1, 2, int(nv), 16)                     # (r, nb, step, pair, v, col)
        held = pairs.any(axis=(3, 5))                                        # (r, nb, step, v)
        g, b, v, t = np.nonzero(held.transpose(0, 1, 3, 2))                 # by (g, b, v), then K-step
        chunks.append(pairs[g, b, t, :, v, :].transpose(0, 2, 1).reshape(-1))
        ksteps.append(t)
        owner = (g * nb + b) * NV_MAX + v
        firsts, counts = np.unique(owner, return_index=True, return_counts=True)[1:]
        off[g[firsts], p, b[firsts], v[firsts]] = ((pos + firsts) << CHUNK_COUNT_BITS) | counts
        pos += t.size
        c0 += width
    flat = np.concatenate(chunks + [np.zeros(32, np.int16)])        # 64 spare bytes: never read past the end
    return flat, np.concatenate(ksteps + [np.zeros(1, np.int64)]).astype(np.int64), off


#: Bits of a plane-1 chunk reference holding the count of its K-steps (at most MX_BLOCK / 2).
CHUNK_COUNT_BITS = 5


#: Plane-1 weight quanta (2**-9) in plane-0 weight units.
W_TO_D = 2.0 ** (-9 - E0W)
e4m3_tile_1 = _e4m3_kernel(1, W_TO_D)
e4m3_tile_2 = _e4m3_kernel(2, W_TO_D)
e4m3_tile_3 = _e4m3_kernel(3, W_TO_D)
e4m3_tile_4 = _e4m3_kernel(4, W_TO_D)


@numba.njit(cache=True, nogil=True, inline="always")
def _tile_e4m3(nv, x0, x1, aidx, m0, mlast, k, bkk, bs, sub, row_bytes, xscale, xflags, xunit, kmask, nb, wp, w0, steps,
               ws, c0, acc, o0, ldo, w1vec, v0, w1p, w1s, w1off):
    if nv == 4:
        e4m3_tile_4(x0, x1, aidx, m0, mlast, k, bkk, bs, sub, row_bytes, xscale, xflags, xunit, kmask, nb, wp, w0,
                    steps, ws, c0, acc, o0, ldo, w1vec, v0, w1p, w1s, w1off)
    elif nv == 3:
        e4m3_tile_3(x0, x1, aidx, m0, mlast, k, bkk, bs, sub, row_bytes, xscale, xflags, xunit, kmask, nb, wp, w0,
                    steps, ws, c0, acc, o0, ldo, w1vec, v0, w1p, w1s, w1off)
    elif nv == 2:
        e4m3_tile_2(x0, x1, aidx, m0, mlast, k, bkk, bs, sub, row_bytes, xscale, xflags, xunit, kmask, nb, wp, w0,
                    steps, ws, c0, acc, o0, ldo, w1vec, v0, w1p, w1s, w1off)
    else:
        e4m3_tile_1(x0, x1, aidx, m0, mlast, k, bkk, bs, sub, row_bytes, xscale, xflags, xunit, kmask, nb, wp, w0,
                    steps, ws, c0, acc, o0, ldo, w1vec, v0, w1p, w1s, w1off)


@numba.njit(cache=True, nogil=True, inline="always")
def _row_nans(aidx, vnan, m0, rows, rownan):
    """Per row ``m0 + i`` of a task: whether any of its vectors has a NaN block scale (``vnan``)."""
    for i in range(rows):
        bad = False
        for kk in range(aidx.shape[1]):
            bad = bad or vnan[aidx[m0 + i, kk]]
        rownan[i] = bad


#: Vectors one claim of a chain's input conversion takes (``chain_e4m3``'s first phase).
CONVERT_ROWS = 32
#: Slots of a chain's work counters (one cache line apart): conversion chunks claimed, converted; tasks claimed;
#: members out of tasks; chunks of the next chain's weights claimed.
_CLAIMED, _CONVERTED, _TASKS, _IDLE, _AHEAD = 0, 8, 16, 24, 32
_COUNTERS = 40
#: Bytes of the next chain's weights an idle member reads into the caches at a time (then it looks whether
#: the chain is done).
AHEAD_CHUNK = 4096


@intrinsic
def _fetch_add(typingctx, counters, slot, value):
    """Atomically add ``value`` to ``counters[slot]`` (int64), returning the value before."""
    def codegen(context, builder, signature, args):
        ptr = builder.gep(_data(context, builder, signature.args[0], args[0]), [args[1]])
        return builder.atomic_rmw("add", ptr, args[2], "seq_cst")
    return types.int64(counters, types.int64, types.int64), codegen


@intrinsic
def _load_acquire(typingctx, counters, slot):
    """``counters[slot]`` (int64), read atomically: whatever was written before its last atomic add is seen."""
    def codegen(context, builder, signature, args):
        ptr = builder.gep(_data(context, builder, signature.args[0], args[0]), [args[1]])
        return builder.load_atomic(ptr, "acquire", 8)
    return types.int64(counters, types.int64), codegen


@intrinsic
def _prefetch(typingctx, data, start, stop):
    """Hint the caches to hold ``data[start:stop]`` (a 1-D array of bytes), a 64-byte line at a time."""
    def codegen(context, builder, signature, args):
        i8p = _I8.as_pointer()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, _I32, _I32, _I32]),
                                            "llvm.prefetch.p0i8")
        base = builder.bitcast(_data(context, builder, signature.args[0], args[0]), i8p)
        with cgutils.for_range_slice(builder, args[1], args[2], ir.Constant(_I64, 64)) as (off, _):
            builder.call(fn, [builder.gep(base, [off]), ir.Constant(_I32, 0), ir.Constant(_I32, 2),
                              ir.Constant(_I32, 1)])
        return context.get_dummy_value()
    return types.void(data, types.int64, types.int64), codegen


@intrinsic
def _spin_pause(typingctx):
    """The x86 ``pause`` hint of a spin-wait loop."""
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
        builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _convert_rows(vbits, bf16, addr, wmax, lo_v, hi_v, table, x0, x1, xflags, e0x, scodes, xscale, xunit, vnan):
    """Vectors ``lo_v .. hi_v - 1`` of :func:`chain_e4m3`'s input: E4M3 planes, each block's scale times its
    plane-0 unit and its plane-1 quantum in those units; returns the (smallest, largest) finite scale
    ((inf, -inf) when none).  A block's scale is worked out as soon as the block is converted."""
    per_vec = vbits.shape[1] // MX_BLOCK
    lo, hi = np.inf, -np.inf
    for v in range(lo_v, hi_v):
        src = vbits[addr[v, 0]]
        x0r, x1r = x0[v], x1[v]
        bad = False
        for blk in range(per_vec):
            code, e, fl = _quantize_block_e4m3(src, blk * MX_BLOCK, bf16, wmax, x0r, x1r, blk * MX_BLOCK)
            scodes[v, blk] = code
            e0x[v, blk] = e
            xflags[v, blk] = fl
            x = np.float64(table[code]) * _pow2_f64(e)
            xunit[v, blk] = _pow2_f64(-9 - e)
            xscale[v, blk] = x
            if x == x:
                lo = min(lo, x)
                hi = max(hi, x)
            else:
                bad = True
        vnan[v] = bad
    return lo, hi


@numba.njit(cache=True, nogil=True, inline="always")
def _converted_scales_fit(chunk_lo, chunk_hi, ws_lo, ws_hi):
    """:func:`scales_fit` for the E4M3 tiles over the finite scale ranges of every converted chunk."""
    lo, hi = np.inf, -np.inf
    for c in range(chunk_lo.shape[0]):
        lo = min(lo, chunk_lo[c])
        hi = max(hi, chunk_hi[c])
    if lo > hi:
        lo, hi = 1.0, 1.0
    return scales_fit(lo, hi, ws_lo, ws_hi, 2.0 ** -126)


@numba.njit(cache=True, nogil=True, parallel=True)
def chain_e4m3(vbits, bf16, addr, wmax, table, x0, x1, xflags, e0x, scodes, xscale, xunit, aidx, sub, blocks,
               wp, pan_w0, pan_c0, pan_nv, steps, ws, ws_lo, ws_hi, colnan, w1_vec, w1_p, w1_s, w1_off, ahead, fmt,
               ops, sources, scalars, operand_addr, vmem, tables, out, wrows, vnan, chunk_lo, chunk_hi, convert,
               threads):
    """One batch of an MVU chain on E4M3 planes (see above), from its input vectors: ``out[m * r + g]`` =
    MFU-format bits.  Returns False, having written nothing, when a scale product leaves the range the
    tile kernels take (:func:`scales_fit`): the caller then takes the block-sum path.

    The input: vectors ``vbits[addr[v, 0]]`` (16-bit patterns, bfloat16 with ``bf16``, else binary16) become
    the int16 planes ``x0``, ``x1`` (V, N) for weights up to ``wmax`` (:func:`gather_quantize_e4m3`), with
    per block ``xflags`` a bit per plane-1 element, ``e0x`` the plane-0 unit, ``scodes`` the scale code
    (values ``table``; the plan's reduction block is the MX block, so one scale each), ``xscale`` the scale
    value times the plane-0 unit and ``xunit`` the plane-1 quantum in plane-0 units; iteration ``m``
    reads vectors ``aidx[m, :]`` (rows of the planes).  ``vnan`` gets per vector whether a block scale is
    NaN, ``chunk_lo``, ``chunk_hi`` per chunk of :data:`CONVERT_ROWS` vectors its finite scales' range.
    Without ``convert`` all of these hold a conversion of the same vectors already (made by an earlier
    call with the same ``wmax``) and the call only reads them.  The weights: a :class:`PackedWeights` of the
    plane-0 integers (int16 pairs ``wp``, its scales' finite range ``ws_lo`` .. ``ws_hi``) and a
    :class:`Plane1Weights`' column groups ``w1_vec`` (r, npan, nb) and K-step chunks (``w1_p``,
    ``w1_s``, ``w1_off``).  They cover the ``nb`` blocks ``blocks`` (indices ``kk * sub + s``) of the
    ``k * sub``: the others have no non-zero weight, so their terms are +0 (or NaN with a NaN scale,
    which ``colnan`` and the rows' NaN scales carry).  ``ahead`` (bytes, any length: the weights of the chain
    expected next) is only read into the caches, by threads out of row tasks while others still run.

    One parallel loop, one iteration per thread, does both phases: each thread claims chunks of
    :data:`CONVERT_ROWS` vectors to convert until none is left, waits until every claimed chunk is
    converted (a spin on a counter; each waits only on chunks other running threads hold), then claims
    row tasks (:func:`row_tasks`) until none is left, and then, until every thread is out of tasks, hints
    the caches to hold chunks of ``ahead`` (:data:`AHEAD_CHUNK` bytes each, claimed from a counter).  So the
    calling thread converts while the others wake (about 45 us each on a 2-core virtual machine), one loop
    start serves both phases, and the time a thread would wait for the last task brings the next chain's
    weights from memory.
    """
    m_rows, k = aidx.shape
    nb = blocks.shape[0]
    r, npan = pan_w0.shape
    n = out.shape[1]
    count = addr.shape[0]
    live = 0
    for p in range(npan):
        live += 16 * pan_nv[p]
    w1v_ = w1_vec.reshape(-1)
    w1o = w1_off.reshape(-1)
    tasks_m, per_task = row_tasks(m_rows, r, threads)
    ntasks = tasks_m * r
    kmask = np.empty(nb, np.uint32)                   # per block: the flag bits of the elements within its K-steps
    bkk = np.empty(nb, np.int64)                      # per block: its tap and sub-block
    bs = np.empty(nb, np.int64)
    for b in range(nb):
        kmask[b] = np.uint32((np.uint64(1) << np.uint64(2 * steps[b])) - np.uint64(1))
        bkk[b] = blocks[b] // sub
        bs[b] = blocks[b] - bkk[b] * sub
    aidx_f = aidx.reshape(-1)
    x0_f = x0.reshape(-1)
    x1_f = x1.reshape(-1)
    xscale_f = xscale.reshape(-1)
    xflags_f = xflags.reshape(-1)
    xunit_f = xunit.reshape(-1)
    chunks = (count + CONVERT_ROWS - 1) // CONVERT_ROWS
    todo = chunks if convert else 0                   # chunks to convert
    counters = np.empty(_COUNTERS, np.int64)
    for i in range(_COUNTERS):                        # not np.zeros: that is a parallel loop of its own here
        counters[i] = 0
    tails, nan_cols, nan_counts = group_columns(colnan, live)
    team = max(1, min(threads, max(chunks, ntasks)))
    for _member in numba.prange(team):
        rownan = np.empty(per_task, np.bool_)         # a member's buffers, for each of its row tasks
        acc = np.empty(((per_task + MR - 1) // MR) * MR * n, np.float32)
        v = np.empty(n, np.float32)
        tt = np.empty(n, np.float32)
        w = np.empty(n, np.float32)
        while True:                                   # phase 1: convert the input vectors
            c = _fetch_add(counters, _CLAIMED, 1)
            if c >= todo:
                break
            lo_c, hi_c = _convert_rows(vbits, bf16, addr, wmax, c * CONVERT_ROWS, min(count, (c + 1) * CONVERT_ROWS),
                                       table, x0, x1, xflags, e0x, scodes, xscale, xunit, vnan)
            chunk_lo[c] = lo_c
            chunk_hi[c] = hi_c
            _fetch_add(counters, _CONVERTED, 1)
        while _load_acquire(counters, _CONVERTED) < todo:
            _spin_pause()
        fits = _converted_scales_fit(chunk_lo, chunk_hi, ws_lo, ws_hi)
        while fits:                                   # phase 2: the row tasks
            task = _fetch_add(counters, _TASKS, 1)
            if task >= ntasks:
                break
            mt = task // r
            g = task - mt * r
            m0 = mt * per_task
            rows = min(per_task, m_rows - m0)
            ntile = (rows + MR - 1) // MR
            _row_nans(aidx, vnan, m0, rows, rownan)
            col = 0
            for p in range(npan):
                nv = pan_nv[p]
                for t in range(ntile):
                    _tile_e4m3(nv, x0_f, x1_f, aidx_f, m0 + t * MR, m0 + rows - 1, k, bkk, bs, sub, 2 * n, xscale_f,
                               xflags_f, xunit_f, kmask, nb, wp, pan_w0[g, p], steps, ws, pan_c0[g, p], acc,
                               t * MR * n + col, n, w1v_, (g * npan + p) * nb, w1_p, w1_s, w1o)
                col += 16 * nv
            _finish_rows(acc, n, live, m0, rows, g, r, rownan, tails[g], nan_cols[g, :nan_counts[g]], fmt, ops,
                         sources, scalars, operand_addr, vmem, tables, v, tt, w, out, wrows)
        _fetch_add(counters, _IDLE, 1)                # out of tasks: read the next chain's weights until all are
        while _load_acquire(counters, _IDLE) < team:
            lo_b = _fetch_add(counters, _AHEAD, 1) * AHEAD_CHUNK
            if lo_b >= ahead.size:
                break
            _prefetch(ahead, lo_b, min(ahead.size, lo_b + AHEAD_CHUNK))
    return _converted_scales_fit(chunk_lo, chunk_hi, ws_lo, ws_hi)
