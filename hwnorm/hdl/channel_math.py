"""ChannelMath: all per-channel arithmetic on one shared sequential unit (docs/numerics.md).

Between the passes it turns the channel's statistics into Den (the kind's deviation), the reciprocal
R = floor(2**(L+Q) / Den), and the normalize pass's A, B and SH; in inference it turns the given
mean and scale into A, B and SH. Each program is a fixed list of steps on a shift-add multiplier, a
restoring divider and (L2, semidev) a square root, so its latency is fixed and known (`latency`), and paid once
per channel, not per value.
"""
from dataclasses import dataclass

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..config import MEAN_ABS_KINDS
from .common import channel_layout, leading_one
from .sequential import ISqrt, SeqDiv, SeqMul
from .statistics import ExtremeK, StatisticsUnit


@dataclass
class Mul:
    """dst = c + a * b (c - a * b when `neg`), b unsigned and below 2**b_bits."""
    dst: object
    a: object
    b: object
    b_bits: int
    c: object = 0
    neg: object = 0

    def cycles(self):
        return self.b_bits + 3


@dataclass
class Div:
    """dst = floor(num / den) for den > 0; |dst| < 2**q_bits."""
    dst: object
    num: object
    den: object
    q_bits: int

    def cycles(self):
        return self.q_bits + 6      # two more to register num and |num|, two to sign the quotient


@dataclass
class Recip:
    """dst = floor(2**(lead + q) / den), lead = den's leading one: a division whose numerator is a
    single bit, loaded by a decoder instead of a shifter."""
    dst: object
    lead: object
    den: object
    q: int

    @property
    def q_bits(self):
        return self.q + 1

    def cycles(self):
        return self.q_bits + 5


@dataclass
class Sqrt:
    """dst = floor(sqrt(w)), w < 2**w_bits."""
    dst: object
    w: object
    w_bits: int

    def cycles(self):
        return ISqrt.steps_for(self.w_bits) + 3


@dataclass
class Set:
    """Registers loaded in one cycle from small combinational logic."""
    assigns: list

    def cycles(self):
        return 1


@dataclass
class Merge:
    """Top-k: picking, from the k largest and k smallest values, the min(k, n) largest deviations
    (each pick compares top + bottom with floor(2S/n)); k picks of two cycles, each then waiting `wait`
    cycles for the sorted registers' registered heads, and a last compare."""
    k: int
    wait: int = 0

    def cycles(self):
        return (2 + self.wait) * self.k + 1


@dataclass
class TopSum:
    """Cvar: the sum of the m largest values (m = the descriptor's `m` <= k), popped from the sorted registers'
    merged head; two cycles per pick and `wait` for the registered head, k picks, and a last compare."""
    k: int
    wait: int = 0

    def cycles(self):
        return (2 + self.wait) * self.k + 1


def _after_pop(here: str, wait: int) -> str:
    """The state after a pick's pop: the first of its wait states, or the next pick."""
    return f"{here}_w0" if wait else here


def _wait_states(m, here: str, wait: int):
    """`wait` idle states after a pick's pop, so the next pick reads heads that follow it."""
    for w in range(wait):
        with m.State(f"{here}_w{w}"):
            m.next = f"{here}_w{w + 1}" if w + 1 < wait else here


def _abs(v):
    return Mux(v < 0, -v, v)


class ChannelMath(wiring.Component):
    """`start` with `entry` (0: between L1's passes, 1: after the statistics passes, 2: inference);
    `done` pulses when den / a / b / sh (and L1's floor_mean) hold the channel's values.

    With cfg.overlap, `released` goes high once the running program no longer reads the statistics unit
    (the training program copies S after the deviation; the inference program never reads it), so the
    datapath may clear it for the next channel while the reciprocal and affine steps finish."""

    ENTRIES = ("mid", "train", "infer")

    def __init__(self, cfg):
        self.cfg = cfg
        super().__init__({
            "start": In(1), "entry": In(2), "done": Out(1),
            "chan": In(channel_layout(cfg)),
            "den": Out(max(1, cfg.den_bits)), "a": Out(signed(cfg.a_bits)), "b": Out(signed(cfg.b_bits)),
            "sh": Out(range(cfg.shift_max + 1)), "floor_mean": Out(signed(cfg.in_fmt.bits + 1)),
            "pop_top": Out(1), "pop_bottom": Out(1),
            **({"released": Out(1)} if cfg.overlap else {}),
        })
        self.stats_unit = None          # set by the datapath: the StatisticsUnit whose outputs it reads

    # -- the programs -------------------------------------------------------------------------

    def programs(self, st):
        """{entry: [steps]} over the statistics unit `st` (its outputs are stable while a program runs)."""
        cfg, chan = self.cfg, self.chan
        n, s = chan.count, st.sum
        q = cfg.recip_bits
        r = self._regs
        progs = {"mid": [], "train": [], "infer": []}
        if cfg.inference_only:
            progs.pop("mid"), progs.pop("train")
        else:
            # no-op steps while the last beat travels through the statistics pipeline: a program
            # reads its first statistic two cycles after the last beat (`start`, then its first step)
            drain = [Set([])] * max(0, StatisticsUnit.latency_for(cfg) - 2)
            mid = self._mid_program(st)
            progs["mid"] = drain + mid if mid else []
            # overlap: S copied with the reciprocal's leading one; from then on the statistics unit is free
            free = [r["s_hold"].eq(st.sum), self.released.eq(1)] if cfg.overlap else []
            progs["train"] = drain + self._den_program(st) + [
                Set([r["lead"].eq(leading_one(self._m, self.den, "den_lead"))] + free),
                Recip(r["recip"], r["lead"], self.den, q),
                Mul(r["m"], r["recip"], _abs(chan.gamma), cfg.gamma_fmt.bits, neg=chan.gamma < 0),
                Mul(r["km"], r["m"], n, cfg.count_bits),
                Set([r["sh0"].eq(r["lead"] + cfg.shift_base), r["tk"].eq(leading_one(self._m, n, "count_lead"))]),
            ] + self._affine_program(None if cfg.frn else r["s_hold"] if cfg.overlap else s, n, train=True)
        progs["infer"] = [
            Mul(r["m"], chan.scale_m, _abs(chan.gamma), cfg.gamma_fmt.bits, neg=chan.gamma < 0),
            Set([r["km"].eq(r["m"] << cfg.stat_frac_bits),
                 r["sh0"].eq(cfg.inf_shift_base - chan.scale_exp), r["tk"].eq(cfg.stat_frac_bits)]),
        ] + self._affine_program(chan.mean, None, train=False)
        return progs

    def _mid_program(self, st):
        cfg, n, s = self.cfg, self.chan.count, st.sum
        if cfg.passes == 3:         # floor(S / n): the second pass compares every value with it
            return [Div(self.floor_mean, s, n, cfg.in_fmt.bits + 1)]
        return []

    def _den_program(self, st):
        """Den = n * sigma_hat * 2**(CF + F_in), exactly as the golden model defines it."""
        cfg, chan, r = self.cfg, self.chan, self._regs
        n, s = chan.count, st.sum
        cb, ib = cfg.count_bits, cfg.in_fmt.bits
        t = r["t"]
        kind = cfg.stat_kind
        if cfg.frn:                 # no centring: the same programs about 0 (frn_l1's differs: sum|x| = 2 S_hi - S)
            if kind in MEAN_ABS_KINDS:                              # sum|n x| = n (2 S_hi - S)
                return [Mul(t, st.s_hi << 1, n, cb),
                        Mul(t, s, n, cb, t, neg=1),
                        Mul(self.den, t, chan.c, cfg.const_bits, chan.neps)]
            if kind == "linf":                                      # n max|x| = n max(max, -min)
                return [Set([t.eq(Mux(st.hi > -st.lo, st.hi, -st.lo))]),
                        Mul(t, t, n, cb),
                        Mul(self.den, t, chan.c, cfg.const_bits, chan.neps)]
            if kind == "l2":                                        # isqrt(n Q2 2**2CF + eps_n)
                return [Mul(t, st.sq_sum, n, cb),
                        Sqrt(self.den, (t << (2 * cfg.const_frac_bits)) + chan.eps_n, cfg.w_bits)]
        if kind == "range":
            return [Mul(t, chan.c_full, st.r_closed, cfg.range_sum_bits, chan.eps if cfg.frn else cfg.eps_int),
                    Mul(t, chan.c_last, st.r_open, ib, t),
                    Mul(self.den, t, n, cb)]
        if kind == "linf":
            u = r["u"]
            return [Mul(u, st.hi, n, cb, -s),                       # n max - S
                    Mul(t, st.lo, n, cb, s, neg=1),                 # S - n min
                    Set([t.eq(Mux(u > t, u, t))]),                  # n max|x - mu|
                    Mul(self.den, t, chan.c, cfg.const_bits, chan.neps)]
        if kind in MEAN_ABS_KINDS:                                  # sum|nx - S| = 2 (n s_hi - c_hi S)
            return [Mul(t, st.s_hi, n, cb),
                    Mul(t, s, st.c_hi, cb, t, neg=1),
                    Mul(self.den, t << 1, chan.c, cfg.const_bits, chan.neps)]
        if kind == "topk":                                      # sum of the min(k, n) largest |nx - S|
            h, cnt = r["hsum"], r["dcount"]
            kb = cfg.k.bit_length() + 1
            return [Div(r["f2"], s << 1, n, ib + 2),
                    Set([h.eq(0), cnt.eq(0), r["step"].eq(0)]),
                    Merge(cfg.k, ExtremeK.head_latency(cfg)),
                    Mul(t, h, n, cb),
                    Mul(t, s, _abs(cnt), kb, t, neg=cnt < 0),
                    Mul(self.den, t, chan.c, cfg.const_bits, chan.neps)]
        if kind == "semidev":
            return self._semidev_program(st)
        if kind == "cvar":                                      # sum of the m largest n x - S = n top - m S
            h = r["hsum"]
            return [Set([h.eq(0), r["step"].eq(0)]),
                    TopSum(cfg.k, ExtremeK.head_latency(cfg)),
                    Mul(t, h, n, cb),
                    Mul(t, s, chan.m, cfg.k.bit_length(), t, neg=1),
                    Mul(self.den, t, chan.c, cfg.const_bits, chan.neps)]
        if kind == "l2":                                        # isqrt((n Q2 - S^2) 2**2CF + eps_n)
            return [Mul(t, st.sq_sum, n, cb),
                    Mul(t, _abs(s), _abs(s), cfg.sum_bits, t, neg=1),
                    Sqrt(self.den, (t << (2 * cfg.const_frac_bits)) + chan.eps_n, cfg.w_bits)]
        raise ValueError(cfg.kind)

    def _semidev_program(self, st):
        """T = n (n Q_lo - 2 S S_lo) + c_lo S^2 = sum of [S - n x]_+^2; Den = isqrt(floor(T 2**2CF / n) + eps_n)."""
        cfg, chan, r = self.cfg, self.chan, self._regs
        n, s, cb, sb = chan.count, st.sum, cfg.count_bits, cfg.sum_bits
        t, u, wq = r["t"], r["u"], r["wq"]
        return [Mul(t, st.q_lo, n, cb),                                  # n Q_lo
                Mul(t, st.s_lo << 1, _abs(s), sb, t, neg=s >= 0),        # - 2 S S_lo
                Mul(t, t, n, cb),
                Mul(u, _abs(s), _abs(s), sb),                            # S^2
                Mul(t, u, st.c_lo, cb, t),                               # + c_lo S^2
                Div(wq, t << (2 * cfg.const_frac_bits), n, cfg.var_bits + 2 * cfg.const_frac_bits),
                Sqrt(self.den, wq + chan.eps_n, cfg.w_bits)]

    def _affine_program(self, c, n, train: bool):
        """A = (K M 2**pre) >> t, SH = SH0 + pre - t, B = bias - floor(A C / K) (docs/numerics.md); c None (FRN
        training: C = 0) leaves B = bias, with no multiply or division."""
        cfg, r = self.cfg, self._regs
        sh0, tk, pre, t = r["sh0"], r["tk"], r["pre"], r["tsh"]
        lo, hi = cfg.shift_lo, cfg.shift_max
        c_bits = cfg.sum_bits if train else cfg.mean_bits
        x_mag = max(-cfg.in_fmt.min_int, cfg.in_fmt.max_int)
        q_bits = cfg.a_bits - 1 + x_mag.bit_length() + 1
        # t = max(min(sh0 - lo, tk), sh0 - hi) unless sh0 < lo; as three compares side by side (hi > lo),
        # not a chain of two, so the step is one compare and a mux deep
        below, over, short = sh0 < lo, sh0 - hi > tk, sh0 - lo < tk
        shb = Signal(range(cfg.shift_max + cfg.out_fmt.frac - min(cfg.beta_fmt.frac, cfg.out_fmt.frac) + 1),
                     name="beta_shift")
        kmp, tcl, bias = r["kmp"], r["tcl"], r["bias"]
        self._m.d.comb += shb.eq(self.sh + (cfg.out_fmt.frac - cfg.beta_fmt.frac))
        half = 0 if cfg.rounding == "floor" else (Const(1, 1) << self.sh) >> 1
        steps = [
            Set([pre.eq(Mux(below, lo - sh0, 0)),
                 t.eq(Mux(below, 0, Mux(over, sh0 - hi, Mux(short, sh0 - lo, tk))))]),
            Set([kmp.eq(r["km"] << pre), tcl.eq(Mux(t > len(kmp), len(kmp), t)), self.sh.eq(sh0 + pre - t)]),
            Set([self.a.eq(kmp >> tcl), bias.eq((self.chan.beta << shb) + half)]),
        ]
        if c is None:
            return steps + [Set([self.b.eq(bias)])]
        steps.append(Mul(r["p"], self.a, _abs(c), c_bits, neg=c < 0))
        if train:
            steps.append(Div(r["quot"], r["p"], n, q_bits))
        else:
            steps.append(Set([r["quot"].eq(r["p"] >> cfg.stat_frac_bits)]))
        steps.append(Set([self.b.eq(bias - r["quot"])]))
        return steps

    @classmethod
    def release_for(cls, cfg) -> int:
        """Overlap: cycles from the training program's `start` to the first cycle `released` is high."""
        inst, m = cls(cfg), Module()
        inst._MustUse__silence = m._MustUse__silence = True
        inst._build(m, _FakeStats(cfg))
        prog = inst._progs["train"]
        k = next(i for i, step in enumerate(prog) if isinstance(step, Set) and any(
            a.lhs is inst._regs["s_hold"] for a in step.assigns if hasattr(a, "lhs")))
        return 1 + sum(step.cycles() for step in prog[:k + 1])

    @classmethod
    def latency_for(cls, cfg, entry: str) -> int:
        """Cycles from `start` to the cycle after `done` (the program's steps plus 1 to enter, 1 to finish)."""
        inst, m = cls(cfg), Module()
        inst._MustUse__silence = m._MustUse__silence = True      # built only to count its steps
        inst._build(m, _FakeStats(cfg))
        return sum(step.cycles() for step in inst._progs[entry]) + 2

    # -- elaboration --------------------------------------------------------------------------

    def _build(self, m, st):
        cfg = self.cfg
        self._m = m
        q = cfg.recip_bits
        sh_w = max(abs(cfg.shift_base) + cfg.den_bits, cfg.inf_shift_base + 130, cfg.shift_max).bit_length() + 2
        cb, ib, sb = cfg.count_bits, cfg.in_fmt.bits, cfg.sum_bits
        hsum_bits = ib + cfg.k.bit_length() + 2
        t_bits = 2 + {"range": cfg.const_bits + cfg.range_sum_bits + 1, "linf": cb + ib + 2, "l1": cb + sb + 2,
                      "mad": cb + sb + 2, "topk": cb + max(hsum_bits, sb) + 2,
                      "l2": cb + max(cfg.sq_sum_bits, 2 * sb),
                      "semidev": cb + max(cfg.sq_sum_bits + cb, 2 * sb + 1) + 2,
                      "cvar": cb + max(hsum_bits, sb) + 2}[cfg.stat_kind]
        m_bits = cfg.gamma_fmt.bits + q + 3
        km_bits = m_bits + max(cb, cfg.stat_frac_bits) + 1
        e_hi = cfg.scale_exp_range[1]
        pre_max = max(1, cfg.shift_lo - cfg.shift_base, cfg.shift_lo - (cfg.inf_shift_base - e_hi))
        self._regs = {
            "t": Signal(signed(t_bits), name="t"), "u": Signal(signed(t_bits), name="u"),
            "lead": Signal(range(max(2, cfg.den_bits)), name="lead"),
            "recip": Signal(q + 2, name="recip"),
            "m": Signal(signed(m_bits), name="m"),
            "km": Signal(signed(km_bits), name="km"),
            "sh0": Signal(signed(sh_w), name="sh0"), "tk": Signal(range(max(cb, cfg.stat_frac_bits) + 1), name="tk"),
            "pre": Signal(range(pre_max + 1), name="pre"),
            "kmp": Signal(signed(km_bits + pre_max), name="km_pre"),
            "tcl": Signal(range(km_bits + pre_max + 1), name="t_clamped"),
            "bias": Signal(signed(cfg.b_bits), name="bias"),
            "tsh": Signal(range(1 << sh_w), name="tsh"),
            "p": Signal(signed(cfg.a_bits + max(sb, cfg.mean_bits) + 2), name="p"),
            "quot": Signal(signed(cfg.a_bits + ib + 4), name="quot"),
            "f2": Signal(signed(ib + 3), name="f2"),
            "hsum": Signal(signed(hsum_bits), name="hsum"),
            "dcount": Signal(signed(cfg.k.bit_length() + 2), name="dcount"),
            "step": Signal(range(cfg.k + 1), name="merge_step"),
            "wq": Signal(cfg.var_bits + 2 * cfg.const_frac_bits + 1, name="semi_w"),
            "s_hold": Signal(st.sum.shape(), name="sum_hold"),
        }
        self._progs = self.programs(st)

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        st = self.stats_unit
        self._build(m, st)
        progs = self._progs
        r = self._regs
        steps = [s for p in progs.values() for s in p]
        muls = [s for s in steps if isinstance(s, Mul)]
        divs = [s for s in steps if isinstance(s, (Div, Recip))]
        sqrts = [s for s in steps if isinstance(s, Sqrt)]

        def width(v):
            return len(v) if hasattr(v, "shape") else max(1, int(v).bit_length())

        mul = div = root = None
        if muls:
            a_bits = max(width(s.a) for s in muls) + 1
            b_bits = max(s.b_bits for s in muls)
            p_bits = max(max(len(s.dst) for s in muls), max(width(s.a) + s.b_bits for s in muls)) + 2
            m.submodules.mul = mul = SeqMul(a_bits, b_bits, p_bits)
        if divs:
            d_bits = max(width(s.den) for s in divs)
            q_bits = max(s.q_bits for s in divs)
            m.submodules.div = div = SeqDiv(d_bits, q_bits)
            nums = [s.num for s in divs if isinstance(s, Div)]
            if nums:        # one registered magnitude for every signed division (the steps take turns)
                div_num = Signal(signed(max(width(v) for v in nums) + 1), name="div_num")
                div_mag = Signal(len(div_num), name="div_mag")
                div_neg = Signal(name="div_neg")
            if any(isinstance(s, Recip) for s in divs):
                recip_rem, recip_one = Signal(d_bits, name="recip_rem"), Signal(name="recip_one")
        if sqrts:
            m.submodules.isqrt = root = ISqrt(max(s.w_bits for s in sqrts))

        go = {e: Signal(name=f"{e.__class__.__name__.lower()}_go") for e in (mul, div, root) if e is not None}
        m.d.comb += [e.start.eq(g) for e, g in go.items()]

        def entry(name, i):
            """The first state of step i of program `name` (a division first registers num and |num|,
            another engine step first sets its engine's start flip-flop)."""
            step = progs[name][i]
            return f"{name}_{i}_num" if isinstance(step, Div) else \
                f"{name}_{i}_go" if isinstance(step, (Mul, Recip, Sqrt)) else f"{name}_{i}"

        k = cfg.k
        m.d.sync += [self.pop_top.eq(0), self.pop_bottom.eq(0)]     # high for one cycle, set by a pick's first state
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    if cfg.overlap:         # the inference program never reads the statistics unit
                        m.d.sync += self.released.eq(self.entry == self.ENTRIES.index("infer"))
                    with m.Switch(self.entry):
                        for i, name in enumerate(self.ENTRIES):
                            if name in progs:
                                with m.Case(i):
                                    m.next = entry(name, 0) if progs[name] else "DONE"
            for name, prog in progs.items():
                for i, step in enumerate(prog):
                    nxt = entry(name, i + 1) if i + 1 < len(prog) else "DONE"
                    here = f"{name}_{i}"
                    if isinstance(step, Set):
                        with m.State(here):
                            m.d.sync += step.assigns
                            m.next = nxt
                    elif isinstance(step, TopSum):
                        self._top_sum_states(m, st, here, nxt, f"{name}_{i}", step.wait)
                    elif isinstance(step, Merge):
                        # two cycles per pick: register the heads and the choice, then pop and add,
                        # so no path runs from the sorted registers' heads back into their enables
                        top_r, bot_r = Signal.like(st.top, name="head_top"), Signal.like(st.bottom, name="head_bottom")
                        take, on = Signal(name=f"take_top_{name}_{i}"), Signal(name=f"pick_on_{name}_{i}")
                        with m.State(here):
                            take_now = (st.top + st.bottom) > r["f2"]
                            on_now = r["step"] < Mux(self.chan.count < k, self.chan.count, k)
                            m.d.sync += [top_r.eq(st.top), bot_r.eq(st.bottom), take.eq(take_now), on.eq(on_now)]
                            m.next = here + "_pop"
                            with m.If(r["step"] == k):
                                m.next = nxt
                            with m.Else():          # the pops are flip-flops: they fan out to every lane's registers
                                m.d.sync += [self.pop_top.eq(on_now & take_now), self.pop_bottom.eq(on_now & ~take_now)]
                        with m.State(here + "_pop"):
                            with m.If(on & take):
                                m.d.sync += [r["hsum"].eq(r["hsum"] + top_r), r["dcount"].eq(r["dcount"] - 1)]
                            with m.Elif(on):
                                m.d.sync += [r["hsum"].eq(r["hsum"] - bot_r), r["dcount"].eq(r["dcount"] + 1)]
                            m.d.sync += r["step"].eq(r["step"] + 1)
                            m.next = _after_pop(here, step.wait)
                        _wait_states(m, here, step.wait)
                    else:
                        eng = {Mul: mul, Div: div, Recip: div, Sqrt: root}[type(step)]
                        # an engine's start comes straight from a flip-flop set the cycle before: its
                        # load enable fans out to every register of the engine
                        if isinstance(step, Div):       # register the numerator, then its magnitude
                            with m.State(here + "_num"):
                                m.d.sync += div_num.eq(step.num)
                                m.next = here + "_abs"
                            with m.State(here + "_abs"):
                                m.d.sync += [div_mag.eq(_abs(div_num)), div_neg.eq(div_num < 0), go[eng].eq(1)]
                                m.next = here
                        else:
                            with m.State(here + "_go"):
                                m.d.sync += go[eng].eq(1)
                                if isinstance(step, Recip):     # decode 2**(lead-1) a cycle early, into registers
                                    m.d.sync += [recip_rem.eq(Mux(step.lead == 0, 0, (Const(1, 1) << step.lead) >> 1)),
                                                 recip_one.eq(step.lead == 0)]
                                m.next = here
                        with m.State(here):
                            m.d.sync += go[eng].eq(0)
                            if isinstance(step, Mul):
                                m.d.comb += [mul.a.eq(step.a), mul.b.eq(step.b), mul.c.eq(step.c),
                                             mul.neg.eq(step.neg), mul.steps.eq(step.b_bits)]
                            elif isinstance(step, Div):
                                m.d.comb += [div.rem_init.eq(div_mag >> step.q_bits),
                                             div.lo_init.eq(div_mag[:step.q_bits] << (div.q_bits - step.q_bits)),
                                             div.neg.eq(div_neg), div.den.eq(step.den),
                                             div.steps.eq(step.q_bits)]
                            elif isinstance(step, Recip):      # 2**(lead+q) = (2**(lead-1) << (q+1)) + [lead = 0] 2**q
                                m.d.comb += [div.rem_init.eq(recip_rem),
                                             div.lo_init.eq(Mux(recip_one, 1 << (div.q_bits - 1), 0)),
                                             div.neg.eq(0), div.den.eq(step.den), div.steps.eq(step.q_bits)]
                            else:
                                m.d.comb += root.w.eq(step.w)
                            m.next = here + "_wait"
                        with m.State(here + "_wait"):
                            with m.If(eng.done):
                                result = {Mul: lambda: mul.p, Div: lambda: div.q, Recip: lambda: div.q,
                                          Sqrt: lambda: root.root}[type(step)]()
                                m.d.sync += step.dst.eq(result)
                                m.next = nxt
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"
        return m

    def _top_sum_states(self, m, st, here, nxt, tag, wait):
        """TopSum's two states: register the head and whether this pick counts, then pop it and add it."""
        r, k = self._regs, self.cfg.k
        top_r, on = Signal.like(st.top, name=f"head_top_{tag}"), Signal(name=f"pick_on_{tag}")
        with m.State(here):
            on_now = r["step"] < self.chan.m
            m.d.sync += [top_r.eq(st.top), on.eq(on_now)]
            m.next = here + "_pop"
            with m.If(r["step"] == k):
                m.next = nxt
            with m.Else():                  # the pop is a flip-flop: it fans out to every lane's registers
                m.d.sync += self.pop_top.eq(on_now)
        with m.State(here + "_pop"):
            with m.If(on):
                m.d.sync += r["hsum"].eq(r["hsum"] + top_r)
            m.d.sync += r["step"].eq(r["step"] + 1)
            m.next = _after_pop(here, wait)
        _wait_states(m, here, wait)


class _FakeStats:
    """Stand-in statistics outputs for counting a program's steps without elaborating the datapath."""

    def __init__(self, cfg):
        unit = StatisticsUnit(cfg)
        unit._MustUse__silence = True
        for name, member in unit.signature.members.items():
            if member.flow == Out:
                setattr(self, name, Signal(member.shape, name=f"fake_{name}"))
