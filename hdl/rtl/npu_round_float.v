// Rounds an exact value  (-1)^sgn * mag * 2^lsb_exp  to an IEEE-style binary format with EXP_W exponent
// bits and MAN_W fraction bits: round to nearest even, subnormals kept, overflow to infinity
// (docs/numerics.md: every rounding of the MFU and of the MVU accumulator is this one).
// A zero magnitude gives a zero with the given sign.  Combinational.
module npu_round_float #(
    parameter integer MAG_W = 64,      // width of the exact magnitude
    parameter integer EXP_W = 5,
    parameter integer MAN_W = 10
) (
    input  wire                     sgn,
    input  wire [MAG_W-1:0]         mag,
    input  wire signed [15:0]       lsb_exp,   // power of two of mag's bit 0
    output reg  [EXP_W+MAN_W:0]     result
);
    localparam integer BIAS = (1 << (EXP_W - 1)) - 1;
    localparam integer MIN_LSB = 1 - BIAS - MAN_W;          // quantum of the subnormals
    localparam [EXP_W-1:0] EXP_MAX = {EXP_W{1'b1}};

    // the leading one is found by halving steps (log2 MAG_W shifts), guard and sticky by shifts and a mask
    localparam integer TOP_STEP = 1 << ($clog2(MAG_W) - 1);

    integer p, step, s, e;
    reg [MAG_W-1:0] probe;
    wire signed [31:0] lsb = {{16{lsb_exp[15]}}, lsb_exp};
    /* verilator lint_off UNUSEDSIGNAL */
    reg [MAG_W-1:0] kept;                                   // only its low MAN_W + 2 bits matter
    /* verilator lint_on UNUSEDSIGNAL */
    reg guard, sticky;
    reg [MAN_W+1:0] r;

    always @* begin
        p = (mag == {MAG_W{1'b0}}) ? -1 : 0;
        probe = mag;
        for (step = TOP_STEP; step >= 1; step = step / 2)
            if ((probe >> step) != {MAG_W{1'b0}}) begin
                p = p + step;
                probe = probe >> step;
            end
        kept = {MAG_W{1'b0}};
        guard = 1'b0;
        sticky = 1'b0;
        r = {(MAN_W + 2){1'b0}};
        s = 0;
        e = 0;
        if (p < 0) begin
            result = {sgn, {(EXP_W + MAN_W){1'b0}}};
        end else begin
            // bit of mag that becomes the result's LSB: MAN_W + 1 significant bits, never below MIN_LSB
            s = p - MAN_W;
            if (s < MIN_LSB - lsb) s = MIN_LSB - lsb;
            if (s > 0) begin
                // a value far below the smallest subnormal has s beyond mag: all of it is sticky
                kept = (s < MAG_W) ? mag >> s : {MAG_W{1'b0}};
                guard = (s <= MAG_W) ? mag[s - 1] : 1'b0;
                sticky = ((s - 1 >= MAG_W) ? mag : (mag & ~({MAG_W{1'b1}} << (s - 1)))) != {MAG_W{1'b0}};
            end else begin
                kept = mag << (-s);
            end
            r = kept[MAN_W+1:0] + {{(MAN_W + 1){1'b0}}, guard & (sticky | kept[0])};
            if (r[MAN_W+1]) begin                           // the rounding carried into a new bit
                r = r >> 1;
                s = s + 1;
            end
            if (!r[MAN_W]) begin
                result = {sgn, {EXP_W{1'b0}}, r[MAN_W-1:0]};                 // subnormal
            end else begin
                e = s + lsb + MAN_W + BIAS;                               // biased exponent
                if (e >= (1 << EXP_W) - 1) result = {sgn, EXP_MAX, {MAN_W{1'b0}}};   // overflow -> infinity
                else result = {sgn, e[EXP_W-1:0], r[MAN_W-1:0]};
            end
        end
    end
endmodule
