"""Datapath blocks shared by the normalization generators: pass-1 statistics and pass-2 normalize."""
from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


def fmt_shape(fmt):
    """Amaranth shape of a FixedFormat's integer code."""
    return signed(fmt.bits) if fmt.signed else unsigned(fmt.bits)


class RangeStats(wiring.Component):
    """Pass 1: running sum, and min/max per chunk of `chunk_size` consecutive values.

    A chunk is closed lazily, when the first value of the next one arrives, so at the end of the
    pass the open chunk is always the last one: `r_closed` sums the ranges of the others.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        super().__init__({
            "clear": In(1),
            "valid": In(1),
            "x": In(fmt_shape(cfg.in_fmt)),
            "chunk_size": In(cfg.count_bits),
            "sum": Out(signed(cfg.sum_bits)),
            "r_closed": Out(cfg.range_sum_bits),
            "r_open": Out(cfg.in_fmt.bits),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        hi = Signal(fmt_shape(cfg.in_fmt))
        lo = Signal(fmt_shape(cfg.in_fmt))
        fill = Signal(cfg.count_bits)
        first = Signal()

        m.d.comb += self.r_open.eq(hi - lo)
        with m.If(self.clear):
            m.d.sync += [self.sum.eq(0), self.r_closed.eq(0), first.eq(1), fill.eq(0)]
        with m.Elif(self.valid):
            m.d.sync += [self.sum.eq(self.sum + self.x), first.eq(0)]
            with m.If(first | (fill == self.chunk_size)):
                with m.If(~first):
                    m.d.sync += self.r_closed.eq(self.r_closed + self.r_open)
                m.d.sync += [hi.eq(self.x), lo.eq(self.x), fill.eq(1)]
            with m.Else():
                m.d.sync += [hi.eq(Mux(self.x > hi, self.x, hi)),
                             lo.eq(Mux(self.x < lo, self.x, lo)),
                             fill.eq(fill + 1)]
        return m


class NormalizeAffine(wiring.Component):
    """Pass 2, one value per clock: y = sat(round((( n*x - S) * M + bias) >> shift)).

    Four pipeline stages (centre, multiply, add bias, round+saturate) that all stall together
    when the output is back-pressured. `sat_count` counts saturated outputs since `clear`.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.latency = 4
        super().__init__({
            "i": In(stream.Signature(fmt_shape(cfg.in_fmt))),
            "o": Out(stream.Signature(fmt_shape(cfg.out_fmt))),
            "clear": In(1),
            "count": In(cfg.count_bits),
            "sum": In(signed(cfg.sum_bits)),
            "mult": In(signed(cfg.mult_bits)),
            "bias": In(signed(cfg.acc_bits)),
            "shift": In(range(cfg.shift_max + 1)),
            "busy": Out(1),
            "sat_count": Out(cfg.count_bits),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        ce = Signal()
        v1, v2, v3, v4 = (Signal(name=f"v{k}") for k in range(1, 5))
        d = Signal(signed(cfg.diff_bits))
        p = Signal(signed(cfg.diff_bits + cfg.mult_bits))
        a = Signal(signed(cfg.acc_bits))
        y = Signal(fmt_shape(cfg.out_fmt))

        m.d.comb += [
            ce.eq(~v4 | self.o.ready),
            self.i.ready.eq(ce),
            self.o.valid.eq(v4),
            self.o.payload.eq(y),
            self.busy.eq(v1 | v2 | v3 | v4),
        ]

        # Stage 4 logic: shift with rounding, then saturate.
        q = Signal(signed(cfg.acc_bits))
        m.d.comb += q.eq(a >> self.shift)
        if cfg.rounding == "half_even":
            mask = Signal(cfg.shift_max + 1)
            tie = Signal()
            m.d.comb += [mask.eq((1 << self.shift) - 1),
                         tie.eq((self.shift != 0) & ((a.as_unsigned() & mask) == 0))]
            qr = Signal(signed(cfg.acc_bits))
            m.d.comb += qr.eq(q - (tie & q[0]))
        else:
            qr = q
        lo, hi = cfg.out_fmt.min_int, cfg.out_fmt.max_int
        over, under = Signal(), Signal()
        m.d.comb += [over.eq(qr > hi), under.eq(qr < lo)]

        with m.If(self.clear):
            m.d.sync += [v1.eq(0), v2.eq(0), v3.eq(0), v4.eq(0), self.sat_count.eq(0)]
        with m.Elif(ce):
            m.d.sync += [
                v1.eq(self.i.valid), d.eq(self.count * self.i.payload - self.sum),
                v2.eq(v1), p.eq(d * self.mult),
                v3.eq(v2), a.eq(p + self.bias),
                v4.eq(v3), y.eq(Mux(over, hi, Mux(under, lo, qr))),
            ]
            with m.If(v3 & (over | under)):
                m.d.sync += self.sat_count.eq(self.sat_count + 1)
        return m
