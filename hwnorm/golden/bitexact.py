"""Bit-exact integer models of the datapaths: they define every bit the hardware produces.

The algorithm is specified step by step in docs/numerics.md; names here follow it. Per-value work
is vectorized on NumPy int64 wherever the configuration's derived widths fit in 62 bits, and on
exact Python integers (object arrays) where they do not; per-channel arithmetic is on Python
integers, so no width can wrap. Lanes do not appear: they change when values are processed, never
the result.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..config import NormConfig
from ..constants import channel_params, chunk_sizes, topk_eff
from ..fixed import check_int_array

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


def _col(v) -> np.ndarray:
    return np.asarray(v, dtype=object).reshape(-1, 1)


def _ints(cfg: NormConfig, x: np.ndarray, bits: int) -> np.ndarray:
    """x as int64 when every intermediate of `bits` bits fits, else as exact Python integers."""
    return x.astype(np.int64) if bits <= 62 else x.astype(object)


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


def _range_den(cfg, x, hp):
    """Range: Den = n * (c_full * R_closed + c_last * R_open + eps_int), chunks as torch.chunk."""
    sizes = chunk_sizes(x.shape[1], cfg.chunks)
    bounds = np.cumsum([0] + sizes)
    ranges = [x[:, a:b].max(axis=1).astype(object) - x[:, a:b].min(axis=1) for a, b in zip(bounds[:-1], bounds[1:])]
    r_closed = sum(ranges[:-1], np.zeros(x.shape[0], dtype=object))
    return hp["count"] * (hp["c_full"] * r_closed + hp["c_last"] * ranges[-1] + cfg.eps_int)


def _semidev_den(cfg, x, s, hp):
    """Semidev: Den = isqrt(floor(T 2**(2 CF) / n) + eps_n), T = sum of [S - n x]_+^2 = n^3 * semi-variance, exact."""
    n = x.shape[1]
    xi = _ints(cfg, x, 2 * cfg.dev_bits + cfg.count_bits)
    below = np.maximum(np.asarray(s, dtype=xi.dtype).reshape(-1, 1) - n * xi, 0)     # n [mu - x]_+
    t = (below * below).sum(axis=1).astype(object)
    return _isqrt(np.left_shift(t, 2 * cfg.const_frac_bits) // n + hp["eps_n"])


def deviation_den(cfg: NormConfig, x, s, hp) -> np.ndarray:
    """Den = n * sigma_hat * 2**(CF + in_frac) per channel (object array), from exact integer statistics."""
    n = x.shape[1]
    eps_n = n * cfg.eps_int
    if cfg.kind == "range":
        return _range_den(cfg, x, hp)
    if cfg.kind == "l2":
        xi = _ints(cfg, x, cfg.sq_sum_bits)
        v = n * (xi * xi).sum(axis=1).astype(object) - s * s          # n^2 * variance, exact
        return _isqrt(np.left_shift(v, 2 * cfg.const_frac_bits) + hp["eps_n"])
    if cfg.kind == "semidev":
        return _semidev_den(cfg, x, s, hp)
    xi = _ints(cfg, x, cfg.dev_sum_bits)
    d_abs = np.abs(n * xi - np.asarray(s, dtype=xi.dtype).reshape(-1, 1))   # n |x - mu|, exact
    if cfg.kind in ("l1", "mad"):         # the two differ only in the host constant c
        dev = d_abs.sum(axis=1)
    elif cfg.kind == "linf":
        dev = d_abs.max(axis=1)
    elif cfg.kind == "topk":
        dev = -np.sort(-d_abs, axis=1)[:, :topk_eff(n, cfg.k)].sum(axis=1)
    elif cfg.kind == "cvar":                 # the m largest signed deviations n x - S (their sum is >= 0)
        d = n * xi - np.asarray(s, dtype=xi.dtype).reshape(-1, 1)
        dev = -np.sort(-d, axis=1)[:, :hp["m"]].sum(axis=1)
    else:
        raise ValueError(f"kind={cfg.kind!r} is not supported")
    return hp["c"] * dev.astype(object) + eps_n


def channel_constants(cfg: NormConfig, k: int, c: int, m: int, sh0: int, beta: int) -> tuple[int, int, int]:
    """The normalize pass's per-channel A, B and SH from the centred form ((x*K - C) * M) >> SH0.

    Training: K = n, C = S, M = gamma * R, SH0 = L + shift_base. Inference: K = 2**MF, C = mean,
    M = gamma * scale_m, SH0 = inf_shift_base - scale_exp. docs/numerics.md derives the bound."""
    if sh0 < cfg.shift_lo:
        pre, t = cfg.shift_lo - sh0, 0
    else:
        pre, t = 0, max(min(k.bit_length() - 1, sh0 - cfg.shift_lo), sh0 - cfg.shift_max)
    sh = sh0 + pre - t
    a = (k * m << pre) >> t                                   # floor, also for negative M
    half = 0 if cfg.rounding == "floor" else 1 << (sh - 1)
    b = (beta << (sh + cfg.out_fmt.frac - cfg.beta_fmt.frac)) + half - (a * c) // k
    if a.bit_length() >= cfg.a_bits or b.bit_length() >= cfg.b_bits:
        raise AssertionError(f"internal: A={a} or B={b} exceeds a_bits={cfg.a_bits}/b_bits={cfg.b_bits} "
                             f"({cfg.describe()}): a width bound in NormConfig is wrong")
    return a, b, sh


def _normalize(cfg: NormConfig, x, consts, unrounded: bool):
    """The normalize pass: y = sat(round((x*A + B) >> SH)), rounding per cfg.rounding; saturations counted."""
    a = _col([c[0] for c in consts])
    b = _col([c[1] for c in consts])
    shift = np.array([c[2] for c in consts], dtype=np.int64)
    sh = shift.reshape(-1, 1)
    if cfg.acc_bits <= 62:
        a, b = a.astype(np.int64), b.astype(np.int64)
        acc = x.astype(np.int64) * a + b
    else:
        acc = x.astype(object) * a + b
        sh = sh.astype(object)
    yq = acc >> sh
    if cfg.rounding == "half_even":
        tie = (acc & ((1 << sh) - 1)) == 0
        yq = yq - (tie & ((yq & 1) == 1)).astype(yq.dtype)
    lo, hi = cfg.out_fmt.min_int, cfg.out_fmt.max_int
    sat = ((yq < lo) | (yq > hi)).sum(axis=1).astype(np.int64)
    y = np.clip(yq, lo, hi).astype(np.int64)
    unr = None
    if unrounded:
        half = 0 if cfg.rounding == "floor" else (1 << sh) >> 1
        unr = np.ldexp((acc - half).astype(np.float64), -shift.reshape(-1, 1))
    return y, sat, a, shift, unr


def train(cfg: NormConfig, x, gamma, beta, unrounded: bool = True) -> Result:
    """Training mode on fixed-point codes: x (C, n) in cfg.in_fmt, gamma/beta (C,).
    `unrounded=False` skips the float of the value before rounding."""
    if cfg.inference_only:
        raise ValueError("this configuration has inference_only=True: it has no training datapath "
                         "(generate one with inference_only=False)")
    x, g, b = _check(cfg, x, gamma, beta)
    n = x.shape[1]
    hp = channel_params(cfg, n)
    s = _ints(cfg, x, cfg.sum_bits).sum(axis=1).astype(object)
    den = deviation_den(cfg, x, s, hp)
    q = cfg.recip_bits
    consts = []
    for si, dd, gi, bi in zip(s, den, g, b):
        lead = int(dd).bit_length() - 1                      # L: position of Den's leading one
        recip = (1 << (lead + q)) // int(dd)                 # R = floor(2**(L+Q) / Den)
        consts.append(channel_constants(cfg, n, int(si), gi * recip, lead + cfg.shift_base, bi))
    y, sat, a, shift, unr = _normalize(cfg, x, consts, unrounded)
    return Result(y=y, stats=ChannelStats(sum=s.astype(np.int64), den=den, sat=sat),
                  mult=a.reshape(-1), shift=shift, unrounded=unr)


def infer(cfg: NormConfig, x, gamma, beta, mean, scale_m, scale_exp, unrounded: bool = True) -> Result:
    """Inference mode: y = gamma * (x - mean) * scale + beta, mean/scale as the hardware holds them
    (see constants.inference_params)."""
    x, g, b = _check(cfg, x, gamma, beta)
    c = x.shape[0]
    mean = [int(v) for v in np.reshape(mean, -1)]
    scale_m = [int(v) for v in np.reshape(scale_m, -1)]
    scale_exp = [int(v) for v in np.reshape(scale_exp, -1)]
    for name, v in (("mean", mean), ("scale_m", scale_m), ("scale_exp", scale_exp)):
        if len(v) != c:
            raise ValueError(f"{name} has {len(v)} entries, expected one per channel ({c})")
    lo, hi = cfg.scale_exp_range
    if any(not lo <= e <= hi for e in scale_exp):
        raise ValueError(f"scale_exp holds a value out of range: allowed [{lo}, {hi}]")
    if any(not 0 <= m < (1 << (cfg.recip_bits + 1)) for m in scale_m):
        raise ValueError(f"scale_m out of range: allowed [0, {(1 << (cfg.recip_bits + 1)) - 1}]")
    m_lo, m_hi = cfg.in_fmt.min_int << cfg.stat_frac_bits, cfg.in_fmt.max_int << cfg.stat_frac_bits
    if any(not m_lo <= m <= m_hi for m in mean):
        raise ValueError(f"mean holds a value out of range: allowed [{m_lo}, {m_hi}]")
    k = 1 << cfg.stat_frac_bits
    consts = [channel_constants(cfg, k, mi, gi * sm, cfg.inf_shift_base - e, bi)
              for mi, sm, e, gi, bi in zip(mean, scale_m, scale_exp, g, b)]
    y, sat, a, shift, unr = _normalize(cfg, x, consts, unrounded)
    zeros = np.zeros(c, dtype=np.int64)
    return Result(y=y, stats=ChannelStats(sum=zeros, den=zeros.astype(object), sat=sat),
                  mult=a.reshape(-1), shift=shift, unrounded=unr)


def range_bn(cfg: NormConfig, x, gamma, beta) -> Result:
    """Range BN in training mode (kept for the first slice's callers)."""
    if cfg.kind != "range":
        raise ValueError(f"range_bn needs kind='range', got kind={cfg.kind!r}")
    return train(cfg, x, gamma, beta)


def stats_to_float(cfg: NormConfig, count: int, stats: ChannelStats):
    """Reported training statistics to float (mean, sigma_hat, scale = 1/sigma_hat) for running stats."""
    mean = np.asarray(stats.sum, dtype=np.float64) / count * cfg.in_fmt.lsb
    sigma = np.asarray([int(v) for v in stats.den], dtype=np.float64) / count / 2.0 ** (cfg.const_frac_bits + cfg.in_fmt.frac)
    return mean, sigma, 1.0 / sigma
