// NPU_ROUND_FLOAT_FN(NAME, MAG_W, EXP_W, MAN_W) declares, in the module that expands it, the function
//   NAME(sgn, mag, lsb_exp)
// that rounds the exact value (-1)^sgn * mag * 2^lsb_exp (mag MAG_W bits wide, lsb_exp the power of two of
// its bit 0, signed 16 bits) to the IEEE-style binary format with EXP_W exponent bits and MAN_W fraction
// bits: round to nearest even, subnormals kept, overflow to infinity, a zero magnitude gives a zero with the
// given sign (docs/numerics.md: every rounding of the MFU and of the MVU accumulator is this one).
// The leading one is found by halving steps (log2 MAG_W shifts), guard and sticky by shifts and a mask.
// npu_round_float is this function as a module; the MFU's functions (npu_fp32_ops.vh) expand it once per
// width they need.
`define NPU_ROUND_FLOAT_FN(NAME, MAG_W, EXP_W, MAN_W) \
    function automatic [(EXP_W)+(MAN_W):0] NAME(input sgn, input [(MAG_W)-1:0] mag, input signed [15:0] lsb_exp); \
        integer p, step, s, e, lsb; \
        reg [(MAG_W)-1:0] probe, kept; \
        reg guard, sticky; \
        reg [(MAN_W)+1:0] r; \
        begin \
            lsb = {{16{lsb_exp[15]}}, lsb_exp}; \
            p = (mag == {(MAG_W){1'b0}}) ? -1 : 0; \
            probe = mag; \
            for (step = 1 << ($clog2(MAG_W) - 1); step >= 1; step = step / 2) \
                if ((probe >> step) != {(MAG_W){1'b0}}) begin \
                    p = p + step; \
                    probe = probe >> step; \
                end \
            kept = {(MAG_W){1'b0}}; \
            guard = 1'b0; \
            sticky = 1'b0; \
            r = {((MAN_W) + 2){1'b0}}; \
            s = 0; \
            e = 0; \
            if (p < 0) begin \
                NAME = {sgn, {((EXP_W) + (MAN_W)){1'b0}}}; \
            end else begin \
                s = p - (MAN_W); \
                if (s < (2 - (1 << ((EXP_W) - 1)) - (MAN_W)) - lsb) s = (2 - (1 << ((EXP_W) - 1)) - (MAN_W)) - lsb; \
                if (s > 0) begin \
                    kept = (s < (MAG_W)) ? mag >> s : {(MAG_W){1'b0}}; \
                    guard = (s <= (MAG_W)) ? mag[s - 1] : 1'b0; \
                    sticky = ((s - 1 >= (MAG_W)) ? mag : (mag & ~({(MAG_W){1'b1}} << (s - 1)))) != {(MAG_W){1'b0}}; \
                end else begin \
                    kept = mag << (-s); \
                end \
                r = kept[(MAN_W)+1:0] + {{((MAN_W) + 1){1'b0}}, guard & (sticky | kept[0])}; \
                if (r[(MAN_W)+1]) begin \
                    r = r >> 1; \
                    s = s + 1; \
                end \
                if (!r[(MAN_W)]) begin \
                    NAME = {sgn, {(EXP_W){1'b0}}, r[(MAN_W)-1:0]}; \
                end else begin \
                    e = s + lsb + (MAN_W) + ((1 << ((EXP_W) - 1)) - 1); \
                    if (e >= (1 << (EXP_W)) - 1) NAME = {sgn, {(EXP_W){1'b1}}, {(MAN_W){1'b0}}}; \
                    else NAME = {sgn, e[(EXP_W)-1:0], r[(MAN_W)-1:0]}; \
                end \
            end \
        end \
    endfunction
