"""cocotb side of `hwnorm bench`: stream the benchmark's channels through the DUT with no gaps or
back-pressure (the same testbench as `make sim`) and time the simulation inside the test."""
from __future__ import annotations

import os
import random
import time

import cocotb
import numpy as np

from hwnorm.config import NormConfig
from hwnorm.verify.tb import NormTB

CFG = NormConfig.from_json(os.environ["HWNORM_CONFIG"])


@cocotb.test()
async def stream(dut):
    """All channels of HWNORM_BENCH_DATA, training mode, timed from the first to the last cycle."""
    with np.load(os.environ["HWNORM_BENCH_DATA"]) as data:
        x, gamma, beta = data["x"], data["gamma"], data["beta"]
    tb = NormTB(dut, CFG, random.Random(0))
    await tb.start()
    for xc, g, b in zip(x, gamma, beta):
        tb.channel(xc, int(g), int(b))          # golden results are computed here, before the clock starts
    c0, t0 = tb.cycle, time.perf_counter()
    await tb.run()
    dt = time.perf_counter() - t0
    tb.record("bench_stream", seconds=dt, values_per_s=x.size / dt, cycles_per_s=(tb.cycle - c0) / dt)
