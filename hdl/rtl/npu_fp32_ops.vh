// The binary32 arithmetic of the MFU and of the MVU's accumulation as functions of the module that includes
// this file (after isa_defs.vh): IEEE binary32 addition and multiplication, fp16 <-> binary32, binary32 ->
// bf16, and the sigmoid/tanh tables (docs/numerics.md sections 3 and 4).  Every rounding is
// npu_round_float.vh's, expanded once per width.  Modules such as npu_fp32_add wrap one function each;
// the clocked MFU and combine lanes call them inside their registers' enables, so that idle lanes cost
// nothing in simulation.
    // function arguments may share the names of the including module's ports; some functions round into
    // wider variables than they use
    /* verilator lint_off VARHIDDEN */
    /* verilator lint_off UNUSEDSIGNAL */
`include "npu_round_float.vh"
`include "npu_fp32_class.vh"
    /* verilator lint_off UNUSEDPARAM */
`include "act_tables.vh"
    /* verilator lint_on UNUSEDPARAM */

    `NPU_ROUND_FLOAT_FN(round_fp32_sum, 52, 8, 23)
    `NPU_ROUND_FLOAT_FN(round_fp32_product, 48, 8, 23)
    `NPU_ROUND_FLOAT_FN(round_fp32_fraction, 25, 8, 23)
    `NPU_ROUND_FLOAT_FN(round_fp16, 24, 5, 10)
    `NPU_ROUND_FLOAT_FN(round_bf16, 24, 8, 7)

// binary32 a + b, RNE, subnormals kept, overflow to infinity, canonical NaN.  The larger operand's significand
// is shifted onto the smaller one's grid, the exact sum is formed and rounded once; a smaller operand more
// than 26 binades below cannot change the rounded result.
function automatic [31:0] fp32_add(input [31:0] a, input [31:0] b);
    reg        swap, far_apart, sgn;
    reg [31:0] greater_op, lesser;
    reg [23:0] sig_big, sig_small;
    reg [7:0]  e_big, e_small, d;                // exponents of the LSB grids + 150
    reg [51:0] aligned, exact, mag;
    reg signed [15:0] lsb;
    begin
        swap = b[30:0] > a[30:0];               // |greater_op| >= |lesser|
        greater_op = swap ? b : a;
        lesser = swap ? a : b;
        sig_big = {greater_op[30:23] != 0, greater_op[22:0]};
        sig_small = {lesser[30:23] != 0, lesser[22:0]};
        e_big = (greater_op[30:23] == 0) ? 8'd1 : greater_op[30:23];
        e_small = (lesser[30:23] == 0) ? 8'd1 : lesser[30:23];
        d = e_big - e_small;
        far_apart = d > 8'd26;
        aligned = {28'd0, sig_big} << (far_apart ? 8'd0 : d);
        exact = (greater_op[31] == lesser[31]) ? aligned + {28'd0, sig_small} : aligned - {28'd0, sig_small};
        mag = far_apart ? {28'd0, sig_big} : exact;
        lsb = far_apart ? $signed({8'd0, e_big}) - 16'sd150 : $signed({8'd0, e_small}) - 16'sd150;
        sgn = (exact == 0 && !far_apart) ? (a[31] & b[31]) : greater_op[31];
        if (fp32_is_nan(a[30:0]) || fp32_is_nan(b[30:0]) ||
            (fp32_is_inf(a[30:0]) && fp32_is_inf(b[30:0]) && a[31] != b[31])) fp32_add = FP32_CANONICAL_NAN;
        else if (fp32_is_inf(a[30:0])) fp32_add = a;
        else if (fp32_is_inf(b[30:0])) fp32_add = b;
        else fp32_add = round_fp32_sum(sgn, mag, lsb);
    end
endfunction

// binary32 a * b, RNE, subnormals kept, overflow to infinity, canonical NaN: the exact 48-bit product of
// the significands rounded once.
function automatic [31:0] fp32_mul(input [31:0] a, input [31:0] b);
    reg        sgn;
    reg [47:0] mag;
    reg signed [15:0] lsb;
    begin
        sgn = a[31] ^ b[31];
        // a = sig_a * 2^(max(e_a, 1) - 150): the product's LSB is 2^(max(e_a, 1) + max(e_b, 1) - 300)
        mag = {24'd0, a[30:23] != 0, a[22:0]} * {24'd0, b[30:23] != 0, b[22:0]};
        lsb = $signed({8'd0, (a[30:23] == 0) ? 8'd1 : a[30:23]}) +
              $signed({8'd0, (b[30:23] == 0) ? 8'd1 : b[30:23]}) - 16'sd300;
        if (fp32_is_nan(a[30:0]) || fp32_is_nan(b[30:0]) || (fp32_is_inf(a[30:0]) && b[30:0] == 31'd0) ||
            (a[30:0] == 31'd0 && fp32_is_inf(b[30:0]))) fp32_mul = FP32_CANONICAL_NAN;
        else if (fp32_is_inf(a[30:0]) || fp32_is_inf(b[30:0])) fp32_mul = {sgn, 8'hff, 23'd0};
        else fp32_mul = round_fp32_product(sgn, mag, lsb);
    end
endfunction

// binary16 -> binary32, exact (subnormals normalised); NaN payloads carried over.
function automatic [31:0] fp16_to_fp32(input [15:0] a);
    integer p, i;
    reg [22:0] frac;
    begin
        p = -1;
        for (i = 0; i < 10; i = i + 1)
            if (a[i]) p = i;
        frac = {13'd0, a[9:0]} << (23 - p);
        if (a[14:10] == 5'h1f) fp16_to_fp32 = {a[15], 8'hff, a[9:0], 13'd0};
        else if (a[14:10] != 5'd0) fp16_to_fp32 = {a[15], {3'd0, a[14:10]} + 8'd112, a[9:0], 13'd0};
        else if (p < 0) fp16_to_fp32 = {a[15], 31'd0};
        else fp16_to_fp32 = {a[15], p[7:0] + 8'd103, frac};          // 2^(p-24): biased exponent p + 103
    end
endfunction

// binary32 -> binary16: RNE, overflow to infinity, subnormals kept, canonical NaN.
function automatic [15:0] fp32_to_fp16(input [31:0] a);
    if (a[30:23] != 8'hff)
        fp32_to_fp16 = round_fp16(a[31], {a[30:23] != 0, a[22:0]},
                                  $signed({8'd0, (a[30:23] == 0) ? 8'd1 : a[30:23]}) - 16'sd150);
    else fp32_to_fp16 = (a[22:0] != 0) ? FP16_CANONICAL_NAN : {a[31], 5'h1f, 10'd0};
endfunction

// binary32 -> bf16: RNE, overflow to infinity, subnormals kept, canonical NaN.
function automatic [15:0] fp32_to_bf16(input [31:0] a);
    if (fp32_is_nan(a[30:0])) fp32_to_bf16 = BF16_CANONICAL_NAN;
    else if (a[30:23] == 8'hff) fp32_to_bf16 = a[31:16];
    else fp32_to_bf16 = round_bf16(a[31], {a[30:23] != 0, a[22:0]},
                                   $signed({8'd0, (a[30:23] == 0) ? 8'd1 : a[30:23]}) - 16'sd150);
endfunction

// Table sigmoid / tanh in binary32 (docs/numerics.md section 4): u = (x + 8) * 32, i = floor(u), t = u - i,
// y = a_i + b_i * t with the 512-entry tables of hdl/generated/act_tables.vh; below the table the low
// limit (0, or -1 for tanh), at and above it 1, NaN for NaN.  The caller rounds it to the MFU format.
function automatic [31:0] act_table(input is_tanh, input [31:0] x);
    reg [31:0] s, u_fx, t, a_i, b_i;
    reg [7:0]  es;
    reg [23:0] sig, t_mag;
    reg        whole, below, above;
    reg [8:0]  i;
    reg signed [15:0] t_lsb;
    begin
        // s = x + 8 (RNE); u = 32 s is exact in binary32, so the tests on u are tests on s
        s = fp32_add(x, 32'h41000000);
        below = s[31] && s[30:0] != 31'd0;                      // u < 0 (s is never -0)
        above = !s[31] && s[30:0] >= 31'h41800000;              // u >= 512, infinity included
        // u in fixed point with 23 fraction bits when u >= 1 (s >= 2^-5, biased exponent >= 122): exact, < 2^32
        es = s[30:23];
        sig = {es != 8'd0, s[22:0]};
        whole = es >= 8'd122;
        u_fx = {8'd0, sig} << (whole && !above ? es - 8'd122 : 8'd0);
        i = whole ? u_fx[31:23] : 9'd0;
        // t = u - i: the fraction bits of u_fx, or u itself (s * 2^5) when u < 1
        t_mag = whole ? {1'b0, u_fx[22:0]} : sig;
        t_lsb = whole ? -16'sd23 : $signed({8'd0, (es == 8'd0) ? 8'd1 : es}) - 16'sd145;
        t = round_fp32_fraction(1'b0, {1'b0, t_mag}, t_lsb);
        a_i = is_tanh ? ACT_TANH_A[32 * i +: 32] : ACT_SIGMOID_A[32 * i +: 32];
        b_i = is_tanh ? ACT_TANH_B[32 * i +: 32] : ACT_SIGMOID_B[32 * i +: 32];
        if (fp32_is_nan(s[30:0])) act_table = FP32_CANONICAL_NAN;
        else if (below) act_table = is_tanh ? 32'hbf800000 : 32'h00000000;
        else if (above) act_table = 32'h3f800000;
        else act_table = fp32_add(a_i, fp32_mul(b_i, t));
    end
endfunction
    /* verilator lint_on UNUSEDSIGNAL */
    /* verilator lint_on VARHIDDEN */
