// One element lane of a multi-function unit for the fp16 MFU format (docs/numerics.md section 4).
//
// add, a_sub_b, b_sub_a and mul are computed exactly in fixed point (every
// fp16 value is a multiple of 2^-24 below 2^16, every product of two a
// multiple of 2^-48 below 2^32) and rounded once to fp16, round to nearest
// even, overflow to infinity.  max and relu follow the contract; every NaN
// result is the canonical NaN.  The operation is selected by the ISA opcode
// of the MFU instruction (vv_* and vs_* share the arithmetic).  Combinational.
module npu_mfu_lane_fp16 (
    input  wire [5:0]  op,        // ISA opcode: vv_add/vs_add, vv_a_sub_b, vv_b_sub_a, vv_mul/vs_mul,
                                  // vv_max/vs_max, v_relu; anything else passes x through
    input  wire [15:0] x,         // the chain's value
    input  wire [15:0] y,         // the second operand (vector memory or scalar register, already fp16)
    output reg  [15:0] z
);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */

    localparam integer SUM_W = 42;     // |a + b| < 2^17, in units of 2^-24
    localparam integer PROD_W = 80;    // |a * b| < 2^32, in units of 2^-48

    // ---- operand decoding ---------------------------------------------------------------------
    // the helpers take the magnitude bits [14:0] of an fp16 value
    function automatic is_nan(input [14:0] v);
        is_nan = (v[14:10] == 5'h1f) && (v[9:0] != 10'd0);
    endfunction

    function automatic is_inf(input [14:0] v);
        is_inf = (v[14:10] == 5'h1f) && (v[9:0] == 10'd0);
    endfunction

    function automatic is_zero(input [14:0] v);
        is_zero = (v == 15'd0);
    endfunction

    // |v| in units of 2^-24 (finite v): significand << (exponent - 1) for normals
    function automatic [40:0] fixed_mag(input [14:0] v);
        reg [10:0] sig;
        begin
            sig = (v[14:10] == 5'd0) ? {1'b0, v[9:0]} : {1'b1, v[9:0]};
            fixed_mag = (v[14:10] == 5'd0) ? {30'd0, sig} : ({30'd0, sig} << (v[14:10] - 5'd1));
        end
    endfunction

    // significand (hidden bit included) and the power of two of its LSB, as used by the product
    function automatic [10:0] significand(input [14:0] v);
        significand = (v[14:10] == 5'd0) ? {1'b0, v[9:0]} : {1'b1, v[9:0]};
    endfunction

    // ---- rounding: sign * mag * 2^lsb_exp -> fp16, RNE, overflow to infinity ---------------------
    // mag is PROD_W bits wide (sums are widened); lsb_exp is -24 for sums and -48 for products.
    function automatic [15:0] round_fp16(input sgn, input [PROD_W-1:0] mag, input integer lsb_exp);
        integer p, i, s, e;
        /* verilator lint_off UNUSEDSIGNAL */
        reg [PROD_W-1:0] kept;            // only its low 12 bits matter after the shift
        /* verilator lint_on UNUSEDSIGNAL */
        reg guard, sticky;
        reg [11:0] r;
        begin
            p = -1;
            for (i = 0; i < PROD_W; i = i + 1)
                if (mag[i]) p = i;
            if (p < 0) begin
                round_fp16 = {sgn, 15'd0};
            end else begin
                // position (in mag) of the result's LSB: 11 significant bits, but never below 2^-24
                s = p - 10;
                if (s < -24 - lsb_exp) s = -24 - lsb_exp;
                if (s > 0) begin
                    kept = mag >> s;
                    guard = mag[s - 1];
                    sticky = 1'b0;
                    for (i = 0; i < PROD_W; i = i + 1)
                        if (i < s - 1 && mag[i]) sticky = 1'b1;
                end else begin
                    kept = mag << (-s);
                    guard = 1'b0;
                    sticky = 1'b0;
                end
                r = kept[11:0] + {11'd0, guard & (sticky | kept[0])};
                if (r[11]) begin            // rounding carried into a 12th bit
                    r = r >> 1;
                    s = s + 1;
                end
                if (!r[10]) begin
                    round_fp16 = {sgn, 5'd0, r[9:0]};                 // subnormal (or exactly 2^-14 * x)
                end else begin
                    e = s + lsb_exp + 10 + 15;                         // biased exponent of the leading bit
                    if (e >= 31) round_fp16 = {sgn, 5'h1f, 10'd0};     // overflow -> infinity
                    else round_fp16 = {sgn, e[4:0], r[9:0]};
                end
            end
        end
    endfunction

    // ---- operations ---------------------------------------------------------------------------
    function automatic [15:0] add_fp16(input [15:0] a, input [15:0] b);
        reg [SUM_W-1:0] ma, mb, mag;
        reg sgn;
        begin
            if (is_nan(a[14:0]) || is_nan(b[14:0])) add_fp16 = FP16_CANONICAL_NAN;
            else if (is_inf(a[14:0]) && is_inf(b[14:0])) add_fp16 = (a[15] == b[15]) ? a : FP16_CANONICAL_NAN;
            else if (is_inf(a[14:0])) add_fp16 = a;
            else if (is_inf(b[14:0])) add_fp16 = b;
            else if (is_zero(a[14:0]) && is_zero(b[14:0])) add_fp16 = {a[15] & b[15], 15'd0};   // -0 only for -0 + -0
            else begin
                ma = {1'b0, fixed_mag(a[14:0])};
                mb = {1'b0, fixed_mag(b[14:0])};
                if (a[15] == b[15]) begin
                    mag = ma + mb;
                    sgn = a[15];
                end else if (ma >= mb) begin
                    mag = ma - mb;
                    sgn = (ma == mb) ? 1'b0 : a[15];                  // exact cancellation is +0
                end else begin
                    mag = mb - ma;
                    sgn = b[15];
                end
                add_fp16 = round_fp16(sgn, {{(PROD_W-SUM_W){1'b0}}, mag}, -24);
            end
        end
    endfunction

    function automatic [15:0] mul_fp16(input [15:0] a, input [15:0] b);
        reg sgn;
        reg [21:0] sig;
        integer sh;
        begin
            sgn = a[15] ^ b[15];
            if (is_nan(a[14:0]) || is_nan(b[14:0])) mul_fp16 = FP16_CANONICAL_NAN;
            else if ((is_inf(a[14:0]) && is_zero(b[14:0])) || (is_zero(a[14:0]) && is_inf(b[14:0]))) mul_fp16 = FP16_CANONICAL_NAN;
            else if (is_inf(a[14:0]) || is_inf(b[14:0])) mul_fp16 = {sgn, 5'h1f, 10'd0};
            else begin
                // a = sig_a * 2^(ea - 25) with ea = max(exp, 1); the product's LSB is 2^-48
                sig = significand(a[14:0]) * significand(b[14:0]);
                sh = ((a[14:10] == 5'd0) ? 0 : {27'd0, a[14:10]} - 1) + ((b[14:10] == 5'd0) ? 0 : {27'd0, b[14:10]} - 1);
                mul_fp16 = round_fp16(sgn, {{(PROD_W-22){1'b0}}, sig} << sh, -48);
            end
        end
    endfunction

    // y > x as real numbers (neither is NaN); +0 and -0 are equal
    function automatic greater(input [15:0] a, input [15:0] b);
        begin
            if (is_zero(a[14:0]) && is_zero(b[14:0])) greater = 1'b0;
            else if (a[15] != b[15]) greater = !a[15];
            else if (!a[15]) greater = a[14:0] > b[14:0];
            else greater = a[14:0] < b[14:0];
        end
    endfunction

    always @* begin
        case (op)
            OP_VV_ADD, OP_VS_ADD: z = add_fp16(x, y);
            OP_VV_A_SUB_B:        z = add_fp16(x, {~y[15], y[14:0]});
            OP_VV_B_SUB_A:        z = add_fp16(y, {~x[15], x[14:0]});
            OP_VV_MUL, OP_VS_MUL: z = mul_fp16(x, y);
            OP_VV_MAX, OP_VS_MAX: z = (is_nan(x[14:0]) || is_nan(y[14:0])) ? FP16_CANONICAL_NAN : (greater(y, x) ? y : x);
            OP_V_RELU:            z = is_nan(x[14:0]) ? FP16_CANONICAL_NAN :
                                      (greater(x, 16'h0000) ? x : 16'h0000);
            default:              z = is_nan(x[14:0]) ? FP16_CANONICAL_NAN : x;
        endcase
    end
endmodule
