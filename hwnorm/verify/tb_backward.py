"""cocotb testbench of the backward datapath (hwnorm.hdl.backward.BackwardDatapath): driver, monitor, scoreboard.

The same clocking as hwnorm/verify/tb.py (one loop calls every component's drive() after a rising edge and sample()
in ReadOnly) and its StreamDriver / StreamMonitor / Scoreboard; per channel the descriptor on `chan`, the (x, g) beats
twice on `i` (pass 1 the reduction, pass 2 the dx pass), dx beats on `o` and one statistics word on `stats`, each
checked bit for bit against the golden backward (hwnorm.golden.backward through hwnorm/backends/rtl_backward.py), with
pluggable input gaps on chan / i and back-pressure on o / stats; coverage: hwnorm/verify/funcov.py BackwardCoverage.
"""
from __future__ import annotations

import json
import os
from collections import deque

import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from hwnorm.backends.rtl_backward import channel_stats, descriptor, pack_fields
from hwnorm.config import GradConfig, NormConfig
from hwnorm.fields import unpack
from hwnorm.golden.backward import backward as golden_backward
from hwnorm.verify.funcov import BackwardCoverage
from hwnorm.verify.tb import Scoreboard, StreamDriver, StreamMonitor

REFUSED = {"dgamma": 0, "dbeta": 0, "sat": 0, "error": 1}      # the word of a refused descriptor


def golden_channel(cfg: NormConfig, gcfg: GradConfig, x, g, gamma: int, seed: int = 0):
    """One channel as the golden backward says the hardware must answer it: (descriptor dict, dx codes, stats dict,
    (a dx clamped high, a dx clamped low))."""
    x, g = np.asarray(x, dtype=np.int64)[None, :], np.asarray(g, dtype=np.int64)[None, :]
    s, den = channel_stats(cfg, x)
    stochastic = gcfg.rounding == "stochastic"
    r = golden_backward(cfg, gcfg, x, g, [gamma], seed=[seed] if stochastic else None, unrounded=True)
    desc = descriptor(cfg, x.shape[1], s[0], den[0], gamma, seed)
    stats = dict(dgamma=int(r.dgamma[0]), dbeta=int(r.dbeta[0]), sat=int(r.sat[0]), error=0)
    lo, hi = gcfg.dx_fmt.min_int, gcfg.dx_fmt.max_int
    unr = r.unrounded[0]
    return desc, [int(v) for v in r.dx[0]], stats, (bool(np.any(unr >= hi + 1)), bool(np.any(unr <= lo - 1)))


class BackwardTB:
    """Drives channels through the backward datapath and checks every dx beat and statistics word."""

    def __init__(self, dut, cfg: NormConfig, gcfg: GradConfig, rng, gap: float = 0.0, stall: float = 0.0):
        self.dut, self.cfg, self.gcfg, self.rng = dut, cfg, gcfg, rng
        self.lanes = cfg.lanes
        self.fields = cfg.backward_channel_fields(gcfg)
        self.stats_fields = cfg.backward_stats_fields(gcfg)
        self.chan = StreamDriver(dut, "chan", rng, gap=gap)
        self.data = StreamDriver(dut, "i", rng, gap=gap)
        self.scoreboard = Scoreboard(dut._log)
        self.out = StreamMonitor(dut, "o", rng, self._on_out, stall=stall)
        self.stat = StreamMonitor(dut, "stats", rng, self._on_stats, stall=stall)
        self.parts = [self.chan, self.data, self.out, self.stat]
        self.cov = BackwardCoverage(cfg, gcfg)
        self.cycle = 0
        self.pending: deque = deque()      # channels queued, their statistics word not seen yet
        self.channels = 0
        self.queued = 0                    # beats queued on `i` since the last reset
        self.events: set = set()           # stall events of the channel in the DUT
        self.stats_at: list[int] = []
        self.gaps: set = set()             # cycles from a pass-1 last beat to i.ready high again (the channel math)
        self._watch = None

    # -- stimulus ---------------------------------------------------------------------------

    def _pack(self, values, fmt, p):
        vals = [int(v) for v in values] + [self.rng.randint(fmt.min_int, fmt.max_int) for _ in range(p - len(values))]
        return sum((v & ((1 << fmt.bits) - 1)) << (j * fmt.bits) for j, v in enumerate(vals))

    def _beats(self, x, g):
        """(x, g) as beats: x's lanes low, g's above; the masked lanes of the last beat carry random junk."""
        p, fi, fg = self.lanes, self.cfg.in_fmt, self.gcfg.grad_fmt
        return [self._pack(x[b:b + p], fi, p) | (self._pack(g[b:b + p], fg, p) << (p * fi.bits))
                for b in range(0, len(x), p)]

    def channel(self, x, g, gamma: int, seed: int | None = None):
        """Queue one channel: x (in_fmt codes), g (grad_fmt codes), gamma (gamma_fmt code); seed the dx pass's LFSR
        seed (stochastic rounding; None: random)."""
        if seed is None:
            seed = self.rng.getrandbits(32) if self.gcfg.rounding == "stochastic" else 0
        desc, dx, stats, sat = golden_channel(self.cfg, self.gcfg, x, g, gamma, seed)
        self.chan.send([pack_fields(self.fields, desc, "backward descriptor")])
        beats = self._beats(list(x), list(g))
        self.data.send(beats + self._beats(list(x), list(g)))      # pass 2: the same values, fresh junk lanes
        rec = dict(idx=self.channels, start=self.queued, beats=len(beats), out=0, x=np.asarray(x), g=np.asarray(g),
                   sat=sat)
        self.queued += 2 * len(beats)
        self.pending.append(rec)
        self.channels += 1
        out = []
        for b in range(0, len(dx), self.lanes):
            vals = dx[b:b + self.lanes]
            out.append((vals + [0] * (self.lanes - len(vals)), len(vals)))
        self.scoreboard.expect(out, stats)
        return stats

    def refuse(self, desc: dict, label: str):
        """Queue a descriptor the core must refuse (NormConfig.backward_descriptor_error): no beat in or out, one
        statistics word with error = 1; `label` its coverage bin."""
        assert self.cfg.backward_descriptor_error(self.gcfg, desc) is not None, f"{desc} is accepted"
        self.chan.send([pack_fields(self.fields, desc, "backward descriptor")])
        self.pending.append(dict(idx=self.channels, start=self.queued, beats=0, out=0, refused=label))
        self.channels += 1
        self.scoreboard.expect([], dict(REFUSED))

    # -- monitors -------------------------------------------------------------------------------

    def _on_out(self, word: int, cycle: int):
        fmt = self.gcfg.dx_fmt
        vals = []
        for j in range(self.lanes):
            v = (word >> (j * fmt.bits)) & ((1 << fmt.bits) - 1)
            vals.append(v - (1 << fmt.bits) if v >> (fmt.bits - 1) else v)
        self.scoreboard.on_beat(vals, cycle)
        if self.pending:
            self.pending[0]["out"] += 1

    def _on_stats(self, word: int, cycle: int):
        self.stats_at.append(cycle)
        self.scoreboard.on_stats(unpack(self.stats_fields, word), cycle)
        if not self.pending:
            return
        ch = self.pending.popleft()
        if "refused" in ch:
            self.cov.hit("bwd_refused", {ch["refused"]})
            return
        self.cov.channel(ch["x"], ch["g"], ch["sat"])
        self.cov.stall(self.events)
        self.events = set()

    # -- state, as far as the testbench knows it --------------------------------------------------------------

    def state(self) -> str:
        """idle, setup (descriptor taken, no beat), p1, gap (pass 1 done, pass 2 not started), p2, drain (all in,
        dx pending), stats (dx out, the word pending)."""
        if not self.pending:
            return "idle"
        h = self.pending[0]
        if len(self.chan.accepted) <= h["idx"]:
            return "idle"
        rel = len(self.data.accepted) - h["start"]
        if rel <= 0:
            return "setup"
        if rel < h["beats"]:
            return "p1"
        if rel == h["beats"]:
            return "gap"
        if rel < 2 * h["beats"]:
            return "p2"
        return "drain" if h["out"] < h["beats"] else "stats"

    def _watch_stalls(self):
        if not self.pending or "refused" in self.pending[0]:
            return
        h, ev = self.pending[0], self.events
        if len(self.chan.accepted) > h["idx"]:
            rel = len(self.data.accepted) - h["start"]
            if 0 < rel < 2 * h["beats"] and rel != h["beats"]:
                label = "p1" if rel < h["beats"] else "p2"
                if not self.data.presented:
                    ev.add(f"{label}:input_gap")
                elif label == "p2" and not int(self.data.ready.value):
                    ev.add("p2:i_held")
                if label == "p1" and not self.out._ready:
                    ev.add("p1:o_ready_low")
        if not self.out._ready and int(self.out.valid.value):
            ev.add("p2:o_backpressure")
        if not self.stat._ready and int(self.stat.valid.value):
            ev.add("stats_backpressure")

    def _watch_gap(self):
        """The cycles from a channel's last pass-1 beat to the first cycle i.ready is high again (its channel math)."""
        if self._watch is None and self.pending and "refused" not in self.pending[0]:
            h = self.pending[0]
            end = h["start"] + h["beats"]
            if h["beats"] and len(self.data.accepted) == end and len(self.data.accepted) > 0:
                self._watch = (h["idx"], self.data.accepted[end - 1])
                return
        if self._watch is not None and self.cycle > self._watch[1] and int(self.data.ready.value):
            self.gaps.add(self.cycle - self._watch[1])
            self._watch = None

    # -- clocking -----------------------------------------------------------------------------

    async def start(self):
        self.dut.rst.value = 1
        Clock(self.dut.clk, 10, unit="ns").start()
        await self.reset(sample=False)

    async def reset(self, cycles: int = 3, sample: bool = True):
        """Hold rst for `cycles` clocks, dropping everything queued or expected (the state then is sampled)."""
        if sample:
            self.cov.reset(self.state())
        for p in (self.chan, self.data):
            p.clear()
        self.scoreboard.clear()
        self.chan.accepted.clear()
        self.data.accepted.clear()
        self.pending.clear()
        self.channels = self.queued = 0
        self.events = set()
        self._watch = None
        for k in range(cycles + 1):
            await RisingEdge(self.dut.clk)
            self.cycle += 1
            self.dut.rst.value = int(k < cycles)
            for p in self.parts:
                p.drive()

    async def step(self):
        await RisingEdge(self.dut.clk)
        self.cycle += 1
        for p in self.parts:
            p.drive()
        await ReadOnly()
        for p in self.parts:
            p.sample(self.cycle)
        self._watch_gap()
        self._watch_stalls()

    async def run(self, max_cycles: int = 2_000_000):
        """Clock until every queued channel has given all its dx beats and its statistics word."""
        start = self.cycle
        while not (self.chan.idle and self.data.idle and self.scoreboard.done):
            await self.step()
            if self.cycle - start > max_cycles:
                raise AssertionError(f"timeout after {max_cycles} cycles: the backward datapath stopped answering")
        await self.step()

    def record(self, name: str, **extra):
        """Append this test's counters (bwd_gap: the channel math's cycles seen, pass 1's last beat to pass 2's first
        ready) to the runner's results file; assert the scoreboard is clean."""
        rec = dict(test=name, cycles=self.cycle, values=self.scoreboard.values, stats=self.scoreboard.stats_checked,
                   mismatches=self.scoreboard.mismatches, bwd_gap=sorted(self.gaps), **extra)
        self.cov.export()
        path = os.environ.get("HWNORM_RESULTS")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        assert self.scoreboard.mismatches == 0, f"{self.scoreboard.mismatches} mismatches"
        return rec
