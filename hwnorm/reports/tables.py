"""Tables the docs carry, regenerated from the code (`hwnorm tables --write`), never typed by hand."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from ..config import GradConfig, NormConfig, default_configs
from ..golden.backward_ref import BACKWARD_KINDS
from ..numerics import measure, measure_backward, measure_infer

DOCS = Path(__file__).resolve().parents[2] / "docs"


def numerics_rows(seed: int = 0, trials: int = 4) -> dict:
    """{config name: (training ErrorStats, inference ErrorStats)} for every default configuration."""
    return {key: (measure(cfg, seed=seed, trials=trials), measure_infer(cfg, seed=seed, trials=trials))
            for key, cfg in default_configs().items()}


def numerics_table(seed: int = 0, trials: int = 4, rows: dict | None = None) -> str:
    """Error of every default configuration's bit-exact model against its float reference."""
    rows = rows if rows is not None else numerics_rows(seed, trials)
    out = ["| config | kind | formats (in -> out) | values | train max err | train mean err | "
           "train max err before rounding | inference max err | inference max err before rounding |",
           "|---|---|---|---|---|---|---|---|---|"]
    for key, cfg in default_configs().items():
        t, i = rows[key]
        out.append(f"| {key} | {cfg.kind} | {cfg.in_fmt} -> {cfg.out_fmt} | {t.values + i.values} | "
                   f"{t.max_err:.0f} | {t.mean_err:.5f} | {t.max_unrounded:.4f} | {i.max_err:.0f} | "
                   f"{i.max_unrounded:.1e} |")
    return "\n".join(out)


def channel_cycles(cfg, n: int, overlap: bool | None = None) -> int:
    """Clock cycles of one training channel of n values, descriptor to statistics word, with no stalls:
    the passes at `lanes` values per clock, the per-channel arithmetic, the pipeline and the hand-overs.
    In overlap mode (cfg.overlap, or `overlap`=True) the steady-state period of a run of such channels:
    the arithmetic of a channel runs during the normalize pass of the one before it (and the next
    channel's first pass) and costs only what it takes beyond them (`overlap_math_excess`)."""
    from ..hdl import NormDatapath
    from ..hdl.normalize import stages_for
    beats = -(-n // cfg.lanes)
    gap = NormDatapath.pass_gap_for(cfg) - 1 if cfg.passes == 3 else 0       # idle cycles between passes 1 and 2
    if cfg.overlap if overlap is None else overlap:
        return 1 + cfg.passes * beats + gap + 2 + stages_for(cfg) + 1 + overlap_math_excess(cfg, n)
    return 1 + cfg.passes * beats + gap + NormDatapath.scale_latency_for(cfg) + stages_for(cfg) + 1


def overlap_math_excess(cfg, n: int) -> int:
    """Overlap mode: the cycles per channel lost waiting for ChannelMath in a steady run of n-value channels.
    With s the cycle channel c's training program starts (after its last statistics beat), the next
    descriptor is taken at s + d, d = max(ceil(n/lanes) + stages + 3, release) (c-1's normalize pass, its
    pipeline and statistics word; ChannelMath releasing the statistics unit), and the next program (mid or
    train) starts at s + g, g = max(d + 1 + ceil(n/lanes), latency) (ChannelMath done with c). 0 when
    the passes are the longer."""
    from ..hdl import ChannelMath, NormDatapath
    from ..hdl.normalize import STAGES
    cfg = dataclasses.replace(cfg, overlap=True)
    beats = -(-n // cfg.lanes)
    d = max(beats + STAGES + 3, ChannelMath.release_for(cfg))
    g = max(d + 1 + beats, ChannelMath.latency_for(cfg, "train"))
    period = g - 1 + NormDatapath.pass_gap_for(cfg) + beats if cfg.passes == 3 else g
    gap = NormDatapath.pass_gap_for(cfg) - 1 if cfg.passes == 3 else 0
    return period - (1 + cfg.passes * beats + gap + 2 + STAGES + 1)


CHANNEL_CYCLES_FORMULA = "1 + passes * ceil(n / lanes) + pass_gap_idle + scale_latency + normalize_stages + 1"
OVERLAP_CYCLES_FORMULA = ("1 + passes * ceil(n / lanes) + pass_gap_idle + 2 + normalize_stages + 1 + math_wait "
                          "(hwnorm.reports.tables.overlap_math_excess)")


def timing(cfg) -> dict:
    """The fixed latencies and the whole-channel cycle count of one configuration, from the generator's
    formulas (the datasheet's numbers; tests/test_sim.py checks them against the simulation)."""
    from ..hdl import NormDatapath
    from ..hdl.normalize import stages_for
    t = {"lanes": cfg.lanes, "normalize_stages": stages_for(cfg),
         "infer_latency_cycles": NormDatapath.infer_latency_for(cfg),
         "infer_note": "an inference channel's first value is accepted infer_latency cycles after its descriptor"}
    if cfg.inference_only:
        return {"passes_training": 1, **t}
    n = min(cfg.max_count, 1024)
    t.update(passes_training=cfg.passes, scale_latency_cycles=NormDatapath.scale_latency_for(cfg),
             pass_gap_cycles=NormDatapath.pass_gap_for(cfg) if cfg.passes == 3 else None,
             channel_cycles_formula=OVERLAP_CYCLES_FORMULA if cfg.overlap else CHANNEL_CYCLES_FORMULA,
             example_count=n, channel_cycles=channel_cycles(cfg, n),
             values_per_clock=round(n / channel_cycles(cfg, n), 4),
             values_per_clock_max=round(cfg.max_count / channel_cycles(cfg, cfg.max_count), 4))
    if cfg.overlap:
        t.update(overlap=True, overlap_note=OVERLAP_PROTOCOL,
                 channel_cycles_note="overlap: the steady-state period of a run of channels of example_count values "
                                     "(one statistics word to the next); a sequence adds the first channel's arithmetic "
                                     "and the last normalize pass")
    return t


OVERLAP_PROTOCOL = ("channel overlap: per channel c the host sends the descriptor, the statistics passes of c (every "
                    "pass but the last), then the normalize pass of the channel before, c-1, while the core computes "
                    "c's constants; an inference channel has no statistics pass (its descriptor, then c-1's normalize "
                    "pass; its own pass follows the next descriptor); a descriptor with count 0 ends the sequence and "
                    "is followed by the last channel's normalize pass; outputs and statistics words come in channel "
                    "order")


def latency_table() -> str:
    """Passes, per-lane hardware, fixed latencies and whole-channel throughput of every kind, from the
    generator's own formulas (the testbench measures the latencies and tests/test_sim.py asserts they agree)."""
    from ..hdl import NormDatapath
    rows = ["| kind | passes (training) | per-lane statistics hardware | gap pass 1 -> 2 (8 / 16-bit) | "
            "per-channel latency before the normalize pass (8-bit / 16-bit, 1 lane) | whole channel of 1024 values, "
            "8-bit, lanes 1 / 4: values per clock (target 0.9 x lanes / passes) | the same with overlap=True, "
            "lanes 1 / 4 (steady state; cycles per channel waiting for ChannelMath at 4 lanes) |",
            "|---|---|---|---|---|---|---|"]
    hw = {"range": "sum; the max/min of every window of a beat's lanes (registered), then one compare per lane "
                   "with the open chunk, segmented by chunk starts computed a beat ahead",
          "l1": "sum; in pass 2 a registered comparator x > floor(mean) per lane, sum and count of the values above",
          "linf": "sum; max/min compare trees (registered), then one compare with the running max/min",
          "topk": "sum; a k-entry sorted register per lane for the k largest and one for the k smallest values",
          "l2": "sum; a squarer per lane and the wide sum of squares",
          "mad": "as l1 (the same comparator pass; only the host constant c differs)",
          "semidev": "sum; in pass 2 a registered comparator x <= floor(mean) and a registered squarer per lane, "
                     "sum, count and sum of squares of the values below",
          "cvar": "sum; a k-entry sorted register per lane for the k largest values (k = ceil((1 - alpha) max_count))",
          "frn": "as l2 (x^2 about 0, not centred); the TLU: one comparator per lane with tau",
          "frn_range": "as range; the TLU comparator",
          "frn_l1": "sum; in pass 1 a registered comparator x > 0 per lane, sum and count of the positive values; "
                    "the TLU comparator",
          "frn_linf": "as linf; the TLU comparator"}
    cfgs = default_configs()
    for kind in hw:
        c8, c16 = cfgs[f"{kind}_s8"], cfgs[f"{kind}_s16"]
        gap = (f"{NormDatapath.pass_gap_for(c8)} / {NormDatapath.pass_gap_for(c16)} cycles"
               if c8.passes == 3 else "-")
        rates, overlap = [], []
        for lanes in (1, 4):
            c = NormConfig.from_dict({**c8.to_dict(), "lanes": lanes})
            rate = 1024 / channel_cycles(c, 1024)
            rates.append(f"{rate:.2f} ({0.9 * lanes / c.passes:.2f})")
            if not c8.frn:              # the FRN kinds have no overlap build (NormConfig refuses it)
                overlap.append(f"{1024 / channel_cycles(c, 1024, overlap=True):.2f}")
        over = "-"
        if overlap:
            excess = overlap_math_excess(NormConfig.from_dict({**c8.to_dict(), "lanes": 4}), 1024)
            over = f"{' / '.join(overlap)} ({excess})"
        rows.append(f"| {kind} | {c8.passes} | {hw[kind]} | {gap} | {NormDatapath.scale_latency_for(c8)} / "
                    f"{NormDatapath.scale_latency_for(c16)} cycles | {' / '.join(rates)} | {over} |")
    c8, c16 = cfgs["range_s8"], cfgs["range_s16"]
    rows.append(f"| inference (any kind) | 1 | the multiply-add only | - | {NormDatapath.infer_latency_for(c8)} / "
                f"{NormDatapath.infer_latency_for(c16)} cycles after the descriptor | - | - |")
    return "\n".join(rows)


def replace_block(path: Path, name: str, text: str) -> bool:
    """Replace the text between `<!-- name:begin -->` and `<!-- name:end -->`; True if it changed."""
    doc = path.read_text()
    pat = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pat.search(doc):
        raise ValueError(f"{path} has no <!-- {name}:begin --> ... <!-- {name}:end --> block")
    new = pat.sub(lambda m: m.group(1) + text + "\n" + m.group(2), doc)
    if new != doc:
        path.write_text(new)
    return new != doc


def backward_configs() -> dict[str, tuple[NormConfig, GradConfig]]:
    """The default configurations of the kinds with a backward, each with its width's default GradConfig."""
    return {key: (cfg, GradConfig.for_width({"in_fmt": cfg.in_fmt, "out_fmt": cfg.out_fmt}))
            for key, cfg in default_configs().items() if cfg.kind in BACKWARD_KINDS}


def backward_table(seed: int = 0, trials: int = 2) -> str:
    """Error of the golden backward's dx (docs/numerics.md "Backward") for every default configuration with one."""
    out = ["| config | kind | x; dy -> dx | values | dx max err | dx off by one | dx max err before rounding | "
           "dx max err vs the float module | dx saturated |", "|---|---|---|---|---|---|---|---|---|"]
    for key, (cfg, gcfg) in backward_configs().items():
        e = measure_backward(cfg, gcfg, seed=seed, trials=trials)
        out.append(f"| {key} | {cfg.kind} | {cfg.in_fmt}; {gcfg.grad_fmt} -> {gcfg.dx_fmt} | {e.values} | {e.max_err:.0f} | "
                   f"{e.off_by_one} ({100.0 * e.off_by_one / e.values:.2f}%) | {e.max_unrounded:.4f} | {e.max_float:.0f} | "
                   f"{e.saturated} |")
    return "\n".join(out)


LEAN_KINDS = ("range", "l1", "mad", "linf", "topk", "cvar", "l2", "semidev")   # the batch-norm backward kinds


def lean_mantissa(spec, gcfg: GradConfig) -> int:
    """--grad-mantissa-bits: an int M, 'min' (gcfg.mantissa_min, the default lean width) or '+K' (mantissa_min + K)."""
    text = str(spec).strip()
    try:
        if text == "min":
            return gcfg.mantissa_min
        if text.startswith("+"):
            return gcfg.mantissa_min + int(text[1:])
        return int(text)
    except ValueError:
        raise ValueError(f"--grad-mantissa-bits={spec!r} is not supported: allowed an integer M, min or +K") from None


def lean_widths_table(spec) -> str:
    """The lean backward's register widths (golden.backward.lean_widths) for every batch-norm backward kind's default
    configurations at 8 and 16 bits: per lane and per channel (docs/numerics.md "The lean backward"). The divisions by
    n Den, Den^2, Den^3 chain exact divisions by n and Den (floor(floor(a / b) / c) = floor(a / (b c))): one divisor
    of Den's width, as the exact form's chained divisions."""
    from ..golden.backward import lean_widths
    out = ["| config | m | lane: dy x X | lane: x x Y (l2, semidev) | lane: Z constants | lane: accumulator | lane: SH "
           "| special (class kinds): q_t, acc0/acc1 per class | channel: Dn, Am numerator | channel: X' (special) "
           "| channel: N_t (l2, semidev: Q) | channel: Den | channel: Z = X N_t / (n Den) (l2, semidev: Y = X Q 2^2CF "
           "/ Den^2), dividend | channel, tiny regime: Z = A 2^SH N_t / (n Den) (Y), dividend |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, (cfg, gcfg) in backward_configs().items():
        if cfg.kind not in LEAN_KINDS:
            continue
        w = lean_widths(cfg, dataclasses.replace(gcfg, mantissa_bits=lean_mantissa(spec, gcfg)))
        mul2 = f"{w['lane_mul2'][0]} x {w['lane_mul2'][1]}" if "lane_mul2" in w else "-"
        nz, zb = w["lane_z"]
        out.append(f"| {key} | {w['m']} | {w['lane_mul'][0]} x {w['lane_mul'][1]} | {mul2} | {nz} x {zb} | "
                   f"{w['lane_acc']} | {w['lane_shift'][0]}..{w['lane_shift'][1]} | {w['special_q']}, "
                   f"{w['special_acc']} | {w['ch_dn']}, {w['ch_am_num']} | {w['ch_x_special']} | {w['ch_n']} | "
                   f"{w['ch_den']} | {w['ch_zdiv'][0]} | {w['ch_zdiv_tiny'][0]} |")
    return "\n".join(out)


def backward_lean_table(spec, seed: int = 0, trials: int = 2) -> str:
    """The lean backward (GradConfig(mantissa_bits)) on every batch-norm backward kind's default configurations at 8
    and 16 bits: dx against the exact golden (after and before rounding) and against the float gradients."""
    out = ["| config | m | dx max err vs exact golden | dx differing from exact golden | before rounding vs exact golden "
           "| dx max err vs float | off by one vs float | before rounding vs float | vs the float module | saturated |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for key, (cfg, gcfg) in backward_configs().items():
        if cfg.kind not in LEAN_KINDS:
            continue
        g = dataclasses.replace(gcfg, mantissa_bits=lean_mantissa(spec, gcfg))
        e = measure_backward(cfg, g, seed=seed, trials=trials)
        out.append(f"| {key} | {g.mantissa_bits} | {e.exact_max_err:.0f} | {e.exact_differ} "
                   f"({100.0 * e.exact_differ / e.values:.3f}%) | {e.exact_max_unrounded:.4f} | {e.max_err:.0f} | "
                   f"{e.off_by_one} ({100.0 * e.off_by_one / e.values:.2f}%) | {e.max_unrounded:.4f} | "
                   f"{e.max_float:.0f} | {e.saturated} |")
    return "\n".join(out)


def doc_table_builders() -> dict:
    """(doc file, block name) -> the function that generates its text (cheap: nothing is computed)."""
    return {("numerics.md", "numerics"): numerics_table, ("numerics.md", "backward"): backward_table,
            ("architecture.md", "latency"): latency_table}


def doc_tables() -> dict[tuple[str, str], str]:
    """(doc file, block name) -> generated text."""
    return {key: build() for key, build in doc_table_builders().items()}
