"""cocotb regression of RangeNorm: bit-exact against hwnorm.golden, with gaps and back-pressure.

The configuration comes from HWNORM_CONFIG (JSON), set by sim/runner.py.
"""
from __future__ import annotations

import os
import random

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from hwnorm.config import NormConfig
from tb import RangeNormTB

CFG = NormConfig.from_json(os.environ["HWNORM_CONFIG"])
FULL = os.environ.get("HWNORM_FULL") == "1"


def _rngs():
    seed = cocotb.RANDOM_SEED
    return random.Random(seed), np.random.default_rng(seed)


def _counts():
    """1, 2, a prime, a power of two, fewer values than chunks need, and the configured maximum."""
    n = [1, 2, 13, 64, 11, CFG.max_count]
    if FULL:
        n += [3, 97, 128, 255, CFG.max_count - 1]
    return sorted({c for c in n if 1 <= c <= CFG.max_count})


def _affine(rng):
    g = int(rng.integers(max(CFG.gamma_fmt.min_int, -(2 << CFG.gamma_fmt.frac)),
                         min(CFG.gamma_fmt.max_int, 2 << CFG.gamma_fmt.frac) + 1))
    b = int(rng.integers(CFG.beta_fmt.min_int, CFG.beta_fmt.max_int + 1) // 4)
    return g, b


def _x(rng, n):
    return rng.integers(CFG.in_fmt.min_int, CFG.in_fmt.max_int + 1, size=n)


@cocotb.test()
async def random_counts(dut):
    """Random data at every interesting count, 30% input gaps, 30% output back-pressure."""
    r, rng = _rngs()
    tb = RangeNormTB(dut, CFG, r, gap=0.3, stall=0.3)
    await tb.start()
    for n in _counts():
        for _ in range(3 if FULL else 1):
            tb.channel(_x(rng, n), *_affine(rng))
    # narrow data around a random centre: small ranges, large multipliers
    for n in (5, 40):
        centre = int(rng.integers(CFG.in_fmt.min_int + 4, CFG.in_fmt.max_int - 3))
        tb.channel(centre + rng.integers(-3, 4, size=n), *_affine(rng))
    await tb.run()
    tb.record("random_counts")


@cocotb.test()
async def all_equal(dut):
    """Zero range: sigma is eps alone and every output is beta."""
    r, rng = _rngs()
    tb = RangeNormTB(dut, CFG, r, gap=0.2, stall=0.2)
    await tb.start()
    for n, v in ((1, CFG.in_fmt.max_int), (7, 0), (64, CFG.in_fmt.min_int), (33, 3)):
        tb.channel(np.full(n, v), *_affine(rng))
    await tb.run()
    tb.record("all_equal")


@cocotb.test()
async def extremes(dut):
    """Most negative / most positive inputs, alternating and with single outliers."""
    r, rng = _rngs()
    tb = RangeNormTB(dut, CFG, r, gap=0.1, stall=0.1)
    await tb.start()
    lo, hi = CFG.in_fmt.min_int, CFG.in_fmt.max_int
    n = min(CFG.max_count, 50)
    alt = np.where(np.arange(n) % 2 == 0, lo, hi)
    outlier = np.full(n, lo)
    outlier[n // 2] = hi
    mirrored = hi - (outlier - lo)          # all most-positive, one most-negative
    for x in (alt, outlier, mirrored, np.full(CFG.max_count, hi)):
        g = CFG.gamma_fmt.max_int
        tb.channel(x, g, 0)
        tb.channel(x, CFG.gamma_fmt.min_int, CFG.beta_fmt.max_int)
    await tb.run()
    tb.record("extremes")


@cocotb.test()
async def saturating_affine(dut):
    """gamma and beta at their limits: outputs saturate and the hardware counts them."""
    r, rng = _rngs()
    tb = RangeNormTB(dut, CFG, r, gap=0.2, stall=0.3)
    await tb.start()
    total = 0
    for g in (CFG.gamma_fmt.max_int, CFG.gamma_fmt.min_int):
        for b in (CFG.beta_fmt.max_int, CFG.beta_fmt.min_int, 0):
            exp = tb.channel(_x(rng, 30), g, b)
            total += exp.stats["sat"]
    await tb.run()
    assert total > 0, "saturation case did not saturate: test data is wrong"
    tb.record("saturating_affine", saturated=total)


@cocotb.test()
async def reset_mid_channel(dut):
    """Reset during pass 1 and during pass 2; the next channels must be exact."""
    r, rng = _rngs()
    tb = RangeNormTB(dut, CFG, r, gap=0.2, stall=0.2)
    await tb.start()
    n = min(CFG.max_count, 40)
    for stop_after in (n // 2, n + n // 2):
        tb.channel(_x(rng, n), *_affine(rng))
        while len(tb.data.accepted) < stop_after:
            await tb.step()
        await tb.reset()
        tb.channel(_x(rng, n), *_affine(rng))
        await tb.run()
    tb.record("reset_mid_channel")


@cocotb.test()
async def back_to_back(dut):
    """Channels queued back to back with no gaps or back-pressure: one value per clock in each pass."""
    r, rng = _rngs()
    tb = RangeNormTB(dut, CFG, r)
    await tb.start()
    counts = [min(CFG.max_count, c) for c in (16, 100, 1, 37, 256)]
    for n in counts:
        tb.channel(_x(rng, n), *_affine(rng))
    await tb.run()
    acc = tb.data.accepted
    # inside each pass, consecutive values are accepted on consecutive cycles
    pos = 0
    for n in counts:
        for p in range(2):
            run = acc[pos:pos + n]
            assert run[-1] - run[0] == n - 1, f"pass {p + 1} of a {n}-value channel took {run[-1] - run[0] + 1} cycles"
            pos += n
    rec = tb.record("back_to_back", cycles_per_value=1.0)
    # the whole stream: 2n values per channel plus a fixed overhead per channel
    dut._log.info("back_to_back: %d values in %d cycles, scale latency %s", 2 * sum(counts), tb.cycle, rec["latency"])
