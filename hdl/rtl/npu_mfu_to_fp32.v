// The MFU format FMT (0 fp16, 1 bf16, 2 fp32) -> binary32, exact; NaN payloads carried over.  Combinational.
module npu_mfu_to_fp32 #(
    parameter integer FMT = 0,
    parameter integer EW = (FMT == 2) ? 32 : 16
) (
    input  wire [EW-1:0] a,
    output wire [31:0]   z
);
    generate
        if (FMT == 0) begin : g_fp16
            npu_fp16_to_fp32 c (.a(a), .z(z));
        end else if (FMT == 1) begin : g_bf16
            assign z = {a, 16'd0};
        end else begin : g_fp32
            assign z = a;
        end
    endgenerate
endmodule
