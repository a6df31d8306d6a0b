"""Issue 23 item 5: what each batch-norm variant adds to the datapath in hardware, priced in generic two-input gates.

Each added block is a small Amaranth design at the 8-bit datapath's widths (l2_s8: input s8, inference mean
in_bits + stat_frac_bits = 16 bits, inference scale an 18-bit mantissa and a 5-bit exponent: a statistics entry of
39 bits), synthesized with the project's generic-gate flow (hwnorm.reports.synth.generic_gates: yosys synth -flatten,
abc to two-input gates; flip-flops counted apart). The blocks are the arithmetic and storage the variant adds, not a
redesign of the datapath; the whole 8-bit datapath is 6977 (l2_s8) / 7719 (range_s8) gates for scale.

Run: python examples/variant_cost.py [--channels 4] [--json out.json]. It changes nothing in hwnorm.
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

from amaranth import Array, Const, Elaboratable, Module, Signal, signed, unsigned
from amaranth.back import verilog
from amaranth.lib import wiring

from hwnorm.config import default_configs
from hwnorm.hdl.normalize import NormalizeAffine
from hwnorm.reports.synth import generic_gates

MEAN_BITS, SCALE_BITS = 16, 18 + 5           # one statistics entry: the inference path's mean and scale words
ENTRY = MEAN_BITS + SCALE_BITS


class StatMemory(Elaboratable):
    """A statistics memory of `entries` words of `width` bits (registers; one write port, one read port)."""

    def __init__(self, entries, width):
        self.entries, self.width = entries, width
        self.we = Signal()
        self.waddr = Signal(range(entries))
        self.raddr = Signal(range(entries))
        self.wdata = Signal(width)
        self.rdata = Signal(width)
        self.ports = [self.we, self.waddr, self.raddr, self.wdata, self.rdata]

    def elaborate(self, platform):
        m = Module()
        regs = Array(Signal(self.width, name=f"r{i}") for i in range(self.entries))
        with m.If(self.we):
            m.d.sync += regs[self.waddr].eq(self.wdata)
        m.d.comb += self.rdata.eq(regs[self.raddr])
        return m


class WindowPool(Elaboratable):
    """MBN's pooling of the k memorized entries, one word: a running sum (+ the new entry, - the evicted one), and the
    average by a shift (k a power of two)."""

    def __init__(self, k, width):
        self.k, self.width = k, width
        self.valid = Signal()
        self.new = Signal(signed(width))
        self.old = Signal(signed(width))
        self.avg = Signal(signed(width))
        self.ports = [self.valid, self.new, self.old, self.avg]

    def elaborate(self, platform):
        m = Module()
        acc = Signal(signed(self.width + self.k.bit_length()))
        with m.If(self.valid):
            m.d.sync += acc.eq(acc + self.new - self.old)
        m.d.comb += self.avg.eq(acc >> (self.k.bit_length() - 1))
        return m


class Mac(Elaboratable):
    """acc <= acc + a * b (clear first): CBN's Taylor dot product, BKN's transition, the mixture's log-densities."""

    def __init__(self, a_bits, b_bits, acc_bits):
        self.clear = Signal()
        self.a = Signal(signed(a_bits))
        self.b = Signal(signed(b_bits))
        self.acc = Signal(signed(acc_bits))
        self.ports = [self.clear, self.a, self.b, self.acc]

    def elaborate(self, platform):
        m = Module()
        with m.If(self.clear):
            m.d.sync += self.acc.eq(0)
        with m.Else():
            m.d.sync += self.acc.eq(self.acc + self.a * self.b)
        return m


class KalmanUpdate(Elaboratable):
    """BKN's per-channel update, one channel a cycle (combinational): mu = pred + q (mean - pred), var = var_pred +
    q (S - var_pred) + p q d^2 with d = mean - pred, p = 1 - q; q an 8-bit gain in [0, 1); the p q d^2 term from d's
    8 top bits and p q's 8 top bits (17 x 8, 17 x 8, 8 x 8 and 16 x 8 multipliers)."""

    def __init__(self, width=16):
        w = width
        self.q = Signal(unsigned(8))
        self.mean, self.pred = Signal(signed(w)), Signal(signed(w))
        self.s, self.var_pred = Signal(unsigned(w)), Signal(unsigned(w))
        self.mu, self.var = Signal(signed(w)), Signal(unsigned(w + 1))
        self.ports = [self.q, self.mean, self.pred, self.s, self.var_pred, self.mu, self.var]

    def elaborate(self, platform):
        m = Module()
        w = self.mean.shape().width
        d = Signal(signed(w + 1))
        d8 = Signal(signed(8))
        pq = Signal(unsigned(16))
        m.d.comb += [d.eq(self.mean - self.pred), d8.eq(d[-8:]), pq.eq(self.q * (Const(256, 9) - self.q)),
                     self.mu.eq(self.pred + ((d * self.q) >> 8)),
                     self.var.eq(self.var_pred + (((self.s - self.var_pred) * self.q) >> 8)
                                 + (((d8 * d8) * pq[8:]) >> 2))]
        return m


class InstanceGate(Elaboratable):
    """IEBN: the instance's channel sum (an accumulator over up to 2^count_bits values), its mean's 6 top bits into a
    64-entry sigmoid table (w, b folded into the table's index scale), and gamma x gate (8 x 8)."""

    def __init__(self, in_bits=8, count_bits=12):
        self.valid, self.clear = Signal(), Signal()
        self.x = Signal(signed(in_bits))
        self.gamma = Signal(signed(8))
        self.gain = Signal(signed(16))
        self.in_bits, self.count_bits = in_bits, count_bits
        self.ports = [self.valid, self.clear, self.x, self.gamma, self.gain]

    def elaborate(self, platform):
        import math
        m = Module()
        acc = Signal(signed(self.in_bits + self.count_bits))
        with m.If(self.clear):
            m.d.sync += acc.eq(0)
        with m.Elif(self.valid):
            m.d.sync += acc.eq(acc + self.x)
        table = Array(Const(round(255 / (1 + math.exp(-(i - 32) / 8))), 8) for i in range(64))
        idx = Signal(6)
        m.d.comb += [idx.eq(acc[-6:] ^ 0b100000), self.gain.eq(self.gamma * table[idx])]
        return m


def price(design) -> dict:
    work = Path(tempfile.mkdtemp(prefix="variant-cost-"))
    kw = {} if isinstance(design, wiring.Component) else {"ports": design.ports}      # a Component knows its ports
    (work / "top.v").write_text(verilog.convert(design, name="top", strip_internal_attrs=True, **kw))
    t0 = time.perf_counter()
    row = generic_gates(work, "top", "variant cost", {})
    row["synth_s"] = round(time.perf_counter() - t0, 1)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=4, help="channels the statistics memories hold (default 4)")
    ap.add_argument("--json", help="write the rows as JSON here")
    args = ap.parse_args()
    c = args.channels
    cfg = default_configs()["l2_s8"]
    lane = NormalizeAffine(cfg)
    blocks = [
        ("DSBN, D = 2", f"running statistics + gamma/beta of D = 2 domains x {c} channels", StatMemory(2 * c, ENTRY + 16)),
        ("MBN, k = 4", f"statistics memory, k = 4 entries x {c} channels", StatMemory(4 * c, ENTRY)),
        ("MBN, k = 4", "pooling: a running sum per word (mean; the scale word the same)", WindowPool(4, MEAN_BITS)),
        ("CBN, k = 4", "Taylor term: one 8 x 8 MAC (fan_in x (k - 1) cycles per channel)", Mac(8, 8, 24)),
        ("CBN, k = 4", f"gradient memory: (k - 1) x {c} channels x fan_in 9 x 2 words of 8 bits + W_tau",
         StatMemory(3 * c * 9, 8 * 3)),
        ("BKN", "transition A mu_prev and A^2 var_prev: one 8 x 16 MAC (C_prev cycles per channel)", Mac(8, 16, 32)),
        ("BKN", "Kalman update per channel (16-bit words, 8-bit gain)", KalmanUpdate(16)),
        ("Mixture, K = 3", f"K = 3 component entries x {c} channels", StatMemory(3 * c, ENTRY)),
        ("Mixture, K = 3", "log-density: one 16 x 16 MAC ((x - mu)^2 / var over C, per point and component)",
         Mac(16, 16, 40)),
        ("IEBN", "instance sum + 64-entry sigmoid table + gamma x gate", InstanceGate()),
        ("Proxy", "a second affine after the ReLU (one NormalizeAffine lane, l2_s8; the ReLU, a sign mux, apart)", lane),
    ]
    rows = []
    print("| variant | added block | gates (2-input) | flip-flops | synthesis s |\n|---|---|---|---|---|")
    for variant, what, design in blocks:
        r = price(design)
        rows.append(dict(variant=variant, block=what, **r))
        print(f"| {variant} | {what} | {r['gates']} | {r['gate_ffs']} | {r['synth_s']} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
