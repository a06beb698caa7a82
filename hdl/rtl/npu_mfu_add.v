// The MFU's add stage (vv_add, vs_add, vv_a_sub_b, vv_b_sub_a, vv_max, vs_max, vv_min, vs_min) in the MFU
// format FMT: sums are binary32 sums of the exact operands rounded once to FMT (the correctly rounded
// result, docs/numerics.md section 4); max and min are npu_mfu_max.  Other operations pass x through.
// Combinational.
module npu_mfu_add #(
    parameter integer FMT = 0,
    parameter integer EW = (FMT == 2) ? 32 : 16
) (
    input wire [5:0] op, input wire [EW-1:0] x, input wire [EW-1:0] y, output wire [EW-1:0] z);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
    wire [31:0] x32, y32, s32;
    wire [EW-1:0] r;
    npu_mfu_to_fp32 #(.FMT(FMT)) wx (.a(x), .z(x32));
    npu_mfu_to_fp32 #(.FMT(FMT)) wy (.a(y), .z(y32));
    // a - b is a + (-b); b - a is (-a) + b
    wire [31:0] lhs = (op == OP_VV_B_SUB_A) ? {~x32[31], x32[30:0]} : x32;
    wire [31:0] rhs = (op == OP_VV_A_SUB_B) ? {~y32[31], y32[30:0]} : y32;
    npu_fp32_add s (.a(lhs), .b(rhs), .z(s32));
    npu_fp32_to_mfu #(.FMT(FMT)) n (.a(s32), .z(r));

    wire [EW-1:0] m;
    wire is_min = op == OP_VV_MIN || op == OP_VS_MIN;
    npu_mfu_max #(.FMT(FMT)) mx (.is_min(is_min), .x(x), .y(y), .z(m));

    assign z = (op == OP_VV_MAX || op == OP_VS_MAX || is_min) ? m :
               (op == OP_VV_ADD || op == OP_VS_ADD || op == OP_VV_A_SUB_B || op == OP_VV_B_SUB_A) ? r : x;
endmodule
