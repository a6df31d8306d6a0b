"""cocotb testbench for the hwnorm datapaths: driver, monitor and scoreboard around one DUT.

Every component has `drive()` (called right after a rising edge, to set the DUT's inputs for
the coming cycle) and `sample()` (called in ReadOnly, when the values the next edge will act on
are settled). One clock loop calls them all, so a handshake is exactly `valid & ready` as the
DUT sees it, and the testbench costs no extra coroutine per stream.
"""
from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import dataclass

import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from hwnorm.config import NormConfig
from hwnorm.constants import channel_params
from hwnorm.golden import range_bn


def pack(fields, values: dict) -> int:
    """Pack named integers into one vector, first field at the LSB (amaranth StructLayout order)."""
    word, offset = 0, 0
    for name, width, _signed in fields:
        word |= (int(values[name]) & ((1 << width) - 1)) << offset
        offset += width
    return word


def unpack(fields, word: int) -> dict:
    out, offset = {}, 0
    for name, width, signed in fields:
        v = (word >> offset) & ((1 << width) - 1)
        if signed and v >> (width - 1):
            v -= 1 << width
        out[name] = v
        offset += width
    return out


class StreamDriver:
    """Drives a valid/ready stream from a queue, idling a random fraction `gap` of the cycles."""

    def __init__(self, dut, prefix: str, rng, gap: float = 0.0, width: int | None = None):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.width = width or len(self.payload)
        self.rng, self.gap = rng, gap
        self.queue: deque = deque()
        self.current = None
        self.accepted: list[int] = []    # cycle of every handshake
        self.valid.value = 0

    def send(self, items):
        self.queue.extend(items)

    def clear(self):
        self.queue.clear()
        self.current = None

    def drive(self):
        if self.current is None and self.queue and self.rng.random() >= self.gap:
            self.current = self.queue.popleft()
        self.valid.value = int(self.current is not None)
        if self.current is not None:
            self.payload.value = self.current & ((1 << self.width) - 1)

    def sample(self, cycle: int):
        if self.current is not None and int(self.ready.value):
            self.current = None
            self.accepted.append(cycle)

    @property
    def idle(self) -> bool:
        return self.current is None and not self.queue


class StreamMonitor:
    """Accepts a stream with random back-pressure (`stall` fraction) and hands payloads to `on_item`."""

    def __init__(self, dut, prefix: str, rng, on_item, stall: float = 0.0, signed: bool = False):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.rng, self.stall, self.on_item, self.signed = rng, stall, on_item, signed
        self._ready = 0
        self.ready.value = 0

    def drive(self):
        self._ready = int(self.rng.random() >= self.stall)
        self.ready.value = self._ready

    def sample(self, cycle: int):
        if self._ready and int(self.valid.value):
            v = self.payload.value
            self.on_item(v.to_signed() if self.signed else v.to_unsigned(), cycle)


@dataclass
class Expected:
    """One channel as the golden model says the hardware must produce it."""

    x: np.ndarray
    y: list
    stats: dict
    params: object


class Scoreboard:
    """Compares every output value and every channel's statistics bit-exactly with the golden model."""

    def __init__(self, log, max_reports: int = 10):
        self.log = log
        self.outputs: deque = deque()      # expected output values, in order
        self.stats: deque = deque()        # expected stats dicts, in order
        self.values = 0
        self.stats_checked = 0
        self.mismatches = 0
        self.max_reports = max_reports

    def expect(self, exp: Expected):
        self.outputs.extend(exp.y)
        self.stats.append(exp.stats)

    def clear(self):
        self.outputs.clear()
        self.stats.clear()

    def _mismatch(self, msg):
        self.mismatches += 1
        if self.mismatches <= self.max_reports:
            self.log.error("mismatch: %s", msg)

    def on_output(self, value: int, cycle: int):
        if not self.outputs:
            self._mismatch(f"unexpected output {value} at cycle {cycle}")
            return
        want = self.outputs.popleft()
        self.values += 1
        if value != want:
            self._mismatch(f"output {self.values - 1}: got {value}, expected {want} (cycle {cycle})")

    def on_stats(self, got: dict, cycle: int):
        if not self.stats:
            self._mismatch(f"unexpected stats {got} at cycle {cycle}")
            return
        want = self.stats.popleft()
        self.stats_checked += 1
        if got != want:
            self._mismatch(f"stats: got {got}, expected {want} (cycle {cycle})")

    @property
    def done(self) -> bool:
        return not self.outputs and not self.stats


class RangeNormTB:
    """Drives channels through RangeNorm: descriptor, pass 1 values, pass 2 values; checks all outputs."""

    def __init__(self, dut, cfg: NormConfig, rng, gap: float = 0.0, stall: float = 0.0):
        self.dut, self.cfg, self.rng = dut, cfg, rng
        self.chan = StreamDriver(dut, "chan", rng, gap=gap)
        self.data = StreamDriver(dut, "i", rng, gap=gap)
        self.scoreboard = Scoreboard(dut._log)
        self.out = StreamMonitor(dut, "o", rng, self.scoreboard.on_output, stall=stall,
                                 signed=cfg.out_fmt.signed)
        self.stat = StreamMonitor(dut, "stats", rng, self._on_stats, stall=stall)
        self.parts = [self.chan, self.data, self.out, self.stat]
        self.cycle = 0
        self.latencies: set[int] = set()
        self._ready_watch = None     # cycle of the last pass-1 value, while waiting for pass 2
        self.pass1_end: deque = deque()  # index (1-based) of each channel's last pass-1 value
        self.queued = 0                  # data values queued since the last reset

    def _on_stats(self, word: int, cycle: int):
        self.scoreboard.on_stats(unpack(self.cfg.stats_fields, word), cycle)

    async def start(self):
        self.dut.rst.value = 1
        Clock(self.dut.clk, 10, unit="ns").start()
        await self.reset()

    async def reset(self, cycles: int = 3):
        """Hold rst for `cycles` clocks, dropping everything queued or expected (also mid-channel)."""
        for p in (self.chan, self.data):
            p.clear()
        self.scoreboard.clear()
        self.pass1_end.clear()
        self.data.accepted.clear()
        self.queued = 0
        self._ready_watch = None
        for k in range(cycles + 1):
            await RisingEdge(self.dut.clk)
            self.cycle += 1
            self.dut.rst.value = int(k < cycles)
            for p in self.parts:
                p.drive()

    def channel(self, x, gamma: int, beta: int) -> Expected:
        """Queue one channel (values x, integer codes) and its expected results."""
        x = np.asarray(x, dtype=np.int64)
        res = range_bn(self.cfg, x[None, :], [gamma], [beta])
        hp = channel_params(self.cfg, len(x))
        desc = dict(count=hp.count, chunk_size=hp.chunk_size, c_full=hp.c_full, c_last=hp.c_last,
                    gamma=gamma, beta=beta)
        self.chan.send([pack(self.cfg.channel_fields, desc)])
        self.data.send([int(v) for v in x] * 2)      # pass 1, then pass 2 (no on-chip buffer)
        self.pass1_end.append(self.queued + len(x))
        self.queued += 2 * len(x)
        stats = {"sum": int(res.stats.sum[0]), "sigma": int(res.stats.sigma[0]), "sat": int(res.stats.sat[0])}
        exp = Expected(x=x, y=[int(v) for v in res.y[0]], stats=stats, params=hp)
        self.scoreboard.expect(exp)
        return exp

    async def step(self):
        await RisingEdge(self.dut.clk)
        self.cycle += 1
        for p in self.parts:
            p.drive()
        await ReadOnly()
        for p in self.parts:
            p.sample(self.cycle)
        self._watch_latency()

    def _watch_latency(self):
        """Latency between passes: from the last pass-1 handshake to the first cycle i.ready is high again."""
        n_acc = len(self.data.accepted)
        if self._ready_watch is None and self.pass1_end and n_acc >= self.pass1_end[0]:
            self._ready_watch = self.data.accepted[self.pass1_end.popleft() - 1]
            return
        if self._ready_watch is not None and self.cycle > self._ready_watch and int(self.data.ready.value):
            self.latencies.add(self.cycle - self._ready_watch)
            self._ready_watch = None

    async def run(self, max_cycles: int = 2_000_000):
        """Clock until every queued channel has produced all outputs and stats."""
        start = self.cycle
        while not (self.chan.idle and self.data.idle and self.scoreboard.done):
            await self.step()
            if self.cycle - start > max_cycles:
                raise AssertionError(f"timeout after {max_cycles} cycles: DUT stopped producing outputs")
        await self.step()

    def record(self, name: str, **extra):
        """Append this test's counters to the runner's results file and assert the scoreboard is clean."""
        rec = dict(test=name, cycles=self.cycle, values=self.scoreboard.values,
                   stats=self.scoreboard.stats_checked, mismatches=self.scoreboard.mismatches,
                   latency=min(self.latencies) if self.latencies else None, **extra)
        path = os.environ.get("HWNORM_RESULTS")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        assert self.scoreboard.mismatches == 0, f"{self.scoreboard.mismatches} mismatches"
        assert len(self.latencies) <= 1, f"latency between passes is not fixed: {sorted(self.latencies)}"
        return rec
