"""The per-element affine step of the grouped norms (LayerNorm, GroupNorm, ...), defined bit for bit on the host.

The datapath carries one gamma/beta per channel (group); LayerNorm's are per element and GroupNorm's per
channel inside a group. So a grouped layer runs the datapath with gamma = 1, beta = 0 and a raised output
format (`hat_format`: 4 more integer and 8 more fraction bits, so x_hat is neither clamped nor rounded
where the final output would not be), and this step computes y = round(gamma * x_hat + beta) in integers:
gamma and beta quantized to the configuration's gamma_fmt / beta_fmt, the exact product and sum, one
rounding to out_fmt with the configuration's rounding mode, then the clamp. It is NOT in the generated
Verilog: it is the specification a streaming per-element affine stage after the datapath must meet.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .config import FixedFormat, NormConfig
from .fixed import quantize

HAT_INT_EXTRA = 4            # integer bits x_hat has beyond out_fmt
HAT_FRAC_EXTRA = 8           # fraction bits x_hat has beyond out_fmt
MAX_BITS = 32


def hat_format(out_fmt: FixedFormat) -> FixedFormat:
    """The raised format of the datapath's x_hat output (at most 32 bits; fraction bits first)."""
    frac = out_fmt.frac + min(HAT_FRAC_EXTRA, MAX_BITS - out_fmt.bits)
    bits = min(MAX_BITS, out_fmt.bits + HAT_INT_EXTRA + HAT_FRAC_EXTRA)
    return FixedFormat(bits, frac, True)


def hat_config(cfg: NormConfig) -> NormConfig:
    """The datapath configuration a grouped layer runs: cfg with the raised output format; gamma = 1 must fit."""
    if cfg.gamma_fmt.max_int < (1 << cfg.gamma_fmt.frac):
        raise ValueError(f"gamma_fmt={cfg.gamma_fmt} cannot hold 1.0, which grouped layers run the datapath with: "
                         f"allowed a gamma_fmt with at least one integer bit (e.g. s8.6)")
    return dataclasses.replace(cfg, out_fmt=hat_format(cfg.out_fmt))


def shift_round(acc: np.ndarray, shift: int, mode: str) -> np.ndarray:
    """acc / 2**shift rounded to an integer with the configuration's rounding mode (exact integer arithmetic)."""
    if shift <= 0:
        return acc * (1 << -shift)
    q = acc >> shift
    if mode == "floor":
        return q
    r = acc - (q << shift)
    half = 1 << (shift - 1)
    if mode == "half_up":
        return q + (r >= half)
    if mode == "half_even":
        return q + ((r > half) | ((r == half) & ((q & 1) == 1)))
    raise ValueError(f"rounding={mode!r} is not supported: allowed half_up, half_even, floor")


def elementwise_affine(cfg: NormConfig, xhat, xhat_fmt: FixedFormat, gamma, beta):
    """y codes in cfg.out_fmt from x_hat codes (xhat_fmt) and per-element real gamma, beta (broadcast to x_hat).

    Returns (y codes, gamma/beta values saturated by their formats, outputs clamped to out_fmt).
    """
    xhat = np.asarray(xhat)
    g, sat_g = quantize(np.broadcast_to(gamma, xhat.shape), cfg.gamma_fmt)
    b, sat_b = quantize(np.broadcast_to(beta, xhat.shape), cfg.beta_fmt)
    frac = max(cfg.gamma_fmt.frac + xhat_fmt.frac, cfg.beta_fmt.frac)
    wide = cfg.gamma_fmt.bits + xhat_fmt.bits + frac - cfg.gamma_fmt.frac - xhat_fmt.frac + 2 > 62 or \
        cfg.beta_fmt.bits + frac - cfg.beta_fmt.frac + 2 > 62
    dtype = object if wide else np.int64                  # Python integers when int64 could overflow
    acc = shift_round(g.astype(dtype) * xhat.astype(dtype), cfg.gamma_fmt.frac + xhat_fmt.frac - frac, "floor")
    acc = acc + shift_round(b.astype(dtype), cfg.beta_fmt.frac - frac, "floor")
    y = shift_round(acc, frac - cfg.out_fmt.frac, cfg.rounding)
    lo, hi = cfg.out_fmt.min_int, cfg.out_fmt.max_int
    sat_out = int(np.count_nonzero((y < lo) | (y > hi)))
    return np.clip(y, lo, hi).astype(np.int64), sat_g + sat_b, sat_out
