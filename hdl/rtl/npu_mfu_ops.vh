// The MFU's operations in its element format as functions of the module that includes this file (after
// isa_defs.vh and npu_fp32_ops.vh; the module defines FMT, 0 fp16, 1 bf16, 2 fp32, and EW, its element
// bits): conversions to and from binary32, max/min, and the three stages (docs/numerics.md section 4).
// Sums and products are binary32 operations on the exact operands rounded once to the format, which is the
// correctly rounded result; every NaN result is the format's canonical NaN.
    // function arguments may share the names of the including module's ports; some functions round into
    // wider variables than they use
    /* verilator lint_off VARHIDDEN */
    /* verilator lint_off UNUSEDSIGNAL */

// the MFU format -> binary32, exact; NaN payloads carried over
function automatic [31:0] mfu_to_fp32(input [EW-1:0] a);
    reg [31:0] wide;
    begin
        wide = 32'd0;
        wide[EW-1:0] = a;
        if (FMT == 0) mfu_to_fp32 = fp16_to_fp32(wide[15:0]);
        else if (FMT == 1) mfu_to_fp32 = {wide[15:0], 16'd0};
        else mfu_to_fp32 = wide;
    end
endfunction

// binary32 -> the MFU format: RNE, overflow to infinity, subnormals kept, the format's canonical NaN
function automatic [EW-1:0] fp32_to_mfu(input [31:0] a);
    reg [31:0] z;
    begin
        if (FMT == 0) z = {16'd0, fp32_to_fp16(a)};
        else if (FMT == 1) z = {16'd0, fp32_to_bf16(a)};
        else z = fp32_is_nan(a[30:0]) ? FP32_CANONICAL_NAN : a;
        fp32_to_mfu = z[EW-1:0];
    end
endfunction

// max(x, y) or, with is_min, min(x, y): y if y > x (min: y < x), else x; the canonical NaN if either is NaN;
// +0 and -0 compare equal.  A comparison of the sign-magnitude encodings, no arithmetic.
function automatic [EW-1:0] mfu_max(input is_min, input [EW-1:0] x, input [EW-1:0] y);
    reg [31:0] nan32;
    reg x_nan, y_nan, both_zero, unequal, y_above;
    begin
        nan32 = (FMT == 0) ? {16'd0, FP16_CANONICAL_NAN} : (FMT == 1) ? {16'd0, BF16_CANONICAL_NAN} : FP32_CANONICAL_NAN;
        // exponent bits: 5 for fp16, else 8; the rest below them are the fraction
        x_nan = (FMT == 0) ? (x[EW-2 -: 5] == 5'h1f) && (x[EW-7:0] != 0) : (x[EW-2 -: 8] == 8'hff) && (x[EW-10:0] != 0);
        y_nan = (FMT == 0) ? (y[EW-2 -: 5] == 5'h1f) && (y[EW-7:0] != 0) : (y[EW-2 -: 8] == 8'hff) && (y[EW-10:0] != 0);
        both_zero = x[EW-2:0] == {(EW-1){1'b0}} && y[EW-2:0] == {(EW-1){1'b0}};
        unequal = !both_zero && x != y;                         // non-NaN x, y: exactly one of y > x, y < x
        y_above = (x[EW-1] != y[EW-1]) ? x[EW-1] :
                  x[EW-1] ? (y[EW-2:0] < x[EW-2:0]) : (y[EW-2:0] > x[EW-2:0]);
        mfu_max = (x_nan || y_nan) ? nan32[EW-1:0] : (unequal && y_above != is_min) ? y : x;
    end
endfunction

// the multiply stage (vv_mul, vs_mul); other operations pass x through
function automatic [EW-1:0] mfu_mul(input [5:0] op, input [EW-1:0] x, input [EW-1:0] y);
    if (op == OP_VV_MUL || op == OP_VS_MUL) mfu_mul = fp32_to_mfu(fp32_mul(mfu_to_fp32(x), mfu_to_fp32(y)));
    else mfu_mul = x;
endfunction

// the add stage (vv_add, vs_add, vv_a_sub_b, vv_b_sub_a, vv_max, vs_max, vv_min, vs_min); other operations
// pass x through
function automatic [EW-1:0] mfu_add(input [5:0] op, input [EW-1:0] x, input [EW-1:0] y);
    reg [31:0] x32, y32;
    begin
        x32 = mfu_to_fp32(x);
        y32 = mfu_to_fp32(y);
        if (op == OP_VV_B_SUB_A) x32[31] = ~x32[31];          // b - a is (-a) + b
        if (op == OP_VV_A_SUB_B) y32[31] = ~y32[31];          // a - b is a + (-b)
        if (op == OP_VV_MAX || op == OP_VS_MAX || op == OP_VV_MIN || op == OP_VS_MIN)
            mfu_add = mfu_max(op == OP_VV_MIN || op == OP_VS_MIN, x, y);
        else if (op == OP_VV_ADD || op == OP_VS_ADD || op == OP_VV_A_SUB_B || op == OP_VV_B_SUB_A)
            mfu_add = fp32_to_mfu(fp32_add(x32, y32));
        else mfu_add = x;
    end
endfunction

// the activation stage (v_relu, v_sigm, v_tanh): relu is x where x > +0 (so -0 gives +0), else +0, with
// x's NaN made canonical; sigmoid and tanh are the binary32 table rounded to the format; other operations
// pass x through
function automatic [EW-1:0] mfu_act(input [5:0] op, input [EW-1:0] x);
    if (op == OP_V_RELU) mfu_act = mfu_max(1'b0, {EW{1'b0}}, x);
    else if (op == OP_V_SIGM || op == OP_V_TANH) mfu_act = fp32_to_mfu(act_table(op == OP_V_TANH, mfu_to_fp32(x)));
    else mfu_act = x;
endfunction
    /* verilator lint_on UNUSEDSIGNAL */
    /* verilator lint_on VARHIDDEN */
