// The MVU's block partial sum: an exact slice-dot sum (an integer times 2^(s_w + s_x - 2F_BITS)) rounded
// once to binary32; a NaN scale code (all ones) or a NaN/infinite element gives NaN (docs/numerics.md
// section 3).  Combinational.
module npu_block_round #(
    parameter integer F_BITS = 2, parameter integer SCALE_BITS = 5, parameter integer SCALE_BIAS = 15,
    parameter integer ACC_W = 16
) (
    input  wire [ACC_W-1:0]      sum,
    input  wire                  special,     // an element of the block was NaN or infinite
    input  wire [SCALE_BITS-1:0] w_scale,
    input  wire [SCALE_BITS-1:0] x_scale,
    output wire [31:0]           p
);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
    localparam [SCALE_BITS-1:0] SCALE_NAN = {SCALE_BITS{1'b1}};
    localparam integer MAG_W = (ACC_W > 25) ? ACC_W + 1 : 26;     // room for npu_round_float's guard bits
    wire              neg = sum[ACC_W-1];
    wire [ACC_W-1:0]  mag = neg ? -sum : sum;
    wire signed [15:0] lsb = $signed({{(16 - SCALE_BITS){1'b0}}, w_scale}) + $signed({{(16 - SCALE_BITS){1'b0}}, x_scale})
                             - 16'sd2 * SCALE_BIAS[15:0] - 16'sd2 * F_BITS[15:0];
    wire [31:0] rounded;
    npu_round_float #(.MAG_W(MAG_W), .EXP_W(8), .MAN_W(23)) round (
        .sgn(neg), .mag({{(MAG_W - ACC_W){1'b0}}, mag}), .lsb_exp(lsb), .result(rounded));
    assign p = (special || w_scale == SCALE_NAN || x_scale == SCALE_NAN) ? FP32_CANONICAL_NAN : rounded;
endmodule
