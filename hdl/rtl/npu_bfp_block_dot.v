// One reduction block of the MVU for sign-magnitude block formats (ms-fp8, ms-fp9, msfp12, msfp16,
// bfp24): P_b = RNE_binary32(sum_j w_j * x_j), the sum exact (docs/numerics.md section 3).
//
// Elements are integers M * 2^-F with a sign bit on top; the block's values share 2^(code - BIAS).  The
// integer products are summed exactly by an adder tree, and the sum (an integer times
// 2^(s_w + s_x - 2F)) is rounded once by npu_round_float.  A NaN scale code (all ones) gives NaN.
// Combinational.
module npu_bfp_block_dot #(
    parameter integer B = 32,            // elements per reduction block
    parameter integer M_BITS = 3,        // magnitude bits of an element (ms-fp9: 3)
    parameter integer F_BITS = 2,        // fraction bits of the magnitude (ms-fp9: value M * 2^-2)
    parameter integer SCALE_BITS = 5,
    parameter integer SCALE_BIAS = 15
) (
    input  wire [B*(M_BITS+1)-1:0] w_codes,   // element j in bits [j*(M_BITS+1) +: M_BITS+1]
    input  wire [SCALE_BITS-1:0]   w_scale,
    input  wire [B*(M_BITS+1)-1:0] x_codes,
    input  wire [SCALE_BITS-1:0]   x_scale,
    output wire [31:0]             p          // binary32
);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
    localparam integer E_BITS = M_BITS + 1;
    localparam integer SUM_BITS = 2 * M_BITS + $clog2(B) + 1;
    localparam [SCALE_BITS-1:0] SCALE_NAN = {SCALE_BITS{1'b1}};
    localparam integer MAG_W = (SUM_BITS + 1 > 26) ? SUM_BITS + 1 : 26;   // the rounder needs MAN_W + 2 bits

    reg signed [SUM_BITS:0] sum;
    reg [2*M_BITS-1:0] prod;
    integer j;
    always @* begin
        sum = 0;
        for (j = 0; j < B; j = j + 1) begin
            prod = {{M_BITS{1'b0}}, w_codes[j*E_BITS +: M_BITS]} * {{M_BITS{1'b0}}, x_codes[j*E_BITS +: M_BITS]};
            if (w_codes[j*E_BITS + M_BITS] ^ x_codes[j*E_BITS + M_BITS])
                sum = sum - $signed({{(SUM_BITS - 2*M_BITS + 1){1'b0}}, prod});
            else
                sum = sum + $signed({{(SUM_BITS - 2*M_BITS + 1){1'b0}}, prod});
        end
    end

    wire               neg = sum[SUM_BITS];
    wire [SUM_BITS:0]  mag = neg ? -sum : sum;
    wire signed [15:0] lsb = $signed({{(16 - SCALE_BITS){1'b0}}, w_scale}) + $signed({{(16 - SCALE_BITS){1'b0}}, x_scale})
                             - 16'sd2 * SCALE_BIAS[15:0] - 16'sd2 * F_BITS[15:0];
    wire [31:0]        rounded;

    npu_round_float #(.MAG_W(MAG_W), .EXP_W(8), .MAN_W(23)) round (
        .sgn(neg), .mag({{(MAG_W - SUM_BITS - 1){1'b0}}, mag}), .lsb_exp(lsb), .result(rounded));

    // an exact zero sum is +0 (neg is clear for it)
    assign p = (w_scale == SCALE_NAN || x_scale == SCALE_NAN) ? FP32_CANONICAL_NAN : rounded;
endmodule
