// The next AXI4 INCR burst of a transfer: as many 16-byte beats as are left, at most 256 (the AXI4 limit),
// without crossing a 4 KB boundary.  Shared by the load and store DMA engines.  Combinational.
module npu_axi_burst (
    /* verilator lint_off UNUSEDSIGNAL */
    input  wire [31:0] addr,       // byte address of the burst's first beat (16-byte aligned)
    input  wire [31:0] left,       // bytes of the transfer still to move (a multiple of 16)
    /* verilator lint_on UNUSEDSIGNAL */
    output wire [8:0]  beats       // 1 .. 256 when left > 0
);
    wire [8:0]  to_boundary = 9'd256 - {1'b0, addr[11:4]};
    wire [27:0] want = left[31:4];
    wire [8:0]  capped = (want > 28'd256) ? 9'd256 : want[8:0];
    assign beats = (capped < to_boundary) ? capped : to_boundary;
endmodule
