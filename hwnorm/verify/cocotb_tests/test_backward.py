"""cocotb regression of the backward datapath (hwnorm.hdl.backward.BackwardDatapath): bit-exact against the golden
backward (dx, dgamma, dbeta, dx saturation), both passes, with random input gaps and output back-pressure. The
configuration comes from HWNORM_CONFIG and HWNORM_GRAD (JSON), set by hwnorm/verify/runner.py; HWNORM_FULL=1 makes
the random tests longer. The testbench: hwnorm/verify/tb_backward.py.
"""
from __future__ import annotations

import os
import random

import cocotb
import numpy as np

from hwnorm.backends.rtl_backward import descriptor, grad_from_json
from hwnorm.config import NormConfig
from hwnorm.verify.tb_backward import BackwardTB

CFG = NormConfig.from_json(os.environ["HWNORM_CONFIG"])
GCFG = grad_from_json(os.environ["HWNORM_GRAD"])
FULL = os.environ.get("HWNORM_FULL") == "1"
FI, FG, FGR = CFG.in_fmt, CFG.gamma_fmt, GCFG.grad_fmt


def _counts():
    """1, 2, around lanes, a prime, a power of two, fewer values than range's chunks need, and max_count."""
    p = CFG.lanes
    n = [1, 2, p - 1, p, p + 1, 13, 64, 11, CFG.max_count]
    if FULL:
        n += [3, 97, 128, 255, CFG.max_count - 1]
    return sorted({c for c in n if 1 <= c <= CFG.max_count})


def _x(rng, n):
    return rng.integers(FI.min_int, FI.max_int + 1, size=n)


def _g(rng, n, share: float = 1.0):
    """dL/dy codes over `share` of grad_fmt's range."""
    top = max(1, int(FGR.max_int * share))
    return rng.integers(-top, top + 1, size=n)


def _gamma(rng):
    return int(rng.integers(max(FG.min_int, -(2 << FG.frac)), min(FG.max_int, 2 << FG.frac) + 1))


async def _bench(dut, gap=0.0, stall=0.0):
    seed = cocotb.RANDOM_SEED
    tb = BackwardTB(dut, CFG, GCFG, random.Random(seed), gap=gap, stall=stall)
    await tb.start()
    return tb, np.random.default_rng(seed)


@cocotb.test()
async def random_counts(dut):
    """Random x and g at every interesting count, 30% input gaps, 30% output back-pressure, in both passes."""
    tb, rng = await _bench(dut, 0.3, 0.3)
    for n in _counts():
        for _ in range(3 if FULL else 1):
            tb.channel(_x(rng, n), _g(rng, n), _gamma(rng))
    for n in (5, 40):               # narrow data around a random centre: a small Den, large constants
        centre = int(rng.integers(FI.min_int + 4, FI.max_int - 3))
        n = min(n, CFG.max_count)
        tb.channel(centre + rng.integers(-3, 4, size=n), _g(rng, n, 1 / 8), _gamma(rng))
    await tb.run()
    tb.record("random_counts")


@cocotb.test()
async def zero_gradients(dut):
    """g = 0 everywhere (dx, dgamma, dbeta 0), a constant channel (zero deviation: Den is eps alone), gamma = 0."""
    tb, rng = await _bench(dut, 0.2, 0.2)
    for n in (1, 7, min(CFG.max_count, 33)):
        tb.channel(_x(rng, n), np.zeros(n, dtype=np.int64), _gamma(rng))
        tb.channel(np.full(n, int(rng.integers(FI.min_int, FI.max_int + 1))), _g(rng, n), _gamma(rng))
        tb.channel(_x(rng, n), _g(rng, n), 0)
    await tb.run()
    tb.record("zero_gradients")


@cocotb.test()
async def ties_at_extremes(dut):
    """Repeated values: a chunk's max and min twice, the k-th largest |x - mu| tied, values at the mean (sign 0); the
    lowest index takes the gradient (docs/numerics.md "Backward")."""
    tb, rng = await _bench(dut, 0.2, 0.2)
    a, b = FI.min_int // 2 if FI.signed else 1, FI.max_int // 2
    for n in (2, 3, 12, 31, 64):
        n = min(n, CFG.max_count)
        tb.channel(np.where(np.arange(n) % 3 == 0, a, b), _g(rng, n), _gamma(rng))          # two values
        sym = np.concatenate([np.full(n // 2, a), np.full(n - n // 2, b)])
        tb.channel(rng.permutation(sym), _g(rng, n), _gamma(rng))                           # ties in |x - mu|
        tb.channel(rng.choice([a, (a + b) // 2, b], size=n), _g(rng, n), _gamma(rng))      # values at the mean
        tb.channel(np.concatenate([[b, b], _x(rng, max(0, n - 2))])[:n], _g(rng, n), _gamma(rng))   # the max twice
    await tb.run()
    tb.record("ties_at_extremes")


@cocotb.test()
async def saturating_dx(dut):
    """Large 1/sigma (narrow data) with gamma and g at their limits: dx clamps at both ends of dx_fmt, counted."""
    tb, rng = await _bench(dut, 0.2, 0.3)
    total = 0
    n = min(CFG.max_count, 30)
    for gamma in (FG.max_int, FG.min_int):
        centre = int(rng.integers(FI.min_int + 2, FI.max_int - 1))
        x = centre + rng.integers(-1, 2, size=n)
        g = rng.choice([FGR.min_int, FGR.max_int, 0], size=n)
        total += tb.channel(x, g, gamma)["sat"]
        total += tb.channel(_x(rng, n), rng.choice([FGR.min_int, FGR.max_int], size=n), gamma)["sat"]
    await tb.run()
    assert total > 0, "the saturation case did not saturate: test data is wrong"
    tb.record("saturating_dx", saturated=total)


@cocotb.test()
async def extremes(dut):
    """x at its limits (alternating, one outlier, all equal at the top), g and gamma at theirs."""
    tb, rng = await _bench(dut, 0.1, 0.1)
    lo, hi = FI.min_int, FI.max_int
    n = min(CFG.max_count, 50)
    alt = np.where(np.arange(n) % 2 == 0, lo, hi)
    outlier = np.full(n, lo)
    outlier[n // 2] = hi
    for x in (alt, outlier, hi - (outlier - lo), np.full(CFG.max_count, hi)):
        m = len(x)
        tb.channel(x, rng.choice([FGR.min_int, FGR.max_int], size=m), FG.max_int)
        tb.channel(x, _g(rng, m), FG.min_int)
    await tb.run()
    tb.record("extremes")


@cocotb.test()
async def back_to_back(dut):
    """Channels back to back with no gaps or back-pressure: one beat (`lanes` values) per clock in both passes."""
    tb, rng = await _bench(dut)
    counts = [min(CFG.max_count, c) for c in (16, 100, 1, 37, 256)]
    for n in counts:
        tb.channel(_x(rng, n), _g(rng, n), _gamma(rng))
    await tb.run()
    acc, start = tb.data.accepted, 0
    for n in counts:
        beats = -(-n // CFG.lanes)
        for p in range(2):
            run = acc[start:start + beats]
            assert run[-1] - run[0] == beats - 1, f"pass {p + 1} of a {n}-value channel took " \
                                                  f"{run[-1] - run[0] + 1} cycles for {beats} beats"
            start += beats
    tb.cov.hit("bwd_sequence", {"back_to_back"})
    n = min(CFG.max_count, 1024)
    tb.channel(_x(rng, n), _g(rng, n), _gamma(rng))
    await tb.run()
    whole = tb.stats_at[-1] - tb.chan.accepted[-1] + 1
    dut._log.info("whole backward channel of %d values: %d cycles, %.3f values per cycle", n, whole, n / whole)
    tb.record("back_to_back", channel_values=n, channel_cycles=whole)


async def _reach(tb, rng, state: str, n: int, limit: int = 200_000):
    """Queue a channel and clock until the testbench knows the DUT is in `state` (BackwardTB.state)."""
    if state == "idle":
        tb.channel(_x(rng, n), _g(rng, n), _gamma(rng))
        await tb.run()
        return
    tb.data.gap = 1.0 if state == "setup" else 0.0       # setup: the descriptor goes in, no value follows
    tb.stat.stall = 1.0 if state == "stats" else 0.0      # stats: the word is held back
    tb.out.stall = 0.0
    tb.channel(_x(rng, n), _g(rng, n), _gamma(rng))
    for _ in range(limit):
        await tb.step()
        if tb.state() == state:
            break
    else:
        raise AssertionError(f"the testbench never saw state {state!r} in {limit} cycles")
    tb.data.gap = tb.stat.stall = 0.0


@cocotb.test()
async def reset_every_state(dut):
    """A reset in every state (idle, setup, pass 1, between the passes, pass 2, draining, holding the word); the
    channel after each reset must be exact."""
    tb, rng = await _bench(dut)
    n = min(CFG.max_count, 4 * CFG.lanes + 1)
    states = tb.cov.bins["bwd_reset"]
    for state in states:
        await _reach(tb, rng, state, n)
        await tb.reset()
        tb.channel(_x(rng, n), _g(rng, n), _gamma(rng))
        await tb.run()
    tb.record("reset_every_state", states=len(states))


def refusals() -> list[tuple[str, dict]]:
    """(coverage bin, descriptor) for every rule of NormConfig.backward_descriptor_rules: the value just past each
    limit."""
    out = []
    n = min(CFG.max_count, 3 * (CFG.chunks or 1) + 1)
    base = descriptor(CFG, n, 0, 1 << 40, 1 << FG.frac)
    base["den"] = CFG.backward_den_floor(n)
    top = (1 << CFG.count_bits) - 1
    for name, _ in CFG.backward_descriptor_rules(GCFG):
        if name == "count":
            out += [(name, dict(base, count=v)) for v in sorted({0, CFG.max_count + 1, top} - {top + 1})
                    if v <= top]
        elif name == "chunk_size":
            out += [(name, dict(base, chunk_size=v)) for v in sorted({0, -(-n // CFG.chunks) - 1})]
        elif name == "m":
            out += [(name, dict(base, m=v)) for v in (0, CFG.k + 1) if v < (1 << CFG.k.bit_length())]
        elif name == "den":
            out += [(name, dict(base, den=v)) for v in sorted({0, CFG.backward_den_floor(n) - 1})]
    return [(b, d) for b, d in out if CFG.backward_descriptor_error(GCFG, d) is not None]


@cocotb.test()
async def refused_descriptors(dut):
    """Every descriptor value the backward core refuses (count 0 or above max_count, range's chunk_size, cvar's m, a
    Den below what a forward channel reports) gives one word with error = 1, no beat taken or given, and the channels
    around it exact; two refusals in a row, with gaps and back-pressure."""
    tb, rng = await _bench(dut, 0.3, 0.3)
    bad = refusals()
    assert bad, "no refusable descriptor: the rules are empty"
    for i, (label, desc) in enumerate(bad):
        n = int(rng.integers(1, min(CFG.max_count, 40) + 1))
        tb.channel(_x(rng, n), _g(rng, n), _gamma(rng))
        tb.refuse(desc, label)
        if i % 3 == 2:
            tb.refuse(*bad[(i + 1) % len(bad)][::-1])
    tb.channel(_x(rng, 5), _g(rng, 5), _gamma(rng))
    await tb.run()
    tb.record("refused_descriptors", refused=len(bad))
