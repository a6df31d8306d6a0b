"""cocotb protocol soak of one random configuration (hwnorm/verify/soak.py, `hwnorm sim --soak`): random channels
(counts, data distributions, training and inference) in groups, each group under its own random input
gaps and output back-pressure, now and then a refused descriptor (its error word) and a reset at a random cycle.
Bit-exact against hwnorm.golden through the scoreboard of hwnorm/verify/tb.py. HWNORM_SOAK_SEED / HWNORM_SOAK_VALUES set by the soak.
"""
from __future__ import annotations

import os
import random

import cocotb
import numpy as np

from hwnorm.config import NormConfig
from hwnorm.verify.soak import DISTRIBUTIONS, draw_affine, draw_count, draw_data, draw_inference, scale_exponents, special_counts
from hwnorm.verify.tb import NormTB, refusals

CFG = NormConfig.from_json(os.environ["HWNORM_CONFIG"])
SEED = int(os.environ.get("HWNORM_SOAK_SEED", "1"))
VALUES = int(os.environ.get("HWNORM_SOAK_VALUES", "20000"))
STALLS = (0.0, 0.05, 0.3, 0.6, 0.9)
MAX_N = 1024                              # cocotb runs ~20k values/s: longer channels only cost time


@cocotb.test()
async def soak_protocol(dut):
    rng = np.random.default_rng([SEED, 3])
    tb = NormTB(dut, CFG, random.Random(SEED))
    await tb.start()
    specials = [c for c in special_counts(CFG) if c <= MAX_N] or [1]
    exps = scale_exponents(CFG)
    bad_rng = np.random.default_rng([SEED, 5])      # its own stream: a seed's channels are as they were
    bad = refusals(CFG, {k: int(v[0]) for k, v in draw_inference(bad_rng, CFG, 1, exps).items()})
    queued = resets = refused = 0
    while queued < VALUES:
        tb.chan.gap = tb.data.gap = float(rng.choice(STALLS))
        tb.out.stall = tb.stat.stall = float(rng.choice(STALLS))
        for _ in range(int(rng.integers(1, 5))):
            n = min(draw_count(rng, CFG, specials), MAX_N)
            x = draw_data(rng, CFG.in_fmt, [str(rng.choice(DISTRIBUTIONS))], n)[0]
            g = int(draw_affine(rng, CFG.gamma_fmt, 1, True)[0])
            b = int(draw_affine(rng, CFG.beta_fmt, 1, False)[0])
            inf = None
            if rng.random() < 0.25:
                inf = {k: int(v[0]) for k, v in draw_inference(rng, CFG, 1, exps).items()}
            tb.channel(x, g, b, inference=inf)
            queued += n
            if bad and bad_rng.random() < 0.2:       # now and then a descriptor the core must refuse (its error word)
                tb.refuse(*bad[int(bad_rng.integers(len(bad)))][::-1])
                refused += 1
        if rng.random() < 0.1:
            for _ in range(int(rng.integers(1, 400))):
                await tb.step()
            await tb.reset()
            resets += 1
        else:
            await tb.run()
    tb.record("soak_protocol", resets=resets, refused=refused)
