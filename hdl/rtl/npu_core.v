// The NPU core: the load, compute and store streams of one program, ordered only by the four
// dependency-token queues (docs/isa.md), with an AXI4 master to external memory (DRAM).  The program
// is written into the streams' instruction memories through the back door; `start` runs it and `done`
// rises when every stream has reached halt.
module npu_core #(
    parameter integer N = 32,
    parameter integer TILES = 2,
    parameter integer LANES = 8,
    parameter integer MFUS = 2,
    parameter integer WP = 1,                  // write ports (docs/architecture.md "RTL")
    parameter integer VRF_DEPTH = 4096,
    parameter integer MRF_TILES = 256,
    parameter integer IMEM_DEPTH = 4096,
    parameter integer FMT = 0,
    // MVU format modes (mixed precision, docs/architecture.md): MODES of them, mode m's block format
    // descriptor (npu_block_format.vh) in bits [16m +: 16] of each MODE_* vector (hdl/core.py packs them)
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
    parameter [127:0] MODE_EMAX = 128'd0
) (
    input  wire                 clk,
    input  wire                 rst,
    input  wire                 start,
    output wire                 done,
    output wire                 error,
    output reg  [31:0]          cycles,
    input  wire                 imem_we,
    input  wire [$clog2(IMEM_DEPTH)-1:0] imem_addr,
    input  wire [127:0]         imem_wdata,
    // AXI4 master (one ID: every burst is issued in order)
    output wire [0:0]           m_axi_arid,
    output wire [0:0]           m_axi_awid,
    /* verilator lint_off UNUSEDSIGNAL */
    input  wire [0:0]           m_axi_rid,
    input  wire [0:0]           m_axi_bid,
    /* verilator lint_on UNUSEDSIGNAL */
    output wire [31:0]          m_axi_araddr,
    output wire [7:0]           m_axi_arlen,
    output wire [2:0]           m_axi_arsize,
    output wire [1:0]           m_axi_arburst,
    output wire                 m_axi_arvalid,
    input  wire                 m_axi_arready,
    input  wire [127:0]         m_axi_rdata,
    input  wire [1:0]           m_axi_rresp,
    input  wire                 m_axi_rlast,
    input  wire                 m_axi_rvalid,
    output wire                 m_axi_rready,
    output wire [31:0]          m_axi_awaddr,
    output wire [7:0]           m_axi_awlen,
    output wire [2:0]           m_axi_awsize,
    output wire [1:0]           m_axi_awburst,
    output wire                 m_axi_awvalid,
    input  wire                 m_axi_awready,
    output wire [127:0]         m_axi_wdata,
    output wire [15:0]          m_axi_wstrb,
    output wire                 m_axi_wlast,
    output wire                 m_axi_wvalid,
    input  wire                 m_axi_wready,
    input  wire [1:0]           m_axi_bresp,
    input  wire                 m_axi_bvalid,
    output wire                 m_axi_bready
);
    // the widest packed tile among the modes
    function automatic integer max_tile_bits(input integer dummy);
        integer m, b;
        begin
            max_tile_bits = dummy;
            for (m = 0; m < MODES; m = m + 1) begin
                b = 8 * (N + N * N * MODE_E_BITS[16 * m +: 16] / 8);
                if (b > max_tile_bits) max_tile_bits = b;
            end
        end
    endfunction
    localparam integer TILE_BITS = max_tile_bits(0);
    localparam integer EW = (FMT == 2) ? 32 : 16;   // bits per vector element (the MFU format)

    // ---- token queues: counts of pushed-but-not-popped tokens --------------------------------------
    reg [7:0] l2c, c2l, c2s, s2c;
    wire push_l2c, pop_l2c, push_c2l, pop_c2l, push_c2s, pop_c2s, push_s2c, pop_s2c;
    always @(posedge clk) begin
        if (rst) begin
            l2c <= 0; c2l <= 0; c2s <= 0; s2c <= 0;
        end else begin
            l2c <= l2c + {7'd0, push_l2c} - {7'd0, pop_l2c};
            c2l <= c2l + {7'd0, push_c2l} - {7'd0, pop_c2l};
            c2s <= c2s + {7'd0, push_c2s} - {7'd0, pop_c2s};
            s2c <= s2c + {7'd0, push_s2c} - {7'd0, pop_s2c};
        end
    end

    // ---- streams -----------------------------------------------------------------------------------
    wire busy, c_error, l_error, s_error, l_halted, s_halted;
    /* verilator lint_off UNUSEDSIGNAL */
    wire [31:0] c_cycles;                      // the compute stream's own count (the core counts the whole run)
    /* verilator lint_on UNUSEDSIGNAL */
    wire vrf_we, mrf_we;
    wire [$clog2(VRF_DEPTH)-1:0] vrf_waddr, vrf_raddr2;
    wire [EW*N-1:0] vrf_wdata, vrf_rdata2;
    wire [$clog2(MRF_TILES)-1:0] mrf_waddr;
    wire [TILE_BITS-1:0] mrf_wdata;
    wire [2:0] mrf_wmode;
    reg running;
    /* verilator lint_off UNUSEDSIGNAL */
    wire [EW*N-1:0] vrf_rdata_unused;
    /* verilator lint_on UNUSEDSIGNAL */

    npu_compute #(.N(N), .TILES(TILES), .LANES(LANES), .MFUS(MFUS), .WP(WP), .VRF_DEPTH(VRF_DEPTH), .MRF_TILES(MRF_TILES),
                  .IMEM_DEPTH(IMEM_DEPTH), .FMT(FMT), .MODES(MODES), .MODE_KIND(MODE_KIND), .MODE_E_BITS(MODE_E_BITS),
                  .MODE_M_BITS(MODE_M_BITS), .MODE_F_BITS(MODE_F_BITS), .MODE_EXP_BITS(MODE_EXP_BITS),
                  .MODE_EXP_BIAS(MODE_EXP_BIAS), .MODE_ELEM_SPECIAL(MODE_ELEM_SPECIAL), .MODE_SCALE_BITS(MODE_SCALE_BITS),
                  .MODE_SCALE_BIAS(MODE_SCALE_BIAS), .MODE_EMAX(MODE_EMAX), .EW(EW), .TILE_BITS(TILE_BITS)) compute (
        .clk(clk), .rst(rst), .start(start), .busy(busy), .error(c_error), .cycles(c_cycles),
        .l2c_ready(l2c != 0), .s2c_ready(s2c != 0), .pop_l2c(pop_l2c), .pop_s2c(pop_s2c),
        .push_c2l(push_c2l), .push_c2s(push_c2s),
        .imem_we(imem_we), .imem_addr(imem_addr), .imem_wdata(imem_wdata),
        .vrf_we(vrf_we), .vrf_addr(vrf_waddr), .vrf_wdata(vrf_wdata), .vrf_rdata(vrf_rdata_unused),
        .vrf_raddr2(vrf_raddr2), .vrf_rdata2(vrf_rdata2),
        .mrf_we(mrf_we), .mrf_addr(mrf_waddr), .mrf_wdata(mrf_wdata), .mrf_wmode(mrf_wmode));

    npu_dma_load #(.N(N), .EW(EW), .VRF_DEPTH(VRF_DEPTH), .MRF_TILES(MRF_TILES), .IMEM_DEPTH(IMEM_DEPTH),
                   .TILE_BITS(TILE_BITS), .MODES(MODES), .MODE_E_BITS(MODE_E_BITS)) load (
        .clk(clk), .rst(rst), .start(start), .imem_we(imem_we), .imem_waddr(imem_addr), .imem_wdata(imem_wdata),
        .halted(l_halted), .error(l_error), .c2l_ready(c2l != 0), .pop_c2l(pop_c2l), .push_l2c(push_l2c),
        .vrf_we(vrf_we), .vrf_addr(vrf_waddr), .vrf_wdata(vrf_wdata),
        .mrf_we(mrf_we), .mrf_addr(mrf_waddr), .mrf_wdata(mrf_wdata), .mrf_wmode(mrf_wmode),
        .m_axi_araddr(m_axi_araddr), .m_axi_arlen(m_axi_arlen), .m_axi_arsize(m_axi_arsize),
        .m_axi_arburst(m_axi_arburst), .m_axi_arvalid(m_axi_arvalid), .m_axi_arready(m_axi_arready),
        .m_axi_rdata(m_axi_rdata), .m_axi_rresp(m_axi_rresp), .m_axi_rlast(m_axi_rlast),
        .m_axi_rvalid(m_axi_rvalid), .m_axi_rready(m_axi_rready));

    npu_dma_store #(.N(N), .EW(EW), .VRF_DEPTH(VRF_DEPTH), .IMEM_DEPTH(IMEM_DEPTH)) store (
        .clk(clk), .rst(rst), .start(start), .imem_we(imem_we), .imem_waddr(imem_addr), .imem_wdata(imem_wdata),
        .halted(s_halted), .error(s_error), .c2s_ready(c2s != 0), .pop_c2s(pop_c2s), .push_s2c(push_s2c),
        .vrf_raddr(vrf_raddr2), .vrf_rdata(vrf_rdata2),
        .m_axi_awaddr(m_axi_awaddr), .m_axi_awlen(m_axi_awlen), .m_axi_awsize(m_axi_awsize),
        .m_axi_awburst(m_axi_awburst), .m_axi_awvalid(m_axi_awvalid), .m_axi_awready(m_axi_awready),
        .m_axi_wdata(m_axi_wdata), .m_axi_wstrb(m_axi_wstrb), .m_axi_wlast(m_axi_wlast),
        .m_axi_wvalid(m_axi_wvalid), .m_axi_wready(m_axi_wready), .m_axi_bresp(m_axi_bresp),
        .m_axi_bvalid(m_axi_bvalid), .m_axi_bready(m_axi_bready));

    assign m_axi_arid = 1'b0;
    assign m_axi_awid = 1'b0;
    assign done = running && !busy && l_halted && s_halted;
    assign error = c_error | l_error | s_error;

    always @(posedge clk) begin
        if (rst) begin
            running <= 1'b0;
            cycles <= 32'd0;
        end else if (start) begin
            running <= 1'b1;
            cycles <= 32'd0;
        end else if (running && !done) cycles <= cycles + 32'd1;
    end
endmodule
