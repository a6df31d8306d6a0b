"""The per-element affine step of the grouped norms (LayerNorm, GroupNorm, ...), defined bit for bit.

The datapath carries one gamma/beta per channel (group); LayerNorm's are per element and GroupNorm's per
channel inside a group. So a grouped layer runs the datapath with gamma = 1, beta = 0 and a raised output
format (`hat_format`: 4 more integer and 8 more fraction bits, so x_hat is neither clamped nor rounded
where the final output would not be), and this step computes y = round(gamma * x_hat + beta) in integers:
gamma and beta quantized to the configuration's gamma_fmt / beta_fmt, the exact product and sum, one
rounding to out_fmt with the configuration's rounding mode, then the clamp. A host step for the plain
datapath; an elementwise build (`NormConfig(elementwise=True)`, hwnorm/hdl/elementwise.py) computes the same
bits in hardware, and the golden model's elementwise path calls `affine_codes`.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .config import HAT_FRAC_EXTRA, HAT_INT_EXTRA, HAT_MAX_BITS, FixedFormat, NormConfig, hat_format
from .fixed import quantize

MAX_BITS = HAT_MAX_BITS
__all__ = ["HAT_FRAC_EXTRA", "HAT_INT_EXTRA", "MAX_BITS", "hat_format", "hat_config", "shift_round", "affine_plan",
           "affine_codes", "elementwise_affine"]


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


def affine_plan(cfg: NormConfig, xhat_fmt: FixedFormat) -> tuple[int, int, int, int]:
    """(F, left shift of gamma*x_hat, left shift of beta, final right shift): the exact sum has F = max(gamma frac +
    x_hat frac, beta frac) fraction bits; y = round(sum >> (F - out frac)) (a left shift if negative)."""
    frac = max(cfg.gamma_fmt.frac + xhat_fmt.frac, cfg.beta_fmt.frac)
    return frac, frac - cfg.gamma_fmt.frac - xhat_fmt.frac, frac - cfg.beta_fmt.frac, frac - cfg.out_fmt.frac


def affine_codes(cfg: NormConfig, xhat, xhat_fmt: FixedFormat, g, b):
    """y codes in cfg.out_fmt from x_hat codes (xhat_fmt) and gamma / beta codes (gamma_fmt / beta_fmt, broadcast to
    x_hat): -> (y, clamped (bool, x_hat's shape), the exact sum before rounding, its fraction bits F)."""
    xhat = np.asarray(xhat)
    frac, sg, sb, shift = affine_plan(cfg, xhat_fmt)
    wide = cfg.gamma_fmt.bits + xhat_fmt.bits + sg + 2 > 62 or cfg.beta_fmt.bits + sb + 2 > 62
    dtype = object if wide else np.int64                  # Python integers when int64 could overflow
    g = np.broadcast_to(np.asarray(g), xhat.shape).astype(dtype)
    b = np.broadcast_to(np.asarray(b), xhat.shape).astype(dtype)
    acc = shift_round(g * xhat.astype(dtype), -sg, "floor") + shift_round(b, -sb, "floor")
    y = shift_round(acc, shift, cfg.rounding)
    lo, hi = cfg.out_fmt.min_int, cfg.out_fmt.max_int
    clamped = np.asarray((y < lo) | (y > hi), dtype=bool)
    return np.clip(y, lo, hi).astype(np.int64), clamped, acc, frac


def elementwise_affine(cfg: NormConfig, xhat, xhat_fmt: FixedFormat, gamma, beta):
    """y codes in cfg.out_fmt from x_hat codes (xhat_fmt) and per-element real gamma, beta (broadcast to x_hat).

    Returns (y codes, gamma/beta values saturated by their formats, outputs clamped to out_fmt).
    """
    xhat = np.asarray(xhat)
    g, sat_g = quantize(np.broadcast_to(gamma, xhat.shape), cfg.gamma_fmt)
    b, sat_b = quantize(np.broadcast_to(beta, xhat.shape), cfg.beta_fmt)
    y, clamped, _, _ = affine_codes(cfg, xhat, xhat_fmt, g, b)
    return y, sat_g + sat_b, int(np.count_nonzero(clamped))
