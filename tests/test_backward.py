"""The backward (issue 21): the float formulas against torch.autograd on the float modules, ties included; the bit-exact
integer backward against the float formulas with the hardware's constants; gradient rounding (half up, stochastic)."""
import re

import numpy as np
import pytest
import torch

from hwnorm.config import FORMATS_8, FORMATS_16, GRAD_FORMATS, SR_BITS, GradConfig, NormConfig
from hwnorm.constants import channel_seeds, seed_state, xorshift32
from hwnorm.golden import train
from hwnorm.golden.backward import BWD_GUARD, backward, quantize_grad
from hwnorm.golden.dropout import keep_mask
from hwnorm.golden.backward_ref import BACKWARD_KINDS, BN_BACKWARD_KINDS, dsigma, frn_backward, norm_backward
from hwnorm.numerics import backward_reference_lsb
from hwnorm.torch import frn as frn_nn
from hwnorm.torch import nn as hn


def float_module(kind: str, c: int, twod: bool):
    """The float module of `kind` (nn.BatchNorm for l2), float64, with non-trivial gamma / beta."""
    d = "2d" if twod else "1d"
    make = {"range": lambda: getattr(hn, f"RangeBatchNorm{d}")(c, chunks=3), "l1": lambda: getattr(hn, f"L1BatchNorm{d}")(c),
            "mad": lambda: getattr(hn, f"MadBatchNorm{d}")(c), "linf": lambda: getattr(hn, f"LinfBatchNorm{d}")(c),
            "topk": lambda: getattr(hn, f"TopkBatchNorm{d}")(c, k=4), "cvar": lambda: getattr(hn, f"CvarBatchNorm{d}")(c, alpha=0.7),
            "semidev": lambda: getattr(hn, f"SemidevBatchNorm{d}")(c), "l2": lambda: getattr(torch.nn, f"BatchNorm{d}")(c)}
    m = make[kind]().double()
    with torch.no_grad():
        m.weight.uniform_(0.5, 2.0)
        m.bias.uniform_(-1.0, 1.0)
    return m


SHAPES = [(2, 3), (7, 2, 3), (20, 3), (3, 2, 2, 5)]


@pytest.mark.parametrize("ties", [False, True], ids=["random", "ties"])
@pytest.mark.parametrize("kind", BN_BACKWARD_KINDS)
def test_float_backward_is_autograd_of_the_float_module(kind, ties):
    """dx, dgamma, dbeta of norm_backward equal autograd through the module (relative 1e-9), on several shapes; with
    small integer inputs most values tie, so every selection (max / min, top-k, cvar tail, sign 0) meets ties."""
    torch.manual_seed(1)
    for shape in SHAPES:
        m = float_module(kind, shape[1], len(shape) == 4)
        x = torch.randint(-3, 4, shape).double() if ties else torch.randn(shape, dtype=torch.float64)
        x.requires_grad_()
        gy = torch.randn(shape, dtype=torch.float64)
        (m(x) * gy).sum().backward()
        flat = lambda t: t.detach().transpose(0, 1).reshape(shape[1], -1).numpy()    # noqa: E731  (C, n) as the module sees it
        dx, dgamma, dbeta = norm_backward(flat(x), flat(gy), m.weight.detach().numpy(), kind, chunks=getattr(m, "chunks", 10),
                                          k=getattr(m, "k", 10), eps=m.eps, alpha=getattr(m, "alpha", None))
        for name, mine, auto in (("dx", dx, flat(x.grad)), ("dgamma", dgamma, m.weight.grad.numpy()),
                                 ("dbeta", dbeta, m.bias.grad.numpy())):
            scale = max(1.0, float(np.abs(auto).max()))
            assert np.abs(mine - auto).max() <= 1e-9 * scale, f"{kind} {shape} {name}"
        if ties:
            assert len(np.unique(flat(x)[0])) < flat(x).shape[1]          # the channel holds ties


@pytest.mark.parametrize("kind, x, where", [
    ("linf", [[-1.0, 1.0, 0.0, 0.0]], [0]),                 # |x - mu| = 1 at 0 and 1: index 0
    ("topk", [[2.0, -2.0, 2.0, -2.0, 0.0]], [0, 1]),        # k = 2 of four equal |x - mu|: indices 0, 1
    ("cvar", [[1.0, 3.0, 3.0, 0.0, 3.0]], [1]),              # top 1 of three equal maxima: index 1
    ("range", [[1.0, 4.0, 4.0, 1.0]], [0, 1]),              # chunks=1: the first max (1), the first min (0)
])
def test_a_tie_takes_the_lowest_index(kind, x, where):
    """The selection's gradient goes to the lowest index of tied values, in the float module (autograd of sigma_hat) and
    in the formulas alike (topk with k = 2, cvar with alpha keeping 1 of 5, range with one chunk)."""
    kw = {"topk": {"k": 2}, "cvar": {"alpha": 0.8}, "range": {"chunks": 1}}.get(kind, {})
    mod = {"linf": hn.LinfBatchNorm1d, "topk": hn.TopkBatchNorm1d, "cvar": hn.CvarBatchNorm1d, "range": hn.RangeBatchNorm1d}
    m = mod[kind](1, **kw).double()
    xt = torch.tensor(x, dtype=torch.float64).T.contiguous().requires_grad_()
    m.batch_stats(xt)[1].sum().backward()
    q = dsigma(np.array(x), kind, **kw)
    auto = xt.grad.T.numpy()
    assert np.allclose(q, auto, rtol=0, atol=1e-12)
    # the selected positions stand out from the rest (which share only the mean's part, equal to each other)
    rest = [i for i in range(len(x[0])) if i not in where]
    assert all(abs(q[0, i] - q[0, rest[0]]) > 1e-3 for i in where) and np.ptp(q[0, rest]) < 1e-12


def codes(rng, cfg, gcfg, c, n, g_share=1.0):
    """Random x (in_fmt), dy (grad_fmt, up to g_share of its range) and gamma (around 1.0) codes."""
    x = rng.integers(cfg.in_fmt.min_int, cfg.in_fmt.max_int + 1, (c, n))
    top = int(gcfg.grad_fmt.max_int * g_share)
    g = rng.integers(-top, top + 1, (c, n))
    gamma = rng.integers(1 << (cfg.gamma_fmt.frac - 1), 3 << (cfg.gamma_fmt.frac - 1), c)
    return x, g, gamma


def configs(width: str):
    fmts = FORMATS_8 if width == "s8" else FORMATS_16
    return [NormConfig(kind=k, max_count=256, **fmts, **{"topk": {"k": 4}, "cvar": {"alpha": 0.9}}.get(k, {}))
            for k in BACKWARD_KINDS]


@pytest.mark.parametrize("width", ["s8", "s16"])
def test_golden_backward_is_the_float_gradient_of_the_hardware_forward(width):
    """Every kind, 8 and 16 bits, several counts (ties and a one-value chunk among them): before its rounding dx is within
    2**-(BWD_GUARD+1) LSB of the float formula with the hardware's sigma and rounded constants, so after it within one
    LSB of the rounded float (and equal where the float is not that close to a half); dgamma within half an LSB;
    dbeta = sum(g) exactly."""
    rng = np.random.default_rng(7)
    gcfg = GradConfig(**GRAD_FORMATS[width])
    for cfg in configs(width):
        for n in (1, 2, 11, 100):
            x, g, gamma = codes(rng, cfg, gcfg, 4, n, g_share=0.5)
            if n == 11:
                x[:, 5:] = x[:, :1]                               # a run of equal values: ties at every selection
            r = backward(cfg, gcfg, x, g, gamma, unrounded=True)
            ref, dgamma_ref = backward_reference_lsb(cfg, gcfg, x, g, gamma)
            assert np.abs(r.unrounded - ref).max() < 2.0 ** -(BWD_GUARD + 1), f"{cfg.kind} n={n}"
            want = np.clip(np.floor(ref + 0.5), gcfg.dx_fmt.min_int, gcfg.dx_fmt.max_int)
            assert np.abs(r.dx - want).max() <= 1
            near_half = np.abs(ref - np.floor(ref) - 0.5) < 2.0 ** -(BWD_GUARD + 1)
            assert np.array_equal(r.dx[~near_half], want[~near_half]), f"{cfg.kind} n={n}"
            assert np.abs(np.array(r.dgamma, dtype=np.float64) - dgamma_ref).max() <= 0.5 + 1e-9
            assert np.array_equal(np.array(r.dbeta, dtype=np.int64), g.sum(axis=1))
            assert np.array_equal(r.sat, ((np.floor(r.unrounded + 0.5) < gcfg.dx_fmt.min_int)
                                          | (np.floor(r.unrounded + 0.5) > gcfg.dx_fmt.max_int)).sum(axis=1))


def test_golden_backward_takes_the_forwards_statistics():
    """Given the forward's ChannelStats (S, Den) the backward gives the bits it gives recomputing them from x."""
    rng = np.random.default_rng(3)
    gcfg = GradConfig()
    for cfg in configs("s8"):
        x, g, gamma = codes(rng, cfg, gcfg, 3, 50)
        fwd = train(cfg, x, gamma, np.zeros(3, dtype=np.int64))
        kept, again = backward(cfg, gcfg, x, g, gamma, stats=fwd.stats), backward(cfg, gcfg, x, g, gamma)
        assert np.array_equal(kept.dx, again.dx) and list(kept.dgamma) == list(again.dgamma)


def test_dx_saturates_and_counts():
    """A channel of tiny sigma (two codes apart) and full-range dy: dx leaves dx_fmt, clamped to its ends, counted."""
    cfg, gcfg = NormConfig(kind="l2", max_count=64, **FORMATS_8), GradConfig()
    x = np.tile([0, 1], 16).reshape(1, -1)
    g = np.tile([127, -128, -128, 127], 8).reshape(1, -1)
    r = backward(cfg, gcfg, x, g, [127])
    assert r.sat[0] > 0 and r.sat[0] == np.count_nonzero(np.isin(r.dx, [gcfg.dx_fmt.min_int, gcfg.dx_fmt.max_int]))


def lfsr_draws(seed: int, n: int) -> list[int]:
    """The stochastic-rounding draws written from the spec with the scalar xorshift32 step: top SR_BITS of each state."""
    s, out = seed_state(seed), []
    for _ in range(n):
        s = xorshift32(s)
        out.append(s >> (32 - SR_BITS))
    return out


def test_stochastic_rounding_follows_the_spec_and_is_unbiased():
    """quantize_grad(stochastic) = (floor(v 2**SR_BITS) + r_i) >> SR_BITS with r_i from the per-channel LFSR (checked
    against a scalar model), repeatable for a seed, between floor and ceil, and unbiased over seeds."""
    gcfg = GradConfig(rounding="stochastic")
    v = np.array([[0.25, -0.25, 3.7, -3.7, 10.5, 0.0]] * 2)
    q, sat = quantize_grad(gcfg, v, seed=[5, 0])
    for c, seed in enumerate((5, 0)):
        want = [(int(np.floor(a * 2 ** SR_BITS)) + r) >> SR_BITS for a, r in zip(v[c], lfsr_draws(seed, v.shape[1]))]
        assert list(q[c]) == want
    assert sat == 0 and np.all((q >= np.floor(v)) & (q <= np.ceil(v)))
    assert np.array_equal(q, quantize_grad(gcfg, v, seed=[5, 0])[0])
    many = np.stack([quantize_grad(gcfg, v[:1], seed=channel_seeds(s, 1))[0][0] for s in range(400)])   # hashed seeds
    assert np.abs(many.mean(axis=0) - v[0]).max() < 0.08               # 400 draws: std of the mean <= 0.025
    assert not np.array_equal(many[0], many[1]) or not np.array_equal(many[1], many[2])


def test_stochastic_dx_rounding_stays_within_one_lsb():
    """dx rounded stochastically (per-channel seeds) is floor or ceil of the unrounded dx, repeatable per seed."""
    rng = np.random.default_rng(5)
    cfg = configs("s8")[0]
    gcfg = GradConfig(rounding="stochastic")
    x, g, gamma = codes(rng, cfg, gcfg, 3, 60, g_share=0.3)
    r = backward(cfg, gcfg, x, g, gamma, seed=[1, 2, 3], unrounded=True)
    inside = r.sat == 0
    assert inside.all() and np.all((r.dx >= np.floor(r.unrounded)) & (r.dx <= np.floor(r.unrounded) + 1))
    assert np.array_equal(r.dx, backward(cfg, gcfg, x, g, gamma, seed=[1, 2, 3]).dx)


def test_gradient_quantization_saturates_and_counts():
    q, sat = quantize_grad(GradConfig(), np.array([[200.0, -300.0, 1.4, -1.5]]))
    assert sat == 2 and list(q[0]) == [127, -128, 1, -1]


@pytest.mark.parametrize("call, message", [
    (lambda: backward(NormConfig(kind="l2", **FORMATS_8), GradConfig(), [[1, 2]], [[1, 1]], [64], dropout_seed=[3]),
     r"dropout_seed=\[3\] applies to a dropout build only"),
    (lambda: backward(NormConfig(kind="l2", **FORMATS_8), GradConfig(), [[1, 2]], [[1, 1000]], [64]),
     r"g holds 1000, out of range for s8.6: allowed \[-128, 127\]"),
    (lambda: backward(NormConfig(kind="l2", **FORMATS_8), GradConfig(), [[1, 2]], [[1, 1, 1]], [64]), "g has shape"),
    (lambda: backward(NormConfig(kind="l2", **FORMATS_8), GradConfig(), [[1, 2]], [[1, 1]], [64], seed=3), "seed=3"),
    (lambda: backward(NormConfig(kind="l2", **FORMATS_8), "s8", [[1, 2]], [[1, 1]], [64]), "gcfg='s8'"),
    (lambda: backward(NormConfig(kind="l2", **FORMATS_8), GradConfig(), [[1, 2]], [[1, 1]], [64],
                      stats=train(NormConfig(kind="l2", **FORMATS_8), [[1, 2], [3, 4]], [64, 64], [0, 0]).stats),
     r"stats holds 2 sums and 2 Den: allowed one each per channel \(1\)"),
    (lambda: GradConfig(rounding="nearest"), "rounding='nearest' is not supported for gradients: allowed half_up, stochastic"),
    (lambda: GradConfig(grad_fmt="u8.6"), "grad_fmt=.* allowed a signed FixedFormat"),
])
def test_bad_backward_input_is_refused_by_name(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_numerics_backward_prints_the_measured_error(capsys):
    """`hwnorm numerics --backward --custom` measures that configuration's dx: max err at most 1 LSB, the value before
    rounding below 1/32 LSB; --write is refused with --custom."""
    from hwnorm.cli import main
    assert main(["numerics", "--backward", "--custom", "--kind", "l1", "--max-count", "64", "--trials", "1"]) == 0
    out = capsys.readouterr().out
    err, before = re.search(r"max err (\d+) LSB .* before rounding ([0-9.]+) LSB", out).groups()
    assert int(err) <= 1 and float(before) < 2.0 ** -(BWD_GUARD + 1) and " l1 lanes=1 " in out
    assert main(["numerics", "--backward", "--custom", "--write"]) == 2
    assert "--write would be ignored" in capsys.readouterr().err


@pytest.mark.parametrize("width", ["s8", "s16"])
def test_per_value_gamma_keeps_the_bound(width):
    """gamma per value (a grouped layer's per-element affine): dx within 2**-(BWD_GUARD+1) LSB of the float gradient
    before rounding, dgamma = g x_hat per value within half an LSB, dbeta = g; a per-value gamma equal in a channel
    gives per-channel gamma's dx to within one LSB (the constants round differently)."""
    rng = np.random.default_rng(11)
    gcfg = GradConfig(**GRAD_FORMATS[width])
    for cfg in configs(width):
        x, g, gamma = codes(rng, cfg, gcfg, 3, 40, g_share=0.5)
        ge = rng.integers(-(1 << cfg.gamma_fmt.frac), 1 << cfg.gamma_fmt.frac, size=x.shape)
        r = backward(cfg, gcfg, x, g, ge, unrounded=True)
        ref, dgamma_ref = backward_reference_lsb(cfg, gcfg, x, g, ge)
        assert np.abs(r.unrounded - ref).max() < 2.0 ** -(BWD_GUARD + 1), cfg.kind
        assert r.dgamma.shape == x.shape and np.abs(r.dgamma.astype(np.float64) - dgamma_ref).max() <= 0.5 + 1e-9
        assert np.array_equal(r.dbeta.astype(np.int64), g)
        same = backward(cfg, gcfg, x, g, np.repeat(gamma[:, None], x.shape[1], axis=1))
        assert np.abs(same.dx - backward(cfg, gcfg, x, g, gamma).dx).max() <= 1


@pytest.mark.parametrize("kind", BN_BACKWARD_KINDS)
def test_float_backward_with_gamma_per_value_is_autograd(kind):
    """y = gamma_e * x_hat + beta_e with gamma_e, beta_e per value (a module without affine, then the product): dx, and
    dgamma = g x_hat, dbeta = g per value, equal autograd's."""
    torch.manual_seed(3)
    m = float_module(kind, 2, False)
    m.affine = False
    m.weight = m.bias = None
    x = torch.randn(12, 2, dtype=torch.float64, requires_grad=True)
    ge = torch.randn(12, 2, dtype=torch.float64, requires_grad=True)
    be = torch.randn(12, 2, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(12, 2, dtype=torch.float64)
    ((m(x) * ge + be) * gy).sum().backward()
    dx, dgamma, dbeta = norm_backward(x.detach().T.numpy(), gy.T.numpy(), ge.detach().T.numpy(), kind,
                                      chunks=getattr(m, "chunks", 10), k=getattr(m, "k", 10), eps=m.eps,
                                      alpha=getattr(m, "alpha", None))
    for mine, auto in ((dx, x.grad), (dgamma, ge.grad), (dbeta, be.grad)):
        assert np.abs(mine - auto.T.numpy()).max() <= 1e-9 * max(1.0, float(auto.abs().max()))


FRN = {"frn": (frn_nn.FilterResponseNorm2d, {}), "frn_range": (frn_nn.RangeFRN2d, {"chunks": 3}),
       "frn_l1": (frn_nn.L1FRN2d, {}), "frn_linf": (frn_nn.LinfFRN2d, {})}


@pytest.mark.parametrize("ties", [False, True], ids=["random", "ties"])
@pytest.mark.parametrize("kind", sorted(FRN))
def test_frn_backward_is_autograd_of_the_frn_module(kind, ties):
    """FRN + TLU: dx, dgamma, dbeta and dtau of frn_backward (one row per sample and channel, parameters summed over
    the samples) equal autograd through the module; with small integer inputs, beta = tau = 0 and gamma = 1 many y
    equal tau exactly (the gradient then goes to y, as the module's TLU sends it) and |x| ties at the maximum."""
    cls, kw = FRN[kind]
    torch.manual_seed(4)
    m = cls(3, **kw).double()
    if not ties:
        with torch.no_grad():
            m.weight.uniform_(0.5, 2.0)
            m.bias.uniform_(-1.0, 1.0)
            m.tau.uniform_(-0.5, 0.5)
    x = (torch.randint(-3, 4, (2, 3, 4, 5)).double() if ties else torch.randn(2, 3, 4, 5, dtype=torch.float64))
    x.requires_grad_()
    gy = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    (m(x) * gy).sum().backward()
    rows = lambda t: t.detach().reshape(6, 20).numpy()                 # noqa: E731  row n*C + c
    per = lambda p: np.tile(p.detach().numpy(), 2)                     # noqa: E731
    dx, dgamma, dbeta, dtau = frn_backward(rows(x), rows(gy), per(m.weight), per(m.bias), per(m.tau), kind,
                                           chunks=m.chunks, eps=m.eps)
    fold = lambda v: v.reshape(2, 3).sum(axis=0)                      # noqa: E731
    for mine, auto in ((dx, rows(x.grad)), (fold(dgamma), m.weight.grad.numpy()), (fold(dbeta), m.bias.grad.numpy()),
                       (fold(dtau), m.tau.grad.numpy())):
        assert np.abs(mine - auto).max() <= 1e-9 * max(1.0, float(np.abs(auto).max()))
    if ties:
        assert np.count_nonzero(rows(x) == 0) > 0                        # y = 0 = tau at x = 0


@pytest.mark.parametrize("width", ["s8", "s16"])
def test_golden_frn_backward_with_descriptor_eps_and_tlu(width):
    """The FRN kinds with a descriptor eps: dx within 2**-(BWD_GUARD+1) LSB of the float gradient before rounding;
    tlu_keep passes dy where the forward's y (before the TLU) >= tau; a channel whose dy is all masked has dx = 0
    exactly."""
    from hwnorm.golden.backward import tlu_keep
    rng = np.random.default_rng(12)
    gcfg = GradConfig(**GRAD_FORMATS[width])
    for cfg in (c for c in configs(width) if c.frn):
        x, g, gamma = codes(rng, cfg, gcfg, 3, 30, g_share=0.5)
        eps = 0.5
        r = backward(cfg, gcfg, x, g, gamma, unrounded=True, eps=eps)
        ref, _ = backward_reference_lsb(cfg, gcfg, x, g, gamma, eps=eps)
        assert np.abs(r.unrounded - ref).max() < 2.0 ** -(BWD_GUARD + 1), cfg.kind
        beta = np.zeros(3, dtype=np.int64)
        tau = np.array([cfg.out_fmt.min_int, 0, cfg.out_fmt.max_int])
        keep = tlu_keep(cfg, x, gamma, beta, tau, eps)
        y = train(cfg, x, gamma, beta, eps=eps).y
        assert keep[0].all() and np.array_equal(keep[1], y[1] >= 0) and not (keep[2] & (y[2] < tau[2])).any()
        keep[2] = False
        masked = backward(cfg, gcfg, x, np.where(keep, g, 0), gamma, eps=eps)
        assert not masked.dx[2].any() and masked.dx[0].any()


@pytest.mark.parametrize("width", ["s8", "s16"])
def test_golden_backward_through_dropout(width):
    """A dropout build: dy passes where the forward's LFSR mask (regenerated from its seeds) kept the value, times the
    hardware's scale S / 2**F, folded into the constants: dx within 2**-(BWD_GUARD+1) LSB of that float gradient before
    rounding, dgamma within half an LSB, dbeta = round(S sum(kept g) / 2**F); other seeds, another dx."""
    from dataclasses import replace
    rng = np.random.default_rng(13)
    gcfg = GradConfig(**GRAD_FORMATS[width])
    for cfg in (replace(c, dropout=0.3) for c in configs(width)[:3]):
        x, g, gamma = codes(rng, cfg, gcfg, 3, 50, g_share=0.5)
        seeds = [int(v) for v in rng.integers(1, 1 << 32, size=3)]
        r = backward(cfg, gcfg, x, g, gamma, unrounded=True, dropout_seed=seeds)
        ref, dgamma_ref = backward_reference_lsb(cfg, gcfg, x, g, gamma, dropout_seed=seeds)
        assert np.abs(r.unrounded - ref).max() < 2.0 ** -(BWD_GUARD + 1), cfg.kind
        assert np.abs(r.dgamma.astype(np.float64) - dgamma_ref).max() <= 0.5 + 1e-9
        kept = np.where(keep_mask(cfg, seeds, 50), g, 0).sum(axis=1)
        assert list(r.dbeta) == [(2 * cfg.dropout_scale * int(v) + (1 << cfg.dropout_scale_frac))
                                 // (2 << cfg.dropout_scale_frac) for v in kept]
        assert not np.array_equal(r.dx, backward(cfg, gcfg, x, g, gamma, dropout_seed=[s + 1 for s in seeds]).dx)


@pytest.mark.parametrize("width", ["s8", "s16"])
def test_inference_backward_is_exact(width):
    """Running statistics (eval()): dx = gamma scale dy is one exact product, so dx is the correctly rounded (half up,
    saturated) float value exactly, stochastic rounding its floor or ceil; dgamma within half an LSB, dbeta = sum(g)."""
    from hwnorm.constants import inference_params
    from hwnorm.golden.backward import infer_backward
    rng = np.random.default_rng(14)
    cfg, gcfg = configs(width)[0], GradConfig(**GRAD_FORMATS[width])
    x, g, gamma = codes(rng, cfg, gcfg, 4, 30, g_share=0.5)
    p = [inference_params(cfg, float(m), float(s)) for m, s in zip(rng.uniform(-1, 1, 4), rng.uniform(0.2, 3.0, 4))]
    desc = [[q[k] for q in p] for k in ("mean", "scale_m", "scale_exp")]
    scale = (np.array(desc[1]) * 2.0 ** np.array(desc[2]))[:, None]
    dx = gamma[:, None] * cfg.gamma_fmt.lsb * g * gcfg.grad_fmt.lsb * scale * 2.0 ** gcfg.dx_fmt.frac
    lo, hi = gcfg.dx_fmt.min_int, gcfg.dx_fmt.max_int
    r = infer_backward(cfg, gcfg, x, g, gamma, *desc)
    assert np.array_equal(r.dx, np.clip(np.floor(dx + 0.5), lo, hi))
    x_hat = (x * 2.0 ** -cfg.in_fmt.frac - np.array(desc[0])[:, None] * 2.0 ** -(cfg.in_fmt.frac + cfg.stat_frac_bits)) * scale
    assert np.abs(r.dgamma.astype(np.float64) - (g * x_hat).sum(axis=1)).max() <= 0.5 + 1e-9
    assert list(r.dbeta) == list(g.sum(axis=1))
    rs = infer_backward(cfg, GradConfig(**GRAD_FORMATS[width], rounding="stochastic"), x, g, gamma, *desc, seed=[1, 2, 3, 4])
    assert np.all((rs.dx >= np.clip(np.floor(dx), lo, hi)) & (rs.dx <= np.clip(np.ceil(dx), lo, hi)))
