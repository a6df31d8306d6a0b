"""Float64 references of the normalizations, as in the public reference implementations.

x has shape (C, n): per channel, the n values the layer reduces over. Every kind shares the
mean and the affine step; they differ only in the deviation estimate sigma_hat.
"""
from __future__ import annotations

import numpy as np

from ..config import FRN_KINDS, NormConfig
from ..constants import L1_CONST, MAD_CONST, c_inf, c_range, chunk_sizes, cvar_count, topk_eff


def _as_2d(name: str, x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"{name} must have shape (channels, n) with n >= 1, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} holds NaN or Inf")
    return x


def _col(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float64).reshape(-1, 1)


def range_sigma(x, chunks: int = 10, eps: float = 1e-7) -> np.ndarray:
    """Mean over torch.chunk chunks of C_range(m) * (max - min), plus eps."""
    x = _as_2d("x", x)
    sizes = chunk_sizes(x.shape[1], chunks)
    acc = np.zeros(x.shape[0])
    start = 0
    for m in sizes:
        part = x[:, start:start + m]
        acc += c_range(m) * (part.max(axis=1) - part.min(axis=1))
        start += m
    return acc / len(sizes) + eps


def sigma_hat(x, kind: str, *, chunks: int = 10, k: int = 10, eps: float = 1e-5, alpha: float | None = None) -> np.ndarray:
    """The deviation estimate of `kind` per channel (see shared norms table in docs/numerics.md). An FRN kind is
    the deviation of its centred kind taken about 0 instead of the mean: frn sqrt(mean(x^2) + eps) (FRN's nu),
    frn_l1 sqrt(pi/2) mean|x| + eps, frn_linf C_inf(n) max|x| + eps, frn_range as range (a range has no centre)."""
    x = _as_2d("x", x)
    n = x.shape[1]
    if kind in FRN_KINDS:
        base = FRN_KINDS[kind]
        if base == "range":
            return range_sigma(x, chunks, eps)
        dev = np.abs(x)
        if base == "l2":
            return np.sqrt((x ** 2).mean(axis=1) + eps)
        if base == "l1":
            return L1_CONST * dev.mean(axis=1) + eps
        return c_inf(n) * dev.max(axis=1) + eps
    dev = np.abs(x - x.mean(axis=1, keepdims=True))
    if kind == "range":
        return range_sigma(x, chunks, eps)
    if kind == "l1":
        return L1_CONST * dev.mean(axis=1) + eps
    if kind == "mad":
        return MAD_CONST * dev.mean(axis=1) + eps
    if kind == "cvar":                  # mean of the top ceil((1 - alpha) n) values minus the mean
        top = -np.sort(-x, axis=1)[:, :cvar_count(n, alpha)]
        return top.mean(axis=1) - x.mean(axis=1) + eps
    if kind == "semidev":
        below = np.maximum(x.mean(axis=1, keepdims=True) - x, 0.0)
        return np.sqrt((below ** 2).mean(axis=1) + eps)
    if kind in ("linf", "topk"):
        kk = 1 if kind == "linf" else topk_eff(n, k)
        top = -np.sort(-dev, axis=1)[:, :kk]
        return c_inf(n) * top.mean(axis=1) + eps
    if kind == "l2":
        return np.sqrt((dev ** 2).mean(axis=1) + eps)
    raise ValueError(f"kind={kind!r} is not supported: allowed range, l1, linf, topk, l2, mad, semidev, cvar, "
                     f"{', '.join(FRN_KINDS)}")


def norm_train(x, gamma, beta, kind: str = "range", *, chunks: int = 10, k: int = 10, eps: float = 1e-7,
               alpha: float | None = None, tau=None):
    """Training-mode normalization with batch statistics. Returns (y, mean, sigma_hat).
    FRN kinds: y = gamma * x / sigma_hat + beta (no centring), then the TLU z = max(y, tau) if tau is given
    (per channel); mean is still reported."""
    x = _as_2d("x", x)
    mean = x.mean(axis=1)
    sigma = sigma_hat(x, kind, chunks=chunks, k=k, eps=eps, alpha=alpha)
    if kind in FRN_KINDS:
        y = _col(gamma) * x / sigma[:, None] + _col(beta)
        return (y if tau is None else np.maximum(y, _col(tau))), mean, sigma
    if tau is not None:
        raise ValueError(f"tau={tau!r} applies to the FRN kinds only ({', '.join(FRN_KINDS)}): leave it unset for "
                         f"kind={kind!r}")
    y = _col(gamma) * (x - mean[:, None]) / sigma[:, None] + _col(beta)
    return y, mean, sigma


def norm_infer(x, gamma, beta, mean, scale):
    """Inference-mode normalization: y = gamma * (x - mean) * scale + beta with given per-channel mean/scale."""
    x = _as_2d("x", x)
    return _col(gamma) * (x - _col(mean)) * _col(scale) + _col(beta)


def range_bn_train(x, gamma, beta, chunks: int = 10, eps: float = 1e-7):
    """Range BN (the reference RangeBN), training mode."""
    return norm_train(x, gamma, beta, "range", chunks=chunks, eps=eps)


def train_out_lsb(cfg: NormConfig, x, gamma, beta, eps: float | None = None) -> np.ndarray:
    """The float reference on fixed-point codes, in output LSBs, unrounded and unsaturated (before an FRN kind's
    TLU: max(round(y), tau) = round(max(y, tau)) for an output code tau). `eps`: in the input format's units, as
    an FRN kind's descriptor carries it (None: cfg.eps)."""
    y, _, _ = norm_train(np.asarray(x, dtype=np.float64) * cfg.in_fmt.lsb,
                         np.asarray(gamma, dtype=np.float64) * cfg.gamma_fmt.lsb,
                         np.asarray(beta, dtype=np.float64) * cfg.beta_fmt.lsb,
                         cfg.kind, chunks=cfg.chunks, k=cfg.k, eps=cfg.eps if eps is None else eps, alpha=cfg.alpha)
    return y * (1 << cfg.out_fmt.frac)


def infer_out_lsb(cfg: NormConfig, x, gamma, beta, mean, scale_m, scale_exp) -> np.ndarray:
    """Inference reference on codes (mean, scale as the hardware holds them), in output LSBs."""
    mean_f = np.asarray(mean, dtype=np.float64) * 2.0 ** -(cfg.in_fmt.frac + cfg.stat_frac_bits)
    scale_f = np.asarray(scale_m, dtype=np.float64) * np.exp2(np.asarray(scale_exp, dtype=np.float64))
    y = norm_infer(np.asarray(x, dtype=np.float64) * cfg.in_fmt.lsb,
                   np.asarray(gamma, dtype=np.float64) * cfg.gamma_fmt.lsb,
                   np.asarray(beta, dtype=np.float64) * cfg.beta_fmt.lsb, mean_f, scale_f)
    return y * (1 << cfg.out_fmt.frac)
