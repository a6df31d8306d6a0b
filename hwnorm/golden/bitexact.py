"""Bit-exact integer models of the datapaths: they define every bit the hardware produces.

The algorithm is specified step by step in docs/numerics.md; names here follow it. Arithmetic
is on Python integers (NumPy object arrays), vectorized over channels, so no width can wrap.
Lanes do not appear: they change when values are processed, never the result.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..config import NormConfig
from ..constants import channel_params, chunk_sizes, topk_eff
from ..fixed import check_int_array

_bit_length = np.frompyfunc(lambda v: int(v).bit_length(), 1, 1)
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
    mult: np.ndarray         # internal: per-channel multiplier M after alignment
    shift: np.ndarray        # internal: final right shift SH
    unrounded: np.ndarray    # (d*M + beta_al) / 2**SH as float64: the value before rounding, output LSBs


def _col(v) -> np.ndarray:
    return np.asarray(v, dtype=object).reshape(-1, 1)


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
    return x.astype(object), gamma.astype(object), beta.astype(object)


def _range_den(cfg, xo, hp):
    """Range: Den = n * (c_full * R_closed + c_last * R_open + eps_int), chunks as torch.chunk."""
    sizes = chunk_sizes(xo.shape[1], cfg.chunks)
    r_closed = np.zeros(xo.shape[0], dtype=object)
    start = 0
    for m in sizes[:-1]:
        part = xo[:, start:start + m]
        r_closed = r_closed + (part.max(axis=1) - part.min(axis=1))
        start += m
    last = xo[:, start:]
    r_open = last.max(axis=1) - last.min(axis=1)
    return hp["count"] * (hp["c_full"] * r_closed + hp["c_last"] * r_open + cfg.eps_int)


def deviation_den(cfg: NormConfig, xo, s, hp) -> np.ndarray:
    """Den = n * sigma_hat * 2**(CF + in_frac) per channel, from exact integer statistics."""
    n = xo.shape[1]
    d_abs = np.abs(n * xo - _col(s))
    eps_n = n * cfg.eps_int
    if cfg.kind == "range":
        return _range_den(cfg, xo, hp)
    if cfg.kind == "l1":
        return hp["c"] * d_abs.sum(axis=1) + eps_n
    if cfg.kind == "linf":
        return hp["c"] * d_abs.max(axis=1) + eps_n
    if cfg.kind == "topk":
        kk = topk_eff(n, cfg.k)
        top = -np.sort(-d_abs, axis=1)[:, :kk]
        return hp["c"] * top.sum(axis=1) + eps_n
    if cfg.kind == "l2":
        v = n * (xo * xo).sum(axis=1) - s * s          # n^2 * variance, exact
        return _isqrt(np.left_shift(v, 2 * cfg.const_frac_bits) + hp["eps_n"])
    raise ValueError(f"kind={cfg.kind!r} is not supported")


def _affine(cfg: NormConfig, d, mult, shift_raw, beta, unrounded: bool = True):
    """Shared last steps: align SH >= shift_min, add beta and half, shift, round, saturate."""
    low = shift_raw < cfg.shift_min
    mult = np.left_shift(mult, np.where(low, cfg.shift_min - shift_raw, 0))
    shift = np.where(low, cfg.shift_min, shift_raw)
    if np.any(shift > cfg.shift_max):
        raise ValueError(f"output shift {int(shift.max())} exceeds shift_max={cfg.shift_max}: scale too small")
    beta_al = np.left_shift(beta, shift + cfg.out_fmt.frac - cfg.beta_fmt.frac)
    half = np.array([(1 << (int(sh) - 1)) if (sh > 0 and cfg.rounding != "floor") else 0 for sh in shift],
                    dtype=object)
    acc = d * _col(mult) + _col(beta_al + half)
    sh = _col(shift)
    yq = np.right_shift(acc, sh)
    if cfg.rounding == "half_even":
        mask = np.left_shift(np.ones_like(sh), sh) - 1
        tie = (sh > 0) & ((acc & mask) == 0)
        yq = yq - (tie & ((yq & 1) == 1)).astype(object)
    lo, hi = cfg.out_fmt.min_int, cfg.out_fmt.max_int
    sat = ((yq < lo) | (yq > hi)).sum(axis=1).astype(np.int64)
    y = np.clip(yq, lo, hi).astype(np.int64)
    unr = None
    if unrounded:
        unr = np.array([[float(Fraction(int(v), 1 << int(k))) for v in row]
                        for row, k in zip(acc - _col(half), shift)], dtype=np.float64).reshape(acc.shape)
    return y, sat, mult, shift.astype(np.int64), unr


def train(cfg: NormConfig, x, gamma, beta, unrounded: bool = True) -> Result:
    """Training mode on fixed-point codes: x (C, n) in cfg.in_fmt, gamma/beta (C,).
    `unrounded=False` skips the (slow, exact) float of the value before rounding."""
    xo, g, b = _check(cfg, x, gamma, beta)
    n = xo.shape[1]
    hp = channel_params(cfg, n)
    s = xo.sum(axis=1)
    den = deviation_den(cfg, xo, s, hp)
    lead = _bit_length(den) - 1                              # L: position of Den's leading one
    q = cfg.recip_bits
    recip = np.array([(1 << int(l + q)) // int(dd) for l, dd in zip(lead, den)], dtype=object)
    d = n * xo - _col(s)                                     # exact: d / n = x - mu
    y, sat, mult, shift, unr = _affine(cfg, d, g * recip, lead + cfg.shift_base, b, unrounded)
    return Result(y=y, stats=ChannelStats(sum=s.astype(np.int64), den=den, sat=sat),
                  mult=mult, shift=shift, unrounded=unr)


def infer(cfg: NormConfig, x, gamma, beta, mean, scale_m, scale_exp, unrounded: bool = True) -> Result:
    """Inference mode: y = gamma * (x - mean) * scale + beta, mean/scale as the hardware holds them
    (see constants.inference_params): exact up to the final rounding."""
    xo, g, b = _check(cfg, x, gamma, beta)
    c = xo.shape[0]
    mean = np.asarray(mean, dtype=object).reshape(-1)
    scale_m = np.asarray(scale_m, dtype=object).reshape(-1)
    scale_exp = np.asarray(scale_exp, dtype=object).reshape(-1)
    for name, v in (("mean", mean), ("scale_m", scale_m), ("scale_exp", scale_exp)):
        if v.shape[0] != c:
            raise ValueError(f"{name} has {v.shape[0]} entries, expected one per channel ({c})")
    lo, hi = cfg.scale_exp_range
    if any(not lo <= int(e) <= hi for e in scale_exp):
        raise ValueError(f"scale_exp holds a value out of range: allowed [{lo}, {hi}]")
    if any(not 0 <= int(m) < (1 << (cfg.recip_bits + 1)) for m in scale_m):
        raise ValueError(f"scale_m out of range: allowed [0, {(1 << (cfg.recip_bits + 1)) - 1}]")
    m_lo, m_hi = cfg.in_fmt.min_int << cfg.stat_frac_bits, cfg.in_fmt.max_int << cfg.stat_frac_bits
    if any(not m_lo <= int(m) <= m_hi for m in mean):
        raise ValueError(f"mean holds a value out of range: allowed [{m_lo}, {m_hi}]")
    d = np.left_shift(xo, cfg.stat_frac_bits) - _col(mean)
    shift_raw = np.array([cfg.inf_shift_base - int(e) for e in scale_exp], dtype=object)
    y, sat, mult, shift, unr = _affine(cfg, d, g * scale_m, shift_raw, b, unrounded)
    zeros = np.zeros(c, dtype=np.int64)
    return Result(y=y, stats=ChannelStats(sum=zeros, den=zeros.astype(object), sat=sat),
                  mult=mult, shift=shift, unrounded=unr)


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
