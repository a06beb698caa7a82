// Classification of binary32 bit patterns (the magnitude bits [30:0]), for the blocks that take binary32
// operands.
function automatic fp32_is_nan(input [30:0] magnitude);
    fp32_is_nan = (magnitude[30:23] == 8'hff) && (magnitude[22:0] != 23'd0);
endfunction

function automatic fp32_is_inf(input [30:0] magnitude);
    fp32_is_inf = (magnitude[30:23] == 8'hff) && (magnitude[22:0] == 23'd0);
endfunction
