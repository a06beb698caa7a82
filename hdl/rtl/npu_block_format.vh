// Block format descriptors as the RTL sees them (hdl/core.py derives them from npu.numerics.formats):
//   KIND      0 sign-magnitude (ms-fp8, ms-fp9, msfp12, msfp16, bfp24), 1 two's complement (mxint8),
//             2 minifloat (the MX FP8/FP6/FP4 elements)
//   E_BITS    bits of an element code
//   M_BITS    magnitude bits (kinds 0, 1) or mantissa bits (kind 2)
//   F_BITS    the element grid: every element value is an integer times 2^-F_BITS
//   EXP_BITS, EXP_BIAS   minifloat exponent field and bias (kind 2)
//   ELEM_SPECIAL         minifloat special codes: 0 none, 1 only S.1..1.1..1 is NaN (E4M3), 2 IEEE (E5M2)

// Bits of an element's magnitude on the grid of 2^-F_BITS.
function automatic integer elem_mag_width(input integer kind, input integer e_bits, input integer m_bits,
                                          input integer exp_bits);
    if (kind == 2) elem_mag_width = m_bits + 1 + (1 << exp_bits) - 2;     // significand << (biased exp - 1)
    else if (kind == 1) elem_mag_width = e_bits;                          // |-2^(e_bits-1)| included
    else elem_mag_width = m_bits;
endfunction

// Bits of an exact signed sum of b products of two elements.
function automatic integer block_acc_width(input integer kind, input integer e_bits, input integer m_bits,
                                           input integer exp_bits, input integer b);
    block_acc_width = 2 * elem_mag_width(kind, e_bits, m_bits, exp_bits) + $clog2(b) + 2;
endfunction
