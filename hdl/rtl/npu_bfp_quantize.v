// Conversion of a block of values in the MFU format (fp16, bf16 or fp32: X_EXP_W exponent and X_MAN_W
// fraction bits) to a sign-magnitude block format (ms-fp8, ms-fp9, msfp12, msfp16, bfp24):
// docs/numerics.md section 2.
//
//   s = clamp(floor(log2 max|v|) - EMAX, s_min, s_max)   (s_min for an all-zero block)
//   M = min(RNE(|v| * 2^(F - s)), 2^M_BITS - 1), sign kept unless M = 0
// A NaN or infinity anywhere gives the NaN scale code and zero elements.  Combinational.
module npu_bfp_quantize #(
    parameter integer B = 32,
    parameter integer M_BITS = 3,
    parameter integer F_BITS = 2,
    parameter integer SCALE_BITS = 5,
    parameter integer SCALE_BIAS = 15,
    parameter integer EMAX = 0,
    parameter integer X_EXP_W = 5,
    parameter integer X_MAN_W = 10,
    parameter integer XW = 1 + X_EXP_W + X_MAN_W
) (
    input  wire [XW*B-1:0]         x,          // element j in bits [XW*j +: XW]
    output reg  [B*(M_BITS+1)-1:0] codes,      // element j in bits [j*(M_BITS+1) +: M_BITS+1]
    output wire [SCALE_BITS-1:0]   scale
);
    localparam [40:0] MAG_MAX = (41'd1 << M_BITS) - 41'd1;
    localparam integer SIG_W = X_MAN_W + 1;
    localparam integer X_BIAS = (1 << (X_EXP_W - 1)) - 1;

`include "npu_mfu_value.vh"
    integer j, i, s, lsb, k;
    reg [SIG_W-1:0] sig;
    reg [XW-1:0] v;
    reg [40:0] shifted;                          // sig << left shift, or the kept part after a right shift
    reg guard, sticky;
    reg [40:0] m;

    wire bad;
    wire signed [15:0] shared;
    npu_block_scale #(.B(B), .SCALE_BITS(SCALE_BITS), .SCALE_BIAS(SCALE_BIAS), .EMAX(EMAX), .X_EXP_W(X_EXP_W),
                      .X_MAN_W(X_MAN_W)) block_scale (.x(x), .bad(bad), .s(shared), .scale(scale));

    always @* begin
        s = {{16{shared[15]}}, shared};
        codes = {B*(M_BITS+1){1'b0}};
        for (j = 0; j < B; j = j + 1) begin
            v = x[XW*j +: XW];
            sig = value_sig(v[XW-2:0]);
            lsb = value_lsb(v[XW-2 -: X_EXP_W]);
            // |v| * 2^(F - s) = sig * 2^(lsb + F - s): shift sig by k = lsb + F - s
            k = lsb + F_BITS - s;
            guard = 1'b0;
            sticky = 1'b0;
            if (sig == 0) begin
                shifted = 41'd0;
                m = 41'd0;
            end else if (k >= 0) begin
                shifted = (k > 41 - SIG_W) ? {41{1'b1}} : ({{(41-SIG_W){1'b0}}, sig} << k);   // beyond 2^40: clamps below
                m = shifted;
            end else begin
                shifted = (-k > SIG_W) ? 41'd0 : ({{(41-SIG_W){1'b0}}, sig} >> (-k));
                for (i = 0; i < SIG_W; i = i + 1) begin
                    if (i == -k - 1) guard = sig[i];
                    if (i < -k - 1 && sig[i]) sticky = 1'b1;
                end
                m = shifted + {40'd0, guard & (sticky | shifted[0])};
            end
            if (m > MAG_MAX) m = MAG_MAX;
            if (!bad && m != 0)
                codes[j*(M_BITS+1) +: M_BITS+1] = {v[XW-1], m[M_BITS-1:0]};
        end
    end
endmodule
