"""Synthesis flow (Yosys / nextpnr from PyPI) on a tiny configuration; the full sweep is `make synth`."""
import json

import pytest

import hwnorm.reports.synth as synth_mod
from hwnorm import FixedFormat, NormConfig, default_configs
from hwnorm.emit import verilog_text
from hwnorm.reports.results import headline, relative_table, render

TINY = NormConfig(kind="l1", in_fmt=FixedFormat(4, 1), out_fmt=FixedFormat(4, 2), gamma_fmt=FixedFormat(4, 2),
                  beta_fmt=FixedFormat(4, 2), max_count=8)


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


def test_tiny_synthesis_row_and_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(synth_mod, "BUILD_ROOT", tmp_path)
    row = synth_mod.synth(TINY, pnr=False)
    assert row["luts"] > 0 and row["ffs"] > 0 and row["gates"] > row["luts"] and row["transistors"] > 0
    assert row["logic_depth"] > 0 and "yosys ltp" in row["timing"] and row["fmax_mhz"] is None
    cached = list((tmp_path / "synth").glob("*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text()) == row

    def boom(*a, **k):
        raise AssertionError("a cached configuration was synthesized again")
    monkeypatch.setattr(synth_mod, "_run", boom)
    assert synth_mod.synth(TINY, pnr=False) == row


def test_failed_synthesis_shows_log_and_writes_no_row(tmp_path, monkeypatch):
    monkeypatch.setattr(synth_mod, "BUILD_ROOT", tmp_path)
    monkeypatch.setattr(synth_mod, "verilog_text", lambda cfg, name=None: f"module {name}(input a);\n  syntax error here\nendmodule\n")
    with pytest.raises(synth_mod.SynthError, match=r"(?s)yosys synth_ice40 failed for l1 lanes=1 in=s4.1.*ERROR"):
        synth_mod.synth(TINY, pnr=False)
    rows, errors = synth_mod.sweep({"tiny": TINY}, jobs=1, pnr=False)
    assert rows == {} and "tiny" in errors
    assert not list((tmp_path / "synth").glob("*.json"))


def _row(kind, luts, gates, dsps=0):
    return dict(kind=kind, in_bits=8, lanes=1, luts=luts, carries=1, ffs=1, dsps=dsps, brams=0, gates=gates,
                gate_ffs=1, transistors=10, fmax_mhz=None, timing="yosys ltp: 9 cells deep")


def test_headline_and_tables_from_rows():
    rows = {"range_s8_p1": _row("range", 750, 9000, 1), "l2_s8_p1": _row("l2", 1000, 12000, 2)}
    text = headline(rows, {"range_s8": {"max_unrounded": 0.0087}})
    assert text.startswith("Range BN at 8 bits takes 750 LUT4 + 1 DSP to L2's 1000 LUT4 + 2 DSP")
    assert "25% fewer LUTs" in text and "25% fewer)" in text and "0.009 LSB" in text
    assert "| Range | -25% | - |" in relative_table(rows)
    md = render(rows, {"topk_s8_p4": "boom"}, {"range_s8": {"max_unrounded": 0.0087}}, "(numerics)", None, None)
    assert "Failed (no row written): topk_s8_p4" in md and "| range_s8_p1 | range | 8 | 1 | 750 |" in md
    rows["range_s8_p1"]["luts"] = 1100
    assert "10% more LUTs" in headline(rows, {})
