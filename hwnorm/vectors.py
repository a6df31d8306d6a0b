"""Frozen reference vectors (golden/*.npz): fixed-seed cases from the float reference and the bit-exact model.

A test recomputes them, so any drift of either model is caught. Regenerate (`make golden`) only when
the specification changes on purpose, and say so in the commit.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import KINDS, FixedFormat, NormConfig, default_configs
from .constants import inference_params
from .golden import infer, norm_infer, norm_train, train

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"


def vector_cases() -> dict[str, tuple[NormConfig, int, int, int, int, bool]]:
    """name -> (config, seed, channels, n, spread, inference): spread 0 means the full input range."""
    d = default_configs()
    cases = {f"{k}_s8_random": (d[f"{k}_s8"], 1 + i, 4, 100, 0, False) for i, k in enumerate(KINDS)}
    cases["range_s16_random"] = (d["range_s16"], 11, 3, 257, 0, False)
    cases["l2_s16_random"] = (d["l2_s16"], 12, 3, 257, 0, False)
    plain = NormConfig(chunks=1, rounding="half_even", max_count=1000, out_fmt=FixedFormat(8, 5, signed=False))
    cases["range_s8_plain_narrow"] = (plain, 13, 5, 7, 3, False)
    cases["topk_s8_inference"] = (d["topk_s8"], 14, 4, 50, 0, True)
    return cases


def make_case(cfg: NormConfig, seed: int, channels: int, n: int, spread: int, inference: bool) -> dict:
    rng = np.random.default_rng(seed)
    fi = cfg.in_fmt
    if spread:
        centre = rng.integers(fi.min_int + spread, fi.max_int - spread, size=(channels, 1))
        x = centre + rng.integers(-spread, spread + 1, size=(channels, n))
    else:
        x = rng.integers(fi.min_int, fi.max_int + 1, size=(channels, n))
    g = rng.integers(cfg.gamma_fmt.min_int, cfg.gamma_fmt.max_int + 1, size=channels)
    b = rng.integers(cfg.beta_fmt.min_int, cfg.beta_fmt.max_int + 1, size=channels)
    xf, gf, bf = x * fi.lsb, g * cfg.gamma_fmt.lsb, b * cfg.beta_fmt.lsb
    out = dict(config=np.array(cfg.to_json()), x=x, gamma=g, beta=b)
    tau = None
    if cfg.frn:             # TLU thresholds: the output minimum (off) or a random code below the middle
        fo = cfg.out_fmt
        tau = np.where(rng.random(channels) < 0.25, fo.min_int, rng.integers(fo.min_int, (fo.min_int + fo.max_int) // 2 + 1,
                                                                             size=channels)).astype(np.int64)
        out["tau"] = tau
    if inference:
        p = [inference_params(cfg, float(m), float(s)) for m, s in
             zip(rng.uniform(-2, 2, channels), rng.uniform(0.2, 4, channels))]
        stat = {k: np.array([q[k] for q in p], dtype=np.int64) for k in ("mean", "scale_m", "scale_exp")}
        out.update(stat)
        mean_f = stat["mean"] * 2.0 ** -(fi.frac + cfg.stat_frac_bits)
        scale_f = stat["scale_m"] * np.exp2(stat["scale_exp"].astype(float))
        out["y_ref"] = norm_infer(xf, gf, bf, mean_f, scale_f)
        res = infer(cfg, x, g, b, stat["mean"], stat["scale_m"], stat["scale_exp"])
    else:
        out["y_ref"], out["mean_ref"], out["sigma_ref"] = norm_train(xf, gf, bf, cfg.kind, chunks=cfg.chunks,
                                                                     k=cfg.k, eps=cfg.eps, alpha=cfg.alpha,
                                                                     tau=None if tau is None else tau * cfg.out_fmt.lsb)
        res = train(cfg, x, g, b, tau=tau)
    out.update(y=res.y, stat_sum=res.stats.sum, stat_den=np.array([str(int(v)) for v in res.stats.den]),
               stat_sat=res.stats.sat)
    return out


def write_vectors(out_dir: Path = GOLDEN_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.npz"):
        old.unlink()
    paths = []
    for name, args in vector_cases().items():
        path = out_dir / f"{name}.npz"
        np.savez(path, **make_case(*args))
        paths.append(path)
    return paths
