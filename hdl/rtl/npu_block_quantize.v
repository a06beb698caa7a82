// The MVU's input conversion: a block of B values in the MFU format FMT (0 fp16, 1 bf16, 2 fp32) to the
// block format described by KIND and the element parameters (npu_block_format.vh): sign-magnitude and
// MX integer elements through npu_bfp_quantize (MX integers re-encoded in two's complement), MX
// minifloats through npu_mx_quantize (docs/numerics.md section 2).  Combinational.
module npu_block_quantize #(
    parameter integer B = 32, parameter integer FMT = 0, parameter integer KIND = 0, parameter integer E_BITS = 4,
    parameter integer M_BITS = 3, parameter integer F_BITS = 2, parameter integer EXP_BITS = 0,
    parameter integer EXP_BIAS = 0, parameter integer ELEM_SPECIAL = 0, parameter integer SCALE_BITS = 5,
    parameter integer SCALE_BIAS = 15, parameter integer EMAX = 0, parameter integer EW = (FMT == 2) ? 32 : 16
) (
    input  wire [EW*B-1:0]       x,
    output wire [B*E_BITS-1:0]   codes,
    output wire [SCALE_BITS-1:0] scale
);
    localparam integer X_EXP_W = (FMT == 0) ? 5 : 8;
    generate
        if (KIND == 2) begin : g_minifloat
            npu_mx_quantize #(.B(B), .E_BITS(E_BITS), .EXP_BITS(EXP_BITS), .M_BITS(M_BITS), .EXP_BIAS(EXP_BIAS),
                              .ELEM_SPECIAL(ELEM_SPECIAL), .SCALE_BITS(SCALE_BITS), .SCALE_BIAS(SCALE_BIAS),
                              .EMAX(EMAX), .X_EXP_W(X_EXP_W), .X_MAN_W(EW - 1 - X_EXP_W))
                q (.x(x), .codes(codes), .scale(scale));
        end else begin : g_integer
            wire [B*E_BITS-1:0] sm;                  // sign-magnitude codes {sign, M}
            npu_bfp_quantize #(.B(B), .M_BITS(M_BITS), .F_BITS(F_BITS), .SCALE_BITS(SCALE_BITS),
                               .SCALE_BIAS(SCALE_BIAS), .EMAX(EMAX), .X_EXP_W(X_EXP_W), .X_MAN_W(EW - 1 - X_EXP_W))
                q (.x(x), .codes(sm), .scale(scale));
            genvar j;
            for (j = 0; j < B; j = j + 1) begin : elem
                wire [E_BITS-1:0] c = sm[j * E_BITS +: E_BITS];
                if (KIND == 1) begin : g_twos
                    assign codes[j * E_BITS +: E_BITS] = c[E_BITS-1] ? -{1'b0, c[E_BITS-2:0]} : c;
                end else begin : g_sm
                    assign codes[j * E_BITS +: E_BITS] = c;
                end
            end
        end
    endgenerate
endmodule
