// The MFU's multiply stage (vv_mul, vs_mul) in the MFU format FMT: the binary32 product of the exact
// operands, rounded once to FMT, which is the correctly rounded product (docs/numerics.md section 4).
// Other operations pass x through.  Combinational.
module npu_mfu_mul #(
    parameter integer FMT = 0,
    parameter integer EW = (FMT == 2) ? 32 : 16
) (
    input wire [5:0] op, input wire [EW-1:0] x, input wire [EW-1:0] y, output wire [EW-1:0] z);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
    wire [31:0] x32, y32, p32;
    wire [EW-1:0] r;
    npu_mfu_to_fp32 #(.FMT(FMT)) wx (.a(x), .z(x32));
    npu_mfu_to_fp32 #(.FMT(FMT)) wy (.a(y), .z(y32));
    npu_fp32_mul m (.a(x32), .b(y32), .z(p32));
    npu_fp32_to_mfu #(.FMT(FMT)) n (.a(p32), .z(r));
    assign z = (op == OP_VV_MUL || op == OP_VS_MUL) ? r : x;
endmodule
