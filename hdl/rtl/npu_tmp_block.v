// Temporary sign-magnitude slice dot and block rounding (replaced by the general block units).
module npu_slice_dot #(
    parameter integer L = 8, parameter integer KIND = 0, parameter integer E_BITS = 4,
    parameter integer M_BITS = 3, parameter integer F_BITS = 2, parameter integer EXP_BITS = 0,
    parameter integer EXP_BIAS = 0, parameter integer ACC_W = 16
) (
    input  wire [L*E_BITS-1:0] w_codes,
    input  wire [L*E_BITS-1:0] x_codes,
    output reg  [ACC_W-1:0]    sum
);
    reg [2*M_BITS-1:0] prod;
    integer j;
    always @* begin
        sum = {ACC_W{1'b0}};
        for (j = 0; j < L; j = j + 1) begin
            prod = {{M_BITS{1'b0}}, w_codes[j*E_BITS +: M_BITS]} * {{M_BITS{1'b0}}, x_codes[j*E_BITS +: M_BITS]};
            if (w_codes[j*E_BITS + M_BITS] ^ x_codes[j*E_BITS + M_BITS])
                sum = sum - {{(ACC_W - 2*M_BITS){1'b0}}, prod};
            else
                sum = sum + {{(ACC_W - 2*M_BITS){1'b0}}, prod};
        end
    end
endmodule

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

module npu_block_quantize #(
    parameter integer B = 32, parameter integer FMT = 0, parameter integer KIND = 0, parameter integer E_BITS = 4,
    parameter integer M_BITS = 3, parameter integer F_BITS = 2, parameter integer EXP_BITS = 0,
    parameter integer EXP_BIAS = 0, parameter integer SCALE_BITS = 5, parameter integer SCALE_BIAS = 15,
    parameter integer EMAX = 0
) (
    input  wire [16*B-1:0]       x,
    output wire [B*E_BITS-1:0]   codes,
    output wire [SCALE_BITS-1:0] scale
);
    npu_bfp_quantize #(.B(B), .M_BITS(M_BITS), .F_BITS(F_BITS), .SCALE_BITS(SCALE_BITS), .SCALE_BIAS(SCALE_BIAS),
                       .EMAX(EMAX)) q (.x(x), .codes(codes), .scale(scale));
endmodule
