"""Property-based tests (hypothesis): NormConfig validation, the golden model against the float
reference, and the PyTorch path against PyTorch's own BatchNorm for kind l2. No Verilator here."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from torch import nn

from hwnorm.config import (BITS_RANGE, CHUNKS_RANGE, FRAC_RANGE, K_RANGE, KINDS, LANES, MAX_COUNT_RANGE,
                           ROUNDING_MODES, STAT_FRAC_RANGE, FixedFormat, NormConfig)
from hwnorm.constants import chunk_sizes
from hwnorm.fixed import round_mode
from hwnorm.constants import inference_params
from hwnorm.golden import infer, infer_out_lsb, train, train_out_lsb
from hwnorm.torch import to_hardware

FAST = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
MEDIUM = settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])


def formats(bits=BITS_RANGE, frac=None, signed=st.booleans()):
    return st.builds(lambda b, f, s: FixedFormat(b, min(f, FRAC_RANGE[1]), s), st.integers(*bits),
                     st.integers(*(frac or FRAC_RANGE)), signed)


@st.composite
def valid_kwargs(draw, bits=BITS_RANGE, max_count=MAX_COUNT_RANGE, kinds=KINDS):
    kind = draw(st.sampled_from(kinds))
    kw = dict(kind=kind, in_fmt=draw(formats(bits)), out_fmt=draw(formats(bits)), gamma_fmt=draw(formats(bits)),
              beta_fmt=draw(formats(bits)), max_count=draw(st.integers(*max_count)), lanes=draw(st.sampled_from(LANES)),
              rounding=draw(st.sampled_from(ROUNDING_MODES)), stat_frac_bits=draw(st.integers(*STAT_FRAC_RANGE)))
    kw["chunks"] = draw(st.none() | st.integers(*CHUNKS_RANGE)) if kind == "range" else draw(st.sampled_from([None, 1]))
    kw["k"] = draw(st.none() | st.integers(*K_RANGE)) if kind == "topk" else draw(st.sampled_from([None, 1]))
    if kind == "cvar":              # k is derived from alpha: at most K_RANGE[1] values at max_count
        kw["k"] = None
        kw["alpha"] = draw(st.floats(min_value=max(1e-3, 1 - K_RANGE[1] / kw["max_count"]), max_value=0.999999))
    kw["eps"] = draw(st.none() | st.floats(min_value=1e-12, max_value=0.5))
    return kw


# -- NormConfig -----------------------------------------------------------------------------------

@FAST
@given(valid_kwargs())
def test_every_valid_config_builds(kw):
    cfg = NormConfig(**kw)
    widths = cfg.widths()
    assert all(isinstance(v, int) for v in widths.values())
    assert cfg.passes in (2, 3)
    for fields in (cfg.channel_fields, cfg.stats_fields):
        assert all(isinstance(w, int) and w >= 1 for _, w, _ in fields), fields
    assert [f[0] for f in cfg.channel_fields][:2] == ["infer", "count"]
    again = NormConfig.from_json(cfg.to_json())
    assert again == cfg and again.hash == cfg.hash


# wrong values per field: (field, strategy of bad values); each must raise a ValueError naming the
# field, the value and what is allowed
_not_int = st.one_of(st.floats(allow_nan=True), st.text(max_size=4), st.none(), st.booleans(), st.just([1]))
BAD = {
    "kind": st.one_of(st.text(max_size=6).filter(lambda s: s not in KINDS), st.integers(), st.none()),
    "max_count": st.one_of(st.integers(max_value=0), st.integers(min_value=MAX_COUNT_RANGE[1] + 1), _not_int),
    "lanes": st.one_of(st.integers().filter(lambda v: v not in LANES), st.sampled_from([4.0, "4", True, None])),
    "rounding": st.one_of(st.text(max_size=10).filter(lambda s: s not in ROUNDING_MODES), st.integers(), st.none()),
    "eps": st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0), st.just(float("nan")), st.text(max_size=3),
                     st.booleans()),
    "stat_frac_bits": st.one_of(st.integers(max_value=-1), st.integers(min_value=STAT_FRAC_RANGE[1] + 1), _not_int),
    "in_fmt": st.one_of(st.integers(), st.none(), st.text(max_size=5).filter(lambda s: not s.strip())),
    "out_fmt": st.one_of(st.floats(), st.just("s99.2"), st.just("q8.4"), st.just({"bits": 8})),
    "gamma_fmt": st.one_of(st.just("s1.0"), st.just("u8.40"), st.just((8, 4))),
    "beta_fmt": st.one_of(st.just("x"), st.just(8), st.just("s8.-1")),
}


def _shown(value) -> list[str]:
    return [repr(value), str(value)]


@FAST
@given(valid_kwargs(), st.data())
def test_every_invalid_config_raises_naming_the_field(kw, data):
    name = data.draw(st.sampled_from(sorted(BAD) + ["chunks", "k"]))
    if name == "chunks":
        bad = (data.draw(st.one_of(st.integers(max_value=0), st.integers(min_value=65), _not_int.filter(lambda v: v is not None)))
               if kw["kind"] in ("range", "frn_range") else data.draw(st.integers().filter(lambda v: v != 1)))
    elif name == "k":
        bad = (data.draw(st.one_of(st.integers(max_value=0), st.integers(min_value=33), _not_int.filter(lambda v: v is not None)))
               if kw["kind"] == "topk" else data.draw(st.integers().filter(lambda v: v != NormConfig(**kw).k)))
    else:
        bad = data.draw(BAD[name])
    kw[name] = bad
    with pytest.raises(ValueError) as e:
        NormConfig(**kw)
    msg = str(e.value)
    assert name in msg, msg
    assert any(s in msg for s in _shown(bad)), (bad, msg)
    assert "allowed" in msg, msg


@FAST
@given(st.integers(-5, 40), st.integers(-5, 40), st.one_of(st.booleans(), st.integers(2, 3)))
def test_fixed_format_validates(bits, frac, signed):
    ok = BITS_RANGE[0] <= bits <= BITS_RANGE[1] and FRAC_RANGE[0] <= frac <= FRAC_RANGE[1] and isinstance(signed, bool)
    if ok:
        f = FixedFormat(bits, frac, signed)
        assert FixedFormat.parse(str(f)) == f
    else:
        with pytest.raises(ValueError, match="allowed"):
            FixedFormat(bits, frac, signed)


# -- golden model against the float reference -----------------------------------------------------

@st.composite
def golden_case(draw):
    kw = draw(valid_kwargs(bits=(3, 16), max_count=(1, 300)))
    cfg = NormConfig(**kw)
    fi, fg, fb = cfg.in_fmt, cfg.gamma_fmt, cfg.beta_fmt
    n = draw(st.integers(1, min(cfg.max_count, 96)))
    c = draw(st.integers(1, 3))
    codes = st.integers(fi.min_int, fi.max_int)
    style = draw(st.sampled_from(["any", "two", "narrow", "extreme"]))
    if style == "any":
        x = draw(st.lists(st.lists(codes, min_size=n, max_size=n), min_size=c, max_size=c))
    elif style == "two":
        a, b = draw(codes), draw(codes)
        x = [draw(st.lists(st.sampled_from([a, b]), min_size=n, max_size=n)) for _ in range(c)]
    elif style == "narrow":
        centre = draw(codes)
        x = [[min(fi.max_int, max(fi.min_int, centre + d)) for d in draw(st.lists(st.integers(-2, 2), min_size=n, max_size=n))]
             for _ in range(c)]
    else:
        x = [draw(st.lists(st.sampled_from([fi.min_int, fi.max_int]), min_size=n, max_size=n)) for _ in range(c)]
    g = draw(st.lists(st.integers(fg.min_int, fg.max_int), min_size=c, max_size=c))
    b = draw(st.lists(st.integers(fb.min_int, fb.max_int), min_size=c, max_size=c))
    return cfg, np.array(x, dtype=np.int64), np.array(g, dtype=np.int64), np.array(b, dtype=np.int64)


def _eps_only(cfg: NormConfig, x: np.ndarray) -> np.ndarray:
    """Channels whose deviation estimate is eps alone although the values differ (range: every chunk
    constant, e.g. one value per chunk). docs/numerics.md: eps is then held to CF + F_in fraction bits,
    so the output may differ from the float reference by more than 1 LSB (it saturates for any gamma of
    practical size). The FRN kinds measure about 0, so there it is any non-zero channel whose statistic is eps alone:
    frn_range with every chunk constant, frn_linf at n = 1 (C_inf(1) = 0); the hook refuses both by name (their eps
    is raised to the descriptor's smallest, docs/numerics.md "FRN eps in real units")."""
    if cfg.kind == "frn_linf":
        return np.array([len(row) == 1 and row.any() for row in x], dtype=bool)
    if cfg.kind not in ("range", "frn_range"):
        return np.zeros(x.shape[0], dtype=bool)
    out = []
    for row in x:
        start, flat = 0, True
        for m in chunk_sizes(len(row), cfg.chunks):
            flat &= bool(row[start:start + m].min() == row[start:start + m].max())
            start += m
        out.append(flat and (row.any() if cfg.frn else row.min() != row.max()))
    return np.array(out, dtype=bool)


# hypothesis found it (CI, 2026-12-07): frn_range at n = 1 <= chunks, sigma_hat is the raised descriptor eps alone
FRN_EPS_ONLY = (NormConfig(kind="frn_range", in_fmt=FixedFormat(3, 0, False), out_fmt=FixedFormat(3, 0, False),
                           gamma_fmt=FixedFormat(3, 11, False), beta_fmt=FixedFormat(3, 1, False), max_count=1,
                           stat_frac_bits=0), np.array([[1]]), np.array([1]), np.array([0]))


@MEDIUM
@given(golden_case())
@example(FRN_EPS_ONLY)
def test_golden_within_one_lsb_of_float_reference(case):
    cfg, x, g, b = case
    res = train(cfg, x, g, b, unrounded=False)
    ref = train_out_lsb(cfg, x, g, b)
    lo, hi = cfg.out_fmt.min_int, cfg.out_fmt.max_int
    want = np.clip(round_mode(ref, cfg.rounding), lo, hi)
    err = np.abs(res.y - want).max(axis=1)
    keep = ~_eps_only(cfg, x)
    assert np.all(err[keep] <= 1), (cfg.describe(), x[keep][np.argmax(err[keep])], err)


@MEDIUM
@given(golden_case(), st.data())
def test_golden_inference_within_one_lsb_of_float_reference(case, data):
    """Inference with any mean in the input range and any scale the configuration accepts."""
    cfg, x, g, b = case
    fi = cfg.in_fmt
    p = []
    for _ in range(x.shape[0]):
        mean = data.draw(st.floats(fi.min_int * fi.lsb, fi.max_int * fi.lsb))
        scale = 2.0 ** data.draw(st.floats(-6, 10)) / ((fi.max_int - fi.min_int + 1) * fi.lsb)
        try:
            p.append(inference_params(cfg, mean, scale))
        except ValueError as e:
            assert "scale=" in str(e) and "allowed" in str(e)
            assume(False)
    args = [np.array([q[k] for q in p]) for k in ("mean", "scale_m", "scale_exp")]
    res = infer(cfg, x, g, b, *args, unrounded=False)
    ref = infer_out_lsb(cfg, x, g, b, *args)
    want = np.clip(round_mode(ref, cfg.rounding), cfg.out_fmt.min_int, cfg.out_fmt.max_int)
    assert np.abs(res.y - want).max() <= 1, cfg.describe()


# -- the PyTorch path against PyTorch's own BatchNorm (kind l2) ----------------------------------

@st.composite
def bn_case(draw):
    fmt = draw(st.sampled_from(["s8", "s16"]))
    from hwnorm.config import NAMED_FORMATS as FORMATS
    fi, fg, fb = (FORMATS[fmt][k] for k in ("in_fmt", "gamma_fmt", "beta_fmt"))
    two_d = draw(st.booleans())
    shape = ((draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))) if two_d
             else (draw(st.integers(2, 12)), draw(st.integers(1, 3))) + ((draw(st.integers(1, 5)),) if draw(st.booleans()) else ()))
    n = math.prod(shape) // shape[1]
    assume(n >= 2)                               # nn.BatchNorm refuses one value per channel in training
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    top = fi.max_int
    style = draw(st.sampled_from(["uniform", "gauss", "two"]))
    if style == "uniform":
        codes = rng.integers(-top, top + 1, size=shape)
    elif style == "gauss":
        codes = np.clip(np.rint(rng.normal(rng.uniform(-top / 2, top / 2), top / 6, size=shape)), -top, top)
    else:
        codes = rng.choice([-top, int(rng.integers(-top, top + 1))], size=shape)
    codes.reshape(-1)[0] = top * (1 if rng.random() < 0.5 else -1)   # max|x| = max_int LSBs: in_scale = 1 LSB exactly
    c = shape[1]
    g = rng.integers(max(fg.min_int, -(2 << fg.frac)), min(fg.max_int, 2 << fg.frac) + 1, size=c)
    beta = rng.integers(fb.min_int, fb.max_int + 1, size=c) // 2
    return fmt, shape, codes * fi.lsb, g * fg.lsb, beta * fb.lsb, draw(st.booleans()), seed


def _bn(shape, w, b, affine):
    m = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(shape[1], affine=affine)
    if affine:
        with torch.no_grad():
            m.weight.copy_(torch.tensor(w))
            m.bias.copy_(torch.tensor(b))
    return m


def _out_lsb_err(cfg, y_hw, y_ref):
    """Output codes of the hardware against PyTorch's result rounded to the output format, in LSBs."""
    lsb = cfg.out_fmt.lsb
    want = torch.clamp(torch.round(y_ref.detach().double() / lsb), cfg.out_fmt.min_int, cfg.out_fmt.max_int)
    got = torch.round(y_hw.detach().double() / lsb)      # codes (the straight-through sum adds float32 rounding)
    return float((got - want).abs().max())


def _close(a, b, rtol, atol):
    torch.testing.assert_close(a.detach().double(), b.detach().double(), rtol=rtol, atol=atol)


@SLOW
@given(bn_case())
def test_l2_on_golden_and_float_backends_matches_torch_batchnorm(case):
    """The reference is PyTorch's BatchNorm in float64 (in float32 its own rounding, divided by sqrt(eps)
    for a constant channel, exceeds the tolerance); the routed model runs in float32."""
    fmt, shape, x, w, b, affine, seed = case
    x = torch.tensor(x, dtype=torch.float32)
    ref = _bn(shape, w, b, affine).double()
    y_ref = ref(x.double())                                            # training: batch statistics
    for backend in ("float", "golden"):
        m = _bn(shape, w, b, affine)
        with to_hardware(m, backend=backend, fmt=fmt) as hw:
            y = m(x)
            cfg = hw.layers[""].config
        if backend == "float":
            _close(y, y_ref, 1e-5, 1e-5)
        else:
            assert _out_lsb_err(cfg, y, y_ref) <= 1
        _close(m.running_mean, ref.running_mean, 1e-5, 1e-6)
        _close(m.running_var, ref.running_var, 1e-5 if backend == "float" else 1e-3, 1e-5)
    # inference with running statistics of any plausible value
    rng = np.random.default_rng(seed)
    span = float(x.abs().max())
    mean = torch.tensor(rng.uniform(-span / 2, span / 2, size=shape[1]), dtype=torch.float32)
    var = torch.tensor((span * 2.0 ** rng.uniform(-4, 1, size=shape[1])) ** 2, dtype=torch.float32)
    ref.eval()
    with torch.no_grad():
        ref.running_mean.copy_(mean)
        ref.running_var.copy_(var)
        y_ref = ref(x.double())
        for backend in ("float", "golden"):
            m = copy.deepcopy(ref).float()
            with to_hardware(m, backend=backend, fmt=fmt) as hw:
                y = m(x)
                cfg = hw.layers[""].config
            if backend == "float":
                _close(y, y_ref, 1e-5, 1e-5)
            else:
                assert _out_lsb_err(cfg, y, y_ref) <= 1


@pytest.mark.xfail(strict=True, reason="known: a range channel whose every chunk is constant (but whose values differ) "
                   "has sigma_hat = eps alone, and eps is held to CF + F_in fraction bits (eps_int = 13 for 1e-7 here), so "
                   "an output that does not saturate can be several LSBs from the float reference (docs/numerics.md "
                   "mentions n <= chunks only; constant chunks with n > chunks behave the same)")
@pytest.mark.parametrize("x", [[0, 1], [v for v in range(10) for _ in range(2)]])
def test_eps_only_range_channel_within_one_lsb(x):
    cfg = NormConfig(kind="range", in_fmt=FixedFormat(8, 0), out_fmt=FixedFormat(16, 0), gamma_fmt=FixedFormat(16, 16),
                     max_count=64)
    x = np.array([x])
    res = train(cfg, x, [1], [0], unrounded=False)
    want = np.clip(round_mode(train_out_lsb(cfg, x, [1], [0]), cfg.rounding), cfg.out_fmt.min_int, cfg.out_fmt.max_int)
    assert np.abs(res.y - want).max() <= 1
