// The MVU's exact slice dot: the signed sum of L products of weight and input element codes, on the grid
// of 2^-2F_BITS (times the two block scales), with no rounding (docs/numerics.md section 3).  Any element
// of either operand that decodes to NaN or infinity raises `special`.  Block format parameters as in
// npu_block_format.vh.  Combinational.
module npu_slice_dot #(
    parameter integer L = 8, parameter integer KIND = 0, parameter integer E_BITS = 4,
    parameter integer M_BITS = 3, parameter integer EXP_BITS = 0, parameter integer ELEM_SPECIAL = 0,
    parameter integer ACC_W = 16
) (
    input  wire [L*E_BITS-1:0] w_codes,
    input  wire [L*E_BITS-1:0] x_codes,
    output reg  [ACC_W-1:0]    sum,
    output wire                special
);
`include "npu_block_format.vh"
    localparam integer MAG_W = elem_mag_width(KIND, E_BITS, M_BITS, EXP_BITS);

    wire [L-1:0]       w_neg, x_neg, w_sp, x_sp;
    wire [MAG_W-1:0]   w_mag [0:L-1];
    wire [MAG_W-1:0]   x_mag [0:L-1];
    genvar g;
    generate
        for (g = 0; g < L; g = g + 1) begin : lane
            npu_elem_decode #(.KIND(KIND), .E_BITS(E_BITS), .M_BITS(M_BITS), .EXP_BITS(EXP_BITS),
                              .ELEM_SPECIAL(ELEM_SPECIAL), .MAG_W(MAG_W)) wd (
                .code(w_codes[g * E_BITS +: E_BITS]), .neg(w_neg[g]), .mag(w_mag[g]), .special(w_sp[g]));
            npu_elem_decode #(.KIND(KIND), .E_BITS(E_BITS), .M_BITS(M_BITS), .EXP_BITS(EXP_BITS),
                              .ELEM_SPECIAL(ELEM_SPECIAL), .MAG_W(MAG_W)) xd (
                .code(x_codes[g * E_BITS +: E_BITS]), .neg(x_neg[g]), .mag(x_mag[g]), .special(x_sp[g]));
        end
    endgenerate
    assign special = |{w_sp, x_sp};

    reg [2*MAG_W-1:0] prod;
    integer j;
    always @* begin
        sum = {ACC_W{1'b0}};
        for (j = 0; j < L; j = j + 1) begin
            prod = {{MAG_W{1'b0}}, w_mag[j]} * {{MAG_W{1'b0}}, x_mag[j]};
            if (w_neg[j] ^ x_neg[j])
                sum = sum - {{(ACC_W - 2*MAG_W){1'b0}}, prod};
            else
                sum = sum + {{(ACC_W - 2*MAG_W){1'b0}}, prod};
        end
    end
endmodule
