"""The datapath's descriptor checks (NormDatapath._refused) against their few lines of Python
(NormConfig.descriptor_error), in Amaranth's simulator, on descriptors near every limit and at random."""
import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from hwnorm.config import FixedFormat, NormConfig
from hwnorm.constants import channel_params
from hwnorm.fields import pack
from hwnorm.hdl.common import channel_layout
from hwnorm.hdl.datapath import NormDatapath

CONFIGS = {"range_p4": NormConfig(lanes=4, max_count=300),
           "range_chunks7": NormConfig(chunks=7, max_count=1000),
           "cvar_overlap": NormConfig(kind="cvar", lanes=2, max_count=1024, overlap=True),
           "l2_u8": NormConfig(kind="l2", in_fmt=FixedFormat(8, 8, signed=False), max_count=64),
           "frn": NormConfig(kind="frn", max_count=300),
           "frn_range": NormConfig(kind="frn_range", max_count=300),
           "infer_only": NormConfig(inference_only=True, max_count=4095)}


def _cases(cfg, rng, n=300):
    widths = {name: (w, s) for name, w, s in cfg.channel_fields}
    lo, hi = cfg.scale_exp_range
    edge = {"count": [0, 1, cfg.max_count, cfg.max_count + 1], "m": [0, 1, cfg.k, cfg.k + 1, 2],
            "chunk_size": [0, 1, 2, -(-cfg.max_count // cfg.chunks) - 1, -(-cfg.max_count // cfg.chunks)],
            "neps": [0, 1], "eps_n": [0, 1], "eps": [0, 1], "scale_exp": [lo, hi, hi + 1], "infer": [0, 1],
            "mean": [cfg.mean_limits[0], cfg.mean_limits[0] - 1, cfg.mean_limits[1], cfg.mean_limits[1] + 1]}
    for _ in range(n):
        count = rng.randint(1, cfg.max_count)
        d = {name: 0 for name in widths}
        if not cfg.inference_only:
            d.update(channel_params(cfg, count))
        d.update(count=count, infer=rng.randint(0, 1))
        for name in rng.sample(sorted(edge.keys() & widths.keys()), rng.randint(0, 2)):
            w, signed = widths[name]
            f_lo, f_hi = (-(1 << (w - 1)), (1 << (w - 1)) - 1) if signed else (0, (1 << w) - 1)
            d[name] = min(max(rng.choice(edge[name] + [rng.randint(f_lo, f_hi)]), f_lo), f_hi)
        yield d


@pytest.mark.parametrize("key", sorted(CONFIGS))
def test_the_hardware_refuses_exactly_what_descriptor_error_refuses(key):
    cfg = CONFIGS[key]
    dp = object.__new__(NormDatapath)         # only _refused, on a descriptor signal
    dp.cfg = cfg
    m = Module()
    desc = Signal(channel_layout(cfg))
    refused = dp._refused(m, desc)
    cases = list(_cases(cfg, random.Random(key)))
    got = []

    async def bench(ctx):
        for d in cases:
            ctx.set(desc.as_value(), pack(cfg.channel_fields, d))
            got.append(ctx.get(refused))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    want = [int(cfg.descriptor_error(d) is not None) for d in cases]
    bad = [(d, g, w) for d, g, w in zip(cases, got, want) if g != w]
    assert not bad, bad[:3]
    assert 0.1 < sum(want) / len(want) < 0.9, sum(want)         # both verdicts are exercised
