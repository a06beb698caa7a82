// One MVU output element over a whole reduction: blocks arrive one per cycle (weight codes and scale,
// and the activation block in fp16); each activation block is converted at the MVU input, the block's
// exact sum is rounded to binary32 and added to a binary32 accumulator in arrival order, and the last
// block's result is rounded to fp16 (docs/numerics.md section 3).  One block per cycle, no stalls.
module npu_mvu_dot #(
    parameter integer B = 32,
    parameter integer M_BITS = 3,
    parameter integer F_BITS = 2,
    parameter integer SCALE_BITS = 5,
    parameter integer SCALE_BIAS = 15
) (
    input  wire                    clk,
    input  wire                    rst,
    input  wire                    valid,       // a block is presented this cycle
    input  wire                    first,       // ... and it is the first of the reduction (acc starts at +0)
    input  wire                    last,        // ... and it is the last
    input  wire [B*(M_BITS+1)-1:0] w_codes,
    input  wire [SCALE_BITS-1:0]   w_scale,
    input  wire [16*B-1:0]         x,           // activation block, fp16 (the MFU format)
    output reg                     done,        // result holds a finished reduction (one cycle)
    output reg  [31:0]             acc,         // binary32 accumulator
    output wire [15:0]             result       // acc rounded to fp16
);
    wire [B*(M_BITS+1)-1:0] x_codes;
    wire [SCALE_BITS-1:0]   x_scale;
    wire [31:0]             partial;
    wire [31:0]             sum;

    npu_bfp_quantize #(.B(B), .M_BITS(M_BITS), .F_BITS(F_BITS), .SCALE_BITS(SCALE_BITS),
                       .SCALE_BIAS(SCALE_BIAS)) quantize (.x(x), .codes(x_codes), .scale(x_scale));
    npu_bfp_block_dot #(.B(B), .M_BITS(M_BITS), .F_BITS(F_BITS), .SCALE_BITS(SCALE_BITS),
                        .SCALE_BIAS(SCALE_BIAS)) block (.w_codes(w_codes), .w_scale(w_scale),
                                                       .x_codes(x_codes), .x_scale(x_scale), .p(partial));
    npu_fp32_add add (.a(first ? 32'd0 : acc), .b(partial), .z(sum));
    npu_fp32_to_fp16 out (.a(acc), .z(result));

    always @(posedge clk) begin
        if (rst) begin
            acc <= 32'd0;
            done <= 1'b0;
        end else begin
            done <= valid && last;
            if (valid) acc <= sum;
        end
    end
endmodule
