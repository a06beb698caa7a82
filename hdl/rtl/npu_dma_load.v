// The load stream: v_load (DRAM -> vector register file) and m_load (DRAM -> matrix register file) over
// an AXI4 read channel, honouring the load stream's tokens (wait c2l, signal l2c; docs/isa.md).
// Each transfer is read as INCR bursts of at most 256 beats that never cross a 4 KB boundary; up to four
// bursts are in flight, the next requested while earlier ones stream in.  Beats are assembled into vectors
// (v_load) or packed tiles (m_load) in request order.
module npu_dma_load #(
    parameter integer N = 32,
    parameter integer EW = 16,               // bits per vector element (the MFU format)
    parameter integer VRF_DEPTH = 4096,
    parameter integer MRF_TILES = 256,
    parameter integer IMEM_DEPTH = 4096,
    parameter integer TILE_BITS = 4352,       // the widest packed tile among the MVU format modes
    parameter integer ADDR_W = 32,
    parameter integer MODES = 1,              // MVU format modes: element bits of mode m in MODE_E_BITS[16m +: 16]
    parameter [127:0] MODE_E_BITS = 128'd4
) (
    input  wire                 clk,
    input  wire                 rst,
    input  wire                 start,
    input  wire                 imem_we,          // program back door
    input  wire [$clog2(IMEM_DEPTH)-1:0] imem_waddr,
    input  wire [127:0]         imem_wdata,
    output reg                  halted,
    output reg                  error,            // a transfer not aligned to 16 bytes
    input  wire                 c2l_ready,
    output reg                  pop_c2l,
    output reg                  push_l2c,
    output reg                  vrf_we,
    output reg  [$clog2(VRF_DEPTH)-1:0] vrf_addr,
    output reg  [EW * N-1:0]      vrf_wdata,
    output reg                  mrf_we,
    output reg  [$clog2(MRF_TILES)-1:0] mrf_addr,
    output reg  [TILE_BITS-1:0] mrf_wdata,
    output reg  [2:0]           mrf_wmode,        // the MVU format mode of the tile written
    // AXI4 read address / data
    output reg  [ADDR_W-1:0]    m_axi_araddr,
    output reg  [7:0]           m_axi_arlen,
    output wire [2:0]           m_axi_arsize,
    output wire [1:0]           m_axi_arburst,
    output reg                  m_axi_arvalid,
    input  wire                 m_axi_arready,
    input  wire [127:0]         m_axi_rdata,
    /* verilator lint_off UNUSEDSIGNAL */
    input  wire [1:0]           m_axi_rresp,
    /* verilator lint_on UNUSEDSIGNAL */
    input  wire                 m_axi_rlast,
    input  wire                 m_axi_rvalid,
    output wire                 m_axi_rready
);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
    localparam integer VEC_BEATS = EW * N / 128;          // 128-bit beats per vector
    // packed tile size (bytes) of mode m: N scale bytes, then N x N element codes
    function automatic [31:0] tile_bytes(input [2:0] m);
        integer i;
        begin
            tile_bytes = 32'd0;
            for (i = 0; i < MODES; i = i + 1)
                if (m == i[2:0]) tile_bytes = N + N * N * MODE_E_BITS[16 * i +: 16] / 8;
        end
    endfunction
    localparam integer GW = TILE_BITS - 128;                // beats gathered before the last one

    assign m_axi_arsize = 3'd4;                             // 16-byte beats
    assign m_axi_arburst = 2'b01;                           // INCR
    assign m_axi_rready = (state == S_RUN);

    reg [127:0] imem [0:IMEM_DEPTH-1];
    reg [$clog2(IMEM_DEPTH)-1:0] pc;
    wire [127:0] ins = imem[pc];

    localparam [2:0] S_IDLE = 0, S_FETCH = 1, S_RUN = 2, S_DONE = 3, S_HALT = 4;
    localparam integer MAX_OUTSTANDING = 4;
    reg [2:0] state;
    reg is_tile;
    reg [2:0]  tmode;                       // the m_load's MVU format mode
    reg [11:0] tile_beats;                  // beats per tile in that mode
    reg [19:0] vrow_base;
    reg [31:0] dbase;
    reg [11:0] rows, row_vecs;              // rows, and vectors (or tiles) per row
    reg [31:0] row_bytes;
    reg [23:0] dstride;
    reg [15:0] vstride;
    reg        signal;
    // address side: the next burst to request
    reg [11:0] ar_row;
    reg [31:0] daddr, left;                 // its address, and bytes of its row still to request
    reg        ar_done;                     // every burst of the transfer requested
    reg [2:0]  outstanding;                 // bursts requested whose last beat has not arrived
    // data side: where the next assembled vector or tile goes
    reg [11:0] r_row, r_vec;
    reg [19:0] vdst;
    reg [11:0] beat_fill;                   // beats gathered into the vector / tile being assembled
    reg [GW-1:0] gather;

    wire [2:0] m_fmt = ins[M_LOAD_FMT_LSB +: 3];
    /* verilator lint_off UNUSEDSIGNAL */
    wire [31:0] m_tile_bytes = tile_bytes(m_fmt);
    /* verilator lint_on UNUSEDSIGNAL */
    wire [8:0] burst;
    npu_axi_burst plan (.addr(daddr), .left(left), .beats(burst));
    wire [31:0] burst_bytes = {19'd0, burst, 4'd0};
    wire ar_issue = (state == S_RUN) && !ar_done && !m_axi_arvalid && {29'd0, outstanding} < MAX_OUTSTANDING;
    wire r_last = m_axi_rvalid && m_axi_rlast && (state == S_RUN);

    always @(posedge clk) begin
        if (imem_we) imem[imem_waddr] <= imem_wdata;
        vrf_we <= 1'b0;
        mrf_we <= 1'b0;
        pop_c2l <= 1'b0;
        push_l2c <= 1'b0;
        if (rst) begin
            state <= S_IDLE;
            halted <= 1'b0;
            error <= 1'b0;
            m_axi_arvalid <= 1'b0;
        end else case (state)
            S_IDLE: if (start) begin
                pc <= 0;
                halted <= 1'b0;
                state <= S_FETCH;
            end
            S_FETCH: begin
                if (ins[5:0] == OP_HALT) state <= S_HALT;
                else if (ins[5:0] != OP_V_LOAD && ins[5:0] != OP_M_LOAD) pc <= pc + 1'b1;
                else if (!(ins[ISA_DEP_WAIT_NEXT] && !c2l_ready)) begin
                    pop_c2l <= ins[ISA_DEP_WAIT_NEXT];
                    signal <= ins[ISA_DEP_SIGNAL_NEXT];
                    is_tile <= ins[5:0] == OP_M_LOAD;
                    ar_row <= 0; ar_done <= 1'b0; outstanding <= 0;
                    r_row <= 0; r_vec <= 0;
                    beat_fill <= 0;
                    if (ins[5:0] == OP_V_LOAD) begin
                        vrow_base <= ins[V_LOAD_VADDR_LSB +: 20];
                        vdst <= ins[V_LOAD_VADDR_LSB +: 20];
                        dbase <= ins[V_LOAD_DADDR_LSB +: 32];
                        daddr <= ins[V_LOAD_DADDR_LSB +: 32];
                        rows <= ins[V_LOAD_ROWS_LSB +: 12];
                        row_vecs <= ins[V_LOAD_ROW_LEN_LSB +: 12];
                        row_bytes <= {20'd0, ins[V_LOAD_ROW_LEN_LSB +: 12]} * (EW / 8 * N);
                        left <= {20'd0, ins[V_LOAD_ROW_LEN_LSB +: 12]} * (EW / 8 * N);
                        dstride <= ins[V_LOAD_DSTRIDE_LSB +: 24];
                        vstride <= ins[V_LOAD_VSTRIDE_LSB +: 16];
                        if (ins[V_LOAD_DADDR_LSB +: 4] != 0 || ins[V_LOAD_DSTRIDE_LSB +: 4] != 0) error <= 1'b1;
                    end else begin
                        vrow_base <= {4'd0, ins[M_LOAD_MADDR_LSB +: 16]};
                        vdst <= {4'd0, ins[M_LOAD_MADDR_LSB +: 16]};
                        dbase <= ins[M_LOAD_DADDR_LSB +: 32];
                        daddr <= ins[M_LOAD_DADDR_LSB +: 32];
                        rows <= 12'd1;
                        row_vecs <= 12'hfff;                       // one row: the count ends it
                        row_bytes <= {16'd0, ins[M_LOAD_COUNT_LSB +: 16]} * m_tile_bytes;
                        left <= {16'd0, ins[M_LOAD_COUNT_LSB +: 16]} * m_tile_bytes;
                        tmode <= m_fmt;
                        tile_beats <= m_tile_bytes[15:4];
                        dstride <= 24'd0;
                        vstride <= 16'd0;
                        // tiles of an MVU format mode the machine does not have are refused
                        if (ins[M_LOAD_DADDR_LSB +: 4] != 0 || {29'd0, m_fmt} >= MODES) error <= 1'b1;
                    end
                    state <= S_RUN;
                end
            end
            S_RUN: begin
                // address side: request the next burst while earlier ones stream in
                if (m_axi_arvalid && m_axi_arready) m_axi_arvalid <= 1'b0;
                if (ar_issue) begin
                    m_axi_araddr <= daddr;
                    m_axi_arlen <= burst[7:0] - 8'd1;
                    m_axi_arvalid <= 1'b1;
                    if (left == burst_bytes) begin
                        if (ar_row == rows - 1) ar_done <= 1'b1;
                        else begin
                            ar_row <= ar_row + 1;
                            daddr <= dbase + {8'd0, dstride} * {20'd0, ar_row + 12'd1};
                            left <= row_bytes;
                        end
                    end else begin
                        daddr <= daddr + burst_bytes;
                        left <= left - burst_bytes;
                    end
                end
                outstanding <= outstanding + {2'd0, ar_issue} - {2'd0, r_last};
                // data side: assemble beats into vectors or tiles, in request order
                if (m_axi_rvalid) begin
                    gather <= {m_axi_rdata, gather[GW-1:128]};
                    if ((!is_tile && {20'd0, beat_fill} == VEC_BEATS - 1) ||
                        (is_tile && beat_fill == tile_beats - 12'd1)) begin
                        beat_fill <= 0;
                        if (is_tile) begin
                            mrf_we <= 1'b1;
                            mrf_addr <= vdst[$clog2(MRF_TILES)-1:0];
                            mrf_wmode <= tmode;
                            // a tile narrower than the widest sits in the top bits of the gathered beats
                            mrf_wdata <= {m_axi_rdata, gather} >> (TILE_BITS - {20'd0, tile_beats} * 128);
                        end else begin
                            vrf_we <= 1'b1;
                            vrf_addr <= vdst[$clog2(VRF_DEPTH)-1:0];
                            vrf_wdata <= {m_axi_rdata, gather[GW-1:GW-(EW * N-128)]};
                        end
                        if (r_vec == row_vecs - 1) begin
                            r_vec <= 0;
                            r_row <= r_row + 1;
                            vdst <= vrow_base + {4'd0, vstride} * {8'd0, r_row + 12'd1};
                        end else begin
                            r_vec <= r_vec + 1;
                            vdst <= vdst + 1;
                        end
                    end else beat_fill <= beat_fill + 1;
                end
                if (ar_done && !m_axi_arvalid && outstanding == {2'd0, r_last}) state <= S_DONE;
            end
            S_DONE: begin
                push_l2c <= signal;
                pc <= pc + 1'b1;
                state <= S_FETCH;
            end
            S_HALT: halted <= 1'b1;
            default: state <= S_IDLE;
        endcase
    end
endmodule
