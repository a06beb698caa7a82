// The MVU's block arithmetic for sign-magnitude formats (ms-fp8, ms-fp9, msfp12, bfp24): the exact slice dot
// of L element pairs, the once-rounded block sum (docs/numerics.md section 3) and the input conversion.
// The descriptor parameters of other block kinds (KIND, EXP_BITS, ...) are accepted and unused: the MX
// element kinds are not implemented yet (hdl/core.py refuses them).
/* verilator lint_off UNUSEDPARAM */
module npu_slice_dot #(
    parameter integer L = 8, parameter integer KIND = 0, parameter integer E_BITS = 4,
    parameter integer M_BITS = 3, parameter integer F_BITS = 2, parameter integer EXP_BITS = 0,
    parameter integer EXP_BIAS = 0, parameter integer ACC_W = 16
) (
    input  wire [L*E_BITS-1:0] w_codes,
    input  wire [L*E_BITS-1:0] x_codes,
    output reg  [ACC_W-1:0]    sum
);
/* verilator lint_on UNUSEDPARAM */
    reg [2*M_BITS-1:0] prod;
    integer j;
    always @* begin
        sum = {ACC_W{1'b0}};
        for (j = 0; j < L; j = j + 1) begin
            prod = {{M_BITS{1'b0}}, w_codes[j*E_BITS +: M_BITS]} * {{M_BITS{1'b0}}, x_codes[j*E_BITS +: M_BITS]};
            if (w_codes[j*E_BITS + M_BITS] ^ x_codes[j*E_BITS + M_BITS])
                sum = sum - {{(ACC_W - 2*M_BITS){1'b0}}, prod};
            else
                sum = sum + {{(ACC_W - 2*M_BITS){1'b0}}, prod};
        end
    end
endmodule
