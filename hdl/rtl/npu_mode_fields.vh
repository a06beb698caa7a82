// Mode gm's block format descriptor (npu_block_format.vh fields) unpacked from npu_compute's packed MODE_*
// parameters, and the size of a tile packed in that mode; included inside each per-mode generate loop.
localparam integer KIND = mode_field(MODE_KIND, gm);
localparam integer E_BITS = mode_field(MODE_E_BITS, gm);
localparam integer M_BITS = mode_field(MODE_M_BITS, gm);
localparam integer F_BITS = mode_field(MODE_F_BITS, gm);
localparam integer EXP_BITS = mode_field(MODE_EXP_BITS, gm);
localparam integer EXP_BIAS = mode_field(MODE_EXP_BIAS, gm);
localparam integer ELEM_SPECIAL = mode_field(MODE_ELEM_SPECIAL, gm);
localparam integer SCALE_BITS = mode_field(MODE_SCALE_BITS, gm);
localparam integer SCALE_BIAS = mode_field(MODE_SCALE_BIAS, gm);
localparam integer EMAX = mode_field(MODE_EMAX, gm);
localparam integer TB = 8 * (N + N * N * E_BITS / 8);     // this mode's packed tile
