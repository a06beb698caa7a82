// Fast-path testbench of npu_core: a Verilator C++ main with DRAM as an AXI slave model in C++.
//
//   npu_sim <program.bin> <dram.bin> <dram_out.bin> <result.json> <max_cycles> <mem_bytes>
//
// Resets the core, writes the program through its instruction-memory port (one 16-byte word a cycle),
// pulses start and clocks it until `done` or `error` (checked every cycle) or max_cycles (rounded up to
// a multiple of 256, as the cocotb testbench polls).  DRAM is <mem_bytes> bytes (addresses wrap modulo
// it), initialised from dram.bin; its first len(dram.bin) bytes are written to dram_out.bin, and
// {"cycles": <the core's cycles output>, "error": "<text or empty>"} to result.json.
//
// The AXI model reproduces, cycle for cycle, cocotbext-axi's AxiRam as the cocotb testbench
// (hdl/cosim_tb.py) drives it under Verilator: every channel endpoint samples the core's outputs just
// before a rising edge and its new outputs reach the core after that edge.  Per edge:
//   * AR/AW/W sinks: a handshake (valid && ready) queues the item; ready = (queue holds < 2 items).
//   * R/B sources: when (valid && ready) || !valid, present the next queued item (valid = 1) or drop
//     valid when the queue is empty.
//   * then the read process runs until blocked: it takes the next burst from the AR queue, reads each
//     beat from memory as it forms it and queues it while the R queue holds < 2 beats; the write
//     process takes a burst from the AW queue, writes each W beat to memory as it arrives and queues one
//     B response (< 2 queued) after the last.
// Bursts crossing a 4 KB boundary or a WLAST in the wrong place stop the run with an error, as the
// Python model's assertions do.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "Vtop.h"
#include "verilated.h"

namespace {

struct Burst {
    uint64_t addr;
    uint32_t len;    // beats
    uint32_t size;   // bytes a beat (2^AxSIZE)
    uint32_t kind;   // AxBURST: 0 FIXED, 1 INCR, 2 WRAP
};

struct Beat {
    uint32_t data[4];
    uint32_t strb;
    bool last;
};

// Addresses of the beats of one burst, as cocotbext-axi's slave walks them.
struct BurstWalk {
    Burst b{};
    uint64_t cur = 0, lower = 0, upper = 0;
    uint32_t n = 0;

    // Starts on ``burst``; returns an error text ("" when the burst is legal).
    std::string start(const Burst& burst) {
        b = burst;
        n = 0;
        cur = (b.addr / b.size) * b.size;
        uint64_t total = uint64_t(b.size) * b.len;
        if (b.kind == 2) {
            lower = (b.addr / total) * total;
            upper = lower + total;
        }
        if (b.kind == 1 && 0x1000 - (cur & 0xfff) < total)
            return "an AXI burst at " + std::to_string(b.addr) + " of " + std::to_string(b.len) +
                   " beats crosses a 4 KB boundary";
        if (b.kind == 3) return "an AXI burst of the reserved type 3";
        return "";
    }
    uint64_t word() const { return (cur / 16) * 16; }
    bool last() const { return n == b.len - 1; }
    bool done() const { return n == b.len; }
    void next() {
        ++n;
        if (b.kind != 0) {
            cur += b.size;
            if (b.kind == 2 && cur == upper) cur = lower;
        }
    }
};

class AxiRam {
  public:
    explicit AxiRam(std::vector<uint8_t>& mem) : mem_(mem) {}

    std::string error;

    void reset() {
        ar_q_.clear(); aw_q_.clear(); w_q_.clear(); r_q_.clear();
        b_q_ = 0;
        rd_busy_ = wr_busy_ = rd_pending_ = b_pending_ = false;
        arready_ = awready_ = wready_ = rvalid_ = bvalid_ = false;
        r_cur_ = Beat{};
    }

    // One rising edge: ``top`` still shows the core's outputs from before the edge.  Computes this
    // model's outputs after the edge (apply() drives them).
    void edge(const Vtop* top) {
        if (top->m_axi_arvalid && arready_)
            ar_q_.push_back({top->m_axi_araddr, uint32_t(top->m_axi_arlen) + 1, 1u << top->m_axi_arsize,
                             top->m_axi_arburst});
        arready_ = ar_q_.size() < 2;
        if ((rvalid_ && top->m_axi_rready) || !rvalid_) {
            if (!r_q_.empty()) {
                r_cur_ = r_q_.front();
                r_q_.pop_front();
                rvalid_ = true;
            } else rvalid_ = false;
        }
        if (top->m_axi_awvalid && awready_)
            aw_q_.push_back({top->m_axi_awaddr, uint32_t(top->m_axi_awlen) + 1, 1u << top->m_axi_awsize,
                             top->m_axi_awburst});
        awready_ = aw_q_.size() < 2;
        if (top->m_axi_wvalid && wready_) {
            Beat w;
            std::memcpy(w.data, top->m_axi_wdata.data(), 16);
            w.strb = top->m_axi_wstrb;
            w.last = top->m_axi_wlast;
            w_q_.push_back(w);
        }
        wready_ = w_q_.size() < 2;
        if ((bvalid_ && top->m_axi_bready) || !bvalid_) {
            if (b_q_ > 0) {
                --b_q_;
                bvalid_ = true;
            } else bvalid_ = false;
        }
        process_write();
        process_read();
    }

    // Drives this model's outputs into the core.
    void apply(Vtop* top) const {
        top->m_axi_arready = arready_;
        top->m_axi_awready = awready_;
        top->m_axi_wready = wready_;
        top->m_axi_rvalid = rvalid_;
        top->m_axi_rlast = r_cur_.last;
        std::memcpy(top->m_axi_rdata.data(), r_cur_.data, 16);
        top->m_axi_rresp = 0;
        top->m_axi_rid = 0;
        top->m_axi_bvalid = bvalid_;
        top->m_axi_bresp = 0;
        top->m_axi_bid = 0;
    }

  private:
    std::vector<uint8_t>& mem_;
    std::deque<Burst> ar_q_, aw_q_;
    std::deque<Beat> w_q_, r_q_;
    int b_q_ = 0;
    bool arready_ = false, awready_ = false, wready_ = false, rvalid_ = false, bvalid_ = false;
    Beat r_cur_{};
    BurstWalk rd_, wr_;
    bool rd_busy_ = false, wr_busy_ = false;
    bool rd_pending_ = false;   // a beat formed (memory read) but not yet queued: the R queue was full
    Beat rd_beat_{};
    bool b_pending_ = false;    // a burst written whose response waits for room in the B queue

    uint8_t* at(uint64_t addr) { return &mem_[addr % mem_.size()]; }

    void process_read() {
        for (;;) {
            if (!rd_pending_) {
                if (!rd_busy_) {
                    if (ar_q_.empty()) return;
                    std::string e = rd_.start(ar_q_.front());
                    ar_q_.pop_front();
                    if (!e.empty()) { error = e; return; }
                    rd_busy_ = true;
                }
                std::memcpy(rd_beat_.data, at(rd_.word()), 16);
                rd_beat_.last = rd_.last();
                rd_beat_.strb = 0xffff;
                rd_.next();
                if (rd_.done()) rd_busy_ = false;
                rd_pending_ = true;
            }
            if (r_q_.size() >= 2) return;
            r_q_.push_back(rd_beat_);
            rd_pending_ = false;
        }
    }

    void process_write() {
        for (;;) {
            if (b_pending_) {
                if (b_q_ >= 2) return;
                ++b_q_;
                b_pending_ = false;
            }
            if (!wr_busy_) {
                if (aw_q_.empty()) return;
                std::string e = wr_.start(aw_q_.front());
                aw_q_.pop_front();
                if (!e.empty()) { error = e; return; }
                wr_busy_ = true;
            }
            if (w_q_.empty()) return;
            const Beat w = w_q_.front();
            w_q_.pop_front();
            const uint8_t* bytes = reinterpret_cast<const uint8_t*>(w.data);
            uint64_t base = wr_.word();
            for (int i = 0; i < 16; ++i)
                if (w.strb & (1u << i)) *at(base + i) = bytes[i];
            if (w.last != wr_.last()) { error = "WLAST out of place in an AXI write burst"; return; }
            wr_.next();
            if (wr_.done()) {
                wr_busy_ = false;
                b_pending_ = true;
            }
        }
    }
};

std::vector<uint8_t> read_file(const char* path) {
    std::vector<uint8_t> out;
    FILE* f = std::fopen(path, "rb");
    if (!f) {
        std::fprintf(stderr, "npu_sim: cannot read %s\n", path);
        std::exit(2);
    }
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.insert(out.end(), buf, buf + n);
    std::fclose(f);
    return out;
}

void write_file(const char* path, const uint8_t* data, size_t n) {
    FILE* f = std::fopen(path, "wb");
    if (!f || std::fwrite(data, 1, n, f) != n || std::fclose(f) != 0) {
        std::fprintf(stderr, "npu_sim: cannot write %s\n", path);
        std::exit(2);
    }
}

std::string json_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 7) {
        std::fprintf(stderr, "usage: %s program.bin dram.bin dram_out.bin result.json max_cycles mem_bytes\n",
                     argv[0]);
        return 2;
    }
    const std::vector<uint8_t> program = read_file(argv[1]);
    const std::vector<uint8_t> image = read_file(argv[2]);
    const uint64_t max_cycles = std::strtoull(argv[5], nullptr, 10);
    const uint64_t mem_bytes = std::strtoull(argv[6], nullptr, 10);
    std::vector<uint8_t> mem(std::max<uint64_t>(mem_bytes, image.size()), 0);
    std::copy(image.begin(), image.end(), mem.begin());

    auto context = std::make_unique<VerilatedContext>();
    const char* no_args[] = {argv[0]};
    context->commandArgs(1, no_args);
    auto top = std::make_unique<Vtop>(context.get(), "");
    AxiRam ram(mem);

    // One clock cycle: the model samples the core's outputs, the core takes the rising edge with its
    // inputs as they were, then the model's (and the testbench's) new values are driven.
    auto cycle = [&](bool rst, bool start, bool we, uint32_t addr, const uint8_t* word) {
        if (top->rst) ram.reset();
        else ram.edge(top.get());
        top->clk = 1;
        top->eval();
        ram.apply(top.get());
        top->rst = rst;
        top->start = start;
        top->imem_we = we;
        top->imem_addr = addr;
        if (word) std::memcpy(top->imem_wdata.data(), word, 16);
        top->clk = 0;
        top->eval();
    };

    top->clk = 0;
    top->rst = 1;
    top->start = 0;
    top->imem_we = 0;
    top->eval();
    cycle(true, false, false, 0, nullptr);
    const size_t words = program.size() / 16;
    for (size_t i = 0; i < words; ++i) cycle(false, false, true, uint32_t(i), &program[16 * i]);
    cycle(false, true, false, 0, nullptr);

    std::string error;
    const uint64_t limit = (max_cycles + 255) / 256 * 256;
    bool done = false;
    for (uint64_t n = 0; n < limit; ++n) {
        cycle(false, false, false, 0, nullptr);
        if (!ram.error.empty()) {
            error = "the DRAM model refused a transfer: " + ram.error;
            break;
        }
        if (top->error) {
            error = "the core flagged an instruction or transfer it cannot execute";
            break;
        }
        if (top->done) {
            done = true;
            break;
        }
    }
    if (error.empty() && !done) error = "no halt within " + std::to_string(max_cycles) + " cycles";

    write_file(argv[3], mem.data(), std::max<size_t>(image.size(), 1));
    std::string result = "{\"cycles\": " + std::to_string(top->cycles) + ", \"error\": \"" +
                         json_escape(error) + "\"}\n";
    write_file(argv[4], reinterpret_cast<const uint8_t*>(result.data()), result.size());
    top->final();
    return 0;
}
