// The MFU's three stages (multiply, add/sub/max, activation) and the conversions to and from binary32 for
// the fp16 MFU format, built on npu_mfu_lane_fp16.  FMT is accepted and unused: bf16 and fp32 MFUs are not
// implemented yet (hdl/core.py refuses them), nor are the sigmoid/tanh tables (npu_compute flags them).
/* verilator lint_off UNUSEDPARAM */
module npu_mfu_act #(parameter integer FMT = 0) (
    input wire [5:0] op, input wire [15:0] x,
    /* verilator lint_off UNUSEDSIGNAL */
    input wire [15:0] y,
    /* verilator lint_on UNUSEDSIGNAL */
    output wire [15:0] z);
/* verilator lint_on UNUSEDPARAM */
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
    wire [15:0] r;
    npu_mfu_lane_fp16 lane (.op(op), .x(x), .y(16'd0), .z(r));
    assign z = (op == OP_V_RELU) ? r : x;
endmodule
