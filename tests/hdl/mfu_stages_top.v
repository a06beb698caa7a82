// Test harness: the MFU's three stages in series with the same opcode, so that one combinational top
// exercises every MFU operation of the format FMT (each stage passes the others' operations through).
module mfu_stages_top #(
    parameter integer FMT = 0,
    parameter integer EW = (FMT == 2) ? 32 : 16
) (
    input  wire [5:0]    op,
    input  wire [EW-1:0] x,
    input  wire [EW-1:0] y,
    output wire [EW-1:0] z
);
    wire [EW-1:0] after_mul, after_add;
    npu_mfu_mul #(.FMT(FMT)) mul (.op(op), .x(x), .y(y), .z(after_mul));
    npu_mfu_add #(.FMT(FMT)) add (.op(op), .x(after_mul), .y(y), .z(after_add));
    npu_mfu_act #(.FMT(FMT)) act (.op(op), .x(after_add), .y(y), .z(z));
endmodule
