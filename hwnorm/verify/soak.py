"""Soak: many values through randomly drawn configurations, the Verilated datapath against the golden
model bit for bit (`make soak`, `hwnorm sim --soak N`).

Every configuration is drawn from its own seed (`config_seed`), and so are its data: the line printed
for each configuration ends with the one command that reruns exactly that configuration. Volume goes
through the in-process rtl backend (hwnorm/backends: harness.cpp drives whole channels in C++);
protocol goes through the cocotb testbench (hwnorm/verify/tb.py) with random input gaps, output back-pressure
and resets (`soak_protocol` in hwnorm/verify/cocotb_tests/soak_norm.py), on the first `cocotb_configs` configurations.
Backward configurations too (`draw_backward`: a kind the backward datapath has, random formats, lanes, counts, gradient
formats and rounding; seeds from BWD_SEED_BASE on): the Verilated backward datapath against the golden backward, dx,
dgamma, dbeta and the saturation count bit for bit, on 1/BWD_SHARE of the values.

Only public interfaces are used: NormConfig (fields, `passes`), constants.inference_params, the
`rtl` backend's train_codes/infer_codes and hwnorm.golden.train/infer.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwnorm.cache import BUILD_ROOT
from hwnorm.config import FRN_KINDS, KINDS, LANES, ROUNDING_MODES, FixedFormat, NormConfig
from hwnorm.constants import inference_params

BITS = (4, 12)                    # format widths drawn (inclusive)
MAX_COUNT_CAP = 4096              # largest max_count drawn
BATCH_VALUES = 24_000             # values per batch (one golden call, one rtl call)
DISTRIBUTIONS = ("gauss", "heavy", "constant", "two", "extreme", "uniform", "narrow")


def weight(cfg: NormConfig) -> float:
    """Share of the soak's values a configuration gets: a quarter when max_count < 16, whose channels of a
    few values cost ~100 cycles and a Python round trip each (the others make up the total)."""
    return 0.25 if cfg.max_count < 16 else 1.0


def config_seed(master: int, index: int) -> int:
    """The seed of the index-th configuration of a soak with master seed `master`."""
    return 1000 * master + index


# -- configurations -------------------------------------------------------------------------------

def _fmt(rng, signed: bool | None = None) -> FixedFormat:
    bits = int(rng.integers(BITS[0], BITS[1] + 1))
    if signed is None:
        signed = bool(rng.random() < 0.7)
    return FixedFormat(bits, int(rng.integers(0, bits + 1)), signed)


def _log_int(rng, lo: int, hi: int) -> int:
    """An integer in [lo, hi], log-uniformly."""
    return int(min(hi, max(lo, round(math.exp(rng.uniform(math.log(lo), math.log(hi + 1)) - 0.5)))))


def draw_config(seed: int) -> NormConfig:
    """A random valid configuration: any kind, signed or unsigned 4-12 bit formats, every lanes value,
    chunks, k, rounding, eps, stat_frac_bits, max_count from 1 to 4096; about a quarter dropout builds, a tenth
    elementwise builds (per-value gamma/beta)."""
    rng = np.random.default_rng([seed, 1])
    kind = str(rng.choice([k for k in KINDS if k not in FRN_KINDS]))     # the draws as before the FRN kinds
    kw = dict(kind=kind, in_fmt=_fmt(rng), out_fmt=_fmt(rng), gamma_fmt=_fmt(rng, signed=bool(rng.random() < 0.85)),
              beta_fmt=_fmt(rng), lanes=int(rng.choice(LANES)), rounding=str(rng.choice(ROUNDING_MODES)))
    r = rng.random()
    kw["max_count"] = int(rng.integers(1, 9)) if r < 0.1 else _log_int(rng, 9, MAX_COUNT_CAP)
    if kind == "range":
        kw["chunks"] = int(rng.choice([1, 10, int(rng.integers(2, 65))]))
    if kind == "topk":
        kw["k"] = int(rng.choice([10, int(rng.integers(1, 33))]))
    if kind == "cvar":              # alpha such that the top-k unit holds 1 to 32 values at max_count
        top = kw["max_count"]
        kw["alpha"] = float(1 - int(rng.integers(1, 33)) / top) if top > 32 else float(rng.uniform(0.05, 0.95))
    if rng.random() < 0.3:
        kw["eps"] = float(10.0 ** rng.uniform(-8, -2))
    if rng.random() < 0.3:
        kw["stat_frac_bits"] = int(rng.integers(0, 17))
    frn = {base: k for k, base in FRN_KINDS.items()}
    if kind in frn and np.random.default_rng([seed, 4]).random() < 0.35:    # its own stream: the rest unchanged
        kw["kind"] = frn[kind]          # the FRN variant of the drawn centred kind (TLU thresholds: soak_tau)
    extra = np.random.default_rng([seed, 3])     # its own stream: the fields above are as before dropout existed
    if extra.random() < 0.25 and kw.get("kind", kind) not in FRN_KINDS:      # the FRN kinds have no dropout build
        kw["dropout"] = round(float(extra.uniform(0.02, 0.95)), 3)
    cfg = NormConfig(**kw)
    # an elementwise build (per-value gamma/beta), from a stream of its own; not with FRN or dropout (refused), and
    # only where gamma_fmt holds the core's gamma = 1.0
    if np.random.default_rng([seed, 5]).random() < 0.2 and not cfg.frn and not cfg.dropout_active \
            and cfg.gamma_fmt.max_int >= 1 << cfg.gamma_fmt.frac:
        cfg = NormConfig(**kw, elementwise=True)
    return cfg


BWD_SEED_BASE = 1_000_000          # a configuration seed from here on is a backward configuration (draw_backward)
BWD_SHARE = 8                      # the backward configurations soak values / BWD_SHARE between them
BWD_MAX_COUNT = 1024               # largest max_count a backward configuration draws
BWD_BATCH_VALUES = 8_000


def is_backward_seed(seed: int) -> bool:
    return seed >= BWD_SEED_BASE


def draw_backward(seed: int):
    """A random backward configuration (NormConfig, GradConfig) the backward datapath builds: a kind of
    RTL_BACKWARD_KINDS, signed or unsigned 4-12 bit x and gamma formats, signed 4-12 bit dy and dx formats, half-up or
    stochastic rounding, lanes (top-k and cvar 1 or 2: their wider selection takes minutes to elaborate), chunks, k,
    alpha, max_count 1..1024; redrawn (from the same seed's stream) until hwnorm.hdl.backward.check_backward takes it."""
    from hwnorm.backends.rtl_backward import RTL_BACKWARD_KINDS
    from hwnorm.config import GRAD_ROUNDING, GradConfig
    from hwnorm.hdl.backward import check_backward
    rng = np.random.default_rng([seed, 11])
    for _ in range(100):
        kind = str(rng.choice(RTL_BACKWARD_KINDS))
        kw = dict(kind=kind, in_fmt=_fmt(rng), out_fmt=_fmt(rng), gamma_fmt=_fmt(rng, signed=bool(rng.random() < 0.85)),
                  beta_fmt=_fmt(rng), lanes=int(rng.choice((1, 2) if kind in ("topk", "cvar") else LANES)),
                  max_count=_log_int(rng, 1, BWD_MAX_COUNT))
        if kind == "range":
            kw["chunks"] = int(rng.choice([1, 10, int(rng.integers(2, 65))]))
        if kind == "topk":
            kw["k"] = int(rng.choice([10, int(rng.integers(1, 33))]))
        if kind == "cvar":
            top = kw["max_count"]
            kw["alpha"] = float(1 - int(rng.integers(1, 33)) / top) if top > 32 else float(rng.uniform(0.05, 0.95))
        gcfg = GradConfig(grad_fmt=_fmt(rng, signed=True), dx_fmt=_fmt(rng, signed=True),
                          rounding=str(rng.choice(GRAD_ROUNDING)))
        try:
            cfg = NormConfig(**kw)
            check_backward(cfg, gcfg)
        except ValueError:
            continue
        return cfg, gcfg
    raise ValueError(f"seed={seed}: no backward configuration the datapath builds in 100 draws")


# -- stimulus -------------------------------------------------------------------------------------

def special_counts(cfg: NormConfig) -> list[int]:
    """Counts where something changes: 1, 2, around lanes, around chunk boundaries and k, max_count."""
    p, top = cfg.lanes, cfg.max_count
    c = [1, 2, 3, p - 1, p, p + 1, 2 * p - 1, 2 * p + 1, top, top - 1, top - p + 1]
    if cfg.stat_kind == "range" and cfg.chunks > 1:
        k = cfg.chunks
        c += [k - 1, k, k + 1, 2 * k - 1, 2 * k, 2 * k + 1, 3 * k + 1]
        c += [k * m + d for m in (2, 3, 5, p, p + 1, 7) for d in (-1, 0, 1)]
    if cfg.kind == "topk":
        c += [cfg.k - 1, cfg.k, cfg.k + 1, 2 * cfg.k]
    if cfg.kind == "cvar":          # where the number of values averaged steps up
        c += [int(j / (1 - cfg.alpha)) + d for j in (1, 2, cfg.k - 1) for d in (0, 1)]
    return sorted({v for v in c if 1 <= v <= top})


def draw_count(rng, cfg: NormConfig, specials: list[int]) -> int:
    r = rng.random()
    if r < 0.4:
        return int(rng.choice(specials))
    if r < 0.7:
        return int(rng.integers(1, cfg.max_count + 1))
    return _log_int(rng, 1, cfg.max_count)


def draw_data(rng, fmt: FixedFormat, dists: list[str], n: int) -> np.ndarray:
    """One row of n codes per entry of `dists` (each a name of DISTRIBUTIONS)."""
    lo, hi = fmt.min_int, fmt.max_int
    span = hi - lo
    x = np.empty((len(dists), n), dtype=np.int64)
    names = np.asarray(dists)
    for d in sorted(set(dists)):            # a fixed order: the draws must not depend on hash seeds
        rows = np.flatnonzero(names == d)
        c = len(rows)
        centre = rng.integers(lo, hi + 1, size=(c, 1))
        if d == "gauss":
            sd = np.exp(rng.uniform(math.log(0.3), math.log(span / 2 + 1), size=(c, 1)))
            v = np.rint(centre + sd * rng.standard_normal((c, n)))
        elif d == "heavy":
            sd = np.exp(rng.uniform(math.log(0.5), math.log(span / 8 + 1), size=(c, 1)))
            v = np.rint(centre + sd * rng.standard_t(int(rng.integers(1, 4)), size=(c, n)))
        elif d == "constant":
            v = np.repeat(np.where(rng.random((c, 1)) < 0.3, rng.choice([lo, hi], size=(c, 1)), centre), n, axis=1)
        elif d == "two":
            other = rng.integers(lo, hi + 1, size=(c, 1))
            v = np.where(rng.random((c, n)) < rng.uniform(0.02, 0.98, size=(c, 1)), centre, other)
        elif d == "extreme":
            choices = np.array(sorted({lo, hi, lo + 1, hi - 1, 0 if lo <= 0 else lo}))
            v = np.where(rng.random((c, 1)) < 0.5, rng.choice([lo, hi], size=(c, n)), rng.choice(choices, size=(c, n)))
        elif d == "uniform":
            v = rng.integers(lo, hi + 1, size=(c, n))
        else:  # narrow: a few codes around a centre (small deviation, large multipliers)
            v = centre + rng.integers(-int(rng.integers(1, 4)), int(rng.integers(1, 4)) + 1, size=(c, n))
        x[rows] = np.clip(v, lo, hi)
    return x


def draw_affine(rng, fmt: FixedFormat, c: int, unit: bool) -> np.ndarray:
    """gamma (unit=True: around 1.0) or beta codes: full range, small, extremes."""
    lo, hi = fmt.min_int, fmt.max_int
    r = rng.random(c)
    full = rng.integers(lo, hi + 1, size=c)
    one = 1 << fmt.frac
    small = rng.integers(-2 * one if fmt.signed else 0, 2 * one + 1, size=c) if unit else full // 8
    ext = rng.choice(np.array(sorted({lo, hi, 0, min(hi, 1)})), size=c)
    return np.clip(np.where(r < 0.5, small, np.where(r < 0.85, full, ext)), lo, hi).astype(np.int64)


def scale_exponents(cfg: NormConfig) -> list[int]:
    """Exponents e for which inference_params accepts scale = 2**e (a probe of the public interface)."""
    ok = []
    for e in range(-90, 91):
        try:
            inference_params(cfg, 0.0, 2.0 ** e)
            ok.append(e)
        except ValueError:
            pass
    return ok


def draw_inference(rng, cfg: NormConfig, c: int, exps: list[int]):
    """mean, scale_m, scale_exp per channel: means anywhere in the input range, scales log-uniform over
    everything the configuration accepts, a quarter of them around 1/input span."""
    fi = cfg.in_fmt
    span = max(fi.max_int - fi.min_int, 1) * fi.lsb
    out = {"mean": [], "scale_m": [], "scale_exp": []}
    for _ in range(c):
        mean = float(rng.uniform(fi.min_int, fi.max_int)) * fi.lsb
        if rng.random() < 0.25 or not exps:
            scale = float(2.0 ** rng.uniform(-2, 5)) / span
        else:
            scale = float(2.0 ** rng.uniform(exps[0], exps[-1] + 0.999))
        try:
            p = inference_params(cfg, mean, scale)
        except ValueError:
            p = inference_params(cfg, mean, 2.0 ** float(np.clip(round(math.log2(scale)), exps[0], exps[-1])))
        for k in out:
            out[k].append(p[k])
    return {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}


@dataclass
class Batch:
    index: int
    infer: bool
    n: int
    dists: list
    x: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    inference: dict | None = None
    seeds: list | None = None          # a dropout build's training channels: one LFSR seed per channel


def batches(cfg: NormConfig, seed: int, values: int):
    """The soak's batches for one configuration: about `values` values, reproducible from `seed`."""
    rng = np.random.default_rng([seed, 2])
    specials = special_counts(cfg)
    exps = scale_exponents(cfg)
    done, index = 0, 0
    while done < values:
        n = draw_count(rng, cfg, specials)
        c = int(max(1, min(BATCH_VALUES // n, 4096, -(-(values - done) // n))))
        dists = [str(d) for d in rng.choice(DISTRIBUTIONS, size=c)]
        infer = bool(rng.random() < 0.25)
        b = Batch(index=index, infer=infer, n=n, dists=dists, x=draw_data(rng, cfg.in_fmt, dists, n),
                  gamma=draw_affine(rng, cfg.gamma_fmt, c, True), beta=draw_affine(rng, cfg.beta_fmt, c, False),
                  inference=draw_inference(rng, cfg, c, exps) if infer else None)
        if cfg.elementwise:                       # gamma/beta per value, from a stream of their own
            er = np.random.default_rng([seed, 6, index])
            b.gamma = draw_affine(er, cfg.gamma_fmt, c * n, True).reshape(c, n)
            b.beta = draw_affine(er, cfg.beta_fmt, c * n, False).reshape(c, n)
        if cfg.dropout_active and not infer:      # their own stream, so the data above are unchanged
            sr = np.random.default_rng([seed, 4, index])
            b.seeds = [0 if sr.random() < 0.05 else int(v) for v in sr.integers(0, 1 << 32, size=c)]
        yield b
        done += c * n
        index += 1


# -- one configuration through the rtl backend ----------------------------------------------------

@dataclass
class SoakResult:
    seed: int
    config: str
    values: int = 0
    channels: int = 0
    batches: int = 0
    train_values: int = 0
    infer_values: int = 0
    mismatches: int = 0
    reports: list = field(default_factory=list)
    build_s: float = 0.0
    run_s: float = 0.0
    error: str | None = None
    cocotb: dict | None = None


def soak_tau(cfg: NormConfig, b: Batch):
    """FRN kinds: the batch's TLU thresholds (output codes; 30% at the output minimum, i.e. off), from a stream of
    their own (the batch's other draws are as without them); None for the other kinds."""
    if not cfg.frn:
        return None
    r, fo, c = np.random.default_rng([b.index, b.n, 7]), cfg.out_fmt, b.x.shape[0]
    return np.where(r.random(c) < 0.3, fo.min_int, r.integers(fo.min_int, fo.max_int + 1, size=c)).astype(np.int64)


def soak_eps(cfg: NormConfig, b: Batch):
    """FRN kinds: the batch's descriptor eps (input format's units, as the hook sends eps / unit^p): a quarter the
    configuration's eps, the rest log-uniform over the field's range (NormConfig.frn_eps_range), from a stream of
    its own; None for the other kinds."""
    if not cfg.frn:
        return None
    r = np.random.default_rng([b.index, b.n, 8])
    lo, hi = cfg.frn_eps_range
    return cfg.eps if r.random() < 0.25 else float(np.exp(r.uniform(np.log(lo), np.log(hi))))


def _compare(cfg, b: Batch, rtl, res: SoakResult, dump_dir: Path):
    from hwnorm.golden import infer, train
    tau, eps = soak_tau(cfg, b), soak_eps(cfg, b)
    if b.infer:
        inf = b.inference
        g = infer(cfg, b.x, b.gamma, b.beta, inf["mean"], inf["scale_m"], inf["scale_exp"], tau=tau, unrounded=False)
        y, sat = rtl.infer_codes(cfg, b.x, b.gamma, b.beta, inf["mean"], inf["scale_m"], inf["scale_exp"], tau)
        got = {"sat": np.asarray(sat, dtype=object)}
        want = {"sat": np.asarray(g.stats.sat, dtype=object)}
    else:
        g = train(cfg, b.x, b.gamma, b.beta, tau=tau, unrounded=False, eps=eps,
                  **({"seed": b.seeds} if b.seeds is not None else {}))
        y, s, den, sat = rtl.train_codes(cfg, b.x, b.gamma, b.beta, b.seeds, tau, eps)
        got = {"sum": np.array([int(v) for v in s], dtype=object), "den": np.array([int(v) for v in den], dtype=object),
               "sat": np.array([int(v) for v in sat], dtype=object)}
        want = {"sum": np.array([int(v) for v in g.stats.sum], dtype=object),
                "den": np.array([int(v) for v in g.stats.den], dtype=object),
                "sat": np.array([int(v) for v in g.stats.sat], dtype=object)}
    y = np.asarray(y, dtype=np.int64)
    bad_vals = y != g.y
    bad_rows = bad_vals.any(axis=1)
    for k in got:
        bad_rows |= got[k] != want[k]
    nbad = int(bad_vals.sum()) + int(sum(int((got[k] != want[k]).sum()) for k in got))
    res.values += b.x.size
    res.channels += b.x.shape[0]
    res.batches += 1
    if b.infer:
        res.infer_values += b.x.size
    else:
        res.train_values += b.x.size
    if nbad:
        res.mismatches += nbad
        row = int(np.flatnonzero(bad_rows)[0])
        cols = np.flatnonzero(bad_vals[row])
        detail = (f"batch {b.index} ({'inference' if b.infer else 'training'}, count {b.n}) channel {row} "
                  f"({b.dists[row]}): {len(cols)} outputs differ"
                  + (f", first at {int(cols[0])}: rtl {int(y[row, cols[0]])} golden {int(g.y[row, cols[0]])}" if len(cols) else "")
                  + "".join(f"; {k}: rtl {got[k][row]} golden {want[k][row]}" for k in got if got[k][row] != want[k][row]))
        if len(res.reports) < 5:
            dump_dir.mkdir(parents=True, exist_ok=True)
            path = dump_dir / f"soak-{res.seed}-batch{b.index}.npz"
            extra = {k: v for k, v in (b.inference or {}).items()}
            if b.seeds is not None:
                extra["seed"] = np.array(b.seeds, dtype=np.uint64)
            np.savez(path, x=b.x, gamma=b.gamma, beta=b.beta, config=cfg.to_json(), infer=b.infer, **extra)
            res.reports.append(detail + f" (batch saved to {path})")


def soak_config(seed: int, values: int, dump_dir: str | None = None) -> SoakResult:
    """Draw configuration `seed`, build it (cached), run ~`values` values through rtl and golden."""
    from hwnorm.backends import get_backend
    dump = Path(dump_dir) if dump_dir else BUILD_ROOT / "soak"
    cfg = draw_config(seed)
    res = SoakResult(seed=seed, config=cfg.describe() + f" eps={cfg.eps:g} stat_frac_bits={cfg.stat_frac_bits}")
    try:
        t0 = time.monotonic()
        rtl = get_backend("rtl")
        rtl.model(cfg)                               # build (or load from build/rtl/) the Verilated model
        res.build_s = time.monotonic() - t0
        t0 = time.monotonic()
        for b in batches(cfg, seed, values):
            _compare(cfg, b, rtl, res, dump)
        res.run_s = time.monotonic() - t0
    except Exception:  # noqa: BLE001 - reported as a failed configuration with its seed
        res.error = traceback.format_exc(limit=6)
    return res


def backward_batches(cfg: NormConfig, gcfg, seed: int, values: int):
    """(index, n, x, g, gamma, seeds) batches of a backward configuration: about `values` values, reproducible from
    `seed`; x and g from DISTRIBUTIONS, a twentieth of the channels with g = 0, gamma as the forward soak's."""
    rng = np.random.default_rng([seed, 12])
    specials = special_counts(cfg)
    done, index = 0, 0
    while done < values:
        n = draw_count(rng, cfg, specials)
        c = int(max(1, min(BWD_BATCH_VALUES // n, 256, -(-(values - done) // n))))
        x = draw_data(rng, cfg.in_fmt, [str(d) for d in rng.choice(DISTRIBUTIONS, size=c)], n)
        g = draw_data(rng, gcfg.grad_fmt, [str(d) for d in rng.choice(DISTRIBUTIONS, size=c)], n)
        g[rng.random(c) < 0.05] = 0
        gamma = draw_affine(rng, cfg.gamma_fmt, c, True)
        seeds = [int(v) for v in rng.integers(0, 1 << 32, size=c)] if gcfg.rounding == "stochastic" else None
        yield index, n, x, g, gamma, seeds
        done += c * n
        index += 1


def soak_backward(seed: int, values: int) -> SoakResult:
    """Draw backward configuration `seed`, build it (cached), run ~`values` values through the Verilated backward
    datapath and the golden backward (dx, dgamma, dbeta, sat, error bit for bit)."""
    from hwnorm.backends import get_backend
    from hwnorm.backends.rtl_backward import describe, expected
    cfg, gcfg = draw_backward(seed)
    res = SoakResult(seed=seed, config=describe(cfg, gcfg))
    try:
        t0 = time.monotonic()
        model = get_backend("rtl").backward_model(cfg, gcfg)
        res.build_s = time.monotonic() - t0
        t0 = time.monotonic()
        for index, n, x, g, gamma, seeds in backward_batches(cfg, gcfg, seed, values):
            dx, stats = model.run(x, g, gamma, seeds)
            want_dx, want = expected(cfg, gcfg, x, g, gamma, seeds)
            bad = (dx != want_dx).sum() + sum(a != b for a, b in zip(stats, want))
            res.values += x.size
            res.train_values += x.size
            res.channels += x.shape[0]
            res.batches += 1
            if bad:
                res.mismatches += int(bad)
                row = next(r for r in range(x.shape[0]) if (dx[r] != want_dx[r]).any() or stats[r] != want[r])
                if len(res.reports) < 5:
                    res.reports.append(f"batch {index} (count {n}) channel {row}: dx differs at "
                                       f"{np.flatnonzero(dx[row] != want_dx[row])[:5].tolist()}; stats rtl {stats[row]} "
                                       f"golden {want[row]}")
        res.run_s = time.monotonic() - t0
    except Exception:  # noqa: BLE001 - reported as a failed configuration with its seed
        res.error = traceback.format_exc(limit=6)
    return res


def soak_cocotb(seed: int, values: int) -> dict:
    """The cocotb testbench's `soak_protocol` test on configuration `seed` (random gaps, stalls, resets)."""
    from hwnorm.verify.runner import run
    cfg = draw_config(seed)
    t0 = time.monotonic()
    r = run(cfg, seed=seed, module="soak_norm", env={"HWNORM_SOAK_SEED": str(seed), "HWNORM_SOAK_VALUES": str(values)})
    logs = [rec["log"] for rec in r.records if "log" in rec]
    return dict(tests=r.tests, failed=r.failed, values=r.values, stats=r.stats, cycles=r.cycles,
                mismatches=r.mismatches, wall=time.monotonic() - t0, log=logs[0] if logs else None)


# -- the command ----------------------------------------------------------------------------------

def _repro(seed: int, values: int, cocotb_values: int) -> str:
    return f"hwnorm sim --soak {values} --soak-seed {seed}" + (f" --soak-cocotb {cocotb_values}" if cocotb_values else "")


def _job(seed, values, cocotb_values):
    if is_backward_seed(seed):
        return soak_backward(seed, values)
    res = soak_config(seed, values)
    if cocotb_values and res.error is None:
        try:
            res.cocotb = soak_cocotb(seed, cocotb_values)
        except Exception:  # noqa: BLE001
            res.error = traceback.format_exc(limit=6)
    return res


def main(values: int, configs: int = 16, master_seed: int = 1, only_seed: int | None = None,
         cocotb_configs: int = 2, cocotb_values: int = 25_000, jobs: int | None = None, out=sys.stdout,
         backward_configs: int = 4) -> int:
    """Soak `values` values over `configs` configurations (or only configuration `only_seed` with all of
    them); the first `cocotb_configs` configurations also run `cocotb_values` values through the cocotb
    testbench; `backward_configs` backward configurations (seeds from BWD_SEED_BASE) soak values / BWD_SHARE more
    between them. Prints one line per configuration (with the command that reproduces it) and a summary;
    returns 0 only if nothing mismatched and nothing failed."""
    if isinstance(values, bool) or not isinstance(values, int) or values < 1:
        raise ValueError(f"--soak={values!r} is out of range: allowed an integer >= 1 (values to soak)")
    if only_seed is not None:
        seeds, quota = [only_seed], {only_seed: values}
        cocotb_configs = 1 if cocotb_configs and cocotb_values else 0
    else:
        if not 1 <= configs <= 10_000:
            raise ValueError(f"--soak-configs={configs!r} is out of range: allowed [1, 10000]")
        if isinstance(backward_configs, bool) or not isinstance(backward_configs, int) or not 0 <= backward_configs <= 1000:
            raise ValueError(f"--soak-backward-configs={backward_configs!r} is out of range: allowed [0, 1000]")
        seeds = [config_seed(master_seed, i) for i in range(configs)]
        w = {s: weight(draw_config(s)) for s in seeds}
        quota = {s: -(-values * int(4 * w[s]) // int(4 * sum(w.values()))) for s in seeds}
        bwd = [BWD_SEED_BASE + config_seed(master_seed, i) for i in range(backward_configs)]
        quota.update({s: max(1, -(-values // (BWD_SHARE * len(bwd)))) for s in bwd})
        seeds += bwd
    jobs = jobs or os.cpu_count() or 1
    t0 = time.monotonic()
    total = dict(values=0, channels=0, mismatches=0, failed=0, train=0, infer=0, bwd=0)
    cot = dict(configs=0, values=0, cycles=0, mismatches=0, failed=0)
    nb = sum(map(is_backward_seed, seeds))
    print(f"hwnorm soak: {values} values over {len(seeds) - nb} configuration(s) ({min(quota.values())}..{max(quota.values())} "
          f"each), {nb} backward configuration(s), master seed {master_seed}, "
          f"{jobs} jobs; cocotb protocol soak on {min(cocotb_configs, len(seeds))} of them ({cocotb_values} values each)",
          file=out, flush=True)
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futs = {pool.submit(_job, s, quota[s], cocotb_values if i < cocotb_configs else 0): (i, s) for i, s in enumerate(seeds)}
        for fut in as_completed(futs):
            i, s = futs[fut]
            r = fut.result()
            cv = cocotb_values if i < cocotb_configs else 0
            total["values"] += r.values
            total["channels"] += r.channels
            total["mismatches"] += r.mismatches
            bwd_run = is_backward_seed(s)
            total["train"] += 0 if bwd_run else r.train_values
            total["bwd"] += r.values if bwd_run else 0
            total["infer"] += r.infer_values
            ok = r.error is None and r.mismatches == 0
            line = (f"[{i + 1:3d}/{len(seeds)}] seed {s:6d} {r.values:8d} values {r.channels:6d} channels "
                    f"{r.mismatches} mismatches, build {r.build_s:5.1f} s run {r.run_s:5.1f} s | {r.config}")
            if bwd_run:
                cv = 0
            if r.cocotb:
                c = r.cocotb
                cot["configs"] += 1
                cot["values"] += c["values"]
                cot["cycles"] += c["cycles"]
                cot["mismatches"] += c["mismatches"]
                cot["failed"] += c["failed"] + (c["tests"] != 1)
                ok = ok and c["failed"] == 0 and c["tests"] == 1 and c["mismatches"] == 0
                line += (f"\n              cocotb soak_protocol: {c['values']} values {c['cycles']} cycles "
                         f"{c['mismatches']} mismatches, {c['wall']:.1f} s" + (f", log {c['log']}" if c["log"] else ""))
            if not ok:
                total["failed"] += 1
                line += f"\n    FAILED, reproduce with: {_repro(s, quota[s], cv)}"
                for rep in r.reports:
                    line += f"\n    {rep}"
                if r.error:
                    line += "\n    " + r.error.replace("\n", "\n    ")
            print(line, file=out, flush=True)
    wall = time.monotonic() - t0
    print(f"hwnorm soak: {len(seeds)} configurations, {total['values']} values ({total['train']} training, "
          f"{total['infer']} inference, {total['bwd']} backward) in {total['channels']} channels, "
          f"{total['mismatches']} mismatches; "
          f"cocotb: {cot['configs']} configurations, {cot['values']} values, {cot['cycles']} cycles, "
          f"{cot['mismatches']} mismatches; {total['failed']} configurations failed; {wall:.1f} s", file=out, flush=True)
    print(f"reproduce one configuration: {_repro(seeds[0], quota[seeds[0]], cocotb_values if cocotb_configs else 0)} "
          f"(any seed above)", file=out, flush=True)
    return 0 if total["failed"] == 0 and total["mismatches"] == 0 and cot["mismatches"] == 0 else 1
