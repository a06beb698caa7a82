// The MFU's three stages (multiply, add/sub/max, activation) and the conversions to and from binary32 for
// the fp16 MFU format, built on npu_mfu_lane_fp16.  FMT is accepted and unused: bf16 and fp32 MFUs are not
// implemented yet (hdl/core.py refuses them), nor are the sigmoid/tanh tables (npu_compute flags them).
/* verilator lint_off UNUSEDPARAM */
module npu_mfu_mul #(parameter integer FMT = 0) (
    input wire [5:0] op, input wire [15:0] x, input wire [15:0] y, output wire [15:0] z);
/* verilator lint_on UNUSEDPARAM */
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
    wire [15:0] r;
    npu_mfu_lane_fp16 lane (.op(op), .x(x), .y(y), .z(r));
    assign z = (op == OP_VV_MUL || op == OP_VS_MUL) ? r : x;
endmodule
