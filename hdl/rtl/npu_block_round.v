// The MVU's block arithmetic for sign-magnitude formats (ms-fp8, ms-fp9, msfp12, bfp24): the exact slice dot
// of L element pairs, the once-rounded block sum (docs/numerics.md section 3) and the input conversion.
// The descriptor parameters of other block kinds (KIND, EXP_BITS, ...) are accepted and unused: the MX
// element kinds are not implemented yet (hdl/core.py refuses them).
/* verilator lint_off UNUSEDPARAM */
module npu_block_round #(
    parameter integer KIND = 0, parameter integer E_BITS = 4, parameter integer M_BITS = 3,
    parameter integer F_BITS = 2, parameter integer EXP_BITS = 0, parameter integer EXP_BIAS = 0,
    parameter integer SCALE_BITS = 5, parameter integer SCALE_BIAS = 15, parameter integer ACC_W = 16
) (
    input  wire [ACC_W-1:0]      sum,
    input  wire [SCALE_BITS-1:0] w_scale,
    input  wire [SCALE_BITS-1:0] x_scale,
    output wire [31:0]           p
);
/* verilator lint_on UNUSEDPARAM */
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
    localparam [SCALE_BITS-1:0] SCALE_NAN = {SCALE_BITS{1'b1}};
    localparam integer MAG_W = (ACC_W > 26) ? ACC_W : 26;
    wire              neg = sum[ACC_W-1];
    wire [ACC_W-1:0]  mag = neg ? -sum : sum;
    wire signed [15:0] lsb = $signed({{(16 - SCALE_BITS){1'b0}}, w_scale}) + $signed({{(16 - SCALE_BITS){1'b0}}, x_scale})
                             - 16'sd2 * SCALE_BIAS[15:0] - 16'sd2 * F_BITS[15:0];
    wire [31:0] rounded;
    npu_round_float #(.MAG_W(MAG_W), .EXP_W(8), .MAN_W(23)) round (
        .sgn(neg), .mag({{(MAG_W - ACC_W){1'b0}}, mag}), .lsb_exp(lsb), .result(rounded));
    assign p = (w_scale == SCALE_NAN || x_scale == SCALE_NAN) ? FP32_CANONICAL_NAN : rounded;
endmodule
