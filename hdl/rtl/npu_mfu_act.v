// The MFU's activation stage (v_relu, v_sigm, v_tanh) in the MFU format FMT: relu is x where x > 0, else +0;
// sigmoid and tanh are the binary32 table of npu_act_table rounded to FMT (docs/numerics.md section 4).
// Other operations pass x through; every NaN result is the canonical NaN.  Combinational.
module npu_mfu_act #(
    parameter integer FMT = 0,
    parameter integer EW = (FMT == 2) ? 32 : 16
) (
    input wire [5:0] op, input wire [EW-1:0] x,
    /* verilator lint_off UNUSEDSIGNAL */
    input wire [EW-1:0] y,                      // the stage's second operand: no activation takes one
    /* verilator lint_on UNUSEDSIGNAL */
    output wire [EW-1:0] z);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
    wire [31:0] x32, t32;
    wire [EW-1:0] table_r, relu_r;
    npu_mfu_to_fp32 #(.FMT(FMT)) wx (.a(x), .z(x32));
    npu_act_table tab (.is_tanh(op == OP_V_TANH), .x(x32), .y(t32));
    npu_fp32_to_mfu #(.FMT(FMT)) n (.a(t32), .z(table_r));
    // relu: max(+0, x) is x only where x > +0 (so -0 gives +0), with x's NaN made canonical
    npu_mfu_max #(.FMT(FMT)) rl (.is_min(1'b0), .x({EW{1'b0}}), .y(x), .z(relu_r));
    assign z = (op == OP_V_RELU) ? relu_r : (op == OP_V_SIGM || op == OP_V_TANH) ? table_r : x;
endmodule
