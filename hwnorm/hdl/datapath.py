"""RangeNorm: the Range batch-norm datapath, one channel at a time, two passes over its values.

Block diagram (docs/architecture.md):

    chan ─► registers ─┐
    i ─► RangeStats (pass 1: sum, chunk ranges) ─► sigma T ─► Den = n*T ─► Reciprocal
                                                                            │
    i ─► NormalizeAffine (pass 2) ◄── M = gamma*recip, shift, bias ◄────────┘ ─► o
                                                          stats (sum, sigma, sat) ─►
"""
from amaranth.hdl import Const, Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .blocks import NormalizeAffine, RangeStats, fmt_shape
from .reciprocal import Reciprocal


def _layout(fields):
    return data.StructLayout({n: signed(w) if s else unsigned(w) for n, w, s in fields})


class RangeNorm(wiring.Component):
    """Range BN for one NormConfig.

    Per channel: accept a descriptor on `chan` (count, chunk_size, c_full, c_last, gamma, beta),
    take the channel's `count` values on `i` (pass 1), wait a fixed latency, take the same values
    again on `i` (pass 2) while producing `count` normalized values on `o`, then report the
    channel's statistics on `stats`.
    """

    def __init__(self, cfg):
        if cfg.kind != "range":
            raise ValueError(f"kind={cfg.kind!r} is not supported by RangeNorm: allowed range")
        self.cfg = cfg
        self.scale_latency = self.scale_latency_for(cfg)
        super().__init__({
            "chan": In(stream.Signature(_layout(cfg.channel_fields))),
            "i": In(stream.Signature(fmt_shape(cfg.in_fmt))),
            "o": Out(stream.Signature(fmt_shape(cfg.out_fmt))),
            "stats": Out(stream.Signature(_layout(cfg.stats_fields))),
        })

    @staticmethod
    def scale_latency_for(cfg) -> int:
        """Cycles from the last pass-1 value to the first cycle pass 2 is accepted:
        SIGMA, DEN, START, the reciprocal, then MULT (on done), ALIGN, BIAS."""
        return 3 + Reciprocal.latency_for(cfg.recip_bits) + 3

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        m.submodules.pass1 = pass1 = RangeStats(cfg)
        m.submodules.pass2 = pass2 = NormalizeAffine(cfg)
        m.submodules.recip = recip = Reciprocal(cfg.den_bits, cfg.recip_bits)

        chan = Signal.like(self.chan.payload)
        seen = Signal(cfg.count_bits)          # values accepted in the current pass
        sigma = Signal(cfg.sigma_bits)
        den = Signal(cfg.den_bits)
        mult_raw = Signal(signed(cfg.mult_bits))
        shift_raw = Signal(signed(max(cfg.den_bits, cfg.shift_max, -cfg.shift_base).bit_length() + 2))
        mult = Signal(signed(cfg.mult_bits))
        shift = Signal(range(cfg.shift_max + 1))
        bias = Signal(signed(cfg.acc_bits))

        m.d.comb += [
            pass1.x.eq(self.i.payload),
            pass1.chunk_size.eq(chan.chunk_size),
            pass2.i.payload.eq(self.i.payload),
            pass2.count.eq(chan.count),
            pass2.sum.eq(pass1.sum),
            pass2.mult.eq(mult),
            pass2.bias.eq(bias),
            pass2.shift.eq(shift),
            self.o.payload.eq(pass2.o.payload),
            self.o.valid.eq(pass2.o.valid),
            pass2.o.ready.eq(self.o.ready),
            recip.den.eq(den),
            self.stats.payload.sum.eq(pass1.sum),
            self.stats.payload.sigma.eq(sigma),
            self.stats.payload.sat.eq(pass2.sat_count),
        ]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.chan.ready.eq(1)
                with m.If(self.chan.valid):
                    m.d.sync += [chan.eq(self.chan.payload), seen.eq(0)]
                    m.d.comb += [pass1.clear.eq(1), pass2.clear.eq(1)]
                    m.next = "STATS"
            with m.State("STATS"):
                m.d.comb += [self.i.ready.eq(1), pass1.valid.eq(self.i.valid)]
                with m.If(self.i.valid):
                    m.d.sync += seen.eq(seen + 1)
                    with m.If(seen == chan.count - 1):
                        m.next = "SIGMA"
            with m.State("SIGMA"):
                m.d.sync += [sigma.eq(chan.c_full * pass1.r_closed + chan.c_last * pass1.r_open + cfg.eps_int),
                             seen.eq(0)]
                m.next = "DEN"
            with m.State("DEN"):
                m.d.sync += den.eq(chan.count * sigma)
                m.next = "START"
            with m.State("START"):
                m.d.comb += recip.start.eq(1)
                m.next = "RECIP"
            with m.State("RECIP"):
                with m.If(recip.done):
                    m.d.sync += [mult_raw.eq(chan.gamma * recip.recip),
                                 shift_raw.eq(recip.lead + cfg.shift_base)]
                    m.next = "ALIGN"
            with m.State("ALIGN"):
                # keep SH >= shift_min (so beta aligns exactly) by moving the excess into M
                pre = Signal(range(cfg.pre_shift_max + 1))
                m.d.comb += pre.eq(cfg.shift_min - shift_raw)
                with m.If(shift_raw < cfg.shift_min):
                    m.d.sync += [mult.eq(mult_raw << pre),
                                 shift.eq(cfg.shift_min)]
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
                more = seen != chan.count
                m.d.comb += [pass2.i.valid.eq(self.i.valid & more),
                             self.i.ready.eq(pass2.i.ready & more)]
                with m.If(self.i.valid & pass2.i.ready & more):
                    m.d.sync += seen.eq(seen + 1)
                with m.If(~more & ~pass2.busy):
                    m.next = "REPORT"
            with m.State("REPORT"):
                m.d.comb += self.stats.valid.eq(1)
                with m.If(self.stats.ready):
                    m.next = "IDLE"
        return m
