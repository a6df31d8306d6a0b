"""Building blocks shared by every normalization datapath.

Statistics units take one beat of `lanes` values per clock (`valid`, with a per-lane `mask` for
the masked last beat of a channel); `clear` starts a channel. NormalizeAffine is the shared pass
that turns a centred value into the output.
"""
from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out


def fmt_shape(fmt):
    """Amaranth shape of a FixedFormat's integer code."""
    return signed(fmt.bits) if fmt.signed else unsigned(fmt.bits)


def lanes_of(shape, lanes):
    """Payload layout of `lanes` values per beat, lane 0 in the least significant bits."""
    return data.ArrayLayout(shape, lanes)


def tree_sum(terms):
    """Balanced adder tree over a list of values (an expression; widths grow as needed)."""
    terms = list(terms)
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


def tree_reduce(terms, pick):
    """Balanced tree of a binary selection (max/min): pick(a, b) -> a or b as an expression."""
    terms = list(terms)
    while len(terms) > 1:
        terms = [pick(terms[i], terms[i + 1]) if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


def vmax(a, b):
    return Mux(a > b, a, b)


def vmin(a, b):
    return Mux(a < b, a, b)


class _BeatUnit(wiring.Component):
    """A statistics unit fed one beat of lanes per clock."""

    def __init__(self, cfg, members):
        self.cfg = cfg
        super().__init__({
            "clear": In(1),
            "valid": In(1),
            "x": In(lanes_of(fmt_shape(cfg.in_fmt), cfg.lanes)),
            "mask": In(cfg.lanes),
            **members,
        })


class _LaneAccumulator(_BeatUnit):
    """Accumulates term(x) over the channel: one term per lane, an adder tree, an accumulator."""

    output = None

    def __init__(self, cfg, shape):
        super().__init__(cfg, {self.output: Out(shape)})

    def term(self, x):
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        acc = getattr(self, self.output)
        beat = tree_sum(Mux(self.mask[j], self.term(self.x[j]), 0) for j in range(self.cfg.lanes))
        with m.If(self.clear):
            m.d.sync += acc.eq(0)
        with m.Elif(self.valid):
            m.d.sync += acc.eq(acc + beat)
        return m


class SumUnit(_LaneAccumulator):
    """S = sum(x)."""

    output = "sum"

    def __init__(self, cfg):
        super().__init__(cfg, signed(cfg.sum_bits))

    def term(self, x):
        return x


class SumSquares(_LaneAccumulator):
    """sum(x^2) for the L2 baseline: a squarer per lane."""

    output = "sq_sum"

    def __init__(self, cfg):
        super().__init__(cfg, cfg.sq_sum_bits)

    def term(self, x):
        return x * x


class MinMax(_BeatUnit):
    """max(x) and min(x) over the channel: compare trees across lanes."""

    def __init__(self, cfg):
        shape = fmt_shape(cfg.in_fmt)
        super().__init__(cfg, {"hi": Out(shape), "lo": Out(shape)})

    def elaborate(self, platform):
        m = Module()
        fi = self.cfg.in_fmt
        lanes = range(self.cfg.lanes)
        # masked lanes take the neutral element of the comparison
        hi = tree_reduce([Mux(self.mask[j], self.x[j], fi.min_int) for j in lanes], vmax)
        lo = tree_reduce([Mux(self.mask[j], self.x[j], fi.max_int) for j in lanes], vmin)
        with m.If(self.clear):
            m.d.sync += [self.hi.eq(fi.min_int), self.lo.eq(fi.max_int)]
        with m.Elif(self.valid):
            m.d.sync += [self.hi.eq(vmax(self.hi, hi)), self.lo.eq(vmin(self.lo, lo))]
        return m


class ChunkRange(_BeatUnit):
    """Range BN's chunked ranges: max - min per chunk of `chunk_size` consecutive values.

    A chunk is closed lazily, when the first value of the next one arrives, so at the end of the
    pass the open chunk is the last one: `r_closed` sums the ranges of the others, `r_open` is the
    last one's. With lanes, a beat may hold several chunk starts: a segmented max/min scan across
    the lanes closes each segment that a start ends.
    """

    def __init__(self, cfg):
        super().__init__(cfg, {"chunk_size": In(cfg.count_bits), "r_closed": Out(cfg.range_sum_bits),
                               "r_open": Out(cfg.in_fmt.bits)})

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        shape = fmt_shape(cfg.in_fmt)
        hi, lo = Signal(shape), Signal(shape)
        pos0 = Signal(cfg.count_bits)          # position inside its chunk of the next beat's lane 0
        have = Signal()                        # an open chunk exists
        m.d.comb += self.r_open.eq(hi - lo)

        cur_hi, cur_lo, cur_have = hi, lo, have
        pos = pos0
        closed = []
        for j in range(cfg.lanes):
            start = Signal(name=f"start{j}")
            m.d.comb += start.eq(self.mask[j] & (pos == 0))
            closed.append(Mux(start & cur_have, cur_hi - cur_lo, 0))
            nhi, nlo, nhave = Signal(shape, name=f"hi{j}"), Signal(shape, name=f"lo{j}"), Signal(name=f"have{j}")
            m.d.comb += [
                nhi.eq(Mux(start, self.x[j], Mux(self.mask[j], vmax(cur_hi, self.x[j]), cur_hi))),
                nlo.eq(Mux(start, self.x[j], Mux(self.mask[j], vmin(cur_lo, self.x[j]), cur_lo))),
                nhave.eq(cur_have | self.mask[j]),
            ]
            npos = Signal(cfg.count_bits, name=f"pos{j + 1}")
            m.d.comb += npos.eq(Mux(pos + 1 == self.chunk_size, 0, pos + 1))
            cur_hi, cur_lo, cur_have, pos = nhi, nlo, nhave, npos

        with m.If(self.clear):
            m.d.sync += [self.r_closed.eq(0), have.eq(0), pos0.eq(0)]
        with m.Elif(self.valid):
            m.d.sync += [self.r_closed.eq(self.r_closed + tree_sum(closed)),
                         hi.eq(cur_hi), lo.eq(cur_lo), have.eq(cur_have), pos0.eq(pos)]
        return m


class _DevUnit(_BeatUnit):
    """A pass over d = n*x - S (after the sum is known): |d| per lane, registered, then reduced."""

    def __init__(self, cfg, members):
        super().__init__(cfg, {"count": In(cfg.count_bits), "sum": In(signed(cfg.sum_bits)),
                               "busy": Out(1), **members})

    def abs_dev_stage(self, m):
        """Stage 1: |n*x_j - S| for every lane, registered with its lane-valid bit."""
        cfg = self.cfg
        dev = [Signal(cfg.dev_bits, name=f"dev{j}") for j in range(cfg.lanes)]
        ok = Signal(cfg.lanes)
        with m.If(self.clear):
            m.d.sync += ok.eq(0)
        with m.Else():
            m.d.sync += ok.eq(Mux(self.valid, self.mask, 0))
            for j in range(cfg.lanes):
                d = self.count * self.x[j] - self.sum
                m.d.sync += dev[j].eq(Mux(d < 0, -d, d))
        m.d.comb += self.busy.eq(ok != 0)
        return dev, ok


class AbsDevSum(_DevUnit):
    """L1: sum |n*x - S| over the channel."""

    def __init__(self, cfg):
        super().__init__(cfg, {"dev_sum": Out(cfg.dev_sum_bits)})

    def elaborate(self, platform):
        m = Module()
        dev, ok = self.abs_dev_stage(m)
        beat = tree_sum(Mux(ok[j], dev[j], 0) for j in range(self.cfg.lanes))
        with m.If(self.clear):
            m.d.sync += self.dev_sum.eq(0)
        with m.Elif(ok != 0):
            m.d.sync += self.dev_sum.eq(self.dev_sum + beat)
        return m


class TopK(_DevUnit):
    """Top-k: a k-entry register kept sorted (largest first); each lane's |n*x - S| is inserted in turn.

    Slots start at 0, so the sum of the slots is the sum of the min(k, n) largest deviations.
    """

    def __init__(self, cfg):
        super().__init__(cfg, {"dev_sum": Out(cfg.dev_sum_bits)})

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        dev, ok = self.abs_dev_stage(m)
        slots = [Signal(cfg.dev_bits, name=f"slot{i}") for i in range(cfg.k)]
        cur = slots
        for j in range(cfg.lanes):
            ge = [Signal(name=f"ge{j}_{i}") for i in range(cfg.k)]
            nxt = [Signal(cfg.dev_bits, name=f"ins{j}_{i}") for i in range(cfg.k)]
            for i in range(cfg.k):
                m.d.comb += ge[i].eq(ok[j] & (dev[j] > cur[i]))
                prev_ge = ge[i - 1] if i else 0
                m.d.comb += nxt[i].eq(Mux(ge[i], Mux(prev_ge, cur[i - 1] if i else 0, dev[j]), cur[i]))
            cur = nxt
        m.d.comb += self.dev_sum.eq(tree_sum(slots))
        with m.If(self.clear):
            m.d.sync += [s.eq(0) for s in slots]
        with m.Elif(ok != 0):
            m.d.sync += [s.eq(c) for s, c in zip(slots, cur)]
        return m


class ISqrt(wiring.Component):
    """floor(sqrt(w)) by the restoring digit-by-digit method: one result bit per clock."""

    def __init__(self, w_bits: int):
        self.w_bits = w_bits + (w_bits & 1)
        self.root_bits = self.w_bits // 2
        self.latency = self.latency_for(w_bits)
        super().__init__({"start": In(1), "w": In(w_bits), "done": Out(1), "root": Out(self.root_bits)})

    @staticmethod
    def latency_for(w_bits: int) -> int:
        return (w_bits + (w_bits & 1)) // 2 + 1

    def elaborate(self, platform):
        m = Module()
        rb = self.root_bits
        w = Signal(self.w_bits)
        rem = Signal(rb + 2)
        root = Signal(rb)
        steps = Signal(range(rb + 1))
        busy = Signal()
        trial = Signal(rb + 2)
        cand = Signal(rb + 4)
        m.d.comb += [cand.eq((rem << 2) | w[-2:]), trial.eq((root << 2) | 1), self.root.eq(root)]
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [w.eq(self.w), rem.eq(0), root.eq(0), steps.eq(rb), busy.eq(1)]
        with m.Elif(busy):
            with m.If(cand >= trial):
                m.d.sync += [rem.eq(cand - trial), root.eq((root << 1) | 1)]
            with m.Else():
                m.d.sync += [rem.eq(cand), root.eq(root << 1)]
            m.d.sync += [w.eq(w << 2), steps.eq(steps - 1)]
            with m.If(steps == 1):
                m.d.sync += [busy.eq(0), self.done.eq(1)]
        return m


class NormalizeAffine(wiring.Component):
    """The normalize pass, `lanes` values per clock: y = sat(round(((A*x - B) * M + bias) >> shift)).

    Training: A = n, B = S (so A*x - B = n (x - mu), exact). Inference: A = 2**MF, B = mean.
    Four pipeline stages (centre, multiply, add bias, round+saturate) that stall together when the
    output is back-pressured. Masked lanes of the last beat output 0 and are not counted.
    `sat_count` counts saturated outputs since `clear`.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.latency = 4
        lanes = cfg.lanes
        super().__init__({
            "i": In(stream.Signature(lanes_of(fmt_shape(cfg.in_fmt), lanes))),
            "mask": In(lanes),
            "o": Out(stream.Signature(lanes_of(fmt_shape(cfg.out_fmt), lanes))),
            "clear": In(1),
            "infer": In(1),
            "count": In(cfg.count_bits),
            "sum": In(signed(cfg.sum_bits)),
            "mean": In(signed(cfg.mean_bits)),
            "mult": In(signed(cfg.mult_bits)),
            "bias": In(signed(cfg.acc_bits)),
            "shift": In(range(cfg.shift_max + 1)),
            "busy": Out(1),
            "sat_count": Out(cfg.count_bits),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        lanes = cfg.lanes
        lo, hi = cfg.out_fmt.min_int, cfg.out_fmt.max_int
        ce = Signal()
        v = [Signal(name=f"v{k}") for k in range(1, 5)]
        ok = [Signal(lanes, name=f"ok{k}") for k in range(1, 5)]
        m.d.comb += [
            ce.eq(~v[3] | self.o.ready),
            self.i.ready.eq(ce),
            self.o.valid.eq(v[3]),
            self.busy.eq(v[0] | v[1] | v[2] | v[3]),
        ]
        sat_flags = []
        with m.If(self.clear):
            m.d.sync += [s.eq(0) for s in v] + [self.sat_count.eq(0)]
        with m.Elif(ce):
            m.d.sync += [v[0].eq(self.i.valid), ok[0].eq(self.mask)]
            m.d.sync += [v[k].eq(v[k - 1]) for k in range(1, 4)] + [ok[k].eq(ok[k - 1]) for k in range(1, 4)]
        for j in range(lanes):
            d = Signal(signed(cfg.diff_bits), name=f"d{j}")
            p = Signal(signed(cfg.diff_bits + cfg.mult_bits), name=f"p{j}")
            a = Signal(signed(cfg.acc_bits), name=f"a{j}")
            y = Signal(fmt_shape(cfg.out_fmt), name=f"y{j}")
            q = Signal(signed(cfg.acc_bits), name=f"q{j}")
            m.d.comb += q.eq(a >> self.shift)
            if cfg.rounding == "half_even":
                mask = Signal(cfg.shift_max + 1, name=f"mask{j}")
                tie = Signal(name=f"tie{j}")
                m.d.comb += [mask.eq((1 << self.shift) - 1),
                             tie.eq((self.shift != 0) & ((a.as_unsigned() & mask) == 0))]
                qr = Signal(signed(cfg.acc_bits), name=f"qr{j}")
                m.d.comb += qr.eq(q - (tie & q[0]))
            else:
                qr = q
            over, under = Signal(name=f"over{j}"), Signal(name=f"under{j}")
            m.d.comb += [over.eq(qr > hi), under.eq(qr < lo)]
            sat_flags.append(v[2] & ok[2][j] & (over | under))
            centred = Mux(self.infer, (self.i.payload[j] << cfg.stat_frac_bits) - self.mean,
                          self.count * self.i.payload[j] - self.sum)
            with m.If(~self.clear & ce):
                m.d.sync += [
                    d.eq(centred),
                    p.eq(d * self.mult),
                    a.eq(p + self.bias),
                    y.eq(Mux(ok[2][j], Mux(over, hi, Mux(under, lo, qr)), 0)),
                ]
            m.d.comb += self.o.payload[j].eq(y)
        with m.If(~self.clear & ce):
            m.d.sync += self.sat_count.eq(self.sat_count + tree_sum(sat_flags))
        return m
