// binary32 multiplication, RNE, subnormals kept, overflow to infinity, canonical NaN (the MFU's multiply and
// the activation tables' b_i * t, docs/numerics.md section 4): npu_fp32_ops.vh's fp32_mul as a module.
// Combinational.
module npu_fp32_mul (
    input  wire [31:0] a,
    input  wire [31:0] b,
    output wire [31:0] z
);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
`include "npu_fp32_ops.vh"
    assign z = fp32_mul(a, b);
endmodule
