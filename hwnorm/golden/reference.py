"""Float64 reference of Range batch-norm, as in the public reference implementation.

x has shape (C, n): per channel, the n values the layer reduces over.
"""
from __future__ import annotations

import numpy as np

from ..config import NormConfig
from ..constants import c_range, chunk_sizes


def _as_2d(name: str, x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"{name} must have shape (channels, n) with n >= 1, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} holds NaN or Inf")
    return x


def range_sigma(x, chunks: int = 10, eps: float = 1e-7) -> np.ndarray:
    """sigma_hat per channel: mean over torch.chunk chunks of C_range(m) * (max - min), plus eps."""
    x = _as_2d("x", x)
    sizes = chunk_sizes(x.shape[1], chunks)
    acc = np.zeros(x.shape[0])
    start = 0
    for m in sizes:
        part = x[:, start:start + m]
        acc += c_range(m) * (part.max(axis=1) - part.min(axis=1))
        start += m
    return acc / len(sizes) + eps


def range_bn_train(x, gamma, beta, chunks: int = 10, eps: float = 1e-7):
    """Training-mode Range BN with batch statistics. Returns (y, mean, sigma_hat)."""
    x = _as_2d("x", x)
    mean = x.mean(axis=1)
    sigma = range_sigma(x, chunks, eps)
    g = np.asarray(gamma, dtype=np.float64).reshape(-1, 1)
    b = np.asarray(beta, dtype=np.float64).reshape(-1, 1)
    y = g * (x - mean[:, None]) / sigma[:, None] + b
    return y, mean, sigma


def range_bn_infer(x, gamma, beta, mean, scale):
    """Inference-mode Range BN: y = gamma * (x - mean) * scale + beta with given per-channel mean/scale."""
    x = _as_2d("x", x)
    col = lambda v: np.asarray(v, dtype=np.float64).reshape(-1, 1)  # noqa: E731
    return col(gamma) * (x - col(mean)) * col(scale) + col(beta)


def reference_out_lsb(cfg: NormConfig, x, gamma, beta) -> np.ndarray:
    """The float reference on fixed-point codes, in output LSBs, unrounded and unsaturated."""
    xf = np.asarray(x, dtype=np.float64) * cfg.in_fmt.lsb
    gf = np.asarray(gamma, dtype=np.float64) * cfg.gamma_fmt.lsb
    bf = np.asarray(beta, dtype=np.float64) * cfg.beta_fmt.lsb
    y, _, _ = range_bn_train(xf, gf, bf, cfg.chunks, cfg.eps)
    return y * (1 << cfg.out_fmt.frac)
