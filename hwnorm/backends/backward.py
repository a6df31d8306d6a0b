"""The backward behind Backend.backward: a layer's dL/dy (C, n) in float, dL/dx, dL/dgamma, dL/dbeta out in float.

golden maps x to codes as the forward did (one LSB = in_scale) and dy to grad_fmt codes scaled per call (one LSB =
max|dy| / grad_fmt.max_int), runs hwnorm.golden.backward and maps dx (dx_fmt), dgamma and dbeta back; float runs the
float formulas (hwnorm.golden.backward_ref) unquantized; rtl maps the same way and runs the codes through the Verilated
backward datapath instead of the golden model (`core=`; hwnorm/backends/rtl_backward.py), for what that hardware has.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ..config import DROPOUT_BITS, GradConfig, NormConfig
from ..constants import MASK32, channel_seeds, inference_params
from ..fixed import quantize
from ..golden.backward import backward as golden_backward, infer_backward, quantize_grad, tlu_keep
from ..golden.backward_ref import frn_backward, norm_backward
from ..golden.dropout import check_seeds, keep_mask

@dataclass
class BackwardResult:
    dx: np.ndarray              # (C, n) float64, real units
    dgamma: np.ndarray          # (C,) float64; (C, n) for gamma per value
    dbeta: np.ndarray           # (C,) float64; (C, n) for gamma per value
    saturated_dy: int = 0       # dy codes clipped by the quantization to grad_fmt
    saturated_dx: int = 0       # dx codes clamped to dx_fmt
    values: int = 0
    dtau: np.ndarray | None = None   # an FRN kind's TLU threshold gradient (C,), None without a TLU


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


def _check_frn(cfg, beta, tau, channels: int):
    """beta and tau (C,) of an FRN kind's TLU (tau None: no TLU); refused for the other kinds."""
    if not cfg.frn:
        if beta is not None or tau is not None:
            raise ValueError(f"beta= and tau= apply to the FRN kinds' TLU only: leave them unset for kind={cfg.kind!r}")
        return None, None
    if tau is None:
        return None, None
    out = []
    for nm, v in (("beta", beta), ("tau", tau)):
        a = np.asarray(0.0 if v is None else v, dtype=np.float64).reshape(-1)
        a = np.broadcast_to(a, (channels,)) if a.size == 1 else a
        if a.shape != (channels,) or not np.all(np.isfinite(a)):
            raise ValueError(f"{nm} has shape {a.shape}: allowed finite numbers, one per channel ({channels},)")
        out.append(a)
    return out[0], out[1]


def running_stats(mean, sigma, channels: int):
    """(mean, sigma) of an inference-mode backward as float arrays (C,), sigma > 0; (None, None) when both are None."""
    if mean is None and sigma is None:
        return None, None
    try:
        m, sg = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (mean, sigma))
    except (TypeError, ValueError) as e:
        raise ValueError("mean= and sigma= must both be given: one finite number per channel, sigma > 0") from e
    if m.shape != (channels,) or sg.shape != (channels,) or not (np.all(np.isfinite(m)) and np.all(sg > 0)):
        raise ValueError(f"mean {m.shape} and sigma {sg.shape}: allowed one finite number per channel ({channels},) each, "
                         f"sigma > 0")
    return m, sg


def fixed_point_backward(cfg: NormConfig, gcfg: GradConfig, x, dy, gamma, in_scale: float, seed=None, beta=None,
                         tau=None, eps=None, dropout_seed=None, mean=None, sigma=None, core=None) -> BackwardResult:
    """The golden backward on float tensors (see the module's docstring). An FRN kind: `eps` its descriptor eps in input
    units; with tau (C,) its TLU: dy passes where the forward's y >= tau (tlu_keep, y from gamma and beta), the rest
    sums into dtau. A dropout build: dropout_seed, the forward's per-channel seeds (its mask and scale). mean, sigma
    (C,): the running statistics of an inference-mode forward (their descriptors as the forward made them; infer_backward).
    `core`: what runs the training backward on the codes, called as hwnorm.golden.backward.backward(cfg, gcfg, x, g,
    gamma, seed=, eps=, dropout_seed=) is (None: that golden function; the rtl backend: its Verilated datapath)."""
    x, dy, gamma = check_backward_args(cfg, gcfg, x, dy, gamma, in_scale, seed)
    mean, sigma = running_stats(mean, sigma, x.shape[0])
    beta, tau = _check_frn(cfg, beta, tau, x.shape[0])
    cfg = cfg.core if cfg.elementwise else cfg                       # an elementwise build: the same x_hat, Den
    xq, _ = quantize(x / in_scale * cfg.in_fmt.lsb, cfg.in_fmt)      # the forward's codes, bit for bit
    g_code, _ = quantize(gamma, cfg.gamma_fmt)
    top = float(np.abs(dy).max())
    if top == 0.0:                                                   # no gradient: every output is 0, exactly
        zeros = np.zeros(gamma.shape)
        return BackwardResult(dx=np.zeros_like(x), dgamma=zeros, dbeta=zeros.copy(), values=x.size,
                              dtau=None if tau is None else np.zeros(x.shape[0]))
    grad_scale = top / gcfg.grad_fmt.max_int                         # one dy LSB, real units
    dy_seeds, dx_seeds = stochastic_seeds(gcfg, seed, x.shape[0])
    g, sat_dy = quantize_grad(gcfg, dy / grad_scale, dy_seeds)
    unit_g = grad_scale * 2.0 ** gcfg.grad_fmt.frac                  # real value of 1.0 in grad_fmt
    dtau = None
    if tau is not None:                                              # the TLU: dy to y where y >= tau, else to tau
        keep = tlu_keep(cfg, xq, g_code, quantize(beta, cfg.beta_fmt)[0], quantize(tau, cfg.out_fmt)[0], eps)
        dtau = np.where(keep, 0, g).sum(axis=1) * gcfg.grad_fmt.lsb * unit_g
        g = np.where(keep, g, 0)
    if mean is not None:                                             # running statistics: the inference forward's
        unit = in_scale * (1 << cfg.in_fmt.frac)
        p = [inference_params(cfg, float(mu) / unit, unit / float(sg)) for mu, sg in zip(mean, sigma)]
        r = infer_backward(cfg, gcfg, xq, g, g_code, *([q[k] for q in p] for k in ("mean", "scale_m", "scale_exp")),
                           seed=dx_seeds)
    else:
        r = (core or golden_backward)(cfg, gcfg, xq, g, g_code, seed=dx_seeds, eps=eps, dropout_seed=dropout_seed)
    unit_x = in_scale * 2.0 ** cfg.in_fmt.frac
    dx = r.dx * gcfg.dx_fmt.lsb * unit_g / unit_x
    per = np.asarray(r.dgamma).astype(np.float64), np.asarray(r.dbeta).astype(np.float64)   # (C,) or (C, n)
    return BackwardResult(dx=dx, dgamma=per[0] * gcfg.grad_fmt.lsb * unit_g, dbeta=per[1] * gcfg.grad_fmt.lsb * unit_g,
                          saturated_dy=sat_dy, saturated_dx=int(r.sat.sum()), values=x.size, dtau=dtau)


def float_backward(cfg: NormConfig, gcfg: GradConfig, x, dy, gamma, in_scale: float = 1.0, seed=None, beta=None,
                   tau=None, dropout_seed=None, mean=None, sigma=None) -> BackwardResult:
    """The float formulas, unquantized (gcfg's formats unused); an FRN kind with its TLU (beta, tau), its eps real; a
    dropout build through the hardware's mask, scaled by 1 / keep probability exactly, as the float forward."""
    x, dy, gamma = check_backward_args(cfg, gcfg, x, dy, gamma, in_scale, seed)
    beta, tau = _check_frn(cfg, beta, tau, x.shape[0])
    mean, sigma = running_stats(mean, sigma, x.shape[0])
    if mean is not None:                         # running statistics: constants, dx = gamma dy / sigma
        gam = gamma if gamma.ndim == 2 else gamma.reshape(-1, 1)
        x_hat = (x - mean[:, None]) / sigma[:, None]
        per = (dy * x_hat, dy) if gamma.ndim == 2 else ((dy * x_hat).sum(axis=1), dy.sum(axis=1))
        return BackwardResult(dx=gam * dy / sigma[:, None], dgamma=per[0], dbeta=per[1], values=x.size)
    if cfg.dropout_active:
        keep = keep_mask(cfg, check_seeds(dropout_seed, x.shape[0]), x.shape[1])
        dy = np.where(keep, dy / (1.0 - cfg.dropout_threshold / 2.0 ** DROPOUT_BITS), 0.0)
    if cfg.frn:
        dx, dgamma, dbeta, dtau = frn_backward(x, dy, gamma, beta, tau, cfg.kind, chunks=cfg.chunks, eps=cfg.eps)
        return BackwardResult(dx=dx, dgamma=dgamma, dbeta=dbeta, values=x.size, dtau=dtau)
    dx, dgamma, dbeta = norm_backward(x, dy, gamma, cfg.kind, chunks=cfg.chunks, k=cfg.k, eps=cfg.eps, alpha=cfg.alpha)
    return BackwardResult(dx=dx, dgamma=dgamma, dbeta=dbeta, values=x.size)
