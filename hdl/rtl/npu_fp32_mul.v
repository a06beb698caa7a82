// binary32 multiplication, RNE, subnormals kept, overflow to infinity, canonical NaN (the MFU's multiply and
// the activation tables' b_i * t, docs/numerics.md section 4).  The exact 48-bit product of the significands
// is rounded once by npu_round_float.  Combinational.
module npu_fp32_mul (
    input  wire [31:0] a,
    input  wire [31:0] b,
    output wire [31:0] z
);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */

`include "npu_fp32_class.vh"
    wire a_nan = fp32_is_nan(a[30:0]), b_nan = fp32_is_nan(b[30:0]);
    wire a_inf = fp32_is_inf(a[30:0]), b_inf = fp32_is_inf(b[30:0]);
    wire a_zero = a[30:0] == 31'd0;
    wire b_zero = b[30:0] == 31'd0;
    wire sgn = a[31] ^ b[31];

    // a = sig_a * 2^(max(e_a, 1) - 150): the product's LSB is 2^(max(e_a, 1) + max(e_b, 1) - 300)
    wire [47:0] mag = {24'd0, a[30:23] != 0, a[22:0]} * {24'd0, b[30:23] != 0, b[22:0]};
    wire signed [15:0] lsb = $signed({8'd0, (a[30:23] == 0) ? 8'd1 : a[30:23]}) +
                             $signed({8'd0, (b[30:23] == 0) ? 8'd1 : b[30:23]}) - 16'sd300;
    wire [31:0] rounded;

    npu_round_float #(.MAG_W(48), .EXP_W(8), .MAN_W(23)) round (
        .sgn(sgn), .mag(mag), .lsb_exp(lsb), .result(rounded));

    assign z = (a_nan || b_nan || (a_inf && b_zero) || (a_zero && b_inf)) ? FP32_CANONICAL_NAN :
               (a_inf || b_inf) ? {sgn, 8'hff, 23'd0} : rounded;
endmodule
