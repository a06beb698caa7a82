// Temporary fp16-only MFU stages and conversions (replaced by the per-format MFU units).
module npu_mfu_mul #(parameter integer FMT = 0) (
    input wire [5:0] op, input wire [15:0] x, input wire [15:0] y, output wire [15:0] z);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
    wire [15:0] r;
    npu_mfu_lane_fp16 lane (.op(op), .x(x), .y(y), .z(r));
    assign z = (op == OP_VV_MUL || op == OP_VS_MUL) ? r : x;
endmodule

module npu_mfu_add #(parameter integer FMT = 0) (
    input wire [5:0] op, input wire [15:0] x, input wire [15:0] y, output wire [15:0] z);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
    wire [15:0] r;
    npu_mfu_lane_fp16 lane (.op(op), .x(x), .y(y), .z(r));
    assign z = (op == OP_VV_ADD || op == OP_VS_ADD || op == OP_VV_A_SUB_B || op == OP_VV_B_SUB_A ||
                op == OP_VV_MAX || op == OP_VS_MAX) ? r : x;
endmodule

module npu_mfu_act #(parameter integer FMT = 0) (
    input wire [5:0] op, input wire [15:0] x,
    /* verilator lint_off UNUSEDSIGNAL */
    input wire [15:0] y,
    /* verilator lint_on UNUSEDSIGNAL */
    output wire [15:0] z);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
    wire [15:0] r;
    npu_mfu_lane_fp16 lane (.op(op), .x(x), .y(16'd0), .z(r));
    assign z = (op == OP_V_RELU) ? r : x;
endmodule

module npu_fp32_to_mfu #(parameter integer FMT = 0) (input wire [31:0] a, output wire [15:0] z);
    npu_fp32_to_fp16 c (.a(a), .z(z));
endmodule

module npu_mfu_to_fp32 #(parameter integer FMT = 0) (input wire [15:0] a, output wire [31:0] z);
    npu_fp16_to_fp32 c (.a(a), .z(z));
endmodule
