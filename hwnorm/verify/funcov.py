"""Functional coverage of the cocotb testbench (cocotb-coverage), derived only from the stimulus, the
DUT's stream ports (valid/ready) and what the testbench knows (which pass it is driving).

One `Coverage` per simulator process (one configuration). Its bins are those the configuration can
reach (a count bin exists only if some count in 1..max_count hits it; masked beats and chunk starts
inside a beat only with lanes > 1; top-k bins only for linf/topk). `hwnorm sim` merges the files
every process writes (`export`) and fails if an applicable bin is never hit.

Cover points (hwnorm.<name>):
  count        1, 2, <lanes, =lanes, max_count; range with chunks > 1: n=chunks (one value per chunk),
               equal_chunks (n = chunks*m, m >= 2), last_chunk_1 (last chunk holds one value),
               fewer_chunks (torch.chunk yields fewer than `chunks` chunks)
  last_beat    masked:<v>: the channel's last beat carries v < lanes valid values
  chunk_start  lane:<j>: a chunk starts in lane j != 0 of a beat; several_in_beat: two or more in one
  topk         k>n, k=n (topk), tie_at_k: the k-th and (k+1)-th largest |x - mu| are equal (linf: k = 1)
  data         zero_deviation (training, all values equal), sat_high, sat_low (outputs clamped)
  stall        per pass p1..pN / infer: input_gap (the source idles mid-pass), o_ready_low (the sink is not
               ready while the pass runs); last pass and infer: o_backpressure (o.valid & !o.ready),
               i_held (i.valid & !i.ready); stats_backpressure (stats.valid & !stats.ready)
  reset        the state the testbench knows the DUT is in when rst is applied: idle, setup (descriptor
               taken, no value yet), p1..pN / infer (mid-pass), gap1..gapN-1 (a pass done, the next not
               started), drain (all values in, outputs pending), stats (outputs out, stats pending)
  sequence     train>train, train>infer, infer>infer, infer>train (consecutive channels, no reset between)
  refused      a refused descriptor (NormConfig.descriptor_rules) answered by its error word, per rule:
               count:train, count:infer, and each kind's chunk_size, m, neps, eps_n, scale_exp, mean; overlap:
               ended_sequence (the refused descriptor ended a sequence with a channel held)
  dropout      (dropout builds) dropped (a training value zeroed), kept_sat (a kept value clamped), last_dropped
               (the channel's last value dropped; with lanes > 1 a masked last beat), beat_dropped (every
               value of a beat dropped; lanes > 1), seed_zero (a training channel with seed 0: SEED_ZERO)
"""
from __future__ import annotations

import json
import os

import numpy as np
from cocotb_coverage.coverage import CoverPoint, coverage_db

from hwnorm.config import NormConfig
from hwnorm.constants import chunk_sizes
from hwnorm.fixed import round_mode

PREFIX = "hwnorm"


def pass_labels(cfg: NormConfig) -> list[str]:
    return [f"p{j}" for j in range(1, cfg.passes + 1)]


def count_labels(cfg: NormConfig, n: int) -> set[str]:
    p = cfg.lanes
    out = set()
    if n == 1:
        out.add("1")
    if n == 2:
        out.add("2")
    if n < p:
        out.add("<lanes")
    if n == p:
        out.add("=lanes")
    if n == cfg.max_count:
        out.add("max_count")
    if cfg.kind == "range" and cfg.chunks > 1:
        sizes = chunk_sizes(n, cfg.chunks)
        if n == cfg.chunks:
            out.add("n=chunks")
        if n % cfg.chunks == 0 and n >= 2 * cfg.chunks:
            out.add("equal_chunks")
        if sizes[0] >= 2 and sizes[-1] == 1:
            out.add("last_chunk_1")
        if n > cfg.chunks and len(sizes) < cfg.chunks:
            out.add("fewer_chunks")
    return out


def last_beat_labels(cfg: NormConfig, n: int) -> set[str]:
    r = n % cfg.lanes
    return {f"masked:{r}"} if r else set()


def chunk_start_labels(cfg: NormConfig, n: int) -> set[str]:
    if cfg.kind != "range" or cfg.chunks < 2 or cfg.lanes < 2:
        return set()
    starts = np.cumsum(chunk_sizes(n, cfg.chunks))[:-1]
    out = {f"lane:{int(s) % cfg.lanes}" for s in starts if s % cfg.lanes}
    beats = starts // cfg.lanes
    if len(beats) != len(set(beats.tolist())):
        out.add("several_in_beat")
    return out


def topk_labels(cfg: NormConfig, x: np.ndarray) -> set[str]:
    if cfg.kind not in ("linf", "topk"):
        return set()
    n, k = len(x), cfg.k
    out = set()
    if cfg.kind == "topk" and k > n:
        out.add("k>n")
    if cfg.kind == "topk" and k == n:
        out.add("k=n")
    if n > k:
        d = np.sort(np.abs(n * x.astype(object) - int(x.sum())))[::-1]
        if d[k - 1] == d[k]:
            out.add("tie_at_k")
    return out


def refused_bins(cfg: NormConfig) -> list[str]:
    """The refused-descriptor bins of cfg: one per rule (count once per mode the build runs)."""
    out = []
    for name, mode, _ in cfg.descriptor_rules:
        if mode == "any":
            if cfg.overlap and cfg.max_count == (1 << cfg.count_bits) - 1:
                continue                    # count 0 ends a sequence, and the field holds no count above max_count
            out += ["count:infer"] if cfg.inference_only else ["count:train", "count:infer"]
        else:
            out.append(name)
    return out + (["ended_sequence"] if cfg.overlap else [])


GAIN_BINS = ("regular", "shift_max", "special", "special_forced")


def gain_labels(cfg: NormConfig, res) -> set:
    """The normalize constants' regime of a golden result's channel 0 (docs/numerics.md): regular, SH at SH_max (a
    tiny gain), the special regime, and whether it forced any value to saturate."""
    if res.special is None:
        return set()
    if res.special[0]:
        return {"special"} | ({"special_forced"} if res.forced[0] else set())
    return {"shift_max" if int(res.shift[0]) == cfg.core.shift_max else "regular"}


def bins(cfg: NormConfig) -> dict[str, list[str]]:
    """Every applicable bin of every cover point, for this configuration."""
    counts = range(1, cfg.max_count + 1)
    count_bins, beat_bins, start_bins = set(), set(), set()
    for n in counts:
        count_bins |= count_labels(cfg, n)
        beat_bins |= last_beat_labels(cfg, n)
        start_bins |= chunk_start_labels(cfg, n)
    order = ["1", "2", "<lanes", "=lanes", "n=chunks", "equal_chunks", "last_chunk_1", "fewer_chunks", "max_count"]
    out = {"count": [b for b in order if b in count_bins],
           "last_beat": [f"masked:{r}" for r in range(1, cfg.lanes) if f"masked:{r}" in beat_bins],
           "chunk_start": [b for b in [f"lane:{j}" for j in range(1, cfg.lanes)] + ["several_in_beat"] if b in start_bins]}
    topk = []
    if cfg.kind == "topk":
        topk += [b for b, ok in (("k>n", cfg.k > 1), ("k=n", cfg.max_count >= cfg.k)) if ok]
    if cfg.kind in ("linf", "topk") and cfg.max_count > cfg.k:
        topk.append("tie_at_k")
    out["topk"] = topk
    out["data"] = ["zero_deviation", "sat_high", "sat_low"]
    out["gain"] = list(GAIN_BINS)
    passes = pass_labels(cfg)
    stall = [f"{p}:{e}" for p in passes + ["infer"] for e in ("input_gap", "o_ready_low")]
    stall += [f"{p}:{e}" for p in (passes[-1], "infer") for e in ("o_backpressure", "i_held")]
    out["stall"] = stall + ["stats_backpressure"]
    beats_max = -(-cfg.max_count // cfg.lanes)
    mid = passes + ["infer"] if beats_max >= 2 else []
    out["reset"] = ["idle", "setup"] + mid + [f"gap{j}" for j in range(1, cfg.passes)] + ["drain", "stats"]
    out["sequence"] = ["train>train", "train>infer", "infer>infer", "infer>train"]
    out["refused"] = refused_bins(cfg)
    if cfg.dropout_active:
        out["dropout"] = ["dropped", "kept_sat", "last_dropped"] + (["beat_dropped"] if cfg.lanes > 1 else []) + \
            ["seed_zero"]
    if cfg.frn:                     # the TLU raised some output of a channel to tau / left every output as it was
        out["tlu"] = ["raised", "unchanged"]
    if cfg.inference_only:          # every channel is an inference channel: no training bins
        out["topk"], out["data"] = [], ["sat_high", "sat_low"]
        out["stall"] = [f"infer:{e}" for e in ("input_gap", "o_ready_low", "o_backpressure", "i_held")]
        out["stall"] += ["stats_backpressure"]
        out["reset"] = ["idle", "setup"] + (["infer"] if beats_max >= 2 else []) + ["drain", "stats"]
        out["sequence"] = ["infer>infer"]
    return {k: v for k, v in out.items() if v}


class Coverage:
    """The cover points of one configuration; `channel()` samples a checked channel, `stall()` the
    stall events of a pass, `reset()` the state at a reset."""

    def __init__(self, cfg: NormConfig):
        self.cfg = cfg
        self.bins = bins(cfg)
        self._sample = {name: self._point(name, b) for name, b in self.bins.items()}
        self.previous = None

    @staticmethod
    def _point(name, bin_list):
        full = f"{PREFIX}.{name}"
        if full in coverage_db:             # one simulator process, one configuration: reuse
            return coverage_db[full]._hwnorm_sample

        @CoverPoint(full, xf=lambda labels: labels, rel=lambda labels, b: b in labels, bins=list(bin_list), inj=False)
        def sample(labels):
            return None
        coverage_db[full]._hwnorm_sample = sample
        return sample

    def hit(self, name: str, labels):
        labels = set(labels)
        if name in self._sample and labels:
            self._sample[name](labels)

    def channel(self, x, infer: bool, y, sat: int, unrounded=None, keep=None, seed=None, gain=()):
        """A channel whose outputs and statistics the scoreboard checked (`keep`, `seed`: a dropout build's
        training mask and seed; `gain`: gain_labels of its golden result)."""
        cfg, n = self.cfg, len(x)
        self.hit("gain", gain)
        if keep is not None:
            drop = set()
            if not keep.all():
                drop.add("dropped")
            if not keep[-1]:
                drop.add("last_dropped")
            if cfg.lanes > 1 and any(not keep[b:b + cfg.lanes].any() for b in range(0, n, cfg.lanes)):
                drop.add("beat_dropped")
            if seed == 0:
                drop.add("seed_zero")
            if unrounded is not None:
                q = round_mode(unrounded, cfg.rounding)
                if np.any(keep & ((q > cfg.out_fmt.max_int) | (q < cfg.out_fmt.min_int))):
                    drop.add("kept_sat")
            self.hit("dropout", drop)
        self.hit("count", count_labels(cfg, n))
        self.hit("last_beat", last_beat_labels(cfg, n))
        self.hit("chunk_start", chunk_start_labels(cfg, n))
        if not infer:
            self.hit("topk", topk_labels(cfg, np.asarray(x)))
        data = set()
        if not infer and np.all(x == x[0]):
            data.add("zero_deviation")
        if sat:
            lo, hi = cfg.out_fmt.min_int, cfg.out_fmt.max_int
            if unrounded is not None:
                q = round_mode(unrounded, cfg.rounding)
                data |= {"sat_high"} if np.any(q > hi) else set()
                data |= {"sat_low"} if np.any(q < lo) else set()
            else:
                data |= {"sat_high"} if np.any(np.asarray(y) == hi) else set()
                data |= {"sat_low"} if np.any(np.asarray(y) == lo) else set()
        self.hit("data", data)
        if cfg.frn and unrounded is not None:
            q = np.clip(round_mode(unrounded, cfg.rounding), cfg.out_fmt.min_int, cfg.out_fmt.max_int)
            self.hit("tlu", {"raised" if np.any(np.asarray(y) != q) else "unchanged"})
        mode = "infer" if infer else "train"
        if self.previous is not None:
            self.hit("sequence", {f"{self.previous}>{mode}"})
        self.previous = mode

    def stall(self, events):
        self.hit("stall", events)

    def reset(self, state: str):
        self.hit("reset", {state})
        self.previous = None

    def snapshot(self) -> dict:
        return {name: {str(b): int(h) for b, h in coverage_db[f"{PREFIX}.{name}"].detailed_coverage.items()}
                for name in self.bins}

    def export(self, path: str | None = None):
        """Write {point: {bin: hits}} (cumulative over this process's tests) to `path` / HWNORM_COVERAGE."""
        path = path or os.environ.get("HWNORM_COVERAGE")
        if path:
            with open(path, "w") as f:
                json.dump({"config": self.cfg.to_json(), "points": self.snapshot()}, f)


def summarize(per_config: dict[str, dict]) -> tuple[int, int, dict, list]:
    """(bins hit, bins total, {point: [hit, total]}, [(config, point, bin) never hit]) over configurations;
    per_config maps a configuration name to its exported points."""
    hit = total = 0
    points: dict[str, list[int]] = {}
    missed = []
    for cfg_name, pts in per_config.items():
        for point, bins_ in pts.items():
            acc = points.setdefault(point, [0, 0])
            for b, h in bins_.items():
                total += 1
                acc[1] += 1
                if h > 0:
                    hit += 1
                    acc[0] += 1
                else:
                    missed.append((cfg_name, point, b))
    return hit, total, points, missed


def format_report(per_config: dict[str, dict]) -> str:
    hit, total, points, missed = summarize(per_config)
    lines = [f"functional coverage over {len(per_config)} configurations (bins hit / applicable bins):"]
    for point in ("count", "last_beat", "chunk_start", "topk", "data", "gain", "stall", "reset", "sequence", "refused", "dropout",
                  "tlu", "bwd_count", "bwd_data", "bwd_stall", "bwd_reset", "bwd_refused", "bwd_sequence"):
        if point in points:
            h, t = points[point]
            lines.append(f"  {point:12s} {h:5d} / {t:5d}")
    for cfg_name, point, b in missed[:40]:
        lines.append(f"  never hit: {cfg_name}: {point} {b}")
    if len(missed) > 40:
        lines.append(f"  ... and {len(missed) - 40} more bins never hit")
    lines.append(f"hwnorm sim coverage: {hit}/{total} bins hit, {len(missed)} never hit")
    return "\n".join(lines)


# -- the backward datapath (hwnorm/hdl/backward.py; hwnorm/verify/tb_backward.py) -----------------------------------
#
# Cover points of their own (hwnorm.bwd_<name>), sampled from the stimulus, the golden backward and the stream
# handshakes:
#   bwd_count    1, 2, <lanes, =lanes, max_count; masked:<v> (the last beat of each pass carries v < lanes values)
#   bwd_data     tie_extreme (the selection the dx pass corrects ties: range a chunk's max or min twice, linf / topk
#                the k-th and (k+1)-th largest |d| equal, cvar the m-th and (m+1)-th largest d, l1 / mad a value at the
#                mean (sign 0), l2 two equal d), zero_grad (every g of the channel 0), zero_deviation (every x equal),
#                grad_extreme (g at grad_fmt's min and max), dx_sat_high, dx_sat_low (dx clamped at dx_fmt)
#   bwd_stall    p1 / p2: input_gap (the source idles mid-pass); p2: o_backpressure (o.valid & !o.ready), i_held
#                (i.valid & !i.ready mid-pass 2: the output's back-pressure reaches the input); p1: o_ready_low (the
#                sink not ready during the reduction pass, which must not matter); stats_backpressure
#   bwd_reset    the state at a reset: idle, setup, p1, gap (between the passes), p2, drain, stats
#   bwd_refused  a refused descriptor answered by its error word, per rule (NormConfig.backward_descriptor_rules)
#   bwd_sequence back_to_back (a channel's descriptor taken the cycle after the one before it ended, no idle between)

BWD_PASSES = ("p1", "p2")


def backward_tie_labels(cfg: NormConfig, x: np.ndarray) -> set:
    """tie_extreme if the channel's selection (what coef_i picks) has a tie the lowest index must break."""
    x = np.asarray(x, dtype=np.int64)
    n = len(x)
    d = n * x.astype(object) - int(x.sum())
    kind = cfg.stat_kind
    if kind == "range":
        start = 0
        for m in chunk_sizes(n, cfg.chunks):
            part = x[start:start + m]
            start += m
            if m >= 2 and (np.count_nonzero(part == part.max()) > 1 or np.count_nonzero(part == part.min()) > 1):
                return {"tie_extreme"}
        return set()
    if kind in ("l1", "mad"):
        return {"tie_extreme"} if any(v == 0 for v in d) else set()
    if kind in ("linf", "topk", "cvar"):
        k = {"linf": 1, "topk": cfg.k}.get(kind) or 0
        if kind == "cvar":
            from hwnorm.constants import cvar_count
            k, v = cvar_count(n, cfg.alpha), sorted(d, reverse=True)
        else:
            v = sorted((abs(e) for e in d), reverse=True)
        return {"tie_extreme"} if n > k >= 1 and v[k - 1] == v[k] else set()
    return {"tie_extreme"} if len(set(d)) < n else set()


def backward_bins(cfg: NormConfig, gcfg) -> dict[str, list[str]]:
    """Every applicable bin of the backward's cover points for (cfg, gcfg)."""
    count = [b for b, ok in (("1", True), ("2", cfg.max_count >= 2), ("<lanes", cfg.lanes > 1),
                             ("=lanes", cfg.lanes > 1 and cfg.max_count >= cfg.lanes), ("max_count", True)) if ok]
    count += [f"masked:{r}" for r in range(1, cfg.lanes) if cfg.max_count > r]
    data = ["tie_extreme", "zero_grad", "zero_deviation", "grad_extreme", "dx_sat_high", "dx_sat_low"]
    stall = ["p1:input_gap", "p2:input_gap", "p1:o_ready_low", "p2:o_backpressure", "p2:i_held", "stats_backpressure"]
    beats_max = -(-cfg.max_count // cfg.lanes)
    reset = ["idle", "setup"] + (["p1"] if beats_max >= 2 else []) + ["gap"] + (["p2"] if beats_max >= 2 else []) + \
        ["drain", "stats"]
    refused = [name for name, _ in cfg.backward_descriptor_rules(gcfg)]
    return {"bwd_count": count, "bwd_data": data, "bwd_stall": stall, "bwd_reset": reset, "bwd_refused": refused,
            "bwd_sequence": ["back_to_back"]}


class BackwardCoverage(Coverage):
    """The backward's cover points (backward_bins); channel() samples a checked channel."""

    def __init__(self, cfg: NormConfig, gcfg):
        self.cfg, self.gcfg = cfg, gcfg
        self.bins = backward_bins(cfg, gcfg)
        self._sample = {name: self._point(name, b) for name, b in self.bins.items()}
        self.previous = None

    def channel(self, x, g, unrounded_sat: tuple[bool, bool]):
        """A channel the scoreboard checked: its x and g codes; (some dx clamped high, some clamped low)."""
        cfg, gf = self.cfg, self.gcfg.grad_fmt
        n = len(x)
        count = {lab for lab, ok in (("1", n == 1), ("2", n == 2), ("<lanes", n < cfg.lanes),
                                     ("=lanes", n == cfg.lanes), ("max_count", n == cfg.max_count)) if ok}
        if n % cfg.lanes:
            count.add(f"masked:{n % cfg.lanes}")
        self.hit("bwd_count", count)
        x, g = np.asarray(x), np.asarray(g)
        data = backward_tie_labels(cfg, x)
        data |= {lab for lab, ok in (("zero_grad", not g.any()), ("zero_deviation", bool(np.all(x == x[0]))),
                                     ("grad_extreme", bool((g == gf.min_int).any() and (g == gf.max_int).any())),
                                     ("dx_sat_high", unrounded_sat[0]), ("dx_sat_low", unrounded_sat[1])) if ok}
        self.hit("bwd_data", data)

    def reset(self, state: str):
        self.hit("bwd_reset", {state})

    def stall(self, events):
        self.hit("bwd_stall", events)
