// One lane of an MFU's add stage (vv_add, vs_add, vv_a_sub_b, vv_b_sub_a, vv_max, vs_max, vv_min, vs_min) in
// the MFU format FMT, with its pipeline register: when `en` is high, z takes the sum rounded once to FMT
// (the correctly rounded result, docs/numerics.md section 4), the max or min, or x for other operations.
// When `en` is low, z holds (and the arithmetic does not evaluate in simulation).
module npu_mfu_add #(
    parameter integer FMT = 0,
    parameter integer EW = (FMT == 2) ? 32 : 16
) (
    input wire clk, input wire en, input wire [5:0] op, input wire [EW-1:0] x, input wire [EW-1:0] y,
    output reg [EW-1:0] z);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
`include "npu_fp32_ops.vh"
`include "npu_mfu_ops.vh"
    always @(posedge clk) if (en) z <= mfu_add(op, x, y);
endmodule
