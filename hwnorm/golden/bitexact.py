"""Bit-exact integer models of the datapaths: they define every bit the hardware produces.

The algorithm is specified step by step in docs/numerics.md; names here follow it. Two paths compute
the same bits: the exact path (`exact=True`) evaluates the defining formulas on Python integers
(object arrays), so no width can wrap; the fast path (default) reduces and normalizes whole tensors
on NumPy int64, per stage only where the configuration's derived widths fit in INT64_BITS (see
`fast_plan`), and falls back to the exact path for a stage whose widths do not. Per-channel
arithmetic (reciprocal, square root, A/B/SH) is on Python integers in both paths: it is O(channels).
Lanes do not appear: they change when values are processed, never the result.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..config import DROPOUT_FRAC, NormConfig
from ..constants import channel_params, chunk_sizes, topk_eff
from ..fixed import check_int_array
from . import elementwise as ew
from .dropout import check_seeds, keep_mask

INT64_BITS = 62                  # widest signed intermediate (bits) the fast path puts in int64: two bits of margin
_isqrt = np.frompyfunc(lambda v: math.isqrt(int(v)), 1, 1)


@dataclass
class ChannelStats:
    """Per-channel statistics the hardware reports after each channel (arrays of shape (C,)).

    Training: sum = S = sum(x) (mean = S / (n 2**in_frac)); den = n * sigma_hat * 2**(CF + in_frac).
    Inference: both 0. sat: outputs of the channel that were saturated (both modes).
    """

    sum: np.ndarray
    den: np.ndarray
    sat: np.ndarray


@dataclass
class Result:
    y: np.ndarray            # (C, n) output codes, int64
    stats: ChannelStats
    mult: np.ndarray         # internal: per-channel multiplier A of the normalize pass
    shift: np.ndarray        # internal: final right shift SH
    unrounded: np.ndarray    # (x*A + B - half) / 2**SH as float64: the value before rounding, output LSBs
    special: np.ndarray | None = None    # per channel: the gain took the special regime
    forced: np.ndarray | None = None     # per channel: values the special regime forced to saturate


def _col(v) -> np.ndarray:
    return np.asarray(v, dtype=object).reshape(-1, 1)


def _check_exact(exact):
    """`exact` must be a bool: True forces Python integers, False lets fitting stages run on int64."""
    if not isinstance(exact, (bool, np.bool_)):
        raise ValueError(f"exact={exact!r} is not a bool: allowed True (Python integers everywhere) or False "
                         f"(int64 wherever the derived widths fit in {INT64_BITS} bits)")


def _check(cfg: NormConfig, x, gamma, beta):
    x = check_int_array("x", x, cfg.in_fmt, ndim=2)
    channels, n = x.shape
    if n < 1 or n > cfg.max_count:
        raise ValueError(f"count={n} is out of range: allowed [1, max_count={cfg.max_count}]")
    gamma = check_int_array("gamma", np.reshape(gamma, -1), cfg.gamma_fmt, ndim=1)
    beta = check_int_array("beta", np.reshape(beta, -1), cfg.beta_fmt, ndim=1)
    for name, v in (("gamma", gamma), ("beta", beta)):
        if v.shape[0] != channels:
            raise ValueError(f"{name} has {v.shape[0]} entries, expected one per channel ({channels})")
    return x, [int(v) for v in gamma], [int(v) for v in beta]


def stats_widths(cfg: NormConfig) -> int:
    """The widest signed per-value intermediate of the training statistics of cfg.kind (bits)."""
    dev = cfg.dev_bits + 1                                   # d = n*x - S, signed
    per_kind = {"range": cfg.in_fmt.bits + 1, "l1": max(dev, cfg.dev_sum_bits), "mad": max(dev, cfg.dev_sum_bits),
                "linf": dev, "topk": max(dev, cfg.dev_sum_bits), "l2": cfg.sq_sum_bits}
    return max(cfg.sum_bits, per_kind[cfg.stat_kind])


FAST_STATS_KINDS = ("range", "l1", "mad", "linf", "topk", "l2")   # semidev and cvar: statistics on Python integers


def fast_plan(cfg: NormConfig, exact: bool = False) -> dict:
    """Which stages run on int64: {'stats': ..., 'normalize': ...}, decided from cfg's derived widths
    (statistics accumulators; the normalize pass's x*A + B, acc_bits); all False when exact."""
    _check_exact(exact)
    return {"stats": not exact and cfg.stat_kind in FAST_STATS_KINDS and stats_widths(cfg) <= INT64_BITS,
            "normalize": not exact and cfg.acc_bits <= INT64_BITS}


# -- the deviation estimate: Den = n * sigma_hat * 2**(CF + in_frac) -------------------------------

def _range_den(cfg, r_closed, r_last, hp) -> np.ndarray:
    """Range: Den = n * (c_full * R_closed + c_last * R_open + eps_int), per channel on Python integers (frn_range:
    eps_int from the descriptor)."""
    r_closed, r_last = np.asarray(r_closed).astype(object), np.asarray(r_last).astype(object)
    return hp["count"] * (hp["c_full"] * r_closed + hp["c_last"] * r_last + (hp["eps"] if cfg.frn else cfg.eps_int))


def _l2_den(cfg, v, hp) -> np.ndarray:
    """L2: Den = isqrt(V * 2**(2 CF) + eps_n), V = n^2 * variance, on Python integers."""
    return _isqrt(np.left_shift(np.asarray(v).astype(object), 2 * cfg.const_frac_bits) + hp["eps_n"])


def _dev_den(cfg, dev, hp) -> np.ndarray:
    """L1 / L-inf / top-k: Den = c * dev + n * eps_int, dev the kind's statistic of |n x - S|."""
    return hp["c"] * np.asarray(dev).astype(object) + hp["neps"]


def _semidev_den(cfg, x, s, hp) -> np.ndarray:
    """Semidev: Den = isqrt(floor(T 2**(2 CF) / n) + eps_n), T = sum of [S - n x]_+^2 = n^3 * semi-variance, exact
    (x, s object arrays)."""
    n = x.shape[1]
    below = np.maximum(s.reshape(-1, 1) - n * x, 0)                      # n [mu - x]_+
    t = (below * below).sum(axis=1)
    return _isqrt(np.left_shift(np.asarray(t).astype(object), 2 * cfg.const_frac_bits) // n + hp["eps_n"])



def centre(cfg: NormConfig, s):
    """The sums the deviation and the normalize pass centre on: S, or 0 for an FRN kind (no centring: the same
    formulas then measure x about 0 instead of about the mean)."""
    return np.zeros_like(s) if cfg.frn else s


def _den_exact(cfg: NormConfig, x, s, hp) -> np.ndarray:
    """Den from the defining formulas on Python integers (x, s object arrays; s already centre()d)."""
    n = x.shape[1]
    kind = cfg.stat_kind
    if kind == "range":
        sizes = chunk_sizes(n, cfg.chunks)
        bounds = np.cumsum([0] + sizes)
        ranges = [x[:, a:b].max(axis=1) - x[:, a:b].min(axis=1) for a, b in zip(bounds[:-1], bounds[1:])]
        return _range_den(cfg, sum(ranges[:-1], np.zeros(x.shape[0], dtype=object)), ranges[-1], hp)
    if kind == "l2":
        return _l2_den(cfg, n * (x * x).sum(axis=1) - s * s, hp)
    if kind == "semidev":
        return _semidev_den(cfg, x, s, hp)
    d = n * x - s.reshape(-1, 1)                              # n (x - mu), exact (FRN: n x)
    if kind in ("l1", "mad"):                                 # the two differ only in the host constant c
        return _dev_den(cfg, np.abs(d).sum(axis=1), hp)
    if kind == "linf":
        return _dev_den(cfg, np.abs(d).max(axis=1), hp)
    if kind == "topk":
        return _dev_den(cfg, -np.sort(-np.abs(d), axis=1)[:, :topk_eff(n, cfg.k)].sum(axis=1), hp)
    if kind == "cvar":                                    # the m largest signed deviations n x - S (sum >= 0)
        return _dev_den(cfg, -np.sort(-d, axis=1)[:, :hp["m"]].sum(axis=1), hp)
    raise ValueError(f"kind={cfg.kind!r} is not supported")


def _chunk_ranges(x: np.ndarray, chunks: int):
    """(sum of the closed chunks' ranges, the last chunk's range) per channel, chunks as torch.chunk."""
    c, n = x.shape
    sizes = chunk_sizes(n, chunks)
    size, full = sizes[0], n // sizes[0]
    body = x[:, :full * size].reshape(c, full, size)
    ranges = body.max(axis=2) - body.min(axis=2)
    if full < len(sizes):
        tail = x[:, full * size:]
        ranges = np.concatenate([ranges, (tail.max(axis=1) - tail.min(axis=1))[:, None]], axis=1)
    return ranges[:, :-1].sum(axis=1), ranges[:, -1]


def _topk_dev(x: np.ndarray, s: np.ndarray, n: int, k: int) -> np.ndarray:
    """Sum of the k largest |n x - S|: |d| is V-shaped in x, so they are among the k smallest and k largest x."""
    kk = topk_eff(n, k)
    if n > 2 * kk:
        part = np.partition(x, (kk - 1, n - kk), axis=1)
        x = np.concatenate([part[:, :kk], part[:, n - kk:]], axis=1)
    d = np.abs(n * x - s[:, None])
    return np.sort(d, axis=1)[:, -kk:].sum(axis=1)


def _topk_dev_hist(x: np.ndarray, s: np.ndarray, n: int, k: int, lo: int, span: int) -> np.ndarray:
    """Sum of the k largest |n x - S| from each channel's histogram over the `span` codes from `lo`: for
    narrow codes (span <= n) one counting pass instead of a partition; the codes sorted by |d|, take k."""
    c, kk = x.shape[0], topk_eff(n, k)
    hist = np.bincount((x + (np.arange(c) * span - lo)[:, None]).ravel(), minlength=c * span).reshape(c, span)
    d = np.abs(n * np.arange(lo, lo + span)[None, :] - s[:, None])
    order = np.argsort(-d, axis=1, kind="stable")
    d, hist = np.take_along_axis(d, order, axis=1), np.take_along_axis(hist, order, axis=1)
    take = np.clip(kk - (np.cumsum(hist, axis=1) - hist), 0, hist)     # how many of each code's values count
    return (take * d).sum(axis=1)


def _dev_fast(cfg: NormConfig, x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The L1 / L-inf / top-k statistic of |n x - S| per channel on int64 (s already centre()d)."""
    n = x.shape[1]
    if cfg.stat_kind == "linf":                                   # |n x - S| is largest at the smallest or largest x
        return np.maximum(n * x.max(axis=1) - s, s - n * x.min(axis=1))
    if cfg.stat_kind in ("l1", "mad"):
        return np.abs(n * x - s[:, None]).sum(axis=1)
    span = 1 << cfg.in_fmt.bits
    if span <= n:
        return _topk_dev_hist(x, s, n, cfg.k, cfg.in_fmt.min_int, span)
    return _topk_dev(x, s, n, cfg.k)


def _stats_fast(cfg: NormConfig, x: np.ndarray, hp):
    """(S, Den): every per-value reduction on int64 (fast_plan checked the widths), per channel on Python ints."""
    n = x.shape[1]
    s = x.sum(axis=1)
    sc = centre(cfg, s)
    if cfg.stat_kind == "range":
        den = _range_den(cfg, *_chunk_ranges(x, cfg.chunks), hp)
    elif cfg.stat_kind == "l2":
        so = sc.astype(object)
        den = _l2_den(cfg, n * np.einsum("ij,ij->i", x, x).astype(object) - so * so, hp)
    else:
        den = _dev_den(cfg, _dev_fast(cfg, x, sc), hp)
    return s.astype(object), den


def _stats_exact(cfg: NormConfig, x: np.ndarray, hp):
    """(S, Den) on Python integers."""
    xo = x.astype(object)
    s = xo.sum(axis=1)
    return s, _den_exact(cfg, xo, centre(cfg, s), hp)


def deviation_den(cfg: NormConfig, x, s, hp, exact: bool = False) -> np.ndarray:
    """Den = n * sigma_hat * 2**(CF + in_frac) per channel (object array) of the codes x (C, n) with sums s
    (an FRN kind ignores s: its deviation is about 0)."""
    if not fast_plan(cfg, exact)["stats"]:
        return _den_exact(cfg, np.asarray(x).astype(object), centre(cfg, np.asarray(s).astype(object)), hp)
    xi = np.asarray(x, dtype=np.int64)
    if cfg.stat_kind in ("range", "l2"):                     # neither needs S beyond what _stats_fast recomputes
        return _stats_fast(cfg, xi, hp)[1]
    return _dev_den(cfg, _dev_fast(cfg, xi, centre(cfg, np.asarray(s, dtype=np.int64))), hp)


# -- the normalize pass: y = sat(round((x*A + B) >> SH)) --------------------------------------------

@dataclass
class Gain:
    """One channel's normalize constants: y = sat(round((x*A + B) >> SH)), and in the special regime (a gain so large
    that only x = q and q + 1 can be inside the output range) x < q and x > q + 1 forced to the saturation their side
    takes (low when gamma > 0 and x < q)."""
    a: int
    b: int
    sh: int
    special: bool = False
    q: int = 0
    neg: bool = False


def channel_constants(cfg: NormConfig, k: int, c: int, num: int, e: int, dn: int, neg: bool, beta: int) -> Gain:
    """The normalize pass's per-channel constants from the gain G = num 2**e / dn (output LSBs per input LSB; dn in
    [2**(D-1), 2**D)), the mean C / K and beta (docs/numerics.md "The normalize constants"):

    - the mantissa: Am = floor(num 2**(E+SH) / dn) in [2**(m-2), 2**(m-1)), from one m-bit quotient of num normalized;
      a shift above SH_max is clamped (Am shifted right), below SH_lo is the special regime (Am 2**min(SH_lo-SH, J));
    - q, r = divmod(C, K); T = bias + half - floor(r sgn X / K) is the output at x = q (X = Am, or the special one);
    - regular: A = sgn Am, B = T - q A. Special: the outputs at x = q and q + 1, clamped just beyond the output range,
      as A and B of a line through them (SH = SH_lo), the lanes forcing the rest."""
    m, d_bits, lo_sh, hi_sh = cfg.gain_bits, cfg.dn_bits, cfg.shift_lo, cfg.shift_max
    q, r = divmod(c, k)
    special = False
    if num == 0:                                  # gamma = 0 (or a zero inference scale): y = beta
        x_m, sh = 0, lo_sh
    else:
        k1 = (m - 1) + (d_bits - 1) - (num.bit_length() - 1)
        x_m, sh = (num << k1) // dn, k1 - e
        if x_m >> (m - 1):
            x_m, sh = x_m >> 1, sh - 1
        if sh > hi_sh:
            x_m, sh = x_m >> (sh - hi_sh), hi_sh
        elif sh < lo_sh:
            special = True
            x_m, sh = x_m << min(lo_sh - sh, cfg.special_shift_max), lo_sh
    sgn = -1 if neg else 1
    half = 0 if cfg.rounding == "floor" else 1 << (sh - 1)
    t = (beta << (sh + cfg.norm_out_fmt.frac - cfg.beta_fmt.frac)) + half - (sgn * r * x_m) // k
    if special:
        lo, hi = (cfg.norm_out_fmt.min_int - 2) << lo_sh, (cfg.norm_out_fmt.max_int + 2) << lo_sh
        acc0, acc1 = min(max(t, lo), hi), min(max(t + sgn * x_m, lo), hi)
        a, base = acc1 - acc0, acc0
    else:
        a, base = sgn * x_m, t
    b = base - q * a
    if a.bit_length() >= cfg.a_bits or b.bit_length() >= cfg.b_bits:
        raise AssertionError(f"internal: A={a} or B={b} exceeds a_bits={cfg.a_bits}/b_bits={cfg.b_bits} "
                             f"({cfg.describe()}): a width bound in NormConfig is wrong")
    return Gain(a, b, sh, special, q, neg)


def _regimes(consts, force) -> dict:
    """Result's special / forced fields: per channel, whether the gain took the special regime and how many values it
    forced to saturate."""
    forced = np.zeros(len(consts), dtype=np.int64) if force is None else (force[0] | force[1]).sum(axis=1)
    return {"special": np.array([c.special for c in consts], dtype=bool), "forced": forced}


def _forced(consts, x):
    """(force_hi, force_lo) per value: a special-regime channel's x below q or above q + 1 (neg: the other way)."""
    special = np.array([c.special for c in consts], dtype=bool)[:, None]
    if not special.any():
        return None
    q = np.array([c.q for c in consts], dtype=np.int64)[:, None]
    neg = np.array([c.neg for c in consts], dtype=bool)[:, None]
    below, above = special & (x < q), special & (x > q + 1)
    return np.where(neg, below, above), np.where(neg, above, below)


def _unrounded(cfg: NormConfig, acc, shift: np.ndarray) -> np.ndarray:
    """(acc - half) / 2**SH as float64: the value before rounding, in output LSBs."""
    sh = shift.reshape(-1, 1)
    half = 0 if cfg.rounding == "floor" else (1 << sh.astype(acc.dtype)) >> 1
    return np.ldexp((acc - half).astype(np.float64), -sh)


def _normalize_exact(cfg: NormConfig, x, a, b, shift: np.ndarray, unrounded: bool, force=None):
    """The normalize pass on Python integers: -> (y, sat, unrounded or None)."""
    acc = x.astype(object) * _col(a) + _col(b)
    unr = _unrounded(cfg, acc, shift) if unrounded else None
    acc, unr = _apply_force(cfg, acc, shift, force, unr)
    sh = shift.reshape(-1, 1).astype(object)
    yq = acc >> sh
    if cfg.rounding == "half_even":
        tie = (acc & ((1 << sh) - 1)) == 0                   # B holds half: a tie leaves zero low bits
        yq = yq - (tie & ((yq & 1) == 1)).astype(object)
    lo, hi = cfg.out_fmt.min_int, cfg.out_fmt.max_int
    sat = ((yq < lo) | (yq > hi)).sum(axis=1).astype(np.int64)
    return np.clip(yq, lo, hi).astype(np.int64), sat, unr


def _normalize_fast(cfg: NormConfig, x: np.ndarray, a, b, shift: np.ndarray, unrounded: bool, force=None):
    """The normalize pass on int64, in place on one (C, n) buffer (acc_bits fit): -> (y, sat, unrounded or None)."""
    acc = x * np.asarray(a, dtype=np.int64)[:, None]
    acc += np.asarray(b, dtype=np.int64)[:, None]
    unr = _unrounded(cfg, acc, shift) if unrounded else None
    acc, unr = _apply_force(cfg, acc, shift, force, unr)
    sh = shift[:, None]
    tie = (acc & ((1 << sh) - 1)) == 0 if cfg.rounding == "half_even" else None
    np.right_shift(acc, sh, out=acc)
    if tie is not None:
        acc -= tie & (acc & 1).astype(bool)
    lo, hi = cfg.out_fmt.min_int, cfg.out_fmt.max_int
    sat = np.count_nonzero(acc < lo, axis=1) + np.count_nonzero(acc > hi, axis=1)
    np.clip(acc, lo, hi, out=acc)
    return acc, sat.astype(np.int64), unr


def _normalize(cfg: NormConfig, x, consts, force, unrounded: bool, fast: bool):
    """y = sat(round((x*A + B) >> SH)) with saturations counted, a special-regime channel's values beyond q + 1 and
    below q forced to saturate: -> (y, sat, A, SH, unrounded)."""
    a, b = [c.a for c in consts], [c.b for c in consts]
    shift = np.array([c.sh for c in consts], dtype=np.int64)
    y, sat, unr = (_normalize_fast if fast else _normalize_exact)(cfg, x, a, b, shift, unrounded, force)
    mult = np.array(a, dtype=np.int64 if cfg.acc_bits <= INT64_BITS else object)   # dtype from cfg only
    return y, sat, mult, shift, unr


def _apply_force(cfg: NormConfig, acc, shift: np.ndarray, force, unr):
    """A forced value's accumulator: two output LSBs beyond the range on its side (so rounding and the clamp treat it
    as the hardware's forced saturation, counted once); its value before rounding +-inf."""
    if force is None:
        return acc, unr
    hi_f, lo_f = force
    sh = shift.reshape(-1, 1)
    top = np.left_shift(np.full_like(acc, cfg.out_fmt.max_int + 2), sh.astype(acc.dtype))
    bottom = np.left_shift(np.full_like(acc, cfg.out_fmt.min_int - 2), sh.astype(acc.dtype))
    acc = np.where(hi_f, top, np.where(lo_f, bottom, acc))
    if unr is not None:
        unr = np.where(hi_f, np.inf, np.where(lo_f, -np.inf, unr))
    return acc, unr


def _normalize_dropout(cfg: NormConfig, x, consts, force, keep: np.ndarray, unrounded: bool):
    """The normalize pass with inverted dropout (a training channel of a dropout build), on Python integers:
    t = floor((x*A + B - half) / 2**(SH-E)) (E = DROPOUT_FRAC fraction bits), clamped to one LSB beyond the
    output range, z = t * S, y = sat(round(z >> (F + E))) for kept values, 0 for dropped ones; sat counts the
    kept values clamped. -> (y, sat, A, SH, unrounded)."""
    a, b = [c.a for c in consts], [c.b for c in consts]
    shift = np.array([c.sh for c in consts], dtype=np.int64)
    e, f, s_mult = DROPOUT_FRAC, cfg.dropout_scale_frac, cfg.dropout_scale
    acc, _ = _apply_force(cfg, x.astype(object) * _col(a) + _col(b), shift, force, None)
    low = _col(shift - e)
    floor = cfg.rounding == "floor"
    t = (acc >> low) - (0 if floor else 1 << (e - 1))
    lo, hi = cfg.out_fmt.min_int, cfg.out_fmt.max_int
    t = np.clip(t, (lo - 1) << e, (hi + 1) << e)              # beyond it the output clamps anyway (numerics.md)
    z = t * s_mult
    fe = f + e
    half = 0 if floor else 1 << (fe - 1)
    r = (z + half) >> fe
    if cfg.rounding == "half_even":
        sticky = (acc & ((1 << low) - 1)) == 0
        tie = ((z & ((1 << fe) - 1)) == half) & sticky
        r = r - (tie & ((r & 1) == 1)).astype(object)
    sat = (keep & ((r < lo) | (r > hi))).sum(axis=1).astype(np.int64)
    y = np.where(keep, np.clip(r, lo, hi), 0).astype(np.int64)
    unr = None
    if unrounded:
        unr = np.where(keep, np.array([[float(v) for v in row] for row in z]) * 2.0 ** -fe, 0.0)
        if force is not None:
            unr = np.where(keep & force[0], np.inf, np.where(keep & force[1], -np.inf, unr))
    mult = np.array(a, dtype=np.int64 if cfg.acc_bits <= INT64_BITS else object)
    return y, sat, mult, shift, unr


def train_constants(cfg: NormConfig, n: int, s, den, g, b) -> list:
    """Per channel: Den's top D bits Dn (Den ~ Dn 2**sd), the gain |gamma| n 2**(CF + F_out - F_g - sd) / Dn, then
    channel_constants with K = n, C = S (0 for an FRN kind: no mean term)."""
    d_bits, out = cfg.dn_bits, []
    base = cfg.const_frac_bits + cfg.norm_out_fmt.frac - cfg.gamma_fmt.frac
    for si, dd, gi, bi in zip(centre(cfg, s), den, g, b):
        dd = int(dd)
        sd = dd.bit_length() - d_bits
        dn = dd >> sd if sd >= 0 else dd << -sd
        out.append(channel_constants(cfg, n, int(si), abs(gi) * n, base - sd, dn, gi < 0, bi))
    return out


def infer_constants(cfg: NormConfig, mean, scale_m, scale_exp, g, b) -> list:
    """Per channel: the gain |gamma| scale_m 2**(scale_exp + F_out - F_g - F_in) over Dn = 2**(D-1) (the scale is
    already a mantissa), then channel_constants with K = 2**MF, C = mean."""
    k, d_bits = 1 << cfg.stat_frac_bits, cfg.dn_bits
    base = cfg.norm_out_fmt.frac - cfg.gamma_fmt.frac - cfg.in_fmt.frac + d_bits - 1
    return [channel_constants(cfg, k, mi, abs(gi) * sm, base + e, 1 << (d_bits - 1), gi < 0, bi)
            for mi, sm, e, gi, bi in zip(mean, scale_m, scale_exp, g, b)]


def _check_tau(cfg: NormConfig, tau, channels: int):
    """The TLU thresholds (FRN kinds): one per channel in out_fmt codes; None = out_fmt's minimum (no threshold)."""
    if not cfg.frn:
        if tau is not None:
            raise ValueError(f"tau={tau!r} applies to the FRN kinds only (frn, frn_range, frn_l1, frn_linf): leave it "
                             f"unset for kind={cfg.kind!r}")
        return None
    if tau is None:
        return np.full(channels, cfg.out_fmt.min_int, dtype=np.int64)
    t = check_int_array("tau", np.reshape(tau, -1), cfg.out_fmt, ndim=1)
    if t.shape[0] != channels:
        raise ValueError(f"tau has {t.shape[0]} entries, expected one per channel ({channels})")
    return t.astype(np.int64)


def _tlu(y, tau):
    """TLU: z = max(y, tau) per channel, after rounding and saturation (tau is an output code, so it commutes with
    both); y as it is when tau is None (not an FRN kind)."""
    return y if tau is None else np.maximum(y, tau[:, None]).astype(np.int64)


def train(cfg: NormConfig, x, gamma, beta, tau=None, unrounded: bool = True, exact: bool = False, seed=None,
          eps=None) -> Result:
    """Training mode on fixed-point codes: x (C, n) in cfg.in_fmt, gamma/beta (C,); tau (C,) in out_fmt for the FRN
    kinds (TLU threshold; None = out_fmt's minimum, no threshold). `unrounded=False` skips the float of the value
    before rounding (before the TLU too); `exact=True` forces Python integers. `seed`: the dropout seeds of a
    dropout build (cfg.dropout > 0), one per channel as in the descriptor (or one for all; None: 0); refused for a
    configuration without dropout. An elementwise build: gamma/beta are per value (x's shape; docs/numerics.md
    "Per-element affine"). `eps` (FRN kinds): the descriptor's eps in the input format's units, for every channel
    (constants.channel_params; None: cfg.eps)."""
    if cfg.elementwise:
        return _elementwise(cfg, x, gamma, beta, unrounded,
                            lambda core, xc, g, b: train(core, xc, g, b, tau=tau, unrounded=False, exact=exact, seed=seed,
                                                         eps=eps))
    plan = fast_plan(cfg, exact)
    if cfg.inference_only:
        raise ValueError("this configuration has inference_only=True: it has no training datapath "
                         "(generate one with inference_only=False)")
    x, g, b = _check(cfg, x, gamma, beta)
    if seed is not None and not cfg.dropout_active:
        raise ValueError(f"seed={seed!r} applies to a dropout build only: this configuration has dropout={cfg.dropout}"
                         f"{' and inference_only=True' if cfg.inference_only else ''}; allowed seed=None")
    seeds = check_seeds(seed, x.shape[0]) if cfg.dropout_active else None
    tau = _check_tau(cfg, tau, x.shape[0])
    n = x.shape[1]
    hp = channel_params(cfg, n, eps=eps)
    s, den = (_stats_fast if plan["stats"] else _stats_exact)(cfg, x, hp)
    consts = train_constants(cfg, n, s, den, g, b)
    force = _forced(consts, x)        # the special regime's forced values, once: the pass and Result use them
    if cfg.dropout_active:
        y, sat, mult, shift, unr = _normalize_dropout(cfg, x, consts, force, keep_mask(cfg, seeds, n), unrounded)
    else:
        y, sat, mult, shift, unr = _normalize(cfg, x, consts, force, unrounded, plan["normalize"])
    return Result(y=_tlu(y, tau), stats=ChannelStats(sum=s.astype(np.int64), den=den, sat=sat), mult=mult, shift=shift,
                  unrounded=unr, **_regimes(consts, force))


def _check_inference(cfg: NormConfig, c: int, mean, scale_m, scale_exp):
    """The inference descriptors as lists of Python ints, one per channel, each within its field's range."""
    vals = {k: [int(v) for v in np.reshape(v, -1)] for k, v in
            (("mean", mean), ("scale_m", scale_m), ("scale_exp", scale_exp))}
    for name, v in vals.items():
        if len(v) != c:
            raise ValueError(f"{name} has {len(v)} entries, expected one per channel ({c})")
    lo, hi = cfg.scale_exp_range
    if any(not lo <= e <= hi for e in vals["scale_exp"]):
        raise ValueError(f"scale_exp holds a value out of range: allowed [{lo}, {hi}]")
    if any(not 0 <= m < (1 << (cfg.recip_bits + 1)) for m in vals["scale_m"]):
        raise ValueError(f"scale_m out of range: allowed [0, {(1 << (cfg.recip_bits + 1)) - 1}]")
    m_lo, m_hi = cfg.in_fmt.min_int << cfg.stat_frac_bits, cfg.in_fmt.max_int << cfg.stat_frac_bits
    if any(not m_lo <= m <= m_hi for m in vals["mean"]):
        raise ValueError(f"mean holds a value out of range: allowed [{m_lo}, {m_hi}]")
    return vals["mean"], vals["scale_m"], vals["scale_exp"]


def infer(cfg: NormConfig, x, gamma, beta, mean, scale_m, scale_exp, tau=None, unrounded: bool = True,
          exact: bool = False) -> Result:
    """Inference mode: y = gamma * (x - mean) * scale + beta, mean/scale as the hardware holds them
    (see constants.inference_params); FRN kinds then z = max(y, tau) (the given-statistics path: FRN itself has no
    running statistics and runs `train` in eval() too); `exact=True` forces Python integers. An elementwise build:
    gamma/beta per value."""
    if cfg.elementwise:
        return _elementwise(cfg, x, gamma, beta, unrounded,
                            lambda core, xc, g, b: infer(core, xc, g, b, mean, scale_m, scale_exp, tau=tau,
                                                         unrounded=False, exact=exact))
    plan = fast_plan(cfg, exact)
    x, g, b = _check(cfg, x, gamma, beta)
    tau = _check_tau(cfg, tau, x.shape[0])
    c = x.shape[0]
    mean, scale_m, scale_exp = _check_inference(cfg, c, mean, scale_m, scale_exp)
    consts = infer_constants(cfg, mean, scale_m, scale_exp, g, b)
    force = _forced(consts, x)
    y, sat, mult, shift, unr = _normalize(cfg, x, consts, force, unrounded, plan["normalize"])
    zeros = np.zeros(c, dtype=np.int64)
    return Result(y=_tlu(y, tau), stats=ChannelStats(sum=zeros, den=zeros.astype(object), sat=sat), mult=mult, shift=shift,
                  unrounded=unr, **_regimes(consts, force))


def _elementwise(cfg: NormConfig, x, gamma, beta, unrounded: bool, run_core) -> Result:
    """An elementwise build: the core (cfg.core, gamma = 1, beta = 0) gives x_hat, then the per-value affine; sat
    counts x_hat's clamps plus y's."""
    x = check_int_array("x", x, cfg.in_fmt, ndim=2)
    g, b = ew.check_streams(cfg, x.shape, gamma, beta)
    core = run_core(cfg.core, x, *ew.core_affine(cfg, x.shape[0]))
    y, sat, unr = ew.apply(cfg, core.y, g, b, unrounded)
    st = core.stats
    return Result(y=y, stats=ChannelStats(sum=st.sum, den=st.den, sat=st.sat + sat), mult=core.mult, shift=core.shift,
                  unrounded=unr, special=core.special, forced=core.forced)


def range_bn(cfg: NormConfig, x, gamma, beta) -> Result:
    """Range BN in training mode (kept for the first slice's callers)."""
    if cfg.kind != "range":
        raise ValueError(f"range_bn needs kind='range', got kind={cfg.kind!r}")
    return train(cfg, x, gamma, beta)


def stats_to_float(cfg: NormConfig, count: int, stats: ChannelStats):
    """Reported training statistics to float (mean, sigma_hat, scale = 1/sigma_hat) for running stats."""
    mean = np.asarray(stats.sum, dtype=np.float64) / count * cfg.in_fmt.lsb
    sigma = (np.asarray([int(v) for v in stats.den], dtype=np.float64) / count
             / 2.0 ** (cfg.const_frac_bits + cfg.in_fmt.frac))
    return mean, sigma, 1.0 / sigma
