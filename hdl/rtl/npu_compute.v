// The compute stream: chains (vector reads, the MVU, the MFU ops, vector writes), s_wr and nop, over the
// vector register file and the matrix register file (docs/isa.md "Chains", docs/numerics.md).
//
// This block holds both register files.  It executes the compute instructions of the program in its
// instruction memory one after another: a chain is captured (chain, v_rd, mv_mul, MFU ops, v_wr,
// end_chain), then its loops run one vector step per cycle: each reduction step reads one vector (and,
// with mv_mul, multiplies it by one tile: N block sums into N binary32 accumulators), each MFU op takes
// one cycle on N lanes, and the write takes one.  Instructions of the other streams are skipped (the
// loads and stores are the DMA engine's).  Formats: sign-magnitude block weights/activations with one
// block per native vector (ms-fp8, ms-fp9), fp16 MFU.  Back doors load and read both register files.
module npu_compute #(
    parameter integer N = 32,
    parameter integer VRF_DEPTH = 4096,
    parameter integer MRF_TILES = 256,
    parameter integer IMEM_DEPTH = 4096,
    parameter integer M_BITS = 3,
    parameter integer F_BITS = 2,
    parameter integer SCALE_BITS = 5,
    parameter integer SCALE_BIAS = 15,
    parameter integer MAX_OPS = 16      // MFU ops a chain may hold (the t / nops counters are 4 bits)
) (
    input  wire                      clk,
    input  wire                      rst,
    input  wire                      start,
    output reg                       busy,
    output reg                       error,        // an instruction this block cannot execute
    output reg  [31:0]               cycles,
    // dependency tokens (docs/isa.md): the counters live outside; these are one-cycle pulses
    input  wire                      l2c_ready,    // an l2c token is waiting
    input  wire                      s2c_ready,    // an s2c token is waiting
    output reg                       pop_l2c,
    output reg                       pop_s2c,
    output reg                       push_c2l,
    output reg                       push_c2s,
    // back doors
    input  wire                      imem_we,
    input  wire [$clog2(IMEM_DEPTH)-1:0] imem_addr,
    input  wire [127:0]              imem_wdata,
    input  wire                      vrf_we,
    input  wire [$clog2(VRF_DEPTH)-1:0] vrf_addr,
    input  wire [16*N-1:0]           vrf_wdata,
    output wire [16*N-1:0]           vrf_rdata,
    input  wire [$clog2(VRF_DEPTH)-1:0] vrf_raddr2,   // second read port (the store DMA)
    output wire [16*N-1:0]           vrf_rdata2,
    input  wire                      mrf_we,
    input  wire [$clog2(MRF_TILES)-1:0] mrf_addr,
    input  wire [TILE_BITS-1:0]      mrf_wdata
);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */

    localparam integer E_BITS = M_BITS + 1;
    localparam integer TILE_BITS = 8 * (N + N * N * E_BITS / 8);   // packed image: N scale bytes, then codes
    localparam integer VA = $clog2(VRF_DEPTH);
    localparam integer PA = $clog2(IMEM_DEPTH);

    // ---- storage ----------------------------------------------------------------------------------
    reg [127:0]        imem [0:IMEM_DEPTH-1];
    reg [16*N-1:0]     vrf  [0:VRF_DEPTH-1];
    reg [TILE_BITS-1:0] mrf [0:MRF_TILES-1];
    reg [31:0]         sregs [0:15];

    assign vrf_rdata = vrf[vrf_addr];
    assign vrf_rdata2 = vrf[vrf_raddr2];

    // ---- field access -----------------------------------------------------------------------------
    wire [PA-1:0] pc_now;
    wire [127:0] ins = imem[pc_now];

    function automatic signed [31:0] sfield16(input [127:0] w, input integer lsb);
        sfield16 = {{16{w[lsb + 15]}}, w[lsb +: 16]};
    endfunction

    // ---- the captured chain ---------------------------------------------------------------------------
    reg [11:0] n0, n1, k0, k1, cc_n, r_n;
    reg [1:0]  reduce;
    reg [19:0] rd_base, wr_base;
    reg signed [31:0] rd_sn0, rd_sn1, rd_sk0, rd_sk1, rd_sr, wr_sn0, wr_sn1, wr_sr;
    reg [11:0] wr_lo, wr_hi;
    reg        has_mvu;
    reg [15:0] mbase;
    reg [5:0]  op_code [0:MAX_OPS-1];
    reg [19:0] op_base [0:MAX_OPS-1];
    reg signed [31:0] op_sn0 [0:MAX_OPS-1], op_sn1 [0:MAX_OPS-1], op_sr [0:MAX_OPS-1];
    reg [3:0]  op_sreg [0:MAX_OPS-1];
    reg [3:0]  nops;
    reg [1:0]  end_signals;                    // the chain's end_chain tokens: {c2s, c2l}

    // ---- loop state ---------------------------------------------------------------------------------
    reg [11:0] i0, i1, rr, j0, j1, cc;
    reg [31:0] jflat;                          // index of the reduction step (tile column)
    reg [3:0]  t;                              // MFU op being applied
    reg [16*N-1:0] cur;                        // the row's value (fp16 lanes)
    reg [31:0] acc [0:N-1];

    localparam [3:0] S_IDLE = 0, S_FETCH = 1, S_CAPTURE = 2, S_READ = 3, S_ROUND = 4, S_MFU = 5, S_WRITE = 6,
                     S_NEXT = 7, S_DONE = 8;
    reg [3:0] state;
    reg [PA-1:0] pc;
    assign pc_now = pc;

    // ---- datapath: addresses ------------------------------------------------------------------------
    // Addresses are formed at full width; the memories use their low bits (the assembler and the
    // simulator check every chain's extent against the machine, so in-range programs never wrap).
    /* verilator lint_off UNUSEDSIGNAL */
    wire signed [31:0] i0s = {20'd0, i0}, i1s = {20'd0, i1}, rrs = {20'd0, rr};
    wire signed [31:0] rd_addr = $signed({12'd0, rd_base}) + i0s * rd_sn0 + i1s * rd_sn1 +
                                 $signed({20'd0, j0}) * rd_sk0 + $signed({20'd0, j1}) * rd_sk1 +
                                 $signed({20'd0, cc}) + (has_mvu ? 32'sd0 : rrs * rd_sr);
    wire signed [31:0] wr_addr = $signed({12'd0, wr_base}) + i0s * wr_sn0 + i1s * wr_sn1 + rrs * wr_sr;
    wire signed [31:0] op_addr = $signed({12'd0, op_base[t]}) + i0s * op_sn0[t] + i1s * op_sn1[t] + rrs * op_sr[t];
    wire [16*N-1:0] x_vec = vrf[rd_addr[VA-1:0]];
    wire [16*N-1:0] y_vec = vrf[op_addr[VA-1:0]];
    wire [31:0]     k_total = {20'd0, k0} * {20'd0, k1} * {20'd0, cc_n};
    wire [31:0]     tile_index = {16'd0, mbase} + {20'd0, rr} * k_total + jflat;
    /* verilator lint_on UNUSEDSIGNAL */
    wire [TILE_BITS-1:0] tile = mrf[tile_index[$clog2(MRF_TILES)-1:0]];

    // ---- datapath: MVU -------------------------------------------------------------------------------
    wire [N*E_BITS-1:0]   x_codes;
    wire [SCALE_BITS-1:0] x_scale;
    npu_bfp_quantize #(.B(N), .M_BITS(M_BITS), .F_BITS(F_BITS), .SCALE_BITS(SCALE_BITS), .SCALE_BIAS(SCALE_BIAS))
        quantize (.x(x_vec), .codes(x_codes), .scale(x_scale));

    wire [31:0] partial [0:N-1];
    wire [31:0] widened [0:N-1];
    wire [31:0] acc_next [0:N-1];
    wire [15:0] acc_half [0:N-1];
    wire [15:0] lane_out [0:N-1];
    wire [15:0] scalar_half;
    reg  [5:0]  lane_op;
    reg  [16*N-1:0] lane_y;
    reg         first_step;

    npu_fp32_to_fp16 scalar_round (.a(sregs[op_sreg[t]]), .z(scalar_half));

    genvar g;
    generate
        for (g = 0; g < N; g = g + 1) begin : lane
            /* verilator lint_off UNUSEDSIGNAL */
            wire [7:0] scale_byte = tile[8 * g +: 8];
            /* verilator lint_on UNUSEDSIGNAL */
            npu_bfp_block_dot #(.B(N), .M_BITS(M_BITS), .F_BITS(F_BITS), .SCALE_BITS(SCALE_BITS),
                                .SCALE_BIAS(SCALE_BIAS)) dot (
                .w_codes(tile[8 * N + g * N * E_BITS +: N * E_BITS]), .w_scale(scale_byte[SCALE_BITS-1:0]),
                .x_codes(x_codes), .x_scale(x_scale), .p(partial[g]));
            npu_fp16_to_fp32 widen (.a(x_vec[16 * g +: 16]), .z(widened[g]));
            npu_fp32_add add (.a(first_step ? 32'd0 : acc[g]), .b(has_mvu ? partial[g] : widened[g]),
                              .z(acc_next[g]));
            npu_fp32_to_fp16 round (.a(acc[g]), .z(acc_half[g]));
            npu_mfu_lane_fp16 mfu (.op(lane_op), .x(cur[16 * g +: 16]), .y(lane_y[16 * g +: 16]), .z(lane_out[g]));
        end
    endgenerate

    integer e;
    reg [16*N-1:0] lanes_flat;
    always @* begin
        for (e = 0; e < N; e = e + 1) lanes_flat[16 * e +: 16] = lane_out[e];
    end

    // lane operation: the current MFU op, max for reduce=max reads, pass-through (canonical NaN) for writes
    always @* begin
        lane_y = y_vec;
        lane_op = OP_NOP;
        if (state == S_READ) begin
            lane_op = OP_VV_MAX;
            lane_y = x_vec;
        end else if (state == S_MFU) begin
            lane_op = op_code[t];
            if (op_code[t] == OP_VS_ADD || op_code[t] == OP_VS_MUL || op_code[t] == OP_VS_MAX)
                lane_y = {N{scalar_half}};
        end
    end

    function automatic is_compute(input [5:0] opcode);
        is_compute = !(opcode == OP_V_LOAD || opcode == OP_V_STORE || opcode == OP_M_LOAD || opcode == OP_HALT);
    endfunction

    wire last_j = (cc == cc_n - 1) && (j1 == k1 - 1) && (j0 == k0 - 1);

    // ---- control ---------------------------------------------------------------------------------------
    integer q;
    always @(posedge clk) begin
        if (imem_we) imem[imem_addr] <= imem_wdata;
        if (mrf_we) mrf[mrf_addr] <= mrf_wdata;
        if (vrf_we) vrf[vrf_addr] <= vrf_wdata;            // back door, or the load DMA
        pop_l2c <= 1'b0;
        pop_s2c <= 1'b0;
        push_c2l <= 1'b0;
        push_c2s <= 1'b0;
        if (rst) begin
            state <= S_IDLE;
            busy <= 1'b0;
            error <= 1'b0;
            cycles <= 32'd0;
            pc <= {PA{1'b0}};
            for (q = 0; q < 16; q = q + 1) sregs[q] <= 32'd0;
        end else begin
            if (busy) cycles <= cycles + 32'd1;
            case (state)
                S_IDLE: if (start) begin
                    busy <= 1'b1;
                    pc <= {PA{1'b0}};
                    cycles <= 32'd0;
                    state <= S_FETCH;
                end
                S_FETCH: if (is_compute(ins[5:0]) && ((ins[ISA_DEP_WAIT_PREV] && !l2c_ready) ||
                                                       (ins[ISA_DEP_WAIT_NEXT] && !s2c_ready))) begin
                    // wait for the tokens this instruction needs
                end else begin
                    pc <= pc + 1'b1;
                    if (is_compute(ins[5:0])) begin
                        pop_l2c <= ins[ISA_DEP_WAIT_PREV];
                        pop_s2c <= ins[ISA_DEP_WAIT_NEXT];
                        if (ins[5:0] != OP_CHAIN) begin               // a chain signals from its end_chain
                            push_c2l <= ins[ISA_DEP_SIGNAL_PREV];
                            push_c2s <= ins[ISA_DEP_SIGNAL_NEXT];
                        end
                    end
                    case (ins[5:0])
                        OP_HALT: state <= S_DONE;
                        OP_S_WR: sregs[ins[S_WR_SREG_LSB +: S_WR_SREG_W]] <= ins[S_WR_VALUE_LSB +: S_WR_VALUE_W];
                        OP_CHAIN: begin
                            n0 <= ins[CHAIN_N0_LSB +: 12]; n1 <= ins[CHAIN_N1_LSB +: 12];
                            k0 <= ins[CHAIN_K0_LSB +: 12]; k1 <= ins[CHAIN_K1_LSB +: 12];
                            cc_n <= ins[CHAIN_C_LSB +: 12]; r_n <= ins[CHAIN_R_LSB +: 12];
                            reduce <= ins[CHAIN_REDUCE_LSB +: 2];
                            has_mvu <= 1'b0;
                            nops <= 4'd0;
                            state <= S_CAPTURE;
                        end
                        OP_NOP, OP_V_LOAD, OP_V_STORE, OP_M_LOAD: ;
                        default: error <= 1'b1;
                    endcase
                end
                S_CAPTURE: begin
                    pc <= pc + 1'b1;
                    case (ins[5:0])
                        OP_V_RD: begin
                            rd_base <= ins[V_RD_BASE_LSB +: 20];
                            rd_sn0 <= sfield16(ins, V_RD_S_N0_LSB); rd_sn1 <= sfield16(ins, V_RD_S_N1_LSB);
                            rd_sk0 <= sfield16(ins, V_RD_S_K0_LSB); rd_sk1 <= sfield16(ins, V_RD_S_K1_LSB);
                            rd_sr <= sfield16(ins, V_RD_S_R_LSB);
                        end
                        OP_MV_MUL: begin
                            has_mvu <= 1'b1;
                            mbase <= ins[MV_MUL_MBASE_LSB +: 16];
                        end
                        OP_V_WR: begin
                            wr_base <= ins[V_WR_BASE_LSB +: 20];
                            wr_sn0 <= sfield16(ins, V_WR_S_N0_LSB); wr_sn1 <= sfield16(ins, V_WR_S_N1_LSB);
                            wr_sr <= sfield16(ins, V_WR_S_R_LSB);
                            wr_lo <= ins[V_WR_LO_LSB +: 12];
                            wr_hi <= ins[V_WR_HI_LSB +: 12];
                        end
                        OP_END_CHAIN: begin
                            end_signals <= {ins[ISA_DEP_SIGNAL_NEXT], ins[ISA_DEP_SIGNAL_PREV]};
                            i0 <= 0; i1 <= 0; rr <= 0; j0 <= 0; j1 <= 0; cc <= 0; jflat <= 0;
                            first_step <= 1'b1;
                            state <= S_READ;
                        end
                        OP_V_SIGM, OP_V_TANH: error <= 1'b1;            // activation tables: not in this block yet
                        default: begin
                            if ({28'd0, nops} < MAX_OPS) begin
                                op_code[nops] <= ins[5:0];
                                op_base[nops] <= ins[VV_ADD_BASE_LSB +: 20];
                                op_sn0[nops] <= sfield16(ins, VV_ADD_S_N0_LSB);
                                op_sn1[nops] <= sfield16(ins, VV_ADD_S_N1_LSB);
                                op_sr[nops] <= sfield16(ins, VV_ADD_S_R_LSB);
                                op_sreg[nops] <= ins[VS_ADD_SREG_LSB +: 4];
                                nops <= nops + 4'd1;
                            end else error <= 1'b1;
                        end
                    endcase
                end
                S_READ: begin
                    // one reduction step: accumulate (MVU / sum), running max, or take the vector
                    first_step <= 1'b0;
                    if (has_mvu || reduce == 2'd1) begin
                        for (q = 0; q < N; q = q + 1) acc[q] <= acc_next[q];
                    end else if (reduce == 2'd2 && !first_step) begin
                        cur <= lanes_flat;
                    end else begin
                        cur <= x_vec;
                    end
                    if (last_j) begin
                        state <= (has_mvu || reduce == 2'd1) ? S_ROUND : S_MFU;
                        t <= 4'd0;
                    end
                    jflat <= jflat + 1;
                    if (cc != cc_n - 1) cc <= cc + 1;
                    else begin
                        cc <= 0;
                        if (j1 != k1 - 1) j1 <= j1 + 1;
                        else begin
                            j1 <= 0;
                            j0 <= (j0 != k0 - 1) ? j0 + 1 : 12'd0;
                        end
                    end
                end
                S_ROUND: begin
                    for (q = 0; q < N; q = q + 1) cur[16 * q +: 16] <= acc_half[q];
                    state <= S_MFU;
                    t <= 4'd0;
                end
                S_MFU: begin
                    if (t < nops) begin
                        cur <= lanes_flat;
                        t <= t + 4'd1;
                    end else state <= S_WRITE;
                end
                S_WRITE: begin
                    for (q = 0; q < N; q = q + 1)
                        if (q >= wr_lo && (wr_hi == 0 || q < wr_hi))
                            vrf[wr_addr[VA-1:0]][16 * q +: 16] <= lanes_flat[16 * q +: 16];
                    state <= S_NEXT;
                end
                S_NEXT: begin
                    jflat <= 0;
                    first_step <= 1'b1;
                    state <= S_READ;
                    if (rr != r_n - 1) rr <= rr + 1;
                    else begin
                        rr <= 0;
                        if (i1 != n1 - 1) i1 <= i1 + 1;
                        else begin
                            i1 <= 0;
                            if (i0 != n0 - 1) i0 <= i0 + 1;
                            else begin
                                i0 <= 0;
                                push_c2l <= end_signals[0];
                                push_c2s <= end_signals[1];
                                state <= S_FETCH;
                            end
                        end
                    end
                end
                S_DONE: begin
                    busy <= 1'b0;
                    state <= S_IDLE;
                end
                default: state <= S_IDLE;
            endcase
        end
    end
endmodule
