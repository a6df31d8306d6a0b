"""cocotb regression of NormDatapath (every kind): bit-exact against hwnorm.golden, with random
input gaps and output back-pressure. The configuration comes from HWNORM_CONFIG (JSON), set by
hwnorm/verify/runner.py; HWNORM_FULL=1 makes the random tests longer. With overlap=True the testbench drives the
interleaved order (hwnorm/verify/tb.py NormTB._queue_overlap) and the same tests run unchanged.
"""
from __future__ import annotations

import os
import random

import cocotb
import numpy as np

from hwnorm.config import NormConfig
from hwnorm.constants import inference_params
from hwnorm.verify.tb import NormTB, refusals, refused_descriptor

CFG = NormConfig.from_json(os.environ["HWNORM_CONFIG"])
PASSES = 1 if CFG.inference_only else CFG.passes      # an inference-only build: every channel one pass
FULL = os.environ.get("HWNORM_FULL") == "1"
FI, FG, FB = CFG.in_fmt, CFG.gamma_fmt, CFG.beta_fmt


def _counts():
    """1, 2, a prime, a power of two, fewer values than chunks need, and the configured maximum."""
    n = [1, 2, 13, 64, 11, CFG.max_count]
    if FULL:
        n += [3, 97, 128, 255, CFG.max_count - 1]
    return sorted({c for c in n if 1 <= c <= CFG.max_count})


def _affine(rng):
    g = int(rng.integers(max(FG.min_int, -(2 << FG.frac)), min(FG.max_int, 2 << FG.frac) + 1))
    b = int(rng.integers(FB.min_int, FB.max_int + 1) // 4)
    return g, b


def _x(rng, n):
    return rng.integers(FI.min_int, FI.max_int + 1, size=n)


async def _bench(dut, gap=0.0, stall=0.0):
    """A started testbench and its random generators (seeded from cocotb's RANDOM_SEED)."""
    seed = cocotb.RANDOM_SEED
    rng = np.random.default_rng(seed)
    tb = NormTB(dut, CFG, random.Random(seed), gap=gap, stall=stall)
    await tb.start()
    return tb, rng


def _inference(rng):
    """Random running statistics, as the host maps them to the hardware format."""
    span = (FI.max_int - FI.min_int) * FI.lsb
    mean = float(rng.uniform(FI.min_int, FI.max_int)) * FI.lsb
    scale = float(2.0 ** rng.uniform(-1, 4)) / span
    return inference_params(CFG, mean, scale)


@cocotb.test()
async def random_counts(dut):
    """Random data at every interesting count, 30% input gaps, 30% output back-pressure."""
    tb, rng = await _bench(dut, 0.3, 0.3)
    for i, n in enumerate(_counts()):
        for _ in range(3 if FULL else 1):
            tb.channel(_x(rng, n), *_affine(rng))
        if i == 2:
            tb.flush()      # overlap: end a sequence mid-test, then start the next one
    for n in (5, 40):       # narrow data around a random centre: small deviations, large multipliers
        centre = int(rng.integers(FI.min_int + 4, FI.max_int - 3))
        tb.channel(centre + rng.integers(-3, 4, size=n), *_affine(rng))
    await tb.run()
    tb.record("random_counts")


@cocotb.test()
async def inference(dut):
    """Inference channels (one pass, given mean/scale) interleaved with training channels."""
    tb, rng = await _bench(dut, 0.25, 0.25)
    for i, n in enumerate((1, 7, 64, 13, min(CFG.max_count, 300)) * (3 if FULL else 1)):
        tb.channel(_x(rng, n), *_affine(rng), inference=_inference(rng))
        if i % 2:
            tb.channel(_x(rng, n), *_affine(rng))
    # extreme scales: the smallest and largest the configuration accepts
    lo, hi = CFG.scale_exp_range
    for exp, man in ((lo, 1 << CFG.recip_bits), (hi, (1 << (CFG.recip_bits + 1)) - 1)):
        tb.channel(_x(rng, 9), *_affine(rng), inference={"mean": 0, "scale_m": man, "scale_exp": exp})
    await tb.run()
    tb.record("inference")


@cocotb.test()
async def all_equal(dut):
    """Zero deviation: sigma is eps alone and every output is beta."""
    tb, rng = await _bench(dut, 0.2, 0.2)
    tb.flush(empty=True)    # overlap: an end-of-sequence descriptor with nothing pending is ignored
    for n, v in ((1, FI.max_int), (7, 0), (64, FI.min_int), (33, 3)):
        tb.channel(np.full(min(n, CFG.max_count), v), *_affine(rng))
    await tb.run()
    tb.record("all_equal")


@cocotb.test()
async def extremes(dut):
    """Most negative / most positive inputs, alternating and with single outliers, extreme gamma/beta."""
    tb, rng = await _bench(dut, 0.1, 0.1)
    lo, hi = FI.min_int, FI.max_int
    n = min(CFG.max_count, 50)
    alt = np.where(np.arange(n) % 2 == 0, lo, hi)
    outlier = np.full(n, lo)
    outlier[n // 2] = hi
    mirrored = hi - (outlier - lo)          # all most-positive, one most-negative
    for x in (alt, outlier, mirrored, np.full(CFG.max_count, hi)):
        tb.channel(x, FG.max_int, 0)
        tb.channel(x, FG.min_int, FB.max_int)
    await tb.run()
    tb.record("extremes")


@cocotb.test()
async def ties(dut):
    """Repeated values: ties for the maximum, the minimum and the k-th largest deviation."""
    tb, rng = await _bench(dut, 0.2, 0.2)
    a, b = FI.min_int // 2 if FI.signed else 1, FI.max_int // 2
    for n in (2, 12, 31, min(CFG.max_count, 64)):
        n = min(n, CFG.max_count)
        two = np.where(np.arange(n) % 3 == 0, a, b)                 # only two distinct values
        tb.channel(two, *_affine(rng))
        sym = np.concatenate([np.full(n // 2, a), np.full(n - n // 2, b)])   # symmetric: ties in |x - mu|
        tb.channel(rng.permutation(sym), *_affine(rng))
        few = rng.choice([a, 0, b], size=n)
        tb.channel(few, *_affine(rng))
    await tb.run()
    tb.record("ties")


@cocotb.test()
async def saturating_affine(dut):
    """gamma and beta at their limits: outputs saturate and the hardware counts them."""
    tb, rng = await _bench(dut, 0.2, 0.3)
    total = 0
    for g in (FG.max_int, FG.min_int):
        for b in (FB.max_int, FB.min_int, 0):
            total += tb.channel(_x(rng, min(30, CFG.max_count)), g, b).stats["sat"]
    await tb.run()
    assert total > 0, "saturation case did not saturate: test data is wrong"
    tb.record("saturating_affine", saturated=total)


@cocotb.test()
async def gain_regimes(dut):
    """The normalize constants' regimes (docs/numerics.md): a huge gain takes the special regime, its x0 and x0 + 1 on
    a two-point line and every other value forced to saturate (inference with a large scale and a mean off the grid;
    range with fewer values than chunks: sigma is eps alone); a tiny gain clamps SH at SH_max; one value off a constant
    channel (a gain in the regular regime even for an elementwise build's wide x_hat); gamma = 0."""
    tb, rng = await _bench(dut, 0.2, 0.2)
    lo, hi = FI.min_int, FI.max_int
    n = min(CFG.max_count, 24)
    for sign in (1, -1):
        mean = float(rng.uniform(lo + 4, hi - 4)) * FI.lsb
        x0 = int(np.floor(mean / FI.lsb))
        near = np.clip(x0 + rng.integers(-3, 5, size=n), lo, hi)          # x0 - 3 .. x0 + 4
        huge = inference_params(CFG, mean, 2.0 ** (CFG.recip_bits + 40) * (1 + float(rng.random())))
        tb.channel(near, sign * FG.max_int, int(rng.integers(FB.min_int, FB.max_int + 1) // 4), inference=huge)
        tiny = inference_params(CFG, mean, 2.0 ** (CFG.recip_bits - 60))
        tb.channel(_x(rng, n), sign, 0, inference=tiny)
        if not CFG.inference_only:
            if CFG.stat_kind == "range":           # every chunk holds one value: sigma is eps alone
                tb.channel(_x(rng, min(CFG.max_count, CFG.chunks)), sign * FG.max_int, 0)
            alt = np.where(np.arange(n) % 2 == 0, lo, hi)                  # the widest deviation, the smallest gamma
            tb.channel(alt, sign, FB.max_int // 2)
            one = np.full(min(CFG.max_count, 300), int(rng.integers(lo, hi)))  # one value off: a tiny deviation
            one[int(rng.integers(len(one)))] += 1
            tb.channel(one, sign * FG.max_int, 0)
    tb.channel(_x(rng, n), 0, FB.min_int // 2)
    await tb.run()
    tb.record("gain_regimes")


@cocotb.test()
async def reset_mid_channel(dut):
    """Reset during the first pass and during the last pass; the next channels must be exact."""
    tb, rng = await _bench(dut, 0.2, 0.2)
    n = min(CFG.max_count, 40)
    beats = -(-n // CFG.lanes)
    for stop_after in (beats // 2, (PASSES - 1) * beats + beats // 2):
        tb.channel(_x(rng, n), *_affine(rng))
        tb.flush()
        while len(tb.data.accepted) < max(1, stop_after):
            await tb.step()
        await tb.reset()
        tb.channel(_x(rng, n), *_affine(rng))
        await tb.run()
    tb.record("reset_mid_channel")


@cocotb.test()
async def back_to_back(dut):
    """Channels back to back with no gaps or back-pressure: one beat (`lanes` values) per clock in
    every pass, and a fixed latency between passes."""
    tb, rng = await _bench(dut)
    counts = [min(CFG.max_count, c) for c in (16, 100, 1, 37, 256)]
    for n in counts:
        tb.channel(_x(rng, n), *_affine(rng))
    tb.channel(_x(rng, counts[1]), *_affine(rng), inference=_inference(rng))
    await tb.run()
    acc = tb.data.accepted
    assert len(tb.segments) == len(counts) * PASSES + 1
    for sg in tb.segments:                      # every pass, in the order it went in
        run, n = acc[sg["start"]:sg["end"]], len(sg["rec"]["x"])
        assert run[-1] - run[0] == len(run) - 1, \
            f"pass {sg['label']} of a {n}-value channel took {run[-1] - run[0] + 1} cycles for {len(run)} beats"
    if CFG.overlap:
        return await _overlap_throughput(dut, tb, rng)
    # a whole channel (up to 1024 values), descriptor to statistics word, with nothing stalling it
    n = min(CFG.max_count, 1024)
    start = tb.cycle
    tb.channel(_x(rng, n), *_affine(rng))
    await tb.run()
    whole = tb.stats_at[-1] - tb.chan.accepted[-1] + 1
    dut._log.info("whole channel of %d values: %d cycles, %.3f values per cycle", n, whole, n / whole)
    assert tb.chan.accepted[-1] >= start
    rec = tb.record("back_to_back", values_per_cycle=CFG.lanes, channel_values=n, channel_cycles=whole)
    dut._log.info("back_to_back: %d cycles, gaps %s", tb.cycle, tb.gaps)
    return rec


async def _overlap_throughput(dut, tb, rng, channels: int = 6):
    """Overlap mode: `channels` channels of up to 1024 values back to back; the steady-state period is the
    cycles between two statistics words (channel c's math hidden under channel c-1's normalize pass), the
    run's rate counts the first channel's math and the last one's flush too."""
    n = min(CFG.max_count, 1024)
    first = len(tb.stats_at)
    start = len(tb.chan.accepted)
    for _ in range(channels):
        tb.channel(_x(rng, n), *_affine(rng))
    await tb.run()
    at = tb.stats_at[first:]
    periods = [b - a for a, b in zip(at, at[1:])][:-1]        # the last one waits for the flush
    assert len(set(periods)) == 1, f"the steady-state channel period is not fixed: {periods}"
    period = periods[0]
    run_cycles = at[-1] - tb.chan.accepted[start] + 1
    rate, run_rate, target = n / period, channels * n / run_cycles, 0.9 * CFG.lanes / CFG.passes
    dut._log.info("overlap: %d channels of %d values: %d cycles per channel (%.3f values per clock; target %.2f), "
                  "whole run %d cycles (%.3f values per clock)", channels, n, period, rate, target, run_cycles, run_rate)
    if n >= 1024:
        assert rate >= target, f"overlap: {rate:.3f} values per clock, below 0.9 x lanes / passes = {target:.2f}"
    return tb.record("back_to_back", values_per_cycle=CFG.lanes, channel_values=n, channel_cycles=period,
                     overlap_channels=channels, overlap_run_cycles=run_cycles, overlap_rate=round(rate, 4),
                     overlap_run_rate=round(run_rate, 4))


def _boundary_counts():
    """Counts at every boundary the coverage model names: 1, 2, around lanes, every masked width of the
    last beat, chunk sizes 1..2*lanes+1 (chunk starts on every lane), fewer chunks than asked, k +- 1."""
    p, top = CFG.lanes, CFG.max_count
    c = {1, 2, p - 1, p, p + 1} | {p * m + r for m in (1, 2) for r in range(p)}
    if CFG.kind == "range" and CFG.chunks > 1:
        k = CFG.chunks
        c |= {k - 1, k + 1, 3 * k + 1} | {k * m for m in range(1, 2 * p + 2)}
    if CFG.kind == "topk":
        c |= {CFG.k - 1, CFG.k, CFG.k + 1}
    if CFG.kind == "cvar":                          # where the count of averaged values m steps from 1 to 2 to 3
        c |= {int(j / (1 - CFG.alpha)) + d for j in (1, 2) for d in (0, 1)}
    return sorted(v for v in c if 1 <= v <= top)


@cocotb.test()
async def boundaries(dut):
    """Channels at every boundary count, random and two-valued data, with input gaps and back-pressure."""
    tb, rng = await _bench(dut, 0.2, 0.2)
    a, b = FI.min_int // 3, FI.max_int // 2
    for i, n in enumerate(_boundary_counts()):
        tb.channel(_x(rng, n), *_affine(rng))
        tb.channel(rng.choice([a, b], size=n), *_affine(rng))
        if i % 3 == 0:
            tb.channel(_x(rng, n), *_affine(rng), inference=_inference(rng))
    await tb.run()
    tb.record("boundaries")


async def _reach(tb, rng, state: str, n: int, limit: int = 200_000):
    """Queue a channel and clock until the testbench knows the DUT is in `state` (see NormTB.state)."""
    if state == "idle":
        tb.channel(_x(rng, n), *_affine(rng))
        await tb.run()
        return
    tb.data.gap = 1.0 if state == "setup" else 0.0       # setup: the descriptor goes in, no value follows
    tb.stat.stall = 1.0 if state == "stats" else 0.0      # stats: the statistics word is held back
    tb.out.stall = 0.0
    tb.channel(_x(rng, n), *_affine(rng), inference=_inference(rng) if state == "infer" else None)
    tb.flush()
    for _ in range(limit):
        await tb.step()
        if tb.state() == state:
            break
    else:
        raise AssertionError(f"the testbench never saw state {state!r} in {limit} cycles")
    tb.data.gap = tb.stat.stall = 0.0


@cocotb.test()
async def reset_every_state(dut):
    """A reset in every state the testbench can put the DUT in (idle, setup, each pass, between passes,
    draining, holding stats, inference); the channel after each reset must be exact."""
    tb, rng = await _bench(dut)
    n = min(CFG.max_count, 4 * CFG.lanes + 1)
    states = tb.cov.bins.get("reset", [])
    for state in states:
        await _reach(tb, rng, state, n)
        await tb.reset()
        tb.channel(_x(rng, n), *_affine(rng))
        await tb.run()
    tb.record("reset_every_state", states=len(states))


@cocotb.test()
async def refused_descriptors(dut):
    """Every descriptor value the core cannot honour (count 0 or above max_count, and per kind chunk_size, m, neps /
    eps_n, the inference scale_exp and mean) is refused: one statistics word with error = 1 and the rest 0, no
    beat taken or given, and the channels around it exact. Two refusals in a row, with gaps and back-pressure."""
    tb, rng = await _bench(dut, 0.3, 0.3)
    bad = refusals(CFG, _inference(rng))
    assert bad, "no refusable descriptor: the rules are empty"
    for i, (label, desc) in enumerate(bad):
        n = int(rng.integers(1, min(CFG.max_count, 40) + 1))
        tb.channel(_x(rng, n), *_affine(rng), inference=_inference(rng) if i % 3 == 2 else None)
        tb.refuse(desc, label)
        if i % 4 == 3:
            tb.refuse(*bad[(i + 1) % len(bad)][::-1])
    tb.channel(_x(rng, 5), *_affine(rng))
    await tb.run()
    tb.record("refused_descriptors", refused=len(bad))


@cocotb.test()
async def count_zero(dut):
    """A descriptor with count 0 (the user's hang, issue 19): without overlap, its error word is valid the cycle after
    the descriptor is taken and the next channel runs exact; with overlap it ends the sequence (no word of its own)."""
    tb, rng = await _bench(dut)
    tb.channel(_x(rng, 7), *_affine(rng))
    if CFG.overlap:
        tb.flush(empty=True)
    else:
        tb.refuse(refused_descriptor(CFG, 0, inference=_inference(rng) if CFG.inference_only else None),
                  "count:infer" if CFG.inference_only else "count:train")
    tb.channel(_x(rng, 7), *_affine(rng))
    await tb.run()
    if not CFG.overlap:
        took, word = tb.chan.accepted[1], tb.stats_at[1]
        assert word - took == 1, f"count 0: the error word came {word - took} cycles after the descriptor, not 1"
    tb.record("count_zero")
