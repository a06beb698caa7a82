// One reduction block of the MVU for any block format (sign-magnitude, MX integer or MX minifloat
// elements; descriptor as in npu_block_format.vh): P_b = RNE_binary32(sum_j w_j * x_j), the sum exact
// (docs/numerics.md section 3).
//
// The whole block as one slice: npu_slice_dot sums the integer products exactly, npu_block_round rounds
// the sum (an integer times 2^(s_w + s_x - 2F)) once; a NaN scale code (all ones) or a NaN/infinite
// element gives NaN.  Combinational.
module npu_bfp_block_dot #(
    parameter integer B = 32,            // elements per reduction block
    parameter integer KIND = 0,
    parameter integer M_BITS = 3,        // magnitude bits (ms-fp9: 3) or minifloat mantissa bits
    parameter integer E_BITS = M_BITS + 1,
    parameter integer F_BITS = 2,        // the element grid (ms-fp9: value M * 2^-2)
    parameter integer EXP_BITS = 0,
    parameter integer ELEM_SPECIAL = 0,
    parameter integer SCALE_BITS = 5,
    parameter integer SCALE_BIAS = 15
) (
    input  wire [B*E_BITS-1:0]     w_codes,   // element j in bits [j*E_BITS +: E_BITS]
    input  wire [SCALE_BITS-1:0]   w_scale,
    input  wire [B*E_BITS-1:0]     x_codes,
    input  wire [SCALE_BITS-1:0]   x_scale,
    output wire [31:0]             p          // binary32
);
`include "npu_block_format.vh"
    localparam integer ACC_W = block_acc_width(KIND, E_BITS, M_BITS, EXP_BITS, B);

    wire [ACC_W-1:0] sum;
    wire special;
    npu_slice_dot #(.L(B), .KIND(KIND), .E_BITS(E_BITS), .M_BITS(M_BITS), .EXP_BITS(EXP_BITS),
                    .ELEM_SPECIAL(ELEM_SPECIAL), .ACC_W(ACC_W)) dot (
        .w_codes(w_codes), .x_codes(x_codes), .sum(sum), .special(special));
    npu_block_round #(.F_BITS(F_BITS), .SCALE_BITS(SCALE_BITS), .SCALE_BIAS(SCALE_BIAS), .ACC_W(ACC_W)) round (
        .sum(sum), .special(special), .w_scale(w_scale), .x_scale(x_scale), .p(p));
endmodule
