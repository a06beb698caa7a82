// The MFU's three stages (multiply, add/sub/max, activation) and the conversions to and from binary32 for
// the fp16 MFU format, built on npu_mfu_lane_fp16.  FMT is accepted and unused: bf16 and fp32 MFUs are not
// implemented yet (hdl/core.py refuses them), nor are the sigmoid/tanh tables (npu_compute flags them).
/* verilator lint_off UNUSEDPARAM */
module npu_fp32_to_mfu #(parameter integer FMT = 0) (input wire [31:0] a, output wire [15:0] z);
/* verilator lint_on UNUSEDPARAM */
    npu_fp32_to_fp16 c (.a(a), .z(z));
endmodule
