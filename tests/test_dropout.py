"""Dropout after the normalization (the IC layer): the LFSR and the mask of the golden model against a few
lines of Python, keep rates, the inverted scaling's error, its off switches (inference, inference-only builds,
p = 0), bad input, and the torch module and hook route. The Verilog is checked bit for bit in cocotb
(range_drop_even_p4; three more configurations in make sim FULL=1) and in tests/test_hdl_units.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import hwnorm.nn as hn
from hwnorm.config import NormConfig
from hwnorm.constants import channel_seeds, inference_params
from hwnorm.golden import infer, train
from hwnorm.golden.dropout import check_seeds, draws, keep_mask
from hwnorm.torch import to_hardware


def ref_draws(seed, n):
    """Marsaglia's xorshift32 (13, 17, 5) from seed (0: 0x9E3779B9), the top 16 bits after each step."""
    s, out = seed or 0x9E3779B9, []
    for _ in range(n):
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        out.append(s >> 16)
    return out


def test_golden_draws_are_the_xorshift32_sequence_per_channel():
    seeds = [0, 1, 2, 0xFFFFFFFF, 0x12345678]
    got = draws(seeds, 300)
    for c, seed in enumerate(seeds):
        assert got[c].tolist() == ref_draws(seed, 300)


@pytest.mark.parametrize("p", [0.05, 0.25, 0.5, 0.9])
def test_keep_rate_is_one_minus_p_and_neighbours_are_independent(p):
    cfg = NormConfig(dropout=p)
    keep = keep_mask(cfg, channel_seeds(7, 64), 4096)
    q = 1 - cfg.dropout_threshold / 2 ** 16
    assert abs(q - (1 - p)) <= 2 ** -17
    n = keep.size
    sigma = math.sqrt(q * (1 - q) / n)
    assert abs(keep.mean() - q) < 5 * sigma, (keep.mean(), q)
    both = (keep[:, 1:] & keep[:, :-1]).mean()                  # adjacent values (neighbouring lanes)
    assert abs(both - q * q) < 5 * math.sqrt(q * q * (1 - q * q) / both.size) + 1e-9
    d = draws(channel_seeds(7, 64), 16)                          # channels are not copies of each other
    assert len({tuple(r) for r in d.tolist()}) == 64


def test_channel_seeds_differ_per_channel_and_per_call():
    a, b = channel_seeds(1, 256), channel_seeds(2, 256)
    assert len(set(a)) == 256 and len(set(a) & set(b)) == 0
    assert all(0 <= s < 1 << 32 for s in a + b)


def _data(cfg, c=4, n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(cfg.in_fmt.min_int, cfg.in_fmt.max_int + 1, size=(c, n))
    g = rng.integers(1 << cfg.gamma_fmt.frac - 1, 2 << cfg.gamma_fmt.frac, size=c)
    b = rng.integers(cfg.beta_fmt.min_int // 4, cfg.beta_fmt.max_int // 4, size=c)
    return x, g, b


@pytest.mark.parametrize("rounding", ["half_up", "half_even", "floor"])
@pytest.mark.parametrize("kind", ["range", "l2"])
def test_a_threshold_of_zero_reproduces_the_plain_datapath_bit_for_bit(kind, rounding):
    """p small enough that T = 0 keeps every value with S = 2**F: the dropout pipeline (shift to E fraction
    bits, clamp, multiply, one rounding) must equal the plain one exactly, saturation counts included."""
    cfg = NormConfig(kind=kind, rounding=rounding, dropout=1e-7, max_count=512)
    assert cfg.dropout_threshold == 0 and cfg.dropout_scale == 1 << cfg.dropout_scale_frac
    plain = NormConfig(kind=kind, rounding=rounding, max_count=512)
    for s in range(3):
        x, g, b = _data(cfg, n=512, seed=s)
        g = g * (1 + 3 * s)                       # larger gains: saturated outputs too
        g = np.clip(g, cfg.gamma_fmt.min_int, cfg.gamma_fmt.max_int)
        r, r0 = train(cfg, x, g, b, seed=[1, 2, 3, 4]), train(plain, x, g, b)
        assert np.array_equal(r.y, r0.y) and np.array_equal(r.stats.sat, r0.stats.sat)
    assert r0.stats.sat.sum() > 0


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_kept_values_are_the_plain_result_scaled_within_the_derived_bound(p):
    cfg = NormConfig(dropout=p, max_count=1024, rounding="half_even")
    plain = NormConfig(max_count=1024, rounding="half_even")
    x, g, b = _data(cfg, c=8, n=1024, seed=3)
    seeds = channel_seeds(5, 8)
    r, r0 = train(cfg, x, g, b, seed=seeds), train(plain, x, g, b)
    keep = keep_mask(cfg, seeds, 1024)
    assert np.all(r.y[~keep] == 0)
    s = 1 / (1 - cfg.dropout_threshold / 2 ** 16)
    lo, hi = cfg.out_fmt.min_int, cfg.out_fmt.max_int
    ideal = r0.unrounded * s
    inside = keep & (ideal > lo) & (ideal < hi)
    err = np.abs(r.unrounded - ideal)[inside]
    assert err.max() <= s / 16 + 1 / 32                         # docs/numerics.md: s 2**-E + 2**-(F+1) 2**(bits-1)
    assert np.all(np.abs(r.y[inside] - ideal[inside]) <= 0.5 + s / 16 + 1 / 32)
    sat = keep & ((np.round(ideal) > hi) | (np.round(ideal) < lo))
    assert r.stats.sat.sum() >= sat.sum() - 2                   # kept values beyond the range are counted


def test_dropout_is_off_in_inference_and_in_inference_only_builds():
    cfg = NormConfig(dropout=0.5)
    x, g, b = _data(cfg)
    p = [inference_params(cfg, 0.1, 3.0)] * 4
    args = ([q["mean"] for q in p], [q["scale_m"] for q in p], [q["scale_exp"] for q in p])
    assert np.array_equal(infer(cfg, x, g, b, *args).y, infer(NormConfig(), x, g, b, *args).y)
    io = NormConfig(dropout=0.5, inference_only=True)
    assert not io.dropout_active and "seed" not in [f[0] for f in io.channel_fields]
    assert "seed" in [f[0] for f in cfg.channel_fields]
    assert NormConfig(dropout=0.0).hash == NormConfig().hash     # p = 0: the configuration without dropout


def test_golden_refuses_bad_seeds_and_a_seed_without_dropout():
    cfg = NormConfig(dropout=0.5)
    x, g, b = _data(cfg)
    with pytest.raises(ValueError, match=r"seed holds -1: allowed integers in \[0, 2\*\*32\)"):
        train(cfg, x, g, b, seed=[1, 2, 3, -1])
    with pytest.raises(ValueError, match="seed has 3 entries, expected one per channel"):
        train(cfg, x, g, b, seed=[1, 2, 3])
    with pytest.raises(ValueError, match="applies to a dropout build only"):
        train(NormConfig(), x, g, b, seed=[1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"dropout=1.5 is out of range: allowed a probability p in \[0, 1\)"):
        keep_mask(1.5, [0], 4)
    assert check_seeds(7, 3) == [7, 7, 7]


def test_module_drops_in_training_only_with_inverted_scaling():
    torch.manual_seed(0)
    m = hn.RangeBatchNorm2d(8, dropout=0.4)
    x = torch.randn(16, 8, 6, 6, requires_grad=True)
    y = m(x)
    ref = m.normalize(x, *m.batch_stats(x)).detach()
    kept = y != 0
    assert 0.5 < kept.float().mean() < 0.7
    assert torch.allclose(y[kept], ref[kept] / 0.6)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    m.eval()
    assert (m(x) != 0).all()
    assert "dropout=0.4" in repr(m)


@pytest.mark.parametrize("backend", ["float", "golden", "bfloat16-stats"])
def test_hook_applies_the_hardware_mask_and_its_gradient(backend):
    if backend == "bfloat16-stats":
        from hwnorm.torch.lowprec import LowPrecisionStatsBackend
        backend = LowPrecisionStatsBackend("bfloat16")
    torch.manual_seed(1)
    m = torch.nn.Sequential(hn.L1BatchNorm1d(4, dropout=0.3))
    x = torch.randn(64, 4, requires_grad=True)
    with to_hardware(m, backend=backend, fmt="s16", max_count=256) as hw:
        hw.calibrate([x.detach()])
        assert hw.layers["0"].config.dropout == 0.3
        torch.manual_seed(5)
        y = m(x)
        torch.manual_seed(5)
        seeds = channel_seeds(int(torch.randint(0, 1 << 32, (1,)).item()), 4)
        keep = torch.from_numpy(keep_mask(hw.layers["0"].config, seeds, 64)).T
        assert torch.equal(y != 0, keep)                           # s16: no kept value rounds to 0 here
        y.pow(2).sum().backward()
        m.eval()
        assert (m(x) != 0).all()                                    # eval(): no dropout
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_datasheet_and_header_of_a_dropout_core_carry_the_seed_and_constants(tmp_path):
    import json

    from hwnorm import core
    cfg = NormConfig(dropout=0.25, max_count=64, lanes=2)
    core.write_core(cfg, "drop", tmp_path)
    sheet = json.loads((tmp_path / "drop.json").read_text())
    seed = [f for f in sheet["descriptor"]["fields"] if f["name"] == "seed"]
    assert seed and seed[0]["width"] == 32
    assert sheet["constants"]["dropout_threshold"] == 16384 and sheet["timing"]["normalize_stages"] == 10
    header = (tmp_path / "drop.h").read_text()
    assert "DROP_DROPOUT_THRESHOLD 16384u" in header and "drop_channel_seed" in header
