// Conversion of a block of values in the MFU format (X_EXP_W exponent and X_MAN_W fraction bits) to an
// MX minifloat block format (FP8 E4M3/E5M2, FP6 E2M3/E3M2, FP4 E2M1 with an E8M0 scale):
// docs/numerics.md section 2.
//
//   s = clamp(floor(log2 max|v|) - EMAX, s_min, s_max)   (s_min for an all-zero block)
//   u = v / 2^s;  e = max(floor(log2 |u|), EMIN);  q = RNE(|u| / 2^(e - M_BITS)) * 2^(e - M_BITS),
//   clamped to the largest finite element; the sign is kept unless q = 0
// A NaN or infinity anywhere gives the NaN scale code and zero elements.  Combinational.
module npu_mx_quantize #(
    parameter integer B = 32,
    parameter integer E_BITS = 8,             // element code bits: 1 + EXP_BITS + M_BITS
    parameter integer EXP_BITS = 4,
    parameter integer M_BITS = 3,
    parameter integer EXP_BIAS = 7,
    parameter integer ELEM_SPECIAL = 1,       // npu_block_format.vh: which codes are NaN / infinity
    parameter integer SCALE_BITS = 8,
    parameter integer SCALE_BIAS = 127,
    parameter integer EMAX = 8,               // exponent of the largest normal element
    parameter integer X_EXP_W = 5,
    parameter integer X_MAN_W = 10,
    parameter integer XW = 1 + X_EXP_W + X_MAN_W
) (
    input  wire [XW*B-1:0]       x,           // element j in bits [XW*j +: XW]
    output reg  [B*E_BITS-1:0]   codes,       // element j in bits [j*E_BITS +: E_BITS]
    output wire [SCALE_BITS-1:0] scale
);
    localparam integer EMIN = 1 - EXP_BIAS;                            // exponent of the smallest normal
    localparam integer SIG_W = X_MAN_W + 1;
    localparam integer X_BIAS = (1 << (X_EXP_W - 1)) - 1;
    // the largest finite element on the grid of 2^(EMIN - M_BITS): significand << (biased exponent - 1)
    localparam integer TOP_E = (ELEM_SPECIAL == 2) ? (1 << EXP_BITS) - 2 : (1 << EXP_BITS) - 1;
    localparam integer TOP_SIG = (ELEM_SPECIAL == 1) ? (2 << M_BITS) - 2 : (2 << M_BITS) - 1;
    localparam integer G_W = M_BITS + 1 + (1 << EXP_BITS) - 2;
    localparam [G_W-1:0] G_MAX = {{(G_W - M_BITS - 1){1'b0}}, TOP_SIG[M_BITS:0]} << (TOP_E - 1);
    localparam integer UW = (G_W > SIG_W) ? G_W + 1 : SIG_W + 1;      // room for a rounding carry

`include "npu_mfu_value.vh"
    integer j, p, i, s, lsb, k, e, d;
    /* verilator lint_off UNUSEDSIGNAL */
    integer t;                                // an exponent field value; only its low EXP_BITS bits matter
    /* verilator lint_on UNUSEDSIGNAL */
    reg [SIG_W-1:0] sig;
    reg [XW-1:0] v;
    reg [SIG_W-1:0] kept;
    reg guard, sticky;
    reg [UW-1:0] units;                       // the rounded |u| in units of 2^(e - M_BITS)
    reg [UW-1:0] g;                           // ... on the grid of 2^(EMIN - M_BITS)
    reg [EXP_BITS-1:0] ef;
    reg [M_BITS-1:0] mf;

    wire bad;
    wire signed [15:0] shared;
    npu_block_scale #(.B(B), .SCALE_BITS(SCALE_BITS), .SCALE_BIAS(SCALE_BIAS), .EMAX(EMAX), .X_EXP_W(X_EXP_W),
                      .X_MAN_W(X_MAN_W)) block_scale (.x(x), .bad(bad), .s(shared), .scale(scale));

    always @* begin
        s = {{16{shared[15]}}, shared};
        t = 0;
        codes = {B*E_BITS{1'b0}};
        for (j = 0; j < B; j = j + 1) begin
            v = x[XW*j +: XW];
            sig = value_sig(v[XW-2:0]);
            lsb = value_lsb(v[XW-2 -: X_EXP_W]);
            p = value_top(sig);
            k = p + lsb - s;                     // floor(log2 |u|)
            e = (k > EMIN) ? k : EMIN;
            // |u| / 2^(e - M_BITS) = sig * 2^(lsb - s - e + M_BITS): drop d low bits of sig, RNE
            d = e - M_BITS - lsb + s;
            guard = 1'b0;
            sticky = 1'b0;
            kept = {SIG_W{1'b0}};
            units = {UW{1'b0}};
            g = {UW{1'b0}};
            if (p >= 0 && k > EMAX) begin
                g = {{(UW-G_W){1'b0}}, G_MAX};                                   // beyond the largest binade: saturate
            end else if (p >= 0) begin
                if (d <= 0) begin
                    units = {{(UW-SIG_W){1'b0}}, sig} << (-d);       // exact: |u| < 2^(e+1)
                end else begin
                    kept = (d >= SIG_W) ? {SIG_W{1'b0}} : sig >> d;
                    for (i = 0; i < SIG_W; i = i + 1) begin
                        if (i == d - 1) guard = sig[i];
                        if (i < d - 1 && sig[i]) sticky = 1'b1;
                    end
                    units = {{(UW-SIG_W){1'b0}}, kept} + {{(UW-1){1'b0}}, guard & (sticky | kept[0])};
                end
                g = units << (e - EMIN);
                if (g > {{(UW-G_W){1'b0}}, G_MAX}) g = {{(UW-G_W){1'b0}}, G_MAX};
            end
            // encode g: below 2^M_BITS a subnormal (exponent field 0), else the normal with g's top bit
            ef = {EXP_BITS{1'b0}};
            mf = g[M_BITS-1:0];
            for (i = M_BITS; i < G_W; i = i + 1)
                if (g[i]) begin
                    t = i - M_BITS + 1;
                    ef = t[EXP_BITS-1:0];
                    mf = g[i - M_BITS +: M_BITS];
                end
            if (!bad && g != 0)
                codes[j*E_BITS +: E_BITS] = {v[XW-1], ef, mf};
        end
    end
endmodule
