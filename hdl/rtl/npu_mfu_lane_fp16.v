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
    output wire [15:0] z
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

    // ---- exact add / multiply: (special result?, sign, magnitude, power of two of its LSB) ---------
    // The one rounding to fp16 is npu_round_float below; special cases bypass it.
    reg              special;
    reg [15:0]       special_z;
    reg              sgn;
    reg [PROD_W-1:0] mag;
    reg signed [15:0] lsb;
    wire [15:0]      rounded;

    npu_round_float #(.MAG_W(PROD_W), .EXP_W(5), .MAN_W(10)) round (
        .sgn(sgn), .mag(mag), .lsb_exp(lsb), .result(rounded));

    task automatic exact_add(input [15:0] a, input [15:0] b);
        reg [SUM_W-1:0] ma, mb;
        begin
            special = 1'b1;
            sgn = 1'b0;
            mag = {PROD_W{1'b0}};
            lsb = -16'sd24;
            if (is_nan(a[14:0]) || is_nan(b[14:0])) special_z = FP16_CANONICAL_NAN;
            else if (is_inf(a[14:0]) && is_inf(b[14:0])) special_z = (a[15] == b[15]) ? a : FP16_CANONICAL_NAN;
            else if (is_inf(a[14:0])) special_z = a;
            else if (is_inf(b[14:0])) special_z = b;
            else if (is_zero(a[14:0]) && is_zero(b[14:0])) special_z = {a[15] & b[15], 15'd0};   // -0 only for -0 + -0
            else begin
                special = 1'b0;
                special_z = 16'd0;
                ma = {1'b0, fixed_mag(a[14:0])};
                mb = {1'b0, fixed_mag(b[14:0])};
                if (a[15] == b[15]) begin
                    mag = {{(PROD_W-SUM_W){1'b0}}, ma + mb};
                    sgn = a[15];
                end else if (ma >= mb) begin
                    mag = {{(PROD_W-SUM_W){1'b0}}, ma - mb};
                    sgn = (ma == mb) ? 1'b0 : a[15];                  // exact cancellation is +0
                end else begin
                    mag = {{(PROD_W-SUM_W){1'b0}}, mb - ma};
                    sgn = b[15];
                end
            end
        end
    endtask

    task automatic exact_mul(input [15:0] a, input [15:0] b);
        integer sh;
        reg [21:0] prod;
        begin
            special = 1'b1;
            sgn = a[15] ^ b[15];
            mag = {PROD_W{1'b0}};
            lsb = -16'sd48;
            if (is_nan(a[14:0]) || is_nan(b[14:0])) special_z = FP16_CANONICAL_NAN;
            else if ((is_inf(a[14:0]) && is_zero(b[14:0])) || (is_zero(a[14:0]) && is_inf(b[14:0])))
                special_z = FP16_CANONICAL_NAN;
            else if (is_inf(a[14:0]) || is_inf(b[14:0])) special_z = {sgn, 5'h1f, 10'd0};
            else begin
                // a = sig_a * 2^(ea - 24) in units of 2^-24, ea = max(exp, 1) - 1; the product's LSB is 2^-48
                special = 1'b0;
                special_z = 16'd0;
                sh = ((a[14:10] == 5'd0) ? 0 : {27'd0, a[14:10]} - 1) + ((b[14:10] == 5'd0) ? 0 : {27'd0, b[14:10]} - 1);
                prod = {11'd0, significand(a[14:0])} * {11'd0, significand(b[14:0])};
                mag = {{(PROD_W-22){1'b0}}, prod} << sh;
            end
        end
    endtask

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
        special = 1'b1;
        special_z = 16'd0;
        sgn = 1'b0;
        mag = {PROD_W{1'b0}};
        lsb = -16'sd24;
        case (op)
            OP_VV_ADD, OP_VS_ADD: exact_add(x, y);
            OP_VV_A_SUB_B:        exact_add(x, {~y[15], y[14:0]});
            OP_VV_B_SUB_A:        exact_add(y, {~x[15], x[14:0]});
            OP_VV_MUL, OP_VS_MUL: exact_mul(x, y);
            OP_VV_MAX, OP_VS_MAX: special_z = (is_nan(x[14:0]) || is_nan(y[14:0])) ? FP16_CANONICAL_NAN :
                                              (greater(y, x) ? y : x);
            OP_V_RELU:            special_z = is_nan(x[14:0]) ? FP16_CANONICAL_NAN :
                                              (greater(x, 16'h0000) ? x : 16'h0000);
            default:              special_z = is_nan(x[14:0]) ? FP16_CANONICAL_NAN : x;
        endcase
    end

    assign z = special ? special_z : rounded;
endmodule
