"""The rtl backend's backward (issue 21 items 4, 5): the Verilated backward datapath (hwnorm.hdl.backward) equals the
golden backward bit for bit (dx, dgamma, dbeta, saturation) per built kind, through Backend.backward and through
to_hardware(..., backend='rtl', backward=True); the host side (descriptor packing against the field lists, the
scoreboard's golden side) and the refusals of what the hardware lacks, by name."""
import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

import hwnorm.nn as hn
from hwnorm.backends import get_backend
from hwnorm.backends.rtl_backward import (RTL_BACKWARD_KINDS, channel_stats, descriptor, expected, grad_from_json,
                                          grad_json, pack_fields, refusal)
from hwnorm.config import FORMATS_16, GradConfig, NormConfig
from hwnorm.fields import unpack
from hwnorm.golden import train
from hwnorm.golden.backward import backward as golden_backward
from hwnorm.hdl.backward import BACKWARD_HDL_KINDS
from hwnorm.torch import to_hardware
from hwnorm.verify.funcov import backward_bins, backward_tie_labels
from hwnorm.verify.runner import backward_configs


def cfg_of(kind: str, width: int = 8, **kw) -> NormConfig:
    return NormConfig(kind=kind, max_count=kw.pop("max_count", 256), **(FORMATS_16 if width == 16 else {}), **kw)


def codes(cfg, gcfg, c, n, seed=0):
    rng = np.random.default_rng(seed)
    fi, fg, fgam = cfg.in_fmt, gcfg.grad_fmt, cfg.gamma_fmt
    x = rng.integers(fi.min_int, fi.max_int + 1, size=(c, n))
    g = rng.integers(fg.min_int, fg.max_int + 1, size=(c, n))
    gamma = rng.integers(fgam.min_int, fgam.max_int + 1, size=c)
    return x, g, gamma


# -- the host side: no simulator -------------------------------------------------------------------------------------

def test_the_built_kinds_are_kinds_the_generator_has():
    assert set(RTL_BACKWARD_KINDS) <= set(BACKWARD_HDL_KINDS)


@pytest.mark.parametrize("kind", BACKWARD_HDL_KINDS)
@pytest.mark.parametrize("rounding", ["half_up", "stochastic"])
@pytest.mark.parametrize("width", [8, 16])
def test_the_descriptor_packs_every_field_the_core_asks_for(kind, rounding, width):
    """Every field of backward_channel_fields gets the host's value (S and Den the forward's, the constants of
    channel_params, gamma, the seed with stochastic rounding), unpack gives it back, and the core accepts it."""
    cfg = cfg_of(kind, width, lanes=4)
    gcfg = GradConfig.for_width(f"s{width}", rounding)
    x, _, gamma = codes(cfg, gcfg, 3, 37)
    s, den = channel_stats(cfg, x)
    fields = cfg.backward_channel_fields(gcfg)
    for c in range(3):
        d = descriptor(cfg, 37, s[c], den[c], gamma[c], seed=0xDEADBEEF)
        got = unpack(fields, pack_fields(fields, d, "backward descriptor"))
        assert got == {name: d[name] for name, _, _ in fields}
        assert cfg.backward_descriptor_error(gcfg, d) is None
    assert ("seed" in got) == (rounding == "stochastic")


@pytest.mark.parametrize("kind", ["range", "l1", "topk", "l2", "cvar"])
def test_s_and_den_are_the_forward_s_bits(kind):
    """The descriptor's S and Den are what the forward datapath reports for these codes (the golden train's stats)."""
    cfg = cfg_of(kind)
    x, _, _ = codes(cfg, GradConfig(), 4, 50, seed=3)
    r = train(cfg, x, [64] * 4, [0] * 4)
    assert channel_stats(cfg, x) == ([int(v) for v in r.stats.sum], [int(v) for v in r.stats.den])


def test_pack_fields_refuses_a_missing_field_and_a_value_that_does_not_fit():
    fields = [("count", 4, False), ("sum", 6, True)]
    assert unpack(fields, pack_fields(fields, {"count": 9, "sum": -32}, "d")) == {"count": 9, "sum": -32}
    with pytest.raises(ValueError, match=r"d field 'sum' has no value: the host gives count"):
        pack_fields(fields, {"count": 1}, "d")
    with pytest.raises(ValueError, match=r"d field count=16 is out of range: allowed 0 \.\. 15 \(4 bits\)"):
        pack_fields(fields, {"count": 16, "sum": 0}, "d")
    with pytest.raises(ValueError, match=r"d field sum=32 is out of range: allowed -32 \.\. 31 \(6 bits, signed\)"):
        pack_fields(fields, {"count": 1, "sum": 32}, "d")


@pytest.mark.parametrize("rounding", ["half_up", "stochastic"])
def test_the_scoreboard_side_is_the_golden_backward(rounding):
    cfg, gcfg = cfg_of("l1"), GradConfig(rounding=rounding)
    x, g, gamma = codes(cfg, gcfg, 3, 20, seed=5)
    seeds = [1, 2, 3] if rounding == "stochastic" else None
    dx, stats = expected(cfg, gcfg, x, g, gamma, seeds)
    r = golden_backward(cfg, gcfg, x, g, gamma, seed=seeds)
    assert np.array_equal(dx, r.dx)
    assert stats == [dict(dgamma=int(a), dbeta=int(b), sat=int(s), error=0) for a, b, s in zip(r.dgamma, r.dbeta, r.sat)]


def test_grad_config_round_trips_through_json():
    for gcfg in (GradConfig(), GradConfig.for_width("s16", "stochastic")):
        assert grad_from_json(grad_json(gcfg)) == gcfg
        assert json.loads(grad_json(gcfg))["rounding"] == gcfg.rounding


def test_refusal_names_what_the_hardware_lacks():
    cfg = cfg_of(RTL_BACKWARD_KINDS[0] if RTL_BACKWARD_KINDS else "range")
    assert refusal(cfg_of("frn")).startswith("kind='frn' has no backward datapath in hardware: allowed ")
    assert refusal(cfg_of("frn_l1")).startswith("kind='frn_l1' has no backward datapath in hardware")
    if RTL_BACKWARD_KINDS:
        assert refusal(cfg) is None and refusal(cfg, GradConfig(rounding="stochastic")) is None
        assert "gamma per value" in refusal(cfg, per_value=True)
        assert "inference-mode backward (eval()" in refusal(cfg, running=True)
        assert "dropout" in refusal(NormConfig(kind=cfg.kind, dropout=0.25))
        assert "overlap" in refusal(NormConfig(kind=cfg.kind, overlap=True))
        lean = GradConfig(mantissa_bits=GradConfig().mantissa_min)
        assert refusal(cfg, lean) is None                   # the lean form is built (hwnorm.hdl.backward)
        assert grad_from_json(grad_json(lean)) == lean


def test_the_rtl_backend_refuses_what_the_hardware_lacks_by_name():
    be = get_backend("rtl")
    x = np.zeros((2, 5))
    with pytest.raises(ValueError, match=r"backend='rtl': kind='frn' has no backward datapath in hardware: allowed "
                                         r".*use backend='golden'"):
        be.backward(cfg_of("frn"), GradConfig(), x, x, [1.0, 1.0])
    if RTL_BACKWARD_KINDS:
        cfg = cfg_of(RTL_BACKWARD_KINDS[0])
        with pytest.raises(ValueError, match=r"backend='rtl': the backward datapath has no gamma per value"):
            be.backward(cfg, GradConfig(), x, x, np.ones((2, 5)))
        with pytest.raises(ValueError, match=r"the backward datapath has no inference-mode backward \(eval\(\)"):
            be.backward(cfg, GradConfig(), x, x, [1.0, 1.0], mean=[0.0, 0.0], sigma=[1.0, 1.0])
    with pytest.raises(ValueError, match=r"x \(2, 5\) and dy \(2, 4\)"):
        be.backward(cfg_of("range"), GradConfig(), x, np.zeros((2, 4)), [1.0, 1.0])


def test_to_hardware_refuses_a_layer_the_rtl_backward_lacks_and_restores_the_others():
    model = nn.Sequential(nn.Linear(4, 6), hn.RangeBatchNorm1d(6, chunks=2), nn.ReLU(), nn.Linear(6, 6),
                          nn.LayerNorm(6))
    with pytest.raises(ValueError, match=r"layer '4' \(LayerNorm\): backward=True on backend='rtl': the backward "
                                         r"datapath has no gamma per value \(a grouped layer"):
        to_hardware(model, backend="rtl", backward=True)
    assert not any("forward" in m.__dict__ for m in model.modules())     # layer '1', routed first, is restored
    with pytest.raises(ValueError, match=r"layer '1' \(FilterResponseNorm1d\): backward=True on backend='rtl': "
                                         r"kind='frn' has no backward datapath in hardware"):
        to_hardware(nn.Sequential(nn.Linear(4, 6), hn.FilterResponseNorm1d(6)), backend="rtl", backward=True)


def test_coverage_sees_ties_at_the_extremes():
    rng = NormConfig(kind="range", chunks=2)
    assert backward_tie_labels(rng, np.array([3, 3, 1, 0, 2, 5])) == {"tie_extreme"}     # chunk 0: max twice
    assert backward_tie_labels(rng, np.array([3, 2, 1, 0, 2, 5])) == set()
    l1 = NormConfig(kind="l1")
    assert backward_tie_labels(l1, np.array([0, 1, 2])) == {"tie_extreme"}               # x = mu: sign 0
    assert backward_tie_labels(l1, np.array([0, 1, 3])) == set()
    linf = NormConfig(kind="linf")
    assert backward_tie_labels(linf, np.array([-2, 0, 2])) == {"tie_extreme"}            # |d| ties for the largest
    bins = backward_bins(NormConfig(kind="range", lanes=4), GradConfig())
    assert bins["bwd_count"] == ["1", "2", "<lanes", "=lanes", "max_count", "masked:1", "masked:2", "masked:3"]
    assert {"tie_extreme", "zero_grad", "dx_sat_high", "dx_sat_low"} <= set(bins["bwd_data"])
    assert {"p1:input_gap", "p2:input_gap", "p2:o_backpressure", "p2:i_held"} <= set(bins["bwd_stall"])
    assert bins["bwd_refused"] == ["count", "chunk_size", "den"]


def test_make_sim_has_every_built_kind_at_8_and_16_bits_and_lanes_1_and_4():
    seen = {(s.cfg.kind, s.cfg.in_fmt.bits, s.cfg.lanes, s.gcfg.rounding) for s in backward_configs().values()}
    for kind in RTL_BACKWARD_KINDS:
        for bits in (8, 16):
            for lanes in (1, 4):
                assert (kind, bits, lanes, "half_up") in seen
    assert all(k in RTL_BACKWARD_KINDS for k, *_ in seen)
    if RTL_BACKWARD_KINDS:
        assert any(r == "stochastic" for *_, r in seen)


def test_make_sim_has_the_lean_form():
    """make sim: the lean form of range, l1, l2 at 8 bits x 4 lanes; FULL=1: of every kind at 8 / 16 bits x lanes 1 / 4."""
    lean = {n: s for n, s in backward_configs().items() if s.gcfg.lean}
    assert sorted(lean) == [f"bwd_{k}_s8_lean_p4" for k in ("l1", "l2", "range")]
    full = {(s.cfg.kind, s.cfg.in_fmt.bits, s.cfg.lanes) for s in backward_configs(full=True).values() if s.gcfg.lean}
    assert full == {(k, b, n) for k in RTL_BACKWARD_KINDS for b in (8, 16) for n in (1, 4)}


# -- the hardware: golden == rtl bit for bit -------------------------------------------------------------------------

# make test: one Verilator build per selection unit and dx form (cached under build/rtl/), spread over widths, lanes and
# rounding: range (ChunkExtremes), l1 (SignSelect), top-k (TopSelect), l2 (two multipliers a lane). mad, linf, cvar
# and semidev differ from these in their constants, not in the harness: make sim's cocotb matrix runs every kind at
# 8/16 bits x lanes 1/4 against the same golden backward (test_make_sim_has_every_built_kind_... checks it is there).
HW = {"range": (8, 1, "half_up"), "l1": (8, 4, "stochastic"), "topk": (16, 1, "half_up"), "l2": (16, 4, "stochastic")}
HW_KINDS = [k for k in RTL_BACKWARD_KINDS if k in HW]


def hw_case(kind):
    width, lanes, rounding = HW[kind]
    return NormConfig(kind=kind, lanes=lanes, **(FORMATS_16 if width == 16 else {})), \
        GradConfig.for_width(f"s{width}", rounding)


@pytest.mark.parametrize("kind", HW_KINDS)
def test_the_verilated_backward_is_the_golden_backward_on_codes(kind):
    """Codes in, codes out: random channels, ties (two values, a repeated extreme), a constant channel, zero gradients,
    narrow data with extreme g and gamma (dx saturates), counts 1, 2, a masked last beat; dx, dgamma, dbeta, sat and
    error as the golden backward says, bit for bit."""
    _codes_are_golden(*hw_case(kind))


def test_the_verilated_lean_backward_is_the_golden_lean_backward():
    """The lean form (GradConfig(mantissa_bits=mantissa_min), range at 8 bits, 4 lanes): the same cases as above, and
    Backend.backward on float tensors, rtl == golden bit for bit."""
    cfg = NormConfig(kind="range", lanes=4)
    g8 = GradConfig.for_width("s8")
    gcfg = GradConfig(grad_fmt=g8.grad_fmt, dx_fmt=g8.dx_fmt, mantissa_bits=g8.mantissa_min)
    _codes_are_golden(cfg, gcfg)
    _floats_are_golden(cfg, gcfg)


def _codes_are_golden(cfg, gcfg):
    model = get_backend("rtl").backward_model(cfg, gcfg)
    rng = np.random.default_rng(7)
    fi, fg, fgam = cfg.in_fmt, gcfg.grad_fmt, cfg.gamma_fmt
    sat = 0
    for n in (1, 2, 7, 61):
        x, g, gamma = codes(cfg, gcfg, 4, n, seed=n)
        x[1] = np.where(np.arange(n) % 3 == 0, fi.min_int // 2, fi.max_int // 2)          # two values: ties
        x[2] = int(rng.integers(fi.min_int, fi.max_int + 1))                               # constant
        g[2, : n // 2] = 0
        g[3] = rng.choice([fg.min_int, fg.max_int], size=n)                                # extreme g, narrow x
        x[3] = np.clip(int(rng.integers(fi.min_int, fi.max_int)) + rng.integers(0, 2, size=n), fi.min_int, fi.max_int)
        gamma[3] = fgam.max_int
        if n > 2:
            g[0] = 0                                                                       # zero gradients
        seeds = [int(v) for v in rng.integers(0, 1 << 32, size=4)] if gcfg.rounding == "stochastic" else None
        dx, stats = model.run(x, g, gamma, seeds)
        want_dx, want = expected(cfg, gcfg, x, g, gamma, seeds)
        assert np.array_equal(dx, want_dx), (n, np.argwhere(dx != want_dx)[:5])
        assert stats == want, n
        sat += sum(s["sat"] for s in stats)
    assert sat > 0, "no dx saturated: the test data is wrong"


@pytest.mark.parametrize("kind", HW_KINDS)
def test_the_rtl_backend_backward_is_golden_bit_for_bit(kind):
    """Backend.backward on float tensors: rtl and golden give the same dx, dgamma, dbeta and saturation counts."""
    _floats_are_golden(*hw_case(kind))


def _floats_are_golden(cfg, gcfg):
    rng = np.random.default_rng(11)
    x, dy = rng.normal(0.3, 1.5, size=(3, 50)), rng.normal(0.0, 1.0, size=(3, 50))
    gamma = rng.uniform(0.5, 1.5, size=3)
    kw = dict(in_scale=4.0 / cfg.in_fmt.max_int, seed=12345 if gcfg.rounding == "stochastic" else None)
    got = get_backend("rtl").backward(cfg, gcfg, x, dy, gamma, **kw)
    want = get_backend("golden").backward(cfg, gcfg, x, dy, gamma, **kw)
    for f in ("dx", "dgamma", "dbeta"):
        assert np.array_equal(getattr(got, f), getattr(want, f)), f
    assert (got.saturated_dx, got.saturated_dy, got.values) == (want.saturated_dx, want.saturated_dy, want.values)


def step_grads(model, x, y, backend):
    """Parameter gradients and the report of one cross-entropy step of a copy of `model` with backward=True."""
    m = copy.deepcopy(model)
    with to_hardware(m, backend=backend, fmt="s8", backward=True, warn_saturation=1.0) as hw:
        hw.calibrate([x])
        nn.functional.cross_entropy(m(x), y).backward()
        return [p.grad.clone() for p in m.parameters()], hw.report().as_dict()


@pytest.mark.skipif("range" not in RTL_BACKWARD_KINDS, reason="needs range's backward datapath")
def test_a_training_step_on_rtl_is_the_golden_step_bit_for_bit():
    """The README's model shape (conv, Range BN, ReLU, linear): one to_hardware(..., backend='rtl', backward=True)
    step gives every parameter gradient bit for bit as backend='golden', and the report counts the same backward."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), hn.RangeBatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3))
    x, y = torch.randn(6, 1, 6, 6), torch.randint(0, 3, (6,))
    rtl, rep_rtl = step_grads(model, x, y, "rtl")
    gold, rep_gold = step_grads(model, x, y, "golden")
    assert all(torch.equal(a, b) for a, b in zip(rtl, gold))
    keys = ("backward_calls", "backward_values", "saturated_dx", "saturated_dy")
    assert [rep_rtl["1"][k] for k in keys] == [rep_gold["1"][k] for k in keys] and rep_rtl["1"]["backward_calls"] == 1


@pytest.mark.skipif("range" not in RTL_BACKWARD_KINDS, reason="needs range's backward datapath")
def test_loss_backward_after_an_eval_forward_on_rtl_is_refused_by_name():
    """eval(): the batch-norm's forward runs on the running statistics, whose backward (the inference one) the
    backward datapath does not have: loss.backward() says so, naming the layer, instead of a silent other gradient."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), hn.RangeBatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3)).eval()
    x = torch.randn(6, 1, 6, 6)
    with to_hardware(model, backend="rtl", fmt="s8", backward=True, warn_saturation=1.0) as hw:
        hw.calibrate([x])
        out = model(x)
        with pytest.raises(ValueError, match=r"layer '1' \(RangeBatchNorm2d\) backward: backend='rtl': the backward "
                                             r"datapath has no inference-mode backward \(eval\(\): the running statistics\)"):
            out.sum().backward()
