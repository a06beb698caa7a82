// Rounds an exact value  (-1)^sgn * mag * 2^lsb_exp  to an IEEE-style binary format with EXP_W exponent
// bits and MAN_W fraction bits: round to nearest even, subnormals kept, overflow to infinity
// (docs/numerics.md: every rounding of the MFU and of the MVU accumulator is this one).
// A zero magnitude gives a zero with the given sign.  The rounding itself is npu_round_float.vh's function.
// Combinational.
module npu_round_float #(
    parameter integer MAG_W = 64,      // width of the exact magnitude
    parameter integer EXP_W = 5,
    parameter integer MAN_W = 10
) (
    input  wire                     sgn,
    input  wire [MAG_W-1:0]         mag,
    input  wire signed [15:0]       lsb_exp,   // power of two of mag's bit 0
    output wire [EXP_W+MAN_W:0]     result
);
`include "npu_round_float.vh"
    /* verilator lint_off VARHIDDEN */
    /* verilator lint_off UNUSEDSIGNAL */
    `NPU_ROUND_FLOAT_FN(round_float, MAG_W, EXP_W, MAN_W)
    /* verilator lint_on UNUSEDSIGNAL */
    /* verilator lint_on VARHIDDEN */
    assign result = round_float(sgn, mag, lsb_exp);
endmodule
