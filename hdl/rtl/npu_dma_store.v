// The store stream: v_store (vector register file -> DRAM) over an AXI4 write channel, honouring the
// store stream's tokens (wait c2s, signal s2c; docs/isa.md).  INCR bursts of at most 256 beats that never
// cross a 4 KB boundary, one in flight, each completed by its write response.
module npu_dma_store #(
    parameter integer N = 32,
    parameter integer EW = 16,               // bits per vector element (the MFU format)
    parameter integer VRF_DEPTH = 4096,
    parameter integer IMEM_DEPTH = 4096,
    parameter integer ADDR_W = 32
) (
    input  wire                 clk,
    input  wire                 rst,
    input  wire                 start,
    input  wire                 imem_we,
    input  wire [$clog2(IMEM_DEPTH)-1:0] imem_waddr,
    input  wire [127:0]         imem_wdata,
    output reg                  halted,
    output reg                  error,
    input  wire                 c2s_ready,
    output reg                  pop_c2s,
    output reg                  push_s2c,
    output wire [$clog2(VRF_DEPTH)-1:0] vrf_raddr,
    input  wire [EW * N-1:0]      vrf_rdata,
    output reg  [ADDR_W-1:0]    m_axi_awaddr,
    output reg  [7:0]           m_axi_awlen,
    output wire [2:0]           m_axi_awsize,
    output wire [1:0]           m_axi_awburst,
    output reg                  m_axi_awvalid,
    input  wire                 m_axi_awready,
    output wire [127:0]         m_axi_wdata,
    output wire [15:0]          m_axi_wstrb,
    output wire                 m_axi_wlast,
    output reg                  m_axi_wvalid,
    input  wire                 m_axi_wready,
    /* verilator lint_off UNUSEDSIGNAL */
    input  wire [1:0]           m_axi_bresp,
    /* verilator lint_on UNUSEDSIGNAL */
    input  wire                 m_axi_bvalid,
    output wire                 m_axi_bready
);
    /* verilator lint_off UNUSEDPARAM */
`include "isa_defs.vh"
    /* verilator lint_on UNUSEDPARAM */
    localparam integer VEC_BEATS = EW * N / 128;

    assign m_axi_awsize = 3'd4;
    assign m_axi_awburst = 2'b01;
    assign m_axi_wstrb = 16'hffff;

    reg [127:0] imem [0:IMEM_DEPTH-1];
    reg [$clog2(IMEM_DEPTH)-1:0] pc;
    wire [127:0] ins = imem[pc];

    localparam [2:0] S_IDLE = 0, S_FETCH = 1, S_ROW = 2, S_AW = 3, S_W = 4, S_B = 5, S_DONE = 6, S_HALT = 7;
    reg [2:0] state;
    reg [19:0] vsrc, vrow_base;
    reg [31:0] dbase, daddr;
    reg [11:0] rows, row;
    reg [31:0] row_bytes, left;
    reg [23:0] dstride;
    reg [15:0] vstride;
    reg        signal;
    reg [8:0]  beats_in_burst, beat;
    reg [6:0]  beat_in_vec;

    assign vrf_raddr = vsrc[$clog2(VRF_DEPTH)-1:0];
    assign m_axi_wdata = vrf_rdata[128 * beat_in_vec[$clog2(VEC_BEATS)-1:0] +: 128];
    assign m_axi_wlast = (beat == beats_in_burst - 1);
    assign m_axi_bready = (state == S_B);

    wire [8:0] burst;
    npu_axi_burst plan (.addr(daddr), .left(left), .beats(burst));

    always @(posedge clk) begin
        if (imem_we) imem[imem_waddr] <= imem_wdata;
        pop_c2s <= 1'b0;
        push_s2c <= 1'b0;
        if (rst) begin
            state <= S_IDLE;
            halted <= 1'b0;
            error <= 1'b0;
            m_axi_awvalid <= 1'b0;
            m_axi_wvalid <= 1'b0;
        end else case (state)
            S_IDLE: if (start) begin
                pc <= 0;
                halted <= 1'b0;
                state <= S_FETCH;
            end
            S_FETCH: begin
                if (ins[5:0] == OP_HALT) state <= S_HALT;
                else if (ins[5:0] != OP_V_STORE) pc <= pc + 1'b1;
                else if (!(ins[ISA_DEP_WAIT_PREV] && !c2s_ready)) begin
                    pop_c2s <= ins[ISA_DEP_WAIT_PREV];
                    signal <= ins[ISA_DEP_SIGNAL_PREV];
                    vrow_base <= ins[V_STORE_VADDR_LSB +: 20];
                    dbase <= ins[V_STORE_DADDR_LSB +: 32];
                    rows <= ins[V_STORE_ROWS_LSB +: 12];
                    row_bytes <= {20'd0, ins[V_STORE_ROW_LEN_LSB +: 12]} * (EW / 8 * N);
                    dstride <= ins[V_STORE_DSTRIDE_LSB +: 24];
                    vstride <= ins[V_STORE_VSTRIDE_LSB +: 16];
                    row <= 0;
                    state <= S_ROW;
                end
            end
            S_ROW: begin
                daddr <= dbase + {8'd0, dstride} * {20'd0, row};
                vsrc <= vrow_base + {4'd0, vstride} * {8'd0, row};
                left <= row_bytes;
                beat_in_vec <= 0;
                if (dbase[3:0] != 0 || dstride[3:0] != 0) error <= 1'b1;
                state <= S_AW;
            end
            S_AW: begin
                if (!m_axi_awvalid) begin
                    m_axi_awaddr <= daddr;
                    m_axi_awlen <= burst[7:0] - 8'd1;
                    m_axi_awvalid <= 1'b1;
                    beats_in_burst <= burst;
                end else if (m_axi_awready) begin
                    m_axi_awvalid <= 1'b0;
                    daddr <= daddr + {19'd0, beats_in_burst, 4'd0};
                    left <= left - {19'd0, beats_in_burst, 4'd0};
                    beat <= 0;
                    m_axi_wvalid <= 1'b1;
                    state <= S_W;
                end
            end
            S_W: if (m_axi_wready) begin
                if ({25'd0, beat_in_vec} == VEC_BEATS - 1) begin
                    beat_in_vec <= 0;
                    vsrc <= vsrc + 1;
                end else beat_in_vec <= beat_in_vec + 1;
                if (m_axi_wlast) begin
                    m_axi_wvalid <= 1'b0;
                    state <= S_B;
                end
                beat <= beat + 1;
            end
            S_B: if (m_axi_bvalid) begin
                if (left != 0) state <= S_AW;
                else if (row != rows - 1) begin
                    row <= row + 1;
                    state <= S_ROW;
                end else state <= S_DONE;
            end
            S_DONE: begin
                push_s2c <= signal;
                pc <= pc + 1'b1;
                state <= S_FETCH;
            end
            S_HALT: halted <= 1'b1;
            default: state <= S_IDLE;
        endcase
    end
endmodule
