"""cocotb tests of the AXI4-Stream wrapper (hwnorm/hdl/axi_stream.py): cocotbext-axi's AxiStreamSource and
AxiStreamSink on its four streams with random pauses, the same golden-model scoreboard as the native tests."""
from __future__ import annotations

import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from hwnorm.config import NormConfig
from hwnorm.constants import inference_params
from hwnorm.fields import pack, unpack
from hwnorm.hdl.axi_stream import axi_widths, lane_bytes
from hwnorm.verify.tb import REFUSED_STATS, Scoreboard, golden_channel, refused_descriptor

CFG = NormConfig.from_json(os.environ["HWNORM_CONFIG"])
FI, FO, FG, FB = CFG.in_fmt, CFG.out_fmt, CFG.gamma_fmt, CFG.beta_fmt
IB, OB = lane_bytes(FI.bits), lane_bytes(FO.bits)


def _pauses(rng: random.Random, p: float):
    while True:
        yield rng.random() < p


def _to_bytes(value: int, nbytes: int) -> bytes:
    return (value & ((1 << (8 * nbytes)) - 1)).to_bytes(nbytes, "little")


class AxiBench:
    """Sources and sinks on the four streams, a scoreboard, and the channels queued so far."""

    def __init__(self, dut, seed: int, pause: float):
        self.dut, self.rng = dut, random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        clk, rst = dut.clk, dut.rst
        self.desc = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis_desc"), clk, rst)
        self.data = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), clk, rst)
        self.out = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), clk, rst)
        self.stats = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis_stats"), clk, rst)
        for k, port in enumerate((self.desc, self.data, self.out, self.stats)):
            if pause:
                port.set_pause_generator(_pauses(random.Random(seed * 7 + k), pause))
        self.scoreboard = Scoreboard(dut._log)
        self.counts: list[int] = []
        self.cycles = 0

    async def start(self):
        Clock(self.dut.clk, 10, unit="ns").start()
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    def channel(self, x, gamma: int, beta: int, inference: dict | None = None):
        """Queue one channel: its descriptor beat, one input frame per pass, and its expected outputs."""
        x = np.asarray(x, dtype=np.int64)
        desc, passes, res, stats = golden_channel(CFG, x, gamma, beta, inference)
        self.desc.send_nowait(AxiStreamFrame(_to_bytes(pack(CFG.channel_fields, desc), axi_widths(CFG)["s_axis_desc"] // 8)))
        frame = b"".join(_to_bytes(int(v), IB) for v in x)
        for _ in range(passes):
            self.data.send_nowait(AxiStreamFrame(frame))
        y = [int(v) for v in res.y[0]]
        beats = [(y[b:b + CFG.lanes] + [0] * (CFG.lanes - len(y[b:b + CFG.lanes])), len(y[b:b + CFG.lanes]))
                 for b in range(0, len(y), CFG.lanes)]
        self.scoreboard.expect(beats, stats)
        self.counts.append(len(x))

    def refuse(self, desc: dict):
        """Queue a descriptor the core refuses: no output frame, a statistics word with error = 1 and tuser = 1."""
        self.desc.send_nowait(AxiStreamFrame(_to_bytes(pack(CFG.channel_fields, desc), axi_widths(CFG)["s_axis_desc"] // 8)))
        self.scoreboard.expect([], dict(REFUSED_STATS))
        self.counts.append(None)

    def _lanes(self, data: bytes) -> list[int]:
        """The output frame's values: OB bytes each, sign-extended by the core (checked here)."""
        vals = []
        for j in range(0, len(data), OB):
            raw = int.from_bytes(data[j:j + OB], "little")
            v = raw & ((1 << FO.bits) - 1)
            if FO.signed and v >> (FO.bits - 1):
                v -= 1 << FO.bits
            if _to_bytes(v, OB) != data[j:j + OB]:
                self.scoreboard._mismatch(f"output lane {raw:#x} is not the {FO} value {v} extended to {OB} bytes")
            vals.append(v)
        return vals

    async def run(self, timeout_us: int = 20_000):
        """Receive every queued channel's output frame (tlast on its last beat) and statistics word."""
        t0 = cocotb.utils.get_sim_time(unit="ns")
        while self.counts:
            n = self.counts.pop(0)
            if n is None:                   # a refused descriptor: its error word only
                await self._stats(timeout_us, refused=True)
                continue
            frame = await with_timeout(self.out.recv(), timeout_us, "us")
            vals = self._lanes(bytes(frame.tdata))
            if len(vals) != n:
                self.scoreboard._mismatch(f"output frame of {len(vals)} values for a {n}-value channel (tlast or tkeep wrong)")
            for b in range(0, len(vals), CFG.lanes):
                got = vals[b:b + CFG.lanes]
                self.scoreboard.on_beat(got + [0] * (CFG.lanes - len(got)), 0)
            await self._stats(timeout_us, refused=False)
        self.cycles += int((cocotb.utils.get_sim_time(unit="ns") - t0) // 10)

    async def _stats(self, timeout_us: int, refused: bool):
        """One statistics word; m_axis_stats_tuser must be its error bit."""
        word = await with_timeout(self.stats.recv(), timeout_us, "us")
        self.scoreboard.on_stats(unpack(CFG.stats_fields, int.from_bytes(bytes(word.tdata), "little")), 0)
        tuser = word.tuser[-1] if isinstance(word.tuser, list) else word.tuser
        if int(tuser or 0) != int(refused):
            self.scoreboard._mismatch(f"m_axis_stats_tuser = {tuser}, expected {int(refused)} (the error bit)")

    def record(self, name: str):
        import json
        sb = self.scoreboard
        rec = dict(test=name, cycles=self.cycles, values=sb.values, stats=sb.stats_checked, mismatches=sb.mismatches,
                   latency=None, pass_gap=None)
        path = os.environ.get("HWNORM_RESULTS")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        assert sb.mismatches == 0 and sb.done, f"{sb.mismatches} mismatches, done={sb.done}"


def _x(rng, n):
    return rng.integers(FI.min_int, FI.max_int + 1, size=n)


def _affine(rng):
    g = int(rng.integers(max(FG.min_int, -(2 << FG.frac)), min(FG.max_int, 2 << FG.frac) + 1))
    return g, int(rng.integers(FB.min_int, FB.max_int + 1) // 4)


def _inference(rng):
    span = (FI.max_int - FI.min_int) * FI.lsb
    return inference_params(CFG, float(rng.uniform(FI.min_int, FI.max_int)) * FI.lsb, float(2.0 ** rng.uniform(-1, 4)) / span)


def _counts():
    p = CFG.lanes
    return sorted({c for c in (1, 2, p - 1, p, p + 1, 2 * p + 1, 13, 64, 100, CFG.max_count) if 1 <= c <= min(CFG.max_count, 300)})


@cocotb.test()
async def random_pauses(dut):
    """Training and inference channels at boundary counts, every stream paused at random 30% of the cycles."""
    tb = AxiBench(dut, cocotb.RANDOM_SEED, 0.3)
    await tb.start()
    rng = tb.np_rng
    for n in _counts():
        tb.channel(_x(rng, n), *_affine(rng), inference=None if not CFG.inference_only else _inference(rng))
        tb.channel(_x(rng, n), *_affine(rng), inference=_inference(rng))
    await tb.run()
    tb.record("axi_random_pauses")


@cocotb.test()
async def back_to_back(dut):
    """No pauses: channels back to back, the whole protocol at full rate."""
    tb = AxiBench(dut, cocotb.RANDOM_SEED + 1, 0.0)
    await tb.start()
    rng = tb.np_rng
    for n in (16, 37, 1, min(CFG.max_count, 256)):
        tb.channel(_x(rng, n), *_affine(rng), inference=None if not CFG.inference_only else _inference(rng))
    tb.channel(_x(rng, 50), *_affine(rng), inference=_inference(rng))
    await tb.run()
    tb.record("axi_back_to_back")


@cocotb.test()
async def reset_mid_channel(dut):
    """rst early in a channel and late in it (past its first pass): every stream and the core start over,
    and the next channels (tlast, tkeep, values, statistics) are exact."""
    tb = AxiBench(dut, cocotb.RANDOM_SEED + 2, 0.2)
    await tb.start()
    rng = tb.np_rng
    n = min(CFG.max_count, 40)
    passes = 1 if CFG.inference_only else CFG.passes
    beats = -(-n // CFG.lanes)
    for wait in (beats // 2, (passes - 1) * beats + beats // 2 + 150):
        tb.channel(_x(rng, n), *_affine(rng))
        await ClockCycles(dut.clk, wait)
        dut.rst.value = 1
        for port in (tb.desc, tb.data, tb.out, tb.stats):
            port.clear()
        tb.scoreboard.clear()
        tb.counts.clear()
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        await RisingEdge(dut.clk)
        for m in (1, n, CFG.lanes + 1):
            tb.channel(_x(rng, m), *_affine(rng))
        await tb.run()
    tb.record("axi_reset_mid_channel")


@cocotb.test()
async def refused_descriptors(dut):
    """A descriptor with count 0 and one above max_count (issue 19 item 6): no output frame, an error word with
    m_axis_stats_tuser = 1, and the channels around them exact (tuser 0), with random pauses."""
    tb = AxiBench(dut, cocotb.RANDOM_SEED + 3, 0.2)
    await tb.start()
    rng = tb.np_rng
    inf = _inference(rng) if CFG.inference_only else None
    for count in (0, CFG.max_count + 1, 0):
        tb.channel(_x(rng, 9), *_affine(rng), inference=inf)
        tb.refuse(refused_descriptor(CFG, count, inference=inf))
    tb.channel(_x(rng, 5), *_affine(rng), inference=inf)
    await tb.run()
    tb.record("axi_refused_descriptor")
