"""ChannelMath alone in amaranth.sim: a stand-in statistics unit whose outputs the test sets from a few lines of
NumPy, the training ('mid' for L1, then 'train') and the inference programs, against the golden model's
per-channel constants (Den, and A, B, SH from golden.channel_constants); the latency ChannelMath.latency_for states."""
import random

import numpy as np
import pytest
from amaranth.hdl import Signal
from amaranth.lib.wiring import Out
from amaranth.sim import Simulator

from hwnorm.config import NormConfig
from hwnorm.constants import channel_params
from hwnorm.golden.bitexact import channel_constants, train
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
            got.update(a=ctx.get(dut.a), b=ctx.get(dut.b), sh=ctx.get(dut.sh))
            results.append(got)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results


def expected(cfg, x, gamma, beta, inference):
    """Den (training) and A, B, SH as the golden model forms them."""
    if inference is not None:
        k = 1 << cfg.stat_frac_bits
        a, b, sh = channel_constants(cfg, k, inference["mean"], gamma * inference["scale_m"],
                                     cfg.inf_shift_base - inference["scale_exp"], beta)
        return {"a": a, "b": b, "sh": sh}
    n = len(x)
    res = train(cfg, np.asarray(x)[None, :], [gamma], [beta])
    den = int(res.stats.den[0])
    lead = den.bit_length() - 1
    recip = (1 << (lead + cfg.recip_bits)) // den
    c = 0 if cfg.frn else int(np.sum(x))                              # FRN: no centring
    a, b, sh = channel_constants(cfg, n, c, gamma * recip, lead + cfg.shift_base, beta)
    assert (a, sh) == (int(res.mult[0]), int(res.shift[0]))       # the golden model's own normalize pass agrees
    return {"den": den, "a": a, "b": b, "sh": sh}


def channel_set(cfg, rnd):
    fmt, g, b = cfg.in_fmt, cfg.gamma_fmt, cfg.beta_fmt
    chans = []
    for n in (1, 2, 3, 7, 16, 33, rnd.randint(34, MAX_COUNT), MAX_COUNT):
        x = [rnd.randint(fmt.min_int, fmt.max_int) for _ in range(n)]
        chans.append((x, rnd.randint(g.min_int, g.max_int), rnd.randint(b.min_int, b.max_int), None))
    chans.append(([fmt.max_int] * 5 + [fmt.min_int] * 5, g.max_int, b.min_int, None))     # the widest deviation
    chans.append(([3] * 9, g.min_int, b.max_int, None))                                   # no deviation: eps only
    lo, hi = cfg.scale_exp_range
    for _ in range(3):
        inf = {"mean": rnd.randint(fmt.min_int, fmt.max_int) << cfg.stat_frac_bits,
               "scale_m": rnd.randint(0, (1 << (cfg.recip_bits + 1)) - 1), "scale_exp": rnd.randint(lo, hi)}
        chans.append(([0] * 4, rnd.randint(g.min_int, g.max_int), rnd.randint(b.min_int, b.max_int), inf))
    return chans


@pytest.mark.parametrize("kind,bits", [("l2", 8), ("range", 8), ("linf", 8), ("l1", 8), ("mad", 8), ("semidev", 8),
                                       ("l2", 16), ("range", 16), ("frn", 8), ("frn_range", 8), ("frn_l1", 8),
                                       ("frn_linf", 16)])
def test_channel_math_forms_den_a_b_sh_as_the_golden_model(kind, bits):
    fmt = {8: "s8.4", 16: "s16.8"}[bits]
    cfg = NormConfig(kind=kind, lanes=1, max_count=MAX_COUNT, in_fmt=fmt, out_fmt=fmt)
    rnd = random.Random(f"{kind}{bits}")
    channels = channel_set(cfg, rnd)
    for got, (x, gamma, beta, inference) in zip(check_channels(cfg, channels), channels):
        want = expected(cfg, x, gamma, beta, inference)
        assert {k: got[k] for k in want} == want, (len(x), gamma, beta, inference)
        entry = "infer" if inference is not None else "train"
        assert got["cycles"] == ChannelMath.latency_for(cfg, entry)
        if "mid_cycles" in got:
            assert got["mid_cycles"] == ChannelMath.latency_for(cfg, "mid")
            assert got["floor_mean"] == int(np.sum(x)) // len(x)
