// Decoding of one MFU-format value v (sign, X_EXP_W exponent bits, X_MAN_W fraction bits) for the block
// quantisers: |v| = value_sig(magnitude bits) * 2^value_lsb(exponent bits).  `include inside a module
// that defines X_EXP_W, X_MAN_W and X_BIAS.
function automatic [X_MAN_W:0] value_sig(input [X_EXP_W+X_MAN_W-1:0] magnitude);
    value_sig = {magnitude[X_EXP_W+X_MAN_W-1 -: X_EXP_W] != 0, magnitude[X_MAN_W-1:0]};
endfunction

function automatic integer value_lsb(input [X_EXP_W-1:0] exponent);
    value_lsb = ((exponent == 0) ? 1 : {{(32-X_EXP_W){1'b0}}, exponent}) - X_BIAS - X_MAN_W;
endfunction

// floor(log2 |v|) relative to value_lsb: the index of the significand's leading one, -1 for zero
function automatic integer value_top(input [X_MAN_W:0] sig);
    integer i;
    value_top = -1;
    for (i = 0; i <= X_MAN_W; i = i + 1)
        if (sig[i]) value_top = i;
endfunction
