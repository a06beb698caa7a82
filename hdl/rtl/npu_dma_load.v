// The load stream: v_load (DRAM -> vector register file) and m_load (DRAM -> matrix register file) over
// an AXI4 read channel, honouring the load stream's tokens (wait c2l, signal l2c; docs/isa.md).
// Each transfer is read as INCR bursts of at most 16 beats that never cross a 4 KB boundary, one burst
// in flight; beats are assembled into vectors (v_load) or packed tiles (m_load).
module npu_dma_load #(
    parameter integer N = 32,
    parameter integer VRF_DEPTH = 4096,
    parameter integer MRF_TILES = 256,
    parameter integer IMEM_DEPTH = 4096,
    parameter integer TILE_BITS = 4352,
    parameter integer ADDR_W = 32
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
    output reg  [16*N-1:0]      vrf_wdata,
    output reg                  mrf_we,
    output reg  [$clog2(MRF_TILES)-1:0] mrf_addr,
    output reg  [TILE_BITS-1:0] mrf_wdata,
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
    localparam integer VEC_BEATS = 16 * N / 128;          // 128-bit beats per fp16 vector
    localparam integer TILE_BEATS = TILE_BITS / 128;
    localparam integer GW = TILE_BITS - 128;                // beats gathered before the last one

    assign m_axi_arsize = 3'd4;                             // 16-byte beats
    assign m_axi_arburst = 2'b01;                           // INCR
    assign m_axi_rready = (state == S_R);

    reg [127:0] imem [0:IMEM_DEPTH-1];
    reg [$clog2(IMEM_DEPTH)-1:0] pc;
    wire [127:0] ins = imem[pc];

    localparam [2:0] S_IDLE = 0, S_FETCH = 1, S_ROW = 2, S_AR = 3, S_R = 4, S_DONE = 5, S_HALT = 6;
    reg [2:0] state;
    reg is_tile;
    reg [19:0] vdst;                        // next vector (v_load) or tile (m_load) destination
    reg [19:0] vrow_base;
    reg [31:0] dbase, daddr;
    reg [11:0] rows, row;
    reg [31:0] row_bytes, left;             // bytes of the current row still to request
    reg [23:0] dstride;
    reg [15:0] vstride;
    reg        signal;
    reg [8:0]  beats_in_burst;
    reg [6:0]  beat_fill;                   // beats gathered into the vector / tile being assembled
    reg [GW-1:0] gather;

    wire [31:0] to_boundary = (32'd4096 - {20'd0, daddr[11:0]}) >> 4;
    wire [31:0] want_beats = left >> 4;
    /* verilator lint_off UNUSEDSIGNAL */
    wire [31:0] burst = (want_beats < 16) ? ((want_beats < to_boundary) ? want_beats : to_boundary)
                                          : ((to_boundary < 16) ? to_boundary : 32'd16);
    /* verilator lint_on UNUSEDSIGNAL */

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
                    row <= 0;
                    beat_fill <= 0;
                    if (ins[5:0] == OP_V_LOAD) begin
                        vrow_base <= ins[V_LOAD_VADDR_LSB +: 20];
                        dbase <= ins[V_LOAD_DADDR_LSB +: 32];
                        rows <= ins[V_LOAD_ROWS_LSB +: 12];
                        row_bytes <= {20'd0, ins[V_LOAD_ROW_LEN_LSB +: 12]} * (2 * N);
                        dstride <= ins[V_LOAD_DSTRIDE_LSB +: 24];
                        vstride <= ins[V_LOAD_VSTRIDE_LSB +: 16];
                    end else begin
                        vrow_base <= {4'd0, ins[M_LOAD_MADDR_LSB +: 16]};
                        dbase <= ins[M_LOAD_DADDR_LSB +: 32];
                        rows <= 12'd1;
                        row_bytes <= {16'd0, ins[M_LOAD_COUNT_LSB +: 16]} * (TILE_BITS / 8);
                        dstride <= 24'd0;
                        vstride <= 16'd0;
                    end
                    state <= S_ROW;
                end
            end
            S_ROW: begin
                daddr <= dbase + {8'd0, dstride} * {20'd0, row};
                vdst <= vrow_base + {4'd0, vstride} * {8'd0, row};
                left <= row_bytes;
                if (dbase[3:0] != 0 || dstride[3:0] != 0) error <= 1'b1;
                state <= S_AR;
            end
            S_AR: begin
                if (!m_axi_arvalid) begin
                    m_axi_araddr <= daddr;
                    m_axi_arlen <= burst[7:0] - 8'd1;
                    m_axi_arvalid <= 1'b1;
                    beats_in_burst <= burst[8:0];
                end else if (m_axi_arready) begin
                    m_axi_arvalid <= 1'b0;
                    daddr <= daddr + {19'd0, beats_in_burst, 4'd0};
                    left <= left - {19'd0, beats_in_burst, 4'd0};
                    state <= S_R;
                end
            end
            S_R: if (m_axi_rvalid) begin
                gather <= {m_axi_rdata, gather[GW-1:128]};
                if ((!is_tile && {25'd0, beat_fill} == VEC_BEATS - 1) ||
                    (is_tile && {25'd0, beat_fill} == TILE_BEATS - 1)) begin
                    beat_fill <= 0;
                    if (is_tile) begin
                        mrf_we <= 1'b1;
                        mrf_addr <= vdst[$clog2(MRF_TILES)-1:0];
                        mrf_wdata <= {m_axi_rdata, gather};
                    end else begin
                        vrf_we <= 1'b1;
                        vrf_addr <= vdst[$clog2(VRF_DEPTH)-1:0];
                        vrf_wdata <= {m_axi_rdata, gather[GW-1:GW-(16*N-128)]};
                    end
                    vdst <= vdst + 1;
                end else beat_fill <= beat_fill + 1;
                if (m_axi_rlast) begin
                    if (left != 0) state <= S_AR;
                    else if (row != rows - 1) begin
                        row <= row + 1;
                        state <= S_ROW;
                    end else state <= S_DONE;
                end
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
