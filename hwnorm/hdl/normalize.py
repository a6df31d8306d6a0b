"""The normalize pass, `lanes` values per clock: y = sat(round((x*A + B) >> SH)).

One multiply-add per lane; A, B and SH are per channel (channel_math.py), the same in training and
inference. Pipeline: input register, multiply (partial products of 17-bit slices of A, one 18x18
DSP multiplier each), add (the partial products and B), shift (and tie detect), round and compare,
clamp: no stage deeper than one multiplier. All stages stall together when the output is back-pressured. Masked lanes of the
last beat output 0 and are not counted; `sat_count` counts saturated outputs since `clear`. FRN kinds add the TLU
z = max(y, tau) (tau per channel, an output code): one more comparator per lane beside the clamp's, registered with
them, and one more mux in the clamp stage (no extra stage).
"""
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .common import fmt_shape, lanes_of, tree_sum

STAGES = 6
DSP_BITS = 17                 # unsigned slice of A per partial product: a signed 18x18 multiplier


class NormalizeAffine(wiring.Component):
    def __init__(self, cfg):
        self.cfg = cfg
        self.latency = STAGES
        lanes = cfg.lanes
        super().__init__({
            "i": In(stream.Signature(lanes_of(fmt_shape(cfg.in_fmt), lanes))),
            "mask": In(lanes),
            "o": Out(stream.Signature(lanes_of(fmt_shape(cfg.out_fmt), lanes))),
            "clear": In(1),
            "a": In(signed(cfg.a_bits)),
            "b": In(signed(cfg.b_bits)),
            "shift": In(range(cfg.shift_max + 1)),
            "busy": Out(1),
            "sat_count": Out(cfg.count_bits),
            **({"tau": In(fmt_shape(cfg.out_fmt))} if cfg.frn else {}),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        lanes = cfg.lanes
        lo, hi = cfg.out_fmt.min_int, cfg.out_fmt.max_int
        ce = Signal()
        v = [Signal(name=f"v{k}") for k in range(STAGES)]
        ok = [Signal(lanes, name=f"ok{k}") for k in range(STAGES)]
        last = STAGES - 1
        m.d.comb += [
            ce.eq(~v[last] | self.o.ready),
            self.i.ready.eq(ce),
            self.o.valid.eq(v[last]),
            self.busy.eq(tree_sum(v) != 0),
        ]
        with m.If(self.clear):
            m.d.sync += [s.eq(0) for s in v] + [self.sat_count.eq(0)]
        with m.Elif(ce):
            m.d.sync += [v[0].eq(self.i.valid), ok[0].eq(self.mask)]
            m.d.sync += [v[k].eq(v[k - 1]) for k in range(1, STAGES)] + [ok[k].eq(ok[k - 1]) for k in range(1, STAGES)]
        x_shape = signed(cfg.in_fmt.bits + (0 if cfg.in_fmt.signed else 1))
        sat_flags = []
        for j in range(lanes):
            x = Signal(x_shape, name=f"x{j}")
            # x*A as partial products of at most DSP_BITS-bit slices of A (one 18x18 multiplier each),
            # added with B in the next stage: no stage holds more than one multiplier
            parts = []
            for bottom in range(0, cfg.a_bits, DSP_BITS):
                top = min(bottom + DSP_BITS, cfg.a_bits)
                piece = self.a[bottom:top] if top < cfg.a_bits else self.a[bottom:top].as_signed()
                pp = Signal(signed(len(x) + top - bottom + 1), name=f"p{j}_{bottom}")
                parts.append((pp, piece, bottom))
            acc = Signal(signed(cfg.acc_bits), name=f"acc{j}")
            q = Signal(signed(cfg.acc_bits), name=f"q{j}")
            over, under, low = Signal(name=f"over{j}"), Signal(name=f"under{j}"), Signal(name=f"below_tau{j}")
            y = Signal(fmt_shape(cfg.out_fmt), name=f"y{j}")
            qs = Signal(signed(cfg.acc_bits), name=f"qs{j}")
            tie = Signal(name=f"tie{j}")
            qr = qs - (tie & qs[0]) if cfg.rounding == "half_even" else qs
            with m.If(~self.clear & ce):
                m.d.sync += [
                    x.eq(self.i.payload[j]),
                    *[pp.eq(x * piece) for pp, piece, _ in parts],
                    acc.eq(tree_sum([pp << at for pp, _, at in parts] + [self.b])),
                    qs.eq(acc >> self.shift),
                    q.eq(qr),
                    over.eq(qr > hi), under.eq(qr < lo),
                ]
                clamped = Mux(over, hi, Mux(under, lo, q))
                if cfg.frn:             # max(clamp(q), tau) = tau when q < tau (lo <= tau <= hi), else clamp(q)
                    m.d.sync += [low.eq(qr < self.tau), y.eq(Mux(ok[4][j], Mux(low, self.tau, clamped), 0))]
                else:
                    m.d.sync += y.eq(Mux(ok[4][j], clamped, 0))
                if cfg.rounding == "half_even":
                    m.d.sync += tie.eq((acc.as_unsigned() & ((1 << self.shift) - 1)) == 0)
            sat_flags.append(v[4] & ok[4][j] & (over | under))
            m.d.comb += self.o.payload[j].eq(y)
        with m.If(~self.clear & ce):
            m.d.sync += self.sat_count.eq(self.sat_count + tree_sum(sat_flags))
        return m
