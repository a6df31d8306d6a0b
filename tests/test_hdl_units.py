"""Unit tests of single Amaranth blocks in Amaranth's own simulator (the datapath is tested in cocotb)."""
import random

from amaranth.sim import Simulator

from hwnorm.hdl import Reciprocal


def test_reciprocal_is_floor_of_normalized_division_with_fixed_latency():
    dut = Reciprocal(den_bits=20, recip_bits=9)
    rnd = random.Random(5)
    dens = [1, 2, 3, (1 << 19), (1 << 20) - 1, 12345] + [rnd.randrange(1, 1 << 20) for _ in range(40)]
    seen = []

    async def bench(ctx):
        for den in dens:
            ctx.set(dut.den, den)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycles = 0
            while not ctx.get(dut.done):
                await ctx.tick()
                cycles += 1
            lead = den.bit_length() - 1
            assert ctx.get(dut.lead) == lead
            assert ctx.get(dut.recip) == (1 << (lead + 9)) // den, den
            seen.append(cycles + 1)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert set(seen) == {dut.latency}


def test_isqrt_is_floor_sqrt_with_fixed_latency():
    import math

    from hwnorm.hdl.blocks import ISqrt

    dut = ISqrt(w_bits=37)
    rnd = random.Random(9)
    ws = [0, 1, 2, 3, 4, 15, 16, 17, (1 << 37) - 1, (1 << 36)] + [rnd.randrange(0, 1 << 37) for _ in range(40)]
    seen = []

    async def bench(ctx):
        for w in ws:
            ctx.set(dut.w, w)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycles = 1
            while not ctx.get(dut.done):
                await ctx.tick()
                cycles += 1
            assert ctx.get(dut.root) == math.isqrt(w), w
            seen.append(cycles)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert set(seen) == {ISqrt.latency_for(37)}
