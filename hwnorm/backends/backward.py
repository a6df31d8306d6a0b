"""The backward behind Backend.backward: a layer's dL/dy (C, n) in float, dL/dx, dL/dgamma, dL/dbeta out in float.

golden maps x to codes as the forward did (one LSB = in_scale) and dy to grad_fmt codes scaled per call (one LSB =
max|dy| / grad_fmt.max_int), runs hwnorm.golden.backward and maps dx (dx_fmt), dgamma and dbeta back; float runs the
float formulas (hwnorm.golden.backward_ref) unquantized; rtl refuses: its backward datapath is not built yet.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ..config import GradConfig, NormConfig
from ..constants import MASK32, channel_seeds
from ..fixed import quantize
from ..golden.backward import backward as golden_backward, quantize_grad
from ..golden.backward_ref import norm_backward

NOT_BUILT = ("the backward datapath is not built in hardware yet (issue 21): use backend='golden' (the bit-exact "
             "golden backward) or backward=False (the float gradient)")


@dataclass
class BackwardResult:
    dx: np.ndarray              # (C, n) float64, real units
    dgamma: np.ndarray          # (C,) float64; (C, n) for gamma per value
    dbeta: np.ndarray           # (C,) float64; (C, n) for gamma per value
    saturated_dy: int = 0       # dy codes clipped by the quantization to grad_fmt
    saturated_dx: int = 0       # dx codes clamped to dx_fmt
    values: int = 0


def check_backward_args(cfg, gcfg, x, dy, gamma, in_scale, seed):
    """Validate Backend.backward's arguments; returns (x, dy, gamma) as float64 arrays."""
    if not isinstance(cfg, NormConfig):
        raise ValueError(f"cfg={cfg!r} is not supported: allowed a NormConfig")
    if not isinstance(gcfg, GradConfig):
        raise ValueError(f"gcfg={gcfg!r} is not supported: allowed a GradConfig")
    x, dy = np.asarray(x, dtype=np.float64), np.asarray(dy, dtype=np.float64)
    if x.ndim != 2 or dy.shape != x.shape:
        raise ValueError(f"x {x.shape} and dy {dy.shape}: allowed two (channels, n) arrays of one shape")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(dy))):
        raise ValueError("x or dy holds NaN or Inf: allowed finite numbers")
    gamma = np.asarray(gamma, dtype=np.float64)
    gamma = gamma if gamma.ndim == 2 else gamma.reshape(-1)
    if gamma.shape not in ((x.shape[0],), x.shape) or not np.all(np.isfinite(gamma)):
        raise ValueError(f"gamma has shape {gamma.shape}: allowed finite numbers, one per channel ({x.shape[0]},) or one "
                         f"per value {x.shape}")
    if isinstance(in_scale, bool) or not isinstance(in_scale, numbers.Real) or not in_scale > 0:
        raise ValueError(f"in_scale={in_scale!r} is out of range: allowed a finite number > 0 (one input LSB)")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MASK32):
        raise ValueError(f"seed={seed!r} is out of range: allowed None or an integer in [0, 2**32)")
    return x, dy, gamma


def stochastic_seeds(gcfg: GradConfig, seed, channels: int):
    """(dy's, dx's) per-channel LFSR seeds from one call seed: channel_seeds(seed) and channel_seeds(seed ^ 0xFFFFFFFF);
    (None, None) for half-up rounding."""
    if gcfg.rounding != "stochastic":
        return None, None
    seed = 0 if seed is None else int(seed)
    return channel_seeds(seed, channels), channel_seeds(seed ^ MASK32, channels)


def fixed_point_backward(cfg: NormConfig, gcfg: GradConfig, x, dy, gamma, in_scale: float, seed=None) -> BackwardResult:
    """The golden backward on float tensors (see the module's docstring)."""
    x, dy, gamma = check_backward_args(cfg, gcfg, x, dy, gamma, in_scale, seed)
    cfg = cfg.core if cfg.elementwise else cfg                       # an elementwise build: the same x_hat, Den
    xq, _ = quantize(x / in_scale * cfg.in_fmt.lsb, cfg.in_fmt)      # the forward's codes, bit for bit
    g_code, _ = quantize(gamma, cfg.gamma_fmt)
    top = float(np.abs(dy).max())
    if top == 0.0:                                                   # no gradient: every output is 0, exactly
        zeros = np.zeros(gamma.shape)
        return BackwardResult(dx=np.zeros_like(x), dgamma=zeros, dbeta=zeros.copy(), values=x.size)
    grad_scale = top / gcfg.grad_fmt.max_int                         # one dy LSB, real units
    dy_seeds, dx_seeds = stochastic_seeds(gcfg, seed, x.shape[0])
    g, sat_dy = quantize_grad(gcfg, dy / grad_scale, dy_seeds)
    r = golden_backward(cfg, gcfg, xq, g, g_code, seed=dx_seeds)
    unit_g = grad_scale * 2.0 ** gcfg.grad_fmt.frac                  # real value of 1.0 in grad_fmt
    unit_x = in_scale * 2.0 ** cfg.in_fmt.frac
    dx = r.dx * gcfg.dx_fmt.lsb * unit_g / unit_x
    per = np.asarray(r.dgamma).astype(np.float64), np.asarray(r.dbeta).astype(np.float64)   # (C,) or (C, n)
    return BackwardResult(dx=dx, dgamma=per[0] * gcfg.grad_fmt.lsb * unit_g, dbeta=per[1] * gcfg.grad_fmt.lsb * unit_g,
                          saturated_dy=sat_dy, saturated_dx=int(r.sat.sum()), values=x.size)


def float_backward(cfg: NormConfig, gcfg: GradConfig, x, dy, gamma, in_scale: float = 1.0, seed=None) -> BackwardResult:
    """The float formulas, unquantized (gcfg's formats unused)."""
    x, dy, gamma = check_backward_args(cfg, gcfg, x, dy, gamma, in_scale, seed)
    dx, dgamma, dbeta = norm_backward(x, dy, gamma, cfg.kind, chunks=cfg.chunks, k=cfg.k, eps=cfg.eps, alpha=cfg.alpha)
    return BackwardResult(dx=dx, dgamma=dgamma, dbeta=dbeta, values=x.size)
