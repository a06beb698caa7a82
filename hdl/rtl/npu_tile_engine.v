// One tile engine of the MVU: N dot-product engines of L multiplier lanes (docs/architecture.md "RTL").
//
// An issued tile op (one N x N weight tile, one quantised input vector) takes N/L cycles: in each, every
// dot-product engine multiplies L weight codes of its row by the matching L input codes and adds the
// exact fixed-point sum to its exact block accumulator.  In the last of those cycles the engine presents
// the N block sums rounded once to binary32 (docs/numerics.md section 3) on `p` with `finishing` high,
// and can take the next op in that same cycle.  One reduction block per native vector (block = N).
module npu_tile_engine #(
    parameter integer N = 32,
    parameter integer L = 8,                  // multiplier lanes per dot-product engine
    parameter integer KIND = 0,               // block format descriptor (npu_block_format.vh)
    parameter integer E_BITS = 4,
    parameter integer M_BITS = 3,
    parameter integer F_BITS = 2,
    parameter integer EXP_BITS = 0,
    parameter integer ELEM_SPECIAL = 0,
    parameter integer SCALE_BITS = 5,
    parameter integer SCALE_BIAS = 15,
    parameter integer TILE_BITS = 8 * (N + N * N * E_BITS / 8)
) (
    input  wire                   clk,
    input  wire                   rst,
    input  wire                   issue,       // take a new op this cycle
    input  wire [N*E_BITS-1:0]    x_codes,
    input  wire [SCALE_BITS-1:0]  x_scale,
    input  wire [TILE_BITS-1:0]   tile,        // packed image: N scale bytes, then N rows of N codes
    output wire                   busy,
    output wire                   finishing,   // the op completes this cycle; p is valid
    output wire [32*N-1:0]        p
);
`include "npu_block_format.vh"
    localparam integer CPT = N / L;
    localparam integer SC_W = (CPT > 1) ? $clog2(CPT) : 1;
    localparam integer ACC_W = block_acc_width(KIND, E_BITS, M_BITS, EXP_BITS, N);

    reg                  active;
    reg [SC_W-1:0]       sc;                  // slice being multiplied
    reg [N*E_BITS-1:0]   xr;
    reg [SCALE_BITS-1:0] xs;
    reg [TILE_BITS-1:0]  tr;
    reg [ACC_W-1:0]      acc [0:N-1];
    reg [N-1:0]          bad;                 // a NaN/infinite element seen in the row's block so far

    assign busy = active;
    assign finishing = active && ({{(32 - SC_W){1'b0}}, sc} == CPT - 1);

    wire [ACC_W-1:0] sum [0:N-1];
    wire [N-1:0]     bad_next;
    genvar g;
    generate
        for (g = 0; g < N; g = g + 1) begin : row
            wire [ACC_W-1:0] slice;
            wire slice_special;
            npu_slice_dot #(.L(L), .KIND(KIND), .E_BITS(E_BITS), .M_BITS(M_BITS), .EXP_BITS(EXP_BITS),
                            .ELEM_SPECIAL(ELEM_SPECIAL), .ACC_W(ACC_W)) dot (
                .w_codes(tr[8 * N + (g * N + sc * L) * E_BITS +: L * E_BITS]),
                .x_codes(xr[sc * L * E_BITS +: L * E_BITS]), .sum(slice), .special(slice_special));
            assign sum[g] = acc[g] + slice;
            assign bad_next[g] = bad[g] | slice_special;
            /* verilator lint_off UNUSEDSIGNAL */
            wire [7:0] scale_byte = tr[8 * g +: 8];
            /* verilator lint_on UNUSEDSIGNAL */
            npu_block_round #(.F_BITS(F_BITS), .SCALE_BITS(SCALE_BITS), .SCALE_BIAS(SCALE_BIAS),
                              .ACC_W(ACC_W)) round (
                .sum(sum[g]), .special(bad_next[g]), .w_scale(scale_byte[SCALE_BITS-1:0]), .x_scale(xs), .p(p[32 * g +: 32]));
        end
    endgenerate

    integer q;
    always @(posedge clk) begin
        if (rst) begin
            active <= 1'b0;
            sc <= {SC_W{1'b0}};
        end else if (issue) begin
            active <= 1'b1;
            sc <= {SC_W{1'b0}};
            xr <= x_codes;
            xs <= x_scale;
            tr <= tile;
            for (q = 0; q < N; q = q + 1) acc[q] <= {ACC_W{1'b0}};
            bad <= {N{1'b0}};
        end else if (active) begin
            if (finishing) active <= 1'b0;
            else sc <= sc + 1'b1;
            for (q = 0; q < N; q = q + 1) acc[q] <= sum[q];
            bad <= bad_next;
        end
    end
endmodule
