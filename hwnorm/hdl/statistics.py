"""Per-lane statistics hardware: what each kind pays for every value of the statistics passes.

Every kind: the sum S. Range: the chunked max/min scan; L-inf: max and min; L2: a squarer per lane
and the wide sum of squares; L1 and MAD: in their second pass, a comparator x > floor(mean) per lane
with the sum and count of the values above; semidev: in its second pass, a comparator x <= floor(mean)
and a squarer per lane, with the sum, count and sum of squares of the values below; top-k: the k
largest and the k smallest values (a sorted register per lane and side), from which the sequential
unit picks the k largest deviations; cvar: the k largest values only (the sequential unit sums the
top m of them). Nothing here multiplies by the count: that is the sequential unit's job (channel_math.py).
"""
from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib.wiring import In, Out

from ..config import MEAN_ABS_KINDS
from .common import BeatUnit, fmt_shape, pairwise, stage, tree_levels, tree_reduce, tree_sum, vmax, vmin


class _LaneAccumulator(BeatUnit):
    """Accumulates term(x) over the channel: one term per lane (registered when it is a multiplier),
    an adder tree (registered when there are several lanes), an accumulator: no path holds more than
    one of the three."""

    output = None
    registered_terms = False

    def __init__(self, cfg, shape):
        super().__init__(cfg, {self.output: Out(shape)})

    @classmethod
    def latency_for(cls, cfg) -> int:
        """L: the output holds a beat from the L-th cycle after the beat's `valid` on."""
        return 1 + cls.registered_terms + (cfg.lanes > 1)

    def term(self, x):
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        acc = getattr(self, self.output)
        lanes = range(self.cfg.lanes)
        terms, valid = [Mux(self.mask[j], self.term(self.x[j]), 0) for j in lanes], self.valid
        if self.registered_terms:
            terms, valid = stage(m, terms, valid, self.clear, "term")
        beat = tree_sum(terms)
        if self.cfg.lanes > 1:
            (beat,), valid = stage(m, [beat], valid, self.clear, "beat")
        with m.If(self.clear):
            m.d.sync += acc.eq(0)
        with m.Elif(valid):
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

    registered_terms = True

    def term(self, x):
        return x * x


class MinMax(BeatUnit):
    """max(x) and min(x) over the channel: compare trees across lanes (every level registered, one
    compare per cycle), then one compare with the running max and min."""

    def __init__(self, cfg):
        shape = fmt_shape(cfg.in_fmt)
        super().__init__(cfg, {"hi": Out(shape), "lo": Out(shape)})

    @classmethod
    def latency_for(cls, cfg) -> int:
        return 1 + tree_levels(cfg.lanes)

    def elaborate(self, platform):
        m = Module()
        fi = self.cfg.in_fmt
        lanes = range(self.cfg.lanes)
        # masked lanes take the neutral element of the comparison
        his = [Mux(self.mask[j], self.x[j], fi.min_int) for j in lanes]
        los = [Mux(self.mask[j], self.x[j], fi.max_int) for j in lanes]
        valid = self.valid
        for level in range(tree_levels(self.cfg.lanes)):
            his, los = pairwise(his, vmax), pairwise(los, vmin)
            regs, valid = stage(m, his + los, valid, self.clear, f"beat{level}_")
            his, los = regs[:len(his)], regs[len(his):]
        hi, lo = his[0], los[0]
        with m.If(self.clear):
            m.d.sync += [self.hi.eq(fi.min_int), self.lo.eq(fi.max_int)]
        with m.Elif(valid):
            m.d.sync += [self.hi.eq(vmax(self.hi, hi)), self.lo.eq(vmin(self.lo, lo))]
        return m


def chunk_starts(m, dist, cs, lanes: int, bits: int):
    """Chunk starts of a beat of `lanes` values, a beat ahead: lane j starts a chunk when j = dist + i * cs for some
    i >= 0. From registers of chunk_size loaded every cycle (cs >= lanes, cs - lanes, and cs = c for each c < lanes)
    the flags are compares of dist with constants, and the next beat's distance (the first start at or after `lanes`,
    minus lanes) one adder: dist - lanes, dist + (cs - lanes), or for cs < lanes a constant per (dist, cs). Returns
    (flags, next distance); cs must hold from a cycle before the flags are used."""
    big, over = Signal(name="cs_big"), Signal(bits, name="cs_over")
    small = {c: Signal(name=f"cs_is{c}") for c in range(1, lanes)}
    m.d.sync += [big.eq(cs >= lanes), over.eq(cs - lanes)] + [small[c].eq(cs == c) for c in small]
    near = [dist == d for d in range(lanes)]
    flags = [Signal(name=f"after_start{j}") for j in range(lanes)]
    for j in range(lanes):
        hits = [small[c] & near[d] for c in small for d in range(j) if (j - d) % c == 0]
        m.d.comb += flags[j].eq(Cat(near[j], *hits).any())
    nxt = Signal(bits, name="after_next")
    m.d.comb += nxt.eq(dist - lanes)
    with m.If(dist < lanes):
        m.d.comb += nxt.eq(dist + over)
        for c, is_c in small.items():
            for d in range(lanes):
                with m.If(is_c & near[d]):
                    m.d.comb += nxt.eq(d - (d - lanes) // c * c - lanes)
    return flags, nxt


def second_start(m, cs, lanes: int, bits: int):
    """The second beat's distance (chunk_starts' dist) from chunk_size alone: cs - lanes, or for cs < lanes the first
    multiple of cs at or after lanes, minus lanes (a constant per cs)."""
    second = Signal(bits, name="second_next")
    m.d.comb += second.eq(cs - lanes)
    for c in range(1, lanes):
        with m.If(cs == c):
            m.d.comb += second.eq(-(-lanes // c) * c - lanes)
    return second


def first_starts(cs, lanes: int):
    """The channel's first beat's chunk starts: lane j starts a chunk when chunk_size divides j (compares with
    constants)."""
    return Cat(*[Cat(*[cs == j // i for i in range(1, j + 1) if j % i == 0]).any() if j else 1 for j in range(lanes)])


class ChunkRange(BeatUnit):
    """Range BN's chunked ranges: max - min per chunk of `chunk_size` consecutive values.

    A chunk is closed lazily, when the first value of the next one arrives, so at the end of the
    pass the open chunk is the last one: `r_closed` sums the ranges of the others, `r_open` is the
    last one's. With lanes, a beat may hold several chunk starts: a segmented max/min scan across
    the lanes closes each segment that a start ends. The starts of each beat are computed a beat ahead
    from one register, the distance to a later chunk start, primed in the cycle before the first beat;
    the max and min of every window of the beat's lanes are registered first (no dependence on earlier
    beats), then combined with the carried chunk in one compare per lane, so no path runs through the
    lanes one after another. A beat's closed ranges reach `r_closed` `latency_for(cfg)` cycles later.
    """

    HELD_LEAD = 1       # chunk_size must hold from this many cycles before the first beat on

    @classmethod
    def latency_for(cls, cfg) -> int:
        """r_closed holds a beat from this cycle after it on (4; 5 with more than 2 lanes)."""
        return 4 + (cfg.lanes > 2)

    def __init__(self, cfg):
        super().__init__(cfg, {"chunk_size": In(cfg.count_bits), "r_closed": Out(cfg.range_sum_bits),
                               "r_open": Out(cfg.in_fmt.bits)})

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        lanes = cfg.lanes
        fi = cfg.in_fmt
        shape = fmt_shape(fi)
        hi, lo = Signal(shape), Signal(shape)  # the open chunk's max and min so far
        have = Signal()                        # an open chunk exists
        dist = Signal(cfg.count_bits)          # values before the first chunk start of the beat after the next
        cs = self.chunk_size                   # held from HELD_LEAD cycles before the first beat to the pass's end
        fresh = Signal()                       # the next beat is the channel's first
        start_next = Signal(lanes)             # the chunk starts of the next beat (after the first)
        m.d.comb += self.r_open.eq(hi - lo)

        # the first beat: lane j starts a chunk when chunk_size divides j (compares with constants)
        first = first_starts(cs, lanes)
        # one step ahead, so each register is one adder and compare from another: the starts of the
        # next beat from `dist`, and the distance one beat further on
        after, nxt = chunk_starts(m, dist, cs, lanes, cfg.count_bits)
        second = second_start(m, cs, lanes, cfg.count_bits)     # the second beat's distance, primed before the first beat
        starts = Mux(fresh, first, start_next)

        # stage A: max, min and "any value" of every window [a, b] of the beat's lanes, and the starts.
        # With more than 2 lanes, in two steps of one compare each: first the masked lanes and the
        # max/min of every adjacent pair, then each window from at most two of those pieces (4 lanes).
        def masked(j, hi_side):
            return Mux(self.mask[j], self.x[j], fi.min_int if hi_side else fi.max_int)

        st = Signal(lanes)                     # the registered beat's chunk starts
        beat = Signal()                        # stage A holds a beat
        if lanes > 2:
            piece_hi, piece_lo = {}, {}
            for a_ in range(lanes):
                for b_ in range(a_, min(a_ + 2, lanes)):
                    p_hi, p_lo = Signal(shape, name=f"p_hi{a_}_{b_}"), Signal(shape, name=f"p_lo{a_}_{b_}")
                    m.d.sync += [p_hi.eq(tree_reduce([masked(j, True) for j in range(a_, b_ + 1)], vmax)),
                                 p_lo.eq(tree_reduce([masked(j, False) for j in range(a_, b_ + 1)], vmin))]
                    piece_hi[a_, b_], piece_lo[a_, b_] = p_hi, p_lo
            any_r, st_r, beat_r = Signal(lanes), Signal(lanes), Signal()
            m.d.sync += [any_r.eq(self.mask), st_r.eq(Mux(self.valid, self.mask & starts, 0)),
                         beat_r.eq(self.valid & ~self.clear), st.eq(st_r), beat.eq(beat_r & ~self.clear)]

            def cover(a_, b_):
                return [(i, min(i + 1, b_)) for i in range(a_, b_ + 1, 2)]
            src_hi = lambda a_, b_: tree_reduce([piece_hi[c] for c in cover(a_, b_)], vmax)   # noqa: E731
            src_lo = lambda a_, b_: tree_reduce([piece_lo[c] for c in cover(a_, b_)], vmin)   # noqa: E731
            src_any = lambda a_, b_: any_r[a_:b_ + 1].any()                                 # noqa: E731
        else:
            m.d.sync += [st.eq(Mux(self.valid, self.mask & starts, 0)), beat.eq(self.valid & ~self.clear)]
            src_hi = lambda a_, b_: tree_reduce([masked(j, True) for j in range(a_, b_ + 1)], vmax)   # noqa: E731
            src_lo = lambda a_, b_: tree_reduce([masked(j, False) for j in range(a_, b_ + 1)], vmin)  # noqa: E731
            src_any = lambda a_, b_: self.mask[a_:b_ + 1].any()                                      # noqa: E731
        win = {}
        for a_ in range(lanes):
            for b_ in range(a_, lanes):
                w_hi, w_lo = Signal(shape, name=f"w_hi{a_}_{b_}"), Signal(shape, name=f"w_lo{a_}_{b_}")
                w_any = Signal(name=f"w_any{a_}_{b_}")
                m.d.sync += [w_hi.eq(src_hi(a_, b_)), w_lo.eq(src_lo(a_, b_)), w_any.eq(src_any(a_, b_))]
                win[a_, b_] = (w_hi, w_lo, w_any)

        # stage B: each start closes the segment before it (from the previous start, or the carried
        # chunk and the beat's first lanes); the carried chunk continues from the last start
        closed_hi = [Signal(shape, name=f"closed_hi{j}") for j in range(lanes)]
        closed_lo = [Signal(shape, name=f"closed_lo{j}") for j in range(lanes)]
        closed_ok = Signal(lanes)
        stage_b = []
        for j in range(lanes):
            c_hi, c_lo, c_ok = hi, lo, have                      # no earlier start in the beat
            if j:
                w_hi, w_lo, w_any = win[0, j - 1]
                c_hi, c_lo, c_ok = vmax(hi, w_hi), vmin(lo, w_lo), have | w_any
            for p in range(j):                                    # the latest earlier start p wins
                w_hi, w_lo, _ = win[p, j - 1]
                c_hi, c_lo, c_ok = Mux(st[p], w_hi, c_hi), Mux(st[p], w_lo, c_lo), Mux(st[p], 1, c_ok)
            stage_b += [closed_hi[j].eq(c_hi), closed_lo[j].eq(c_lo), closed_ok[j].eq(st[j] & c_ok)]
        w_hi, w_lo, w_any = win[0, lanes - 1]
        n_hi, n_lo, n_have = vmax(hi, w_hi), vmin(lo, w_lo), have | w_any
        for s_ in range(lanes):                                   # the last start wins
            w_hi, w_lo, _ = win[s_, lanes - 1]
            n_hi, n_lo, n_have = Mux(st[s_], w_hi, n_hi), Mux(st[s_], w_lo, n_lo), Mux(st[s_], 1, n_have)

        # stage C sums the closed ranges, stage D adds the sum to r_closed
        pending = Signal(fi.bits + lanes.bit_length() + 1)
        m.d.sync += [pending.eq(tree_sum(Mux(closed_ok[j], closed_hi[j] - closed_lo[j], 0) for j in range(lanes))),
                     self.r_closed.eq(self.r_closed + pending), closed_ok.eq(0)]
        with m.If(self.clear):
            m.d.sync += [self.r_closed.eq(0), pending.eq(0), have.eq(0), hi.eq(fi.min_int), lo.eq(fi.max_int),
                         fresh.eq(1)]
        with m.Else():
            with m.If(beat):
                m.d.sync += stage_b + [hi.eq(n_hi), lo.eq(n_lo), have.eq(n_have)]
            with m.If(self.valid):
                m.d.sync += [dist.eq(nxt), fresh.eq(0), start_next.eq(Cat(*after))]
            with m.Elif(fresh):                 # before the first beat: prime the distance
                m.d.sync += dist.eq(second)
        return m


class AboveMean(BeatUnit):
    """L1's second pass: the sum `s_hi` and the count `c_hi` of the values above `floor_mean`.

    x > mu exactly when x > floor(mu) (x is an integer), so sum|n x - S| = 2 (n s_hi - c_hi S):
    one comparator per lane instead of a count-wide multiply and subtract."""

    def __init__(self, cfg):
        super().__init__(cfg, {"floor_mean": In(signed(cfg.in_fmt.bits + 1)),
                               "s_hi": Out(signed(cfg.sum_bits)), "c_hi": Out(cfg.count_bits)})

    @classmethod
    def latency_for(cls, cfg) -> int:
        return 2 + (cfg.lanes > 1)

    def elaborate(self, platform):
        m = Module()
        lanes = range(self.cfg.lanes)
        # stage 1: compare and select per lane; stage 2 (several lanes): the adder trees; then accumulate
        terms = [Mux(self.mask[j] & (self.x[j] > self.floor_mean), self.x[j], 0) for j in lanes]
        flags = [self.mask[j] & (self.x[j] > self.floor_mean) for j in lanes]
        regs, valid = stage(m, terms + flags, self.valid, self.clear, "above")
        terms, flags = regs[:len(terms)], regs[len(terms):]
        s_beat, c_beat = tree_sum(terms), tree_sum(flags)
        if self.cfg.lanes > 1:
            (s_beat, c_beat), valid = stage(m, [s_beat, c_beat], valid, self.clear, "beat")
        with m.If(self.clear):
            m.d.sync += [self.s_hi.eq(0), self.c_hi.eq(0)]
        with m.Elif(valid):
            m.d.sync += [self.s_hi.eq(self.s_hi + s_beat), self.c_hi.eq(self.c_hi + c_beat)]
        return m


class BelowMean(BeatUnit):
    """Semidev's second pass: the sum `s_lo`, count `c_lo` and sum of squares `q_lo` of the values x <= `floor_mean`.

    x < mu exactly when x <= floor(mu), but for x = mu, whose term is 0: so sum over x < mu of (S - n x)^2 is
    n^2 q_lo - 2 n S s_lo + c_lo S^2. Per lane a registered comparator, then a registered squarer."""

    def __init__(self, cfg):
        super().__init__(cfg, {"floor_mean": In(signed(cfg.in_fmt.bits + 1)), "s_lo": Out(signed(cfg.sum_bits)),
                               "c_lo": Out(cfg.count_bits), "q_lo": Out(cfg.sq_sum_bits)})

    @classmethod
    def latency_for(cls, cfg) -> int:
        return 3 + (cfg.lanes > 1)

    def elaborate(self, platform):
        m = Module()
        lanes = self.cfg.lanes
        # stage 1: compare and select; stage 2: square; stage 3 (several lanes): the adder trees; then accumulate
        flags = [self.mask[j] & (self.x[j] <= self.floor_mean) for j in range(lanes)]
        terms = [Mux(flags[j], self.x[j], 0) for j in range(lanes)]
        regs, valid = stage(m, terms + flags, self.valid, self.clear, "below")
        terms, flags = regs[:lanes], regs[lanes:]
        regs, valid = stage(m, terms + flags + [t * t for t in terms], valid, self.clear, "square")
        beat = [tree_sum(regs[:lanes]), tree_sum(regs[lanes:2 * lanes]), tree_sum(regs[2 * lanes:])]
        if lanes > 1:
            beat, valid = stage(m, beat, valid, self.clear, "beat")
        outs = [self.s_lo, self.c_lo, self.q_lo]
        with m.If(self.clear):
            m.d.sync += [o.eq(0) for o in outs]
        with m.Elif(valid):
            m.d.sync += [o.eq(o + b) for o, b in zip(outs, beat)]
        return m


class ExtremeK(BeatUnit):
    """The k largest (or smallest) values of the channel, `head` = the most extreme one not yet popped.

    One k-slot sorted register per lane, each inserting its lane's value (one compare and one mux per
    slot, so the depth does not grow with the lanes); empty slots hold the neutral value, so the first
    min(k, n) values popped are the min(k, n) most extreme of the channel. `head` is the best of the
    lanes' heads through a compare tree registered at every level (`head_latency` cycles after the
    registers change), and `pop` shifts that lane's register by one (a k-way merge, one value per pop)."""

    def __init__(self, cfg, largest: bool):
        self.largest = largest
        super().__init__(cfg, {"pop": In(1), "head": Out(fmt_shape(cfg.in_fmt))})

    @classmethod
    def latency_for(cls, cfg) -> int:
        return 1 + cls.head_latency(cfg)

    @staticmethod
    def head_latency(cfg) -> int:
        """Cycles from a change of the sorted registers (a pop) until `head` and the popped lane follow it."""
        return tree_levels(cfg.lanes)

    def _better(self, a, b):
        return a > b if self.largest else a < b

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        shape = fmt_shape(cfg.in_fmt)
        neutral = cfg.in_fmt.min_int if self.largest else cfg.in_fmt.max_int
        regs = [[Signal(shape, name=f"slot{j}_{i}", init=neutral) for i in range(cfg.k)] for j in range(cfg.lanes)]
        # the best head across lanes, with its lane (ties: the lowest lane)
        nodes = [(r[0], Const(j, max(1, (cfg.lanes - 1).bit_length()))) for j, r in enumerate(regs)]
        level = 0
        while len(nodes) > 1:
            nxt = []
            for i in range(0, len(nodes), 2):
                if i + 1 == len(nodes):
                    nxt.append(nodes[i])
                    continue
                (va, ia), (vb, ib) = nodes[i], nodes[i + 1]
                take_b = self._better(vb, va)
                nxt.append((Mux(take_b, vb, va), Mux(take_b, ib, ia)))
            nodes = []
            for i, (v, lane) in enumerate(nxt):                # every level registered: one compare per cycle
                v_r = Signal(Value.cast(v).shape(), name=f"head{level}_{i}")
                lane_r = Signal(Value.cast(lane).shape(), name=f"lane{level}_{i}")
                m.d.sync += [v_r.eq(v), lane_r.eq(lane)]
                nodes.append((v_r, lane_r))
            level += 1
        best = Signal(range(max(2, cfg.lanes)), name="best_lane")
        m.d.comb += [self.head.eq(nodes[0][0]), best.eq(nodes[0][1])]
        for j, slots in enumerate(regs):
            x = self.x[j]
            beats = [Signal(name=f"beats{j}_{i}") for i in range(cfg.k)]
            ins = []
            for i in range(cfg.k):
                m.d.comb += beats[i].eq(self._better(x, slots[i]))
                ins.append(Mux(beats[i], Mux(beats[i - 1], slots[i - 1], x) if i else x, slots[i]))
            with m.If(self.clear):
                m.d.sync += [s_.eq(neutral) for s_ in slots]
            with m.Elif(self.pop & (best == j)):
                m.d.sync += [s_.eq(n_) for s_, n_ in zip(slots, slots[1:] + [neutral])]
            with m.Elif(self.valid & self.mask[j]):
                m.d.sync += [s_.eq(v_) for s_, v_ in zip(slots, ins)]
        return m


class StatisticsUnit(BeatUnit):
    """The per-lane statistics hardware of cfg's kind (the sum and the kind's own unit): what
    distinguishes the kinds; synthesized alone by `hwnorm synth`.

    `second` selects the second pass of L1 and MAD (the values above `floor_mean`) and semidev (those
    below); top-k's `pop_top`/`pop_bottom` step its sorted registers during the merge. Outputs by kind:
    `sum`; range `r_closed`, `r_open`; linf `hi`, `lo`; l2 `sq_sum`; l1, mad `s_hi`, `c_hi`; semidev
    `s_lo`, `c_lo`, `q_lo`; topk `top`, `bottom`; cvar `top` (the k largest values only). An FRN kind has its
    centred kind's outputs (frn: l2, frn_range: range, frn_linf: linf, frn_l1: l1's `s_hi`, `c_hi` of the values
    above 0, in the first and only statistics pass)."""

    def __init__(self, cfg):
        shape = fmt_shape(cfg.in_fmt)
        members = {"sum": Out(signed(cfg.sum_bits))}
        second_pass = {"second": In(1), "floor_mean": In(signed(cfg.in_fmt.bits + 1))}
        above = {**second_pass, "s_hi": Out(signed(cfg.sum_bits)), "c_hi": Out(cfg.count_bits)}
        members.update({
            "range": {"chunk_size": In(cfg.count_bits), "r_closed": Out(cfg.range_sum_bits),
                      "r_open": Out(cfg.in_fmt.bits)},
            "linf": {"hi": Out(shape), "lo": Out(shape)},
            "l2": {"sq_sum": Out(cfg.sq_sum_bits)},
            "l1": above, "mad": above,
            "semidev": {**second_pass, "s_lo": Out(signed(cfg.sum_bits)), "c_lo": Out(cfg.count_bits),
                        "q_lo": Out(cfg.sq_sum_bits)},
            "topk": {"pop_top": In(1), "pop_bottom": In(1), "top": Out(shape), "bottom": Out(shape)},
            "cvar": {"pop_top": In(1), "top": Out(shape)},
        }[cfg.stat_kind])
        super().__init__(cfg, members)

    UNITS = {"range": (ChunkRange,), "linf": (MinMax,), "l2": (SumSquares,), "l1": (AboveMean,),
             "mad": (AboveMean,), "topk": (ExtremeK,), "semidev": (BelowMean,), "cvar": (ExtremeK,)}

    @classmethod
    def latency_for(cls, cfg) -> int:
        """Cycles after a beat's `valid` until every output holds it: the input register, then the
        slowest of the kind's units (the sum's included)."""
        return 1 + max(u.latency_for(cfg) for u in (SumUnit, *cls.UNITS[cfg.stat_kind]))

    def _feed(self, m, unit, valid):
        m.d.comb += [unit.clear.eq(self.clear), unit.valid.eq(valid), unit.x.eq(self._x), unit.mask.eq(self._mask)]
        return unit

    def elaborate(self, platform):
        m = Module()
        kind = self.cfg.stat_kind       # an FRN kind: its centred kind's unit (frn_l1: AboveMean on pass 1, above 0)
        # the input register: no path runs from the datapath's lane masks or the bus into a unit
        self._x, self._mask = Signal.like(self.x), Signal.like(self.mask)
        valid, second = Signal(), Signal()
        m.d.sync += [self._x.eq(self.x), self._mask.eq(self.mask), valid.eq(self.valid & ~self.clear)]
        if self.cfg.passes == 3:
            m.d.sync += second.eq(self.second)
        first = valid & ~second
        m.submodules.sum = su = self._feed(m, SumUnit(self.cfg), first)
        m.d.comb += self.sum.eq(su.sum)
        if kind == "range":
            m.submodules.ranges = r = self._feed(m, ChunkRange(self.cfg), first)
            m.d.comb += [r.chunk_size.eq(self.chunk_size), self.r_closed.eq(r.r_closed), self.r_open.eq(r.r_open)]
        elif kind == "linf":
            m.submodules.minmax = mm = self._feed(m, MinMax(self.cfg), first)
            m.d.comb += [self.hi.eq(mm.hi), self.lo.eq(mm.lo)]
        elif kind == "l2":
            m.submodules.squares = sq = self._feed(m, SumSquares(self.cfg), first)
            m.d.comb += self.sq_sum.eq(sq.sq_sum)
        elif kind in MEAN_ABS_KINDS and self.cfg.frn:      # sum|x| = 2 (sum of x > 0) - S: one pass, threshold 0
            m.submodules.above = ab = self._feed(m, AboveMean(self.cfg), first)
            m.d.comb += [ab.floor_mean.eq(0), self.s_hi.eq(ab.s_hi), self.c_hi.eq(ab.c_hi)]
        elif kind in MEAN_ABS_KINDS:
            m.submodules.above = ab = self._feed(m, AboveMean(self.cfg), valid & second)
            m.d.comb += [ab.floor_mean.eq(self.floor_mean), self.s_hi.eq(ab.s_hi), self.c_hi.eq(ab.c_hi)]
        elif kind == "semidev":
            m.submodules.below = bl = self._feed(m, BelowMean(self.cfg), valid & second)
            m.d.comb += [bl.floor_mean.eq(self.floor_mean), self.s_lo.eq(bl.s_lo), self.c_lo.eq(bl.c_lo),
                         self.q_lo.eq(bl.q_lo)]
        elif kind == "topk":
            m.submodules.top = top = self._feed(m, ExtremeK(self.cfg, largest=True), first)
            m.submodules.bottom = bot = self._feed(m, ExtremeK(self.cfg, largest=False), first)
            m.d.comb += [top.pop.eq(self.pop_top), bot.pop.eq(self.pop_bottom),
                         self.top.eq(top.head), self.bottom.eq(bot.head)]
        elif kind == "cvar":
            m.submodules.top = top = self._feed(m, ExtremeK(self.cfg, largest=True), first)
            m.d.comb += [top.pop.eq(self.pop_top), self.top.eq(top.head)]
        return m


def statistics_verilog(cfg, name: str = "hwnorm_stats") -> str:
    """Verilog of cfg's StatisticsUnit alone (for synthesis)."""
    from amaranth.back import verilog
    return verilog.convert(StatisticsUnit(cfg), name=name, strip_internal_attrs=True)
