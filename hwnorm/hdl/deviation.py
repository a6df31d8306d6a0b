"""The deviation estimators: one component per kind, each a statistics unit and the steps that turn
its result into Den = n * sigma_hat * 2**(CF + in_frac) (docs/numerics.md).

Uniform signature: beats arrive on `valid`/`x`/`mask` during the unit's pass (pass 1 for the
two-pass kinds, pass 2 for l1 and topk, which need the final sum S); `start` then runs the fixed
number of steps `den_latency` to `done`, with the result on `den`.
"""
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .blocks import AbsDevSum, ChunkRange, ISqrt, MinMax, SumSquares, TopK, fmt_shape, lanes_of


def channel_layout(cfg):
    return data.StructLayout({n: (signed(w) if s else w) for n, w, s in cfg.channel_fields})


class Deviation(wiring.Component):
    """Base: the shared signature and the pulse chain that sequences the Den steps."""

    den_steps = 1

    def __init__(self, cfg):
        self.cfg = cfg
        super().__init__({
            "clear": In(1), "valid": In(1),
            "x": In(lanes_of(fmt_shape(cfg.in_fmt), cfg.lanes)), "mask": In(cfg.lanes),
            "count": In(cfg.count_bits), "sum": In(signed(cfg.sum_bits)),
            "chan": In(channel_layout(cfg)),
            "start": In(1), "done": Out(1), "den": Out(cfg.den_bits), "busy": Out(1),
        })

    @classmethod
    def den_latency_for(cls, cfg) -> int:
        """Cycles from `start` to `done`."""
        return cls.den_steps

    def feed(self, m, unit):
        m.d.comb += [unit.clear.eq(self.clear), unit.valid.eq(self.valid), unit.x.eq(self.x),
                     unit.mask.eq(self.mask)]
        return unit

    def pulses(self, m, n):
        """step[k] is high k cycles after `start` (step[0] = start)."""
        step = [self.start] + [Signal(name=f"step{k}") for k in range(1, n + 1)]
        m.d.sync += [step[k].eq(step[k - 1]) for k in range(1, n + 1)]
        return step


class RangeDeviation(Deviation):
    """Range BN: Den = n * (c_full * R_closed + c_last * R_open + eps)."""

    den_steps = 2

    def elaborate(self, platform):
        m = Module()
        cfg, chan = self.cfg, self.chan
        m.submodules.ranges = r = self.feed(m, ChunkRange(cfg))
        m.d.comb += r.chunk_size.eq(chan.chunk_size)
        t = Signal(cfg.den_bits)
        step = self.pulses(m, 2)
        with m.If(step[0]):
            m.d.sync += t.eq(chan.c_full * r.r_closed + chan.c_last * r.r_open + cfg.eps_int)
        with m.If(step[1]):
            m.d.sync += self.den.eq(self.count * t)
        m.d.comb += self.done.eq(step[2])
        return m


class LinfDeviation(Deviation):
    """L-inf: max |x - mu| = max(max - mu, mu - min); Den = c * max(n*max - S, S - n*min) + n*eps."""

    den_steps = 2

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        m.submodules.minmax = mm = self.feed(m, MinMax(cfg))
        a = Signal(cfg.dev_bits)
        up, down = self.count * mm.hi - self.sum, self.sum - self.count * mm.lo
        step = self.pulses(m, 2)
        with m.If(step[0]):
            m.d.sync += a.eq(Mux(up > down, up, down))
        with m.If(step[1]):
            m.d.sync += self.den.eq(self.chan.c * a + self.count * cfg.eps_int)
        m.d.comb += self.done.eq(step[2])
        return m


class _DevSumDeviation(Deviation):
    """L1 and top-k: Den = c * (sum of |n*x - S| over the channel, or over the k largest) + n*eps."""

    den_steps = 1
    unit = None

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        m.submodules.dev = u = self.feed(m, self.unit(cfg))
        m.d.comb += [u.count.eq(self.count), u.sum.eq(self.sum), self.busy.eq(u.busy)]
        step = self.pulses(m, 1)
        with m.If(step[0]):
            m.d.sync += self.den.eq(self.chan.c * u.dev_sum + self.count * cfg.eps_int)
        m.d.comb += self.done.eq(step[1])
        return m


class L1Deviation(_DevSumDeviation):
    """L1: sqrt(pi/2) * mean |x - mu| (the host constant c = sqrt(pi/2)/n)."""

    unit = AbsDevSum


class TopkDeviation(_DevSumDeviation):
    """Top-k: C_inf(n) * mean of the k largest |x - mu| (c = C_inf(n)/min(k, n))."""

    unit = TopK


class L2Deviation(Deviation):
    """L2 baseline: V = n*sum(x^2) - S^2 = n^2 var; Den = isqrt(V * 2**(2 CF) + eps_n)."""

    @classmethod
    def den_latency_for(cls, cfg) -> int:
        return 2 + ISqrt.latency_for(cfg.w_bits)

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        m.submodules.squares = sq = self.feed(m, SumSquares(cfg))
        m.submodules.isqrt = root = ISqrt(cfg.w_bits)
        v = Signal(cfg.var_bits)
        step = self.pulses(m, 1)
        with m.If(step[0]):
            m.d.sync += v.eq(self.count * sq.sq_sum - self.sum * self.sum)
        m.d.comb += [root.start.eq(step[1]), root.w.eq((v << (2 * cfg.const_frac_bits)) + self.chan.eps_n)]
        with m.If(root.done):
            m.d.sync += self.den.eq(root.root)
        done = Signal()
        m.d.sync += done.eq(root.done)
        m.d.comb += self.done.eq(done)
        return m


DEVIATIONS = {"range": RangeDeviation, "l1": L1Deviation, "linf": LinfDeviation, "topk": TopkDeviation,
              "l2": L2Deviation}
