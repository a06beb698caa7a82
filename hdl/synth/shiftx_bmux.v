// Yosys techmap rule used by hdl/synth.py (not part of the core): an indexed part-select
// `A[off +: W]` whose offset is a multiple of 2^k (its k low bits are constant zeros) reaches Yosys as a
// $shiftx.  Yosys 0.23's generic mapping builds a barrel shifter as wide as A and then optimises it
// (minutes and gigabytes for the 16384-bit activation tables and the tile engines' slices); this rule
// maps such a cell to the equivalent word multiplexer instead: a $bmux whose entry e is A[e * 2^k +: W]
// (bits beyond A undefined, as $shiftx gives them), selected by off / 2^k.  Every other $shiftx is left to
// the generic rule.
(* techmap_celltype = "$shiftx" *)
module _npu_shiftx_bmux (A, B, Y);
    parameter A_SIGNED = 0;
    parameter B_SIGNED = 0;
    parameter A_WIDTH = 1;
    parameter B_WIDTH = 1;
    parameter Y_WIDTH = 1;
    parameter [B_WIDTH-1:0] _TECHMAP_CONSTMSK_B_ = 0;
    parameter [B_WIDTH-1:0] _TECHMAP_CONSTVAL_B_ = 0;

    (* force_downto *) input [A_WIDTH-1:0] A;
    (* force_downto *) input [B_WIDTH-1:0] B;
    (* force_downto *) output [Y_WIDTH-1:0] Y;

    // k: the constant-zero low bits of the shift amount
    function integer zero_low_bits(input integer dummy);
        integer i;
        begin
            zero_low_bits = 0;
            for (i = 0; i < B_WIDTH; i = i + 1)
                if (zero_low_bits == i && _TECHMAP_CONSTMSK_B_[i] && !_TECHMAP_CONSTVAL_B_[i])
                    zero_low_bits = i + 1;
        end
    endfunction

    localparam integer K_ALL = zero_low_bits(0);
    localparam integer K = (K_ALL >= B_WIDTH) ? B_WIDTH - 1 : K_ALL;
    localparam integer WORD = 1 << K;
    // select bits: only as many as address a window that starts inside A
    localparam integer STARTS = (A_WIDTH + WORD - 1) / WORD;
    localparam integer S_NEED = (STARTS > 1) ? $clog2(STARTS) : 1;
    localparam integer S_WIDTH = (B_WIDTH - K < S_NEED) ? B_WIDTH - K : S_NEED;
    localparam integer ENTRIES = 1 << S_WIDTH;
    // a signed shift amount qualifies when its sign bit is a constant zero (then it is B's unsigned value)
    localparam SIGN_ZERO = _TECHMAP_CONSTMSK_B_[B_WIDTH-1] && !_TECHMAP_CONSTVAL_B_[B_WIDTH-1];

    wire _TECHMAP_FAIL_ = (B_SIGNED && !SIGN_ZERO) || K_ALL < 1 || B_WIDTH < 2 || ENTRIES * Y_WIDTH > (1 << 20);

    // A followed by undefined bits, long enough for the last window
    localparam integer PADDED = ENTRIES * WORD + Y_WIDTH;
    (* force_downto *) wire [PADDED-1:0] ext;
    generate
        if (PADDED > A_WIDTH) begin : pad
            assign ext = {{(PADDED - A_WIDTH){1'bx}}, A};
        end else begin : cut
            assign ext = A[PADDED-1:0];
        end
    endgenerate
    (* force_downto *) wire [ENTRIES*Y_WIDTH-1:0] table;
    genvar e;
    generate
        for (e = 0; e < ENTRIES; e = e + 1) begin : window
            assign table[e * Y_WIDTH +: Y_WIDTH] = ext[e * WORD +: Y_WIDTH];
        end
        if (B_WIDTH - K > S_WIDTH) begin : range
            // a shift beyond the last window that starts inside A reads undefined bits, as $shiftx does
            wire beyond = |B[B_WIDTH-1:K+S_WIDTH];
            wire [Y_WIDTH-1:0] y;
            \$bmux #(.WIDTH(Y_WIDTH), .S_WIDTH(S_WIDTH)) mux (.A(table), .S(B[K +: S_WIDTH]), .Y(y));
            assign Y = beyond ? {Y_WIDTH{1'bx}} : y;
        end else begin : fits
            \$bmux #(.WIDTH(Y_WIDTH), .S_WIDTH(S_WIDTH)) mux (.A(table), .S(B[K +: S_WIDTH]), .Y(Y));
        end
    endgenerate
endmodule
