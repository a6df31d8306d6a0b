"""The backward's per-lane selections, found again from x (nothing is kept from the forward but S and Den).

Each unit sees the channel's x twice: pass 1 (`p1`: a beat accepted) builds what the selection needs, pass 2 (`p2`)
answers, per lane of the current beat, `sel`: which per-channel dx constant the lane takes (0: coef 0). The sign kinds'
codes are 1 (t = +1) and 2 (t = -1), with `tsum` = sum(t) after pass 1; range's are 1 / 2 (+c_full / -c_full: the
chunk's first max / first min) and 3 / 4 (the same in the last chunk, c_last). Ties go to the lowest index, as in the
golden backward (hwnorm/golden/backward.py `_selection`).
"""
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .common import fmt_shape, lanes_of, tree_sum
from .statistics import chunk_starts, first_starts, second_start


class _Select(wiring.Component):
    """Common ports: clear (a new channel), p1 / p2 (a beat of pass 1 / 2 is accepted), x, mask, sel, tsum."""

    def __init__(self, cfg, members):
        self.cfg = cfg
        super().__init__({
            "clear": In(1), "p1": In(1), "p2": In(1),
            "x": In(lanes_of(fmt_shape(cfg.in_fmt), cfg.lanes)), "mask": In(cfg.lanes),
            "sel": Out(lanes_of(3, cfg.lanes)), "tsum": Out(signed(cfg.count_bits + 1)),
            **members,
        })


class SignSelect(_Select):
    """l1, mad: t_i = sgn(n x_i - S) by compares with q = floor(S / n) (rz: S = q n): +1 above q, 0 at q when rz,
    else -1. No multiplier."""

    def __init__(self, cfg):
        super().__init__(cfg, {"q": In(signed(cfg.in_fmt.bits + 1)), "rz": In(1)})

    def elaborate(self, platform):
        m = Module()
        ts = []
        for j in range(self.cfg.lanes):
            x = self.x[j]
            pos, zero = x > self.q, (x == self.q) & self.rz
            m.d.comb += self.sel[j].eq(Mux(~self.mask[j] | zero, 0, Mux(pos, 1, 2)))
            ts.append(Mux(~self.mask[j] | zero, 0, Mux(pos, 1, -1)))
        with m.If(self.clear):
            m.d.sync += self.tsum.eq(0)
        with m.Elif(self.p1):
            m.d.sync += self.tsum.eq(self.tsum + tree_sum(ts))
        return m


class ChunkExtremes(_Select):
    """range: each chunk's max and min value (pass 1), then in pass 2 the first value equal to each (the chunk's first
    max / first min position: ties to the lowest index). Lane j's chunk is lane 0's plus the chunk starts in lanes
    1 .. j; the starts come from the distance to the next beat's first start, as in the forward's ChunkRange
    (statistics.chunk_starts: compares with constants, one adder), registered a beat ahead (`chunk_size` must hold
    from `clear` on: the top gives the descriptor's on that cycle). Pass 1 finds each lane's running max / min of its
    chunk in one level (`_runs`) and writes each chunk's value when the beat leaves it, a cycle later from registers
    (so pass 2 starts a cycle after pass 1's last beat at the earliest; the top's per-channel program runs between
    them); pass 2 looks up the lane's chunk and keeps, for the open chunk, whether its max / min came already. No
    indices are stored. `rewind` returns to the channel's first value between the passes."""

    def __init__(self, cfg):
        super().__init__(cfg, {"chunk_size": In(cfg.count_bits), "rewind": In(1)})

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        lanes, nch, cb = cfg.lanes, cfg.chunks, cfg.count_bits
        shape = fmt_shape(cfg.in_fmt)
        cs = self.chunk_size
        hi_v = Array(Signal(shape, name=f"hi_v{c}") for c in range(nch))
        lo_v = Array(Signal(shape, name=f"lo_v{c}") for c in range(nch))
        open_hi, open_lo = Signal(shape), Signal(shape)   # pass 1: the open chunk's running max / min
        found_hi, found_lo = Signal(), Signal()            # pass 2: the open chunk's max / min came already
        chunk = [Signal(range(nch + lanes + 1), name=f"chunk{j}") for j in range(lanes)]
        last = Signal.like(chunk[0])                       # the channel's last chunk

        # the current beat's chunk starts and each lane's chunk are registered a beat ahead, from the distance to the
        # next beat's first start (the forward's ChunkRange does the same: compares with constants, one adder);
        # lane j's chunk is lane 0's plus the starts in lanes 1 .. j, lane 0's the last lane's plus its own start
        start = Signal(lanes)
        dist = Signal(cb)                      # the next beat's lanes before its first chunk start
        nflags, nxt = chunk_starts(m, dist, cs, lanes, cb)
        first, second = first_starts(cs, lanes), second_start(m, cs, lanes, cb)

        def lane_chunks(base, flags):
            return [base + (tree_sum([flags[i] for i in range(1, j + 1)]) if j else 0) for j in range(lanes)]
        with m.If(self.clear | self.rewind):
            m.d.sync += [start.eq(first), dist.eq(second)]
            m.d.sync += [r.eq(v) for r, v in zip(chunk, lane_chunks(0, first))]
        with m.Elif(self.p1 | self.p2):
            m.d.sync += [start.eq(Cat(*nflags)), dist.eq(nxt)]
            m.d.sync += [r.eq(v) for r, v in zip(chunk, lane_chunks(chunk[-1] + nflags[0], nflags))]
        with m.If(self.clear | self.rewind):
            m.d.sync += [found_hi.eq(0), found_lo.eq(0)]

        # pass 1: lane j's run = the max / min of its chunk so far (the open chunk's value and the masked lanes since
        # the chunk's start in this beat), every lane in one level (no lane-after-lane chain); a lane whose successor
        # starts a chunk (or the beat's last lane) writes its chunk's entry
        runs = self._runs(m, open_hi, open_lo, start)
        hi, lo = runs[-1]
        ends = [self.mask[j] & (start[j + 1] | ~self.mask[j + 1]) if j + 1 < lanes else self.mask[j]
                for j in range(lanes)]
        # the writes a cycle later, from registers (each lane's run, whether it ends its chunk, its chunk): the
        # chunk decode and the write select are off the open chunk's path (it was range's critical path, 14.1 ns)
        w_hi = [Signal(shape, name=f"w_hi{j}") for j in range(lanes)]
        w_lo = [Signal(shape, name=f"w_lo{j}") for j in range(lanes)]
        w_end = Signal(lanes)
        w_chunk = [Signal.like(chunk[0], name=f"w_chunk{j}") for j in range(lanes)]
        for c in range(nch):
            wr = [Signal(name=f"wr{c}_{j}") for j in range(lanes)]     # the one lane that ends chunk c
            m.d.comb += [wr[j].eq(w_end[j] & (w_chunk[j] == c)) for j in range(lanes)]
            with m.If(Cat(*wr).any()):
                m.d.sync += [hi_v[c].eq(_or_select(list(zip(wr, w_hi)))), lo_v[c].eq(_or_select(list(zip(wr, w_lo))))]
        m.d.sync += w_end.eq(0)
        with m.If(self.p1):
            m.d.sync += [open_hi.eq(hi), open_lo.eq(lo), w_end.eq(Cat(*ends))]
            m.d.sync += [r.eq(v) for r, v in zip(w_hi + w_lo + w_chunk, [h for h, _ in runs] + [lo_ for _, lo_ in runs]
                                                                          + chunk)]
            lc = last
            for j in range(lanes):
                lc = Mux(self.mask[j], chunk[j], lc)
            m.d.sync += last.eq(lc)

        # pass 2: the first value of its chunk equal to the chunk's max (min)
        fh_prev = found_hi & ~start[0]         # lane 0 continues the open chunk
        fl_prev = found_lo & ~start[0]
        eq_h, eq_l, hit_h, hit_l = [], [], [], []
        for j in range(lanes):
            cj = Mux(chunk[j] < nch, chunk[j], 0)
            eh = Signal(name=f"eq_hi{j}")
            el = Signal(name=f"eq_lo{j}")
            m.d.comb += [eh.eq(self.mask[j] & (self.x[j] == hi_v[cj])), el.eq(self.mask[j] & (self.x[j] == lo_v[cj]))]
            eq_h.append(eh)
            eq_l.append(el)
        fbs = []
        for j in range(lanes):
            chunk0 = ~start[1:j + 1].any() if j else Const(1)      # lane j is in lane 0's chunk
            before_h, before_l = fh_prev & chunk0, fl_prev & chunk0
            for i in range(j):                 # an earlier lane of the same chunk: no start in lanes i+1 .. j
                same = ~Cat(*start[i + 1:j + 1]).any()
                before_h = before_h | (same & eq_h[i])
                before_l = before_l | (same & eq_l[i])
            fh, fl = Signal(name=f"before_hi{j}"), Signal(name=f"before_lo{j}")
            m.d.comb += [fh.eq(before_h), fl.eq(before_l)]
            fbs.append((fh, fl))
            hit_h.append(eq_h[j] & ~fh)
            hit_l.append(eq_l[j] & ~fl)
        with m.If(self.p2 & ~self.rewind & ~self.clear):
            m.d.sync += [found_hi.eq(fbs[-1][0] | eq_h[-1]), found_lo.eq(fbs[-1][1] | eq_l[-1])]
        for j in range(lanes):
            lst = chunk[j] == last
            m.d.comb += self.sel[j].eq(Mux(~self.mask[j] | (hit_h[j] == hit_l[j]), 0,
                                           Mux(hit_h[j], Mux(lst, 3, 1), Mux(lst, 4, 2))))
        return m

    def _runs(self, m, open_hi, open_lo, start):
        """Per lane (max, min) of the values of its chunk up to it: the candidates are the open chunk's running value
        (when no masked lane up to j starts a chunk) and the masked lanes i <= j with no masked start in i+1 .. j. All
        pairwise compares at once, then each lane takes the one candidate that beats every other (ties to the lower
        index: the value is the same): depth one compare and two AND-OR levels instead of a chain of lanes compares."""
        lanes = self.cfg.lanes
        mask = self.mask
        vals = [open_hi] + [self.x[j] for j in range(lanes)], [open_lo] + [self.x[j] for j in range(lanes)]
        rstart = [Signal(name=f"rstart{j}") for j in range(lanes)]             # a masked lane that starts a chunk
        m.d.comb += [rstart[j].eq(mask[j] & start[j]) for j in range(lanes)]
        # candidate a (0: open, 1 + i: lane i) beats candidate b > a on the max (a >= b) / on the min (a <= b)
        beats = []
        for side, vs in enumerate(vals):
            bt = {}
            for a in range(lanes + 1):
                for b in range(a + 1, lanes + 1):
                    bt[a, b] = Signal(name=f"{'hl'[side]}ge{a}_{b}")
                    m.d.comb += bt[a, b].eq(vs[a] >= vs[b] if side == 0 else vs[a] <= vs[b])
            beats.append(bt)
        runs = []
        for j in range(lanes):
            ok = [Signal(name=f"cand{j}_{a}") for a in range(j + 2)]            # candidate a counts for lane j
            m.d.comb += ok[0].eq(~Cat(*rstart[:j + 1]).any())
            m.d.comb += [ok[i + 1].eq(mask[i] & ~Cat(*rstart[i + 1:j + 1]).any()) for i in range(j + 1)]
            run = []
            for side, vs in enumerate(vals):
                win = []
                for a in range(j + 2):
                    w = Signal(name=f"{'hl'[side]}win{j}_{a}")
                    others = [~ok[b] | (beats[side][a, b] if a < b else ~beats[side][b, a]) for b in range(j + 2) if b != a]
                    m.d.comb += w.eq(ok[a] & Cat(*others).all())
                    win.append(w)
                r = Signal.like(vs[0], name=f"run_{'hl'[side]}{j}")
                m.d.comb += r.eq(_or_select(list(zip(win, vs[:j + 2]))))
                run.append(r)
            runs.append(tuple(run))
        return runs


class TopSelect(_Select):
    """linf, topk (keys in the order of |d|, `_abs_keys`; t = sgn d) and cvar (key x, the order of d; t = 1): the m
    largest, ties to the lowest index, d_i = n x_i - S; no multiplier (the top gives q = floor(S / n), r = S - n q).
    Pass 1 keeps the k largest (key, t) in a sorted register, a new value going after equal ones (each beat merged in
    one level, `_merge`, a cycle after the beat); then thr = the m-th key, `budget` = how many of the first m equal
    it and tsum = their t (a cycle after the last merge; thr and budget registered: pass 2 starts two cycles after
    pass 1 at the earliest). Pass 2 selects key > thr, and key = thr while fewer than `budget` such values came
    before."""

    def __init__(self, cfg):
        super().__init__(cfg, {"n": In(cfg.count_bits), "q": In(signed(cfg.in_fmt.bits + 1)), "r": In(cfg.count_bits),
                               "m": In(range(cfg.k + 1))})
        kb = self.key_bits(cfg)
        # the sorted register (not ports; the tests read it): entry p's valid bit, key and t
        self.valid = [Signal(name=f"valid{p}") for p in range(cfg.k)]
        self.kreg = [Signal(signed(kb), name=f"kreg{p}") for p in range(cfg.k)]
        self.treg = [Signal(signed(2), name=f"treg{p}") for p in range(cfg.k)]

    @staticmethod
    def key_bits(cfg) -> int:
        """cvar's key is x itself (d = n x - S is increasing in x: the same order and the same ties, no multiplier);
        linf / topk's is 4 |u| (+ a), below 2**(in_bits + 2) + 2."""
        return cfg.in_fmt.bits + 1 if cfg.kind == "cvar" else cfg.in_fmt.bits + 4

    def _abs_keys(self, m):
        """linf / topk: keys in the order of |d| with its ties, without a multiplier. With q = floor(S / n), r = S - n q
        (0 <= r < n) and u = x - q, d = n u - r: above the mean (u >= 1) |d| = n u - r, else |d| = n |u| + r, so
        key = 4 |u|, plus a below the mean, with a = 0 (r = 0), 1 (2r < n), 4 (2r = n), 5 (2r > n), one per channel:
        a value below the mean at |u| = v sits between those above at v and v + 1, or ties v + 1 when 2r = n."""
        a = Signal(3)
        m.d.comb += a.eq(Mux(self.r == 0, 0, Mux(self.r << 1 < self.n, 1, Mux(self.r << 1 == self.n, 4, 5))))
        keys, ts = [], []
        for j in range(self.cfg.lanes):
            u = Signal(signed(self.cfg.in_fmt.bits + 2), name=f"u{j}")
            key = Signal(signed(self.key_bits(self.cfg)), name=f"key{j}")
            t = Signal(signed(2), name=f"t{j}")
            below = u <= 0
            m.d.comb += [u.eq(self.x[j] - self.q),
                         key.eq((Mux(u < 0, -u, u) << 2) + Mux(below, a, 0)),
                         t.eq(Mux((u == 0) & (self.r == 0), 0, Mux(below, -1, 1)))]
            keys.append(key)
            ts.append(t)
        return keys, ts

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        lanes, k = cfg.lanes, cfg.k
        cvar = cfg.kind == "cvar"
        kb = self.key_bits(cfg)
        if cvar:
            keys = [Signal(signed(kb), name=f"key{j}") for j in range(lanes)]
            m.d.comb += [key.eq(self.x[j]) for j, key in enumerate(keys)]
            ts = [Const(1, signed(2))] * lanes
        else:
            keys, ts = self._abs_keys(m)
        valid, kreg, treg = self.valid, self.kreg, self.treg
        # pass 1 merges a beat a cycle after it, from registers of its keys, t and mask: the key's subtract and
        # absolute value were on the merge's path into the sorted register (topk x 4: 23.8 ns)
        k1 = [Signal(signed(kb), name=f"k1_{j}") for j in range(lanes)]
        t1 = [Signal(signed(2), name=f"t1_{j}") for j in range(lanes)]
        mask1, merge = Signal(lanes), Signal()
        m.d.sync += [r.eq(v) for r, v in zip(k1 + t1, keys + ts)]
        m.d.sync += [mask1.eq(self.mask), merge.eq(self.p1 & ~self.clear)]
        nxt = self._merge(m, valid, kreg, treg, k1, t1, mask1)
        with m.If(self.clear):
            m.d.sync += [v.eq(0) for v in valid]
        with m.Elif(merge):
            for p in range(k):
                m.d.sync += [valid[p].eq(nxt[p][0]), kreg[p].eq(nxt[p][1]), treg[p].eq(nxt[p][2])]

        # thr and budget are registered from the sorted register (it holds still after pass 1, and pass 2 starts a
        # cycle later at the earliest): the m-th key's lookup is off pass 2's path (43 MHz for topk x 4 before)
        thr, thr_c = Signal(signed(kb)), Signal(signed(kb))
        budget, budget_c = Signal(range(k + 1)), Signal(range(k + 1))
        m.d.comb += thr_c.eq(Array(kreg)[self.m - 1])
        in_m = [p < self.m for p in range(k)]
        m.d.comb += [budget_c.eq(tree_sum([in_m[p] & (kreg[p] == thr_c) for p in range(k)])),
                     self.tsum.eq(tree_sum([Mux(in_m[p], treg[p], 0) for p in range(k)]))]
        m.d.sync += [thr.eq(thr_c), budget.eq(budget_c)]

        seen = Signal(range(k + lanes + 1))         # values equal to thr so far, saturated at k (budget <= k)
        eqs = [self.mask[j] & (keys[j] == thr) for j in range(lanes)]
        for j in range(lanes):
            before = seen + (tree_sum(eqs[:j]) if j else 0)
            pick = self.mask[j] & ((keys[j] > thr) | (eqs[j] & (before < budget)))
            m.d.comb += self.sel[j].eq(Mux(pick & (ts[j] != 0), Mux(ts[j] > 0, 1, 2), 0))
        with m.If(self.clear):
            m.d.sync += seen.eq(0)
        with m.Elif(self.p2):
            nxt = seen + tree_sum(eqs)
            m.d.sync += seen.eq(Mux(nxt > k, k, nxt))
        return m

    def _merge(self, m, valid, kreg, treg, keys, ts, mask):
        """The k-register after one beat, in one level (not a lane-after-lane chain, lanes x k muxes deep: shallower
        logic, 31.7 -> 54.6 MHz for cvar x 4 alone on the ECP5). It is the
        stable merge of the register (earlier values, ahead on ties) and the beat's lanes (in lane order), cut to k:
        lane j's rank = entries with key >= its own + lanes before it with key >= + lanes after it with key >; entry
        p's = p + lanes with key > its own. Output q takes the value whose rank is q."""
        lanes, k = self.cfg.lanes, self.cfg.k
        kb = len(kreg[0])
        # ge[p][j]: entry p stays ahead of lane j; the register is sorted, so over p a prefix (a thermometer code)
        ge = [[Signal(name=f"ge{p}_{j}") for j in range(lanes)] for p in range(k)]
        for p in range(k):
            m.d.comb += [ge[p][j].eq(valid[p] & (kreg[p] >= keys[j])) for j in range(lanes)]
        # lane i ahead of lane j: i < j and key_i >= key_j, or i > j and key_i > key_j (one compare per pair)
        lge = {}
        for i in range(lanes):
            for j in range(i + 1, lanes):
                lge[i, j] = Signal(name=f"lge{i}_{j}")
                m.d.comb += lge[i, j].eq(keys[i] >= keys[j])
        lane_at = [[None] * k for _ in range(lanes)]       # lane j's rank is q
        for j in range(lanes):
            ahead = [mask[i] & (lge[i, j] if i < j else ~lge[j, i]) for i in range(lanes) if i != j]
            lc_is = [Signal(name=f"lc{j}_is{b}") for b in range(lanes)]    # b lanes ahead of lane j
            if ahead:
                lc = Signal(range(lanes), name=f"lc{j}")
                m.d.comb += lc.eq(tree_sum(ahead))
                m.d.comb += [lc_is[b].eq(lc == b) for b in range(lanes)]
            else:
                m.d.comb += lc_is[0].eq(1)
            # exactly a entries ahead of lane j (the thermometer's edge)
            at = [Signal(name=f"at{j}_{a}") for a in range(k)]
            m.d.comb += [at[a].eq((ge[a - 1][j] if a else 1) & ~ge[a][j]) for a in range(k)]
            for q in range(k):
                terms = [at[q - b] & lc_is[b] for b in range(min(lanes - 1, q) + 1)]
                lane_at[j][q] = Signal(name=f"lane{j}_at{q}")
                m.d.comb += lane_at[j][q].eq(mask[j] & Cat(*terms).any())
        keep_at = [dict() for _ in range(k)]                # entry p moves to p + (lanes passing it)
        for p in range(k):
            cp = Signal(range(lanes + 1), name=f"pass{p}")
            m.d.comb += cp.eq(tree_sum([mask[j] & ~ge[p][j] for j in range(lanes)]))
            for b in range(lanes + 1):
                if p + b < k:
                    keep_at[p][p + b] = Signal(name=f"keep{p}_at{p + b}")
                    m.d.comb += keep_at[p][p + b].eq(valid[p] & (cp == b))
        out = []
        for q in range(k):
            srcs = [(lane_at[j][q], keys[j], ts[j]) for j in range(lanes)]
            srcs += [(keep_at[p][q], kreg[p], treg[p]) for p in range(max(0, q - lanes), q + 1)]
            ent = (Signal(name=f"nv{q}"), Signal(signed(kb), name=f"nk{q}"), Signal(signed(2), name=f"nt{q}"))
            m.d.comb += [ent[0].eq(Cat(*[s for s, _, _ in srcs]).any()),
                         ent[1].eq(_or_select([(s, v) for s, v, _ in srcs])),
                         ent[2].eq(_or_select([(s, t) for s, _, t in srcs]))]
            out.append(ent)
        return out


def _or_select(pairs):
    """OR of the values whose one-hot select is set (0 if none): a shallow mux."""
    terms = [Mux(s, v, 0).as_unsigned() for s, v in pairs]
    while len(terms) > 1:
        terms = [terms[i] | terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]
