// binary16 -> binary32, exact (subnormals normalised); NaN payloads carried over.  Combinational.
module npu_fp16_to_fp32 (
    input  wire [15:0] a,
    output reg  [31:0] z
);
    integer p, i;
    reg [22:0] frac;
    always @* begin
        frac = 23'd0;
        p = -1;
        for (i = 0; i < 10; i = i + 1)
            if (a[i]) p = i;
        if (a[14:10] == 5'h1f) z = {a[15], 8'hff, a[9:0], 13'd0};
        else if (a[14:10] != 5'd0) z = {a[15], {3'd0, a[14:10]} + 8'd112, a[9:0], 13'd0};
        else if (p < 0) z = {a[15], 31'd0};
        else begin                                                 // 2^(p-24): biased exponent p + 103
            frac = {13'd0, a[9:0]} << (23 - p);
            z = {a[15], p[7:0] + 8'd103, frac};
        end
    end
endmodule
