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
from hwnorm.constants import channel_params, inference_params
from hwnorm.fields import pack, unpack
from hwnorm.golden import infer, train
from hwnorm.golden.dropout import keep_mask

from hwnorm.verify.funcov import Coverage, gain_labels


def tlu_threshold(cfg: NormConfig, x, gamma: int, beta: int) -> int:
    """An FRN channel's TLU threshold, a function of the channel so every test exercises it without a new argument:
    the output minimum (no threshold), -1/8 of the output span, 0, or beta (in output codes, clamped)."""
    fo = cfg.out_fmt
    beta_out = beta * 2 ** (fo.frac - cfg.beta_fmt.frac)
    picks = [fo.min_int, -(1 << max(0, fo.bits - 4)), 0, int(beta_out)]
    return int(np.clip(picks[(int(np.sum(x)) + abs(gamma) + len(x)) % 4], fo.min_int, fo.max_int))


def frn_eps_pick(cfg: NormConfig, x, gamma: int):
    """An FRN channel's descriptor eps (input format's units), a function of the channel like the TLU threshold: the
    configuration's eps (unit = 1), the field's top, its bottom (one LSB), or 1e4 eps (a unit of 1/100 for frn)."""
    lo, hi = cfg.frn_eps_range
    picks = [cfg.eps, hi, lo, min(hi, cfg.eps * 1e4)]
    return picks[(int(np.sum(np.abs(x))) + 3 * len(x) + abs(gamma) // 2) % 4]


def golden_channel(cfg: NormConfig, x, gamma: int, beta: int, inference: dict | None = None, seed: int = 0,
                   affine=None):
    """One channel as the golden model says the hardware must handle it: (descriptor fields, passes,
    the golden result, the statistics word's fields); `inference` = {mean, scale_m, scale_exp} or None;
    `seed` the dropout seed of a dropout build (sent in inference too, where it must not matter); `affine` an
    elementwise build's per-value (gamma codes, beta codes): the descriptor's gamma/beta are then sent but ignored."""
    x = np.asarray(x, dtype=np.int64)
    if cfg.elementwise:
        gamma_v, beta_v = [np.asarray(a)[None, :] for a in affine]
    else:
        gamma_v, beta_v = [gamma], [beta]
    desc = {name: 0 for name, _, _ in cfg.channel_fields}
    desc.update(count=len(x), gamma=gamma, beta=beta)
    if cfg.dropout_active:
        desc["seed"] = seed
    tau = eps = None
    if cfg.frn:
        tau = [tlu_threshold(cfg, x, gamma, beta)]
        desc["tau"] = tau[0]
        eps = frn_eps_pick(cfg, x, gamma)
    if inference is None:
        res = train(cfg, x[None, :], gamma_v, beta_v, tau=tau, seed=[seed] if cfg.dropout_active else None, eps=eps)
        desc.update(channel_params(cfg, len(x), eps=eps))
        passes = cfg.passes
    else:
        res = infer(cfg, x[None, :], gamma_v, beta_v, [inference["mean"]], [inference["scale_m"]],
                    [inference["scale_exp"]], tau=tau)
        desc.update(infer=1, **inference)
        passes = 1
    stats = {"sum": int(res.stats.sum[0]), "den": int(res.stats.den[0]), "sat": int(res.stats.sat[0]), "error": 0}
    return desc, passes, res, stats


REFUSED_STATS = {"sum": 0, "den": 0, "sat": 0, "error": 1}     # the word of a refused descriptor


def refused_descriptor(cfg: NormConfig, count: int, inference: dict | None = None, **fields) -> dict:
    """A descriptor the core must refuse: a good channel of `count` values (training, or inference with
    `inference` = {mean, scale_m, scale_exp}), then `fields` overwritten; ValueError if cfg accepts it."""
    desc = {name: 0 for name, _, _ in cfg.channel_fields}
    desc.update(gamma=1 << cfg.gamma_fmt.frac, beta=0)
    if inference is not None:
        desc.update(infer=1, count=count, **inference)
    elif not cfg.inference_only:     # the constants of a count the core takes (only `fields` are wrong)
        desc.update(channel_params(cfg, min(max(count, 1), cfg.max_count)))
    desc.update(count=count, **fields)
    if cfg.descriptor_error(desc) is None:
        raise ValueError(f"descriptor {desc} is accepted by {cfg.describe()}: not a refused descriptor")
    return desc


def _fits(cfg: NormConfig, name: str, v: int) -> bool:
    """v fits the descriptor field `name` (else packing would wrap it into another value)."""
    w, signed = next((w, s) for n, w, s in cfg.channel_fields if n == name)
    return -(1 << (w - 1)) <= v < (1 << (w - 1)) if signed else 0 <= v < (1 << w)


def refusals(cfg: NormConfig, inference: dict) -> list[tuple[str, dict]]:
    """(coverage bin, descriptor) for every rule of cfg.descriptor_rules: the value just past each limit and the
    field's extreme (count 0 only without overlap, where it ends a sequence instead); `inference` = a good
    {mean, scale_m, scale_exp} the inference cases start from."""
    train = not cfg.inference_only
    out = []
    for name, _, _ in cfg.descriptor_rules:
        if name == "count":
            top = (1 << cfg.count_bits) - 1
            for v in sorted({cfg.max_count + 1, top} - {top + 1}) + ([] if cfg.overlap else [0]):
                if _fits(cfg, "count", v):
                    out += [("count:train", refused_descriptor(cfg, v))] if train else []
                    out.append(("count:infer", refused_descriptor(cfg, v, inference=inference)))
        elif name == "chunk_size":
            n = min(cfg.max_count, 3 * cfg.chunks + 1)
            out += [(name, refused_descriptor(cfg, n, chunk_size=v)) for v in sorted({0, -(-n // cfg.chunks) - 1})]
        elif name == "m":
            out += [(name, refused_descriptor(cfg, cfg.max_count, m=v)) for v in (0, cfg.k + 1) if _fits(cfg, "m", v)]
            if cfg.k >= 2:              # more values averaged than the channel has
                out.append((name, refused_descriptor(cfg, 1, m=2)))
        elif name in ("neps", "eps_n", "eps"):
            out.append((name, refused_descriptor(cfg, min(cfg.max_count, 17), **{name: 0})))
        elif name == "scale_exp":
            hi, top = cfg.scale_exp_range[1], (1 << 7) - 1
            out += [(name, refused_descriptor(cfg, 9, inference=dict(inference, scale_exp=v)))
                    for v in sorted({hi + 1, top})]
        elif name == "mean":
            lo, hi = cfg.mean_limits
            out += [(name, refused_descriptor(cfg, 9, inference=dict(inference, mean=v)))
                    for v in (lo - 1, hi + 1) if _fits(cfg, "mean", v)]
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
        self.presented = False           # valid was high this cycle
        self.valid.value = 0

    def send(self, items):
        self.queue.extend(items)

    def clear(self):
        self.queue.clear()
        self.current = None

    def drive(self):
        if self.current is None and self.queue and self.rng.random() >= self.gap:
            self.current = self.queue.popleft()
        self.presented = self.current is not None
        self.valid.value = int(self.presented)
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
    infer: bool


class Scoreboard:
    """Compares every output value and every channel's statistics bit-exactly with the golden model.

    Outputs are compared beat by beat: `lanes` values, the masked lanes of a channel's last beat
    must be 0.
    """

    def __init__(self, log, max_reports: int = 10):
        self.log = log
        self.beats: deque = deque()        # expected output beats: (values, valid lanes)
        self.stats: deque = deque()        # expected stats dicts, in order
        self.values = 0
        self.stats_checked = 0
        self.mismatches = 0
        self.max_reports = max_reports

    def expect(self, beats, stats):
        self.beats.extend(beats)
        self.stats.append(stats)

    def clear(self):
        self.beats.clear()
        self.stats.clear()

    def _mismatch(self, msg):
        self.mismatches += 1
        if self.mismatches <= self.max_reports:
            self.log.error("mismatch: %s", msg)

    def on_beat(self, lanes: list, cycle: int):
        if not self.beats:
            self._mismatch(f"unexpected output beat {lanes} at cycle {cycle}")
            return
        want, valid = self.beats.popleft()
        self.values += valid
        if lanes != want:
            self._mismatch(f"output beat: got {lanes}, expected {want} ({valid} valid lanes, cycle {cycle})")

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
        return not self.beats and not self.stats


class NormTB:
    """Drives channels through NormDatapath (descriptor, then each pass's beats) and checks all outputs.

    Also measures, from the DUT's own i.ready, the cycles between passes (`gaps`, by name), and samples
    functional coverage (hwnorm/verify/funcov.py) from the stimulus, the stream handshakes and the pass it drives.
    """

    def __init__(self, dut, cfg: NormConfig, rng, gap: float = 0.0, stall: float = 0.0):
        self.dut, self.cfg, self.rng = dut, cfg, rng
        self.lanes = cfg.lanes
        self.chan = StreamDriver(dut, "chan", rng, gap=gap)
        self.data = StreamDriver(dut, "i", rng, gap=gap)
        self.scoreboard = Scoreboard(dut._log)
        self.out = StreamMonitor(dut, "o", rng, self._on_out, stall=stall)
        self.stat = StreamMonitor(dut, "stats", rng, self._on_stats, stall=stall)
        self.parts = [self.chan, self.data, self.out, self.stat]
        self.cycle = 0
        self.stats_at: list[int] = []       # cycle of every statistics word
        self.gaps: dict[str, set] = {}
        self.boundaries: deque = deque()   # (beat index after which a pass ends, gap name)
        self.queued = 0                    # beats queued since the last reset
        self._watch = None
        self.cov = Coverage(cfg)
        self.pending: deque = deque()      # channels queued and not yet complete (their stats not seen)
        self.channels = 0                  # channels queued since the last reset
        self.descriptors = 0               # descriptors queued since the last reset (overlap: with flushes)
        self.stall_events: set = set()
        self.overlap = cfg.overlap
        self.segments: list = []           # every pass queued on `i` since the last reset, in stream order
        self.held = None                   # overlap: the channel whose normalize pass is not queued yet

    # -- packing ------------------------------------------------------------------------------

    def _pack_lanes(self, values, bits):
        word = 0
        for j, v in enumerate(values):
            word |= (int(v) & ((1 << bits) - 1)) << (j * bits)
        return word

    def _on_out(self, word: int, cycle: int):
        fmt = self.cfg.out_fmt
        vals = []
        for j in range(self.lanes):
            v = (word >> (j * fmt.bits)) & ((1 << fmt.bits) - 1)
            if fmt.signed and v >> (fmt.bits - 1):
                v -= 1 << fmt.bits
            vals.append(v)
        self.scoreboard.on_beat(vals, cycle)
        if self.pending:
            self.pending[0]["out"] += 1

    def _on_stats(self, word: int, cycle: int):
        self.stats_at.append(cycle)
        self.scoreboard.on_stats(unpack(self.cfg.stats_fields, word), cycle)
        if self.pending and self.pending[0].get("refused"):
            self.cov.hit("refused", self.pending.popleft()["refused"])
        elif self.pending:
            ch = self.pending.popleft()
            self.cov.channel(ch["x"], ch["infer"], ch["y"], ch["sat"], ch["unrounded"], ch["keep"], ch["seed"],
                             ch["gain"])
            self.cov.stall(self.stall_events)
            self.stall_events = set()

    def _beats(self, x, affine=None):
        """x as beats of `lanes` values; the masked lanes of the last beat carry random junk. An elementwise build:
        each beat carries `lanes` gamma and beta codes above the values, from `affine` (per-value codes) or, in a
        statistics pass (None), random junk the datapath must ignore."""
        cfg, p = self.cfg, self.lanes
        fields = [(x, cfg.in_fmt)]
        if cfg.elementwise:
            junk = [None, None] if affine is None else affine
            fields += [(junk[0], cfg.gamma_fmt), (junk[1], cfg.beta_fmt)]
        beats = []
        for b in range(0, len(x), p):
            word, at = 0, 0
            for values, fmt in fields:
                vals = [] if values is None else [int(v) for v in values[b:b + p]]
                vals += [self.rng.randint(fmt.min_int, fmt.max_int) for _ in range(p - len(vals))]
                word |= self._pack_lanes(vals, fmt.bits) << at
                at += p * fmt.bits
            beats.append(word)
        return beats

    def per_value_affine(self, x, gamma: int, beta: int):
        """An elementwise build's per-value gamma/beta codes for a channel a test gave one (gamma, beta): each value
        takes the given code or, with probability 1/2 each, a random one (so extremes stay extreme)."""
        cfg, n = self.cfg, len(x)
        fg, fb = cfg.gamma_fmt, cfg.beta_fmt
        g = [gamma if self.rng.random() < 0.5 else self.rng.randint(fg.min_int, fg.max_int) for _ in range(n)]
        b = [beta if self.rng.random() < 0.5 else self.rng.randint(fb.min_int, fb.max_int) for _ in range(n)]
        return np.array(g, dtype=np.int64), np.array(b, dtype=np.int64)

    # -- channels -----------------------------------------------------------------------------

    def statistics_of(self, x) -> dict:
        """Inference descriptor fields from x's own mean and deviation, clamped to the scales the
        configuration accepts (an inference-only build gets the training tests' data this way)."""
        cfg = self.cfg
        lsb = cfg.in_fmt.lsb
        e_lo, e_hi = cfg.scale_exp_range
        q = cfg.recip_bits
        scale = 1.0 / (float(np.std(x)) * lsb + lsb)
        scale = min(max(scale, 2.0 ** (q + e_lo)), (2.0 ** (q + 1) - 1) * 2.0 ** e_hi)
        return inference_params(cfg, float(np.mean(x)) * lsb, scale)

    def channel(self, x, gamma: int, beta: int, inference: dict | None = None) -> Expected:
        """Queue one channel (codes x) in training mode, or in inference mode with
        `inference` = {mean, scale_m, scale_exp} (see hwnorm.constants.inference_params)."""
        cfg = self.cfg
        x = np.asarray(x, dtype=np.int64)
        if inference is None and cfg.inference_only:
            inference = self.statistics_of(x)          # an inference-only build runs every channel so
        seed = 0
        if cfg.dropout_active:                          # a random seed per channel, now and then 0 (SEED_ZERO)
            seed = 0 if self.rng.random() < 0.1 else self.rng.getrandbits(32)
        affine = self.per_value_affine(x, gamma, beta) if cfg.elementwise else None
        desc, passes, res, stats = golden_channel(cfg, x, gamma, beta, inference, seed, affine)
        self.chan.send([pack(cfg.channel_fields, desc)])
        beats = self._beats(x, affine)
        unrounded = getattr(res, "unrounded", None)
        rec = dict(idx=self.channels, start=self.queued, beats=len(beats), passes=passes,
                   infer=inference is not None, out=0, x=x, y=res.y[0], sat=int(res.stats.sat[0]),
                   unrounded=None if unrounded is None else unrounded[0], desc=self.descriptors, end=None, seed=seed,
                   keep=keep_mask(cfg, [seed], len(x))[0] if cfg.dropout_active and inference is None else None,
                   gain=gain_labels(cfg, res))
        self.pending.append(rec)
        self.descriptors += 1
        self.channels += 1
        if self.overlap:
            self._queue_overlap(rec, beats)
        else:
            for p in range(passes):                 # elementwise: the statistics passes carry junk gamma/beta
                pass_beats = beats if p == passes - 1 or not cfg.elementwise else self._beats(x)
                self._queue(pass_beats, rec, "infer" if rec["infer"] else f"p{p + 1}")
                if p < passes - 1:
                    self.boundaries.append((self.queued, "scale" if p == passes - 2 else "pass"))
        y = [int(v) for v in res.y[0]]
        out_beats = []
        for b in range(0, len(y), self.lanes):
            vals = y[b:b + self.lanes]
            out_beats.append((vals + [0] * (self.lanes - len(vals)), len(vals)))
        self.scoreboard.expect(out_beats, stats)
        return Expected(x=x, y=y, stats=stats, infer=inference is not None)

    def refuse(self, desc: dict, label: str):
        """Queue a descriptor the core must refuse (see refused_descriptor; `label` its coverage bin): no beat in
        or out, one statistics word with error = 1. Overlap: it first ends the sequence, as count 0 does."""
        cfg = self.cfg
        assert cfg.descriptor_error(desc) is not None, f"{desc} is not refused"
        self.chan.send([pack(cfg.channel_fields, desc)])
        labels = {label}
        if self.overlap and self.held is not None:
            labels.add("ended_sequence")
            self._queue_held()
        rec = dict(idx=self.channels, start=self.queued, beats=0, passes=0, infer=bool(desc.get("infer")), out=0,
                   x=np.zeros(0, dtype=np.int64), desc=self.descriptors, end=self.queued, refused=labels)
        self.pending.append(rec)
        self.descriptors += 1
        self.channels += 1
        self.scoreboard.expect([], dict(REFUSED_STATS))

    def _queue(self, beats, rec, label, gap_label=None):
        """One pass of a channel on `i`; `gap_label` names the state between it and what came before."""
        self.data.send(beats)
        self.segments.append(dict(start=self.queued, end=self.queued + len(beats), label=label, rec=rec,
                                  desc=self.descriptors - 1, gap=gap_label))
        self.queued += len(beats)
        if label in ("infer", f"p{rec['passes']}"):
            rec["end"] = self.queued       # the channel's last value

    def _queue_overlap(self, rec, beats):
        """Overlap mode (docs/architecture.md, "Channel overlap"): this channel's statistics passes, then
        the normalize pass of the channel held before it; this one is held until the next descriptor."""
        last = rec["passes"] - 1
        if not rec["infer"]:
            for p in range(last):       # no gap is measured: pass 2 waits while ChannelMath finishes c-1
                self._queue(beats, rec, f"p{p + 1}", "setup" if p == 0 else f"gap{p}")
        self._queue_held()
        self.held = (rec, beats)

    def _queue_held(self):
        if self.held is not None:
            rec, beats = self.held
            label = "infer" if rec["infer"] else f"p{rec['passes']}"
            self._queue(beats, rec, label, "setup" if rec["infer"] else f"gap{rec['passes'] - 1}")
            self.held = None

    def flush(self, empty: bool = False):
        """Overlap mode: the end-of-sequence descriptor (count 0), then the held channel's normalize pass
        (`empty`: send the descriptor even with no channel held; the datapath must ignore it)."""
        if self.overlap and (self.held is not None or empty):
            self.chan.send([pack(self.cfg.channel_fields, {name: 0 for name, _, _ in self.cfg.channel_fields})])
            self.descriptors += 1
            self._queue_held()

    # -- clocking -----------------------------------------------------------------------------

    async def start(self):
        self.dut.rst.value = 1
        Clock(self.dut.clk, 10, unit="ns").start()
        await self.reset(sample=False)

    def state(self) -> str:
        """The state the DUT is in, as far as the testbench knows it (after the last step()): idle,
        setup, p1..pN / infer (mid-pass), gap1.. (between passes), drain, stats (see hwnorm/verify/funcov.py)."""
        if not self.pending:
            return "idle"
        if self.overlap:
            return self._state_overlap()
        h = self.pending[0]
        if len(self.chan.accepted) <= h["idx"]:
            return "idle"
        rel = len(self.data.accepted) - h["start"]
        if rel <= 0:
            return "setup"
        if rel < h["passes"] * h["beats"]:
            j, within = divmod(rel, h["beats"])
            if within:
                return "infer" if h["infer"] else f"p{j + 1}"
            return f"gap{j}"
        return "drain" if h["out"] < h["beats"] else "stats"

    def _segment(self):
        """(the pass `i` is in or waits for, values accepted); None when every queued pass is in."""
        a = len(self.data.accepted)
        return next((sg for sg in self.segments if sg["end"] > a), None), a

    def _state_overlap(self) -> str:
        """state() in overlap mode, from the pass the input stream is in: mid-pass, its label; at the start
        of a pass, the gap before it (setup after a descriptor); once all is in, drain or stats."""
        h = self.pending[0]
        sg, a = self._segment()
        if h["end"] is not None and h["end"] <= a:
            return "drain" if h["out"] < h["beats"] else "stats"
        if sg is not None and a > sg["start"]:
            return sg["label"]
        if sg is not None and (len(self.chan.accepted) > sg["desc"] or sg["gap"] != "setup"):
            return sg["gap"]
        return "idle"

    def _watch_stalls(self):
        """Stall events of the channel in the DUT, by pass (sampled into coverage when it completes)."""
        if not self.pending:
            return
        if self.overlap:
            return self._watch_stalls_overlap()
        h = self.pending[0]
        ev = self.stall_events
        last = "infer" if h["infer"] else f"p{h['passes']}"
        if len(self.chan.accepted) > h["idx"]:
            rel = len(self.data.accepted) - h["start"]
            if 0 < rel < h["passes"] * h["beats"] and rel % h["beats"]:
                label = "infer" if h["infer"] else f"p{rel // h['beats'] + 1}"
                if not self.data.presented:
                    ev.add(f"{label}:input_gap")
                elif label == last and not int(self.data.ready.value):
                    ev.add(f"{label}:i_held")
                if not self.out._ready:
                    ev.add(f"{label}:o_ready_low")
        if not self.out._ready and int(self.out.valid.value):
            ev.add(f"{last}:o_backpressure")
        if not self.stat._ready and int(self.stat.valid.value):
            ev.add("stats_backpressure")

    def _watch_stalls_overlap(self):
        ev, h = self.stall_events, self.pending[0]
        sg, a = self._segment()
        if sg is not None and a > sg["start"]:
            label = sg["label"]
            if not self.data.presented:
                ev.add(f"{label}:input_gap")
            elif label in ("infer", f"p{self.cfg.passes}") and not int(self.data.ready.value):
                ev.add(f"{label}:i_held")
            if not self.out._ready:
                ev.add(f"{label}:o_ready_low")
        if not self.out._ready and int(self.out.valid.value):
            ev.add(f"{'infer' if h['infer'] else 'p' + str(h['passes'])}:o_backpressure")
        if not self.stat._ready and int(self.stat.valid.value):
            ev.add("stats_backpressure")

    async def reset(self, cycles: int = 3, sample: bool = True):
        """Hold rst for `cycles` clocks, dropping everything queued or expected (also mid-channel).
        The state the DUT is in when rst takes effect is sampled into coverage (unless `sample` is False)."""
        if sample:
            self.cov.reset(self.state())
        for p in (self.chan, self.data):
            p.clear()
        self.scoreboard.clear()
        self.boundaries.clear()
        self.data.accepted.clear()
        self.chan.accepted.clear()
        self.pending.clear()
        self.stall_events = set()
        self.segments = []
        self.held = None
        self.descriptors = 0
        self.channels = 0
        self.queued = 0
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
        self._watch_gaps()
        self._watch_stalls()

    def _watch_gaps(self):
        """From the last beat of a pass to the first cycle i.ready is high again."""
        if self._watch is None and self.boundaries and len(self.data.accepted) >= self.boundaries[0][0]:
            idx, name = self.boundaries.popleft()
            self._watch = (self.data.accepted[idx - 1], name)
            return
        if self._watch is not None and self.cycle > self._watch[0] and int(self.data.ready.value):
            self.gaps.setdefault(self._watch[1], set()).add(self.cycle - self._watch[0])
            self._watch = None

    async def run(self, max_cycles: int = 2_000_000):
        """Clock until every queued channel has produced all outputs and stats."""
        self.flush()                       # overlap: the last channel's normalize pass
        start = self.cycle
        while not (self.chan.idle and self.data.idle and self.scoreboard.done):
            await self.step()
            if self.cycle - start > max_cycles:
                raise AssertionError(f"timeout after {max_cycles} cycles: DUT stopped producing outputs")
        await self.step()

    def record(self, name: str, **extra):
        """Append this test's counters to the runner's results file and assert the scoreboard is clean."""
        gaps = {k: sorted(v) for k, v in self.gaps.items()}
        rec = dict(test=name, cycles=self.cycle, values=self.scoreboard.values,
                   stats=self.scoreboard.stats_checked, mismatches=self.scoreboard.mismatches,
                   latency=gaps.get("scale", [None])[0], pass_gap=gaps.get("pass", [None])[0], **extra)
        self.cov.export()
        path = os.environ.get("HWNORM_RESULTS")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        assert self.scoreboard.mismatches == 0, f"{self.scoreboard.mismatches} mismatches"
        for k, v in gaps.items():
            assert len(v) == 1, f"{k} latency between passes is not fixed: {v}"
        return rec
