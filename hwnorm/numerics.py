"""Measuring the bit-exact models against the float references: the error table of docs/numerics.md."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .config import DROPOUT_BITS, GradConfig, NormConfig
from .constants import channel_params, chunk_sizes, inference_params
from .fixed import round_mode
from .golden import deviation_den, infer, infer_out_lsb, train, train_out_lsb
from .golden.backward import backward
from .golden.backward_ref import norm_backward
from .golden.dropout import check_seeds, keep_mask


@dataclass
class ErrorStats:
    """Errors in output LSBs over every value of every case."""

    values: int
    max_err: float          # max |y_hw - clip(round(y_ref))| (integers, after rounding and saturation)
    mean_err: float
    max_unrounded: float    # max |unrounded_hw - y_ref| where the reference is inside the output range
    saturated: int
    beyond_hat: int = 0     # elementwise builds: values left out, their float x_hat beyond hat_format (clamped, in sat)


def train_cases(cfg: NormConfig, rng: np.random.Generator, trials: int = 4):
    """Random and adversarial (x, gamma, beta) cases: several counts, narrow ranges, extremes, limits."""
    fi, fg, fb = cfg.in_fmt, cfg.gamma_fmt, cfg.beta_fmt
    counts = sorted({c for c in (1, 2, 3, 10, 11, 13, 64, 100, cfg.max_count) if c <= cfg.max_count})
    for n in counts:
        for _ in range(trials):
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


def infer_cases(cfg: NormConfig, rng: np.random.Generator, trials: int = 4):
    """(x, gamma, beta, mean, scale_m, scale_exp) with running statistics from random float data."""
    fi, fg, fb = cfg.in_fmt, cfg.gamma_fmt, cfg.beta_fmt
    span = (fi.max_int - fi.min_int) * fi.lsb
    for _ in range(trials):
        ch, n = 8, min(64, cfg.max_count)
        x = rng.integers(fi.min_int, fi.max_int + 1, size=(ch, n))
        g = rng.integers(fg.min_int, fg.max_int + 1, size=ch)
        b = rng.integers(fb.min_int, fb.max_int + 1, size=ch)
        means = rng.uniform(fi.min_int * fi.lsb, fi.max_int * fi.lsb, size=ch)
        scales = np.exp2(rng.uniform(-2, 4, size=ch)) / span
        p = [inference_params(cfg, float(m), float(s)) for m, s in zip(means, scales)]
        yield x, g, b, [q["mean"] for q in p], [q["scale_m"] for q in p], [q["scale_exp"] for q in p]


def tlu_cases(cfg: NormConfig, rng: np.random.Generator, channels: int):
    """FRN kinds: TLU thresholds per channel, a quarter at the output minimum (off), the rest random codes; None
    for the other kinds. A separate generator, so the other kinds' cases are as before."""
    if not cfg.frn:
        return None
    fo = cfg.out_fmt
    return np.where(rng.random(channels) < 0.25, fo.min_int,
                    rng.integers(fo.min_int, fo.max_int + 1, size=channels)).astype(np.int64)


def eps_cases(cfg: NormConfig, rng: np.random.Generator):
    """FRN kinds: the descriptor's eps for a case (input format's units), as the hook sends eps / unit^p: a quarter
    the configuration's eps (unit = 1), the rest log-uniform over the field's range (NormConfig.frn_eps_range);
    None for the other kinds. A generator of its own, so the other cases are as before."""
    if not cfg.frn:
        return None
    lo, hi = cfg.frn_eps_range
    return cfg.eps if rng.random() < 0.25 else float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def per_value_affine(cfg: NormConfig, rng: np.random.Generator, shape, g, b):
    """An elementwise build's per-value gamma/beta codes for a case with per-channel (g, b): each value takes its
    channel's code or, with probability 1/2 each, a random code of the whole format."""
    fg, fb = cfg.gamma_fmt, cfg.beta_fmt
    ge = np.where(rng.random(shape) < 0.5, np.asarray(g)[:, None], rng.integers(fg.min_int, fg.max_int + 1, size=shape))
    be = np.where(rng.random(shape) < 0.5, np.asarray(b)[:, None], rng.integers(fb.min_int, fb.max_int + 1, size=shape))
    return ge.astype(np.int64), be.astype(np.int64)


def _elementwise_ref(cfg: NormConfig, xhat, ge, be):
    """The float reference of an elementwise build in output LSBs: gamma_e x_hat + beta_e, x_hat the float
    normalization (gamma = 1, beta = 0) in output LSBs, gamma_e / beta_e the codes' real values."""
    return ge * cfg.gamma_fmt.lsb * xhat + be * cfg.beta_fmt.lsb * (1 << cfg.out_fmt.frac)


def _identity(cfg: NormConfig, channels: int):
    """gamma = 1.0 and beta = 0 codes per channel (the float x_hat of an elementwise build's reference)."""
    return np.full(channels, 1 << cfg.gamma_fmt.frac), np.zeros(channels, dtype=np.int64)


def measure_elementwise(cfg: NormConfig, seed: int = 0, trials: int = 4, inference: bool = False) -> ErrorStats:
    """An elementwise build against float: y = round(gamma_e x_hat + beta_e) with x_hat the float normalization,
    gamma_e / beta_e per value (docs/numerics.md "Per-element affine"); training or inference cases."""
    rng, aff_rng = np.random.default_rng(seed), np.random.default_rng(seed + 2)
    plain = replace(cfg, elementwise=False)
    acc = _new()
    for case in (infer_cases(cfg, rng, trials) if inference else train_cases(cfg, rng, trials)):
        x, g, b = case[:3]
        ge, be = per_value_affine(cfg, aff_rng, x.shape, g, b)
        one, zero = _identity(cfg, x.shape[0])
        if inference:
            xhat, res = infer_out_lsb(plain, x, one, zero, *case[3:]), infer(cfg, x, ge, be, *case[3:])
        else:
            xhat, res = train_out_lsb(plain, x, one, zero), train(cfg, x, ge, be)
        fits = np.abs(xhat) < (cfg.norm_out_fmt.max_int + 1) * 2.0 ** (cfg.out_fmt.frac - cfg.norm_out_fmt.frac)
        _accumulate(acc, cfg, res, _elementwise_ref(cfg, xhat, ge, be), use=fits)
    return _stats(acc)


def _accumulate(acc, cfg, res, ref, tau=None, use=None):
    """Add a case's errors; `use` (bool, x's shape): only those values (the others counted as beyond_hat)."""
    lo, hi = cfg.out_fmt.min_int, cfg.out_fmt.max_int
    want = np.clip(round_mode(ref, cfg.rounding), lo, hi)
    if tau is not None:             # TLU after rounding and saturation: max(round(y), tau) = round(max(y, tau))
        want = np.maximum(want, np.asarray(tau)[:, None])
    err = np.abs(res.y - want)
    inside = (ref >= lo) & (ref <= hi)
    if use is not None:
        acc["beyond"] += int(np.count_nonzero(~use))
        err, inside = err[use], inside & use
    if inside.any():
        acc["max_unr"] = max(acc["max_unr"], float(np.abs(res.unrounded - ref)[inside].max()))
    acc["values"] += err.size
    acc["total"] += float(err.sum())
    acc["max_err"] = max(acc["max_err"], float(err.max()) if err.size else 0.0)
    acc["sat"] += int(res.stats.sat.sum())


def _stats(acc) -> ErrorStats:
    return ErrorStats(values=acc["values"], max_err=acc["max_err"], mean_err=acc["total"] / max(1, acc["values"]),
                      max_unrounded=acc["max_unr"], saturated=acc["sat"], beyond_hat=acc["beyond"])


def _new():
    return dict(values=0, total=0.0, max_err=0.0, max_unr=0.0, sat=0, beyond=0)


def measure(cfg: NormConfig, seed: int = 0, trials: int = 4) -> ErrorStats:
    """Training mode: bit-exact model against the float reference (a dropout build: random seeds per case, the
    reference with the same mask, kept values scaled by 1 / keep probability in float; FRN kinds: random TLU
    thresholds and descriptor eps over the field's range, `eps_cases`; an elementwise build: per-value gamma/beta,
    `measure_elementwise`)."""
    if cfg.elementwise:
        return measure_elementwise(cfg, seed, trials)
    rng, tau_rng, eps_rng = (np.random.default_rng(seed + i) for i in range(3))
    acc = _new()
    for x, g, b in train_cases(cfg, rng, trials):
        eps = eps_cases(cfg, eps_rng)
        ref = train_out_lsb(cfg, x, g, b, eps=eps)
        if cfg.dropout_active:
            seeds = [int(v) for v in rng.integers(0, 1 << 32, size=x.shape[0])]
            keep = keep_mask(cfg, seeds, x.shape[1])
            ref = np.where(keep, ref / (1.0 - cfg.dropout_threshold / 2.0 ** DROPOUT_BITS), 0.0)
            _accumulate(acc, cfg, train(cfg, x, g, b, seed=seeds), ref)
        else:
            tau = tlu_cases(cfg, tau_rng, x.shape[0])
            _accumulate(acc, cfg, train(cfg, x, g, b, tau=tau, eps=eps), ref, tau)
    return _stats(acc)


def measure_infer(cfg: NormConfig, seed: int = 0, trials: int = 4) -> ErrorStats:
    """Inference mode: bit-exact model against the float reference on the same mean/scale codes."""
    if cfg.elementwise:
        return measure_elementwise(cfg, seed, trials, inference=True)
    rng, tau_rng = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    acc = _new()
    for case in infer_cases(cfg, rng, trials):
        tau = tlu_cases(cfg, tau_rng, case[0].shape[0])
        _accumulate(acc, cfg, infer(cfg, *case, tau=tau), infer_out_lsb(cfg, *case), tau)
    return _stats(acc)


# -- the backward (docs/numerics.md "Backward") ------------------------------------------------------------------


def _backward_float(cfg: NormConfig, gcfg: GradConfig, x, g, gamma, hardware: bool, eps=None, dropout_seed=None):
    """norm_backward on the codes' real values -> (dx in dx LSBs, dgamma in grad LSBs); hardware=True: with the
    forward's sigma (Den) and its rounded constants, else the float module's own (eps, exact constants). `eps`: an FRN
    kind's descriptor eps in input units (None: cfg.eps). A dropout build: g through the mask of `dropout_seed`, times
    the hardware's scale S / 2**F (hardware=True) or 1 / keep probability."""
    n, fi, cf = x.shape[1], cfg.in_fmt.frac, cfg.const_frac_bits
    g = np.asarray(g, dtype=np.float64)
    if cfg.dropout_active:
        keep = keep_mask(cfg, check_seeds(dropout_seed, x.shape[0]), n)
        scale = (cfg.dropout_scale / 2.0 ** cfg.dropout_scale_frac if hardware
                 else 1.0 / (1.0 - cfg.dropout_threshold / 2.0 ** DROPOUT_BITS))
        g = np.where(keep, g * scale, 0.0)
    sigma = const = None
    if hardware:
        hp = channel_params(cfg, n, eps=eps)
        den = deviation_den(cfg, x, np.asarray(x).sum(axis=1), hp)
        sigma = np.array([int(v) for v in den], dtype=np.float64) / n / 2.0 ** (cf + fi)
        if cfg.stat_kind == "range":
            const = np.array([hp["c_full"]] * (len(chunk_sizes(n, cfg.chunks)) - 1) + [hp["c_last"]]) / 2.0 ** cf
        elif cfg.stat_kind not in ("l2", "semidev"):
            const = np.full(x.shape[0], hp["c"] / 2.0 ** cf)
    dx, dgamma, _ = norm_backward(np.asarray(x) * 2.0 ** -fi, np.asarray(g) * gcfg.grad_fmt.lsb,
                                  np.asarray(gamma) * cfg.gamma_fmt.lsb, cfg.kind, chunks=cfg.chunks, k=cfg.k,
                                  eps=cfg.eps if eps is None else eps, alpha=cfg.alpha, sigma=sigma, const=const)
    return dx * 2.0 ** gcfg.dx_fmt.frac, dgamma * 2.0 ** gcfg.grad_fmt.frac


def backward_reference_lsb(cfg: NormConfig, gcfg: GradConfig, x, g, gamma, eps=None, dropout_seed=None):
    """The float gradient of the forward the hardware computed (its sigma, its rounded constants, its dropout mask and
    scale) on the codes: (dx in dx LSBs, dgamma in grad LSBs), unrounded and unsaturated; `eps` an FRN kind's
    descriptor eps, `dropout_seed` a dropout build's forward seeds."""
    return _backward_float(cfg, gcfg, x, g, gamma, hardware=True, eps=eps, dropout_seed=dropout_seed)


@dataclass
class BackwardErrors:
    """dx errors in dx LSBs over every value of every case, against the float gradient of the hardware's forward
    (`max_err`, `off_by_one`: after rounding; `max_unrounded`: before) and against the float module's gradient
    (`max_float`, after rounding, where that is inside dx_fmt: adds the forward's rounded constants and eps)."""

    values: int
    max_err: float
    off_by_one: int
    max_unrounded: float
    max_float: float
    saturated: int
    exact_max_err: float = 0.0          # the lean form (gcfg.mantissa_bits): max |dx - dx of the exact golden|
    exact_differ: int = 0               # how many dx differ from the exact golden's
    exact_max_unrounded: float = 0.0    # max |unrounded - exact golden's unrounded| where the latter is within dx_fmt +- 1


def measure_backward(cfg: NormConfig, gcfg: GradConfig | None = None, seed: int = 0, trials: int = 2) -> BackwardErrors:
    """The golden backward against the float references on train_cases' x and gamma, dy uniform over grad_fmt and
    over an eighth of it (rounding half up: the stochastic draws are checked in tests/test_backward.py). A lean gcfg
    (mantissa_bits set) is also measured against the exact golden (mantissa_bits=None) on the same cases."""
    gcfg = gcfg or GradConfig.for_width({"in_fmt": cfg.in_fmt, "out_fmt": cfg.out_fmt})
    rng = np.random.default_rng(seed)
    out = dict(values=0, max_err=0.0, off=0, unr=0.0, flt=0.0, sat=0, ex=0.0, exd=0, exu=0.0)
    lo, hi = gcfg.dx_fmt.min_int, gcfg.dx_fmt.max_int
    for i, (x, gamma, _) in enumerate(train_cases(cfg, rng, trials)):
        top = gcfg.grad_fmt.max_int >> (3 * (i % 2))
        g = rng.integers(-top, top + 1, size=x.shape)
        r = backward(cfg, gcfg, x, g, gamma, unrounded=True)
        ref = backward_reference_lsb(cfg, gcfg, x, g, gamma)[0]
        inside = (ref >= lo) & (ref <= hi)
        err = np.abs(r.dx - np.clip(np.floor(ref + 0.5), lo, hi))
        out["values"] += x.size
        out["max_err"] = max(out["max_err"], float(err.max()))
        out["off"] += int(np.count_nonzero(err))
        out["sat"] += int(r.sat.sum())
        if gcfg.lean:
            r0 = backward(cfg, replace(gcfg, mantissa_bits=None), x, g, gamma, unrounded=True)
            diff = np.abs(r.dx - r0.dx)
            out["ex"], out["exd"] = max(out["ex"], float(diff.max())), out["exd"] + int(np.count_nonzero(diff))
            near = (r0.unrounded >= lo - 1) & (r0.unrounded <= hi + 1)
            if near.any():
                out["exu"] = max(out["exu"], float(np.abs(r.unrounded - r0.unrounded)[near].max()))
        if inside.any():
            out["unr"] = max(out["unr"], float(np.abs(r.unrounded - ref)[inside].max()))
            flt = _backward_float(cfg, gcfg, x, g, gamma, hardware=False)[0]
            use = inside & (flt >= lo) & (flt <= hi)
            if use.any():
                out["flt"] = max(out["flt"], float(np.abs(r.dx - np.floor(flt + 0.5))[use].max()))
    return BackwardErrors(values=out["values"], max_err=out["max_err"], off_by_one=out["off"], max_unrounded=out["unr"],
                          max_float=out["flt"], saturated=out["sat"], exact_max_err=out["ex"], exact_differ=out["exd"],
                          exact_max_unrounded=out["exu"])
