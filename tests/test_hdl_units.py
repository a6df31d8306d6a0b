"""Unit tests of single Amaranth blocks in Amaranth's own simulator (the datapath is tested in cocotb).

One test per hardware block, in the manner of Glasgow's gateware tests: the block runs in
`amaranth.sim.Simulator` on random operands (fixed seeds) and on edge cases, and every result is
compared with a `ref_*` function, a few lines of plain Python/NumPy that do the same job.
"""
import math
import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from hwnorm.config import FORMATS_16, FixedFormat, NormConfig
from hwnorm.hdl.dropout import DropoutLFSR
from hwnorm.hdl.elementwise import ElementwiseAffine
from hwnorm.hdl.normalize import NormalizeAffine
from hwnorm.hdl.sequential import ISqrt, SeqDiv, SeqMul
from hwnorm.hdl.statistics import (AboveMean, BelowMean, ChunkRange, ExtremeK, MinMax, StatisticsUnit, SumSquares,
                                   SumUnit)

S8 = FixedFormat(8, 4)
U8 = FixedFormat(8, 4, signed=False)
MAX_COUNT = 64
GUARD_CYCLES = 20_000       # a block that never answers fails the test instead of hanging it


# -- the references: what each block computes, in plain Python/NumPy -----------------------------

def ref_mul(a, b, c):
    return a * b + c


def ref_div(num, den):
    return num // den


def ref_isqrt(w):
    return math.isqrt(w)


def ref_sum(values):
    return int(np.sum(np.asarray(values, dtype=np.int64)))


def ref_sum_squares(values):
    v = np.asarray(values, dtype=np.int64)
    return int(np.dot(v, v))


def ref_max_min(values):
    return int(np.max(values)), int(np.min(values))


def ref_chunk_ranges(values, chunk_size):
    """(sum of the ranges of all chunks but the last, the last chunk's range)."""
    ranges = [max(c) - min(c) for c in (values[i:i + chunk_size] for i in range(0, len(values), chunk_size))]
    return sum(ranges[:-1]), ranges[-1]


def ref_above_mean(values, floor_mean):
    """(sum, count) of the values above floor_mean."""
    v = np.asarray(values, dtype=np.int64)
    above = v[v > floor_mean]
    return int(above.sum()), int(above.size)


def ref_below_mean(values, floor_mean):
    """(sum, count, sum of squares) of the values at or below floor_mean."""
    v = np.asarray(values, dtype=np.int64)
    below = v[v <= floor_mean]
    return int(below.sum()), int(below.size), int(np.dot(below, below))


def ref_extreme_k(values, k, largest, fmt):
    """The k largest (smallest) values, most extreme first, padded with the neutral value."""
    neutral = fmt.min_int if largest else fmt.max_int
    ordered = sorted(values)[::-1] if largest else sorted(values)
    return (ordered + [neutral] * k)[:k]


def ref_forced(x, force):
    """The special regime's forced side of x ('hi', 'lo' or None): force = (neg, q) or None (the regular regime);
    x < q and x > q + 1 saturate, low for gamma > 0 below q."""
    if force is None:
        return None
    neg, q = force
    below, above = x < q, x > q + 1
    return "hi" if (below if neg else above) else "lo" if (above if neg else below) else None


def ref_normalize(x, a, b, shift, rounding, fmt, force=None):
    """(y, saturated) of y = clamp(round((x*A + B) >> SH)); B already holds the rounding half; a forced value
    (ref_forced) saturates on its side."""
    side = ref_forced(x, force)
    if side is not None:
        return (fmt.max_int if side == "hi" else fmt.min_int), True
    acc = x * a + b
    q = acc >> shift
    if rounding == "half_even" and acc & ((1 << shift) - 1) == 0 and q & 1:
        q -= 1
    y = min(max(q, fmt.min_int), fmt.max_int)
    return y, y != q


def ref_xorshift32(s):
    s ^= (s << 13) & 0xFFFFFFFF
    s ^= s >> 17
    return s ^ ((s << 5) & 0xFFFFFFFF)


def ref_keep(seed, n, threshold):
    """Value i is kept when the top 16 bits of the state after i + 1 steps (seed 0: 0x9E3779B9) are >= T."""
    s, out = seed or 0x9E3779B9, []
    for _ in range(n):
        s = ref_xorshift32(s)
        out.append(s >> 16 >= threshold)
    return out


def ref_dropout_normalize(x, a, b, shift, rounding, fmt, scale, f, e=4, force=None):
    """(y, saturated) of a kept value in a dropout build: t = floor(v 2**E), clamped one LSB beyond the output
    range, z = t * S, one rounding at F + E fraction bits, clamp (docs/numerics.md "Dropout"); forced: saturated."""
    side = ref_forced(x, force)
    if side is not None:
        return (fmt.max_int if side == "hi" else fmt.min_int), True
    acc = x * a + b
    half_t, half_z = (0, 0) if rounding == "floor" else (1 << (e - 1), 1 << (f + e - 1))
    t = min(max((acc >> (shift - e)) - half_t, (fmt.min_int - 1) << e), (fmt.max_int + 1) << e)
    z = t * scale
    q = (z + half_z) >> (f + e)
    sticky = acc & ((1 << (shift - e)) - 1) == 0
    if rounding == "half_even" and sticky and z & ((1 << (f + e)) - 1) == half_z and q & 1:
        q -= 1
    y = min(max(q, fmt.min_int), fmt.max_int)
    return y, y != q


def ref_affine(xhat, g, b, cfg):
    """(y, saturated) of y = clamp(round(g x_hat + b)): the exact sum at F = max(gamma frac + x_hat frac, beta frac)
    fraction bits, one rounding to out_fmt (docs/numerics.md "Per-element affine")."""
    hf, gf, bf, of = cfg.norm_out_fmt.frac, cfg.gamma_fmt.frac, cfg.beta_fmt.frac, cfg.out_fmt.frac
    f = max(gf + hf, bf)
    acc, s = (g * xhat << (f - gf - hf)) + (b << (f - bf)), f - of
    q, r, half = acc >> s, acc & ((1 << s) - 1), 1 << (s - 1)
    if cfg.rounding != "floor" and (r > half or (r == half and (cfg.rounding == "half_up" or q & 1))):
        q += 1
    y = min(max(q, cfg.out_fmt.min_int), cfg.out_fmt.max_int)
    return y, y != q


# -- simulation helpers ----------------------------------------------------------------------------

def simulate(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def run_sequential(dut, inputs, apply, check):
    """For each input: apply() it with a one-cycle `start` pulse, wait for `done`, check() the result
    and that `done` is a one-cycle pulse. Returns the latency (cycles from start to done) of each."""
    latencies = []

    async def bench(ctx):
        for value in inputs:
            apply(ctx, value)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycles = 1
            while not ctx.get(dut.done):
                await ctx.tick()
                cycles += 1
                assert cycles < GUARD_CYCLES, f"done never came for {value}"
            check(ctx, value)
            latencies.append(cycles)
            await ctx.tick()
            assert not ctx.get(dut.done), f"done is longer than one cycle for {value}"

    simulate(dut, bench)
    return latencies


def stats_config(kind, lanes, in_fmt=S8, **kw):
    return NormConfig(kind=kind, lanes=lanes, in_fmt=in_fmt, max_count=MAX_COUNT, **kw)


def beats_of(values, lanes):
    """(lane values, mask) per beat: the last beat is masked when len(values) is not a multiple of lanes."""
    return [(list(values[i:i + lanes]), (1 << len(values[i:i + lanes])) - 1) for i in range(0, len(values), lanes)]


def random_values(rnd, fmt, n):
    return [rnd.randint(fmt.min_int, fmt.max_int) for _ in range(n)]


def channel_sets(rnd, fmt, lanes):
    """Channels of values: single values, full and masked last beats, random lengths, all-extreme channels."""
    sizes = [1, 2, lanes, lanes + 1, 2 * lanes + 3, rnd.randint(5, MAX_COUNT - 1), MAX_COUNT]
    channels = [random_values(rnd, fmt, n) for n in sizes]
    channels += [[fmt.min_int] * MAX_COUNT, [fmt.max_int] * MAX_COUNT,
                 [rnd.choice((fmt.min_int, fmt.max_int)) for _ in range(4 * lanes + 1)]]
    return channels


async def feed_channel(ctx, dut, values, rnd, clear=True, **held):
    """Start a channel with a one-cycle `clear` (unless clear=False), set the `held` inputs and feed
    `values` beat by beat, with random idle cycles between beats. Masked-out lanes and idle cycles
    carry random junk, which the block must ignore; so do the held inputs during `clear` (the datapath
    loads the channel's descriptor in that same cycle)."""
    cfg = dut.cfg
    if clear:
        for name in held:
            port = getattr(dut, name)
            ctx.set(port, rnd.getrandbits(len(port)))
        ctx.set(dut.valid, 0)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
    for name, value in held.items():
        ctx.set(getattr(dut, name), value)
    if clear:
        ctx.set(dut.valid, 0)
        for _ in range(getattr(dut, "HELD_LEAD", 0)):     # held inputs a block needs before the first beat
            await ctx.tick()
    for lanes_in, mask in beats_of(values, cfg.lanes):
        while rnd.random() < 0.25:
            ctx.set(dut.x, random_values(rnd, cfg.in_fmt, cfg.lanes))
            ctx.set(dut.mask, rnd.getrandbits(cfg.lanes))
            ctx.set(dut.valid, 0)
            await ctx.tick()
        ctx.set(dut.x, lanes_in + random_values(rnd, cfg.in_fmt, cfg.lanes - len(lanes_in)))
        ctx.set(dut.mask, mask)
        ctx.set(dut.valid, 1)
        await ctx.tick()
    ctx.set(dut.valid, 0)


def run_channels(dut, channels, check, seed):
    """Feed each (values, held inputs) channel, wait the block's latency (`latency_for`: its outputs
    hold the last beat that many cycles after it, no later, as the datapath relies on), then
    check(ctx, values, held) the block's outputs."""
    rnd = random.Random(seed)
    settle = dut.latency_for(dut.cfg) - 1

    async def bench(ctx):
        for values, held in channels:
            await feed_channel(ctx, dut, values, rnd, **held)
            for _ in range(settle):
                await ctx.tick()
            check(ctx, values, held)

    simulate(dut, bench)


# -- sequential arithmetic -------------------------------------------------------------------------

def test_seq_mul_computes_a_times_b_plus_c_in_steps_plus_one_cycles():
    a_bits, b_bits, p_bits, c_mag = 8, 10, 20, 1 << 18
    dut = SeqMul(a_bits, b_bits, p_bits)
    rnd = random.Random(1)
    a_lo, a_hi = -(1 << (a_bits - 1)), (1 << (a_bits - 1)) - 1
    cases = []
    for steps in (1, 2, 5, 9, b_bits):
        b_hi = (1 << steps) - 1
        cases += [(a_lo, b_hi, -c_mag, steps), (a_hi, b_hi, c_mag - 1, steps), (-1, b_hi, 0, steps),
                  (a_lo, 0, -1, steps), (a_hi, 0, 12345, steps), (0, b_hi, -777, steps), (-3, 1, 0, steps)]
        cases += [(rnd.randint(a_lo, a_hi), rnd.randint(0, b_hi), rnd.randint(-c_mag, c_mag - 1), steps)
                  for _ in range(16)]

    def apply(ctx, case):
        a, b, c, steps = case
        ctx.set(dut.a, a)
        ctx.set(dut.b, b)
        ctx.set(dut.c, c)
        ctx.set(dut.steps, steps)

    def check(ctx, case):
        assert ctx.get(dut.p) == ref_mul(*case[:3]), case

    latencies = run_sequential(dut, cases, apply, check)
    assert latencies == [steps + 1 for *_, steps in cases]


def split_dividend(num, steps, q_bits):
    """SeqDiv's operand split of a signed dividend: (rem_init, lo_init, neg)."""
    mag = abs(num)
    return mag >> steps, (mag & ((1 << steps) - 1)) << (q_bits - steps), int(num < 0)


def test_seq_div_computes_floor_of_signed_num_over_den_in_steps_plus_three_cycles():
    d_bits, q_bits = 12, 10
    dut = SeqDiv(d_bits, q_bits)
    rnd = random.Random(2)
    cases = []
    for steps in (1, 3, 6, q_bits):
        for den in (1, 2, 3, 7, (1 << d_bits) - 1, 1 << (d_bits - 1), rnd.randrange(1, 1 << d_bits)):
            top = (den << steps) - 1                               # largest |num| with rem_init < den
            q = rnd.randint(1, (1 << steps) - 1) if steps > 1 else 1
            cases += [(0, den, steps), (top, den, steps), (-top, den, steps),
                      (den * q, den, steps), (-den * q, den, steps),           # exact: remainder 0
                      (-den, den, steps), (-1, den, steps), (1, den, steps)]
            cases += [(rnd.choice((-1, 1)) * rnd.randint(0, top), den, steps) for _ in range(3)]

    def apply(ctx, case):
        num, den, steps = case
        rem_init, lo_init, neg = split_dividend(num, steps, q_bits)
        assert rem_init < den
        ctx.set(dut.rem_init, rem_init)
        ctx.set(dut.lo_init, lo_init)
        ctx.set(dut.neg, neg)
        ctx.set(dut.den, den)
        ctx.set(dut.steps, steps)

    def check(ctx, case):
        assert ctx.get(dut.q) == ref_div(*case[:2]), case

    latencies = run_sequential(dut, cases, apply, check)
    assert latencies == [steps + 3 for *_, steps in cases]


@pytest.mark.parametrize("w_bits", [16, 37])
def test_isqrt_computes_floor_sqrt_with_fixed_latency_of_steps_plus_one(w_bits):
    dut = ISqrt(w_bits)
    rnd = random.Random(w_bits)
    top = (1 << w_bits) - 1
    r_top = math.isqrt(top)
    ws = [0, 1, 2, 3, 4, 5, 8, 9, 15, 16, 17, top, top - 1, 1 << (w_bits - 1), r_top * r_top, r_top * r_top - 1]
    for _ in range(12):
        r = rnd.randint(1, r_top)
        ws += [r * r, r * r - 1, min(r * r + r, top)]
    ws += [rnd.randint(0, top) for _ in range(30)]

    def check(ctx, w):
        assert ctx.get(dut.root) == ref_isqrt(w), w

    latencies = run_sequential(dut, ws, lambda ctx, w: ctx.set(dut.w, w), check)
    assert set(latencies) == {ISqrt.steps_for(w_bits) + 1}


# -- per-lane statistics -----------------------------------------------------------------------------

@pytest.mark.parametrize("lanes", [1, 4])
@pytest.mark.parametrize("in_fmt", [S8, U8], ids=str)
def test_sum_unit_adds_the_masked_in_lanes_of_a_channel(lanes, in_fmt):
    dut = SumUnit(stats_config("range", lanes, in_fmt))
    channels = [(values, {}) for values in channel_sets(random.Random(10 + lanes), in_fmt, lanes)]

    def check(ctx, values, held):
        assert ctx.get(dut.sum) == ref_sum(values), values

    run_channels(dut, channels, check, seed=lanes)


@pytest.mark.parametrize("lanes", [1, 4])
@pytest.mark.parametrize("in_fmt", [S8, U8], ids=str)
def test_sum_squares_adds_the_squares_of_the_masked_in_lanes(lanes, in_fmt):
    dut = SumSquares(stats_config("l2", lanes, in_fmt))
    channels = [(values, {}) for values in channel_sets(random.Random(20 + lanes), in_fmt, lanes)]

    def check(ctx, values, held):
        assert ctx.get(dut.sq_sum) == ref_sum_squares(values), values

    run_channels(dut, channels, check, seed=lanes)


@pytest.mark.parametrize("lanes", [1, 4])
@pytest.mark.parametrize("in_fmt", [S8, U8], ids=str)
def test_min_max_finds_the_largest_and_smallest_masked_in_value(lanes, in_fmt):
    dut = MinMax(stats_config("linf", lanes, in_fmt))
    rnd = random.Random(30 + lanes)
    channels = channel_sets(rnd, in_fmt, lanes)
    channels += [[in_fmt.max_int] + [0] * lanes, [in_fmt.min_int] + [in_fmt.max_int] * 5, [3] * (lanes + 1)]

    def check(ctx, values, held):
        assert (ctx.get(dut.hi), ctx.get(dut.lo)) == ref_max_min(values), values

    run_channels(dut, [(v, {}) for v in channels], check, seed=lanes)


@pytest.mark.parametrize("lanes", [1, 2, 4, 8])
def test_chunk_range_sums_closed_chunk_ranges_and_keeps_the_last_chunk_open(lanes):
    cfg = stats_config("range", lanes, chunks=16)
    dut = ChunkRange(cfg)
    fmt = cfg.in_fmt
    rnd = random.Random(40 + lanes)
    cases = [(1, 1), (4, 1), (16, 1), (3, 3), (6, 3), (7, 3), (12, 3), (13, 3), (30, 3), (47, 3),
             (10, 4), (9, 5), (11, 5), (16, 16), (20, 20), (64, 4), (40, 7), (33, 2), (63, 5)]
    cases += [(n, -(-n // cfg.chunks)) for n in (rnd.randint(2, MAX_COUNT) for _ in range(4))]
    cases += [(5 * lanes + 3, cs) for cs in range(1, 2 * lanes + 2)]     # every chunk size around the lane count
    channels = [(random_values(rnd, fmt, n), {"chunk_size": cs}) for n, cs in cases]
    # the widest ranges: every chunk holds both extremes (15 closed chunks of range 255)
    channels.append(([fmt.min_int, fmt.max_int] * 16, {"chunk_size": 2}))
    channels.append(([fmt.max_int, fmt.min_int, 0] * 5 + [fmt.min_int], {"chunk_size": 3}))

    def check(ctx, values, held):
        assert (ctx.get(dut.r_closed), ctx.get(dut.r_open)) == ref_chunk_ranges(values, held["chunk_size"]), \
            (held, values)

    run_channels(dut, channels, check, seed=lanes)


@pytest.mark.parametrize("lanes", [1, 4])
@pytest.mark.parametrize("in_fmt", [S8, U8], ids=str)
def test_above_mean_sums_and_counts_the_values_above_floor_mean(lanes, in_fmt):
    dut = AboveMean(stats_config("l1", lanes, in_fmt))
    rnd = random.Random(50 + lanes)
    fm_lo, fm_hi = -(1 << in_fmt.bits), (1 << in_fmt.bits) - 1          # floor_mean's range
    channels = []
    for values in channel_sets(rnd, in_fmt, lanes):
        for floor_mean in (sum(values) // len(values), min(values) - 1, min(values), max(values),
                           rnd.randint(fm_lo, fm_hi)):
            channels.append((values, {"floor_mean": max(fm_lo, min(fm_hi, floor_mean))}))
    channels += [(random_values(rnd, in_fmt, 9), {"floor_mean": fm}) for fm in (fm_lo, fm_hi)]

    def check(ctx, values, held):
        assert (ctx.get(dut.s_hi), ctx.get(dut.c_hi)) == ref_above_mean(values, held["floor_mean"]), \
            (held, values)

    run_channels(dut, channels, check, seed=lanes)


@pytest.mark.parametrize("lanes", [1, 4])
@pytest.mark.parametrize("in_fmt", [S8, U8], ids=str)
def test_below_mean_sums_counts_and_squares_the_values_at_or_below_floor_mean(lanes, in_fmt):
    dut = BelowMean(stats_config("semidev", lanes, in_fmt))
    rnd = random.Random(55 + lanes)
    fm_lo, fm_hi = -(1 << in_fmt.bits), (1 << in_fmt.bits) - 1          # floor_mean's range
    channels = []
    for values in channel_sets(rnd, in_fmt, lanes):
        for floor_mean in (sum(values) // len(values), min(values) - 1, min(values), max(values),
                           rnd.randint(fm_lo, fm_hi)):
            channels.append((values, {"floor_mean": max(fm_lo, min(fm_hi, floor_mean))}))
    channels += [([in_fmt.min_int] * 7 + [in_fmt.max_int], {"floor_mean": fm_hi})]      # the widest squares
    channels += [(random_values(rnd, in_fmt, 9), {"floor_mean": fm}) for fm in (fm_lo, fm_hi)]

    def check(ctx, values, held):
        got = (ctx.get(dut.s_lo), ctx.get(dut.c_lo), ctx.get(dut.q_lo))
        assert got == ref_below_mean(values, held["floor_mean"]), (held, values)

    run_channels(dut, channels, check, seed=lanes)


def extreme_k_channels(rnd, fmt, lanes, k):
    """Random values, ties, fewer values than k, and values equal to either end of the format."""
    channels = [random_values(rnd, fmt, n) for n in (1, k - 1, k, k + 1, lanes + 1, 2 * lanes + 3, MAX_COUNT)]
    channels += [[rnd.randint(-2, 2) + (fmt.min_int + fmt.max_int) // 2 for _ in range(n)] for n in (7, 30)]
    channels += [[5] * (k + 2), [fmt.max_int] * k + [fmt.min_int] * k, [fmt.min_int, fmt.max_int, 0],
                 sorted(random_values(rnd, fmt, 13)), sorted(random_values(rnd, fmt, 13), reverse=True)]
    return [c for c in channels if c]


@pytest.mark.parametrize("largest", [True, False], ids=["largest", "smallest"])
@pytest.mark.parametrize("lanes,k,in_fmt", [(1, 3, S8), (4, 3, S8), (4, 8, S8), (4, 3, U8)], ids=str)
def test_extreme_k_keeps_the_k_most_extreme_values_sorted_and_pops_them_in_order(largest, lanes, k, in_fmt):
    cfg = stats_config("topk", lanes, in_fmt, k=k)
    dut = ExtremeK(cfg, largest=largest)
    rnd = random.Random(60 + 2 * lanes + k)
    channels = extreme_k_channels(rnd, in_fmt, lanes, k)
    neutral = in_fmt.min_int if largest else in_fmt.max_int

    wait = ExtremeK.head_latency(cfg)          # the registered compare tree: heads follow a change this late

    async def bench(ctx):
        for values in channels:
            await feed_channel(ctx, dut, values, rnd)
            for _ in range(wait):
                await ctx.tick()
            heads = []
            for _ in range(k):
                heads.append(ctx.get(dut.head))
                ctx.set(dut.pop, 1)
                await ctx.tick()
                ctx.set(dut.pop, 0)
                for _ in range(wait):
                    await ctx.tick()
            assert heads == ref_extreme_k(values, k, largest, in_fmt), values
            rest = ctx.get(dut.head)      # what the lanes still hold is never more extreme than the k-th value
            assert (rest <= heads[-1]) if largest else (rest >= heads[-1]), (rest, heads)
            if len(values) <= k:
                assert rest == neutral, "fewer than k values leave only neutral slots"

    simulate(dut, bench)


@pytest.mark.parametrize("kind", ["range", "l1", "linf", "topk", "l2", "mad", "semidev", "cvar", "frn_l1", "frn_range"])
def test_statistics_unit_reports_the_sum_and_its_kinds_statistics(kind):
    cfg = stats_config(kind, 4, k=3 if kind == "topk" else None, **({"alpha": 0.95} if kind == "cvar" else {}))
    frn_l1 = kind == "frn_l1"           # L1's comparator in the first (only) pass, threshold 0
    kind = cfg.stat_kind if kind == "frn_range" else kind
    dut = StatisticsUnit(cfg)
    rnd = random.Random(70)
    channels = [random_values(rnd, cfg.in_fmt, n) for n in (1, 6, 23, MAX_COUNT)]
    settle = StatisticsUnit.latency_for(cfg) - 1

    async def bench(ctx):
        for values in channels:
            held = {"chunk_size": -(-len(values) // cfg.chunks)} if kind == "range" else {}
            if kind in ("l1", "mad", "semidev"):
                held["second"] = 0
            await feed_channel(ctx, dut, values, rnd, **held)
            for _ in range(settle):                          # the outputs hold the last beat from here on
                await ctx.tick()
            if frn_l1:
                assert (ctx.get(dut.s_hi), ctx.get(dut.c_hi)) == ref_above_mean(values, 0)
            if kind in ("l1", "mad", "semidev"):                # the second pass, on the same channel
                floor_mean = ref_sum(values) // len(values)
                await feed_channel(ctx, dut, values, rnd, clear=False, second=1, floor_mean=floor_mean)
                for _ in range(settle):
                    await ctx.tick()
                if kind == "semidev":
                    assert (ctx.get(dut.s_lo), ctx.get(dut.c_lo), ctx.get(dut.q_lo)) == ref_below_mean(values, floor_mean)
                else:
                    assert (ctx.get(dut.s_hi), ctx.get(dut.c_hi)) == ref_above_mean(values, floor_mean)
            assert ctx.get(dut.sum) == ref_sum(values), "the first pass's sum"
            if kind == "range":
                assert (ctx.get(dut.r_closed), ctx.get(dut.r_open)) == \
                    ref_chunk_ranges(values, held["chunk_size"])
            elif kind == "linf":
                assert (ctx.get(dut.hi), ctx.get(dut.lo)) == ref_max_min(values)
            elif kind == "l2":
                assert ctx.get(dut.sq_sum) == ref_sum_squares(values)
            elif kind in ("topk", "cvar"):
                sides = ((True, dut.top, dut.pop_top),) + (((False, dut.bottom, dut.pop_bottom),) if kind == "topk" else ())
                for largest, head, pop in sides:
                    heads = []
                    for _ in range(cfg.k):
                        heads.append(ctx.get(head))
                        ctx.set(pop, 1)
                        await ctx.tick()
                        ctx.set(pop, 0)
                        for _ in range(ExtremeK.head_latency(cfg)):     # the registered head tree follows the pop
                            await ctx.tick()
                    assert heads == ref_extreme_k(values, cfg.k, largest, cfg.in_fmt)

    simulate(dut, bench)


# -- the normalize pass --------------------------------------------------------------------------------

def set_special(ctx, dut, force):
    """NormalizeAffine's special-regime inputs for one channel: force = (neg, q), or None (regular)."""
    neg, q = force or (False, 0)
    ctx.set(dut.special, force is not None)
    ctx.set(dut.neg, neg)
    ctx.set(dut.q_lo, q)
    ctx.set(dut.q_hi, q + 1)


def normalize_channels(cfg, rnd):
    """(x values, A, B, SH, force) per channel: typical gains with a mix of saturated outputs, gains that make
    exact ties, the extreme A, B and SH of the configuration, A = 0, and special-regime channels (force = (neg, q):
    x = q and q + 1 on the line, the rest forced)."""
    a_lo, a_hi = -(1 << (cfg.a_bits - 1)), (1 << (cfg.a_bits - 1)) - 1
    b_lo, b_hi = -(1 << (cfg.b_bits - 1)), (1 << (cfg.b_bits - 1)) - 1
    fi, fo = cfg.in_fmt, cfg.out_fmt
    out_mid = (fo.min_int + fo.max_int) // 2

    def half(sh):
        return 0 if cfg.rounding == "floor" else 1 << (sh - 1)

    def xs(n):
        return random_values(rnd, fi, n - 2) + [fi.min_int, fi.max_int]

    channels = []
    for _ in range(3):                  # typical: |gain| up to 2 output LSBs per input LSB
        sh = rnd.randint(cfg.shift_lo, cfg.shift_max)
        a = rnd.randint(max(a_lo, -(2 << sh)), min(a_hi, 2 << sh))
        b = (rnd.randint(out_mid - 64, out_mid + 64) << sh) + half(sh)
        channels.append((xs(rnd.randint(20, MAX_COUNT)), a, b, sh))
    for _ in range(2):                  # ties: x*A is an odd multiple of 2**(SH-1) for odd x
        sh = rnd.randint(cfg.shift_lo, cfg.shift_max)
        a = rnd.choice((-3, -1, 1, 3)) << (sh - 1)
        b = (rnd.randint(out_mid - 32, out_mid + 32) << sh) + half(sh)
        channels.append((xs(MAX_COUNT), a, b, sh))
    channels += [(xs(37), a_lo, b_hi, cfg.shift_lo), (xs(37), a_hi, b_lo, cfg.shift_max),
                 (xs(29), a_hi, b_hi, cfg.shift_lo), (xs(29), a_lo, b_lo, cfg.shift_max),
                 (xs(11), 0, (out_mid << cfg.shift_lo) + half(cfg.shift_lo), cfg.shift_lo),
                 (xs(1), 1 << cfg.shift_lo, half(cfg.shift_lo), cfg.shift_lo)]    # y = x, clamped
    channels = [c + (None,) for c in channels]
    lo_sh = cfg.shift_lo
    acc_lo, acc_hi = (fo.min_int - 2) << lo_sh, (fo.max_int + 2) << lo_sh
    for neg in (False, True, False):    # the special regime: the line through x = q and q + 1, the rest forced
        q = rnd.randint(fi.min_int, fi.max_int - 1)
        acc0, acc1 = sorted(rnd.randint(acc_lo, acc_hi) for _ in range(2))
        acc0, acc1 = (acc1, acc0) if neg else (acc0, acc1)
        a = acc1 - acc0
        near = [v for v in (q - 2, q - 1, q, q + 1, q + 2, q + 3) if fi.min_int <= v <= fi.max_int]
        channels.append((near * 3 + xs(rnd.randint(8, 40)), a, acc0 - q * a, lo_sh, (neg, q)))
    return channels


@pytest.mark.parametrize("cfg", [
    NormConfig(kind="frn", lanes=4, rounding="half_even", max_count=MAX_COUNT),
    NormConfig(kind="linf", lanes=1, rounding="half_up", max_count=MAX_COUNT),
    NormConfig(kind="range", lanes=4, rounding="half_even", max_count=MAX_COUNT),
    NormConfig(kind="l2", lanes=4, rounding="floor", max_count=MAX_COUNT),
    NormConfig(kind="l1", lanes=2, rounding="half_even", in_fmt=U8, out_fmt=FixedFormat(8, 5, signed=False),
               max_count=MAX_COUNT),
    # a dropout build with drop low (an inference channel): the same function through the longer pipeline
    NormConfig(kind="range", lanes=4, rounding="half_even", max_count=MAX_COUNT, dropout=0.3),
    NormConfig(kind="l2", lanes=1, rounding="floor", max_count=MAX_COUNT, dropout=0.6),
    NormConfig(kind="l1", lanes=2, rounding="half_up", in_fmt=U8, out_fmt=FixedFormat(8, 5, signed=False),
               max_count=MAX_COUNT, dropout=0.5),
], ids=lambda cfg: f"{cfg.lanes}lanes-{cfg.rounding}-{cfg.in_fmt}-{cfg.out_fmt}{'-dropout' if cfg.dropout else ''}")
def test_normalize_affine_rounds_saturates_and_counts_through_a_back_pressured_pipeline(cfg):
    dut = NormalizeAffine(cfg)
    rnd = random.Random(80 + cfg.lanes)
    lanes = cfg.lanes
    channels = normalize_channels(cfg, rnd)
    ties = sum(ref_normalize(x, a, b, sh, "floor", cfg.out_fmt)[0] != ref_normalize(x, a, b, sh, "half_even",
                                                                                     cfg.out_fmt)[0]
               for xs, a, b, sh, _ in channels for x in xs)
    assert ties > 0, "the channels must hold ties that half_even rounds down"

    async def bench(ctx):
        if cfg.dropout_active:
            ctx.set(dut.drop, 0)
            ctx.set(dut.seed, 12345)
        for index, (xs, a, b, sh, force) in enumerate(channels):
            steady = index == 0             # the first channel: always valid and ready (the latency)
            beats = beats_of(xs, lanes)
            fo = cfg.out_fmt
            tau = rnd.choice([fo.min_int, fo.max_int, 0, rnd.randint(fo.min_int, fo.max_int)]) if cfg.frn else None
            if cfg.frn:                     # the TLU: z = max(y, tau) after the clamp
                ctx.set(dut.tau, tau)
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            ctx.set(dut.shift, sh)
            set_special(ctx, dut, force)
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            sent, got, t_in, t_out, cycle = 0, [], [], [], 0
            while len(got) < len(beats):
                offer = sent < len(beats) and (steady or rnd.random() < 0.8)
                payload, mask = beats[sent] if offer else ([], rnd.getrandbits(lanes))
                ctx.set(dut.i.payload, payload + random_values(rnd, cfg.in_fmt, lanes - len(payload)))
                ctx.set(dut.mask, mask)
                ctx.set(dut.i.valid, offer)
                ready = steady or rnd.random() < 0.6
                ctx.set(dut.o.ready, ready)
                taken = offer and ctx.get(dut.i.ready)
                if taken:
                    t_in.append(cycle)
                if ready and ctx.get(dut.o.valid):
                    got.append([ctx.get(dut.o.payload[j]) for j in range(lanes)])
                    t_out.append(cycle)
                await ctx.tick()
                sent += taken
                cycle += 1
                assert cycle < GUARD_CYCLES, "the pipeline stopped"
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.o.ready, 0)
            want, sat = [], 0
            for lanes_in, mask in beats:
                refs = [ref_normalize(x, a, b, sh, cfg.rounding, cfg.out_fmt, force) for x in lanes_in]
                ys = [y if tau is None else max(y, tau) for y, _ in refs]
                want.append(ys + [0] * (lanes - len(lanes_in)))     # masked lanes: 0
                sat += sum(s for _, s in refs)
            assert got == want, (a, b, sh)
            assert ctx.get(dut.sat_count) == sat, (a, b, sh)
            assert not ctx.get(dut.busy), "the pipeline is empty once every beat is out"
            latency = [o - i for i, o in zip(t_in, t_out)]
            if steady:
                assert set(latency) == {dut.latency}
            else:
                assert min(latency) >= dut.latency

    simulate(dut, bench)


# -- dropout -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("lanes", [1, 4, 8])
def test_dropout_lfsr_steps_lanes_times_per_beat_and_keeps_draws_at_or_above_the_threshold(lanes):
    cfg = NormConfig(lanes=lanes, max_count=MAX_COUNT, dropout=0.37)
    dut = DropoutLFSR(cfg)
    rnd = random.Random(90 + lanes)
    seeds = [0, 1, 0xFFFFFFFF, rnd.getrandbits(32), rnd.getrandbits(32)]

    async def bench(ctx):
        kept = total = 0
        for seed in seeds:
            beats = rnd.randint(5, 40)
            want = ref_keep(seed, beats * lanes, cfg.dropout_threshold)
            ctx.set(dut.seed, seed)
            ctx.set(dut.load, 1)
            await ctx.tick()
            ctx.set(dut.load, 0)
            ctx.set(dut.seed, rnd.getrandbits(32))          # the seed matters only while load is high
            beat = 0
            while beat < beats:
                step = rnd.random() < 0.7                     # a stalled beat leaves the state where it is
                got = [bool(ctx.get(dut.keep) >> j & 1) for j in range(lanes)]
                assert got == want[beat * lanes:(beat + 1) * lanes], (seed, beat)
                ctx.set(dut.step, step)
                await ctx.tick()
                ctx.set(dut.step, 0)
                beat += step
            kept += sum(want)
            total += len(want)
        assert 0.5 < kept / total < 0.75                       # about 1 - 0.37

    simulate(dut, bench)


@pytest.mark.parametrize("cfg", [
    NormConfig(kind="range", lanes=4, rounding="half_even", max_count=MAX_COUNT, dropout=0.3),
    NormConfig(kind="l2", lanes=1, rounding="floor", max_count=MAX_COUNT, dropout=0.6),
    NormConfig(kind="l1", lanes=2, rounding="half_up", in_fmt=U8, out_fmt=FixedFormat(8, 5, signed=False),
               max_count=MAX_COUNT, dropout=0.5),
], ids=lambda cfg: f"{cfg.lanes}lanes-{cfg.rounding}-p{cfg.dropout}")
def test_normalize_affine_with_dropout_zeroes_dropped_values_and_scales_the_kept_ones(cfg):
    dut = NormalizeAffine(cfg)
    rnd = random.Random(70 + cfg.lanes)
    lanes = cfg.lanes
    channels = normalize_channels(cfg, rnd)
    seeds = [rnd.getrandbits(32) for _ in channels]

    async def bench(ctx):
        dropped = scaled_sat = 0
        ctx.set(dut.drop, 1)
        for (xs, a, b, sh, force), seed in zip(channels, seeds):
            beats = beats_of(xs, lanes)
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            ctx.set(dut.shift, sh)
            set_special(ctx, dut, force)
            ctx.set(dut.seed, seed)
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            sent, got, cycle = 0, [], 0
            while len(got) < len(beats):
                offer = sent < len(beats) and rnd.random() < 0.8
                payload, mask = beats[sent] if offer else ([], rnd.getrandbits(lanes))
                ctx.set(dut.i.payload, payload + random_values(rnd, cfg.in_fmt, lanes - len(payload)))
                ctx.set(dut.mask, mask)
                ctx.set(dut.i.valid, offer)
                ready = rnd.random() < 0.6
                ctx.set(dut.o.ready, ready)
                taken = offer and ctx.get(dut.i.ready)
                if ready and ctx.get(dut.o.valid):
                    got.append([ctx.get(dut.o.payload[j]) for j in range(lanes)])
                await ctx.tick()
                sent += taken
                cycle += 1
                assert cycle < GUARD_CYCLES, "the pipeline stopped"
            ctx.set(dut.i.valid, 0)
            keep = ref_keep(seed, len(beats) * lanes, cfg.dropout_threshold)
            want, sat = [], 0
            for k, (lanes_in, _) in enumerate(beats):
                row = []
                for j, x in enumerate(lanes_in):
                    y, s = ref_dropout_normalize(x, a, b, sh, cfg.rounding, cfg.out_fmt, cfg.dropout_scale,
                                                 cfg.dropout_scale_frac, force=force)
                    kept = keep[k * lanes + j]
                    row.append(y if kept else 0)
                    sat += s and kept
                    dropped += not kept
                    plain = ref_normalize(x, a, b, sh, cfg.rounding, cfg.out_fmt, force)
                    scaled_sat += kept and s and not plain[1]
                want.append(row + [0] * (lanes - len(lanes_in)))
            assert got == want, (a, b, sh, seed)
            assert ctx.get(dut.sat_count) == sat, (a, b, sh, seed)
        assert dropped > 0 and scaled_sat > 0, "dropped values and values only the scaling saturates must occur"

    simulate(dut, bench)


# -- the per-element affine stage (elementwise builds) -----------------------------------------------

def affine_channels(cfg, rnd):
    """Per channel a list of (x_hat, gamma, beta) codes: x_hat about the output range (some clamp), x_hat and gamma
    at their limits, exact ties (gamma x_hat an odd multiple of half an output LSB), and masked last beats."""
    fh, fg, fb, fo = cfg.norm_out_fmt, cfg.gamma_fmt, cfg.beta_fmt, cfg.out_fmt
    near = (fo.max_int + 1) << (fh.frac - fo.frac)                 # the output range in x_hat codes

    def value(kind):
        g, b = rnd.randint(fg.min_int, fg.max_int), rnd.randint(fb.min_int, fb.max_int) // 4
        if kind == "typical":
            return rnd.randint(-2 * near, 2 * near), g, b
        if kind == "limit":
            return rnd.choice((fh.min_int, fh.max_int, 0)), rnd.choice((fg.min_int, fg.max_int, g)), \
                rnd.choice((fb.min_int, fb.max_int, b))
        sg = max(fg.frac + fh.frac, fb.frac) - fg.frac - fh.frac
        s = max(fg.frac + fh.frac, fb.frac) - fo.frac
        sb = max(fg.frac + fh.frac, fb.frac) - fb.frac
        odd, b = rnd.randrange(-15, 16, 2), rnd.randint(-4, 4) << max(0, s - sb)      # beta a multiple of the LSB
        return odd << (s - 1 - sg), rnd.choice((1, 3, -1)) if fg.signed else rnd.choice((1, 3)), b   # a tie

    sizes = [1, cfg.lanes + 1, 2 * cfg.lanes + 3, rnd.randint(5, MAX_COUNT - 1), MAX_COUNT]
    chans = [[value(rnd.choice(("typical", "typical", "limit", "tie"))) for _ in range(n)] for n in sizes]
    return chans + [[value("tie") for _ in range(4 * cfg.lanes + 1)]]


@pytest.mark.parametrize("cfg", [
    NormConfig(lanes=1, rounding="half_up", max_count=MAX_COUNT, elementwise=True),
    NormConfig(lanes=4, rounding="half_even", max_count=MAX_COUNT, elementwise=True),
    NormConfig(kind="l2", lanes=4, rounding="floor", max_count=MAX_COUNT, elementwise=True, **FORMATS_16),
    NormConfig(kind="l2", lanes=1, rounding="half_even", max_count=MAX_COUNT, elementwise=True, **FORMATS_16),
    # gamma x_hat with fewer fraction bits than beta (beta not shifted, the product is); an unsigned gamma
    NormConfig(lanes=2, rounding="half_even", max_count=MAX_COUNT, elementwise=True, gamma_fmt=FixedFormat(4, 1),
               beta_fmt=FixedFormat(20, 16)),
    NormConfig(lanes=4, rounding="half_up", max_count=MAX_COUNT, elementwise=True, gamma_fmt=FixedFormat(8, 6, False),
               out_fmt=FixedFormat(8, 5, signed=False)),
], ids=lambda c: f"{c.lanes}lanes-{c.rounding}-gamma{c.gamma_fmt}-beta{c.beta_fmt}-out{c.out_fmt}")
def test_elementwise_affine_rounds_gamma_xhat_plus_beta_once_and_clamps_through_a_back_pressured_pipeline(cfg):
    dut = ElementwiseAffine(cfg)
    rnd = random.Random(90 + cfg.lanes)
    lanes = cfg.lanes
    channels = affine_channels(cfg, rnd)
    refs = [ref_affine(*v, cfg) for ch in channels for v in ch]
    assert sum(s for _, s in refs) > 0 and sum(not s for _, s in refs) > len(refs) // 4, "saturated and unsaturated"
    if cfg.rounding != "floor":
        other = "half_up" if cfg.rounding == "half_even" else "half_even"
        flip = NormConfig(**{**cfg.to_dict(), "rounding": other, "gamma_fmt": cfg.gamma_fmt, "beta_fmt": cfg.beta_fmt,
                             "in_fmt": cfg.in_fmt, "out_fmt": cfg.out_fmt})
        assert any(ref_affine(*v, cfg)[0] != ref_affine(*v, flip)[0] for ch in channels for v in ch), "no ties"

    async def bench(ctx):
        for index, values in enumerate(channels):
            steady = index == 0             # the first channel: always valid and ready (the latency)
            beats = beats_of(values, lanes)
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            sent, got, t_in, t_out, cycle = 0, [], [], [], 0
            while len(got) < len(beats):
                offer = sent < len(beats) and (steady or rnd.random() < 0.8)
                vals, mask = beats[sent] if offer else ([], rnd.getrandbits(lanes))
                junk = [(rnd.randint(cfg.norm_out_fmt.min_int, cfg.norm_out_fmt.max_int),
                         rnd.randint(cfg.gamma_fmt.min_int, cfg.gamma_fmt.max_int),
                         rnd.randint(cfg.beta_fmt.min_int, cfg.beta_fmt.max_int)) for _ in range(lanes - len(vals))]
                full = vals + junk                  # masked lanes carry junk and must output 0
                ctx.set(dut.i.payload, {"xhat": [v[0] for v in full], "gamma": [v[1] for v in full],
                                        "beta": [v[2] for v in full], "mask": mask})
                ctx.set(dut.i.valid, offer)
                ready = steady or rnd.random() < 0.6
                ctx.set(dut.o.ready, ready)
                taken = offer and ctx.get(dut.i.ready)
                if taken:
                    t_in.append(cycle)
                if ready and ctx.get(dut.o.valid):
                    got.append([ctx.get(dut.o.payload[j]) for j in range(lanes)])
                    t_out.append(cycle)
                await ctx.tick()
                sent += taken
                cycle += 1
                assert cycle < GUARD_CYCLES, "the pipeline stopped"
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.o.ready, 0)
            want, sat = [], 0
            for vals, _ in beats:
                r = [ref_affine(*v, cfg) for v in vals]
                want.append([y for y, _ in r] + [0] * (lanes - len(vals)))
                sat += sum(s for _, s in r)
            assert got == want, index
            assert ctx.get(dut.sat_count) == sat, index
            assert not ctx.get(dut.busy), "the pipeline is empty once every beat is out"
            latency = [o - i for i, o in zip(t_in, t_out)]
            if steady:
                assert set(latency) == {dut.latency}
            else:
                assert min(latency) >= dut.latency

    simulate(dut, bench)
