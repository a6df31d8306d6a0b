"""The golden model's per-element affine of an elementwise build (NormConfig(elementwise=True)).

The core (cfg.core: gamma = 1, beta = 0, x_hat in hat_format(out_fmt)) is bitexact.train / infer as for any
datapath; then y = round(gamma_e x_hat + beta_e) per value by hwnorm/elementwise.py's `affine_codes` (one exact
product and sum, one rounding with cfg.rounding, the clamp to out_fmt). Masked lanes do not exist here: every value
of x has its own gamma/beta code.
"""
from __future__ import annotations

import numpy as np

from ..config import NormConfig
from ..elementwise import affine_codes
from ..fixed import check_int_array


def check_streams(cfg: NormConfig, shape: tuple, gamma, beta) -> tuple[np.ndarray, np.ndarray]:
    """The per-value gamma and beta codes (gamma_fmt / beta_fmt), each x's shape (C, n) or broadcastable to it."""
    out = []
    for name, v, fmt in (("gamma", gamma, cfg.gamma_fmt), ("beta", beta, cfg.beta_fmt)):
        arr = check_int_array(name, v, fmt)
        try:
            arr = np.broadcast_to(arr, shape)
        except ValueError:
            raise ValueError(f"{name} has shape {arr.shape}, expected one code per value of x {tuple(shape)} "
                             f"(an elementwise build streams gamma/beta beside x; or a shape that broadcasts to it)") \
                from None
        out.append(arr)
    return out[0], out[1]


def core_affine(cfg: NormConfig, channels: int) -> tuple[list, list]:
    """The per-channel gamma = 1.0 and beta = 0 the core runs with (the descriptor's gamma/beta are ignored)."""
    return [1 << cfg.gamma_fmt.frac] * channels, [0] * channels


def apply(cfg: NormConfig, xhat: np.ndarray, g: np.ndarray, b: np.ndarray, unrounded: bool):
    """y codes (C, n), clamps per channel (C,), and the value before rounding in output LSBs (float64, or None)."""
    y, clamped, acc, frac = affine_codes(cfg, xhat, cfg.norm_out_fmt, g, b)
    unr = None
    if unrounded:
        unr = np.array([[float(v) for v in row] for row in acc]) * 2.0 ** (cfg.out_fmt.frac - frac)
    return y, clamped.sum(axis=1).astype(np.int64), unr
