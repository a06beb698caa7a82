// binary32 -> binary16, RNE, overflow to infinity, subnormals kept, canonical NaN: the MVU accumulator's
// final rounding to the fp16 MFU format (docs/numerics.md section 3, "Output"): npu_fp32_ops.vh's
// fp32_to_fp16 as a module.  Combinational.
module npu_fp32_to_fp16 (
    input  wire [31:0] a,
    output wire [15:0] z
);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
`include "npu_fp32_ops.vh"
    assign z = fp32_to_fp16(a);
endmodule
