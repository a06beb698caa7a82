// One vector element of the compute stream's combine stage (docs/architecture.md "RTL"): the binary32
// accumulator of a row (MVU block sums, or reduce=sum inputs) and the running max (reduce=max), and the
// row's element leaving for the MFUs, with their registers.  With `acc_en` the accumulator adds p (`use_p`)
// or the widened input x to itself, or to zero on a row's first step (`first`); with `max_en` the running
// max takes x on the first step, else max(itself, x); with `row_en` z takes the accumulator's new value
// rounded to the MFU format (`sel_acc`), the new running max (`sel_max`, after the first step) or x.
// With `acc2_en` (pooled tile engines: two block sums of a row in one cycle) the accumulator then adds p2
// to that sum, chained in reduction order: acc = (acc + p) + p2.
// Registers without their enable hold (and the arithmetic does not evaluate in simulation); `row_en` comes
// only with `acc_en`, and with `max_en` when it selects the max.
module npu_combine_lane #(
    parameter integer FMT = 0,
    parameter integer EW = (FMT == 2) ? 32 : 16
) (
    input  wire          clk,
    input  wire          acc_en,
    input  wire          acc2_en,
    input  wire          max_en,
    input  wire          row_en,
    input  wire          first,
    input  wire          use_p,
    input  wire          sel_acc,
    input  wire          sel_max,
    input  wire [EW-1:0] x,
    input  wire [31:0]   p,
    input  wire [31:0]   p2,
    output reg  [EW-1:0] z
);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
`include "npu_fp32_ops.vh"
`include "npu_mfu_ops.vh"
    reg [31:0]   acc;
    reg [EW-1:0] rmax;
    reg [31:0]   sum;                           // this cycle's sum and max: temporaries of the block below
    reg [EW-1:0] mx;
    /* verilator lint_off BLKSEQ */
    always @(posedge clk) begin
        sum = 32'd0;
        mx = x;
        if (acc_en) begin
            sum = fp32_add(first ? 32'd0 : acc, use_p ? p : mfu_to_fp32(x));
            if (acc2_en) sum = fp32_add(sum, p2);
            acc <= sum;
        end
        if (max_en) begin
            mx = first ? x : mfu_max(1'b0, rmax, x);
            rmax <= mx;
        end
        if (row_en) z <= sel_acc ? fp32_to_mfu(sum) : sel_max ? mx : x;
    end
    /* verilator lint_on BLKSEQ */
endmodule
