// Table sigmoid / tanh in binary32 (docs/numerics.md section 4): u = (x + 8) * 32, i = floor(u), t = u - i,
// y = a_i + b_i * t with the 512-entry tables of hdl/generated/act_tables.vh; below the table the low
// limit (0, or -1 for tanh), at and above it 1, NaN for NaN.  The result is rounded to the MFU format by
// the caller.  Combinational.
module npu_act_table (
    input  wire        is_tanh,
    input  wire [31:0] x,
    output wire [31:0] y
);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
`include "act_tables.vh"
`include "npu_fp32_class.vh"

    // s = x + 8 (RNE); u = 32 s is exact in binary32, so the tests on u are tests on s
    wire [31:0] s;
    npu_fp32_add plus8 (.a(x), .b(32'h41000000), .z(s));
    wire s_nan = fp32_is_nan(s[30:0]);
    wire below = s[31] && s[30:0] != 31'd0;                   // u < 0 (s is never -0)
    wire above = !s[31] && s[30:0] >= 31'h41800000;           // u >= 512, infinity included

    // u in fixed point with 23 fraction bits when u >= 1 (s >= 2^-5, biased exponent >= 122): exact, < 2^32
    wire [7:0]  es = s[30:23];
    wire [23:0] sig = {es != 8'd0, s[22:0]};
    wire        whole = es >= 8'd122;
    /* verilator lint_off WIDTHEXPAND */
    wire [31:0] u_fx = {8'd0, sig} << (whole && !above ? es - 8'd122 : 8'd0);
    /* verilator lint_on WIDTHEXPAND */
    wire [8:0]  i = whole ? u_fx[31:23] : 9'd0;
    // t = u - i: the fraction bits of u_fx, or u itself (s * 2^5) when u < 1
    wire [23:0] t_mag = whole ? {1'b0, u_fx[22:0]} : sig;
    wire signed [15:0] t_lsb = whole ? -16'sd23 : $signed({8'd0, (es == 8'd0) ? 8'd1 : es}) - 16'sd145;
    wire [31:0] t;
    npu_round_float #(.MAG_W(25), .EXP_W(8), .MAN_W(23)) exact_t (
        .sgn(1'b0), .mag({1'b0, t_mag}), .lsb_exp(t_lsb), .result(t));

    wire [31:0] a_i = is_tanh ? ACT_TANH_A[32 * i +: 32] : ACT_SIGMOID_A[32 * i +: 32];
    wire [31:0] b_i = is_tanh ? ACT_TANH_B[32 * i +: 32] : ACT_SIGMOID_B[32 * i +: 32];
    wire [31:0] bt, line;
    npu_fp32_mul slope (.a(b_i), .b(t), .z(bt));
    npu_fp32_add intercept (.a(a_i), .b(bt), .z(line));

    assign y = s_nan ? FP32_CANONICAL_NAN :
               below ? (is_tanh ? 32'hbf800000 : 32'h00000000) :
               above ? 32'h3f800000 : line;
endmodule
