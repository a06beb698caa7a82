// binary32 -> binary16, RNE, overflow to infinity, subnormals kept, canonical NaN: the MVU accumulator's
// final rounding to the fp16 MFU format (docs/numerics.md section 3, "Output").  Combinational.
module npu_fp32_to_fp16 (
    input  wire [31:0] a,
    output wire [15:0] z
);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */

    wire        is_special = a[30:23] == 8'hff;
    wire [23:0] sig = {a[30:23] != 0, a[22:0]};
    wire signed [15:0] lsb = $signed({8'd0, (a[30:23] == 0) ? 8'd1 : a[30:23]}) - 16'sd150;
    wire [15:0] rounded;

    npu_round_float #(.MAG_W(24), .EXP_W(5), .MAN_W(10)) round (
        .sgn(a[31]), .mag(sig), .lsb_exp(lsb), .result(rounded));

    assign z = !is_special ? rounded : (a[22:0] != 0) ? FP16_CANONICAL_NAN : {a[31], 5'h1f, 10'd0};
endmodule
