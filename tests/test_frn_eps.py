"""FRN eps in real units (issue 19 item 5): the hook's golden route within 1 LSB of the float module at 1x1, 2x2 and
7x7 maps, eps 1e-6 and 1e-5, 8 and 16 bits, with ordinary input scales (one input LSB far from 1); the eps descriptor
field, its range and the refusal beyond it; golden == rtl bit for bit with unit far from 1."""
import math

import numpy as np
import pytest
import torch

import hwnorm.nn as hn
from hwnorm import NormConfig
from hwnorm.backends import get_backend
from hwnorm.config import FORMATS_8, FORMATS_16, FRN_KINDS, formats_from
from hwnorm.constants import channel_params
from hwnorm.fixed import round_mode
from hwnorm.golden import norm_train, train
from hwnorm.torch import to_hardware

KINDS = tuple(FRN_KINDS)
MODULES = {"frn": hn.FilterResponseNorm2d, "frn_range": hn.RangeFRN2d, "frn_l1": hn.L1FRN2d, "frn_linf": hn.LinfFRN2d}


def _ordinary(kind, fmt, side, eps, std, seed):
    """An FRN2d layer (8 channels) and x ~ N(0, 1) * std of shape (6, 8, side, side), on the hook's input grid:
    in_scale = 4 std / in_fmt.max_int (so one input LSB is far from 1), gamma, beta and tau on their grids (so the
    only differences from the float module are the datapath's), tau at the output minimum on half the channels."""
    f = formats_from(fmt)
    rng = np.random.default_rng(seed)
    c = 8
    few = kind == "frn_range" and side * side <= 10           # the default 10 chunks would hold one value each
    m = MODULES[kind](c, eps=eps, **({"chunks": 1} if few else {})).double()
    fg, fb, fo = f["gamma_fmt"], f["beta_fmt"], f["out_fmt"]
    with torch.no_grad():
        m.weight.copy_(torch.tensor(rng.integers(-2 << fg.frac, (2 << fg.frac) + 1, c) * fg.lsb).clamp(
            fg.min_int * fg.lsb, fg.max_int * fg.lsb))
        m.bias.copy_(torch.tensor(rng.integers(-1 << fb.frac, (1 << fb.frac) + 1, c) * fb.lsb))
        tau = rng.integers(-1 << fo.frac, 1, c) * fo.lsb
        tau[::2] = fo.min_int * fo.lsb
        m.tau.copy_(torch.tensor(tau))
    mx = f["in_fmt"].max_int
    scale = 4 * std / mx
    codes = np.clip(np.round(rng.standard_normal((6, c, side, side)) * std / scale), -mx, mx)
    codes[0, 0, 0, 0] = mx                                   # the calibrated in_max is mx * scale
    return m, torch.tensor(codes * scale), f["out_fmt"]


def _errors(kind, fmt, side, eps, std, seed=11, backend="golden"):
    """|y_hw - round(y_float)| in output LSBs, and the hook's report."""
    m, x, fo = _ordinary(kind, fmt, side, eps, std, seed)
    want = m(x).detach().numpy()
    with to_hardware(m, backend=backend, fmt=fmt, max_count=64) as hw:
        hw.calibrate([x])
        y = m(x).detach().numpy()
        rep = hw.report().as_dict()[""]
    want_codes = np.clip(round_mode(want / fo.lsb, "half_up"), fo.min_int, fo.max_int)
    return np.abs(y / fo.lsb - want_codes), rep


@pytest.mark.parametrize("fmt", ["s8", "s16"])
@pytest.mark.parametrize("eps", [1e-6, 1e-5])
@pytest.mark.parametrize("side", [1, 2, 7])
@pytest.mark.parametrize("kind", KINDS)
def test_hook_golden_within_one_lsb_of_float_at_every_map_size(kind, side, eps, fmt):
    if kind in ("frn_range", "frn_linf") and side == 1:       # one value: range 0, C_inf(1) = 0: y = gamma x / eps
        with pytest.raises(ValueError, match=r"chunks=1 on 1 value\(s\) .* leaves one value a chunk|C_inf\(1\) = 0"):
            _errors(kind, fmt, side, eps, 0.5)
        return
    for std in (0.5, 0.05):
        err, rep = _errors(kind, fmt, side, eps, std)
        assert err.max() <= 1.0, (std, err.max(), int((err > 1).sum()))
        assert rep["saturated_in"] == 0


def test_eps_descriptor_follows_the_input_unit():
    """The host sends eps / unit^2 (frn, inside the root) or eps / unit (the others) in the input format's units."""
    for kind in KINDS:
        cfg = NormConfig(kind=kind, eps=1e-5, **FORMATS_16)
        base = channel_params(cfg, 4)
        assert channel_params(cfg, 4, eps=cfg.eps) == base
        hw = channel_params(cfg, 4, eps=cfg.eps * 1e4)
        key = {"frn": "eps_n", "frn_l1": "neps", "frn_linf": "neps", "frn_range": "eps"}[kind]
        assert hw[key] == pytest.approx(base[key] * 1e4, rel=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_eps_beyond_the_field_is_refused_with_name_value_and_range(kind):
    cfg = NormConfig(kind=kind, **FORMATS_8)
    lo, hi = cfg.frn_eps_range
    assert lo <= cfg.eps <= hi
    with pytest.raises(ValueError, match=r"eps=.*input format's units.*out of range: allowed \(0, "):
        channel_params(cfg, 4, eps=hi * 4)
    m = MODULES[kind](2, eps=1e-2 if kind == "frn" else 0.5, **({"chunks": 1} if kind == "frn_range" else {}))
    x = torch.full((1, 2, 2, 2), 1e-6)                       # in_max far below sqrt(eps): eps beyond the field
    with to_hardware(m, backend="golden", fmt="s8", max_count=16) as hw:
        hw.calibrate([x])
        with pytest.raises(ValueError, match=r"layer ''.*eps=.*in_scale=.*allowed in_scale >="):
            m(x)


def test_zero_channels_output_beta_whatever_the_eps():
    """An all-zero FRN channel: y = beta (the TLU after) for every eps in the field's range, the smallest included."""
    for kind in KINDS:
        cfg = NormConfig(kind=kind, **FORMATS_8, max_count=64)
        lo, hi = cfg.frn_eps_range
        x = np.zeros((2, 5), dtype=np.int64)
        for e in (lo, cfg.eps, hi):
            r = train(cfg, x, [64, -100], [7, -3], eps=e)
            assert np.array_equal(r.y, [[7] * 5, [-3] * 5])


@pytest.mark.parametrize("kind, side", [("frn", 1), ("frn_range", 2)])
def test_hook_rtl_equals_golden_with_unit_far_from_one(kind, side):
    """The Verilog takes the host's eps the golden model takes (frn: eps_n; frn_range: the new eps field)."""
    m, x, _ = _ordinary(kind, "s8", side, 1e-5, 0.05, seed=4)
    outs = {}
    for backend in ("golden", "rtl"):
        with to_hardware(m, backend=backend, fmt="s8", max_count=64) as hw:
            hw.calibrate([x])
            outs[backend] = m(x).detach()
    assert torch.equal(outs["rtl"], outs["golden"])


def test_golden_backend_eps_units_match_float_backend_on_the_grid():
    """At unit = 1 (in_scale = 2**-in_frac) the descriptor eps is the config's eps: the frozen behaviour."""
    cfg = NormConfig(kind="frn", eps=1e-5, **FORMATS_8, max_count=64)
    x = np.arange(-8, 8, dtype=np.float64).reshape(4, 4) / 16
    r = get_backend("golden").forward(cfg, x, [1.0] * 4, [0.0] * 4, train=True, in_scale=1 / 16)
    codes = train(cfg, (x * 16).astype(np.int64), [64] * 4, [0] * 4).y
    assert np.array_equal(r.y, codes * cfg.out_fmt.lsb)


@pytest.mark.parametrize("kind", ["frn_linf", "frn_range"])
@pytest.mark.parametrize("fmts", [FORMATS_8, FORMATS_16], ids=["s8", "s16"])
def test_eps_alone_is_precise_over_the_field_range(kind, fmts):
    """sigma_hat = eps alone (frn_linf at n = 1, frn_range at n <= chunks), small gammas and inputs, eps log-uniform
    over the field's range: within 1/8 LSB before rounding and 1 LSB after (eps_int >= 2**P wherever the output is
    not saturated; with the deviation constants' CF alone, frn_linf s16 was 2 LSB off here)."""
    cfg = NormConfig(kind=kind, max_count=64, **fmts)
    fi, fg, fb, fo = cfg.in_fmt, cfg.gamma_fmt, cfg.beta_fmt, cfg.out_fmt
    lo, hi = cfg.frn_eps_range
    rng = np.random.default_rng(2)
    worst = (0.0, 0.0)
    for _ in range(150):
        e = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        n = 1 if kind == "frn_linf" else int(rng.integers(1, cfg.chunks + 1))
        x = rng.integers(fi.min_int, fi.max_int + 1, size=(16, n)) >> rng.integers(0, fi.bits, (16, 1))
        g = rng.integers(fg.min_int, fg.max_int + 1, size=16) >> rng.integers(0, fg.bits, 16)
        b = rng.integers(fb.min_int, fb.max_int + 1, size=16)
        r = train(cfg, x, g, b, eps=e)
        ref = norm_train(x * fi.lsb, g * fg.lsb, b * fb.lsb, kind, chunks=cfg.chunks, eps=e)[0] / fo.lsb
        want = np.clip(round_mode(ref, "half_up"), fo.min_int, fo.max_int)
        inside = (ref >= fo.min_int) & (ref <= fo.max_int)
        unr = float(np.abs(r.unrounded - ref)[inside].max()) if inside.any() else 0.0
        worst = (max(worst[0], float(np.abs(r.y - want).max())), max(worst[1], unr))
    assert worst[0] <= 1 and worst[1] < 0.125, worst


C_MAIN = r"""
#include <stdio.h>
#include "tc.h"
static void words(const tc_desc_t *d) { uint32_t w[TC_DESC_WORDS]; tc_pack_desc(d, w);
    for (int i = 0; i < TC_DESC_WORDS; i++) printf(" %08x", (unsigned)w[i]); }
int main(void) {
BODY
    return 0;
}
"""


@pytest.mark.parametrize("kind", KINDS)
def test_c_header_sets_the_eps_field_like_python(tmp_path, kind):
    """NAME.h's frn_eps(count, eps, d) (eps in the input format's units) packs what channel_params(eps=) gives, and
    refuses an eps beyond the field's top."""
    import random
    import shutil
    import subprocess

    from hwnorm.c_header import c_header
    from hwnorm.fields import pack, to_words
    gcc = shutil.which("gcc") or shutil.which("cc")
    assert gcc is not None, "gcc or cc must be on PATH for the C header tests"
    cfg = NormConfig(kind=kind, max_count=500, **FORMATS_16)
    lo, hi = cfg.frn_eps_range
    rng = random.Random(kind)
    cases = [(n, e) for n in (1, 7, 500) for e in (cfg.eps, hi, lo / 3, 1e-5 * 4e4, math.exp(rng.uniform(-40, 5)))]
    code, want = [], []
    for n, e in cases + [(7, hi * 2), (7, 0.0)]:
        code.append(f"{{ tc_desc_t d = {{0}}; tc_channel_params({n}u, &d); int r = tc_frn_eps({n}u, {e.hex()}, &d); "
                    f"printf(\"E %d\", r); words(&d); putchar('\\n'); }}")
        desc = {name: 0 for name, _, _ in cfg.channel_fields}
        ok = 0.0 < e <= hi
        desc.update(channel_params(cfg, n, eps=e if ok else None))
        words = to_words(pack(cfg.channel_fields, desc), sum(w for _, w, _ in cfg.channel_fields))
        want.append(f"E {0 if ok else -1}" + "".join(f" {w:08x}" for w in words))
    (tmp_path / "tc.h").write_text(c_header(cfg, "tc"))
    (tmp_path / "main.c").write_text(C_MAIN.replace("BODY", "\n".join("    " + c for c in code)))
    r = subprocess.run([gcc, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-o", "prog", "main.c", "-lm"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = subprocess.run([str(tmp_path / "prog")], capture_output=True, text=True, check=True).stdout.splitlines()
    assert got == want
