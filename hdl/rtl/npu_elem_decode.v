// One block-format element code -> sign and magnitude on the element grid (an integer times 2^-F_BITS,
// docs/numerics.md section 1.1), and whether it is a NaN or infinity code.  Parameters as in
// npu_block_format.vh.  Combinational.
module npu_elem_decode #(
    parameter integer KIND = 0, parameter integer E_BITS = 4, parameter integer M_BITS = 3,
    parameter integer EXP_BITS = 0, parameter integer ELEM_SPECIAL = 0, parameter integer MAG_W = 3
) (
    input  wire [E_BITS-1:0] code,
    output wire              neg,
    output wire [MAG_W-1:0]  mag,
    output wire              special
);
    generate
        if (KIND == 2) begin : g_fp
            wire [EXP_BITS-1:0] e = code[M_BITS +: EXP_BITS];
            wire [M_BITS-1:0]   m = code[M_BITS-1:0];
            wire [M_BITS:0]     sig = {e != {EXP_BITS{1'b0}}, m};
            wire [EXP_BITS-1:0] shift = (e == {EXP_BITS{1'b0}}) ? {EXP_BITS{1'b0}} : e - 1'b1;
            assign neg = code[E_BITS-1];
            assign mag = {{(MAG_W - M_BITS - 1){1'b0}}, sig} << shift;
            if (ELEM_SPECIAL == 1) begin : g_nan_only
                assign special = (e == {EXP_BITS{1'b1}}) && (m == {M_BITS{1'b1}});
            end else if (ELEM_SPECIAL == 2) begin : g_ieee
                assign special = e == {EXP_BITS{1'b1}};
            end else begin : g_none
                assign special = 1'b0;
            end
        end else if (KIND == 1) begin : g_int
            assign neg = code[E_BITS-1];
            assign mag = neg ? -code : code;                     // MAG_W = E_BITS: -2^(E_BITS-1) fits
            assign special = 1'b0;
        end else begin : g_sm
            assign neg = code[M_BITS];
            assign mag = code[MAG_W-1:0];
            assign special = 1'b0;
        end
    endgenerate
endmodule
