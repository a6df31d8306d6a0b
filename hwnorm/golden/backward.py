"""Bit-exact backward of the training-mode normalizations: dx, dgamma, dbeta codes on Python integers.

docs/numerics.md "Backward" specifies it; names follow it. Inputs are what the forward kept: the input codes x
(in_fmt) and per channel S = sum(x) and Den (ChannelStats; recomputed from x when not given, the same bits), with
dy in grad_fmt and gamma in gamma_fmt. x_hat is never rounded: x_hat_i = d_i 2**CF / Den with d_i = n x_i - S exact.
Two passes per channel: a reduction pass (Sg = sum g, Qg = sum g d, the kind's selection and its sum), then the dx
pass dx_i = sat((u_i M1 - coef_i M2 + rnd_i) >> SH), u_i = n g_i - Sg, with M1, M2 rounded once per channel. gamma per
value (a grouped layer's per-element affine): h_i = gamma_i g_i takes g's place, gamma leaves M1, and dgamma is per
value (docs/numerics.md "Per-element gamma"). An FRN kind (no centring: S = 0, no mean share in u or coef) takes g as
dL/dy, after its TLU: `tlu_keep` says where the gradient passes (y >= tau). A dropout build: g passes where the
forward kept the value (its LFSR mask again, from the same seeds: nothing stored) and the scale S / 2**F joins the
constants (docs/numerics.md "Dropout in the backward"). GradConfig(mantissa_bits=m): the lean block-floating form of
the dx pass for a narrow datapath, dx_i = A (v_i - z_i) with A an m-bit mantissa and the zero crossings z_i exact per
channel (docs/numerics.md "The lean backward"; `lean_widths`, `lean_bound`).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..config import LEAN_GUARD, SR_BITS, GradConfig, NormConfig
from ..constants import channel_params, chunk_sizes, cvar_count, topk_eff
from ..fixed import check_int_array
from .backward_ref import BACKWARD_KINDS, check_kind, top_first
from .bitexact import ChannelStats, centre, deviation_den, train
from .dropout import check_seeds, draws, keep_mask

BWD_GUARD = 4        # SH keeps the constants' rounding below 2**-(BWD_GUARD + 1) dx LSB per value


@dataclass
class BackwardResult:
    dx: np.ndarray                 # (C, n) int64 codes in gcfg.dx_fmt, saturated
    dgamma: np.ndarray             # (C,) object: sum(g * x_hat), grad_fmt.frac fraction bits, rounded half up
    dbeta: np.ndarray              # (C,) object: sum(g), grad_fmt.frac fraction bits (exact); per-value gamma: (C, n)
                                   # g * x_hat and g, each value's own
    sat: np.ndarray                # (C,) dx values saturated
    shift: np.ndarray              # (C,) SH of the dx pass
    unrounded: np.ndarray | None   # (C, n) float64: (u M1 - coef M2) / 2**SH in dx LSBs, before rounding
    lean: list | None = None       # the lean form (gcfg.mantissa_bits): per channel its LeanChannel constants


def rdiv(num: int, den: int) -> int:
    """num / den rounded half up (den > 0), on Python integers."""
    return (2 * num + den) // (2 * den)


def scaled(num: int, exp: int, den: int) -> int:
    """num * 2**exp / den rounded half up (den > 0), exp of either sign."""
    return rdiv(num << exp, den) if exp >= 0 else rdiv(num, den << -exp)


def quantize_grad(gcfg: GradConfig, v, seed=None) -> tuple[np.ndarray, int]:
    """dy in grad_fmt LSBs (float64, (C, n)) -> (codes, saturated count). half_up: floor(v + 1/2); stochastic: the
    host truncates v to SR_BITS more fraction bits, t = floor(v 2**SR_BITS) (exact in float64), adds value i's draw
    r_i of its channel's LFSR (hwnorm.golden.dropout.draws, seeded per channel) and keeps (t + r_i) >> SR_BITS."""
    v = np.asarray(v, dtype=np.float64)
    if v.ndim != 2 or not np.all(np.isfinite(v)):
        raise ValueError(f"dy has shape {v.shape}: allowed (channels, n) finite numbers")
    if gcfg.rounding == "stochastic":
        seeds = check_seeds(seed, v.shape[0])
        q = (np.floor(np.ldexp(v, SR_BITS)) + draws(seeds, v.shape[1])) // (1 << SR_BITS)
    else:
        if seed is not None:
            raise ValueError(f"seed={seed!r} applies to rounding='stochastic' only: allowed seed=None with rounding="
                             f"{gcfg.rounding!r}")
        q = np.floor(v + 0.5)
    lo, hi = gcfg.grad_fmt.min_int, gcfg.grad_fmt.max_int
    sat = int(np.count_nonzero((q < lo) | (q > hi)))
    return np.clip(q, lo, hi).astype(np.int64), sat


def _selection(cfg: NormConfig, x, d, n: int):
    """(coef, coef_max) of the dx pass per kind (object arrays (C, n)): l2 d; semidev n min(d, 0) - W; the sign kinds
    n t - sum(t), t the signed selection (ties to the lowest index); range c_j (is_argmax - is_argmin). An FRN kind
    (frn, frn_l1, frn_linf, frn_range: l2, l1, linf, range about 0) has no mean: n t, no sum(t)."""
    kind = cfg.stat_kind
    bound = n << cfg.in_fmt.bits
    if kind == "l2":
        return d, bound
    if kind == "semidev":
        dm = np.minimum(d, 0)
        return n * dm - dm.sum(axis=1).reshape(-1, 1), n * bound
    if kind == "range":
        hp = channel_params(cfg, n)
        sizes = chunk_sizes(n, cfg.chunks)
        coef = np.zeros(x.shape, dtype=object)
        rows, start = np.arange(x.shape[0]), 0
        for j, m in enumerate(sizes):
            c = hp["c_last"] if j == len(sizes) - 1 else hp["c_full"]
            part = x[:, start:start + m]
            coef[rows, start + part.argmax(axis=1)] += c          # the first max and the first min of the chunk
            coef[rows, start + part.argmin(axis=1)] -= c
            start += m
        return coef, max(hp["c_full"], hp["c_last"])
    di = d.astype(np.int64)                                        # |d| < n 2**in_bits: int64 holds it
    if kind in ("l1", "mad"):
        t = np.sign(di)
    elif kind == "cvar":
        t = top_first(di, cvar_count(n, cfg.alpha)).astype(np.int64)
    else:
        t = np.sign(di) * top_first(np.abs(di), topk_eff(n, 1 if kind == "linf" else cfg.k))
    t = t.astype(object)
    return n * t - (0 if cfg.frn else t.sum(axis=1).reshape(-1, 1)), 2 * n


def _k_parts(cfg: NormConfig, hp, n: int, gq: int, den: int, e: int) -> tuple[int, int, int]:
    """K 2**SH = num 2**exp / dd with K the kind's factor of coef_i (gq = gamma * Qg, e = E + SH): (num, exp, dd)."""
    cf, kind = cfg.const_frac_bits, cfg.stat_kind
    if kind == "l2":
        return gq, 2 * cf + e, den ** 3
    if kind == "semidev":
        return gq, 2 * cf + e, n * den ** 3
    if kind == "range":
        return n * gq, e, den * den
    return gq * hp["c"], e, den * den


def _m2(cfg: NormConfig, hp, n: int, gq: int, den: int, e: int) -> int:
    """M2 = round(K 2**SH) with K the kind's factor of coef_i (gq = gamma * Qg, e = E + SH)."""
    return scaled(*_k_parts(cfg, hp, n, gq, den, e))


LEAN_LINEAR = ("l2", "semidev")   # coef_i per value, affine in x: the lean lane's second multiply (by x)


@dataclass
class LeanChannel:
    """One channel's constants of the lean backward (docs/numerics.md "The lean backward"): the lane computes
    acc_i = X v_i - Z_i and dx_i = sat((acc_i + rnd_i) >> SH). Class kinds: Z_i = z[coef_i] (one per selection value);
    linear kinds (LEAN_LINEAR): Z_i = zref + ((Y w_i) >> SY) on the linear values (w_i = x_i - xref), z[coef_i] else."""

    regime: str          # "regular", "special" (|gain| >= 2**dx_bits per dy LSB), "tiny" (SH clamped), "zero" (gamma 0)
    shift: int           # SH
    am: int              # the m-bit mantissa Am of |A| (A = dx LSBs per dy LSB), 2**(m-2) <= Am < 2**(m-1)
    x: int               # X, signed: Am (regular), Am << k (special), Am >> j (tiny)
    z: dict              # selection value (coef) -> Z (clamped to +-zmax)
    q: dict              # selection value -> floor(z_t), the zero crossing in dy LSBs (special regime's comparators)
    zmax: int            # the clamp of every Z: beyond it every dx of the class saturates
    zref: int = 0        # linear kinds: Z at x = xref
    y: int = 0           # linear kinds: the signed m_Y-bit mantissa of the slope of Z per x LSB (lean_slope_bits)
    sy: int = 0          # its shift
    xref: int = 0        # floor(S / n) (FRN: 0)


def _frac(num: int, exp: int, den: int) -> Fraction:
    """num 2**exp / den as an exact Fraction."""
    return Fraction(num << exp, den) if exp >= 0 else Fraction(num, den << -exp)


def _floor(fr: Fraction) -> int:
    """floor(fr), exact."""
    return fr.numerator // fr.denominator


def _log2_floor(fr: Fraction) -> int:
    """floor(log2 fr) for fr > 0."""
    lg = fr.numerator.bit_length() - fr.denominator.bit_length()
    return lg if fr >= _frac(1, lg, 1) else lg - 1


def normalize(fr: Fraction, m: int) -> tuple[int, int]:
    """(M, S) with M = floor(fr 2**S) and 2**(m-2) <= M < 2**(m-1), for fr > 0: one m-bit quotient, normalized."""
    p, q = fr.numerator, fr.denominator
    sh = m - 2 - (p.bit_length() - q.bit_length())
    while True:
        mm = (p << sh) // q if sh >= 0 else p // (q << -sh)
        if mm >= 1 << (m - 1):
            sh -= 1
        elif mm < 1 << (m - 2):
            sh += 1
        else:
            return mm, sh


def lean_shift_max(vb: int) -> int:
    """SH_max of the lean backward for dy (or gamma dy) codes of vb bits: beyond it the gain is tiny and its mantissa
    loses bits, costing at most 2**(vb - 1 - SH_max) = 2**-(LEAN_GUARD + 2) dx LSB per value."""
    return vb + LEAN_GUARD + 1


def lean_gain_log2_max(cfg: NormConfig, gcfg: GradConfig, per_value: bool = False) -> int:
    """ceil(log2) of the largest gain A = n gamma 2**E / Den (dx LSBs per dy LSB; per-value gamma: without gamma) over
    every count and every Den a forward channel reports (Den >= 2**(floor(log2 n) + den_per_count_log2_min))."""
    e = cfg.const_frac_bits + cfg.in_fmt.frac + gcfg.dx_fmt.frac - gcfg.grad_fmt.frac - cfg.gamma_fmt.frac
    gnum = 1 if per_value else max(-cfg.gamma_fmt.min_int, cfg.gamma_fmt.max_int)
    sc, sf = (cfg.dropout_scale, cfg.dropout_scale_frac) if cfg.dropout_active else (1, 0)
    top = Fraction(0)
    for b in range(cfg.count_bits):
        n = min(cfg.max_count, (2 << b) - 1)
        floor_den = 1 << max(0, b + cfg.den_per_count_log2_min)
        top = max(top, _frac(n * gnum * sc, e - sf, floor_den))
    return -_log2_floor(1 / top)                         # ceil(log2 top)


def lean_slope_bits(cfg: NormConfig, gcfg: GradConfig, vb: int) -> int:
    """The linear kinds' (l2, semidev, frn) second mantissa Y: enough bits that its relative error times the largest
    |A (v - mean v)| < 2**P, P = log2 of the largest gain the X mantissa holds (regular or special) + vb, stays below
    2**-LEAN_GUARD dx LSB (docs/numerics.md "The lean backward"; vb: bits of v = dy, or gamma dy per value)."""
    m = gcfg.mantissa_bits
    top = max(m - 1 - LEAN_GUARD, lean_gain_log2_max(cfg, gcfg, vb > gcfg.grad_fmt.bits))
    return top + vb + LEAN_GUARD + 2


def lean_bound(cfg: NormConfig, gcfg: GradConfig) -> float:
    """beta: the lean dx before rounding is within beta dx LSB of the exact gradient wherever that lies within
    dx_fmt +- 1 LSB (docs/numerics.md "The lean backward", the proof): class kinds 2**-(m-2) D + 2**-G; the linear
    kinds (l2, frn, semidev) add 2**-(m_Y-2) D (1 + 2**-(m+1)) + 2**-G (1 + 2**-(m+1)) + 2.25
    2**-G. D = 2**(dx_bits-1) + 1, G = LEAN_GUARD, m_Y = lean_slope_bits (the narrower of per-channel and per-value
    gamma's, the larger term)."""
    m, g = gcfg.mantissa_bits, LEAN_GUARD
    dd = 2.0 ** (gcfg.dx_fmt.bits - 1) + 1
    beta = 2.0 ** -(m - 2) * dd + 2.0 ** -g
    if cfg.stat_kind in LEAN_LINEAR:
        my = min(lean_slope_bits(cfg, gcfg, gcfg.grad_fmt.bits),
                 lean_slope_bits(cfg, gcfg, gcfg.grad_fmt.bits + cfg.gamma_fmt.bits))
        beta += (2.0 ** -(my - 2) * dd + 2.0 ** -g) * (1 + 2.0 ** -(m + 1)) + 2.25 * 2.0 ** -g
    return beta


LEAN_CLASSES = {"range": 5, "cvar": 2, "l2": 1, "semidev": 2}   # Z constants per lane (l2: zref; the rest: 3 signs)


def lean_widths(cfg: NormConfig, gcfg: GradConfig, per_value: bool = False) -> dict:
    """Bounds of the lean backward's registers (docs/numerics.md "The lean backward"), signed widths unless said:
    per lane the multiplier(s), the Z constants, the accumulator, the special regime's comparators; per channel the
    mantissa quotient, the zero-crossing numerators N_t and the Z (linear kinds: Y) quotient's operands, exact, in the
    regular and special regimes and in the tiny one (the exact gain: a divisor of Den^2, Den^3 for Y). Every value the golden model
    computes fits them (tests/test_backward_lean.py)."""
    m, gb, dxb, g = gcfg.mantissa_bits, gcfg.grad_fmt.bits, gcfg.dx_fmt.bits, LEAN_GUARD
    vb = gb + (cfg.gamma_fmt.bits if per_value else 0)
    sh_max, kind, n = lean_shift_max(vb), cfg.stat_kind, cfg.max_count
    amax = lean_gain_log2_max(cfg, gcfg, per_value)
    k_max = max(0, g - (m - 2 - amax))                 # special regime: X' = Am << k, k = SH_lo - SH
    zmax = (1 << (m - 2 + vb)) + (1 << (dxb + 1 + sh_max))
    linear = kind in LEAN_LINEAR
    xmax = (1 << cfg.in_fmt.bits) - 1
    qmax = n * n * xmax << (vb - 1)                    # |Q| = |sum v d|, |d| <= n xmax
    cmax = n * ((1 << cfg.const_bits) - 1) if kind == "range" else 2 * n * ((1 << cfg.const_bits) - 1)
    nmax = (n * cfg.den_max << (vb - 1)) + qmax * cmax  # |N_t| = |c0 Den + (c or n) Q coef_t|
    sc_bits = cfg.dropout_scale.bit_length() if cfg.dropout_active else 0
    gbits = 0 if per_value else cfg.gamma_fmt.bits
    e = (cfg.const_frac_bits + cfg.in_fmt.frac + gcfg.dx_fmt.frac - gcfg.grad_fmt.frac - cfg.gamma_fmt.frac
         - (cfg.dropout_scale_frac if cfg.dropout_active else 0))
    out = dict(m=m, sh_lo=g, sh_max=sh_max, gain_log2_max=amax, k_max=k_max,
               lane_mul=(vb, m), lane_z=(LEAN_CLASSES.get(kind, 3), zmax.bit_length() + 1),
               lane_acc=((1 << (m - 2 + vb)) + zmax + (1 << sh_max)).bit_length() + 1,
               lane_shift=(g, sh_max), special_q=vb + 2, special_acc=dxb + g + 2,
               ch_dn=m + 2, ch_am_num=cfg.count_bits + (0 if per_value else cfg.gamma_fmt.bits) + sc_bits,
               ch_x_special=m + k_max, ch_den=cfg.den_bits, ch_n=nmax.bit_length() + 1,
               ch_zdiv=(m + k_max + nmax.bit_length() + 1, cfg.count_bits + cfg.den_bits),
               ch_zdiv_tiny=(gbits + sc_bits + nmax.bit_length() + 1 + max(0, e + sh_max), 2 * cfg.den_bits))
    if linear:                                          # no N_t: Q, and Y = X Q 2**(2 CF) / Den**2 (a quotient of m_Y bits)
        my = lean_slope_bits(cfg, gcfg, vb)
        out.update(lane_mul2=(cfg.in_fmt.bits + 1, my), slope_bits=my, slope_shift_max=cfg.in_fmt.bits + 2,
                   ch_n=qmax.bit_length() + 1,
                   ch_zdiv=(m + k_max + qmax.bit_length() + 1 + 2 * cfg.const_frac_bits, 2 * cfg.den_bits),
                   ch_zdiv_tiny=(gbits + sc_bits + cfg.count_bits + qmax.bit_length() + 1 + 2 * cfg.const_frac_bits
                                 + max(0, e + sh_max), 3 * cfg.den_bits))
    return out


def _lean_channel(m: int, vb: int, dx_bits: int, in_bits: int, a_dn: Fraction, a: Fraction, rho: Fraction,
                  c0: int, n: int, v, coef, lin=None):
    """One channel of the lean dx pass -> (acc (n,) object, LeanChannel). a: the exact gain A (dx LSBs per dy LSB),
    a_dn: A with Den truncated to m + 2 bits (the narrow divider), rho = K / (A / n) so that the zero crossing of
    value i is z_i = (c0 + rho coef_i) / n and dx_i = A (v_i - z_i). lin = (mask, w, kappa, xref): the linear kinds'
    values whose coef_i = kappa w_i + coef_ref."""
    sh_lo, sh_max = LEAN_GUARD, lean_shift_max(vb)
    if a == 0:                                          # gamma 0: K is 0 too, every dx is 0
        return np.zeros(len(v), dtype=object), LeanChannel("zero", sh_lo, 0, 0, {}, {}, 0)
    am, sh = normalize(abs(a_dn), m)
    sgn = 1 if a > 0 else -1
    if sh > sh_max:                                     # tiny gain: Am's low bits go, Z from the exact A
        regime, xv, sh = "tiny", sgn * (am >> (sh - sh_max)), sh_max
        aq = a * (1 << sh)
    elif sh < sh_lo:                                    # a gain of 2**dx_bits or more per dy LSB
        regime, xv, sh = "special", sgn * (am << (sh_lo - sh)), sh_lo
        aq = Fraction(xv)
    else:
        regime, xv = "regular", sgn * am
        aq = Fraction(xv)
    zmax = (abs(xv) << (vb - 1)) + (1 << (dx_bits + 1 + sh))
    clamp = lambda t: max(-zmax, min(zmax, t))          # noqa: E731
    zc, qc = {}, {}
    classed = np.ones(len(coef), dtype=bool) if lin is None else ~lin[0]
    for t in set(coef[classed].tolist()):              # the class constants (linear kinds: their non-linear values)
        zt = (c0 + rho * int(t)) / n
        zc[t], qc[t] = clamp(_floor(aq * zt)), _floor(zt)
    ch = LeanChannel(regime, sh, am, xv, zc, qc, zmax)
    z = np.array([zc[t] if k else 0 for t, k in zip(coef.tolist(), classed)], dtype=object)
    if lin is not None:
        mask, w, kappa, coef0, xref, r, my = lin
        if mask.any():
            slope = aq * rho * kappa                    # Z per x LSB on the linear values
            if slope == 0:
                y, sy = 0, 0
            else:
                y, sy = normalize(abs(slope), my)
                if sy > in_bits + 2:                    # a tiny slope: Y w loses less than 1/4 of an acc unit
                    y, sy = y >> (sy - in_bits - 2), in_bits + 2
                y = y if slope > 0 else -y
            # z_i = c0 / n + lambda (d_i / n + coef0 / (kappa n)): referenced at the mean of v, Y's error multiplies
            # z_i - c0 / n, which |dx_i| + |A| 2**vb bounds (docs/numerics.md "The lean backward", step 6)
            off = y * (coef0 - kappa * r)
            zref = _floor(aq * c0 / n + (Fraction(off, kappa * n << sy) if sy >= 0 else Fraction(off << -sy, kappa * n)))
            prod = y * w[mask]
            zl = zref + ((prod >> sy) if sy >= 0 else (prod << -sy))
            z[mask] = np.array([clamp(int(t)) for t in zl], dtype=object)
            ch.zref, ch.y, ch.sy, ch.xref = zref, y, sy, xref
    return xv * v - z, ch


def _lean_dx(cfg: NormConfig, gcfg: GradConfig, hp, n: int, v, vb: int, c0, coef, x, m1_num, q, den, e: int,
             sc: int, sf: int):
    """The lean dx pass's accumulators per channel: (acc (C, n) object, SH (C,), [LeanChannel])."""
    m, dxb = gcfg.mantissa_bits, gcfg.dx_fmt.bits
    kind = cfg.stat_kind
    my = lean_slope_bits(cfg, gcfg, vb) if kind in LEAN_LINEAR else 0
    accs, shs, chans = [], [], []
    for c in range(v.shape[0]):
        dd = int(den[c])
        sd = max(0, dd.bit_length() - (m + 2))          # Dn: Den's top m + 2 bits
        p = n * int(m1_num[c]) * sc
        a, a_dn = _frac(p, e - sf, dd), _frac(p, e - sf - sd, dd >> sd)
        rho = Fraction(0) if a == 0 else _frac(*_k_parts(cfg, hp, n, int(q[c]) * sc, dd, e - sf)) * n / a
        lin = None
        if kind in LEAN_LINEAR:                         # coef = kappa (n w - r) + coef0 on the linear values
            xo = x[c].astype(object)
            sx = 0 if cfg.frn else int(xo.sum())
            xref = sx // n                              # floor(S / n) (FRN: 0)
            dc = n * xo - sx
            if kind == "l2":                            # coef = d
                lin = (np.ones(n, dtype=bool), xo - xref, 1, 0, xref, sx - n * xref, my)
            else:                                       # semidev: below the mean, coef = n d - W
                below = np.array([int(t) < 0 for t in dc])
                wsum = sum(int(t) for t in dc[below])
                lin = (below, xo - xref, n, -wsum, xref, sx - n * xref, my)
        acc, ch = _lean_channel(m, vb, dxb, cfg.in_fmt.bits, a_dn, a, rho, int(c0[c]), n, v[c], coef[c], lin)
        accs.append(acc)
        shs.append(ch.shift)
        chans.append(ch)
    return np.array(accs, dtype=object).reshape(v.shape), np.array(shs, dtype=np.int64), chans


def tlu_keep(cfg: NormConfig, x, gamma, beta, tau, eps=None) -> np.ndarray:
    """An FRN kind's TLU, z = max(y, tau): where dL/dz passes to y, y >= tau on the forward's codes before the TLU
    (the 1 bit per value the forward keeps; a tie goes to y); the rest goes to tau. (C, n) bool."""
    y = train(cfg, x, gamma, beta, unrounded=False, eps=eps).y
    return y >= np.asarray(tau, dtype=np.int64).reshape(-1, 1)


def backward(cfg: NormConfig, gcfg: GradConfig, x, g, gamma, stats: ChannelStats | None = None, seed=None,
             unrounded: bool = False, eps=None, dropout_seed=None) -> BackwardResult:
    """The backward of `train` for dL/dy codes g (C, n) in gcfg.grad_fmt: x (C, n) in in_fmt, gamma (C,) in gamma_fmt
    or (C, n), one per value; stats the forward's ChannelStats (sum, den; None: recomputed from x). `seed`: per-channel
    seeds of the dx pass's stochastic rounding (gcfg.rounding == 'stochastic'; None: 0 each), refused for half_up.
    `eps`: an FRN kind's descriptor eps in the input format's units (None: cfg.eps), as `train` takes it.
    `dropout_seed`: a dropout build's per-channel seeds of the forward (its mask; None: 0), refused without dropout."""
    if not isinstance(gcfg, GradConfig):
        raise ValueError(f"gcfg={gcfg!r} is not supported: allowed a GradConfig")
    if cfg.kind not in BACKWARD_KINDS or cfg.elementwise:
        check_kind(cfg.kind)
        raise ValueError(f"{cfg.describe()}: the backward takes the normalize core's configuration: allowed "
                         f"elementwise=False (cfg.core of an elementwise build)")
    if dropout_seed is not None and not cfg.dropout_active:
        raise ValueError(f"dropout_seed={dropout_seed!r} applies to a dropout build only: this configuration has "
                         f"dropout={cfg.dropout}; allowed dropout_seed=None")
    x = check_int_array("x", x, cfg.in_fmt, ndim=2)
    g = check_int_array("g", g, gcfg.grad_fmt, ndim=2)
    channels, n = x.shape
    if g.shape != x.shape:
        raise ValueError(f"g has shape {g.shape}: allowed x's shape {x.shape}")
    if n < 1 or n > cfg.max_count:
        raise ValueError(f"count={n} is out of range: allowed [1, max_count={cfg.max_count}]")
    per_value = np.ndim(gamma) == 2
    gam = check_int_array("gamma", gamma if per_value else np.reshape(gamma, -1), cfg.gamma_fmt)
    if gam.shape not in ((channels,), x.shape):
        raise ValueError(f"gamma has shape {gam.shape}: allowed one per channel ({channels},) or one per value {x.shape}")
    if gcfg.rounding == "stochastic":
        rnd_draws = draws(check_seeds(seed, channels), n).astype(object)
    elif seed is not None:
        raise ValueError(f"seed={seed!r} applies to rounding='stochastic' only: allowed seed=None with rounding="
                         f"{gcfg.rounding!r}")
    if stats is not None and not (len(stats.sum) == len(stats.den) == channels):
        raise ValueError(f"stats holds {len(stats.sum)} sums and {len(stats.den)} Den: allowed one each per channel "
                         f"({channels}), the forward's ChannelStats of these x")
    sc, sf = 1, 0                                                  # the dropout scale S / 2**F (1: none)
    if cfg.dropout_active:                                         # the forward's mask, regenerated from its seeds
        g = np.where(keep_mask(cfg, check_seeds(dropout_seed, channels), n), g, 0)
        sc, sf = cfg.dropout_scale, cfg.dropout_scale_frac
    hp = channel_params(cfg, n, eps=eps)
    xo = x.astype(object)
    s = xo.sum(axis=1) if stats is None else np.asarray([int(v) for v in stats.sum], dtype=object)
    den = deviation_den(cfg, x, s, hp) if stats is None else np.asarray([int(v) for v in stats.den], dtype=object)
    d = n * xo - centre(cfg, s).reshape(-1, 1)                     # FRN: S = 0
    go = g.astype(object)
    sg, qg = go.sum(axis=1), (go * d).sum(axis=1)                  # the reduction pass
    coef, coef_max = _selection(cfg, x, d, n)
    cf = cfg.const_frac_bits
    e = cf + cfg.in_fmt.frac + gcfg.dx_fmt.frac - gcfg.grad_fmt.frac - cfg.gamma_fmt.frac
    if per_value:                       # h = gamma g per value: u = n h - sum h, Q = sum h d; gamma is not in M1
        h = gam.astype(object) * go
        u, q, m1_num = n * h - centre(cfg, h.sum(axis=1)).reshape(-1, 1), (h * d).sum(axis=1), [1] * channels
        u_bits = gcfg.grad_fmt.bits + cfg.gamma_fmt.bits
    else:                               # per channel: u = n g - Sg, Q = gamma Qg, gamma folded into M1
        u, q, m1_num = n * go - centre(cfg, sg).reshape(-1, 1), [int(gi) * int(v) for gi, v in zip(gam, qg)], \
            [int(gi) for gi in gam]
        u_bits = gcfg.grad_fmt.bits
    lean = None
    if gcfg.lean:                       # the block-floating form: dx_i = A (v_i - z_i), per channel X, SH and Z's
        v = h if per_value else go
        acc, shv, lean = _lean_dx(cfg, gcfg, hp, n, v, u_bits, centre(cfg, v.sum(axis=1)), coef, x, m1_num, q, den,
                                  e, sc, sf)
        sh = shv.reshape(-1, 1).astype(object)
        if gcfg.rounding == "stochastic":
            rnd = np.where(sh >= SR_BITS, rnd_draws << np.maximum(sh - SR_BITS, 0),
                           rnd_draws >> np.maximum(SR_BITS - sh, 0))
        else:
            rnd = np.ones_like(sh) << (sh - 1)
    else:
        sh = max(SR_BITS, BWD_GUARD + ((n << u_bits) + coef_max).bit_length())
        m1 = [scaled(a * sc, e + sh - sf, int(dd)) for a, dd in zip(m1_num, den)]
        m2 = [_m2(cfg, hp, n, int(qi) * sc, int(dd), e + sh - sf) for qi, dd in zip(q, den)]
        acc = u * np.asarray(m1, dtype=object).reshape(-1, 1) - coef * np.asarray(m2, dtype=object).reshape(-1, 1)
        rnd = (rnd_draws << (sh - SR_BITS)) if gcfg.rounding == "stochastic" else 1 << (sh - 1)
    dx = (acc + rnd) >> sh                                          # the dx pass
    lo, hi = gcfg.dx_fmt.min_int, gcfg.dx_fmt.max_int
    sat = ((dx < lo) | (dx > hi)).sum(axis=1).astype(np.int64)
    dcol = den.reshape(-1, 1) << sf
    if per_value:                       # each value's own g x_hat, rounded half up, and g (times S / 2**F)
        dgamma = (2 * (sc * go * d << cf) + dcol) // (2 * dcol)
        dbeta = go if sc == 1 else (2 * sc * go + (1 << sf)) // (2 << sf)
    else:
        dgamma = np.asarray([rdiv(sc * int(v) << cf, int(dd) << sf) for v, dd in zip(qg, den)], dtype=object)
        dbeta = sg if sc == 1 else np.asarray([rdiv(sc * int(v), 1 << sf) for v in sg], dtype=object)
    if lean is None:
        unr = np.ldexp(acc.astype(np.float64), -sh) if unrounded else None
        shift = np.full(channels, sh, dtype=np.int64)
    else:
        shift = shv
        unr = np.ldexp(acc.astype(np.float64), -shv.reshape(-1, 1)) if unrounded else None
    return BackwardResult(dx=np.clip(dx, lo, hi).astype(np.int64), dgamma=dgamma, dbeta=dbeta, sat=sat,
                          shift=shift, unrounded=unr, lean=lean)


def infer_backward(cfg: NormConfig, gcfg: GradConfig, x, g, gamma, mean, scale_m, scale_exp, seed=None) -> BackwardResult:
    """The backward of `infer` (running statistics: mean and scale are constants, so dx = gamma scale dL/dy): per value
    dx = sat(round(g M 2**k)), M = gamma scale_m (exact, one multiply), k = scale_exp + F_dx - F_gr - F_gamma, rounded
    half up or stochastically (the draw's top -k bits); dgamma = round(sum g (x 2**MF - mean) scale_m 2**(scale_exp - F_in
    - MF)), dbeta = sum g (per value for gamma per value). mean, scale_m, scale_exp: the inference descriptors."""
    if not isinstance(gcfg, GradConfig):
        raise ValueError(f"gcfg={gcfg!r} is not supported: allowed a GradConfig")
    x = check_int_array("x", x, cfg.in_fmt, ndim=2)
    g = check_int_array("g", g, gcfg.grad_fmt, ndim=2)
    channels, n = x.shape
    if g.shape != x.shape:
        raise ValueError(f"g has shape {g.shape}: allowed x's shape {x.shape}")
    per_value = np.ndim(gamma) == 2
    gam = check_int_array("gamma", gamma if per_value else np.reshape(gamma, -1), cfg.gamma_fmt)
    if gam.shape not in ((channels,), x.shape):
        raise ValueError(f"gamma has shape {gam.shape}: allowed one per channel ({channels},) or one per value {x.shape}")
    gcol = gam.astype(object) if per_value else gam.astype(object).reshape(-1, 1)
    col = [np.asarray([int(v) for v in np.reshape(a, -1)], dtype=object).reshape(-1, 1) for a in (mean, scale_m, scale_exp)]
    if any(c.shape[0] != channels for c in col):
        raise ValueError(f"mean, scale_m and scale_exp need one entry per channel ({channels})")
    mu, sm, se = col
    go = g.astype(object)
    k = se + (gcfg.dx_fmt.frac - gcfg.grad_fmt.frac - cfg.gamma_fmt.frac)        # (C, 1) exponents
    prod = go * gcol * sm
    r = np.maximum(-k, 0)                                                          # right shift of the rounding
    if gcfg.rounding == "stochastic":
        rnd = (draws(check_seeds(seed, channels), n).astype(object) << r) >> SR_BITS
    else:
        if seed is not None:
            raise ValueError(f"seed={seed!r} applies to rounding='stochastic' only: allowed seed=None with rounding="
                             f"{gcfg.rounding!r}")
        rnd = np.where(r > 0, 1 << np.maximum(r - 1, 0), 0)
    dx = ((prod << np.maximum(k, 0)) + rnd) >> r
    lo, hi = gcfg.dx_fmt.min_int, gcfg.dx_fmt.max_int
    sat = ((dx < lo) | (dx > hi)).sum(axis=1).astype(np.int64)
    dev = go * (x.astype(object) * (1 << cfg.stat_frac_bits) - mu) * sm           # g (x 2**MF - mean) scale_m
    e = se - (cfg.in_fmt.frac + cfg.stat_frac_bits)
    exact = np.frompyfunc(lambda a, b: scaled(int(a), int(b), 1), 2, 1)
    dgamma = exact(dev, e) if per_value else exact(dev.sum(axis=1), e[:, 0])
    return BackwardResult(dx=np.clip(dx, lo, hi).astype(np.int64), dgamma=np.asarray(dgamma, dtype=object),
                          dbeta=go if per_value else go.sum(axis=1), sat=sat, shift=r[:, 0].astype(np.int64),
                          unrounded=None)
