// binary32 addition, RNE, subnormals kept, overflow to infinity, canonical NaN (the MVU accumulator
// and the reduce=sum chains of docs/numerics.md).  The larger operand's significand is shifted onto the
// smaller one's grid, the exact sum is formed, and npu_round_float rounds it once; a smaller operand
// more than 26 binades below cannot change the rounded result.  Combinational.
module npu_fp32_add (
    input  wire [31:0] a,
    input  wire [31:0] b,
    output wire [31:0] z
);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */

`include "npu_fp32_class.vh"
    wire a_nan = fp32_is_nan(a[30:0]), b_nan = fp32_is_nan(b[30:0]);
    wire a_inf = fp32_is_inf(a[30:0]), b_inf = fp32_is_inf(b[30:0]);

    // |greater_op| >= |lesser|
    wire        swap  = b[30:0] > a[30:0];
    wire [31:0] greater_op   = swap ? b : a;
    wire [31:0] lesser = swap ? a : b;
    wire [23:0] sig_big   = {greater_op[30:23] != 0, greater_op[22:0]};
    wire [23:0] sig_small = {lesser[30:23] != 0, lesser[22:0]};
    wire [7:0]  e_big   = (greater_op[30:23] == 0) ? 8'd1 : greater_op[30:23];      // exponent of the LSB grid + 150
    wire [7:0]  e_small = (lesser[30:23] == 0) ? 8'd1 : lesser[30:23];
    wire [7:0]  d = e_big - e_small;

    wire [51:0] aligned = {28'd0, sig_big} << ((d > 8'd26) ? 8'd0 : d);
    wire [51:0] exact = (greater_op[31] == lesser[31]) ? aligned + {28'd0, sig_small} : aligned - {28'd0, sig_small};
    wire        far_apart = d > 8'd26;
    wire [51:0] mag = far_apart ? {28'd0, sig_big} : exact;
    wire signed [15:0] lsb = far_apart ? $signed({8'd0, e_big}) - 16'sd150 : $signed({8'd0, e_small}) - 16'sd150;
    wire        sgn = (exact == 0 && !far_apart) ? (a[31] & b[31]) : greater_op[31];
    wire [31:0] rounded;

    npu_round_float #(.MAG_W(52), .EXP_W(8), .MAN_W(23)) round (
        .sgn(sgn), .mag(mag), .lsb_exp(lsb), .result(rounded));

    assign z = (a_nan || b_nan || (a_inf && b_inf && a[31] != b[31])) ? FP32_CANONICAL_NAN :
               a_inf ? a : b_inf ? b : rounded;
endmodule
