"""Float64 backward of the training-mode normalizations: dx, dgamma, dbeta from dL/dy, formula by formula.

With y = gamma * x_hat + beta, x_hat = (x - mu) * s, s = 1 / sigma_hat, h = gamma * dL/dy, per channel of n values:
    dx_i = s * (h_i - mean(h) - P * q_i),   P = sum_j h_j x_hat_j,   q_i = d sigma_hat / d x_i,
and q is what sets the kinds apart (`dsigma`). A selection (max / min, top-k, the cvar tail) passes its gradient to
one index per selected slot: at a tie the lowest index wins, as the float modules (hwnorm.torch.nn) choose it.
An FRN kind has no mean: x_hat = x s and dx = s (h - P q), q its deviation's about 0; `frn_backward` adds the TLU
z = max(y, tau), whose gradient goes to y where y >= tau and to tau elsewhere.
"""
from __future__ import annotations

import numpy as np

from ..config import FRN_KINDS
from ..constants import L1_CONST, MAD_CONST, c_inf, c_range, chunk_sizes, cvar_count, topk_eff
from .reference import _as_2d, sigma_hat

BN_BACKWARD_KINDS = ("range", "l1", "mad", "linf", "topk", "cvar", "l2", "semidev")
BACKWARD_KINDS = BN_BACKWARD_KINDS + tuple(FRN_KINDS)
SIGN_KINDS = ("l1", "mad", "linf", "topk", "cvar")      # q = (c/m) (t - mean(t)), t a signed selection


def check_kind(kind: str) -> str:
    if kind not in BACKWARD_KINDS:
        raise ValueError(f"kind={kind!r} has no backward: allowed {', '.join(BACKWARD_KINDS)}")
    return kind


def top_first(v: np.ndarray, m: int) -> np.ndarray:
    """Mask of the m largest entries of each row of v, a tie going to the lowest index (a stable sort)."""
    order = np.argsort(-v, axis=1, kind="stable")[:, :m]
    mask = np.zeros(v.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


def extremes(x: np.ndarray, chunks: int):
    """(chunk index, is_argmax, is_argmin) per value: chunks as torch.chunk, each chunk's first max and first min."""
    c, n = x.shape
    idx, amax, amin = np.zeros(n, dtype=np.int64), np.zeros(x.shape, dtype=bool), np.zeros(x.shape, dtype=bool)
    rows = np.arange(c)
    start = 0
    for j, m in enumerate(chunk_sizes(n, chunks)):
        part = x[:, start:start + m]
        amax[rows, start + part.argmax(axis=1)] = True          # argmax / argmin: the first occurrence
        amin[rows, start + part.argmin(axis=1)] = True
        idx[start:start + m] = j
        start += m
    return idx, amax, amin


def selection(x: np.ndarray, kind: str, k: int = 10, alpha: float | None = None):
    """(t, m) of a sign kind: t the signed selection (sgn(x - mu) on the selected values, 0 elsewhere) and m the number
    of values sigma_hat averages; l1 / mad: every value; linf / topk: the min(k, n) largest |x - mu|; cvar: the
    cvar_count largest x, t = 1 on them."""
    n = x.shape[1]
    d = x - x.mean(axis=1, keepdims=True)
    if kind in ("l1", "mad"):
        return np.sign(d), n
    if kind == "cvar":
        m = cvar_count(n, alpha)
        return top_first(x, m).astype(np.float64), m
    m = topk_eff(n, 1 if kind == "linf" else k)
    return np.sign(d) * top_first(np.abs(d), m), m


def sign_const(kind: str, n: int, k: int = 10) -> float:
    """The constant c of a sign kind's sigma_hat = (c / m) * sum_selected(...) + eps (m the values averaged)."""
    return {"l1": L1_CONST, "mad": MAD_CONST, "cvar": 1.0}.get(kind, c_inf(n))


def dsigma(x, kind: str, *, chunks: int = 10, k: int = 10, alpha: float | None = None, sigma=None, const=None) -> np.ndarray:
    """q = d sigma_hat / d x per value (C, n). `sigma` (C,) for l2 / semidev and `const` override the float constants
    (a sign kind's c / m per channel; range's per-chunk C(m_j) / K as a (C, chunks) or (chunks,) array): the gradient of
    the sigma_hat the hardware computes with its rounded constants."""
    x = _as_2d("x", x)
    check_kind(kind)
    n = x.shape[1]
    if kind in FRN_KINDS:
        return _frn_dsigma(x, kind, chunks, sigma, const)
    if kind == "range":
        idx, amax, amin = extremes(x, chunks)
        sizes = chunk_sizes(n, chunks)
        cj = np.broadcast_to(np.asarray([c_range(m) / len(sizes) for m in sizes] if const is None else const,
                                        dtype=np.float64), (x.shape[0], len(sizes)))
        return cj[:, idx] * (amax.astype(np.float64) - amin)
    d = x - x.mean(axis=1, keepdims=True)
    sg = sigma_hat(x, kind, chunks=chunks, k=k, alpha=alpha) if sigma is None else np.asarray(sigma, dtype=np.float64)
    if kind == "l2":                     # sigma = sqrt(mean(d^2) + eps): q = x_hat / n
        return d / sg.reshape(-1, 1) / n
    if kind == "semidev":                # sigma = sqrt(mean(min(d, 0)^2) + eps): q = (w - mean(w)) / n, w = min(x_hat, 0)
        w = np.minimum(d, 0.0) / sg.reshape(-1, 1)
        return (w - w.mean(axis=1, keepdims=True)) / n
    t, m = selection(x, kind, k, alpha)
    c = sign_const(kind, n, k) / m if const is None else np.asarray(const, dtype=np.float64).reshape(-1, 1)
    return c * (t - t.mean(axis=1, keepdims=True))


def _frn_dsigma(x, kind: str, chunks: int, sigma, const) -> np.ndarray:
    """q of an FRN kind, its deviation about 0: frn x_hat / n; frn_l1 (c/n) sgn(x); frn_linf C_inf(n) sgn(x) at the
    first largest |x|; frn_range as range. `const` overrides c / n, C_inf(n) or range's C(m_j)/K."""
    n = x.shape[1]
    base = FRN_KINDS[kind]
    if base == "range":
        return dsigma(x, "range", chunks=chunks, const=const)
    if base == "l2":
        sg = sigma_hat(x, kind) if sigma is None else np.asarray(sigma, dtype=np.float64)
        return x / sg.reshape(-1, 1) / n
    t = np.sign(x) if base == "l1" else np.sign(x) * top_first(np.abs(x), 1)
    c = (L1_CONST / n if base == "l1" else c_inf(n)) if const is None else np.asarray(const, np.float64).reshape(-1, 1)
    return c * t


def frn_backward(x, g, gamma, beta, tau, kind: str = "frn", *, chunks: int = 10, eps: float = 1e-6, sigma=None,
                 const=None):
    """(dx, dgamma, dbeta, dtau) of an FRN kind with its TLU z = max(y, tau) for dL/dz = g (C, n): the gradient goes to
    y where y >= tau (a tie to y), to tau elsewhere; tau None: no TLU (dtau None)."""
    x, g = _as_2d("x", x), _as_2d("g", g)
    if kind not in FRN_KINDS:
        raise ValueError(f"kind={kind!r} is not an FRN kind: allowed {', '.join(FRN_KINDS)}")
    dtau = None
    if tau is not None:
        sg = sigma_hat(x, kind, chunks=chunks, eps=eps) if sigma is None else np.asarray(sigma, np.float64)
        col = lambda v: np.asarray(v, dtype=np.float64).reshape(-1, 1)      # noqa: E731
        keep = col(gamma) * x / sg.reshape(-1, 1) + col(beta) >= col(tau)
        dtau, g = np.where(keep, 0.0, g).sum(axis=1), np.where(keep, g, 0.0)
    return (*norm_backward(x, g, gamma, kind, chunks=chunks, eps=eps, sigma=sigma, const=const), dtau)


def norm_backward(x, g, gamma, kind: str = "range", *, chunks: int = 10, k: int = 10, eps: float = 1e-7,
                  alpha: float | None = None, sigma=None, const=None):
    """(dx, dgamma, dbeta) of the training-mode normalization for dL/dy = g (C, n); sigma / const as in `dsigma`
    (sigma then also sets s and x_hat; None: the float sigma_hat with `eps`). gamma (C,), or (C, n) per value (a grouped
    layer's per-element affine): then dgamma and dbeta are per value too, g x_hat and g."""
    x, g = _as_2d("x", x), _as_2d("g", g)
    if g.shape != x.shape:
        raise ValueError(f"g has shape {g.shape}: allowed x's shape {x.shape}")
    check_kind(kind)
    sg = sigma_hat(x, kind, chunks=chunks, k=k, eps=eps, alpha=alpha) if sigma is None else np.asarray(sigma, np.float64)
    s = 1.0 / sg.reshape(-1, 1)
    frn = kind in FRN_KINDS                                                  # no centring: no mean, no mean(h)
    x_hat = (x if frn else x - x.mean(axis=1, keepdims=True)) * s
    gamma = np.asarray(gamma, dtype=np.float64)
    h = (gamma if gamma.ndim == 2 else gamma.reshape(-1, 1)) * g           # gamma per channel, or per value
    p = (h * x_hat).sum(axis=1, keepdims=True)
    q = dsigma(x, kind, chunks=chunks, k=k, alpha=alpha, sigma=sg, const=const)
    dx = s * (h - (0.0 if frn else h.mean(axis=1, keepdims=True)) - p * q)
    if gamma.ndim == 2:
        return dx, g * x_hat, g
    return dx, (g * x_hat).sum(axis=1), g.sum(axis=1)
