"""Frozen reference vectors (golden/*.npz): fixed-seed cases from the float reference and the bit-exact model.

A test recomputes them, so any drift of either model is caught.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import FixedFormat, NormConfig, default_configs
from .golden import range_bn, range_bn_train

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"


def vector_cases() -> dict[str, tuple[NormConfig, int, int, int, int]]:
    """name -> (config, seed, channels, n, spread): spread 0 means the full input range."""
    d = default_configs()
    plain = NormConfig(chunks=1, rounding="half_even", max_count=1000, out_fmt=FixedFormat(8, 5, signed=False))
    return {
        "range_s8_random": (d["range_s8"], 1, 4, 100, 0),
        "range_s16_random": (d["range_s16"], 2, 3, 257, 0),
        "range_s8_plain_narrow": (plain, 3, 5, 7, 3),
    }


def make_case(cfg: NormConfig, seed: int, channels: int, n: int, spread: int) -> dict:
    rng = np.random.default_rng(seed)
    fi = cfg.in_fmt
    if spread:
        centre = rng.integers(fi.min_int + spread, fi.max_int - spread, size=(channels, 1))
        x = centre + rng.integers(-spread, spread + 1, size=(channels, n))
    else:
        x = rng.integers(fi.min_int, fi.max_int + 1, size=(channels, n))
    g = rng.integers(cfg.gamma_fmt.min_int, cfg.gamma_fmt.max_int + 1, size=channels)
    b = rng.integers(cfg.beta_fmt.min_int, cfg.beta_fmt.max_int + 1, size=channels)
    y_ref, mean_ref, sigma_ref = range_bn_train(x * fi.lsb, g * cfg.gamma_fmt.lsb, b * cfg.beta_fmt.lsb,
                                                cfg.chunks, cfg.eps)
    res = range_bn(cfg, x, g, b)
    return dict(config=np.array(cfg.to_json()), x=x, gamma=g, beta=b, y_ref=y_ref, mean_ref=mean_ref,
                sigma_ref=sigma_ref, y=res.y, stat_sum=res.stats.sum,
                stat_sigma=np.array([int(v) for v in res.stats.sigma], dtype=np.int64), stat_sat=res.stats.sat)


def write_vectors(out_dir: Path = GOLDEN_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, args in vector_cases().items():
        path = out_dir / f"{name}.npz"
        np.savez(path, **make_case(*args))
        paths.append(path)
    return paths
