// binary32 addition, RNE, subnormals kept, overflow to infinity, canonical NaN (the MVU accumulator
// and the reduce=sum chains of docs/numerics.md): npu_fp32_ops.vh's fp32_add as a module.  Combinational.
module npu_fp32_add (
    input  wire [31:0] a,
    input  wire [31:0] b,
    output wire [31:0] z
);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
`include "npu_fp32_ops.vh"
    assign z = fp32_add(a, b);
endmodule
