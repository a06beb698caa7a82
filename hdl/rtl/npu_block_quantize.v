// The MVU's block arithmetic for sign-magnitude formats (ms-fp8, ms-fp9, msfp12, bfp24): the exact slice dot
// of L element pairs, the once-rounded block sum (docs/numerics.md section 3) and the input conversion.
// The descriptor parameters of other block kinds (KIND, EXP_BITS, ...) are accepted and unused: the MX
// element kinds are not implemented yet (hdl/core.py refuses them).
/* verilator lint_off UNUSEDPARAM */
module npu_block_quantize #(
    parameter integer B = 32, parameter integer FMT = 0, parameter integer KIND = 0, parameter integer E_BITS = 4,
    parameter integer M_BITS = 3, parameter integer F_BITS = 2, parameter integer EXP_BITS = 0,
    parameter integer EXP_BIAS = 0, parameter integer SCALE_BITS = 5, parameter integer SCALE_BIAS = 15,
    parameter integer EMAX = 0
) (
    input  wire [16*B-1:0]       x,
    output wire [B*E_BITS-1:0]   codes,
    output wire [SCALE_BITS-1:0] scale
);
/* verilator lint_on UNUSEDPARAM */
    npu_bfp_quantize #(.B(B), .M_BITS(M_BITS), .F_BITS(F_BITS), .SCALE_BITS(SCALE_BITS), .SCALE_BIAS(SCALE_BIAS),
                       .EMAX(EMAX)) q (.x(x), .codes(codes), .scale(scale));
endmodule
