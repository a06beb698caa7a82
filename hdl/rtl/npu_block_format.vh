// Block format descriptors as the RTL sees them (hdl/core.py derives them from npu.numerics.formats):
//   KIND      the element kind, a code of the generated format_codes.vh: KIND_SM sign-magnitude (ms-fp8,
//             ms-fp9, msfp12, msfp16, bfp24), KIND_INT two's complement (mxint8), KIND_FP minifloat (the
//             MX FP8/FP6/FP4 elements)
//   E_BITS    bits of an element code
//   M_BITS    magnitude bits (KIND_SM, KIND_INT) or mantissa bits (KIND_FP)
//   F_BITS    the element grid: every element value is an integer times 2^-F_BITS
//   EXP_BITS, EXP_BIAS   minifloat exponent field and bias (KIND_FP)
//   ELEM_SPECIAL         minifloat special codes: 0 none, 1 only S.1..1.1..1 is NaN (E4M3), 2 IEEE (E5M2)
// `include this inside a module; it includes format_codes.vh, so the module must not include that again.
/* verilator lint_off UNUSEDPARAM */
`include "format_codes.vh"
/* verilator lint_on UNUSEDPARAM */

// Bits of an element's magnitude on the grid of 2^-F_BITS.
function automatic integer elem_mag_width(input integer kind, input integer e_bits, input integer m_bits,
                                          input integer exp_bits);
    if (kind == KIND_FP) elem_mag_width = m_bits + 1 + (1 << exp_bits) - 2;   // significand << (biased exp - 1)
    else if (kind == KIND_INT) elem_mag_width = e_bits;                      // |-2^(e_bits-1)| included
    else elem_mag_width = m_bits;
endfunction

// Bits of an exact signed sum of b products of two elements.
function automatic integer block_acc_width(input integer kind, input integer e_bits, input integer m_bits,
                                           input integer exp_bits, input integer b);
    block_acc_width = 2 * elem_mag_width(kind, e_bits, m_bits, exp_bits) + $clog2(b) + 2;
endfunction
