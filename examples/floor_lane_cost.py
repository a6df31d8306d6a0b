"""Issue 20 design study, the lanes: NormalizeAffine (one multiply-add per lane) priced in generic two-input gates with
today's widths and with the floor-level design's (docs/architecture.md "Floor-level datapath").

Run: python examples/floor_lane_cost.py range_s8 l2_s8 [--lanes 1 4]. The floor widths: A = m = out_bits + SH_lo + 2,
B = max(in_bits + m - 2, out_bits - 1 + SH_max + F_out - F_b) + 3, acc = B + 1, set on a copy of the configuration
before NormalizeAffine is elaborated; the synthesis is hwnorm.reports.synth.generic_gates (the report's own script).
It changes nothing in hwnorm. The special regime's per-lane compare and mux are not in this block yet.
"""
import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

from amaranth.back import verilog

from hwnorm.config import default_configs
from hwnorm.hdl.normalize import NormalizeAffine
from hwnorm.reports.synth import generic_gates


def floor_widths(cfg) -> dict:
    m = cfg.out_fmt.bits + cfg.shift_lo + 2
    b = max(cfg.in_fmt.bits + m - 2, cfg.out_fmt.bits - 1 + cfg.shift_max + cfg.out_fmt.frac - cfg.beta_fmt.frac) + 3
    return dict(a_bits=m, b_bits=b, acc_bits=b + 1)


def gates(cfg, widths: dict | None = None) -> int:
    cfg = replace(cfg)
    for k, v in (widths or {}).items():
        cfg.__dict__[k] = v                         # the derived widths are cached properties: override on the copy
    work = Path(tempfile.mkdtemp(prefix="floor-lane-"))
    (work / "top.v").write_text(verilog.convert(NormalizeAffine(cfg), name="top", strip_internal_attrs=True))
    return generic_gates(work, "top", "floor lane", {})["gates"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="+", help="default configurations, e.g. range_s8 l2_s8")
    ap.add_argument("--lanes", nargs="+", type=int, default=[1, 4])
    args = ap.parse_args()
    print("| config | lanes | NormalizeAffine today | with the floor widths | ratio |\n|---|---|---|---|---|")
    for name in args.configs:
        for lanes in args.lanes:
            cfg = replace(default_configs()[name], lanes=lanes)
            w = floor_widths(cfg)
            today, floor = gates(cfg), gates(cfg, w)
            print(f"| {name} | {lanes} | {today} (A {cfg.a_bits}, B {cfg.b_bits}, acc {cfg.acc_bits}) | {floor} (A {w['a_bits']}, "
                  f"B {w['b_bits']}, acc {w['acc_bits']}) | {floor / today:.2f} |", flush=True)


if __name__ == "__main__":
    main()
