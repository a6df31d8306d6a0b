"""Unit tests of single Amaranth blocks in Amaranth's own simulator (the datapath is tested in cocotb)."""
import math
import random

from amaranth.sim import Simulator

from hwnorm.hdl import Reciprocal
from hwnorm.hdl.blocks import ISqrt


def run_sequential(dut, inputs, apply, check):
    """For each input: apply() it with a one-cycle start pulse, wait for done, check(); returns the latencies."""
    seen = []

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
            check(ctx, value)
            seen.append(cycles)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return set(seen)


def test_reciprocal_is_floor_of_normalized_division_with_fixed_latency():
    dut = Reciprocal(den_bits=20, recip_bits=9)
    rnd = random.Random(5)
    dens = [1, 2, 3, (1 << 19), (1 << 20) - 1, 12345] + [rnd.randrange(1, 1 << 20) for _ in range(40)]

    def check(ctx, den):
        lead = den.bit_length() - 1
        assert ctx.get(dut.lead) == lead
        assert ctx.get(dut.recip) == (1 << (lead + 9)) // den, den

    assert run_sequential(dut, dens, lambda ctx, den: ctx.set(dut.den, den), check) == {dut.latency}


def test_isqrt_is_floor_sqrt_with_fixed_latency():
    dut = ISqrt(w_bits=37)
    rnd = random.Random(9)
    ws = [0, 1, 2, 3, 4, 15, 16, 17, (1 << 37) - 1, (1 << 36)] + [rnd.randrange(0, 1 << 37) for _ in range(40)]

    def check(ctx, w):
        assert ctx.get(dut.root) == math.isqrt(w), w

    assert run_sequential(dut, ws, lambda ctx, w: ctx.set(dut.w, w), check) == {ISqrt.latency_for(37)}
