import pytest

from hwnorm import FixedFormat, NormConfig, default_configs
from hwnorm.config import KINDS
from hwnorm.constants import channel_params, cvar_count, inference_params


@pytest.mark.parametrize("kwargs, words", [
    (dict(kind="l3"), ["kind", "'l3'", "range, l1, linf, topk, l2"]),
    (dict(kind="l1", chunks=10), ["chunks=10", "kind='range' only", "allowed 1"]),
    (dict(kind="linf", k=3), ["k=3", "kind='linf'", "topk"]),
    (dict(kind="range", k=3), ["k=3", "kind='topk' only"]),
    (dict(kind="topk", k=0), ["k=0", "[1, 32]"]),
    (dict(kind="topk", k=33), ["k=33", "[1, 32]"]),
    (dict(lanes=3), ["lanes=3", "1, 2, 4, 8"]),
    (dict(lanes=16), ["lanes=16", "1, 2, 4, 8"]),
    (dict(stat_frac_bits=17), ["stat_frac_bits=17", "[0, 16]"]),
    (dict(max_count=0), ["max_count=0", "[1, 1048576]"]),
    (dict(max_count=1 << 21), ["max_count=2097152", "[1, 1048576]"]),
    (dict(chunks=0), ["chunks=0", "[1, 64]"]),
    (dict(chunks=65), ["chunks=65", "[1, 64]"]),
    (dict(rounding="nearest"), ["rounding='nearest'", "half_up", "half_even", "floor"]),
    (dict(eps=0.0), ["eps=0.0", "(0, 1)"]),
    (dict(eps=float("nan")), ["eps=nan"]),
    (dict(max_count=2.5), ["max_count", "2.5"]),
])
def test_bad_config_names_field_value_and_range(kwargs, words):
    with pytest.raises(ValueError) as e:
        NormConfig(**kwargs)
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("bits, frac, words", [(1, 0, ["bits=1", "[2, 32]"]), (33, 0, ["bits=33"]),
                                               (8, -1, ["frac=-1", "[0, 32]"]), (8, 40, ["frac=40"])])
def test_bad_format(bits, frac, words):
    with pytest.raises(ValueError) as e:
        FixedFormat(bits, frac)
    for w in words:
        assert w in str(e.value)


def test_format_parse_and_limits():
    f = FixedFormat.parse("s8.4")
    assert (f.bits, f.frac, f.signed, f.min_int, f.max_int) == (8, 4, True, -128, 127)
    u = FixedFormat.parse("u16.8")
    assert (u.min_int, u.max_int, str(u)) == (0, 65535, "u16.8")
    for bad in ("8.4", "s8", "x8.4", "sa.b"):
        with pytest.raises(ValueError, match="form"):
            FixedFormat.parse(bad)


def test_json_round_trip_and_hash():
    for cfg in default_configs().values():
        again = NormConfig.from_json(cfg.to_json())
        assert again == cfg and again.hash == cfg.hash
    a, b = NormConfig(), NormConfig(chunks=1)
    assert a.hash != b.hash
    assert NormConfig(lanes=4).hash != a.hash
    with pytest.raises(ValueError, match="unknown NormConfig field"):
        NormConfig.from_dict({"width": 4})


def test_kind_defaults():
    assert (NormConfig().chunks, NormConfig().eps) == (10, 1e-7)
    assert (NormConfig(kind="topk").k, NormConfig(kind="linf").k, NormConfig(kind="l2").eps) == (10, 1, 1e-5)
    assert [NormConfig(kind=k).passes for k in ("range", "l1", "linf", "topk", "l2")] == [2, 3, 2, 2, 2]


def test_derived_widths_are_consistent():
    for cfg in list(default_configs().values()) + [NormConfig(max_count=1), NormConfig(beta_fmt=FixedFormat(16, 14))]:
        w = cfg.widths()
        assert cfg.eps_int >= 1
        assert cfg.shift_min < cfg.shift_lo <= cfg.shift_max
        assert cfg.acc_bits > cfg.a_bits + cfg.in_fmt.bits
        assert cfg.den_bits > cfg.in_fmt.bits
        assert cfg.scale_exp_range[0] < cfg.scale_exp_range[1]
        assert cfg.const_frac_bits > cfg.precision_bits
        assert all(isinstance(v, int) for v in w.values())
    wide_beta = NormConfig(beta_fmt=FixedFormat(16, 14))
    assert wide_beta.shift_min == 14 - 5


def test_field_layouts_cover_hardware_ports():
    cfg = NormConfig()
    names = [f[0] for f in cfg.channel_fields]
    assert names == ["infer", "count", "chunk_size", "c_full", "c_last", "gamma", "beta", "mean", "scale_m",
                     "scale_exp"]
    assert [f[0] for f in NormConfig(kind="topk").channel_fields][2] == "c"
    assert [f[0] for f in NormConfig(kind="l2").channel_fields][2] == "eps_n"
    assert [f[0] for f in cfg.stats_fields] == ["sum", "den", "sat", "error"]


def test_cvar_derives_k_from_alpha_and_only_cvar_serializes_alpha():
    cfg = NormConfig(kind="cvar", alpha=0.9, max_count=300)
    assert cfg.k == 30 and cfg.passes == 2 and cfg.to_dict()["alpha"] == 0.9
    assert NormConfig.from_json(cfg.to_json()) == cfg
    assert [NormConfig(kind="cvar", alpha=0.9, max_count=m).k for m in (1, 9, 11, 301, 320)] == [1, 1, 2, 31, 32]
    assert "alpha" not in NormConfig(kind="l2").to_dict()        # the other kinds' JSON and hashes are as before
    assert NormConfig(kind="cvar").alpha == 0.995 and NormConfig(kind="cvar").k == 21


def test_cvar_count_does_not_round_an_exact_product_up():
    assert (1 - 0.7) * 10 > 3 and cvar_count(10, 0.7) == 3         # 3.0000000000000004 in float64
    assert [cvar_count(n, 0.9) for n in (1, 10, 11, 20, 21)] == [1, 1, 2, 2, 3]
    assert channel_params(NormConfig(kind="cvar", alpha=0.9, max_count=300), 21)["m"] == 3


def test_new_kinds_passes():
    assert [NormConfig(kind=k).passes for k in ("mad", "semidev", "cvar")] == [3, 3, 2]


def _desc(cfg, n, **fields):
    d = {name: 0 for name, _, _ in cfg.channel_fields}
    d.update(channel_params(cfg, n) if not cfg.inference_only else {}, count=n)
    d.update(fields)
    return d


@pytest.mark.parametrize("kind", KINDS)
def test_the_host_constants_of_every_count_are_accepted(kind):
    """NormConfig.descriptor_error never refuses what hwnorm.constants gives the core (training and inference)."""
    cfg = NormConfig(kind=kind, max_count=300)
    for n in list(range(1, 40)) + [299, 300]:
        assert cfg.descriptor_error(_desc(cfg, n)) is None, n
        assert cfg.descriptor_error(_desc(cfg, n, infer=1, **inference_params(cfg, -0.5, 3.0))) is None


@pytest.mark.parametrize("cfg, fields, words", [
    (NormConfig(), {"count": 0}, "count=0 is out of range: allowed 1 .. max_count = 4096"),
    (NormConfig(max_count=300), {"count": 301}, "count=301 is out of range: allowed 1 .. max_count = 300"),
    (NormConfig(), {"count": 31, "chunk_size": 3}, "chunk_size=3 is out of range: allowed chunk_size >= 1 and chunks * "
                                                   "chunk_size >= count (at most chunks = 10 chunks) (count=31)"),
    (NormConfig(), {"count": 31, "chunk_size": 0}, "chunk_size=0"),
    (NormConfig(kind="cvar", max_count=1024), {"count": 1024, "m": 7}, "m=7 is out of range: allowed 1 .. min(k = 6"),
    (NormConfig(kind="cvar", max_count=1024), {"count": 3, "m": 4}, "m=4 is out of range"),
    (NormConfig(kind="cvar", max_count=1024), {"count": 3, "m": 0}, "m=0 is out of range"),
    (NormConfig(kind="l1"), {"count": 5, "neps": 0}, "neps=0 is out of range: allowed >= 1"),
    (NormConfig(kind="frn"), {"count": 5, "eps_n": 0}, "eps_n=0 is out of range: allowed >= 1"),
    (NormConfig(), {"count": 5, "infer": 1, "mean": 32513}, "mean=32513 is out of range: allowed -32768 .. 32512"),
    (NormConfig(inference_only=True), {"count": 0}, "count=0 is out of range"),
])
def test_refused_descriptors_name_the_field_value_and_range(cfg, fields, words):
    d = _desc(cfg, max(1, min(fields["count"], cfg.max_count)), **fields)
    assert words in (cfg.descriptor_error(d) or "")


def test_a_rule_applies_only_to_the_channels_that_read_the_field():
    cfg = NormConfig(kind="l1")
    assert cfg.descriptor_error(_desc(cfg, 5, infer=1, neps=0)) is None                # inference reads no neps
    assert cfg.descriptor_error(_desc(cfg, 5, scale_exp=100)) is None                  # training reads no scale_exp
    ov = NormConfig(kind="l1", lanes=4, max_count=1024, overlap=True)
    assert ov.descriptor_error({"count": 0}) is None                                   # the end of a sequence
    # every scale_exp is accepted (a large gain takes the special regime): no rule for it
    assert [r[0] for r in NormConfig(inference_only=True).descriptor_rules] == ["count", "mean"]


def test_the_gain_mantissa_is_a_field_with_a_floor_and_the_default_spelled_out_is_the_same_configuration():
    cfg = NormConfig()
    assert cfg.a_bits == cfg.gain_bits == cfg.mantissa_min == cfg.out_fmt.bits + cfg.shift_lo + 2
    assert NormConfig(mantissa_bits=cfg.mantissa_min).hash == cfg.hash            # no duplicate builds
    wide = NormConfig(mantissa_bits=20)
    assert wide.a_bits == 20 and wide.hash != cfg.hash and "mantissa_bits=20" in wide.describe()
    assert wide.dn_bits == 22 and wide.acc_bits > cfg.acc_bits
    for bad in (cfg.mantissa_min - 1, 49, 2.5, True):
        with pytest.raises(ValueError, match=r"mantissa_bits=.* (is out of range: allowed \[14, 48\]|is not an integer)"):
            NormConfig(mantissa_bits=bad)
    ew = NormConfig(elementwise=True, mantissa_bits=30)         # the core's x_hat is wider: its floor is too
    assert ew.core.gain_bits == 30 and ew.mantissa_min == ew.core.mantissa_min > cfg.mantissa_min


def test_least_lean_keeps_the_formats_and_takes_the_least_mantissa():
    from hwnorm.config import GradConfig
    g = GradConfig.for_width("s16", "stochastic")
    lean = g.least_lean()
    assert lean.lean and lean.mantissa_bits == g.mantissa_min and (lean.grad_fmt, lean.dx_fmt, lean.rounding) == \
        (g.grad_fmt, g.dx_fmt, g.rounding)
