"""Issue 20 design study: the normalize pass with a block-floating gain (an m-bit mantissa and a shift), B from the
mean through a narrow divisor, and Den normalized to D bits before the division, against today's exact constants.

Run: python examples/floor_scale_study.py [--trials 2]. For every default configuration (12 kinds x s8 / s16) it feeds
the cases of `hwnorm numerics` (hwnorm.numerics.train_cases: every count from 1 to max_count, narrow and extreme
data, the whole gamma range) through the golden model's statistics (S, Den, unchanged) and then through

    the floor constants (docs/architecture.md "Floor-level datapath"), per channel:
      Dn   = Den's top D bits (truncated), Den ~ Dn 2^s
      Am   = floor(|gamma| n 2^(E + SH) / Dn)  with SH picked so that 2^(m-2) <= Am < 2^(m-1)  (E = CF + F_out - F_g - s)
      if SH < SH_lo (the gain G >= 2^(m-2-SH_lo) >= 2^out_bits: every x with |x - mu| >= 1 saturates):
           d = x - floor(mu); y = y0 (d = 0), y1 (d = 1), else saturated by sign; y0, y1 per channel from Dn
      else: SH = min(SH, SH_max);  B = bias + half - floor(S sgn(gamma) Am / n);  y = sat((x sgn(gamma) Am + B) >> SH)

and prints, per configuration, the largest error before rounding (output LSBs, where the float reference is inside
the output range) and after rounding, beside today's golden model on the same cases. It changes nothing in hwnorm.
"""
from __future__ import annotations

import argparse
from fractions import Fraction

import numpy as np

from hwnorm.config import default_configs
from hwnorm.constants import channel_params
from hwnorm.golden import infer, train
from hwnorm.golden.bitexact import _stats_exact, centre
from hwnorm.fixed import round_mode
from hwnorm.golden.reference import infer_out_lsb, train_out_lsb
from hwnorm.numerics import infer_cases, train_cases


def mantissa_bits(cfg) -> int:
    """m = out_bits + SH_lo + 2: the smallest m whose special regime (SH < SH_lo) starts at a gain where any
    |x - mu| >= 1 saturates (G >= 2^out_bits)."""
    return cfg.out_fmt.bits + cfg.shift_lo + 2


def den_bits(cfg) -> int:
    """D: Den's truncation moves an unsaturated output by at most 2^(out_bits + 1 - D) <= 1/16 LSB."""
    return cfg.out_fmt.bits + 5 + 3


def floor_channel(cfg, x: np.ndarray, s: int, den: int, g: int, b: int, m: int, d_bits: int):
    """One training channel through the floor constants: (y codes, value before rounding in output LSBs, whether it
    took the special regime)."""
    n = x.shape[0]
    shift_d = den.bit_length() - d_bits
    dn = den >> shift_d if shift_d >= 0 else den << -shift_d
    e = cfg.const_frac_bits + cfg.out_fmt.frac - cfg.gamma_fmt.frac - shift_d
    return floor_core(cfg, x, s, n, abs(g) * n, e, dn, g, b, m)


def floor_infer_channel(cfg, x: np.ndarray, mean: int, scale_m: int, scale_exp: int, g: int, b: int, m: int):
    """One inference channel: the same constants with K = 2^MF, C = mean and the gain |g| scale_m 2^e (Dn = 1: the
    scale is already a mantissa)."""
    e = scale_exp + cfg.out_fmt.frac - cfg.gamma_fmt.frac - cfg.in_fmt.frac
    return floor_core(cfg, x, mean, 1 << cfg.stat_frac_bits, abs(g) * scale_m, e, 1, g, b, m)


def floor_core(cfg, x, s: int, k_den: int, num: int, e: int, dn: int, g: int, b: int, m: int):
    """y = sat(round(G (x - s / k_den) + beta)), G = num 2^e / dn output LSBs per input LSB, through an m-bit
    gain mantissa, B from s over k_den, and the special regime (docs/architecture.md "Floor-level datapath")."""
    n = x.shape[0]
    lo, hi = cfg.out_fmt.min_int, cfg.out_fmt.max_int
    bias_sh = cfg.out_fmt.frac - cfg.beta_fmt.frac           # beta in output LSBs = b 2^bias_sh
    sign = -1 if g < 0 else 1
    if num == 0:                                                # gamma = 0: y = beta
        y = np.full(n, min(max(round_mode(np.array([b * 2.0 ** bias_sh]), cfg.rounding)[0], lo), hi))
        return y.astype(np.int64), np.full(n, b * 2.0 ** bias_sh), False
    # Am = floor(num 2^(e + SH) / dn) in [2^(m-2), 2^(m-1)): SH from the leading ones, then fixed by one step
    div = dn
    sh = (m - 2) - (num.bit_length() - 1) - e + (div.bit_length() - 1)
    while _am(num, e, sh, div) >= 1 << (m - 1):
        sh -= 1
    while _am(num, e, sh, div) < 1 << (m - 2):
        sh += 1
    n_mean = k_den
    q, r = divmod(s, n_mean)                                    # floor(mu), k_den frac(mu)
    if sh < cfg.shift_lo:                                       # special regime: only d = x - q in {0, 1} is unsaturated
        ys, unr = np.empty(n, dtype=np.int64), np.empty(n)
        d = x - q
        for k in (0, 1):
            # y_k = G (k - r/K) + beta = sign num 2^e (k K - r) / (K div) + beta, rounded at SH_lo fraction bits
            shk = cfg.shift_lo
            val = Fraction(sign * num * (k * n_mean - r) * 2 ** (e + shk), n_mean * div)
            acc = val.numerator // val.denominator + (b << (bias_sh + shk))      # bias_sh + SH_lo >= G >= 0
            half = 0 if cfg.rounding == "floor" else 1 << (shk - 1)
            yk = (acc + half) >> shk
            if cfg.rounding == "half_even" and ((acc + half) & ((1 << shk) - 1)) == 0 and yk & 1:
                yk -= 1
            ys[d == k] = min(max(yk, lo), hi)
            unr[d == k] = acc / 2.0 ** shk
        neg = (d < 0) if sign > 0 else (d > 1)
        ys[(d < 0) | (d > 1)] = np.where(neg[(d < 0) | (d > 1)], lo, hi)
        unr[(d < 0) | (d > 1)] = np.where(neg[(d < 0) | (d > 1)], -np.inf, np.inf)
        return ys, unr, True
    sh = min(sh, cfg.shift_max)            # a tiny gain: Am has fewer bits, |x - mu| Am / 2^SH_max moves y < 2^-(G+1)
    am = sign * _am(num, e, sh, div)
    half = 0 if cfg.rounding == "floor" else 1 << (sh - 1)
    bb = (b << (bias_sh + sh)) + half - (s * am) // n_mean
    acc = x.astype(object) * am + bb
    y = np.array([int(v) >> sh for v in acc], dtype=object)
    if cfg.rounding == "half_even":
        tie = np.array([(int(v) & ((1 << sh) - 1)) == 0 for v in acc])
        y = y - (tie & np.array([int(v) & 1 for v in y], dtype=bool))
    unr = np.array([float(Fraction(int(v) - half, 1 << sh)) for v in acc])
    return np.clip(y.astype(np.int64), lo, hi), unr, False


def _am(num, e, sh, dn):
    k = e + sh
    return ((num << k) if k >= 0 else (num >> -k)) // dn


def _compare(cfg, out: dict, ref, today, floors):
    """Add one case to `out`: the floor design's channels (y, unrounded, special) and today's golden result against
    the float reference `ref` (output LSBs), after rounding everywhere and before rounding where ref is in range."""
    lo, hi = cfg.out_fmt.min_int, cfg.out_fmt.max_int
    want = np.clip(round_mode(ref, cfg.rounding), lo, hi)
    inside = (ref >= lo) & (ref <= hi)
    for c, (y, unr, special) in enumerate(floors):
        out["floor_err"] = max(out["floor_err"], int(np.abs(y - want[c]).max()))
        out["today_err"] = max(out["today_err"], int(np.abs(today.y[c] - want[c]).max()))
        if inside[c].any():
            out["floor_unr"] = max(out["floor_unr"], float(np.abs(unr - ref[c])[inside[c]].max()))
            out["today_unr"] = max(out["today_unr"], float(np.abs(today.unrounded[c] - ref[c])[inside[c]].max()))
        out["special"] += y.size if special else 0
    out["values"] += ref.size


def _new() -> dict:
    return dict(values=0, floor_unr=0.0, floor_err=0, today_unr=0.0, today_err=0, special=0)


def study(cfg, trials: int, seed: int = 0):
    """(values, floor max before / after rounding, today's max before / after rounding, special-regime values)."""
    rng = np.random.default_rng(seed)
    m, d_bits = mantissa_bits(cfg), den_bits(cfg)
    out = _new()
    for x, g, b in train_cases(cfg, rng, trials):
        s, den = _stats_exact(cfg, np.asarray(x).astype(object), channel_params(cfg, x.shape[1]))
        s = centre(cfg, s)                                      # FRN kinds: C = 0, no mean term
        floors = [floor_channel(cfg, np.asarray(x[c], dtype=np.int64), int(s[c]), int(den[c]), int(g[c]), int(b[c]),
                                m, d_bits) for c in range(x.shape[0])]
        _compare(cfg, out, train_out_lsb(cfg, x, g, b), train(cfg, x, g, b), floors)
    return out


def study_infer(cfg, trials: int, seed: int = 0):
    """The inference path (given mean and scale, hwnorm.numerics.infer_cases) through the floor constants."""
    rng = np.random.default_rng(seed)
    m = mantissa_bits(cfg)
    out = _new()
    for x, g, b, mean, scale_m, scale_exp in infer_cases(cfg, rng, trials * 8):
        floors = [floor_infer_channel(cfg, np.asarray(x[c], dtype=np.int64), int(mean[c]), int(scale_m[c]),
                                      int(scale_exp[c]), int(g[c]), int(b[c]), m) for c in range(x.shape[0])]
        _compare(cfg, out, infer_out_lsb(cfg, x, g, b, mean, scale_m, scale_exp),
                 infer(cfg, x, g, b, mean, scale_m, scale_exp), floors)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--only", nargs="*", help="configurations (default: the 24 default ones)")
    ap.add_argument("--infer", action="store_true", help="the inference path (given mean and scale) instead of training")
    args = ap.parse_args()
    cfgs = default_configs()
    print("| config | m (mantissa bits) | D (Den bits) | a_bits today | values | max before rounding: floor / today "
          "| max after rounding: floor / today | special-regime values |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.only or cfgs:
        cfg = cfgs[name]
        r = (study_infer if args.infer else study)(cfg, args.trials)
        print(f"| {name} | {mantissa_bits(cfg)} | {den_bits(cfg)} | {cfg.a_bits} | {r['values']} | "
              f"{r['floor_unr']:.4f} / {r['today_unr']:.4f} | {r['floor_err']} / {r['today_err']} | {r['special']} |", flush=True)


if __name__ == "__main__":
    main()
