"""Bit-exact integer model of the Range BN datapath: defines every bit the hardware produces.

The algorithm is specified step by step in docs/numerics.md; names here follow it. Arithmetic
is on Python integers (NumPy object arrays), vectorized over channels, so no width can wrap.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..config import NormConfig
from ..constants import channel_params, chunk_sizes
from ..fixed import check_int_array

_bit_length = np.frompyfunc(lambda v: int(v).bit_length(), 1, 1)


@dataclass
class ChannelStats:
    """Per-channel statistics the hardware reports after each channel (arrays of shape (C,))."""

    sum: np.ndarray     # S = sum(x), in input LSBs: mean = S / (n * 2**in_frac)
    sigma: np.ndarray   # T: sigma_hat = T / 2**(const_frac_bits + in_frac)
    sat: np.ndarray     # outputs of the channel that were saturated


@dataclass
class Result:
    y: np.ndarray            # (C, n) output codes, int64
    stats: ChannelStats
    recip: np.ndarray        # internal, for debugging: reciprocal mantissa
    shift: np.ndarray        # internal: final right shift SH
    unrounded: np.ndarray    # (d*M + beta_al) / 2**SH as float64: the value before rounding, in output LSBs


def _col(v) -> np.ndarray:
    return np.asarray(v, dtype=object).reshape(-1, 1)


def range_bn(cfg: NormConfig, x, gamma, beta) -> Result:
    """Training-mode Range BN on fixed-point codes: x (C, n) in cfg.in_fmt, gamma/beta (C,)."""
    x = check_int_array("x", x, cfg.in_fmt, ndim=2)
    channels, n = x.shape
    if n < 1 or n > cfg.max_count:
        raise ValueError(f"count={n} is out of range: allowed [1, max_count={cfg.max_count}]")
    gamma = check_int_array("gamma", np.reshape(gamma, -1), cfg.gamma_fmt, ndim=1)
    beta = check_int_array("beta", np.reshape(beta, -1), cfg.beta_fmt, ndim=1)
    for name, v in (("gamma", gamma), ("beta", beta)):
        if v.shape[0] != channels:
            raise ValueError(f"{name} has {v.shape[0]} entries, expected one per channel ({channels})")

    hp = channel_params(cfg, n)
    xo = x.astype(object)

    # Pass 1: sum and chunked ranges (the last chunk stays "open").
    s = xo.sum(axis=1)
    sizes = chunk_sizes(n, cfg.chunks)
    r_closed = np.zeros(channels, dtype=object)
    start = 0
    for m in sizes[:-1]:
        part = xo[:, start:start + m]
        r_closed = r_closed + (part.max(axis=1) - part.min(axis=1))
        start += m
    last = xo[:, start:]
    r_open = last.max(axis=1) - last.min(axis=1)

    # Between the passes: sigma, denominator, reciprocal, multiplier, shift.
    t = hp.c_full * r_closed + hp.c_last * r_open + cfg.eps_int
    den = n * t
    lead = _bit_length(den) - 1                       # L: position of the leading one
    q = cfg.recip_bits
    recip = np.array([(1 << int(l + q)) // int(dd) for l, dd in zip(lead, den)], dtype=object)
    mult = gamma.astype(object) * recip
    shift = lead + cfg.shift_base
    low = shift < cfg.shift_min
    mult = np.left_shift(mult, np.where(low, cfg.shift_min - shift, 0))
    shift = np.where(low, cfg.shift_min, shift)
    beta_al = np.left_shift(beta.astype(object), shift + cfg.out_fmt.frac - cfg.beta_fmt.frac)
    half = np.array([(1 << (int(sh) - 1)) if (sh > 0 and cfg.rounding != "floor") else 0 for sh in shift],
                    dtype=object)

    # Pass 2: d = n*x - S exactly, then y = round((d*M + beta_al) / 2**SH), saturated.
    d = n * xo - _col(s)
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
    stats = ChannelStats(sum=s.astype(np.int64), sigma=t, sat=sat)
    unrounded = np.array([[float(Fraction(int(v), 1 << int(k))) for v in row] for row, k in
                          zip(acc - _col(half), shift)], dtype=np.float64).reshape(acc.shape)
    return Result(y=y, stats=stats, recip=recip, shift=shift.astype(np.int64), unrounded=unrounded)


def stats_to_float(cfg: NormConfig, count: int, stats: ChannelStats):
    """Reported statistics to float (mean, sigma_hat, scale = 1/sigma_hat) for running-stat updates."""
    mean = np.asarray(stats.sum, dtype=np.float64) / count * cfg.in_fmt.lsb
    sigma = np.asarray([int(v) for v in stats.sigma], dtype=np.float64) / 2.0 ** (cfg.const_frac_bits + cfg.in_fmt.frac)
    return mean, sigma, 1.0 / sigma
