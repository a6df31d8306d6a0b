"""NormDatapath: one channel at a time, `lanes` values per clock, training or inference per channel.

Block diagram (docs/architecture.md):

    chan ─► descriptor registers
    i ─► SumUnit (S) ─┐                                  ┌─ training: M = gamma * recip, SH = L + base
    i ─► Deviation ───┴─► Den ─► Reciprocal (mantissa, L)┤
         (pass 1, or pass 2 for l1/topk)                 └─ inference: M = gamma * scale_m, SH = base - exp
                                        ALIGN (SH >= SH_min) ─► BIAS ─► NormalizeAffine (last pass) ─► o
                                                                 stats (S, Den, saturated count) ─► stats
"""
from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .blocks import NormalizeAffine, SumUnit, fmt_shape, lanes_of
from .deviation import DEVIATIONS, channel_layout
from .reciprocal import Reciprocal


class NormDatapath(wiring.Component):
    """The normalization datapath of one NormConfig (any kind).

    Per channel: a descriptor on `chan` (see NormConfig.channel_fields). Training (`infer` = 0):
    the channel's `count` values arrive on `i` once per pass (`cfg.passes` passes; the host resends
    them, there is no on-chip buffer), `lanes` per beat, the last beat masked; `i.ready` is low for a
    fixed latency before the last pass, which produces the outputs on `o`. Inference (`infer` = 1):
    one pass with the given mean and scale. Then one word on `stats`.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.scale_latency = self.scale_latency_for(cfg)
        lanes = cfg.lanes
        super().__init__({
            "chan": In(stream.Signature(channel_layout(cfg))),
            "i": In(stream.Signature(lanes_of(fmt_shape(cfg.in_fmt), lanes))),
            "o": Out(stream.Signature(lanes_of(fmt_shape(cfg.out_fmt), lanes))),
            "stats": Out(stream.Signature(data.StructLayout(
                {n: (signed(w) if s else w) for n, w, s in cfg.stats_fields}))),
        })

    @staticmethod
    def scale_latency_for(cfg) -> int:
        """Cycles from the last value of the statistics pass to the first cycle the normalize pass is
        accepted: DRAIN (l1/topk pipeline), START, the Den steps, RECIP start, the reciprocal,
        then MULT (on done), ALIGN, BIAS."""
        dev = DEVIATIONS[cfg.kind]
        drain = 1 if cfg.kind in ("l1", "topk") else 0
        return drain + 1 + dev.den_latency_for(cfg) + 1 + Reciprocal.latency_for(cfg.recip_bits) + 3

    @staticmethod
    def pass_gap_for(cfg) -> int:
        """Cycles between the last value of pass 1 and the first of pass 2 in the three-pass kinds."""
        return 1

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        lanes = cfg.lanes
        m.submodules.sum = su = SumUnit(cfg)
        m.submodules.dev = dev = DEVIATIONS[cfg.kind](cfg)
        m.submodules.norm = norm = NormalizeAffine(cfg)
        m.submodules.recip = recip = Reciprocal(cfg.den_bits, cfg.recip_bits)

        chan = Signal.like(self.chan.payload)
        seen = Signal(cfg.count_bits + 4)        # values accepted in the current pass
        mask = Signal(lanes)
        last = Signal()
        den = Signal(cfg.den_bits)
        shift_lim = max(abs(cfg.shift_base) + cfg.den_bits, abs(cfg.inf_shift_base) + 128, cfg.shift_max)
        shift_w = shift_lim.bit_length() + 1
        mult_raw = Signal(signed(cfg.mult_bits))
        shift_raw = Signal(signed(shift_w))
        mult = Signal(signed(cfg.mult_bits))
        shift = Signal(range(cfg.shift_max + 1))
        bias = Signal(signed(cfg.acc_bits))
        beat = Signal()                           # a beat is accepted this cycle

        m.d.comb += [mask[j].eq(seen + j < chan.count) for j in range(lanes)]
        m.d.comb += last.eq(seen + lanes >= chan.count)
        for unit in (su, dev):
            m.d.comb += [unit.x.eq(self.i.payload), unit.mask.eq(mask)]
        m.d.comb += [
            dev.count.eq(chan.count), dev.sum.eq(su.sum), dev.chan.eq(chan),
            norm.i.payload.eq(self.i.payload), norm.mask.eq(mask),
            norm.infer.eq(chan.infer), norm.count.eq(chan.count), norm.sum.eq(su.sum),
            norm.mean.eq(chan.mean), norm.mult.eq(mult), norm.bias.eq(bias), norm.shift.eq(shift),
            self.o.payload.eq(norm.o.payload), self.o.valid.eq(norm.o.valid), norm.o.ready.eq(self.o.ready),
            recip.den.eq(den),
            self.stats.payload.sum.eq(su.sum), self.stats.payload.den.eq(den),
            self.stats.payload.sat.eq(norm.sat_count),
        ]
        with m.If(beat):
            m.d.sync += seen.eq(seen + lanes)

        def take_pass(units, next_state):
            """A statistics pass: every beat goes to `units`; after the last one, `seen` restarts."""
            m.d.comb += [self.i.ready.eq(1), beat.eq(self.i.valid)]
            for u in units:
                m.d.comb += u.valid.eq(self.i.valid)
            with m.If(self.i.valid & last):
                m.d.sync += seen.eq(0)
                m.next = next_state

        three_pass = cfg.passes == 3
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.chan.ready.eq(1)
                with m.If(self.chan.valid):
                    m.d.sync += [chan.eq(self.chan.payload), seen.eq(0), den.eq(0)]
                    m.d.comb += [su.clear.eq(1), dev.clear.eq(1), norm.clear.eq(1)]
                    with m.If(self.chan.payload.infer):
                        m.next = "INFER"
                    with m.Else():
                        m.next = "PASS1"
            with m.State("PASS1"):
                take_pass([su] if three_pass else [su, dev], "PASS2" if three_pass else "START")
            if three_pass:
                with m.State("PASS2"):
                    take_pass([dev], "DRAIN")
                with m.State("DRAIN"):            # the |d| stage of l1/topk
                    m.next = "START"
            with m.State("START"):
                m.d.comb += dev.start.eq(1)
                m.next = "DEN"
            with m.State("DEN"):
                with m.If(dev.done):
                    m.d.sync += den.eq(dev.den)
                    m.next = "RECIP_START"
            with m.State("RECIP_START"):
                m.d.comb += recip.start.eq(1)
                m.next = "RECIP"
            with m.State("RECIP"):
                with m.If(recip.done):
                    m.d.sync += [mult_raw.eq(chan.gamma * recip.recip),
                                 shift_raw.eq(recip.lead + cfg.shift_base)]
                    m.next = "ALIGN"
            with m.State("INFER"):
                m.d.sync += [mult_raw.eq(chan.gamma * chan.scale_m),
                             shift_raw.eq(cfg.inf_shift_base - chan.scale_exp)]
                m.next = "ALIGN"
            with m.State("ALIGN"):
                # keep SH >= shift_min (so beta aligns exactly) by moving the excess into M
                pre = Signal(range(cfg.pre_shift_max + 1))
                m.d.comb += pre.eq(cfg.shift_min - shift_raw)
                with m.If(shift_raw < cfg.shift_min):
                    m.d.sync += [mult.eq(mult_raw << pre), shift.eq(cfg.shift_min)]
                with m.Else():
                    m.d.sync += [mult.eq(mult_raw), shift.eq(shift_raw)]
                m.next = "BIAS"
            with m.State("BIAS"):
                half = 0 if cfg.rounding == "floor" else (Const(1, 1) << shift) >> 1
                bsh = Signal(range(cfg.shift_max + cfg.out_fmt.frac + 1))
                m.d.comb += bsh.eq(shift + (cfg.out_fmt.frac - cfg.beta_fmt.frac))
                m.d.sync += bias.eq((chan.beta << bsh) + half)
                m.next = "NORM"
            with m.State("NORM"):
                more = Signal()
                m.d.comb += more.eq(seen < chan.count)
                m.d.comb += [norm.i.valid.eq(self.i.valid & more), self.i.ready.eq(norm.i.ready & more),
                             beat.eq(self.i.valid & norm.i.ready & more)]
                with m.If(~more & ~norm.busy):
                    m.next = "REPORT"
            with m.State("REPORT"):
                m.d.comb += self.stats.valid.eq(1)
                with m.If(self.stats.ready):
                    m.next = "IDLE"
        return m

