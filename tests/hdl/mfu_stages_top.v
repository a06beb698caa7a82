// Test harness: the MFU's three stage functions (npu_mfu_ops.vh, which the core's npu_mfu_mul, _add and
// _act lanes register) in series with the same opcode, so that one combinational top exercises every MFU
// operation of the format FMT (each stage passes the others' operations through).
module mfu_stages_top #(
    parameter integer FMT = 0,
    parameter integer EW = (FMT == 2) ? 32 : 16
) (
    input  wire [5:0]    op,
    input  wire [EW-1:0] x,
    input  wire [EW-1:0] y,
    output wire [EW-1:0] z
);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
`include "npu_fp32_ops.vh"
`include "npu_mfu_ops.vh"
    assign z = mfu_act(op, mfu_add(op, mfu_mul(op, x, y), y));
endmodule
