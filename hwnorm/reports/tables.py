"""Tables the docs carry, regenerated from the code (`hwnorm tables --write`), never typed by hand."""
from __future__ import annotations

import re
from pathlib import Path

from ..config import default_configs
from ..numerics import measure, measure_infer

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


def latency_table() -> str:
    """Passes, cycles per value and fixed latencies of every kind, from the generator's own formulas
    (the testbench measures them and tests/test_sim.py asserts they agree)."""
    from ..hdl import NormDatapath
    rows = ["| kind | passes (training) | values per clock in every pass | gap pass 1 -> 2 | "
            "fixed latency before the normalize pass (8-bit / 16-bit) | statistics hardware | "
            "state besides accumulators |",
            "|---|---|---|---|---|---|---|"]
    hw = {"range": ("compare chain across lanes (segmented by chunk starts), range adder", "none"),
          "l1": ("|n*x - S| per lane, adder tree", "none"),
          "linf": ("max/min compare trees", "none"),
          "topk": ("|n*x - S| per lane, k x lanes comparators", "k-entry sorted register"),
          "l2": ("a squarer per lane, 2x-wide accumulators, square root", "none")}
    cfgs = default_configs()
    for kind in ("range", "l1", "linf", "topk", "l2"):
        c8, c16 = cfgs[f"{kind}_s8"], cfgs[f"{kind}_s16"]
        gap = f"{NormDatapath.pass_gap_for(c8)} cycle" if c8.passes == 3 else "-"
        rows.append(f"| {kind} | {c8.passes} | lanes | {gap} | {NormDatapath.scale_latency_for(c8)} / "
                    f"{NormDatapath.scale_latency_for(c16)} cycles | {hw[kind][0]} | {hw[kind][1]} |")
    rows.append("| inference (any kind) | 1 | lanes | - | 3 set-up cycles after the descriptor | "
                "multiplier only | none |")
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


def doc_tables() -> dict[tuple[str, str], str]:
    """(doc file, block name) -> generated text."""
    return {("numerics.md", "numerics"): numerics_table(), ("architecture.md", "latency"): latency_table()}
