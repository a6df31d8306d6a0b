"""BackwardDatapath: the training backward of one NormConfig in hardware, bit-exact to hwnorm.golden.backward.

Ports (stable; the host packs them from hwnorm.config):

    chan   In(stream)  the per-channel descriptor, NormConfig.backward_channel_fields(gcfg), LSB first: count, the
                       forward's `sum` (S) and `den` (Den), the kind's host constants (range chunk_size, c_full,
                       c_last; l1 / mad / linf / topk c; cvar c, m; l2 none), gamma, and with stochastic rounding the
                       32-bit LFSR `seed` of the dx pass
    i      In(stream)  beats {x: lanes of in_fmt, g: lanes of grad_fmt} (x in the low bits, lane 0 lowest): the
                       channel's `count` values twice, pass 1 (reduction) then pass 2 (dx), the last beat of each pass
                       masked by count; i.ready is low between the passes while the per-channel unit runs
    o      Out(stream) dx: lanes of gcfg.dx_fmt, one beat per pass-2 beat (masked lanes 0), with back-pressure
    stats  Out(stream) one word per channel, NormConfig.backward_stats_fields(gcfg): dgamma, dbeta (= Sg), sat (dx
                       values saturated), error (a refused descriptor, NormConfig.backward_descriptor_error: no beat
                       taken on `i`, none given on `o`, every other field 0)

Built: range, l1, mad, linf, topk, cvar, l2, semidev, per-channel gamma, rounding half_up and stochastic. Refused in
the constructor: the FRN kinds, dropout builds, elementwise (per-value gamma), inference-only and overlap builds.
(Changes since the first commit of these ports: none to the ports or the descriptor / stats fields; semidev added,
its descriptor has no kind constant, as l2's.)

Architecture (docs/architecture.md "BackwardDatapath"): pass 1 sums g and g x per lane (an in_bits x grad_bits
multiplier) into Sg and sum(g x), and the kind's selection unit (bwd_select.py) finds what coef needs from x alone;
then one sequential program on a SeqMul and a SeqDiv (sequential.py) computes Qg = n sum(g x) - S Sg, SH, M1, dgamma,
M2 (chained divisions by Den, never by Den^2 or Den^3) and the dx constants: A' = n M1 and (l2, semidev) B', and the
kind's few constants C = -Sg M1 - coef M2, each shifted left by sh_max - SH (one bit a cycle) and clamped where every
dx it gives saturates. Pass 2 per lane, four registers that stall together: the beat with its selection codes, then the
products g A' [and x B'] beside C[sel] + rnd, then their sum acc, then clamp(acc >> sh_max) (a constant shift) into
the output register; rnd is
2**(sh_max-1) or the xorshift32 draw (dropout.py's xorshift_step) << (sh_max - 16). Bit-exact: the constants are the
golden's, unrounded further (backward_widths says why every register holds its value).
"""
from dataclasses import dataclass
from fractions import Fraction

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import LEAN_GUARD, SR_BITS, GradConfig
from ..constants import MASK32, SEED_ZERO
from .bwd_select import ChunkExtremes, SignSelect, TopSelect
from .common import fmt_shape, lanes_of, leading_one, tree_sum
from .dropout import xorshift_step
from .sequential import SeqDiv, SeqMul

BACKWARD_HDL_KINDS = ("range", "l1", "mad", "linf", "topk", "cvar", "l2", "semidev")
SIGN_KINDS = ("l1", "mad", "linf", "topk", "cvar")
LEAN_HDL_KINDS = BACKWARD_HDL_KINDS           # GradConfig(mantissa_bits=m) built for these
LEAN_LINEAR_HDL = ("l2", "semidev")           # coef per value, affine in x: the lane's second multiply (by x - xref)
BWD_GUARD = 4                  # SH = max(SR_BITS, BWD_GUARD + bitlen(n 2**grad_bits + coef_max)), as the golden's


def _layout(fields):
    return data.StructLayout({n: (signed(w) if s else w) for n, w, s in fields})


def _sbits(v: int) -> int:
    """Signed width holding -v .. v."""
    return int(v).bit_length() + 1


@dataclass(frozen=True)
class BackwardWidths:
    """The widths of the backward's registers, from bounds over every count and every Den the descriptor rules let
    through (Den >= NormConfig.backward_den_floor(count)); the sequential unit's are exact for any such Den, the
    lanes' are exact for the forward's Den of the channel's x (l2's B': |Qg| <= n 2**(grad_bits-1) (Den + 1) 2**-CF,
    Cauchy-Schwarz), and the constants C are clamped to +-clamp, beyond which every dx they give saturates anyway."""
    e: int          # E = CF + F_in + F_dx - F_gr - F_gamma
    sh_max: int     # the largest SH; the dx pass shifts every constant left by sh_max - SH and then right by sh_max
    sg: int
    sgx: int
    qg: int
    m1: int
    m2: int
    lane_a: int     # A' = n M1 2**(sh_max - SH)
    lane_b: int     # l2: B' = n M2 2**(sh_max - SH)
    clamp: int      # the constants C of the dx sum, aligned, are clamped to [-clamp, clamp]
    lane_c: int     # their width
    wide_c: int     # C before the clamp (the sequential unit's registers)
    acc: int        # a lane's sum g A' (- x B') + C + rnd
    x: int          # G Qg (times c or n): the numerator of M2
    p: int          # SeqMul's product register
    q: int          # SeqDiv's quotient bits


def coef_max_bound(cfg, gcfg, n: int) -> int:
    kind = cfg.stat_kind
    if kind == "l2":
        return n << cfg.in_fmt.bits
    if kind == "semidev":
        return (n * n) << cfg.in_fmt.bits
    if kind == "range":
        return (1 << cfg.const_bits) - 1
    return 2 * n


def sh_of(gcfg, n: int, coef_max: int) -> int:
    return max(SR_BITS, BWD_GUARD + ((n << gcfg.grad_fmt.bits) + coef_max).bit_length())


def backward_widths(cfg, gcfg) -> BackwardWidths:
    """Register widths of BackwardDatapath(cfg, gcfg) (see BackwardWidths)."""
    fi, gb, cf = cfg.in_fmt, gcfg.grad_fmt.bits, cfg.const_frac_bits
    e = cf + fi.frac + gcfg.dx_fmt.frac - gcfg.grad_fmt.frac - cfg.gamma_fmt.frac
    gmag = max(-cfg.gamma_fmt.min_int, cfg.gamma_fmt.max_int)
    xmag = max(-fi.min_int, fi.max_int)
    gh = 1 << (gb - 1)
    nmax = cfg.max_count
    sh_max = sh_of(gcfg, nmax, coef_max_bound(cfg, gcfg, nmax))
    kind = cfg.stat_kind
    cmax = (1 << cfg.const_bits) - 1
    top = dict(m1=0, m2=0, a=0, b=0, c=0, x=0)
    for b in range(cfg.count_bits):
        n = min(nmax, (2 << b) - 1)
        dlo = cfg.backward_den_floor(1 << b)
        qg = cfg.backward_qg_max(gcfg, n)
        slack = 1 << (sh_max - SR_BITS)
        m1 = ((gmag << (e + sh_max)) // dlo) + slack         # M1 (aligned to sh_max: no less than unaligned)
        if kind == "l2":
            m2 = ((gmag * qg) << (2 * cf + e + sh_max)) // dlo ** 3 + slack
            x = gmag * qg
            bl = ((2 * gmag * n * n * gh) << (cf + e + sh_max)) // dlo ** 2 + n * slack     # Cauchy-Schwarz
        elif kind == "semidev":     # sum|d| = 2 sum_neg|d| <= 2 sqrt(n T), sqrt(T / n) 2**CF < Den + 1
            m2 = ((gmag * qg) << (2 * cf + e + sh_max)) // ((1 << b) * dlo ** 3) + slack
            x = gmag * qg
            bl = ((4 * gmag * gh * n * n) << (cf + e + sh_max)) // dlo ** 2 + n * n * slack
        elif kind == "range":
            m2 = ((n * gmag * qg) << (e + sh_max)) // dlo ** 2 + slack
            x, bl = n * gmag * qg, 0
        else:
            m2 = ((gmag * qg * cmax) << (e + sh_max)) // dlo ** 2 + slack
            x, bl = gmag * qg * cmax, 0
        a = n * m1
        coef = coef_max_bound(cfg, gcfg, n) + (n * xmag if kind == "l2" else n * n * xmag if kind == "semidev" else 0)
        c = n * gh * m1 + coef * m2 + (n + 1) * m2
        for key, v in (("m1", m1), ("m2", m2), ("a", a), ("b", bl), ("c", c), ("x", x)):
            top[key] = max(top[key], v)
    # a constant C beyond +-clamp saturates every dx of its lanes: g A' + x B' + rnd moves the sum by less than
    # clamp - 2**(sh_max + dx_bits - 1)
    clamp = gh * top["a"] + xmag * top["b"] + (1 << sh_max) + (1 << (sh_max + gcfg.dx_fmt.bits - 1))
    sg = cfg.backward_sg_bits(gcfg)
    sgx = _sbits(nmax * gh * xmag)
    qg = _sbits(cfg.backward_qg_max(gcfg, nmax))
    m1, m2 = _sbits(top["m1"]), _sbits(top["m2"])
    lane_a, lane_b, wide_c = _sbits(top["a"]), _sbits(top["b"]), _sbits(top["c"])
    p = max(lane_a, lane_b, wide_c, _sbits(top["x"]), qg + cfg.count_bits, sgx + cfg.count_bits) + 1
    shifts = (2 * cf if kind in ("l2", "semidev") else 0) + e + sh_max + 1
    q = max(_sbits(top["x"]) + shifts, cfg.gamma_fmt.bits + e + sh_max + 1, qg + cf + 1, cfg.sum_bits)
    acc = gh * top["a"] + xmag * top["b"] + clamp + (1 << sh_max)
    return BackwardWidths(e=e, sh_max=sh_max, sg=sg, sgx=sgx, qg=qg, m1=m1, m2=m2, lane_a=lane_a, lane_b=lane_b,
                          clamp=clamp, lane_c=_sbits(clamp), wide_c=wide_c, acc=_sbits(acc) + 1, x=_sbits(top["x"]),
                          p=p, q=q)


@dataclass(frozen=True)
class LeanWidths:
    """The lean backward's register widths (GradConfig(mantissa_bits=m), docs/numerics.md "The lean backward"): bounds
    over every count and every Den the descriptor rules let through, so every value the golden's lean form computes
    fits; the lanes hold an m-bit X, the class constants Z (clamped to +-zbound, beyond which every dx of the class
    saturates) and an `acc`-bit accumulator, the per-channel unit the exact zero crossings."""
    e: int          # E = CF + F_in + F_dx - F_gr - F_gamma
    m: int          # the mantissa bits
    sh_lo: int      # LEAN_GUARD: the least SH
    sh_max: int     # vb + LEAN_GUARD + 1: the largest SH
    sg: int
    sgx: int
    qg: int
    pbits: int      # P = n |gamma| (unsigned)
    xbits: int      # X signed, the special regime's Am << k included
    fq: int         # F Qg (F = n for range, c else), signed
    nt: int         # N_t = Sg Den + F Qg coef_t, signed
    zdiv: int       # |X| N_t or |gamma| N_t 2**(E + SH_max): the Z division's dividend, unsigned
    zbound: int     # regular / tiny Z are clamped to +-zbound (>= every channel's zmax)
    lane_z: int     # signed width of a lane's Z constant
    q_special: int  # the special regime's q_t, clamped to the dy range +- 1, signed
    acc_sat: int    # the special regime's acc0 / acc1 saturate to this many signed bits (beyond dx_fmt +- 2 LSBs)
    acc: int        # a lane's X g - Z + rnd, signed
    shc: int        # the exponent counter of the normalize, signed
    am: int         # the normalize register (the m-bit quotient on its way)
    p: int          # SeqMul's product register
    q: int          # SeqDiv's quotient bits
    mul_b: int      # SeqMul's multiplier operand bits
    my: int = 0     # l2, semidev: the slope mantissa's bits (golden lean_slope_bits)
    sl: int = 0     # ... the most SY goes below 0 (the lane shifts Y (x - xref) left by sl, then right by SY + sl)
    cap: int = 0    # ... SY's largest value, in_bits + 2
    wr: int = 0     # ... Wt + kappa r (l2: r; semidev: W + n r), signed
    zref: int = 0   # ... Z at x = xref, signed


def lean_hw_widths(cfg, gcfg) -> LeanWidths:
    """Register widths of the lean BackwardDatapath(cfg, gcfg) (see LeanWidths)."""
    fi, gb, cf, cb = cfg.in_fmt, gcfg.grad_fmt.bits, cfg.const_frac_bits, cfg.count_bits
    m, g = gcfg.mantissa_bits, LEAN_GUARD
    e = cf + fi.frac + gcfg.dx_fmt.frac - gcfg.grad_fmt.frac - cfg.gamma_fmt.frac
    sh_max = gb + g + 1
    nmax = cfg.max_count
    gmax = max(-cfg.gamma_fmt.min_int, cfg.gamma_fmt.max_int)
    pbits = (nmax * gmax).bit_length()
    top = Fraction(0)                               # the largest gain A = n gamma 2**E / Den, dx LSBs per dy LSB
    for b in range(cb):
        n = min(nmax, (2 << b) - 1)
        top = max(top, Fraction(n * gmax) * Fraction(2) ** e / cfg.backward_den_floor(1 << b))
    a_log2 = top.numerator.bit_length() - top.denominator.bit_length() + 1     # 2**a_log2 > top
    xbits = max(m, a_log2 + g + 2) + 1              # special: X = Am 2**(G - SH) < 2 A_dn 2**G, A_dn < 2 A
    qgmax = cfg.backward_qg_max(gcfg, nmax)
    cmax = (1 << cfg.const_bits) - 1
    fqmax = (nmax if cfg.stat_kind == "range" else cmax) * qgmax
    coefmax = cmax if cfg.stat_kind == "range" else 2 * nmax
    ntmax = (nmax << (gb - 1)) * ((1 << cfg.den_bits) - 1) + fqmax * coefmax
    nt = ntmax.bit_length() + 1
    zdiv = max(xbits + nt, cfg.gamma_fmt.bits + nt + max(0, e + sh_max))     # |X| N_t; tiny: |gamma| N_t 2**(E+SH_max)
    dxf = gcfg.dx_fmt
    zbound = (1 << (m - 2 + gb)) + (1 << (dxf.bits + 1 + sh_max))
    lane_z = zbound.bit_length() + 2                # Z saturated to 2**(lane_z - 2) > zbound, minus 2**(SH-1) (half up)
    acc = ((1 << (m - 2 + gb)) + (1 << (lane_z - 2)) + (1 << sh_max)).bit_length() + 1     # |X g| + |Z| + rnd
    sg = cfg.backward_sg_bits(gcfg)
    sgx = _sbits(nmax * (1 << (gb - 1)) * max(-fi.min_int, fi.max_int))
    qg = _sbits(qgmax)
    qw = pbits + 1 + 2 * m                          # floor(P 2**(2m) / Dn)
    am = max(qw, xbits) + 1
    shc = _sbits(2 * m + cfg.den_bits + abs(e) + am + sh_max) + 1
    q = max(qg + cf + 1, cfg.sum_bits, qw, zdiv, nt) + 1
    zprod = max(xbits, cfg.gamma_fmt.bits) + nt    # the Z division's dividend before its shift
    p = max(zprod, nt, qg + cb, sgx + cb, cfg.den_bits + sg, _sbits(fqmax), pbits + 1) + 3
    mul_b = max(cb + 1, cfg.sum_bits, sg, cfg.const_bits, cfg.gamma_fmt.bits, xbits, gb + 2) + 1
    lin = {}
    if cfg.stat_kind in LEAN_LINEAR_HDL:            # X holds the special regime's Am << k in the lane too
        semi = cfg.stat_kind == "semidev"
        gbits, db, esh = cfg.gamma_fmt.bits, cfg.den_bits, max(0, e + sh_max)
        cap = fi.bits + 2
        my = max(m - 1 - g, _ceil_log2(top)) + gb + g + 2
        lam = max(Fraction(cfg.backward_qg_max(gcfg, min(nmax, (2 << b) - 1)) << (2 * cf),
                           cfg.backward_den_floor(1 << b) ** 2) for b in range(cb))
        slope = (1 << (xbits - 1)) * lam            # |aq lambda| per x LSB, in accumulator units
        sl = max(0, _ceil_log2(slope) - my + 3)
        wr = (2 * cb + fi.bits + 2 if semi else cb) + 1
        zbound = (1 << (xbits - 2 + gb)) + (1 << (dxf.bits + 1 + sh_max))
        lane_z = zbound.bit_length() + 2            # Z saturated to 2**(lane_z - 2) > zbound
        acc = ((1 << (xbits - 2 + gb)) + (1 << (lane_z - 2)) + (1 << sh_max)).bit_length() + 1
        zref = ((1 << (xbits - 2 + gb)) + int(slope) * ((1 << fi.bits) + 2)).bit_length() + 2
        nt = max(sg + cb + 2 * db, qg + 2 * cf + wr) + 2                  # semidev: Sg n Den**2 - Qg W 2**2CF
        d_slope = max(xbits + qg, cb + gbits + qg + esh) + 2 * cf + cap
        d_ref = max(xbits + sg + cb + cap + sl, 2 * cb + gbits + sg + esh + cap + sl, my + sl + wr + db) + 2
        d_up = nt + max(xbits, gbits) + esh
        p = max(p, d_ref, d_up, nt, my + sl + wr) + 3
        q = max(q, d_slope, p, d_up) + 2
        mul_b = max(mul_b, db + 1, wr)
        lin = dict(my=my, sl=sl, cap=cap, wr=wr, zref=zref)
    return LeanWidths(e=e, m=m, sh_lo=g, sh_max=sh_max, sg=sg, sgx=sgx, qg=qg, pbits=pbits, xbits=xbits,
                      fq=_sbits(fqmax), nt=nt, zdiv=zdiv, zbound=zbound, lane_z=lane_z, q_special=gb + 1,
                      acc_sat=dxf.bits + g + 1, acc=acc, shc=shc, am=am, p=p, q=q,
                      mul_b=mul_b, **lin)


def _sat(v, bits):
    """v saturated to `bits` signed bits: a look at its top bits, no compare of the whole value."""
    top = v[bits - 1:]
    return Mux(top.all() | ~top.any(), v[:bits].as_signed(), Mux(v < 0, -(1 << (bits - 1)), (1 << (bits - 1)) - 1))


def _ceil_log2(fr: Fraction) -> int:
    """The least k with 2**k >= fr (fr > 0)."""
    k = fr.numerator.bit_length() - fr.denominator.bit_length()
    while Fraction(2) ** k < fr:
        k += 1
    while Fraction(2) ** (k - 1) >= fr:
        k -= 1
    return k


class BackwardDatapath(wiring.Component):
    """The backward datapath of (cfg, gcfg): reduction pass, per-channel constants, dx pass (module docstring)."""

    def __init__(self, cfg, gcfg):
        try:
            check_backward(cfg, gcfg)
        except ValueError:
            self._MustUse__silence = True        # refused: never elaborated, no warning
            raise
        self.cfg, self.gcfg = cfg, gcfg
        self.w = self.lw = lean_hw_widths(cfg, gcfg) if gcfg.lean else backward_widths(cfg, gcfg)
        lanes = cfg.lanes
        super().__init__({
            "chan": In(stream.Signature(_layout(cfg.backward_channel_fields(gcfg)))),
            "i": In(stream.Signature(data.StructLayout({"x": lanes_of(fmt_shape(cfg.in_fmt), lanes),
                                                        "g": lanes_of(fmt_shape(gcfg.grad_fmt), lanes)}))),
            "o": Out(stream.Signature(lanes_of(fmt_shape(gcfg.dx_fmt), lanes))),
            "stats": Out(stream.Signature(_layout(cfg.backward_stats_fields(gcfg)))),
        })

    @staticmethod
    def gap_bound(cfg, gcfg) -> int:
        """An upper bound of the cycles `i.ready` stays low before pass 1 plus between the passes of one channel (a
        testbench's timeout): at most 7 divisions of at most `q` steps, 16 multiplications, 6 alignments and 20 single
        steps (measured at 8 bits: 490 to 610 cycles between the passes, semidev 900; docs/architecture.md)."""
        if gcfg.lean:       # per class 4 divisions and 4 multiplications; l2 / semidev at most 12 and 10 in all
            lw = lean_hw_widths(cfg, gcfg)
            nc = 5 if cfg.stat_kind == "range" else 2 if cfg.kind == "cvar" else 3
            loops = 2 * cfg.den_bits + lw.am + lw.xbits + 2 * lw.m + abs(lw.e) + lw.sh_max + 2 * lw.q + 3 * (
                lw.cap + lw.sl + max(0, lw.e + lw.sh_max) + 2)         # Dn, the normalize; Y's, the shifts by SY
            return (15 + 4 * nc) * (lw.q + 5) + (17 + 4 * nc) * (lw.mul_b + 3) + loops + 12 * nc + 60
        w = backward_widths(cfg, gcfg)
        b_bits = max(cfg.count_bits, cfg.sum_bits, w.sg, cfg.const_bits, cfg.gamma_fmt.bits,
                     2 * cfg.count_bits + cfg.in_fmt.bits + 1) + 1
        return 7 * (w.q + 5) + 16 * (b_bits + 3) + 6 * (w.sh_max - SR_BITS + 2) + 20

    # -- the descriptor check ----------------------------------------------------------------------------------

    def _refused(self, m, desc):
        """1 when desc breaks NormConfig.backward_descriptor_rules (the same verdict as backward_descriptor_error)."""
        cfg = self.cfg
        n = desc.count
        terms = [(n == 0) | (n > cfg.max_count)]
        if cfg.stat_kind == "range":
            cs = desc.chunk_size
            times = sum(cs << b for b in range(cfg.chunks.bit_length()) if cfg.chunks >> b & 1)
            terms.append((cs == 0) | (times < n))
        if cfg.kind == "cvar":
            terms.append((desc.m == 0) | (desc.m > cfg.k) | (desc.m > n))
        lead_d = leading_one(m, desc.den, "den_lead")
        lead_n = leading_one(m, n, "count_lead")
        dplm = cfg.den_per_count_log2_min          # Den >= 2**(lead(n) + dplm) (when that exponent is >= 0)
        need = lead_n + dplm
        terms.append((desc.den == 0) | ((need > 0) & (lead_d < need)))
        refused = Signal()
        m.d.comb += refused.eq(Cat(*terms).any())
        return refused

    # -- the lean form's per-channel program and lane (GradConfig(mantissa_bits=m)) ----------------------------

    def _lean_program(self, m, chan, sel, sg, qg, tq, scratch, sh, mul_op, div_shift, q_mean=None, r_mean=None,
                      wsum=None):
        """The lean constants (docs/numerics.md "The lean backward"), after Qg and dgamma: Dn = Den's top m + 2 bits,
        the m-bit mantissa Am of the gain A = n gamma 2**E / Den by one division and a normalize (one shift a cycle),
        its regime (regular, special, tiny, zero), X and SH; then per class t the exact zero crossing's numerator N_t =
        Sg Den + F Qg coef_t and Z_t = floor(X N_t / (n Den)) (tiny: floor(gamma 2**(E + SH) N_t / Den**2)), clamped to
        +-zbound; in the special regime q_t = floor(N_t / (n Den)) and the accumulators at q_t, q_t + 1 instead. Returns
        (program steps, lane(j, g, sel, draw) -> (acc, force, force_high))."""
        cfg, gcfg, w = self.cfg, self.gcfg, self.lw
        kind, cb = cfg.stat_kind, cfg.count_bits
        mm, g_lo = w.m, w.sh_lo
        self._qg, self._sg = qg, sg
        n, gam, den = chan.count, chan.gamma, chan.den

        def absv(v):
            return Mux(v < 0, -v, v)

        sat = _sat
        dn = Signal(cfg.den_bits)                   # Den's top m + 2 bits, Den >> sd
        sd = Signal(range(cfg.den_bits + 1))
        am = Signal(w.am)                           # the quotient, normalized to Am (special: Am << k)
        shc = Signal(signed(w.shc))                 # its exponent
        special = Signal()
        zero = Signal()
        tiny = Signal()
        xs = Signal(signed(w.xbits))                # X, signed
        linear = kind in LEAN_LINEAR_HDL
        xl = Signal(signed(w.xbits if linear else w.m))   # the lanes' X: 0 if zero (class kinds: and special)
        rnd_h = Signal(w.sh_max)                    # 2**(SH - 1): half up
        nbase = Signal(signed(cfg.den_bits + w.sg + 1))   # Sg Den
        fq = Signal(signed(w.fq))                   # F Qg
        nt = Signal(signed(w.nt))                   # N_t
        # special: Z_t, saturated where X q - Z_t and X (q + 1) - Z_t saturate either way
        zt_bits = ((1 << (w.xbits - 1 + gcfg.grad_fmt.bits)) + (1 << (gcfg.dx_fmt.bits + g_lo + 1))).bit_length() + 1
        zt = Signal(signed(zt_bits))
        top = 1 << (mm - 1)
        prog = [
            ("sets", [(dn, den), (sd, 0)]),
            ("loop", dn >= (1 << (mm + 2)), [(dn, dn >> 1), (sd, sd + 1)]),           # Dn = Den >> sd
            mul_op(scratch, n, absv(gam), cfg.gamma_fmt.bits),                          # P = n |gamma|
            div_shift(tq, scratch, w.pbits + 1, 2 * mm, den=dn),                        # floor(P 2**(2m) / Dn)
            ("sets", [(am, tq), (shc, 2 * mm - w.e + sd), (special, 0), (zero, gam == 0)]),
            # normalize: Am = floor(|A_dn| 2**SH) in [2**(m-2), 2**(m-1)); SH > SH_max: tiny (Am >> (SH - SH_max));
            # SH < SH_lo: special (Am << (SH_lo - SH))
            ("norm", am, shc, special, top, w.sh_max, g_lo),
            ("sets", [(special, special & ~zero), (tiny, ~special & ~zero & (am < (top >> 1))),
                      (xs, Mux(gam < 0, -am, am)), (sh, shc)]),
            ("sets", [(xl, Mux((special & (0 if linear else 1)) | zero, 0, xs)),
                      (rnd_h, (Const(1, w.sh_max + 1) << sh) >> 1)]),
            mul_op(nbase, den, absv(sg), w.sg, neg=sg < 0),                              # Sg Den
        ]
        if linear:
            return self._lean_linear(prog, chan, tq, scratch, sh, mul_op, div_shift, xs, xl, tiny, rnd_h, nbase, nt,
                                     q_mean, r_mean, wsum)
        if kind == "range":                         # coef 0, +c_full, -c_full, +c_last, -c_last (sel 0 .. 4)
            prog.append(mul_op(fq, qg, n, cb))
            coefs = [(0, 0, 1), (chan.c_full, 0, cfg.const_bits), (chan.c_full, 1, cfg.const_bits),
                     (chan.c_last, 0, cfg.const_bits), (chan.c_last, 1, cfg.const_bits)]
        else:                                       # coef n t - T: t = 0, +1, -1 (sel 0, 1, 2; cvar: 0, 1)
            prog.append(mul_op(fq, qg, chan.c, cfg.const_bits))
            tsum = sel.tsum
            coefs = [(absv(tsum), ~(tsum < 0), cb + 1), (n - tsum, 0, cb + 1), (n + tsum, 1, cb + 1)]
            if kind == "cvar":
                coefs = coefs[:2]
        nc = len(coefs)
        zs = [Signal(signed(w.lane_z), name=f"z{i}") for i in range(nc)]
        qs = [Signal(signed(w.q_special), name=f"q{i}") for i in range(nc)]
        a1s = [Signal(signed(w.acc_sat + 1), name=f"na1_{i}") for i in range(nc)]
        # one class a round (ci), its Z_t unclamped first: floor(floor(X N_t / n) / Den), tiny floor(floor(|gamma| N_t
        # 2**(E + SH_max) / Den) / Den)
        ci = Signal(range(nc + 1))
        cabs, cneg = Array([c[0] for c in coefs]), Array([c[1] for c in coefs])
        cbits = max(c[2] for c in coefs)
        zsa, qsa, a1sa = Array(zs), Array(qs), Array(a1s)
        gbits = cfg.gamma_fmt.bits
        stoch = gcfg.rounding == "stochastic"
        rfold = 0 if stoch else rnd_h               # half up: the lanes' + 2**(SH-1) folded into every Z
        body = [mul_op(nt, fq, cabs[ci], cbits, c=nbase, neg=cneg[ci]),                      # N_t = Sg Den + F Qg coef_t
                ("skip", tiny, 3),
                mul_op(scratch, nt, absv(xs), w.xbits, neg=xs < 0),                           # X N_t
                div_shift(tq, scratch, w.xbits + w.nt, 0, den=n),
                ("skip", Const(1), 2),
                mul_op(scratch, nt, absv(gam), gbits, neg=gam < 0),                           # gamma N_t
                div_shift(tq, scratch, gbits + w.nt, w.e + w.sh_max),
                div_shift(tq, tq, w.q + 2, 0),
                ("skip", special, 2),
                ("sets", [(zsa[ci], sat(tq, w.lane_z - 1) - rfold)]),
                ("skip", Const(1), 8),
                ("sets", [(zt, sat(tq, zt_bits))]),                                              # special regime:
                div_shift(tq, nt, w.nt, 0, den=n), div_shift(tq, tq, w.q + 2, 0),              # q_t = floor(N_t / (n Den))
                ("sets", [(qsa[ci], sat(tq, w.q_special))]),      # beyond the dy range +- 1 every dx is forced alike
                mul_op(scratch, xs, absv(qsa[ci]), w.q_special, c=-zt, neg=qsa[ci] < 0),      # acc0 = X q_t - Z_t
                ("sets", [(zsa[ci], -sat(scratch, w.acc_sat) - rfold)]),
                mul_op(scratch, xs, 1, 1, c=scratch),                                            # acc1 = acc0 + X
                ("sets", [(a1sa[ci], -sat(scratch, w.acc_sat) - rfold)])]
        prog += [("sets", [(ci, 0)])] + body + [("sets", [(ci, ci + 1)]), ("skip", ci != nc, -(len(body) + 2))]

        def pick(regs, code):
            v = regs[0]
            for i in range(1, nc):
                v = Mux(code == i, regs[i], v)
            return v

        stoch = gcfg.rounding == "stochastic"

        def lane(j, g, code, draw, x):
            """acc = X g - Z[code] + rnd; the special regime: acc0 / acc1 at g = q, q + 1, else forced saturation.
            Stage one: the product X g, and -Z + rnd; stage two their sum."""
            d = g - pick(qs, code)
            eq1, below, above = d == 1, d < 0, d > 1
            z = Mux(special & eq1, pick(a1s, code), pick(zs, code))
            force = special & (below | above)
            rest = ((draw << sh) >> SR_BITS) - z if stoch else -z
            return [g * xl, rest], sum, force, Mux(xs < 0, below, above)

        return prog, lane

    def _lean_linear(self, prog, chan, tq, scratch, sh, mul_op, div_shift, xs, xl, tiny, rnd_h, nbase, nt, xref,
                     r, wsum):
        """l2, semidev: the slope Y (an m_Y-bit mantissa of aq lambda, lambda = Qg 2**(2CF) / Den**2 per x LSB, SY <=
        in_bits + 2; aq = X, tiny: the exact gain 2**SH_max) by one chain of divisions and a normalize; zref = Z at x =
        xref = floor(S / n) (exact, one chain); semidev: the upper class's Z. Lane: Z = clamp(zref + ((Y (x - xref)) >>
        SY)) (semidev: the upper Z where d >= 0), acc = X g - Z + rnd."""
        cfg, gcfg, w = self.cfg, self.gcfg, self.lw
        kind, cb, cf = cfg.stat_kind, cfg.count_bits, cfg.const_frac_bits
        n, gam, den = chan.count, chan.gamma, chan.den
        semi = kind == "semidev"
        gbits, db = cfg.gamma_fmt.bits, cfg.den_bits
        esh = w.e + w.sh_max

        def absv(v):
            return Mux(v < 0, -v, v)

        yw = Signal(w.q + 2)                        # |slope| 2**SY on its way
        ysgn = Signal()
        ys = Signal(signed(w.my))                   # Y
        syl = Signal(range(w.cap + w.sl + 1))       # SY + L, L = w.sl: SY may be as low as -L
        cnt = Signal(range(w.cap + w.sl + max(0, esh) + 2))
        wr = Signal(signed(w.wr))                   # Wt + kappa r: l2 r, semidev W + n r
        t2 = Signal(signed(w.p))
        zref = Signal(signed(w.zref))
        zup = Signal(signed(w.lane_z))
        cap, sl = w.cap, w.sl
        qg_sig = self._qg

        def shl(reg, amount):                        # reg <<= amount, one bit a cycle
            return [("sets", [(cnt, amount)]), ("loop", cnt != 0, [(reg, reg << 1), (cnt, cnt - 1)])]

        reg_slope = [mul_op(scratch, absv(qg_sig), absv(xs), w.xbits),              # |X Qg|
                     div_shift(tq, scratch, w.xbits + w.qg, 2 * cf + cap), div_shift(tq, tq, w.q + 2, 0)]
        tiny_slope = [mul_op(scratch, absv(qg_sig), absv(gam), gbits),                          # |n gamma Qg|
                      mul_op(scratch, scratch, n, cb),
                      div_shift(tq, scratch, cb + gbits + w.qg, esh + 2 * cf + cap),
                      div_shift(tq, tq, w.q + 2, 0), div_shift(tq, tq, w.q + 2, 0)]
        prog += [("skip", tiny, len(reg_slope) + 1)] + reg_slope + [("skip", Const(1), len(tiny_slope))] + tiny_slope
        prog += [("sets", [(yw, tq), (ysgn, Mux(tiny, gam < 0, xs < 0) ^ (qg_sig < 0)), (syl, cap + sl)]),
                 ("loop", yw >= (1 << (w.my - 1)), [(yw, yw >> 1), (syl, syl - 1)]),                # normalize
                 ("sets", [(ys, Mux(ysgn, -yw, yw))])]
        # zref = floor((aq Sg kappa 2**S' - Y 2**L (Wt + kappa r)) / (kappa n 2**S')), S' = SY + L
        if semi:
            prog.append(mul_op(wr, r, n, cb, c=wsum))                                          # W + n r
        else:
            prog.append(("sets", [(wr, r)]))
        ysl = ys << sl
        reg_zref = [mul_op(scratch, xs, absv(self._sg), w.sg, neg=self._sg < 0)]                 # X Sg
        reg_zref += [mul_op(scratch, scratch, n, cb)] if semi else []
        reg_zref += shl(scratch, syl)
        reg_zref += [mul_op(scratch, ysl, absv(wr), w.wr, c=scratch, neg=~(wr < 0)),
                     div_shift(tq, scratch, w.p, 0, den=n)]
        tiny_zref = [mul_op(scratch, self._sg, absv(gam), gbits, neg=gam < 0), mul_op(scratch, scratch, n, cb)]
        tiny_zref += [mul_op(scratch, scratch, n, cb)] if semi else []
        tiny_zref += shl(scratch, syl + esh)
        tiny_zref += [mul_op(t2, ysl, absv(wr), w.wr, neg=wr < 0),                               # Y 2**L (Wt + k r)
                      mul_op(scratch, t2, den, db, c=scratch, neg=1),
                      div_shift(tq, scratch, w.p, 0), div_shift(tq, tq, w.q + 2, 0, den=n)]
        prog += [("skip", tiny, len(reg_zref) + 1)] + reg_zref + [("skip", Const(1), len(tiny_zref))] + tiny_zref
        if semi:
            prog.append(div_shift(tq, tq, w.q + 2, 0, den=n))
        prog += [("sets", [(cnt, syl)]), ("loop", cnt != 0, [(tq, tq >> 1), (cnt, cnt - 1)]),  # floor(/ 2**S')
                 ("sets", [(zref, tq)])]
        if semi:        # the upper class: Z = floor(aq (Sg n Den**2 - Qg W 2**2CF) / (n**2 Den**2)), tiny: aq exact
            prog += [mul_op(scratch, nbase, n, cb), mul_op(scratch, scratch, den, db),
                     mul_op(nt, self._qg << (2 * cf), absv(wsum), w.wr, c=scratch, neg=~(wsum < 0)),
                     mul_op(scratch, nt, Mux(tiny, absv(gam), absv(xs)), w.xbits, neg=Mux(tiny, gam < 0, xs < 0)),
                     div_shift(tq, scratch, w.nt + w.xbits, Mux(tiny, esh, 0), den=Mux(tiny, den, n)),
                     div_shift(tq, tq, w.q + 2, 0, den=Mux(tiny, den, n)),
                     div_shift(tq, tq, w.q + 2, 0),
                     div_shift(tq, tq, w.q + 2, 0, den=Mux(tiny, n, den)),
                     ("sets", [(zup, _sat(tq, w.lane_z - 1))])]
        stoch = gcfg.rounding == "stochastic"

        def lane(j, g, code, draw, u):
            """acc = X g - clamp(zref + ((Y u) >> SY)) + rnd, u = x - xref (the top subtracts it as the beat enters s0;
            semidev: the upper Z where d >= 0). Stage one: the products X g and Y u, rnd (and semidev's d < 0); a
            middle stage the shift by SY, Z's sum and clamp; stage two acc."""
            rnd = ((draw << sh) >> SR_BITS) if stoch else rnd_h
            terms = [g * xl, ys * u, rnd] + ([code == 2] if semi else [])

            def mid(r):                             # a middle stage of its own: Z's shift, sum and clamp
                z = zref + ((r[1] << sl) >> syl)
                if semi:
                    z = Mux(r[3], z, zup)
                return [r[0], _sat(z, w.lane_z - 1), r[2]], lambda q: q[0] - q[1] + q[2]
            return terms, mid, Const(0), Const(0)

        return prog, lane

    # -- the per-channel program (sequential, on one SeqMul and one SeqDiv) ------------------------------------

    def elaborate(self, platform):
        m = Module()
        cfg, gcfg, w = self.cfg, self.gcfg, self.w
        lanes, kind = cfg.lanes, cfg.stat_kind
        gb, cb, cf = gcfg.grad_fmt.bits, cfg.count_bits, cfg.const_frac_bits
        stoch = gcfg.rounding == "stochastic"
        lean = gcfg.lean
        pre_kinds = ("l1", "mad", "semidev", "linf", "topk") + (("l2",) if lean else ())
        xs, gs = self.i.payload.x, self.i.payload.g

        chan = Signal.like(self.chan.payload)
        n = chan.count
        left = Signal(cb)
        mask = Signal(lanes)                        # registered with left: mask[j] = left > j, last = left <= lanes
        last = Signal()                             # (a compare of left before the selection unit was range's
                                                    # critical path, 16.2 ns)

        def load_left(v):
            return [left.eq(v), mask.eq(Cat(*[v > j for j in range(lanes)])), last.eq(v <= lanes)]

        r_mean = Signal(cb)                         # lean l2, semidev, linf, topk: r = S - n floor(S / n)
        # selection unit
        if kind == "range":
            m.submodules.sel = sel = ChunkExtremes(cfg)
            m.d.comb += sel.chunk_size.eq(chan.chunk_size)
            nconst = 5
        elif kind in ("l1", "mad", "semidev"):
            m.submodules.sel = sel = SignSelect(cfg)
            q_mean, rz = Signal(signed(cfg.in_fmt.bits + 1)), Signal()
            m.d.comb += [sel.q.eq(q_mean), sel.rz.eq(rz)]
            nconst = 2 if kind == "semidev" else 3
        elif kind in SIGN_KINDS:
            m.submodules.sel = sel = TopSelect(cfg)
            mm = chan.m if cfg.kind == "cvar" else Mux(n < cfg.k, n, cfg.k)
            q_mean, rz = Signal(signed(cfg.in_fmt.bits + 1)), Signal()     # linf, topk: q = floor(S / n), r
            m.d.comb += [sel.n.eq(n), sel.q.eq(q_mean), sel.r.eq(r_mean), sel.m.eq(mm)]
            nconst = 3
        else:
            sel = None
            nconst = 1
            q_mean, rz = Signal(signed(cfg.in_fmt.bits + 1)), Signal()     # lean l2: xref = floor(S / n)
        if sel is not None:
            m.d.comb += [sel.x.eq(xs), sel.mask.eq(mask)]

        # reduction registers
        sg = Signal(signed(w.sg))
        sgx = Signal(signed(w.sgx))
        # per-channel registers
        qg = Signal(signed(w.qg))
        sh = Signal(range(w.sh_max + 1))
        tq = Signal(signed(w.q + 2))              # a quotient on its way (a chained division's numerator)
        dgamma = Signal(signed(len(self.stats.payload.dgamma)))
        if kind == "semidev":       # the negative deviations: sum of their x, their count, W = sum min(d, 0); n^2
            sx_neg = Signal(signed(cfg.sum_bits))
            c_neg = Signal(cb)
            wsum = Signal(signed(w.p))
            nn = Signal(2 * cb)
        scratch = Signal(signed(w.p))             # a product on its way
        sat = Signal(cb)

        wn_bits = 2 * cb + cfg.in_fmt.bits + 1      # |W| <= n^2 2**in_bits (semidev)
        mul_b = w.mul_b if lean else max(cb, cfg.sum_bits, w.sg, cfg.const_bits, cfg.gamma_fmt.bits,
                                         wn_bits if kind == "semidev" else 0) + 1
        m.submodules.mul = mul = SeqMul(w.p, mul_b, w.p)
        m.submodules.div = div = SeqDiv(cfg.den_bits, w.q)

        # -- the program: (kind of step, operands, destination)
        def mul_op(dst, a, b, b_bits, c=0, neg=0):
            return ("mul", dst, a, b, b_bits, c, neg)

        def div_shift(dst, v, v_bits, shift, den=None):   # dst = floor(v 2**shift / Den), v signed, v_bits its width
            return ("div", dst, v, v_bits, shift, chan.den if den is None else den)

        def absv(v):
            return Mux(v < 0, -v, v)

        def sgn(v):
            return v < 0

        e = w.e
        gam = chan.gamma
        prog = [
            mul_op(scratch, sgx, n, cb),                                   # n sum(g x)
            mul_op(qg, sg, absv(chan.sum), cfg.sum_bits, c=scratch, neg=~sgn(chan.sum)),  # Qg = n sum(gx) - S Sg
        ]
        if lean:
            prog += [div_shift(tq, qg, w.qg, cf + 1), ("half", dgamma, tq)]    # dgamma = round(Qg 2**CF / Den)
            extra = dict(q_mean=q_mean, r_mean=r_mean, wsum=wsum if kind == "semidev" else None) \
                if kind in ("l2", "semidev") else {}
            if kind == "semidev":                   # W = n sum_neg x - S c_neg
                prog += [mul_op(wsum, sx_neg, n, cb), mul_op(wsum, chan.sum, c_neg, cb, c=wsum, neg=1)]
            lean_prog, lane_expr = self._lean_program(m, chan, sel, sg, qg, tq, scratch, sh, mul_op, div_shift,
                                                      **extra)
            prog += lean_prog
        else:
            m1 = Signal(signed(w.m1))
            m2 = Signal(signed(w.m2))
            lane_a = Signal(signed(w.lane_a))
            lane_b = Signal(signed(w.lane_b)) if kind in ("l2", "semidev") else None
            consts = [Signal(signed(w.lane_c), name=f"const{i}") for i in range(nconst)]
            # SH = max(16, 4 + bitlen(n 2**gb + coef_max)) from the descriptor
            coef_max = {"l2": n << cfg.in_fmt.bits, "semidev": (nn << cfg.in_fmt.bits) if kind == "semidev" else 0,
                        "range": Mux(chan.c_full > chan.c_last, chan.c_full, chan.c_last) if kind == "range" else 0,
                        }.get(kind, n << 1)
            shv = Signal(w.p)
            m.d.comb += shv.eq((n << gb) + coef_max)
            lead = leading_one(m, shv, "sh_lead")
            sh_new = Signal(range(w.sh_max + 8))
            m.d.comb += sh_new.eq(Mux(lead + 1 + BWD_GUARD > SR_BITS, lead + 1 + BWD_GUARD, SR_BITS))
            c0w = Signal(signed(w.p))                  # C0 before its alignment and clamp
            prog += [
                div_shift(tq, gam, cfg.gamma_fmt.bits, e + 1 + sh),            # M1 = round(G 2**(E+SH) / Den)
                ("half", m1, tq),
                div_shift(tq, qg, w.qg, cf + 1),                               # dgamma = round(Qg 2**CF / Den)
                ("half", dgamma, tq),
                mul_op(lane_a, m1, n, cb),                                     # A = n M1
                ("shl", lane_a),                                               # A' = A 2**(sh_max - SH)
                mul_op(c0w, m1, absv(sg), w.sg, neg=~sgn(sg)),                 # C0 = -Sg M1
                mul_op(scratch, qg, absv(gam), cfg.gamma_fmt.bits, neg=sgn(gam)),   # G Qg
            ]

            def const_op(i, mul=None):          # consts[i] = clamp((C0 +- M2 b) 2**(sh_max - SH))
                return ([mul] if mul is not None else [("set", scratch, c0w)]) + [("shl", scratch), ("clamp", consts[i])]

            if kind == "semidev":       # M2 = round(G Qg 2**(2CF+E+SH) / (n Den^3)); B'' = n^2 M2; W = n sum_neg x - S c_neg
                prog += [div_shift(tq, scratch, w.x, 2 * cf + e + 1 + sh), div_shift(tq, tq, w.q + 2, 0),
                         div_shift(tq, tq, w.q + 2, 0), div_shift(tq, tq, w.q + 2, 0, den=n), ("half", m2, tq),
                         mul_op(lane_b, m2, nn, 2 * cb), ("shl", lane_b),
                         mul_op(wsum, sx_neg, n, cb),
                         mul_op(wsum, chan.sum, c_neg, cb, c=wsum, neg=1),
                         mul_op(c0w, m2, absv(wsum), wn_bits, c=c0w, neg=sgn(wsum))]          # C0 = -Sg M1 + W M2
                prog += const_op(0)
                prog += [mul_op(scratch, m2, absv(chan.sum), cfg.sum_bits, neg=sgn(chan.sum)),  # C1 = C0 + n S M2
                         mul_op(scratch, scratch, n, cb, c=c0w), ("shl", scratch), ("clamp", consts[1])]
            elif kind == "l2":
                prog += [div_shift(tq, scratch, w.x, 2 * cf + e + 1 + sh), div_shift(tq, tq, w.q + 2, 0),
                         div_shift(tq, tq, w.q + 2, 0), ("half", m2, tq),
                         mul_op(lane_b, m2, n, cb), ("shl", lane_b)]                       # B' = n M2 2**(sh_max - SH)
                prog += const_op(0, mul_op(scratch, m2, absv(chan.sum), cfg.sum_bits, c=c0w, neg=sgn(chan.sum)))  # + S M2
            else:
                factor, fbits = (n, cb) if kind == "range" else (chan.c, cfg.const_bits)
                prog += [mul_op(scratch, scratch, factor, fbits), div_shift(tq, scratch, w.x, e + 1 + sh),
                         div_shift(tq, tq, w.q + 2, 0), ("half", m2, tq)]
                if kind == "range":     # coef +c: C0 - c M2; -c: C0 + c M2
                    prog += const_op(0)
                    for i, c, ng in ((1, chan.c_full, 1), (2, chan.c_full, 0), (3, chan.c_last, 1), (4, chan.c_last, 0)):
                        prog += const_op(i, mul_op(scratch, m2, c, cfg.const_bits, c=c0w, neg=ng))
                else:                   # coef n t - T: t = +1: C0 - (n - T) M2, t = -1: C0 + (n + T) M2, 0: C0 + T M2
                    tsum = sel.tsum
                    prog += const_op(1, mul_op(scratch, m2, n - tsum, cb + 1, c=c0w, neg=1))
                    prog += const_op(2, mul_op(scratch, m2, n + tsum, cb + 1, c=c0w, neg=0))
                    prog += const_op(0, mul_op(scratch, m2, absv(tsum), cb + 1, c=c0w, neg=sgn(tsum)))

        align = Signal(range(w.sh_max + 1))

        # LFSR of the stochastic rounding
        if stoch:
            state = Signal(32, init=SEED_ZERO & MASK32)
            draws, s = [], state
            for j in range(lanes):
                s = xorshift_step(m, s, f"sr{j}")
                draws.append(s[32 - SR_BITS:])
            lfsr_next = s

        # -- the dx lanes, four registers that stall together (adv: the output register is free or freed now):
        # s0 holds the beat (x, g, its sel codes, mask, draws); s1 the products g A' (and x B') and C[sel] + rnd;
        # s2 acc, their sum; the output register dx = clamp(acc >> sh_max). The products have a register of their own:
        # a multiply and a wide add in one cycle were the backward's critical path (17 ns on the ECP5). The lean l2 /
        # semidev lanes have a fifth, sm, between s1 and s2 (their Z from Y (x - xref): a shift by SY, a sum, a clamp).
        dxf = gcfg.dx_fmt
        o_valid = Signal()
        o_data = Signal(lanes_of(fmt_shape(dxf), lanes))
        m.d.comb += [self.o.valid.eq(o_valid), self.o.payload.eq(o_data)]
        take = Signal()                             # a pass-2 beat enters s0
        adv = Signal()
        m.d.comb += adv.eq(~o_valid | self.o.ready)
        s0_valid, s1_valid, s2_valid = Signal(), Signal(), Signal()
        s0_x = Signal.like(xs, name="s0_x")
        s0_g = Signal.like(gs, name="s0_g")
        s0_mask = Signal(lanes)
        s0_sel = Signal(lanes_of(3, lanes)) if sel is not None else None
        s0_draw = Signal(lanes_of(SR_BITS, lanes)) if stoch else None
        s1_mask, s2_mask = Signal(lanes), Signal(lanes)
        s2_acc = [Signal(signed(w.acc), name=f"acc{j}") for j in range(lanes)]
        s1_force, s2_force = Signal(lanes), Signal(lanes)       # lean, special regime: the lane's dx saturates
        s1_high, s2_high = Signal(lanes), Signal(lanes)         # ... high (else low)
        linear = lean and kind in LEAN_LINEAR_HDL      # the lean l2 / semidev lanes take u = x - xref, from s0 on
        s0_u = [Signal(signed(cfg.in_fmt.bits + 2), name=f"s0_u{j}") for j in range(lanes)] if linear else None
        with m.If(take):
            m.d.sync += [s0_x.eq(xs), s0_g.eq(gs), s0_mask.eq(mask)]
            if linear:
                m.d.sync += [u.eq(xs[j] - q_mean) for j, u in enumerate(s0_u)]
            if s0_sel is not None:
                m.d.sync += s0_sel.eq(sel.sel)
            if stoch:
                m.d.sync += [s0_draw.eq(Cat(*draws)), state.eq(lfsr_next)]
        terms, mids, accs, forces, highs = [], [], [], [], []    # per lane: stage one's values, stage two's sum

        def stage(j, values, combine):
            regs = [Signal(v.shape(), name=f"s1_t{j}_{i}") for i, v in enumerate(values)]
            terms.extend(zip(regs, values))
            out = combine(regs)
            if isinstance(out, tuple):              # a middle stage (lean l2 / semidev): registers of its own
                mvals, final = out
                mregs = [Signal(v.shape(), name=f"sm_t{j}_{i}") for i, v in enumerate(mvals)]
                mids.extend(zip(mregs, mvals))
                out = final(mregs)
            accs.append(out)
        for j in range(lanes):
            sj = s0_sel[j] if s0_sel is not None else None
            if lean:
                values, combine, force, high = lane_expr(j, s0_g[j], sj, s0_draw[j] if stoch else None,
                                                         s0_u[j] if linear else s0_x[j])
                stage(j, values, combine)
                forces.append(force)
                highs.append(high)
                continue
            if kind == "semidev":       # C1 where d < 0 (sel 2), C0 elsewhere
                cj = Mux(sj == 2, consts[1], consts[0])
            else:
                cj = consts[0] if nconst == 1 else Mux(sj == 0, consts[0], consts[1])
            if nconst > 1:
                for i in range(2, nconst):
                    cj = Mux(sj == i, consts[i], cj)
            rnd = (s0_draw[j] << (w.sh_max - SR_BITS)) if stoch else Const(1 << (w.sh_max - 1))
            values = [s0_g[j] * lane_a, cj + rnd]
            if kind == "semidev":
                values.append(Mux(sj == 2, s0_x[j] * lane_b, 0))
            elif lane_b is not None:
                values.append(s0_x[j] * lane_b)
            stage(j, values, lambda r: r[0] + r[1] - r[2] if len(r) > 2 else r[0] + r[1])
        dx_vals, sat_flags = [], []
        for j in range(lanes):
            v = s2_acc[j] >> (sh if lean else w.sh_max)
            over, under = v > dxf.max_int, v < dxf.min_int
            if lean:                                # a forced lane saturates on its side
                over, under = Mux(s2_force[j], s2_high[j], over), Mux(s2_force[j], ~s2_high[j], under)
            dx_vals.append(Mux(~s2_mask[j], 0, Mux(over, dxf.max_int, Mux(under, dxf.min_int, v[:dxf.bits]))))
            sat_flags.append(s2_mask[j] & (over | under))
        sm_valid, sm_mask, sm_force, sm_high = Signal(), Signal(lanes), Signal(lanes), Signal(lanes)
        pre = (sm_valid, sm_mask, sm_force, sm_high) if mids else (s1_valid, s1_mask, s1_force, s1_high)
        with m.If(adv):
            m.d.sync += [o_valid.eq(s2_valid), s2_valid.eq(pre[0]), s1_valid.eq(s0_valid), s0_valid.eq(take),
                         s2_mask.eq(pre[1]), s1_mask.eq(s0_mask)]
            if lean:
                m.d.sync += [s1_force.eq(Cat(*forces)), s1_high.eq(Cat(*highs)), s2_force.eq(pre[2]),
                             s2_high.eq(pre[3])]
            if mids:
                m.d.sync += [sm_valid.eq(s1_valid), sm_mask.eq(s1_mask), sm_force.eq(s1_force), sm_high.eq(s1_high)]
                m.d.sync += [r.eq(v) for r, v in mids]
            m.d.sync += [r.eq(v) for r, v in terms]
            m.d.sync += [a.eq(e) for a, e in zip(s2_acc, accs)]
            m.d.sync += o_data.eq(Cat(*[d[:dxf.bits] for d in dx_vals]))
            with m.If(s2_valid):
                m.d.sync += sat.eq(sat + tree_sum(sat_flags))

        # -- stats word
        m.d.comb += [self.stats.payload.dgamma.eq(dgamma), self.stats.payload.dbeta.eq(sg),
                     self.stats.payload.sat.eq(sat)]

        refused = self._refused(m, self.chan.payload)
        beat = Signal()
        with m.If(beat):                            # left - lanes > j is left > j + lanes: compares of left alone
            m.d.sync += [left.eq(Mux(last, 0, left - lanes)), mask.eq(Cat(*[left > j + lanes for j in range(lanes)])),
                         last.eq(left <= 2 * lanes)]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.chan.ready.eq(1)
                with m.If(self.chan.valid):
                    p = self.chan.payload
                    m.d.sync += [chan.eq(p), *load_left(p.count), sg.eq(0), sgx.eq(0), sat.eq(0), dgamma.eq(0),
                                 align.eq(0)]
                    if stoch:
                        m.d.sync += state.eq(Mux(p.seed == 0, SEED_ZERO, p.seed))
                    if sel is not None:
                        m.d.comb += sel.clear.eq(1)
                    if kind == "range":     # ChunkExtremes registers its first beat's chunk starts now
                        m.d.comb += sel.chunk_size.eq(p.chunk_size)
                    with m.If(refused):
                        m.d.sync += sg.eq(0)
                        m.next = "REFUSED"
                    with m.Else():
                        m.next = "PRE" if kind in pre_kinds else "PASS1"
                    if kind == "semidev":
                        m.d.sync += [sx_neg.eq(0), c_neg.eq(0)]
            if kind in pre_kinds:
                # q = floor(S / n), then rz: S - q n == 0
                with m.State("PRE"):
                    s = chan.sum
                    m.d.comb += [div.start.eq(1), div.rem_init.eq(0), div.lo_init.eq(absv(s)),
                                 div.neg.eq(sgn(s)), div.den.eq(n), div.steps.eq(w.q)]
                    m.next = "PRE_DIV"
                with m.State("PRE_DIV"):
                    with m.If(div.done):
                        m.d.sync += q_mean.eq(div.q)
                        m.next = "PRE_MUL"
                with m.State("PRE_MUL"):
                    m.d.comb += [mul.start.eq(1), mul.a.eq(q_mean), mul.b.eq(n), mul.c.eq(chan.sum), mul.neg.eq(1),
                                 mul.steps.eq(cb)]
                    m.next = "PRE_WAIT"
                with m.State("PRE_WAIT"):
                    with m.If(mul.done):
                        m.d.sync += rz.eq(mul.p == 0)
                        if lean or kind in ("linf", "topk"):
                            m.d.sync += r_mean.eq(mul.p)
                        m.next = "PRE_NN" if kind == "semidev" else "PASS1"
                if kind == "semidev":   # n^2, for SH (coef_max = n^2 2**in_bits) and B''
                    with m.State("PRE_NN"):
                        m.d.comb += [mul.start.eq(1), mul.a.eq(n), mul.b.eq(n), mul.c.eq(0), mul.neg.eq(0),
                                     mul.steps.eq(cb)]
                        m.next = "PRE_NN_WAIT"
                    with m.State("PRE_NN_WAIT"):
                        with m.If(mul.done):
                            m.d.sync += nn.eq(mul.p)
                            m.next = "PASS1"
            with m.State("PASS1"):
                m.d.comb += [self.i.ready.eq(1), beat.eq(self.i.valid)]
                if not lean:
                    m.d.sync += sh.eq(sh_new)
                if kind == "range":
                    m.d.comb += sel.rewind.eq(self.i.valid & last)
                if sel is not None:
                    m.d.comb += sel.p1.eq(self.i.valid)
                terms_g = [Mux(mask[j], gs[j], 0) for j in range(lanes)]
                terms_gx = [Mux(mask[j], gs[j] * xs[j], 0) for j in range(lanes)]
                with m.If(self.i.valid):
                    m.d.sync += [sg.eq(sg + tree_sum(terms_g)), sgx.eq(sgx + tree_sum(terms_gx))]
                    if kind == "semidev":
                        negs = [sel.sel[j] == 2 for j in range(lanes)]
                        m.d.sync += [sx_neg.eq(sx_neg + tree_sum([Mux(negs[j], xs[j], 0) for j in range(lanes)])),
                                     c_neg.eq(c_neg + tree_sum(negs))]
                    with m.If(last):
                        m.d.sync += load_left(n)
                        m.next = "S0"
            for idx, op in enumerate(prog):
                nxt = f"S{idx + 1}" if idx + 1 < len(prog) else "PASS2"
                if op[0] in ("sets", "loop", "skip", "norm"):    # the lean program's steps
                    with m.State(f"S{idx}"):
                        if op[0] == "sets":
                            m.d.sync += [dst.eq(v) for dst, v in op[1]]
                            m.next = nxt
                        elif op[0] == "loop":                    # while cond: the assignments, one round a cycle
                            with m.If(op[1]):
                                m.d.sync += [dst.eq(v) for dst, v in op[2]]
                            with m.Else():
                                m.next = nxt
                        elif op[0] == "skip":                    # cond: jump over the next op[2] steps
                            far = idx + 1 + op[2]
                            with m.If(op[1]):
                                m.next = f"S{far}" if far < len(prog) else "PASS2"
                            with m.Else():
                                m.next = nxt
                        else:                                    # normalize (_lean_program)
                            _, am, shc, special, top, sh_hi, sh_lo = op
                            with m.If(~special & ((am >= top) | (shc > sh_hi))):
                                m.d.sync += [am.eq(am >> 1), shc.eq(shc - 1)]
                            with m.Elif(shc < sh_lo):
                                m.d.sync += [am.eq(am << 1), shc.eq(shc + 1), special.eq(1)]
                            with m.Else():
                                m.next = nxt
                    continue
                if op[0] in ("half", "set", "clamp", "shl"):
                    with m.State(f"S{idx}"):
                        if op[0] == "half":
                            m.d.sync += op[1].eq((op[2] + 1) >> 1)
                        elif op[0] == "set":
                            m.d.sync += op[1].eq(op[2])
                        elif op[0] == "clamp":
                            t = w.clamp
                            m.d.sync += op[1].eq(Mux(scratch > t, t, Mux(scratch < -t, -t, scratch)))
                        else:                              # << (sh_max - SH), one bit a cycle
                            with m.If(align + sh == w.sh_max):
                                m.d.sync += align.eq(0)
                                m.next = nxt
                            with m.Else():
                                m.d.sync += [op[1].eq(op[1] << 1), align.eq(align + 1)]
                        if op[0] != "shl":
                            m.next = nxt
                    continue
                with m.State(f"S{idx}"):
                    if op[0] == "mul":
                        _, dst, a, b, b_bits, c, neg = op
                        m.d.comb += [mul.start.eq(1), mul.a.eq(a), mul.b.eq(b), mul.c.eq(c), mul.neg.eq(neg),
                                     mul.steps.eq(b_bits)]
                    else:
                        _, dst, v, v_bits, shift, divisor = op
                        # |v| 2**shift: |v| at the top of the quotient register, v_bits + shift steps
                        mag = absv(v)
                        if isinstance(shift, int) and shift == 0:
                            m.d.comb += div.lo_init.eq(mag)
                            m.d.comb += div.steps.eq(w.q)
                        else:
                            m.d.comb += div.lo_init.eq(mag << (w.q - v_bits))
                            m.d.comb += div.steps.eq(v_bits + shift)
                        m.d.comb += [div.start.eq(1), div.rem_init.eq(0), div.neg.eq(sgn(v)), div.den.eq(divisor)]
                    m.next = f"W{idx}"
                with m.State(f"W{idx}"):
                    eng = mul if op[0] == "mul" else div
                    with m.If(eng.done):
                        m.d.sync += dst.eq(mul.p if op[0] == "mul" else div.q)
                        m.next = nxt
            with m.State("PASS2"):
                more = left != 0
                m.d.comb += [self.i.ready.eq(more & adv), take.eq(self.i.valid & self.i.ready), beat.eq(take)]
                if sel is not None:
                    m.d.comb += sel.p2.eq(take)
                with m.If(~more & ~s0_valid & ~s1_valid & ~sm_valid & ~s2_valid & adv):
                    m.next = "REPORT"
            with m.State("REPORT"):
                m.d.comb += self.stats.valid.eq(1)
                with m.If(self.stats.ready):
                    m.next = "IDLE"
            with m.State("REFUSED"):
                m.d.comb += [self.stats.valid.eq(1), self.stats.payload.error.eq(1),
                             self.stats.payload.dgamma.eq(0), self.stats.payload.dbeta.eq(0),
                             self.stats.payload.sat.eq(0)]
                with m.If(self.stats.ready):
                    m.next = "IDLE"
        return m


def check_backward(cfg, gcfg):
    """A ValueError naming the parameter, its value and what is allowed, for a build the backward does not cover."""
    if not isinstance(gcfg, GradConfig):
        raise ValueError(f"gcfg={gcfg!r} is not supported: allowed a GradConfig")
    if gcfg.lean and cfg.stat_kind not in LEAN_HDL_KINDS:
        raise ValueError(f"mantissa_bits={gcfg.mantissa_bits!r} is not supported by the backward datapath for "
                         f"kind={cfg.kind!r} (its lean form is not built): allowed mantissa_bits=None, or the lean form "
                         f"for kind {', '.join(LEAN_HDL_KINDS)}")
    if cfg.kind not in BACKWARD_HDL_KINDS:
        raise ValueError(f"kind={cfg.kind!r} is not supported by the backward datapath: allowed "
                         f"{', '.join(BACKWARD_HDL_KINDS)}")
    for bad, name, value, allowed in ((cfg.dropout_active, "dropout", cfg.dropout, "0"),
                                      (cfg.elementwise, "elementwise", True, "False (per-channel gamma only)"),
                                      (cfg.inference_only, "inference_only", True, "False (training backward only)"),
                                      (cfg.overlap, "overlap", True, "False")):
        if bad:
            raise ValueError(f"{name}={value!r} is not supported by the backward datapath: allowed {allowed}")
    if gcfg.lean:
        lw = lean_hw_widths(cfg, gcfg)
        if lw.e + lw.sh_max < 0:
            raise ValueError(f"formats in={cfg.in_fmt} gamma={cfg.gamma_fmt} grad={gcfg.grad_fmt} dx={gcfg.dx_fmt} give "
                             f"E = {lw.e}: allowed E >= {-lw.sh_max} for the lean form (fewer gradient or gamma "
                             f"fraction bits)")
        return
    w = backward_widths(cfg, gcfg)
    if w.e + SR_BITS + 1 < 0:
        raise ValueError(f"formats in={cfg.in_fmt} gamma={cfg.gamma_fmt} grad={gcfg.grad_fmt} dx={gcfg.dx_fmt} give "
                         f"E = {w.e}: allowed E >= {-SR_BITS - 1} (fewer gradient or gamma fraction bits)")
