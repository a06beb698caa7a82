// Conversion of a block of fp16 values (the MVU input, in the MFU format) to a sign-magnitude block
// format (ms-fp8, ms-fp9, msfp12, msfp16, bfp24): docs/numerics.md section 2.
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
    parameter integer EMAX = 0
) (
    input  wire [16*B-1:0]         x,          // element j in bits [16*j +: 16], fp16
    output reg  [B*(M_BITS+1)-1:0] codes,      // element j in bits [j*(M_BITS+1) +: M_BITS+1]
    output reg  [SCALE_BITS-1:0]   scale
);
    localparam integer S_MAX = (1 << SCALE_BITS) - 2 - SCALE_BIAS;     // the all-ones code is NaN
    localparam integer S_MIN = -SCALE_BIAS;
    localparam [40:0] MAG_MAX = (41'd1 << M_BITS) - 41'd1;

    integer j, p, i, s, top, lsb, k;
    reg bad;
    reg [10:0] sig;
    reg [15:0] v;
    reg [40:0] shifted;                          // sig << left shift, or the kept part after a right shift
    reg guard, sticky;
    reg [40:0] m;

    always @* begin
        bad = 1'b0;
        top = -1000;                             // floor(log2 max|v|); -1000 when every value is zero
        for (j = 0; j < B; j = j + 1) begin
            v = x[16*j +: 16];
            if (v[14:10] == 5'h1f) bad = 1'b1;
            sig = {v[14:10] != 5'd0, v[9:0]};
            lsb = ((v[14:10] == 5'd0) ? 1 : {27'd0, v[14:10]}) - 25;
            p = -1;
            for (i = 0; i < 11; i = i + 1)
                if (sig[i]) p = i;
            if (p >= 0 && p + lsb > top) top = p + lsb;
        end
        if (top == -1000) s = S_MIN;
        else begin
            s = top - EMAX;
            if (s < S_MIN) s = S_MIN;
            if (s > S_MAX) s = S_MAX;
        end
        codes = {B*(M_BITS+1){1'b0}};
        scale = bad ? {SCALE_BITS{1'b1}} : s[SCALE_BITS-1:0] + SCALE_BIAS[SCALE_BITS-1:0];
        for (j = 0; j < B; j = j + 1) begin
            v = x[16*j +: 16];
            sig = {v[14:10] != 5'd0, v[9:0]};
            lsb = ((v[14:10] == 5'd0) ? 1 : {27'd0, v[14:10]}) - 25;
            // |v| * 2^(F - s) = sig * 2^(lsb + F - s): shift sig by k = lsb + F - s
            k = lsb + F_BITS - s;
            guard = 1'b0;
            sticky = 1'b0;
            if (sig == 11'd0) begin
                shifted = 41'd0;
                m = 41'd0;
            end else if (k >= 0) begin
                shifted = (k > 29) ? {41{1'b1}} : ({30'd0, sig} << k);      // beyond 2^40: clamps below
                m = shifted;
            end else begin
                shifted = (-k > 11) ? 41'd0 : ({30'd0, sig} >> (-k));
                for (i = 0; i < 11; i = i + 1) begin
                    if (i == -k - 1) guard = sig[i];
                    if (i < -k - 1 && sig[i]) sticky = 1'b1;
                end
                m = shifted + {40'd0, guard & (sticky | shifted[0])};
            end
            if (m > MAG_MAX) m = MAG_MAX;
            if (!bad && m != 0)
                codes[j*(M_BITS+1) +: M_BITS+1] = {v[15], m[M_BITS-1:0]};
        end
    end
endmodule
