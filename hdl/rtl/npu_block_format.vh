// Sizes derived from a block format descriptor (the sign-magnitude kind; the MX kinds are not in the RTL yet).
function automatic integer block_acc_width(input integer kind, input integer e_bits, input integer m_bits,
                                           input integer exp_bits, input integer b);
    block_acc_width = 2 * m_bits + $clog2(b) + 2 + 0 * (kind + e_bits + exp_bits);
endfunction
