// binary32 -> the MFU format FMT (0 fp16, 1 bf16, 2 fp32): RNE, overflow to infinity, subnormals kept, the
// format's canonical NaN (docs/numerics.md sections 1.2 and 4).  Combinational.
module npu_fp32_to_mfu #(
    parameter integer FMT = 0,
    parameter integer EW = (FMT == 2) ? 32 : 16
) (
    input  wire [31:0]   a,
    output wire [EW-1:0] z
);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
`include "npu_fp32_class.vh"
    generate
        if (FMT == 0) begin : g_fp16
            npu_fp32_to_fp16 c (.a(a), .z(z));
        end else if (FMT == 1) begin : g_bf16
            wire [15:0] rounded;
            npu_round_float #(.MAG_W(24), .EXP_W(8), .MAN_W(7)) round (
                .sgn(a[31]), .mag({a[30:23] != 0, a[22:0]}),
                .lsb_exp($signed({8'd0, (a[30:23] == 0) ? 8'd1 : a[30:23]}) - 16'sd150), .result(rounded));
            assign z = fp32_is_nan(a[30:0]) ? BF16_CANONICAL_NAN : (a[30:23] == 8'hff) ? a[31:16] : rounded;
        end else begin : g_fp32
            assign z = fp32_is_nan(a[30:0]) ? FP32_CANONICAL_NAN : a;
        end
    endgenerate
endmodule
