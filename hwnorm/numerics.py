"""Measuring the bit-exact model against the float reference: the error bound of docs/numerics.md."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import NormConfig
from .fixed import round_mode
from .golden import range_bn, reference_out_lsb


@dataclass
class ErrorStats:
    """Errors in output LSBs over every value of every case."""

    values: int
    max_err: float          # max |y_hw - clip(round(y_ref))| (integers, after rounding and saturation)
    mean_err: float
    max_unrounded: float    # max |unrounded_hw - y_ref| where the reference is inside the output range
    saturated: int


def cases(cfg: NormConfig, rng: np.random.Generator, trials: int = 4):
    """Random and adversarial (x, gamma, beta) cases: several counts, narrow ranges, extremes, ties, limits."""
    fi, fg, fb = cfg.in_fmt, cfg.gamma_fmt, cfg.beta_fmt
    counts = sorted({c for c in (1, 2, 3, 10, 11, 13, 64, 100, cfg.max_count) if c <= cfg.max_count})
    for n in counts:
        for t in range(trials):
            ch = 8
            g = rng.integers(fg.min_int, fg.max_int + 1, size=ch)
            b = rng.integers(fb.min_int, fb.max_int + 1, size=ch)
            yield rng.integers(fi.min_int, fi.max_int + 1, size=(ch, n)), g, b
            centre = rng.integers(fi.min_int + 2, fi.max_int - 1, size=(ch, 1))
            yield np.clip(centre + rng.integers(-2, 3, size=(ch, n)), fi.min_int, fi.max_int), g, b
            small_g = rng.integers(-(1 << fg.frac) if fg.signed else 0, (1 << fg.frac) + 1, size=ch)
            yield rng.integers(fi.min_int, fi.max_int + 1, size=(ch, n)), np.clip(small_g, fg.min_int, fg.max_int), b // 8
        ext = np.tile(np.where(np.arange(n) % 2 == 0, fi.min_int, fi.max_int), (2, 1))
        yield ext, np.array([fg.max_int, fg.min_int]), np.array([0, fb.max_int])
        yield np.full((2, n), fi.max_int), np.array([fg.max_int, 1]), np.array([fb.min_int, fb.max_int])


def measure(cfg: NormConfig, seed: int = 0, trials: int = 4) -> ErrorStats:
    rng = np.random.default_rng(seed)
    lo, hi = cfg.out_fmt.min_int, cfg.out_fmt.max_int
    values, total, max_err, max_unr, sat = 0, 0.0, 0.0, 0.0, 0
    for x, g, b in cases(cfg, rng, trials):
        res = range_bn(cfg, x, g, b)
        ref = reference_out_lsb(cfg, x, g, b)
        want = np.clip(round_mode(ref, cfg.rounding), lo, hi)
        err = np.abs(res.y - want)
        inside = (ref >= lo) & (ref <= hi)
        if inside.any():
            max_unr = max(max_unr, float(np.abs(res.unrounded - ref)[inside].max()))
        values += err.size
        total += float(err.sum())
        max_err = max(max_err, float(err.max()))
        sat += int(res.stats.sat.sum())
    return ErrorStats(values=values, max_err=max_err, mean_err=total / values, max_unrounded=max_unr,
                      saturated=sat)
