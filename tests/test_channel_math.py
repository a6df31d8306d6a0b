"""ChannelMath alone in amaranth.sim: a stand-in statistics unit whose outputs the test sets from a few lines of
NumPy, the training ('mid' for L1, then 'train') and the inference programs, against the golden model's
per-channel constants (Den, and A, B, SH and the special regime's flag, sign and q from golden.channel_constants);
the latency ChannelMath.latency_for states."""
import random

import numpy as np
import pytest
from amaranth.hdl import Signal
from amaranth.lib.wiring import Out
from amaranth.sim import Simulator

from hwnorm.config import NormConfig
from hwnorm.constants import channel_params
from hwnorm.golden.bitexact import infer_constants, train, train_constants
from hwnorm.hdl.channel_math import ChannelMath
from hwnorm.hdl.statistics import StatisticsUnit

MAX_COUNT = 256
GUARD_CYCLES = 2000


class StandInStats:
    """The statistics unit's outputs as free signals the testbench sets (what ChannelMath reads)."""

    def __init__(self, cfg):
        unit = StatisticsUnit(cfg)
        unit._MustUse__silence = True
        for name, member in unit.signature.members.items():
            if member.flow == Out:
                setattr(self, name, Signal(member.shape, name=f"st_{name}"))


def ref_stats(kind, x, chunk_size=None, floor_mean=None):
    """The statistics unit's outputs for channel x, in a few lines of NumPy."""
    x = np.asarray(x, dtype=np.int64)
    out = {"sum": int(x.sum())}
    if kind == "l2":
        out["sq_sum"] = int((x * x).sum())
    elif kind == "linf":
        out.update(hi=int(x.max()), lo=int(x.min()))
    elif kind == "range":
        ranges = [int(c.max() - c.min()) for c in np.split(x, range(chunk_size, len(x), chunk_size))]
        out.update(r_closed=sum(ranges[:-1]), r_open=ranges[-1])
    elif kind in ("l1", "mad") and floor_mean is not None:
        above = x[x > floor_mean]
        out.update(s_hi=int(above.sum()), c_hi=len(above))
    elif kind == "semidev" and floor_mean is not None:
        below = x[x <= floor_mean]
        out.update(s_lo=int(below.sum()), c_lo=len(below), q_lo=int((below * below).sum()))
    return out


def check_channels(cfg, channels):
    """Each (x, gamma, beta, inference or None) through the stand-in: den, a, b, sh against the golden model."""
    dut = ChannelMath(cfg)
    st = StandInStats(cfg)
    dut.stats_unit = st
    results = []

    async def program(ctx, entry):
        ctx.set(dut.entry, ChannelMath.ENTRIES.index(entry))
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cycles = 1
        while not ctx.get(dut.done):
            await ctx.tick()
            cycles += 1
            assert cycles < GUARD_CYCLES, f"done never came ({entry})"
        await ctx.tick()
        assert not ctx.get(dut.done), "done is longer than one cycle"
        return cycles + 1

    async def bench(ctx):
        for x, gamma, beta, inference in channels:
            n = len(x)
            desc = {name: 0 for name, _, _ in cfg.channel_fields}
            desc.update(count=n, gamma=gamma, beta=beta)
            if inference is None:
                desc.update(channel_params(cfg, n))
            else:
                desc.update(infer=1, **inference)
            for name, value in desc.items():
                ctx.set(getattr(dut.chan, name), value)
            got = {}
            if inference is None:
                # an FRN kind: its centred kind's statistics (frn_l1's of the values above 0, in its one pass)
                stats = ref_stats(cfg.stat_kind, x, desc.get("chunk_size"), 0 if cfg.frn else None)
                for name, value in stats.items():
                    ctx.set(getattr(st, name), value)
                if cfg.passes == 3:
                    got["mid_cycles"] = await program(ctx, "mid")
                    got["floor_mean"] = ctx.get(dut.floor_mean)
                    for name, value in ref_stats(cfg.stat_kind, x, floor_mean=got["floor_mean"]).items():
                        ctx.set(getattr(st, name), value)
                got["cycles"] = await program(ctx, "train")
                got["den"] = ctx.get(dut.den)
            else:
                got["cycles"] = await program(ctx, "infer")
            got.update({name: ctx.get(getattr(dut, name)) for name in ("a", "b", "sh", "special", "neg", "q_lo", "q_hi")})
            results.append(got)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results


def _gain(g) -> dict:
    return {"a": g.a, "b": g.b, "sh": g.sh, "special": int(g.special), "neg": int(g.neg), "q_lo": g.q, "q_hi": g.q + 1}


def expected(cfg, x, gamma, beta, inference):
    """Den (training) and the lane constants as the golden model forms them."""
    if inference is not None:
        return _gain(infer_constants(cfg, [inference["mean"]], [inference["scale_m"]], [inference["scale_exp"]],
                                     [gamma], [beta])[0])
    n = len(x)
    res = train(cfg, np.asarray(x)[None, :], [gamma], [beta])
    den = int(res.stats.den[0])
    g = train_constants(cfg, n, res.stats.sum, res.stats.den, [gamma], [beta])[0]
    assert (g.a, g.sh) == (int(res.mult[0]), int(res.shift[0]))       # the golden model's own normalize pass agrees
    return {"den": den, **_gain(g)}


def channel_set(cfg, rnd):
    fmt, g, b = cfg.in_fmt, cfg.gamma_fmt, cfg.beta_fmt
    chans = []
    for n in (1, 2, 3, 7, 16, 33, rnd.randint(34, MAX_COUNT), MAX_COUNT):
        x = [rnd.randint(fmt.min_int, fmt.max_int) for _ in range(n)]
        chans.append((x, rnd.randint(g.min_int, g.max_int), rnd.randint(b.min_int, b.max_int), None))
    chans.append(([fmt.max_int] * 5 + [fmt.min_int] * 5, g.max_int, b.min_int, None))     # the widest deviation
    chans.append(([3] * 9, g.min_int, b.max_int, None))                                   # no deviation: eps only
    chans.append(([3] * 30 + [4], g.max_int, b.min_int, None))                 # a huge gain: the special regime
    chans.append(([-2] * 20 + [-3], g.min_int, 0, None))                       # the same with gamma < 0
    chans.append(([fmt.max_int, fmt.min_int] * 8, 1, b.max_int, None))          # the smallest gain: SH clamped
    chans.append(([1, 2, 3], 0, b.min_int, None))                              # gamma = 0
    chans.append(([0] * 6, g.max_int, b.max_int, None))                        # all zero: FRN's eps alone
    lo, hi = cfg.scale_exp_range
    for _ in range(3):
        inf = {"mean": rnd.randint(fmt.min_int, fmt.max_int) << cfg.stat_frac_bits,
               "scale_m": rnd.randint(0, (1 << (cfg.recip_bits + 1)) - 1), "scale_exp": rnd.randint(lo, hi)}
        chans.append(([0] * 4, rnd.randint(g.min_int, g.max_int), rnd.randint(b.min_int, b.max_int), inf))
    return chans


@pytest.mark.parametrize("kind,bits,max_count", [
    ("l2", 8, MAX_COUNT), ("range", 8, MAX_COUNT), ("linf", 8, MAX_COUNT), ("l1", 8, MAX_COUNT), ("mad", 8, MAX_COUNT),
    ("semidev", 8, MAX_COUNT), ("l2", 16, MAX_COUNT), ("range", 16, MAX_COUNT), ("frn", 8, MAX_COUNT),
    ("frn_range", 8, MAX_COUNT), ("frn_l1", 8, MAX_COUNT), ("frn_linf", 16, MAX_COUNT),
    ("range", 8, 4096), ("l2", 16, 4096),             # the default count: the special regime's widest shift J
    ("l1", 8, -18), ("frn_range", 16, -30)])          # a wider gain mantissa (mantissa_bits 18 / 30)
def test_channel_math_forms_den_a_b_sh_as_the_golden_model(kind, bits, max_count):
    fmt = {8: "s8.4", 16: "s16.8"}[bits]
    mantissa = -max_count if max_count < 0 else None
    max_count = MAX_COUNT if max_count < 0 else max_count
    cfg = NormConfig(kind=kind, lanes=1, max_count=max_count, in_fmt=fmt, out_fmt=fmt, mantissa_bits=mantissa)
    rnd = random.Random(f"{kind}{bits}{max_count}{mantissa}")
    channels = channel_set(cfg, rnd)
    regimes = set()
    for got, (x, gamma, beta, inference) in zip(check_channels(cfg, channels), channels):
        want = expected(cfg, x, gamma, beta, inference)
        regimes.add("special" if want["special"] else "clamped" if want["sh"] == cfg.shift_max else "regular")
        assert {k: got[k] for k in want} == want, (len(x), gamma, beta, inference)
        entry = "infer" if inference is not None else "train"
        assert got["cycles"] == ChannelMath.latency_for(cfg, entry)
        if "mid_cycles" in got:
            assert got["mid_cycles"] == ChannelMath.latency_for(cfg, "mid")
            assert got["floor_mean"] == int(np.sum(x)) // len(x)
    assert regimes == {"special", "clamped", "regular"}, regimes        # the channel set reaches every regime
