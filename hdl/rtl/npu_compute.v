// The compute stream: chains (vector reads, the MVU, the MFU chain, vector writes), s_wr and nop, over the
// vector register file and the matrix register file (docs/isa.md "Chains", docs/numerics.md,
// docs/architecture.md "RTL").
//
// Instructions are fetched one per cycle; a chain's instructions are captured into loop, address and
// MFU-stage registers, then the chain runs as a pipeline:
//   issue   one input vector read per cycle (reductions without the MVU), or one tile op per tile engine
//           every N/LANES cycles, the engines staggered by a cycle so that their results leave in order;
//   combine the engines' block sums are added to the row's binary32 accumulators in reduction order, one
//           tile op per cycle; a finished row is rounded to the MFU format;
//   MFU     MFUS units of three stages each (multiply, add/sub/max/min, activation), one cycle per stage,
//           unused stages pass values through; a chain that uses m MFUs leaves after stage 3m;
//   write   the row's lanes lo..hi-1 go to the vector memory.
// With WP write ports the datapath from issue to write is there WP times ("ports"): the rows of a chain
// go round-robin to the ports, each with TILES/WP tile engines, and the vector memory has WP banks
// (bank = address mod WP) that take one row a cycle each, through per-port write queues (below).
// When TILES is not a multiple of WP or exceeds WP x N/LANES (at N/LANES = 1 only, TILES <= 2 WP), the
// TILES engines are pooled across the ports: a port issues up to two tile ops of its row a cycle and its
// combine adds both block sums in order (POOL, below).
// The next chain starts when the pipeline has drained.  Instructions of the other streams are skipped
// (the loads and stores are the DMA engines').  Back doors load and read both register files.
module npu_compute #(
    parameter integer N = 32,
    parameter integer TILES = 2,
    parameter integer LANES = 8,
    parameter integer MFUS = 2,
    parameter integer WP = 1,                 // write ports: MFU pipelines and vector-memory banks (a power of two)
    parameter integer VRF_DEPTH = 4096,
    parameter integer MRF_TILES = 256,
    parameter integer IMEM_DEPTH = 4096,
    parameter integer FMT = 0,                // MFU format: 0 fp16, 1 bf16, 2 fp32
    // MVU format modes (mixed precision): MODES of them, mode m's block format descriptor
    // (npu_block_format.vh) in bits [16m +: 16] of each MODE_* vector
    parameter integer MODES = 1,
    parameter [127:0] MODE_KIND = 128'd0,
    parameter [127:0] MODE_E_BITS = 128'd4,
    parameter [127:0] MODE_M_BITS = 128'd3,
    parameter [127:0] MODE_F_BITS = 128'd2,
    parameter [127:0] MODE_EXP_BITS = 128'd0,
    parameter [127:0] MODE_EXP_BIAS = 128'd0,
    parameter [127:0] MODE_ELEM_SPECIAL = 128'd0,
    parameter [127:0] MODE_SCALE_BITS = 128'd5,
    parameter [127:0] MODE_SCALE_BIAS = 128'd15,
    parameter [127:0] MODE_EMAX = 128'd0,
    parameter integer EW = (FMT == 2) ? 32 : 16,
    parameter integer TILE_BITS = 8 * (N + N * N * 4 / 8)     // the widest packed tile among the modes
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
    input  wire [EW*N-1:0]           vrf_wdata,
    output wire [EW*N-1:0]           vrf_rdata,
    input  wire [$clog2(VRF_DEPTH)-1:0] vrf_raddr2,   // second read port (the store DMA)
    output wire [EW*N-1:0]           vrf_rdata2,
    input  wire                      mrf_we,
    input  wire [$clog2(MRF_TILES)-1:0] mrf_addr,
    input  wire [TILE_BITS-1:0]      mrf_wdata,
    input  wire [2:0]                mrf_wmode      // the MVU format mode the tile was loaded in
);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
`include "npu_fp32_ops.vh"
`include "npu_mfu_ops.vh"

    localparam integer VW = EW * N;
    localparam integer VA = $clog2(VRF_DEPTH);
    localparam integer PA = $clog2(IMEM_DEPTH);
    localparam integer CPT = N / LANES;                 // cycles per tile op
    localparam integer PH_W = (CPT > 1) ? $clog2(CPT) : 1;
    localparam integer STAGES = 3 * MFUS;
    localparam integer ST_W = $clog2(STAGES + 1);
    localparam integer FX_BITS = (FMT == 2) ? 8 : (FMT == 1) ? 8 : 5;     // exponent bits of F
    localparam integer FM_BITS = EW - 1 - FX_BITS;                        // fraction bits of F

    // ---- storage ----------------------------------------------------------------------------------
    reg [127:0]         imem [0:IMEM_DEPTH-1];
    reg [VW-1:0]        vrf  [0:VRF_DEPTH-1];
    reg [TILE_BITS-1:0] mrf  [0:MRF_TILES-1];
    reg [2:0]           mrf_mode [0:MRF_TILES-1];   // each slot's mode (never loaded: 0, as the register file starts)
    reg [31:0]          sregs [0:15];

    assign vrf_rdata = vrf[vrf_addr];
    assign vrf_rdata2 = vrf[vrf_raddr2];

    // ---- instruction fetch ------------------------------------------------------------------------
    localparam [2:0] S_IDLE = 0, S_FETCH = 1, S_CAPTURE = 2, S_RUN = 3, S_DONE = 4;
    reg [2:0] state;
    reg [PA-1:0] pc;
    wire [127:0] ins = imem[pc];

    function automatic signed [31:0] sfield16(input [127:0] w, input integer lsb);
        sfield16 = {{16{w[lsb + 15]}}, w[lsb +: 16]};
    endfunction

    function automatic [1:0] slot_of(input [5:0] opcode);
        case (opcode)
            OP_VV_MUL, OP_VS_MUL: slot_of = MFU_SLOT_VV_MUL[1:0];
            OP_V_RELU, OP_V_SIGM, OP_V_TANH: slot_of = MFU_SLOT_V_RELU[1:0];
            default: slot_of = MFU_SLOT_VV_ADD[1:0];
        endcase
    endfunction

    function automatic is_compute(input [5:0] opcode);
        is_compute = !(opcode == OP_V_LOAD || opcode == OP_V_STORE || opcode == OP_M_LOAD || opcode == OP_HALT);
    endfunction

    // ---- the captured chain -----------------------------------------------------------------------
    reg [11:0] n0, n1, k0, k1, cc_n, r_n;
    reg [1:0]  reduce;
    reg [19:0] rd_base, wr_base;
    reg signed [31:0] rd_sn0, rd_sn1, rd_sk0, rd_sk1, rd_sr, wr_sn0, wr_sn1, wr_sr;
    reg [11:0] wr_lo, wr_hi;
    reg        has_mvu;
    reg [2:0]  cmode;                          // the chain's MVU format mode (mv_mul fmt)
    reg [15:0] mbase;
    reg [5:0]  st_op [0:STAGES-1];
    reg [19:0] st_base [0:STAGES-1];
    reg signed [31:0] st_sn0 [0:STAGES-1], st_sn1 [0:STAGES-1], st_sr [0:STAGES-1];
    reg [3:0]  st_sreg [0:STAGES-1];
    reg [ST_W-1:0] unit_now;                   // MFU the last captured op went to
    reg [1:0]  slot_next;                      // first stage of that MFU still free
    reg [ST_W-1:0] mfus_used;
    reg [1:0]  end_signals;                    // the chain's end_chain tokens: {c2s, c2l}

    // ---- ports: rows round-robin over WP copies of the datapath ---------------------------------------
    // Port p takes rows p, p + WP, p + 2 WP, ... of the chain (rows in (i0, i1, r) order): its own loop
    // counters, input read and MRF read, TILES/WP tile engines per format mode (staggered by a cycle within
    // the N/LANES-cycle period, so its combine adds at most one block sum a cycle), its own combine lanes,
    // MFU pipeline and write port.
    // Pooled (TILES not a multiple of WP, or more than WP x N/LANES; hdl/core.py allows it at N/LANES = 1 with
    // TILES <= 2 WP): the TILES engines serve every port; a port issues up to two tile ops of its row a
    // cycle (in reduction order), an arbiter grants at most TILES a cycle over the ports in round-robin
    // order, each result returns to its port a cycle later, and the port's combine adds both block sums.
    localparam integer POOL = (TILES % WP != 0 || TILES > WP * CPT) ? 1 : 0;
    localparam integer TP = (POOL != 0) ? 1 : TILES / WP;      // tile engines per port (unpooled)
    localparam integer OS_W = $clog2(2 * WP);           // an op slot: port x 2 + (first or second op)
    localparam integer WP_B = (WP > 1) ? $clog2(WP) : 1;

    /* verilator lint_off UNUSEDSIGNAL */
    function automatic signed [31:0] u32(input [11:0] v);
        u32 = {20'd0, v};
    endfunction
    /* verilator lint_on UNUSEDSIGNAL */

    // the row after {wrapped, i0, i1, r} (wrapped set once past the last row, and kept)
    function automatic [36:0] row_next(input [36:0] cur, input [11:0] n0_, input [11:0] n1_, input [11:0] r_);
        reg [11:0] a, b, c;
        reg        w;
        begin
            {w, a, b, c} = cur;
            if (c != r_ - 1) c = c + 12'd1;
            else begin
                c = 12'd0;
                if (b != n1_ - 1) b = b + 12'd1;
                else begin
                    b = 12'd0;
                    if (a != n0_ - 1) a = a + 12'd1;
                    else begin
                        a = 12'd0;
                        w = 1'b1;
                    end
                end
            end
            row_next = {w, a, b, c};
        end
    endfunction

    // the reduction step after {j0, j1, cc} (j0 past its end once the row's steps are done)
    function automatic [35:0] step_next(input [35:0] cur, input [11:0] k1_, input [11:0] cc_n_);
        reg [11:0] a, b, c;
        begin
            {a, b, c} = cur;
            if (c != cc_n_ - 1) c = c + 12'd1;
            else begin
                c = 12'd0;
                if (b != k1_ - 1) b = b + 12'd1;
                else begin
                    b = 12'd0;
                    a = a + 12'd1;
                end
            end
            step_next = {a, b, c};
        end
    endfunction

    // the vector-memory bank of an address (address mod WP)
    /* verilator lint_off UNUSEDSIGNAL */
    function automatic [WP_B-1:0] bank_of(input [VA-1:0] a);
        bank_of = (WP > 1) ? a[WP_B-1:0] : {WP_B{1'b0}};
    endfunction
    /* verilator lint_on UNUSEDSIGNAL */

    /* verilator lint_off UNUSEDSIGNAL */
    function automatic [VA-1:0] write_address(input [35:0] idx);
        reg signed [31:0] a;
        begin
            a = $signed({12'd0, wr_base}) + u32(idx[35:24]) * wr_sn0 + u32(idx[23:12]) * wr_sn1 +
                u32(idx[11:0]) * wr_sr;
            write_address = a[VA-1:0];
        end
    endfunction
    /* verilator lint_on UNUSEDSIGNAL */

    // field m of a packed per-mode descriptor (16 bits, two's complement)
    function automatic integer mode_field(input [127:0] v, input integer m);
        reg [15:0] f;
        begin
            f = v[16 * m +: 16];
            mode_field = {{16{f[15]}}, f};
        end
    endfunction

    function automatic [EW-1:0] canonical(input [EW-1:0] v);
        if (v[EW-2 -: FX_BITS] == {FX_BITS{1'b1}} && v[FM_BITS-1:0] != {FM_BITS{1'b0}})
            canonical = {1'b0, {FX_BITS{1'b1}}, 1'b1, {(FM_BITS - 1){1'b0}}};
        else canonical = v;
    endfunction

    reg  [PH_W-1:0]  ph;                        // phase within the N/LANES-cycle engine period (all ports)
    reg  [WP_B-1:0]  rot;                       // the port first in line for a bank this cycle (round-robin)
    wire chain_start = (state == S_CAPTURE) && (ins[5:0] == OP_END_CHAIN);
    wire [WP-1:0]    p_want;                    // the port would issue a tile op / read an input this cycle
    wire [WP-1:0]    p_row_start;               // ... and it is the row's first
    wire [WP_B-1:0]  p_rbank [0:WP-1];          // the bank of its input read (reductions without the MVU)
    /* verilator lint_off UNUSEDSIGNAL */
    wire [WP_B-1:0]  p_wbank [0:WP-1];          // the bank its row will be written to (used with WP > 1)
    /* verilator lint_on UNUSEDSIGNAL */
    wire [WP-1:0]    p_credit;                  // the row's write bank has room for it (the write queues)
    reg  [WP-1:0]    p_go;                      // the port issues / reads this cycle
    reg  [2*WP-1:0]  p_n;                       // ... this many tile ops (pooled: 1 or 2; else 1)
    wire [WP-1:0]    p_two;                     // two steps of the port's row remain (pooled)
    /* verilator lint_off UNUSEDSIGNAL */
    /* verilator lint_off UNDRIVEN */
    wire [VW-1:0]        px  [0:2*WP-1];        // pooled: each op slot's input vector and tile (unpooled: unused)
    wire [TILE_BITS-1:0] ptl [0:2*WP-1];
    /* verilator lint_on UNDRIVEN */
    reg  [32*N-1:0]      pool_r [0:2*WP-1];     // ... and its block sums, a cycle later
    /* verilator lint_on UNUSEDSIGNAL */
    wire [WP-1:0]    p_busy;                    // rows remain, or are in the port's engines or pipeline
    wire [WP-1:0]    p_tile_bad;                // a tile loaded in another mode than the chain's
    wire [WP-1:0]    pw_valid;                  // the port's row leaves its pipeline this cycle ...
    wire [VA-1:0]    pw_addr [0:WP-1];          // ... for this address
    wire [VW-1:0]    pw_data [0:WP-1];

    // who reads or issues: a port whose row has no write credit waits; reductions without the MVU read one
    // vector per bank per cycle (a port whose bank another took this cycle waits)
    reg [WP-1:0]   rd_taken;
    reg [WP_B-1:0] pk;
    integer k, budget;
    always @* begin
        rd_taken = {WP{1'b0}};
        p_go = {WP{1'b0}};
        p_n = {2*WP{1'b0}};
        budget = TILES;
        for (k = 0; k < WP; k = k + 1) begin
            /* verilator lint_off WIDTH */
            pk = rot + k;
            /* verilator lint_on WIDTH */
            if (p_want[pk] && (!p_row_start[pk] || p_credit[pk]) && (has_mvu || !rd_taken[p_rbank[pk]])) begin
                if (POOL != 0 && has_mvu) begin
                    // the pooled engines: at most TILES ops this cycle over the ports, up to two a port
                    if (budget > 0) begin
                        p_go[pk] = 1'b1;
                        if (p_two[pk] && budget > 1) begin
                            p_n[2 * pk +: 2] = 2'd2;
                            budget = budget - 2;
                        end else begin
                            p_n[2 * pk +: 2] = 2'd1;
                            budget = budget - 1;
                        end
                    end
                end else begin
                    p_go[pk] = 1'b1;
                    p_n[2 * pk +: 2] = 2'd1;
                    if (!has_mvu) rd_taken[p_rbank[pk]] = 1'b1;
                end
            end
        end
    end

    genvar gp, gm, ge, g, gs, gl;
    generate
        for (gp = 0; gp < WP; gp = gp + 1) begin : port
            // ---- issue: the loop counters ------------------------------------------------------------
            reg [11:0] i0, i1, rr, j0, j1, cc;
            reg [31:0] jflat;                  // index of the reduction step (tile column)
            reg        issuing;                // reads remain
            reg [36:0] first_row, next_row;    // this port's first row; its row after the current one
            integer s;
            always @* begin
                first_row = 37'd0;
                for (s = 0; s < gp; s = s + 1) first_row = row_next(first_row, n0, n1, r_n);
                next_row = {1'b0, i0, i1, rr};
                for (s = 0; s < WP; s = s + 1) next_row = row_next(next_row, n0, n1, r_n);
            end

            /* verilator lint_off UNUSEDSIGNAL */
            wire signed [31:0] rd_addr = $signed({12'd0, rd_base}) + u32(i0) * rd_sn0 + u32(i1) * rd_sn1 +
                                         u32(j0) * rd_sk0 + u32(j1) * rd_sk1 + u32(cc) +
                                         (has_mvu ? 32'sd0 : u32(rr) * rd_sr);
            wire [31:0] k_total = {20'd0, k0} * {20'd0, k1} * {20'd0, cc_n};
            wire [31:0] tile_index = {16'd0, mbase} + {20'd0, rr} * k_total + jflat;
            /* verilator lint_on UNUSEDSIGNAL */
            wire [VW-1:0]        x_vec = vrf[rd_addr[VA-1:0]];
            wire [TILE_BITS-1:0] tile = mrf[tile_index[$clog2(MRF_TILES)-1:0]];
            wire [2:0]           tile_mode = mrf_mode[tile_index[$clog2(MRF_TILES)-1:0]];
            wire first_j = (jflat == 32'd0);
            wire last_j = (cc == cc_n - 1) && (j1 == k1 - 1) && (j0 == k0 - 1);
            wire [35:0] row_idx = {i0, i1, rr};
            // the row's next reduction step (a pooled port's second op this cycle) and the one after it
            wire [35:0] step_b = step_next({j0, j1, cc}, k1, cc_n);
            wire [35:0] step_c = step_next(step_b, k1, cc_n);
            /* verilator lint_off UNUSEDSIGNAL */
            wire signed [31:0] rd_addr_b = $signed({12'd0, rd_base}) + u32(i0) * rd_sn0 + u32(i1) * rd_sn1 +
                                           u32(step_b[35:24]) * rd_sk0 + u32(step_b[23:12]) * rd_sk1 +
                                           u32(step_b[11:0]);
            wire [31:0] tile_index_b = tile_index + 32'd1;
            /* verilator lint_on UNUSEDSIGNAL */
            /* verilator lint_off UNUSEDSIGNAL */
            wire [VW-1:0]        x_vec_b = vrf[rd_addr_b[VA-1:0]];
            wire [TILE_BITS-1:0] tile_b = mrf[tile_index_b[$clog2(MRF_TILES)-1:0]];
            /* verilator lint_on UNUSEDSIGNAL */
            wire [2:0]           tile_mode_b = mrf_mode[tile_index_b[$clog2(MRF_TILES)-1:0]];
            wire last_b = (step_b[11:0] == cc_n - 1) && (step_b[23:12] == k1 - 1) && (step_b[35:24] == k0 - 1);
            wire two = p_n[2 * gp +: 2] == 2'd2;
            assign p_two[gp] = !last_j;
            wire issue_mvu = p_go[gp] && has_mvu;
            wire read_now = p_go[gp] && !has_mvu;
            assign p_want[gp] = (state == S_RUN) && issuing && (!has_mvu || {{(32 - PH_W){1'b0}}, ph} < TP);
            assign p_row_start[gp] = first_j;
            assign p_rbank[gp] = bank_of(rd_addr[VA-1:0]);
            assign p_wbank[gp] = bank_of(write_address(row_idx));
            assign p_tile_bad[gp] = issue_mvu && (tile_mode != cmode || (two && tile_mode_b != cmode));

            // ---- MVU: input conversion and the port's tile engines, one set per format mode ----------------
            wire [32*N-1:0] fin_p, fin_p2;          // the block sums arriving this cycle (fin_p2: pooled, second op)
            wire            fin_any, fin_two, fin_first, fin_last, eng_pending;
            wire [35:0]     fin_idx;
            if (POOL == 0) begin : own
            wire [TP-1:0]   mode_busy [0:MODES-1];
            wire [TP-1:0]   mode_fin [0:MODES-1];
            wire [32*N-1:0] mode_p [0:MODES*TP-1];
            reg             eng_first [0:TP-1];
            reg             eng_last [0:TP-1];
            reg  [35:0]     eng_idx [0:TP-1];
            for (gm = 0; gm < MODES; gm = gm + 1) begin : mode
`include "npu_mode_fields.vh"
                wire [N*E_BITS-1:0]   x_codes;
                wire [SCALE_BITS-1:0] x_scale;
                wire [TP-1:0]         busy_m, fin_m;
                assign mode_busy[gm] = busy_m;
                assign mode_fin[gm] = fin_m;
                npu_block_quantize #(.B(N), .FMT(FMT), .KIND(KIND), .E_BITS(E_BITS), .M_BITS(M_BITS), .F_BITS(F_BITS),
                                     .EXP_BITS(EXP_BITS), .EXP_BIAS(EXP_BIAS), .ELEM_SPECIAL(ELEM_SPECIAL),
                                     .SCALE_BITS(SCALE_BITS), .SCALE_BIAS(SCALE_BIAS), .EMAX(EMAX))
                    quantize (.x(x_vec), .codes(x_codes), .scale(x_scale));
                for (ge = 0; ge < TP; ge = ge + 1) begin : engine
                    npu_tile_engine #(.N(N), .L(LANES), .KIND(KIND), .E_BITS(E_BITS), .M_BITS(M_BITS), .F_BITS(F_BITS),
                                      .EXP_BITS(EXP_BITS), .ELEM_SPECIAL(ELEM_SPECIAL), .SCALE_BITS(SCALE_BITS),
                                      .SCALE_BIAS(SCALE_BIAS), .TILE_BITS(TB)) te (
                        .clk(clk), .rst(rst),
                        .issue(issue_mvu && {29'd0, cmode} == gm && ({{(32 - PH_W){1'b0}}, ph} == ge)),
                        .x_codes(x_codes), .x_scale(x_scale), .tile(tile[TB-1:0]),
                        .busy(busy_m[ge]), .finishing(fin_m[ge]), .p(mode_p[gm * TP + ge]));
                end
            end

            // the engines of every mode, merged (only the chain's mode is ever issued to, and a chain drains
            // before the next one starts)
            reg [TP-1:0]    eng_busy, eng_fin;
            reg [32*N-1:0]  eng_p [0:TP-1];
            integer em, et;
            always @* begin
                eng_busy = {TP{1'b0}};
                eng_fin = {TP{1'b0}};
                for (et = 0; et < TP; et = et + 1) eng_p[et] = {32*N{1'b0}};
                for (em = 0; em < MODES; em = em + 1) begin
                    eng_busy = eng_busy | mode_busy[em];
                    eng_fin = eng_fin | mode_fin[em];
                    for (et = 0; et < TP; et = et + 1)
                        if (mode_fin[em][et]) eng_p[et] = mode_p[em * TP + et];
                end
            end

            // the engine finishing this cycle (at most one: they are a cycle apart)
            reg [32*N-1:0] f_p;
            reg            f_any, f_first, f_last;
            reg [35:0]     f_idx;
            integer fe;
            always @* begin
                f_p = {32*N{1'b0}};
                f_any = 1'b0; f_first = 1'b0; f_last = 1'b0; f_idx = 36'd0;
                for (fe = 0; fe < TP; fe = fe + 1)
                    if (eng_fin[fe]) begin
                        f_p = eng_p[fe];
                        f_any = 1'b1; f_first = eng_first[fe]; f_last = eng_last[fe]; f_idx = eng_idx[fe];
                    end
            end
            assign fin_p = f_p;
            assign fin_p2 = {32*N{1'b0}};
            assign fin_any = f_any;
            assign fin_two = 1'b0;
            assign fin_first = f_first;
            assign fin_last = f_last;
            assign fin_idx = f_idx;
            assign eng_pending = eng_busy != {TP{1'b0}};
            integer q2;
            always @(posedge clk)
                for (q2 = 0; q2 < TP; q2 = q2 + 1)
                    if (issue_mvu && {{(32 - PH_W){1'b0}}, ph} == q2) begin
                        eng_first[q2] <= first_j;
                        eng_last[q2] <= last_j;
                        eng_idx[q2] <= row_idx;
                    end
            end else begin : pooled
            // the op slots' operands go to the pool (below); its block sums come back a cycle later
            reg         pv0, pv1, pfirst, plast;
            reg [35:0]  pidx;
            assign px[2 * gp] = x_vec;
            assign px[2 * gp + 1] = x_vec_b;
            assign ptl[2 * gp] = tile;
            assign ptl[2 * gp + 1] = tile_b;
            assign fin_p = pool_r[2 * gp];
            assign fin_p2 = pool_r[2 * gp + 1];
            assign fin_any = pv0;
            assign fin_two = pv1;
            assign fin_first = pfirst;
            assign fin_last = plast;
            assign fin_idx = pidx;
            assign eng_pending = pv0;
            always @(posedge clk) begin
                pv0 <= issue_mvu;
                pv1 <= issue_mvu && p_n[2 * gp +: 2] == 2'd2;
                pfirst <= first_j;
                plast <= (p_n[2 * gp +: 2] == 2'd2) ? last_b : last_j;
                pidx <= row_idx;
                if (rst) begin
                    pv0 <= 1'b0;
                    pv1 <= 1'b0;
                end
            end
            end

            // ---- combine: binary32 accumulation in reduction order, reductions without the MVU ------------
            // (npu_combine_lane: the accumulators, the running max (reduce = max) and the row entering the MFUs)
            wire row_valid = has_mvu ? (fin_any && fin_last) : (read_now && last_j);
            wire [VW-1:0] em_val;                   // the rounded row, entering stage 0 (valid with em_valid)
            for (g = 0; g < N; g = g + 1) begin : lane
                npu_combine_lane #(.FMT(FMT)) combine (
                    .clk(clk), .acc_en(has_mvu ? fin_any : read_now), .acc2_en(has_mvu && fin_two),
                    .max_en(read_now), .row_en(row_valid),
                    .first(has_mvu ? fin_first : first_j), .use_p(has_mvu), .sel_acc(has_mvu || reduce == 2'd1),
                    .sel_max(reduce == 2'd2 && !first_j), .x(x_vec[EW * g +: EW]), .p(fin_p[32 * g +: 32]),
                    .p2(fin_p2[32 * g +: 32]),
                    .z(em_val[EW * g +: EW]));
            end

            // ---- the MFU pipeline -----------------------------------------------------------------------
            // stage gs's lanes (npu_mfu_mul, _add, _act) hold its output register sval[gs]; they compute only in
            // the cycle their input is valid
            reg              em_valid;
            reg [35:0]       em_idx;
            reg              sv [0:STAGES-1];
            wire [VW-1:0]    sval [0:STAGES-1];
            reg [35:0]       sidx [0:STAGES-1];
            wire [VW-1:0]    s_in [0:STAGES-1];
            for (gs = 0; gs < STAGES; gs = gs + 1) begin : stage
                wire [35:0] idx = (gs == 0) ? em_idx : sidx[gs - 1];
                wire        in_valid = (gs == 0) ? em_valid : sv[gs - 1];
                /* verilator lint_off UNUSEDSIGNAL */
                wire signed [31:0] y_addr = $signed({12'd0, st_base[gs]}) + u32(idx[35:24]) * st_sn0[gs] +
                                            u32(idx[23:12]) * st_sn1[gs] + u32(idx[11:0]) * st_sr[gs];
                /* verilator lint_on UNUSEDSIGNAL */
                wire [EW-1:0] scalar = fp32_to_mfu(sregs[st_sreg[gs]]);
                wire is_vs = st_op[gs] == OP_VS_ADD || st_op[gs] == OP_VS_MUL || st_op[gs] == OP_VS_MAX ||
                             st_op[gs] == OP_VS_MIN;
                /* verilator lint_off UNUSEDSIGNAL */
                wire [VW-1:0] y = is_vs ? {N{scalar}} : vrf[y_addr[VA-1:0]];     // (activations take no operand)
                /* verilator lint_on UNUSEDSIGNAL */
                assign s_in[gs] = (gs == 0) ? em_val : sval[gs - 1];
                for (gl = 0; gl < N; gl = gl + 1) begin : l
                    if (gs % 3 == 0) begin : mul
                        npu_mfu_mul #(.FMT(FMT)) u (.clk(clk), .en(in_valid), .op(st_op[gs]), .x(s_in[gs][EW * gl +: EW]),
                                                    .y(y[EW * gl +: EW]), .z(sval[gs][EW * gl +: EW]));
                    end else if (gs % 3 == 1) begin : add
                        npu_mfu_add #(.FMT(FMT)) u (.clk(clk), .en(in_valid), .op(st_op[gs]), .x(s_in[gs][EW * gl +: EW]),
                                                    .y(y[EW * gl +: EW]), .z(sval[gs][EW * gl +: EW]));
                    end else begin : act
                        npu_mfu_act #(.FMT(FMT)) u (.clk(clk), .en(in_valid), .op(st_op[gs]), .x(s_in[gs][EW * gl +: EW]),
                                                    .z(sval[gs][EW * gl +: EW]));
                    end
                end
            end

            // ---- the row leaving the port's pipeline ---------------------------------------------------------
            reg          wv;
            reg [VW-1:0] wval;
            reg [35:0]   widx;
            integer ws;
            always @* begin
                wv = em_valid; wval = em_val; widx = em_idx;
                for (ws = 0; ws < STAGES; ws = ws + 1)
                    if (mfus_used != 0 && ws == 3 * mfus_used - 1) begin
                        wv = sv[ws]; wval = sval[ws]; widx = sidx[ws];
                    end
            end
            assign pw_valid[gp] = wv;
            assign pw_addr[gp] = write_address(widx);
            assign pw_data[gp] = wval;

            reg any_stage;
            integer as;
            always @* begin
                any_stage = 1'b0;
                for (as = 0; as < STAGES; as = as + 1) any_stage = any_stage | sv[as];
            end
            assign p_busy[gp] = issuing || eng_pending || em_valid || any_stage;

            integer q;
            always @(posedge clk) begin
                // the pipeline moves every cycle (the values: npu_combine_lane and the MFU lanes)
                em_valid <= row_valid;
                em_idx <= has_mvu ? fin_idx : row_idx;
                for (q = 0; q < STAGES; q = q + 1) begin
                    sv[q] <= (q == 0) ? em_valid : sv[q - 1];
                    sidx[q] <= (q == 0) ? em_idx : sidx[q - 1];
                end
                if (rst) begin
                    issuing <= 1'b0;
                    em_valid <= 1'b0;
                    for (q = 0; q < STAGES; q = q + 1) sv[q] <= 1'b0;
                end else if (chain_start) begin
                    {i0, i1, rr} <= first_row[35:0];
                    j0 <= 12'd0; j1 <= 12'd0; cc <= 12'd0; jflat <= 32'd0;
                    issuing <= !first_row[36];
                end else if (p_go[gp]) begin
                    // advance the loops: reduction steps (j0, j1, cc), then this port's rows (WP apart)
                    if (two && !last_b) begin          // (pooled) two steps of the row
                        jflat <= jflat + 2;
                        {j0, j1, cc} <= step_c;
                    end else if (!(two ? last_b : last_j)) begin
                        jflat <= jflat + 1;
                        if (cc != cc_n - 1) cc <= cc + 1;
                        else begin
                            cc <= 0;
                            if (j1 != k1 - 1) j1 <= j1 + 1;
                            else begin
                                j1 <= 0;
                                j0 <= j0 + 1;
                            end
                        end
                    end else begin
                        jflat <= 0; cc <= 0; j1 <= 0; j0 <= 0;
                        if (next_row[36]) issuing <= 1'b0;
                        {i0, i1, rr} <= next_row[35:0];
                    end
                end
            end
        end
    endgenerate

    // ---- the pooled tile engines (POOL) ---------------------------------------------------------------
    // This cycle's granted ops, in round-robin port order (a port's first op before its second), take engines
    // 0, 1, 2, ...; each engine remembers its op slot and hands its block sums back to it when it finishes
    // (one cycle later at N/LANES = 1).
    generate
        if (POOL != 0) begin : pool
            reg [TILES-1:0] e_issue;
            reg [OS_W-1:0]  e_sel [0:TILES-1];
            reg [OS_W-1:0]  e_tag [0:TILES-1];
            reg [OS_W-1:0]  os;
            reg [WP_B-1:0]  pk2;
            integer pa, ps, pe, cnt;
            always @* begin
                e_issue = {TILES{1'b0}};
                os = {OS_W{1'b0}};
                pk2 = {WP_B{1'b0}};
                for (pe = 0; pe < TILES; pe = pe + 1) e_sel[pe] = {OS_W{1'b0}};
                cnt = 0;
                for (pa = 0; pa < WP; pa = pa + 1) begin
                    /* verilator lint_off WIDTH */
                    pk2 = rot + pa;
                    /* verilator lint_on WIDTH */
                    for (ps = 0; ps < 2; ps = ps + 1)
                        if (has_mvu && p_go[pk2] && ps < {30'd0, p_n[2 * pk2 +: 2]}) begin
                            /* verilator lint_off WIDTH */
                            os = 2 * pk2 + ps;
                            /* verilator lint_on WIDTH */
                            for (pe = 0; pe < TILES; pe = pe + 1)
                                if (pe == cnt) begin
                                    e_issue[pe] = 1'b1;
                                    e_sel[pe] = os;
                                end
                            cnt = cnt + 1;
                        end
                end
            end
            wire [TILES-1:0] mode_fin [0:MODES-1];
            wire [32*N-1:0]  mode_p [0:MODES*TILES-1];
            for (gm = 0; gm < MODES; gm = gm + 1) begin : mode
`include "npu_mode_fields.vh"
                wire [TILES-1:0] fin_m;
                assign mode_fin[gm] = fin_m;
                for (ge = 0; ge < TILES; ge = ge + 1) begin : engine
                    wire [N*E_BITS-1:0]   x_codes;
                    wire [SCALE_BITS-1:0] x_scale;
                    /* verilator lint_off UNUSEDSIGNAL */
                    wire [TILE_BITS-1:0]  tile = ptl[e_sel[ge]];
                    wire                  busy_e;
                    /* verilator lint_on UNUSEDSIGNAL */
                    npu_block_quantize #(.B(N), .FMT(FMT), .KIND(KIND), .E_BITS(E_BITS), .M_BITS(M_BITS),
                                         .F_BITS(F_BITS), .EXP_BITS(EXP_BITS), .EXP_BIAS(EXP_BIAS),
                                         .ELEM_SPECIAL(ELEM_SPECIAL), .SCALE_BITS(SCALE_BITS),
                                         .SCALE_BIAS(SCALE_BIAS), .EMAX(EMAX))
                        quantize (.x(px[e_sel[ge]]), .codes(x_codes), .scale(x_scale));
                    npu_tile_engine #(.N(N), .L(LANES), .KIND(KIND), .E_BITS(E_BITS), .M_BITS(M_BITS), .F_BITS(F_BITS),
                                      .EXP_BITS(EXP_BITS), .ELEM_SPECIAL(ELEM_SPECIAL), .SCALE_BITS(SCALE_BITS),
                                      .SCALE_BIAS(SCALE_BIAS), .TILE_BITS(TB)) te (
                        .clk(clk), .rst(rst), .issue(e_issue[ge] && {29'd0, cmode} == gm),
                        .x_codes(x_codes), .x_scale(x_scale), .tile(tile[TB-1:0]),
                        .busy(busy_e), .finishing(fin_m[ge]), .p(mode_p[gm * TILES + ge]));
                end
            end

            integer pt, pq, pm, po;
            always @(posedge clk)
                for (pt = 0; pt < TILES; pt = pt + 1)
                    if (e_issue[pt]) e_tag[pt] <= e_sel[pt];
            always @* begin
                for (po = 0; po < 2 * WP; po = po + 1) pool_r[po] = {32*N{1'b0}};
                for (pq = 0; pq < TILES; pq = pq + 1)
                    for (pm = 0; pm < MODES; pm = pm + 1)
                        if (mode_fin[pm][pq]) pool_r[e_tag[pq]] = mode_p[pm * TILES + pq];
            end
        end else begin : no_pool
            integer po;
            always @* for (po = 0; po < 2 * WP; po = po + 1) pool_r[po] = {32*N{1'b0}};
        end
    endgenerate

    // ---- write: the vector memory's banks ---------------------------------------------------------------
    // Bank b (addresses = b mod WP) takes one row a cycle.  With one port the row goes straight in.  With
    // more, each (port, bank) pair has a write queue of WQ rows; a bank takes a row from the queue of the
    // first port in round-robin order that has one, or straight from a port's pipeline when that port's
    // queue for the bank is empty.  A port starts a row only with a credit for its bank's queue (rows in
    // flight plus queued < WQ), so the pipelines never stall.
    wire [WP-1:0]   bank_v;
    wire [VA-1:0]   bank_addr [0:WP-1];
    wire [VW-1:0]   bank_data [0:WP-1];
    wire            queues_empty;
    generate
        if (WP == 1) begin : direct
            assign bank_v[0] = pw_valid[0];
            assign bank_addr[0] = pw_addr[0];
            assign bank_data[0] = pw_data[0];
            assign p_credit = 1'b1;
            assign queues_empty = 1'b1;
        end else begin : queued
            localparam integer WQ = 1 << $clog2(CPT + 3 * MFUS + 8);     // rows in flight to cover
            localparam integer WQ_B = $clog2(WQ);
            localparam integer NQ = WP * WP;
            /* verilator lint_off WIDTHEXPAND */
            reg [VA-1:0]   qa [0:NQ*WQ-1];
            reg [VW-1:0]   qd [0:NQ*WQ-1];
            reg [WQ_B-1:0] head [0:NQ-1];
            reg [WQ_B-1:0] tail [0:NQ-1];
            reg [WQ_B:0]   fill [0:NQ-1];
            reg [WQ_B:0]   credit [0:NQ-1];
            reg [WP-1:0]   gv, gbyp;                 // per bank: a row goes in; it comes straight from a pipeline
            reg [WP_B-1:0] gport [0:WP-1];           // ... from this port
            reg [VA-1:0]   ga [0:WP-1];
            reg [VW-1:0]   gd [0:WP-1];
            reg [WP-1:0]   cr;
            reg [WP_B-1:0] ap;
            reg            empty;
            integer b, a, n;
            always @* begin
                for (b = 0; b < WP; b = b + 1) begin
                    gv[b] = 1'b0; gbyp[b] = 1'b0; gport[b] = {WP_B{1'b0}};
                    ga[b] = {VA{1'b0}}; gd[b] = {VW{1'b0}};
                    for (a = 0; a < WP; a = a + 1) begin
                        /* verilator lint_off WIDTHTRUNC */
                        ap = rot + a;
                        /* verilator lint_on WIDTHTRUNC */
                        if (!gv[b]) begin
                            if (fill[ap * WP + b] != 0) begin
                                gv[b] = 1'b1; gport[b] = ap;
                                ga[b] = qa[(ap * WP + b) * WQ + head[ap * WP + b]];
                                gd[b] = qd[(ap * WP + b) * WQ + head[ap * WP + b]];
                            end else if (pw_valid[ap] && pw_addr[ap][WP_B-1:0] == b) begin
                                gv[b] = 1'b1; gbyp[b] = 1'b1; gport[b] = ap;
                                ga[b] = pw_addr[ap]; gd[b] = pw_data[ap];
                            end
                        end
                    end
                end
                for (a = 0; a < WP; a = a + 1) cr[a] = credit[a * WP + p_wbank[a]] < WQ;
                empty = 1'b1;
                for (n = 0; n < NQ; n = n + 1) empty = empty && fill[n] == 0;
            end
            for (gp = 0; gp < WP; gp = gp + 1) begin : out
                assign bank_v[gp] = gv[gp];
                assign bank_addr[gp] = ga[gp];
                assign bank_data[gp] = gd[gp];
            end
            assign p_credit = cr;
            assign queues_empty = empty;

            reg enq, deq, rel, res;
            integer qp, qb;
            /* verilator lint_off BLKSEQ */
            always @(posedge clk) begin
                for (qp = 0; qp < WP; qp = qp + 1)
                    for (qb = 0; qb < WP; qb = qb + 1) begin
                        enq = pw_valid[qp] && pw_addr[qp][WP_B-1:0] == qb && !(gbyp[qb] && gport[qb] == qp);
                        deq = gv[qb] && !gbyp[qb] && gport[qb] == qp;
                        rel = gv[qb] && gport[qb] == qp;
                        res = p_go[qp] && p_row_start[qp] && p_wbank[qp] == qb;
                        if (enq) begin
                            qa[(qp * WP + qb) * WQ + tail[qp * WP + qb]] <= pw_addr[qp];
                            qd[(qp * WP + qb) * WQ + tail[qp * WP + qb]] <= pw_data[qp];
                            tail[qp * WP + qb] <= tail[qp * WP + qb] + 1'b1;
                        end
                        if (deq) head[qp * WP + qb] <= head[qp * WP + qb] + 1'b1;
                        fill[qp * WP + qb] <= fill[qp * WP + qb] + {{WQ_B{1'b0}}, enq} - {{WQ_B{1'b0}}, deq};
                        credit[qp * WP + qb] <= credit[qp * WP + qb] + {{WQ_B{1'b0}}, res} - {{WQ_B{1'b0}}, rel};
                        if (rst) begin
                            head[qp * WP + qb] <= {WQ_B{1'b0}};
                            tail[qp * WP + qb] <= {WQ_B{1'b0}};
                            fill[qp * WP + qb] <= {(WQ_B + 1){1'b0}};
                            credit[qp * WP + qb] <= {(WQ_B + 1){1'b0}};
                        end
                    end
            end
            /* verilator lint_on BLKSEQ */
            /* verilator lint_on WIDTHEXPAND */
        end
    endgenerate

    wire drained = p_busy == {WP{1'b0}} && queues_empty;

    // ---- control ------------------------------------------------------------------------------------

    wire [1:0]      cap_slot = slot_of(ins[5:0]);
    wire [ST_W-1:0] cap_unit = (cap_slot < slot_next) ? unit_now + 1'b1 : unit_now;
    /* verilator lint_off WIDTHEXPAND */
    wire [ST_W+1:0] cap_stage = cap_unit * 3 + cap_slot;
    /* verilator lint_on WIDTHEXPAND */

    integer q, wb;
    always @(posedge clk) begin
        if (imem_we) imem[imem_addr] <= imem_wdata;
        if (mrf_we) begin
            mrf[mrf_addr] <= mrf_wdata;
            mrf_mode[mrf_addr] <= mrf_wmode;
        end
        if (vrf_we) vrf[vrf_addr] <= vrf_wdata;            // back door, or the load DMA
        for (wb = 0; wb < WP; wb = wb + 1)                   // the banks' writes (distinct banks)
            if (bank_v[wb])
                for (q = 0; q < N; q = q + 1)
                    if (q >= wr_lo && (wr_hi == 0 || q < wr_hi))
                        vrf[bank_addr[wb]][EW * q +: EW] <= canonical(bank_data[wb][EW * q +: EW]);
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
            rot <= {WP_B{1'b0}};
            for (q = 0; q < 16; q = q + 1) sregs[q] <= 32'd0;
        end else begin
            if (busy) cycles <= cycles + 32'd1;
            if (WP > 1) rot <= rot + 1'b1;
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
                            unit_now <= {ST_W{1'b0}};
                            slot_next <= 2'd0;
                            mfus_used <= {ST_W{1'b0}};
                            for (q = 0; q < STAGES; q = q + 1) st_op[q] <= OP_NOP;
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
                            cmode <= ins[MV_MUL_FMT_LSB +: 3];
                            // an MVU format mode the machine does not have
                            if ({29'd0, ins[MV_MUL_FMT_LSB +: 3]} >= MODES) error <= 1'b1;
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
                            ph <= {PH_W{1'b0}};               // (the ports start their loops: chain_start)
                            state <= S_RUN;
                        end
                        default: begin                                  // an MFU op: place it on its stage
                            if ({{(32 - ST_W){1'b0}}, cap_unit} < MFUS) begin
                                for (q = 0; q < STAGES; q = q + 1)
                                    if ({{(30 - ST_W){1'b0}}, cap_stage} == q) begin
                                        st_op[q] <= ins[5:0];
                                        st_base[q] <= ins[VV_ADD_BASE_LSB +: 20];
                                        st_sn0[q] <= sfield16(ins, VV_ADD_S_N0_LSB);
                                        st_sn1[q] <= sfield16(ins, VV_ADD_S_N1_LSB);
                                        st_sr[q] <= sfield16(ins, VV_ADD_S_R_LSB);
                                        st_sreg[q] <= ins[VS_ADD_SREG_LSB +: 4];
                                    end
                                unit_now <= cap_unit;
                                slot_next <= cap_slot + 2'd1;
                                mfus_used <= cap_unit + 1'b1;
                            end else error <= 1'b1;
                        end
                    endcase
                end
                S_RUN: begin
                    // a chain multiplying a tile loaded in another mode (the simulator's SimulationError)
                    if (p_tile_bad != {WP{1'b0}}) error <= 1'b1;
                    ph <= ({{(32 - PH_W){1'b0}}, ph} == CPT - 1) ? {PH_W{1'b0}} : ph + 1'b1;
                    if (drained) begin
                        push_c2l <= end_signals[0];
                        push_c2s <= end_signals[1];
                        state <= S_FETCH;
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
