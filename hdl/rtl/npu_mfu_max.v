// max(x, y) or, with is_min, min(x, y) in the MFU format FMT (0 fp16, 1 bf16, 2 fp32): y if y > x (min:
// y < x), else x; the canonical NaN if either is NaN; +0 and -0 compare equal (docs/numerics.md
// section 4).  A comparison of the sign-magnitude encodings, no arithmetic.  Combinational.
module npu_mfu_max #(
    parameter integer FMT = 0,
    parameter integer EW = (FMT == 2) ? 32 : 16
) (
    input  wire          is_min,
    input  wire [EW-1:0] x,
    input  wire [EW-1:0] y,
    output wire [EW-1:0] z
);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
    localparam integer XB = (FMT == 0) ? 5 : 8;                 // exponent bits
    localparam integer MB = EW - 1 - XB;                        // fraction bits
    localparam [31:0] NAN32 = (FMT == 0) ? {16'd0, FP16_CANONICAL_NAN} : (FMT == 1) ? {16'd0, BF16_CANONICAL_NAN}
                                                                       : FP32_CANONICAL_NAN;
    localparam [EW-1:0] CANONICAL = NAN32[EW-1:0];
    wire x_nan = (x[EW-2 -: XB] == {XB{1'b1}}) && (x[MB-1:0] != {MB{1'b0}});
    wire y_nan = (y[EW-2 -: XB] == {XB{1'b1}}) && (y[MB-1:0] != {MB{1'b0}});
    wire both_zero = x[EW-2:0] == {(EW-1){1'b0}} && y[EW-2:0] == {(EW-1){1'b0}};
    wire unequal = !both_zero && x != y;                        // non-NaN x, y: exactly one of y > x, y < x
    wire y_above = (x[EW-1] != y[EW-1]) ? x[EW-1] :
                   x[EW-1] ? (y[EW-2:0] < x[EW-2:0]) : (y[EW-2:0] > x[EW-2:0]);
    assign z = (x_nan || y_nan) ? CANONICAL : (unequal && y_above != is_min) ? y : x;
endmodule
