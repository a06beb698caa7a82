// One lane of an MFU's activation stage (v_relu, v_sigm, v_tanh) in the MFU format FMT, with its pipeline
// register: when `en` is high, z takes relu(x), or the binary32 sigmoid/tanh table rounded to FMT
// (docs/numerics.md section 4), or x for other operations.  When `en` is low, z holds (and the arithmetic
// does not evaluate in simulation).
module npu_mfu_act #(
    parameter integer FMT = 0,
    parameter integer EW = (FMT == 2) ? 32 : 16
) (
    input wire clk, input wire en, input wire [5:0] op, input wire [EW-1:0] x, output reg [EW-1:0] z);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
`include "npu_fp32_ops.vh"
`include "npu_mfu_ops.vh"
    always @(posedge clk) if (en) z <= mfu_act(op, x);
endmodule
