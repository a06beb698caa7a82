// The shared scale of a block of B values in the MFU format (X_EXP_W exponent, X_MAN_W fraction bits),
// docs/numerics.md section 2: s = clamp(floor(log2 max|v|) - EMAX, s_min, s_max), s_min for an all-zero
// block; a NaN or infinity anywhere gives the NaN scale code (all ones) and raises `bad`.  The block
// quantisers (npu_bfp_quantize, npu_mx_quantize) take s from here.  Combinational.
module npu_block_scale #(
    parameter integer B = 32,
    parameter integer SCALE_BITS = 5,
    parameter integer SCALE_BIAS = 15,
    parameter integer EMAX = 0,               // exponent of the largest element value
    parameter integer X_EXP_W = 5,
    parameter integer X_MAN_W = 10,
    parameter integer XW = 1 + X_EXP_W + X_MAN_W
) (
    input  wire [XW*B-1:0]        x,
    output reg                    bad,
    output reg signed [15:0]      s,          // the shared exponent
    output wire [SCALE_BITS-1:0]  scale
);
    localparam integer S_MAX = (1 << SCALE_BITS) - 2 - SCALE_BIAS;     // the all-ones code is NaN
    localparam integer S_MIN = -SCALE_BIAS;
    localparam integer X_BIAS = (1 << (X_EXP_W - 1)) - 1;
    localparam [X_EXP_W-1:0] X_EXP_MAX = {X_EXP_W{1'b1}};

`include "npu_mfu_value.vh"
    integer j, p, top, t;

    always @* begin
        bad = 1'b0;
        top = -1000;                             // floor(log2 max|v|); -1000 when every value is zero
        for (j = 0; j < B; j = j + 1) begin
            if (x[XW*j + XW-2 -: X_EXP_W] == X_EXP_MAX) bad = 1'b1;
            p = value_top(value_sig(x[XW*j +: XW-1]));
            if (p >= 0 && p + value_lsb(x[XW*j + XW-2 -: X_EXP_W]) > top) top = p + value_lsb(x[XW*j + XW-2 -: X_EXP_W]);
        end
        t = (top == -1000) ? S_MIN : top - EMAX;
        if (t < S_MIN) t = S_MIN;
        if (t > S_MAX) t = S_MAX;
        s = t[15:0];
    end
    assign scale = bad ? {SCALE_BITS{1'b1}} : s[SCALE_BITS-1:0] + SCALE_BIAS[SCALE_BITS-1:0];
endmodule
