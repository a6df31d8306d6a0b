"""The golden model's int64 fast path gives the same bits as its exact Python-integer path, and the rtl
backend the same bits as both on a whole model."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

import hwnorm.nn as hn
from hwnorm import FixedFormat, NormConfig
from hwnorm.backends.base import GoldenBackend, RtlBackend
from hwnorm.constants import channel_params, inference_params
from hwnorm.golden import INT64_BITS, deviation_den, fast_plan, infer, stats_to_float, train
from hwnorm.torch import to_hardware

BITS = (4, 8, 12, 16)


def fmts(bits: int, signed_in: bool = True) -> dict:
    """Formats of a `bits`-wide datapath (gamma and beta as wide as the data)."""
    return dict(in_fmt=FixedFormat(bits, bits // 2, signed_in), out_fmt=FixedFormat(bits, bits - 3),
                gamma_fmt=FixedFormat(bits, bits - 2), beta_fmt=FixedFormat(bits, bits - 3))


def configs():
    """Every kind at every width, with the parameters each kind has, several roundings and lanes."""
    out = []
    for bits in BITS:
        for rounding, lanes in (("half_up", 1), ("half_even", 4), ("floor", 2)):
            f = fmts(bits, signed_in=rounding != "floor")
            out += [NormConfig(kind="range", chunks=10, rounding=rounding, lanes=lanes, max_count=600, **f),
                    NormConfig(kind="range", chunks=1, rounding=rounding, lanes=lanes, max_count=600, **f),
                    NormConfig(kind="range", chunks=7, rounding=rounding, lanes=lanes, max_count=600, **f),
                    NormConfig(kind="l1", rounding=rounding, lanes=lanes, max_count=600, **f),
                    NormConfig(kind="linf", rounding=rounding, lanes=lanes, max_count=600, **f),
                    NormConfig(kind="topk", k=10, rounding=rounding, lanes=lanes, max_count=600, **f),
                    NormConfig(kind="topk", k=3, rounding=rounding, lanes=lanes, max_count=600, **f),
                    NormConfig(kind="l2", rounding=rounding, lanes=lanes, max_count=600, **f)]
    return out


CONFIGS = configs()


def data(cfg: NormConfig, rng, channels: int, n: int, how: str) -> np.ndarray:
    """Input codes (channels, n): uniform, narrow, constant, the two extremes, or one outlier."""
    lo, hi = cfg.in_fmt.min_int, cfg.in_fmt.max_int
    if how == "uniform":
        return rng.integers(lo, hi + 1, size=(channels, n))
    if how == "narrow":
        mid = (lo + hi) // 2
        return np.clip(np.rint(rng.normal(mid, 2.0, size=(channels, n))), lo, hi).astype(np.int64)
    if how == "constant":
        return np.repeat(rng.integers(lo, hi + 1, size=(channels, 1)), n, axis=1)
    if how == "extremes":
        return np.where(rng.random((channels, n)) < 0.5, lo, hi)
    x = np.full((channels, n), lo + (hi - lo) // 3)
    x[:, rng.integers(0, n)] = hi
    return x


def params(cfg: NormConfig, rng, channels: int, big: bool):
    """gamma and beta codes: moderate, or at the extremes of their formats (outputs saturate)."""
    g, b = cfg.gamma_fmt, cfg.beta_fmt
    if big:
        return (rng.choice([g.min_int, g.max_int], size=channels) if g.signed else np.full(channels, g.max_int),
                rng.choice([b.min_int, b.max_int], size=channels))
    return rng.integers(1, max(2, g.max_int // 2), size=channels), rng.integers(b.min_int // 4, b.max_int // 4 + 1, size=channels)


def assert_same(fast, exact):
    """Every field of two golden Results is identical, dtypes included."""
    for name in ("y", "mult", "shift"):
        a, b = getattr(fast, name), getattr(exact, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    for name in ("sum", "den", "sat"):
        a, b = getattr(fast.stats, name), getattr(exact.stats, name)
        assert a.dtype == b.dtype and [int(v) for v in a] == [int(v) for v in b], name
    if exact.unrounded is not None:
        assert np.array_equal(fast.unrounded, exact.unrounded)


def inference_descriptors(cfg, x, g, b, scale_factor):
    """mean / scale_m / scale_exp codes from the channels' own training statistics, scale times a factor."""
    r = train(cfg, x, g, b, exact=True)
    mean, _, scale = stats_to_float(cfg, x.shape[1], r.stats)
    p = [inference_params(cfg, float(m), float(s) * f) for m, s, f in zip(mean, scale, scale_factor)]
    return [np.array([q[k] for q in p], dtype=np.int64) for k in ("mean", "scale_m", "scale_exp")]


def test_the_fast_path_is_on_int64_for_every_width_tested():
    """Otherwise the comparisons below would compare the exact path with itself."""
    for cfg in CONFIGS:
        assert fast_plan(cfg) == {"stats": True, "normalize": True}, cfg.describe()
        assert fast_plan(cfg, exact=True) == {"stats": False, "normalize": False}


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.kind}-{c.in_fmt}-{c.rounding}-c{c.chunks}-k{c.k}")
def test_training_fast_equals_exact(cfg):
    rng = np.random.default_rng(hash(cfg.hash) % 2**32)
    sat = 0
    for how in ("uniform", "narrow", "constant", "extremes", "outlier"):
        for n in (1, 2, 3, 11, 23, 257, cfg.max_count):
            x = data(cfg, rng, 3, n, how)
            g, b = params(cfg, rng, 3, big=how in ("extremes", "outlier"))
            fast, exact = train(cfg, x, g, b), train(cfg, x, g, b, exact=True)
            assert_same(fast, exact)
            sat += int(exact.stats.sat.sum())
    assert sat > 0, "no output saturated: the saturation counters were not compared"


@pytest.mark.parametrize("cfg", CONFIGS[::3], ids=lambda c: f"{c.kind}-{c.in_fmt}-{c.rounding}")
def test_inference_fast_equals_exact(cfg):
    rng = np.random.default_rng(7)
    sat = 0
    for how in ("uniform", "narrow", "extremes"):
        x = data(cfg, rng, 4, 200, how)
        g, b = params(cfg, rng, 4, big=False)
        for factor in ([1.0] * 4, rng.uniform(0.25, 8.0, size=4)):
            try:
                d = inference_descriptors(cfg, x, g, b, factor)
            except ValueError:                     # a scale out of the configuration's range: not a case here
                continue
            fast, exact = infer(cfg, x, g, b, *d), infer(cfg, x, g, b, *d, exact=True)
            assert_same(fast, exact)
            sat += int(exact.stats.sat.sum())
    assert sat > 0


def test_the_fast_path_leaves_its_input_alone_and_does_not_depend_on_the_layout():
    cfg = NormConfig(kind="topk", max_count=4096)
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, size=(8, 4096))
    keep = x.copy()
    g, b = params(cfg, rng, 8, big=False)
    fast = train(cfg, x, g, b)
    assert np.array_equal(x, keep)
    assert_same(fast, train(cfg, x, g, b, exact=True))
    assert_same(train(cfg, np.asfortranarray(x.astype(np.int16)), g, b), fast)


def test_many_channels_at_max_count_and_count_one():
    for kind in ("range", "l1", "linf", "topk", "l2"):
        cfg = NormConfig(kind=kind, max_count=64)
        rng = np.random.default_rng(3)
        for n in (1, 64):
            x = rng.integers(-128, 128, size=(40, n))
            g, b = params(cfg, rng, 40, big=False)
            assert_same(train(cfg, x, g, b), train(cfg, x, g, b, exact=True))


def test_wide_configurations_fall_back_to_python_integers_where_int64_does_not_fit():
    """Wide data: a stage whose widths do not fit in int64 runs on Python integers; the bits stay the same."""
    wide = NormConfig(kind="l2", in_fmt=FixedFormat(32, 16), out_fmt=FixedFormat(16, 12),
                      gamma_fmt=FixedFormat(16, 12), beta_fmt=FixedFormat(16, 12), max_count=1000)
    plan = fast_plan(wide)
    assert not plan["stats"] and wide.sq_sum_bits > INT64_BITS
    assert plan["normalize"] == (wide.acc_bits <= INT64_BITS)
    rng = np.random.default_rng(5)
    x = rng.integers(wide.in_fmt.min_int, wide.in_fmt.max_int + 1, size=(2, 1000))
    g, b = params(wide, rng, 2, big=False)
    assert_same(train(wide, x, g, b), train(wide, x, g, b, exact=True))
    mid = NormConfig(kind="l2", in_fmt=FixedFormat(24, 12), out_fmt=FixedFormat(16, 12), gamma_fmt=FixedFormat(16, 12),
                     beta_fmt=FixedFormat(16, 12), max_count=4096,
                     mantissa_bits=40)         # sum of squares 59 bits: int64; x*A + B with a 40-bit mantissa: not
    assert fast_plan(mid) == {"stats": True, "normalize": False} and mid.acc_bits > INT64_BITS
    for how in ("uniform", "extremes"):
        x = data(mid, rng, 2, 4096, how)
        assert_same(train(mid, x, g, b), train(mid, x, g, b, exact=True))


def test_deviation_den_fast_equals_exact():
    rng = np.random.default_rng(11)
    for cfg in CONFIGS[:8]:
        x = data(cfg, rng, 5, 333, "uniform")
        s, hp = x.sum(axis=1), channel_params(cfg, 333)
        fast, exact = deviation_den(cfg, x, s, hp), deviation_den(cfg, x, s, hp, exact=True)
        assert fast.dtype == exact.dtype == object and list(fast) == list(exact), cfg.kind


@pytest.mark.parametrize("bad", ["yes", 1, None, 0.0])
def test_exact_must_be_a_bool(bad):
    cfg = NormConfig()
    x = np.zeros((1, 4), dtype=np.int64)
    for call in (lambda: train(cfg, x, [1], [0], exact=bad), lambda: infer(cfg, x, [1], [0], [0], [1 << 15], [-15], exact=bad),
                 lambda: fast_plan(cfg, exact=bad), lambda: GoldenBackend(exact=bad)):
        with pytest.raises(ValueError, match=r"exact=.*allowed True"):
            call()


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), hn.TopkBatchNorm2d(4, k=3), nn.ReLU(),
                         nn.Conv2d(4, 6, 3, padding=1), hn.TopkBatchNorm2d(6, k=3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(6 * 36, 3))


def model_run(model, backend, x):
    """Two training steps (outputs, running statistics, gradients) and an eval pass on `backend`."""
    m = copy.deepcopy(model)
    out = []
    with to_hardware(m, backend=backend, fmt="s8") as hw:
        m.train()
        for xb in (x, x * 3):
            y = m(xb)
            y.square().mean().backward()
            out.append(y.detach())
        m.eval()
        with torch.no_grad():
            out.append(m(x))
        report = {name: {k: v for k, v in r.items() if k not in ("seconds", "backend")} for name, r in hw.report().items()}
    return out + [p.grad.clone() for p in m.parameters()] + [b.clone() for b in m.buffers()], report


def test_rtl_equals_the_fast_and_the_exact_golden_model_on_a_whole_model():
    x = torch.randn(16, 1, 6, 6) * 2
    model = small_model()
    runs = {name: model_run(model, backend, x) for name, backend in
            (("fast", GoldenBackend()), ("exact", GoldenBackend(exact=True)), ("rtl", RtlBackend()))}
    for name in ("exact", "rtl"):
        tensors, report = runs[name]
        assert len(tensors) == len(runs["fast"][0])
        for i, (u, v) in enumerate(zip(runs["fast"][0], tensors)):
            assert torch.equal(u, v), (name, i)
        assert report == runs["fast"][1], name
    assert sum(r["values"] for r in runs["fast"][1].values()) > 0

