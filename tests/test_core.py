"""`hwnorm verilog --name N -o DIR`: the named core, its datasheet (JSON, Markdown, waveform), all-or-nothing writes."""
import json
import os
import random
import subprocess
import sys

import pytest

from hwnorm import core
from hwnorm.config import NormConfig
from hwnorm.fields import pack, unpack
from hwnorm.hdl import NormDatapath
from hwnorm.reports.tables import channel_cycles


def cli(*args):
    return subprocess.run([sys.executable, "-m", "hwnorm.cli", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def l1core(tmp_path_factory):
    out = tmp_path_factory.mktemp("core")
    r = cli("verilog", "--name", "my_norm", "--kind", "l1", "--lanes", "2", "--max-count", "300", "-o", str(out))
    assert r.returncode == 0, r.stderr
    return out, NormConfig(kind="l1", lanes=2, max_count=300)


def test_files_and_top_module(l1core):
    out, cfg = l1core
    assert sorted(p.name for p in out.iterdir()) == ["my_norm.h", "my_norm.json", "my_norm.md", "my_norm.svg", "my_norm.v"]
    v = (out / "my_norm.v").read_text()
    assert "module my_norm(" in v and "hwnorm_l1_" not in v
    head = v[:v.index("module my_norm(")]
    assert "my_norm.md" in head and "my_norm.json" in head and cfg.describe() in head
    for port in ("chan__payload", "i__payload", "o__payload", "stats__payload", "clk", "rst"):
        assert port in head


def test_json_fields_are_the_packers_layout(l1core):
    out, cfg = l1core
    ds = json.loads((out / "my_norm.json").read_text())
    for key, fields in (("descriptor", cfg.channel_fields), ("stats", cfg.stats_fields)):
        assert ds[key]["width"] == sum(w for _, w, _ in fields)
        for f in ds[key]["fields"]:
            assert (f["name"], f["width"], f["signed"]) in fields
            word = pack(fields, {f["name"]: -1})           # all ones in this field only
            assert word == ((1 << f["width"]) - 1) << f["offset"]
            assert unpack(fields, word)[f["name"]] == (-1 if f["signed"] else (1 << f["width"]) - 1)
    ports = {p["name"]: p for p in ds["ports"]}
    assert ports["chan__payload"]["width"] == ds["descriptor"]["width"]
    assert ports["i__payload"] == {"name": "i__payload", "direction": "input", "width": 2 * 8,
                                   "doc": ports["i__payload"]["doc"]}


def test_json_timing_is_the_latency_tables_formulas(l1core):
    out, cfg = l1core
    t = json.loads((out / "my_norm.json").read_text())["timing"]
    assert t["scale_latency_cycles"] == NormDatapath.scale_latency_for(cfg)
    assert t["pass_gap_cycles"] == NormDatapath.pass_gap_for(cfg)
    assert t["infer_latency_cycles"] == NormDatapath.infer_latency_for(cfg)
    assert t["channel_cycles"] == channel_cycles(cfg, 300) and t["example_count"] == 300
    assert t["passes_training"] == 3


def test_markdown_has_the_tables_and_waveform(l1core):
    out, _ = l1core
    md = (out / "my_norm.md").read_text()
    for words in ("## Ports", "`neps`", "`scale_exp`", "scale_latency_cycles", "```wavedrom", "![one channel](my_norm.svg)"):
        assert words in md
    assert (out / "my_norm.svg").read_text().startswith("<svg")
    wave = json.loads(md.split("```wavedrom\n")[1].split("```")[0])
    clk = wave["signal"][0]["wave"]
    assert clk.count("|") == 2               # three passes: two fixed gaps


def test_resources_come_from_a_cached_synthesis_row(monkeypatch):
    from hwnorm import datasheet
    from hwnorm.reports import synth
    row = {"gates": 123, "ecp5_luts": 45, "_cached": True, "seconds": {}}
    monkeypatch.setattr(synth, "synth", lambda cfg, pnr=True: row)
    assert datasheet.cached_resources(NormConfig()) == {"gates": 123, "ecp5_luts": 45}

    def missing(cfg, pnr=True):
        raise synth.NotSynthesized("no")
    monkeypatch.setattr(synth, "synth", missing)
    assert datasheet.cached_resources(NormConfig()) is None
    assert synth.CACHED_ONLY is False


@pytest.mark.parametrize("name", ["1abc", "my-norm", "module", "a b", "", "x$y", "int", "a" * 65])
def test_bad_name_is_refused_and_nothing_written(tmp_path, name):
    r = cli("verilog", "--name", name, "-o", str(tmp_path / "out"))
    assert r.returncode == 2
    assert "--name=" in r.stderr and repr(name) in r.stderr and "allowed" in r.stderr and "identifier" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_unwritable_output_dir_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    for bad in ("/proc/hwnorm-no-such-dir", str(blocker)):
        r = cli("verilog", "--name", "ok_name", "-o", bad)
        assert r.returncode == 2 and f"-o={bad!r}" in r.stderr and "writable directory" in r.stderr, r.stderr


def test_write_is_all_or_nothing(tmp_path, monkeypatch):
    (tmp_path / "keep.v").write_text("old")
    (tmp_path / "my_norm.v").write_text("old core")
    real = os.fdopen
    calls = {"n": 0}

    def flaky(fd, mode="r", *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            os.close(fd)
            raise OSError(28, "No space left on device")
        return real(fd, mode, *a, **k)
    monkeypatch.setattr(core.os, "fdopen", flaky)
    with pytest.raises(ValueError, match="cannot be written"):
        core.write_core(NormConfig(max_count=64), "my_norm", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.v", "my_norm.v"]
    assert (tmp_path / "my_norm.v").read_text() == "old core"


def test_waveform_of_every_kind_has_its_passes():
    from hwnorm.datasheet import waveform
    rng = random.Random(3)
    for kind in ("range", "l1", "linf", "topk", "l2"):
        cfg = NormConfig(kind=kind, lanes=rng.choice([1, 4]), max_count=100)
        w = waveform(cfg)
        ivalid = w["signal"][2][1]
        assert ivalid["wave"].count("=") == len(ivalid["data"]) == cfg.passes * 3
    inf = waveform(NormConfig(inference_only=True, max_count=100))
    assert "|" not in inf["signal"][0]["wave"] and "inference" in inf["head"]["text"]


def test_axi_stream_core_ports_and_refusal(tmp_path):
    from hwnorm.hdl.axi_stream import axi_widths, check_axi
    r = cli("verilog", "--name", "axi_norm", "--axi-stream", "--kind", "l1", "--in-fmt", "s12.6", "--lanes", "2",
            "-o", str(tmp_path))
    assert r.returncode == 0, r.stderr
    ds = json.loads((tmp_path / "axi_norm.json").read_text())
    ports = {p["name"]: (p["direction"], p["width"]) for p in ds["ports"]}
    assert ds["interface"] == "axi-stream"
    assert ports["s_axis_tdata"] == ("input", 32) and ports["s_axis_tlast"] == ("input", 1)     # 12-bit lanes in 2 bytes
    assert ports["m_axis_tdata"] == ("output", 16) and ports["m_axis_tkeep"] == ("output", 2)
    assert ports["m_axis_tlast"] == ("output", 1) and ports["s_axis_desc_tdata"][1] % 8 == 0
    assert ports["m_axis_stats_tdata"][1] == 8 * -(-ds["stats"]["width"] // 8)
    assert "module axi_norm(" in (tmp_path / "axi_norm.v").read_text()
    assert ds["waveform"]["signal"][2][1]["name"] == "s_axis tvalid / tdata"
    cfg = NormConfig(kind="l1", lanes=8, in_fmt="s16.8")
    assert max(axi_widths(cfg).values()) > 128
    with pytest.raises(ValueError, match=r"--axi-stream: .*_tdata would be \d+ bits .* allowed at most 128"):
        check_axi(cfg, max_bits=128)


def test_without_yowasp_wavedrom_the_json_ships_unrendered(tmp_path, monkeypatch):
    from hwnorm import datasheet
    monkeypatch.setattr(datasheet, "render_svg", lambda wave: None)
    paths = core.write_core(NormConfig(max_count=64), "plain", tmp_path)
    assert sorted(p.name for p in paths) == ["plain.h", "plain.json", "plain.md", "plain.v"]
    md = (tmp_path / "plain.md").read_text()
    assert "yowasp-wavedrom is not installed" in md and "```wavedrom" in md and "![one channel]" not in md


def test_datasheet_states_the_formulas_eps_rounding_saturation_and_last_beat(l1core):
    """Issue 19 item 6: the training and inference formulas in full, in this core's numbers."""
    out, cfg = l1core
    md = (out / "my_norm.md").read_text()
    nm = json.loads((out / "my_norm.json").read_text())["numerics"]
    cf, fi = cfg.const_frac_bits, cfg.in_fmt.frac
    for words in ("## Numerics", "sigma_hat = sqrt(pi/2) mean|x - mu| + eps", "c 2 (n S_hi - c_hi S) + neps",
                  f"eps_int = max(1, round(eps 2^(CF + F_in))) = {cfg.eps_int}", f"in units of 2^-{cf + fi} input units",
                  f"Dn = Den's top D bits (D = {cfg.dn_bits}", "K = 2^MF,  C = mean",
                  f"A = sgn(gamma) X ({cfg.a_bits} bits)", f"m = {cfg.gain_bits} (mantissa_bits)",
                  "x < x0 or x > x0 + 1 saturates", "round half up", "y = clamp(q, -128, 127)",
                  "its other output lanes are 0", "an inference channel reports sum = den = 0",
                  "my_norm_channel_params"):
        assert words in md, words
    assert nm["rounding"] == "half_up" and "1 LSB" in nm["accuracy"]
    root = core.core_files(NormConfig(kind="l2", rounding="half_even"), "r2")["r2.md"]
    assert "inside the square root as the descriptor's eps_n" in root and "round half to even" in root


def test_datasheet_names_the_refused_descriptors_and_the_error_outputs(l1core):
    """Issue 19 item 6: count = 0 and every other refused value, and the error bit, in the datasheet, the JSON, the
    C header and the AXI4-Stream wrapper's ports."""
    out, cfg = l1core
    md = (out / "my_norm.md").read_text()
    ds = json.loads((out / "my_norm.json").read_text())
    assert [(r["field"], r["allowed"]) for r in ds["edges"]["rules"]] == [(f, a) for f, _, a in cfg.descriptor_rules]
    for words in ("## Edges: refused descriptors", "| `count` | all | 1 .. max_count = 300 |", "| `neps` | training |",
                  "error = 1 and sum = den = sat = 0", "`my_norm_desc_error`", "| `error` | [", "Not checked: c, neps"):
        assert words in md, words
    assert ds["stats"]["fields"][-1]["name"] == "error" and ds["stats"]["fields"][-1]["doc"]
    h = (out / "my_norm.h").read_text()
    assert "MY_NORM_STATS_ERROR_OFFSET" in h and "my_norm_desc_error(const my_norm_desc_t *d)" in h
    axi = core.core_files(NormConfig(lanes=2, max_count=300), "ax", axi=True)
    assert "m_axis_stats_tuser" in axi["ax.v"] and "| `m_axis_stats_tuser` | output | 1 |" in axi["ax.md"]
    ov = core.core_files(NormConfig(kind="l1", lanes=4, max_count=1024, overlap=True), "ov")["ov.md"]
    assert "count = 0 is the end of a sequence, not an error" in ov


def test_an_inference_only_datasheet_has_no_training_formulas():
    md = core.core_files(NormConfig(inference_only=True, max_count=300), "io")["io.md"]
    assert "Inference-only build: no training datapath" in md and "sigma_hat = (" not in md and "Den = n" not in md
    assert "| `count` | all | 1 .. max_count = 300 |" in md and "| `neps`" not in md
