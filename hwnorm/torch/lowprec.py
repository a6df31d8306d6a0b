"""Batch statistics accumulated in a narrow floating-point type, on the float backend.

What a GPU or accelerator without wide (fp32 or integer) accumulators does: the activations are held
in the narrow type and every addition, multiplication and division of the statistics is rounded to
it. A sum over a channel's n values runs in `lanes` partial accumulators, each adding its share of
the values one after another (value i goes to lane i mod lanes), then a pairwise tree adds the lanes,
as a warp-per-channel reduction would. The statistics are each kind's (hwnorm.nn, same constants):

- l2: mean = S/n, var = Q/n - mean^2 with S = sum x and Q = sum x^2 (one pass, the algorithm of the
  L2 datapath), clamped at 0; sigma = sqrt(var + eps)
- range: mean of C(m) * (max - min) over the chunks (max/min are exact in any type)
- l1: sqrt(pi/2) * sum |x - mean| / n
- linf / topk: C(n) * mean of the k largest |x - mean|

The normalization itself, (x - mean) / sigma * gamma + beta, is then applied in float64 with these
statistics, so what is measured is the statistics alone. `LowPrecisionStatsBackend` plugs this into
to_hardware() (straight-through gradient, running statistics from the reported mean and sigma);
inference is the float reference with the running statistics.
"""
from __future__ import annotations

import numpy as np
import torch

from ..backends.base import FloatBackend, LayerResult
from ..constants import L1_CONST, c_inf, c_range, chunk_sizes, topk_eff
from ..golden import norm_train

STATS_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16,
                "float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}


class NarrowArith:
    """Arithmetic rounded to `dtype` (computed in float32, then rounded: exact for these types but for
    rare double-rounding ties); counts the sums whose partials left the type's finite range."""

    def __init__(self, dtype: str, lanes: int = 16):
        if dtype not in STATS_DTYPES:
            raise ValueError(f"stats dtype {dtype!r} is not supported: allowed {', '.join(STATS_DTYPES)}")
        if not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"lanes={lanes!r} is out of range: allowed >= 1")
        self.name, self.dtype, self.lanes = dtype, STATS_DTYPES[dtype], lanes
        self.max = float(torch.finfo(self.dtype).max)
        self.native = self.dtype in (torch.float16, torch.bfloat16)

    def r(self, v: torch.Tensor) -> torch.Tensor:
        """Round float32 values to the narrow type (overflow: inf, or the largest value for e4m3fn)."""
        return v.to(self.dtype).to(torch.float32)

    def _add(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.native:                      # CPU float16/bfloat16 add: float32 sum rounded once
            return a + b
        return self.r(a + b)                 # float8: no arithmetic on CPU; float32 values in the type

    def sum(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum over the last axis of (C, n) float32 values already in the type, per-channel overflow flag:
        a partial sum reached inf, NaN or the type's largest value)."""
        c, n = v.shape
        lanes = min(self.lanes, n)
        m = -(-n // lanes)
        if self.native:
            v = v.to(self.dtype)
        if m * lanes != n:
            v = torch.cat([v, v.new_zeros(c, m * lanes - n)], dim=1)
        v = v.reshape(c, m, lanes).transpose(0, 1).contiguous()
        acc = v[0]
        peak = acc.abs()
        for i in range(1, m):
            acc = self._add(acc, v[i])
            peak = torch.maximum(peak, acc.abs())
        while acc.shape[1] > 1:
            if acc.shape[1] % 2:
                acc = torch.cat([acc, acc.new_zeros(c, 1)], dim=1)
            acc = self._add(acc[:, 0::2], acc[:, 1::2])
            peak = torch.maximum(peak.amax(dim=1, keepdim=True), acc.abs())
        peak = peak.to(torch.float32).amax(dim=1)
        return acc[:, 0].to(torch.float32), ~torch.isfinite(peak) | (peak >= self.max)


def narrow_stats(kind: str, x: torch.Tensor, arith: NarrowArith, *, chunks: int = 10, k: int = 10,
                 eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, sigma_hat, overflow flag) per channel of x (C, n), every operation rounded to arith's type."""
    r = arith.r
    n = x.shape[1]
    xs = r(x.to(torch.float32))
    s, over = arith.sum(xs)
    mean = r(s / n)
    if kind == "l2":
        q, over_q = arith.sum(r(xs * xs))
        over = over | over_q
        var = torch.clamp(r(r(q / n) - r(mean * mean)), min=0.0)
        sigma = r(torch.sqrt(r(var + eps)))
        return mean, sigma, over
    if kind == "range":
        total = torch.zeros(x.shape[0])
        lo = 0
        for size in chunk_sizes(n, chunks):
            part = xs[:, lo:lo + size]
            lo += size
            total = r(total + r(r(torch.tensor(c_range(size))) * r(part.max(dim=1).values - part.min(dim=1).values)))
        dev = r(total / len(chunk_sizes(n, chunks)))
    else:
        d = r(xs - mean[:, None]).abs()
        if kind == "l1":
            t, over_d = arith.sum(d)
            dev = r(r(torch.tensor(L1_CONST)) * r(t / n))
        elif kind in ("linf", "topk"):
            keff = topk_eff(n, 1 if kind == "linf" else k)
            t, over_d = arith.sum(d.topk(keff, dim=1).values)
            dev = r(r(torch.tensor(c_inf(n))) * r(t / keff))
        else:
            raise ValueError(f"kind={kind!r} is not supported: allowed l2, range, l1, linf, topk")
        over = over | over_d
    return mean, r(dev + eps), over


class LowPrecisionStatsBackend(FloatBackend):
    """The float backend with the training batch statistics computed in a narrow type (see the module
    docstring). Counts channel-batches, those with an overflowing sum, non-finite sigmas and the
    relative error of sigma against the float64 reference on the same batch."""

    def __init__(self, dtype: str, lanes: int = 16):
        self.arith = NarrowArith(dtype, lanes)
        self.name = f"float/{dtype}"
        self.channel_batches = 0
        self.overflowed = 0
        self.nonfinite = 0
        self.rel_err_sum = 0.0
        self.rel_err_max = 0.0

    def forward(self, cfg, x, gamma, beta, *, train, mean=None, sigma=None, in_scale=1.0, seed=None):
        if not train:
            return super().forward(cfg, x, gamma, beta, train=False, mean=mean, sigma=sigma, in_scale=in_scale)
        x = np.asarray(x, dtype=np.float64)
        m, s, over = narrow_stats(cfg.kind, torch.from_numpy(x), self.arith, chunks=cfg.chunks, k=cfg.k, eps=cfg.eps)
        m, s = m.double().numpy(), s.double().numpy()
        _, _, s_ref = norm_train(x, np.ones(len(x)), np.zeros(len(x)), cfg.kind, chunks=cfg.chunks, k=cfg.k, eps=cfg.eps)
        finite = np.isfinite(s)
        with np.errstate(all="ignore"):
            rel = np.abs(s / s_ref - 1.0)
            y = (x - m[:, None]) / s[:, None] * np.asarray(gamma)[:, None] + np.asarray(beta)[:, None]
        if cfg.dropout_active:              # the hardware's mask, as the float backend applies it
            from ..golden.dropout import check_seeds, keep_mask
            keep = keep_mask(cfg, check_seeds(seed, x.shape[0]), x.shape[1])
            y = np.where(keep, y / (1.0 - cfg.dropout_threshold / 2.0 ** 16), 0.0)
        self.channel_batches += len(x)
        self.overflowed += int(over.sum())
        self.nonfinite += int((~finite).sum())
        if finite.any():
            self.rel_err_sum += float(np.where(finite, rel, 0.0).sum())
            self.rel_err_max = max(self.rel_err_max, float(rel[finite].max()))
        return LayerResult(y=y, mean=m, sigma=s, values=x.size)

    def summary(self) -> dict:
        finite = self.channel_batches - self.nonfinite
        return {"channel_batches": self.channel_batches, "overflowed": self.overflowed, "nonfinite_sigma": self.nonfinite,
                "sigma_rel_err_mean": self.rel_err_sum / finite if finite else None,
                "sigma_rel_err_max": self.rel_err_max if finite else None}
