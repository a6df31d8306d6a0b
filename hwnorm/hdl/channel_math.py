"""ChannelMath: all per-channel arithmetic on one shared sequential unit (docs/numerics.md).

Between the passes it turns the channel's statistics into Den (the kind's deviation) and the normalize pass's
constants: an m-bit gain mantissa A from Den's top D bits, its shift SH, and B from floor(mu) and the mean's remainder
(or the special regime's two-point line); in inference it turns the given mean and scale into the same. Each
program is a fixed list of steps on a shift-add multiplier, a restoring divider, (L2, semidev) a square root and
serial shifts, so its latency is fixed and known (`latency`), and paid once per channel, not per value.
"""
from dataclasses import dataclass

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..config import MEAN_ABS_KINDS
from .common import channel_layout, one_hot
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
class Sqrt:
    """dst = floor(sqrt(w)), w < 2**w_bits."""
    dst: object
    w: object
    w_bits: int

    def cycles(self):
        return ISqrt.steps_for(self.w_bits) + 3


@dataclass
class Loop:
    """`count` cycles of the same small register update (a serial shift): `body` assigns, guarded inside."""
    body: list
    count: int

    def cycles(self):
        return self.count


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


LANE_CONSTANTS = ("a", "b", "sh", "special", "neg", "q_lo", "q_hi")


def lane_constants(cfg) -> dict:
    """The per-channel constants NormalizeAffine reads (docs/numerics.md "The normalize constants"): A, B, SH, and
    for the special regime its flag, gamma's sign and q = floor(mu) (q_hi = q + 1)."""
    q_shape = signed(cfg.in_fmt.bits + 2)
    return {"a": Out(signed(cfg.a_bits)), "b": Out(signed(cfg.b_bits)), "sh": Out(range(cfg.shift_max + 1)),
            "special": Out(1), "neg": Out(1), "q_lo": Out(q_shape), "q_hi": Out(q_shape)}


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
            "den": Out(max(1, cfg.den_bits)), **lane_constants(cfg), "floor_mean": Out(signed(cfg.in_fmt.bits + 1)),
            "pop_top": Out(1), "pop_bottom": Out(1),
            **({"released": Out(1)} if cfg.overlap else {}),
        })
        self.stats_unit = None          # set by the datapath: the StatisticsUnit whose outputs it reads

    # -- the programs -------------------------------------------------------------------------

    def programs(self, st):
        """{entry: [steps]} over the statistics unit `st` (its outputs are stable while a program runs)."""
        cfg, chan = self.cfg, self.chan
        s = st.sum
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
            # overlap: S copied after the deviation; from then on the statistics unit is free
            # (a no-op step without overlap: both latencies the same)
            free = [Set([r["s_hold"].eq(st.sum), self.released.eq(1)] if cfg.overlap else [])]
            c = None if cfg.frn else r["s_hold"] if cfg.overlap else s
            progs["train"] = drain + self._den_program(st) + free + self._gain_program(c, train=True)
        progs["infer"] = self._gain_program(chan.mean, train=False)
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

    def _gain_program(self, c, train: bool):
        """A, B, SH (and the special regime's flag, sign and q) from the gain G = num 2**E / Dn and the mean C / K, as
        golden.channel_constants defines them: q, r = divmod(C, K); num = |gamma| K (training) or |gamma| scale_m;
        num and Den normalized serially; Am = an m-bit quotient; SH clamped to SH_max or the special regime's
        X = Am 2**j (j <= J) by a serial shift; T = bias + half - floor(r sgn X / K); B = T - q A, one multiply.
        c None: an FRN kind in training (C = 0)."""
        cfg, chan, r = self.cfg, self.chan, self._regs
        n = chan.count
        ib, cb, mf = cfg.in_fmt.bits, cfg.count_bits, cfg.stat_frac_bits
        m_bits, d_bits, w_bits, den_w, j_max = cfg.gain_bits, cfg.dn_bits, cfg.num_bits, cfg.den_bits, cfg.special_shift_max
        q, rem, num, nn, nd, zn, zd = r["q"], r["rem"], r["num"], r["nn"], r["nd"], r["zn"], r["zd"]
        shr, xm, q1, cnt, spec, zero = r["shr"], r["xm"], r["q1"], r["cnt"], r["spec"], r["zero"]
        p, w, t, t1, acc0, acc1, afin, cfin = (r[k] for k in ("gp", "gw", "gt", "gt1", "acc0", "acc1", "afin", "cfin"))
        neg = chan.gamma < 0
        lo_sh, hi_sh = cfg.shift_lo, cfg.shift_max
        fo, fg, fi = cfg.norm_out_fmt.frac, cfg.gamma_fmt.frac, cfg.in_fmt.frac
        if train:
            if c is None:
                head = [Set([q.eq(0), rem.eq(0)])]
            else:
                head = [Div(q, c, n, ib + 1),                          # q = floor(S / n)
                        Mul(rem, q, n, cb, c, neg=1)]                  # r = S - q n
            head += [Mul(num, _abs(chan.gamma), n, cb),
                     Set([nd.eq(self.den), nn.eq(num), zn.eq(0), zd.eq(0)])]
            sh1 = (m_bits - 1 - w_bits - cfg.const_frac_bits - fo + fg + den_w) + zn - zd
        else:
            head = [Set([q.eq(c >> mf), rem.eq(c[:mf])]),
                    Mul(num, _abs(chan.gamma), chan.scale_m, cfg.recip_bits + 1),
                    Set([nd.eq(1 << (den_w - 1)), nn.eq(num), zn.eq(0), zd.eq(0)])]
            sh1 = (m_bits - w_bits - fo + fg + fi) + zn - chan.scale_exp
        top_d, top_n = nd[den_w - 1], nn[w_bits - 1]
        dn = nd[den_w - d_bits:] if den_w >= d_bits else nd << (d_bits - den_w)
        lift = m_bits + d_bits - 1 - w_bits                             # >= 0: NormConfig.dn_bits
        # the serial normalizations: one bit a cycle, a fixed number of cycles
        normalize = Loop([(~top_d, [nd.eq(nd << 1), zd.eq(zd + 1)]), (~top_n, [nn.eq(nn << 1), zn.eq(zn + 1)])],
                         max(den_w, w_bits) if train else w_bits)
        over, under = shr > hi_sh, shr < lo_sh
        scale = Loop([(over, [xm.eq(xm >> 1), shr.eq(shr - 1)]),
                      (spec & under & (cnt < j_max), [xm.eq(xm << 1), shr.eq(shr + 1)]),
                      (None, [cnt.eq(cnt + 1)])], max(m_bits, j_max))
        beta_sh = Signal(range(hi_sh + fo - min(cfg.beta_fmt.frac, fo) + 1), name="beta_shift")
        self._m.d.comb += beta_sh.eq(self.sh + (fo - cfg.beta_fmt.frac))
        half = 0 if cfg.rounding == "floor" else (Const(1, 1) << self.sh) >> 1
        out_lo, out_hi = (cfg.norm_out_fmt.min_int - 2) << lo_sh, (cfg.norm_out_fmt.max_int + 2) << lo_sh

        def clamp(v):
            return Mux(v < out_lo, out_lo, Mux(v > out_hi, out_hi, v))

        steps = head + [
            normalize,
            Set([shr.eq(sh1), zero.eq(~top_n)]),
            # Am, or 2 Am: one bit too many (inference: Dn = 2**(D-1), so the quotient is a slice)
            Div(q1, nn << lift, dn, m_bits) if train else Set([q1.eq((nn << lift) >> (d_bits - 1))]),
            Set([xm.eq(Mux(zero, 0, Mux(q1[m_bits - 1], q1 >> 1, q1))),
                 shr.eq(Mux(zero, lo_sh, shr - q1[m_bits - 1])), cnt.eq(0)]),
            Set([spec.eq(~zero & under)]),
            scale,
            Set([self.sh.eq(Mux(spec, lo_sh, Mux(over, hi_sh, shr)))]),
            Mul(p, xm, rem, cb if train else mf, neg=neg),                # p = sgn r X
            Div(w, p, n, m_bits + j_max) if train else Set([w.eq(p >> mf)]),   # floor(r sgn X / K)
            Set([t.eq((chan.beta << beta_sh) + half - w)]),
            Set([t1.eq(t + Mux(neg, -xm, xm))]),
            Set([acc0.eq(clamp(t)), acc1.eq(clamp(t1))]),
            Set([afin.eq(Mux(spec, acc1 - acc0, Mux(neg, -xm, xm))), cfin.eq(Mux(spec, acc0, t))]),
            Mul(self.b, afin, _abs(q), ib + 1, cfin, neg=q >= 0),        # B = T - q A
            Set([self.a.eq(afin), self.special.eq(spec), self.neg.eq(neg), self.q_lo.eq(q), self.q_hi.eq(q + 1)]),
        ]
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
        cb, ib, sb = cfg.count_bits, cfg.in_fmt.bits, cfg.sum_bits
        hsum_bits = ib + cfg.k.bit_length() + 2
        t_bits = 2 + {"range": cfg.const_bits + cfg.range_sum_bits + 1, "linf": cb + ib + 2, "l1": cb + sb + 2,
                      "mad": cb + sb + 2, "topk": cb + max(hsum_bits, sb) + 2,
                      "l2": cb + max(cfg.sq_sum_bits, 2 * sb),
                      "semidev": cb + max(cfg.sq_sum_bits + cb, 2 * sb + 1) + 2,
                      "cvar": cb + max(hsum_bits, sb) + 2}[cfg.stat_kind]
        mb, wb, jm, den_w = cfg.gain_bits, cfg.num_bits, cfg.special_shift_max, max(1, cfg.den_bits)
        x_bits = mb + jm                                       # X = Am 2**j, j <= J
        sh_span = max(abs(mb - 1 - wb - cfg.const_frac_bits - cfg.norm_out_fmt.frac + cfg.gamma_fmt.frac + den_w)
                      + wb + den_w, abs(mb - wb - cfg.norm_out_fmt.frac + cfg.gamma_fmt.frac + cfg.in_fmt.frac) + wb
                      + (1 << 7), cfg.shift_max + jm) + 2
        k_bits = max(cb, cfg.stat_frac_bits)
        self._regs = {
            "t": Signal(signed(t_bits), name="t"), "u": Signal(signed(t_bits), name="u"),
            "q": Signal(signed(ib + 2), name="floor_q"), "rem": Signal(signed(k_bits + 1), name="mean_rem"),
            "num": Signal(signed(wb + 1), name="gain_num"), "nn": Signal(wb, name="num_norm"),
            "nd": Signal(den_w, name="den_norm"),
            "zn": Signal(range(wb + 1), name="num_zeros"), "zd": Signal(range(den_w + 1), name="den_zeros"),
            "shr": Signal(signed(sh_span.bit_length() + 1), name="gain_shift"),
            "xm": Signal(x_bits, name="gain_x"), "q1": Signal(signed(mb + 2), name="gain_q1"),
            "cnt": Signal(range(max(mb, jm) + 1), name="scale_count"), "spec": Signal(name="special_r"),
            "zero": Signal(name="gain_zero"),
            "gp": Signal(signed(x_bits + k_bits + 2), name="gain_p"), "gw": Signal(signed(x_bits + 2), name="gain_w"),
            # T and T +- X before the special regime's clamp: up to X 2**J beyond the output range
            "gt": Signal(signed(max(cfg.b_bits, x_bits + 2) + 2), name="gain_t"),
            "gt1": Signal(signed(max(cfg.b_bits, x_bits + 2) + 3), name="gain_t1"),
            "acc0": Signal(signed(cfg.b_bits), name="acc0"), "acc1": Signal(signed(cfg.b_bits), name="acc1"),
            "afin": Signal(signed(cfg.a_bits), name="a_fin"), "cfin": Signal(signed(cfg.b_bits), name="c_fin"),
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
        divs = [s for s in steps if isinstance(s, Div)]
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
        if sqrts:
            m.submodules.isqrt = root = ISqrt(max(s.w_bits for s in sqrts))

        go = {e: Signal(name=f"{e.__class__.__name__.lower()}_go") for e in (mul, div, root) if e is not None}
        m.d.comb += [e.start.eq(g) for e, g in go.items()]

        def entry(name, i):
            """The first state of step i of program `name` (a division first registers num and |num|,
            another engine step first sets its engine's start flip-flop)."""
            step = progs[name][i]
            return f"{name}_{i}_num" if isinstance(step, Div) else \
                f"{name}_{i}_go" if isinstance(step, (Mul, Sqrt)) else f"{name}_{i}"

        loops = [s.count for s in steps if isinstance(s, Loop)]
        loop_n = Signal(range(max(loops + [1]) + 1), name="loop_n")
        k = cfg.k
        m.d.sync += [self.pop_top.eq(0), self.pop_bottom.eq(0)]     # high for one cycle, set by a pick's first state
        with m.FSM() as fsm:
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
                    elif isinstance(step, Loop):        # step.count cycles; the counter is back at 0 after it
                        with m.State(here):
                            for cond, assigns in step.body:
                                if cond is None:
                                    m.d.sync += assigns
                                else:
                                    with m.If(cond):
                                        m.d.sync += assigns
                            m.d.sync += loop_n.eq(loop_n + 1)
                            with m.If(loop_n == step.count - 1):
                                m.d.sync += loop_n.eq(0)
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
                        eng = {Mul: mul, Div: div, Sqrt: root}[type(step)]
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
                            else:
                                m.d.comb += root.w.eq(step.w)
                            m.next = here + "_wait"
                        with m.State(here + "_wait"):
                            with m.If(eng.done):
                                result = {Mul: lambda: mul.p, Div: lambda: div.q,
                                          Sqrt: lambda: root.root}[type(step)]()
                                m.d.sync += step.dst.eq(result)
                                m.next = nxt
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"
        one_hot(fsm)
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
