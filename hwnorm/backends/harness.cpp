// In-process harness around a Verilated hwnorm datapath (top class Vtop), loaded with ctypes.
// Whole channels run inside C++: no Python work per clock cycle. Port widths differ per
// configuration; the put/get overloads below adapt to Verilator's CData/SData/IData/QData/VlWide.
#include "Vtop.h"
#include "verilated.h"

#include <chrono>
#include <cstdint>
#include <vector>

// Verilator escapes the "__" of Amaranth's stream port names (chan__valid -> chan___05Fvalid).
#define PORT(stream, member) stream##___05F##member

namespace {

template <typename T> inline void put(T& port, const uint32_t* w) { port = static_cast<T>(w[0]); }
inline void put(QData& port, const uint32_t* w) { port = (static_cast<QData>(w[1]) << 32) | w[0]; }
template <std::size_t N> inline void put(VlWide<N>& port, const uint32_t* w) {
    for (std::size_t i = 0; i < N; ++i) port[i] = w[i];
}
template <typename T> inline void get(const T& port, uint32_t* w) { w[0] = static_cast<uint32_t>(port); }
inline void get(const QData& port, uint32_t* w) {
    w[0] = static_cast<uint32_t>(port);
    w[1] = static_cast<uint32_t>(port >> 32);
}
template <std::size_t N> inline void get(const VlWide<N>& port, uint32_t* w) {
    for (std::size_t i = 0; i < N; ++i) w[i] = port[i];
}

struct Harness {
    VerilatedContext ctx;
    Vtop* top;
    uint64_t cycles = 0;
    Harness() { top = new Vtop{&ctx}; }
    ~Harness() { top->final(); delete top; }

    // The rising edge; inputs are set while clk is low. clk falls without an eval of its own: the design has no
    // falling-edge logic, and the next eval (after the next cycle's inputs are set) settles both at once, one eval
    // fewer per cycle.
    void edge() {
        top->clk = 1;
        top->eval();
        top->clk = 0;
        ++cycles;
    }
    void reset() {
        top->rst = 1;
        top->PORT(chan, valid) = 0;
        top->PORT(i, valid) = 0;
        top->PORT(o, ready) = 0;
        top->PORT(stats, ready) = 0;
        top->clk = 0;
        top->eval();
        for (int k = 0; k < 3; ++k) {
            top->eval();
            edge();
        }
        top->rst = 0;
        top->eval();
    }
};

// `lanes` values of `bits` bits each into little-endian 32-bit words from bit `base` on (OR-ed in); `count`
// valid, the rest left 0.
void pack_lanes_at(const int32_t* v, int count, int lanes, int bits, uint32_t* w, int nw, int base) {
    const uint64_t mask = (bits >= 64) ? ~0ull : ((1ull << bits) - 1);
    for (int j = 0; j < lanes && j < count; ++j) {
        uint64_t val = static_cast<uint64_t>(static_cast<int64_t>(v[j])) & mask;
        int bit = base + j * bits;
        int idx = bit / 32, off = bit % 32;
        w[idx] |= static_cast<uint32_t>(val << off);
        if (off + bits > 32 && idx + 1 < nw) w[idx + 1] |= static_cast<uint32_t>(val >> (32 - off));
    }
}

// `lanes` values of `bits` bits each into little-endian 32-bit words; `count` valid, the rest 0.
void pack_lanes(const int32_t* v, int count, int lanes, int bits, uint32_t* w, int nw) {
    for (int i = 0; i < nw; ++i) w[i] = 0;
    pack_lanes_at(v, count, lanes, bits, w, nw, 0);
}

void unpack_lanes(const uint32_t* w, int count, int bits, bool is_signed, int32_t* out) {
    for (int j = 0; j < count; ++j) {
        int bit = j * bits;
        int idx = bit / 32, off = bit % 32;
        uint64_t val = w[idx] >> off;
        if (off + bits > 32) val |= static_cast<uint64_t>(w[idx + 1]) << (32 - off);
        val &= (1ull << bits) - 1;
        int64_t s = static_cast<int64_t>(val);
        if (is_signed && (val >> (bits - 1))) s -= (1ll << bits);
        out[j] = static_cast<int32_t>(s);
    }
}

}  // namespace

extern "C" {

void* hw_new() {
    auto* h = new Harness();
    h->reset();
    return h;
}

void hw_free(void* p) { delete static_cast<Harness*>(p); }

uint64_t hw_cycles(void* p) { return static_cast<Harness*>(p)->cycles; }

// Runs `nch` channels back to back, each: descriptor, then its n values `passes` times, while
// collecting the n outputs and the statistics word. Returns 0, or -1 if a channel did not finish
// within `max_cycles` (a hung datapath), with the channel index in *failed. An elementwise build: `g` and `b`
// (C, n) gamma / beta codes of `g_bits` / `b_bits` bits go into each beat above the values (null otherwise).
int hw_run(void* p, int nch, int n, int passes, const uint32_t* desc, int desc_nw, const int32_t* x,
           int32_t* y, uint32_t* stats, int stats_nw, int lanes, int in_bits, int out_bits, int out_signed,
           int in_nw, int out_nw, uint64_t max_cycles, int* failed, const int32_t* g, const int32_t* b,
           int g_bits, int b_bits) {
    auto* h = static_cast<Harness*>(p);
    Vtop* top = h->top;
    const int beats = (n + lanes - 1) / lanes;
    std::vector<uint32_t> beat_words(in_nw), out_words(out_nw);
    top->PORT(o, ready) = 1;
    top->PORT(stats, ready) = 1;
    for (int c = 0; c < nch; ++c) {
        const int32_t* xc = x + static_cast<int64_t>(c) * n;
        int32_t* yc = y + static_cast<int64_t>(c) * n;
        int phase = 0, pass = 0, beat = 0, out_pos = 0, packed = -1;
        uint64_t start = h->cycles;
        put(top->PORT(chan, payload), desc + static_cast<int64_t>(c) * desc_nw);
        while (phase < 3) {
            top->PORT(chan, valid) = phase == 0;
            top->PORT(i, valid) = phase == 1;
            if (phase == 1 && packed != beat) {
                pack_lanes(xc + beat * lanes, n - beat * lanes, lanes, in_bits, beat_words.data(), in_nw);
                if (g != nullptr) {
                    const int64_t at = static_cast<int64_t>(c) * n + beat * lanes;
                    pack_lanes_at(g + at, n - beat * lanes, lanes, g_bits, beat_words.data(), in_nw, lanes * in_bits);
                    pack_lanes_at(b + at, n - beat * lanes, lanes, b_bits, beat_words.data(), in_nw,
                                  lanes * (in_bits + g_bits));
                }
                put(top->PORT(i, payload), beat_words.data());
                packed = beat;
            }
            top->eval();
            const bool chan_hs = top->PORT(chan, valid) && top->PORT(chan, ready);
            const bool in_hs = top->PORT(i, valid) && top->PORT(i, ready);
            if (top->PORT(o, valid)) {
                get(top->PORT(o, payload), out_words.data());
                int take = n - out_pos < lanes ? n - out_pos : lanes;
                if (take > 0) unpack_lanes(out_words.data(), take, out_bits, out_signed, yc + out_pos);
                out_pos += lanes;
            }
            if (top->PORT(stats, valid)) {
                get(top->PORT(stats, payload), stats + static_cast<int64_t>(c) * stats_nw);
                phase = 3;
            }
            h->edge();
            if (chan_hs) phase = 1;
            if (in_hs && ++beat == beats) {
                beat = 0;
                packed = -1;
                if (++pass == passes) phase = 2;
            }
            if (h->cycles - start > max_cycles) {
                *failed = c;
                return -1;
            }
        }
    }
    top->PORT(chan, valid) = 0;
    top->PORT(i, valid) = 0;
    top->eval();
    return 0;
}

// The raw cycle rate of this model: the same channel loop on `reps` channels of synthetic data,
// timed inside C++. Returns values per second; *cycles_per_s receives cycles per second.
double hw_bench(void* p, int n, int passes, const uint32_t* desc, int desc_nw, int reps, int lanes, int in_bits,
                int out_bits, int out_signed, int in_nw, int out_nw, int stats_nw, double* cycles_per_s) {
    auto* h = static_cast<Harness*>(p);
    std::vector<int32_t> x(static_cast<size_t>(n)), y(static_cast<size_t>(n));
    std::vector<uint32_t> st(static_cast<size_t>(stats_nw));
    for (int i = 0; i < n; ++i) x[i] = (i * 37) % ((1 << (in_bits - 1)) - 1) - (i % 3);
    int failed = -1;
    uint64_t c0 = h->cycles;
    auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r)
        hw_run(p, 1, n, passes, desc, desc_nw, x.data(), y.data(), st.data(), stats_nw, lanes, in_bits, out_bits,
               out_signed, in_nw, out_nw, 1ull << 40, &failed, nullptr, nullptr, 0, 0);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    *cycles_per_s = static_cast<double>(h->cycles - c0) / secs;
    return static_cast<double>(n) * reps / secs;
}

}  // extern "C"
