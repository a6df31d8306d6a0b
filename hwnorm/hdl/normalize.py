"""The normalize pass, `lanes` values per clock: y = sat(round((x*A + B) >> SH)), and in the special regime (a gain
so large that only x = q and q + 1 can land inside the output range: docs/numerics.md) x < q and x > q + 1 forced to
saturate, two comparators per lane.

One multiply-add per lane; A, B and SH are per channel (channel_math.py), the same in training and
inference. Pipeline: input register, multiply (partial products of 17-bit slices of A, one 18x18
DSP multiplier each), add (the partial products and B), shift (and tie detect), round and compare,
clamp: no stage deeper than one multiplier. All stages stall together when the output is back-pressured. Masked lanes of the
last beat output 0 and are not counted; `sat_count` counts saturated outputs since `clear`. FRN kinds add the TLU
z = max(y, tau) (tau per channel, an output code): one more comparator per lane beside the clamp's, registered with
them, and one more mux in the clamp stage (no extra stage).

A dropout build (cfg.dropout_active) has DROPOUT_STAGES more: the shift keeps E = DROPOUT_FRAC fraction bits
(t), t is clamped to one LSB beyond the output range, multiplied by the inverted-dropout scale S (or 2**F when
`drop` is low: an inference channel, the same result as without dropout), rounded once, clamped; a value the
LFSR (dropout.py, stepped once per accepted beat, loaded from `seed` on `clear`) drops outputs 0 and is not
counted as saturated (docs/numerics.md "Dropout"). The FRN kinds have no dropout build.

`side` (a width; an elementwise build's per-lane gamma/beta codes and lane mask): an opaque payload accepted with
each beat and carried through the stages beside it, out on `o_side` with that beat's y (no dropout build has one).
"""
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import DROPOUT_FRAC, DROPOUT_SEED_BITS
from .common import fmt_shape, lanes_of, tree_sum
from .dropout import DropoutLFSR
from .elementwise import STAGES as AFFINE_STAGES
from .pipeline import DSP_BITS, partial_products, stalling_pipeline

STAGES = 6
DROPOUT_STAGES = 4            # the dropout build's extra stages: clamp t, t*S in slices, add them, round (then compare, clamp)


def stages_for(cfg) -> int:
    """Pipeline stages of the normalize pass of cfg (its latency from an accepted beat to its output): with the
    dropout stages, or an elementwise build's ElementwiseAffine (elementwise.py) after NormalizeAffine."""
    return STAGES + (DROPOUT_STAGES if cfg.dropout_active else 0) + (AFFINE_STAGES if cfg.elementwise else 0)


class NormalizeAffine(wiring.Component):
    def __init__(self, cfg, side: int = 0):
        self.cfg = cfg
        self.side_bits = side
        self.latency = stages_for(cfg)
        lanes = cfg.lanes
        extra = {"seed": In(DROPOUT_SEED_BITS), "drop": In(1)} if cfg.dropout_active else {}
        super().__init__({
            **extra,
            "i": In(stream.Signature(lanes_of(fmt_shape(cfg.in_fmt), lanes))),
            "mask": In(lanes),
            "o": Out(stream.Signature(lanes_of(fmt_shape(cfg.out_fmt), lanes))),
            "clear": In(1),
            "a": In(signed(cfg.a_bits)),
            "b": In(signed(cfg.b_bits)),
            "shift": In(range(cfg.shift_max + 1)),
            "special": In(1), "neg": In(1),
            "q_lo": In(signed(cfg.in_fmt.bits + 2)), "q_hi": In(signed(cfg.in_fmt.bits + 2)),
            "busy": Out(1),
            "sat_count": Out(cfg.count_bits),
            **({"tau": In(fmt_shape(cfg.out_fmt))} if cfg.frn else {}),
            **({"side": In(side), "o_side": Out(side)} if side else {}),
        })

    def _forced(self, m, ce, x, j, depth):
        """The special regime's forced saturation of lane j (x below q or above q + 1, sides by gamma's sign), from the
        input register x, registered and carried `depth` stages: -> (force_hi, force_lo) at the last."""
        below, above = self.special & (x < self.q_lo), self.special & (x > self.q_hi)
        now = (Mux(self.neg, below, above), Mux(self.neg, above, below))
        for k in range(depth):
            regs = (Signal(name=f"force_hi{j}_{k}"), Signal(name=f"force_lo{j}_{k}"))
            with m.If(~self.clear & ce):
                m.d.sync += [regs[0].eq(now[0]), regs[1].eq(now[1])]
            now = regs
        return now

    def elaborate(self, platform):
        if self.cfg.dropout_active:
            return self._elaborate_dropout()
        m = Module()
        cfg = self.cfg
        lanes = cfg.lanes
        lo, hi = cfg.out_fmt.min_int, cfg.out_fmt.max_int
        ce, v, ok = stalling_pipeline(m, self, STAGES, self.mask)
        last = STAGES - 1
        if self.side_bits:          # the side payload moves with its beat (registers without reset: v marks them)
            side = [Signal(self.side_bits, name=f"side{k}", reset_less=True) for k in range(STAGES)]
            with m.If(~self.clear & ce):
                m.d.sync += [side[0].eq(self.side)] + [side[k].eq(side[k - 1]) for k in range(1, STAGES)]
            m.d.comb += self.o_side.eq(side[last])
        x_shape = signed(cfg.in_fmt.bits + (0 if cfg.in_fmt.signed else 1))
        sat_flags = []
        for j in range(lanes):
            x = Signal(x_shape, name=f"x{j}")
            # x*A as partial products of at most DSP_BITS-bit slices of A (one 18x18 multiplier each),
            # added with B in the next stage: no stage holds more than one multiplier
            parts = partial_products(self.a, x, j)
            acc = Signal(signed(cfg.acc_bits), name=f"acc{j}")
            q = Signal(signed(cfg.acc_bits), name=f"q{j}")
            over, under, low = Signal(name=f"over{j}"), Signal(name=f"under{j}"), Signal(name=f"below_tau{j}")
            y = Signal(fmt_shape(cfg.out_fmt), name=f"y{j}")
            qs = Signal(signed(cfg.acc_bits), name=f"qs{j}")
            tie = Signal(name=f"tie{j}")
            qr = qs - (tie & qs[0]) if cfg.rounding == "half_even" else qs
            f_hi, f_lo = self._forced(m, ce, x, j, 3)        # beside the shift stage's qs
            with m.If(~self.clear & ce):
                m.d.sync += [
                    x.eq(self.i.payload[j]),
                    *[pp.eq(x * piece) for pp, piece, _ in parts],
                    acc.eq(tree_sum([pp << at for pp, _, at in parts] + [self.b])),
                    qs.eq(acc >> self.shift),
                    q.eq(qr),
                    over.eq(f_hi | (~f_lo & (qr > hi))), under.eq(f_lo | (~f_hi & (qr < lo))),
                ]
                clamped = Mux(over, hi, Mux(under, lo, q))
                if cfg.frn:             # max(clamp(q), tau) = tau when q < tau (lo <= tau <= hi), else clamp(q)
                    m.d.sync += [low.eq(~f_hi & (f_lo | (qr < self.tau))),
                                 y.eq(Mux(ok[4][j], Mux(low, self.tau, clamped), 0))]
                else:
                    m.d.sync += y.eq(Mux(ok[4][j], clamped, 0))
                if cfg.rounding == "half_even":
                    m.d.sync += tie.eq((acc.as_unsigned() & ((1 << self.shift) - 1)) == 0)
            sat_flags.append(v[4] & ok[4][j] & (over | under))
            m.d.comb += self.o.payload[j].eq(y)
        with m.If(~self.clear & ce):
            m.d.sync += self.sat_count.eq(self.sat_count + tree_sum(sat_flags))
        return m

    def _elaborate_dropout(self):
        """The dropout build's pipeline: x, partial products, x*A + B, >> (SH - E) (and the sticky bits of
        half_even), t clamped, t*S as products of DSP_BITS-bit slices of t, z = their sum, round, compare, clamp
        (a dropped lane's `ok` bit is low: output 0). S is a register (per channel: `drop` is stable long before a
        pass), so no path runs from the descriptor into the multipliers."""
        m = Module()
        cfg = self.cfg
        lanes, n_st = cfg.lanes, stages_for(cfg)
        lo, hi = cfg.out_fmt.min_int, cfg.out_fmt.max_int
        e, f = DROPOUT_FRAC, cfg.dropout_scale_frac
        fe = f + e
        floor = cfg.rounding == "floor"
        m.submodules.lfsr = lfsr = DropoutLFSR(cfg)
        ce, v, ok = stalling_pipeline(m, self, n_st, self.mask & Mux(self.drop, lfsr.keep, (1 << lanes) - 1))
        m.d.comb += [lfsr.load.eq(self.clear), lfsr.seed.eq(self.seed), lfsr.step.eq(~self.clear & ce & self.i.valid)]
        last = n_st - 1
        x_shape = signed(cfg.in_fmt.bits + (0 if cfg.in_fmt.signed else 1))
        t_lo, t_hi = (lo - 1) << e, (hi + 1) << e
        t_shape = signed(max(t_lo.bit_length(), t_hi.bit_length()) + 1)
        mult = Signal(range(cfg.dropout_scale + 1))
        m.d.sync += mult.eq(Mux(self.drop, cfg.dropout_scale, 1 << f))
        sat_flags = []
        for j in range(lanes):
            x = Signal(x_shape, name=f"x{j}")
            parts = partial_products(self.a, x, j)
            acc = Signal(signed(cfg.acc_bits), name=f"acc{j}")
            qs = Signal(signed(cfg.acc_bits), name=f"qs{j}")
            sticky = [Signal(name=f"sticky{j}_{k}") for k in range(4)]
            t = Signal(t_shape, name=f"t{j}")
            zparts = [(Signal(signed(len(mult) + top - bottom + 1), name=f"zp{j}_{bottom}"),
                       t[bottom:top] if top < len(t) else t[bottom:top].as_signed(), bottom)
                      for bottom in range(0, len(t), DSP_BITS) for top in [min(bottom + DSP_BITS, len(t))]]
            z = Signal(signed(len(t) + len(mult) + 1), name=f"z{j}")
            rs = Signal(signed(len(z) - fe + 1), name=f"rs{j}")
            tie = Signal(name=f"tie{j}")
            q = Signal(signed(len(rs)), name=f"q{j}")
            over, under = Signal(name=f"over{j}"), Signal(name=f"under{j}")
            y = Signal(fmt_shape(cfg.out_fmt), name=f"y{j}")
            low = Signal(range(cfg.shift_max + 1), name=f"low{j}")
            m.d.comb += low.eq(self.shift - e)             # >= shift_lo - E >= 0: E <= GUARD_BITS
            tv = qs - (0 if floor else 1 << (e - 1))
            zh = z + (0 if floor else 1 << (fe - 1))
            qr = rs - (tie & rs[0]) if cfg.rounding == "half_even" else rs
            f_hi, f_lo = self._forced(m, ce, x, j, 3)        # beside the shift stage's qs
            with m.If(~self.clear & ce):
                m.d.sync += [
                    x.eq(self.i.payload[j]),
                    *[pp.eq(x * piece) for pp, piece, _ in parts],
                    acc.eq(tree_sum([pp << at for pp, _, at in parts] + [self.b])),
                    qs.eq(acc >> low),
                    t.eq(Mux(f_hi | (~f_lo & (tv > t_hi)), t_hi, Mux(f_lo | (tv < t_lo), t_lo, tv))),
                    *[zp.eq(piece * mult) for zp, piece, _ in zparts],
                    z.eq(tree_sum([zp << at for zp, _, at in zparts])),
                    rs.eq(zh >> fe),
                    q.eq(qr),
                    over.eq(qr > hi), under.eq(qr < lo),
                    y.eq(Mux(ok[last - 1][j], Mux(over, hi, Mux(under, lo, q)), 0)),
                ]
                if cfg.rounding == "half_even":
                    m.d.sync += [
                        sticky[0].eq((acc.as_unsigned() & ((1 << low) - 1)) == 0),
                        sticky[1].eq(sticky[0]), sticky[2].eq(sticky[1]), sticky[3].eq(sticky[2]),
                        tie.eq(sticky[3] & (z.as_unsigned()[:fe] == (1 << (fe - 1)))),
                    ]
            sat_flags.append(v[last - 1] & ok[last - 1][j] & (over | under))
            m.d.comb += self.o.payload[j].eq(y)
        with m.If(~self.clear & ce):
            m.d.sync += self.sat_count.eq(self.sat_count + tree_sum(sat_flags))
        return m
