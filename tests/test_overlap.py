"""Channel overlap (NormConfig(overlap=True), issue 8 item 8): validation, refusals where unsupported,
the CLI option, the datasheet and header, and the throughput formula. The cocotb configurations
range_s8_overlap_p4 and l1_s8_overlap_p4 (tests/test_sim.py) check the protocol bit-exactly and measure it."""
import json

import pytest

from hwnorm.cli import main
from hwnorm.config import FRN_KINDS, KINDS, NormConfig
from hwnorm.hdl import NormDatapath
from hwnorm.reports.tables import channel_cycles, overlap_math_excess, timing


def test_overlap_is_off_by_default_and_leaves_the_hash_alone():
    assert NormConfig().overlap is False
    assert "overlap" not in NormConfig().to_dict()
    assert NormConfig(overlap=False).hash == NormConfig().hash
    on = NormConfig(overlap=True)
    assert on.hash != NormConfig().hash and on.to_dict()["overlap"] is True
    assert NormConfig.from_json(on.to_json()) == on and "overlap" in on.describe()


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_overlap_must_be_a_bool(bad):
    with pytest.raises(ValueError, match="overlap="):
        NormConfig(overlap=bad)


def test_overlap_is_refused_where_unsupported():
    with pytest.raises(ValueError, match="overlap=True is not supported with inference_only"):
        NormConfig(overlap=True, inference_only=True)
    from hwnorm.hdl.axi_stream import AxiStreamNorm
    with pytest.raises(ValueError, match="overlap=True is not supported by the AXI4-Stream wrapper"):
        AxiStreamNorm(NormConfig(overlap=True))
    from hwnorm.backends.verilator import VerilatedDatapath
    with pytest.raises(ValueError, match="overlap=True is not supported by the rtl backend"):
        VerilatedDatapath(NormConfig(overlap=True))


OVERLAP_KINDS = [k for k in KINDS if k not in FRN_KINDS]       # the FRN kinds have no overlap build


def test_overlap_is_refused_where_the_hold_registers_lack_a_field():
    for kw in (dict(kind="frn"), dict(kind="frn_l1"), dict(dropout=0.25)):
        with pytest.raises(ValueError, match="overlap=True is not supported"):
            NormConfig(overlap=True, **kw)


@pytest.mark.parametrize("kind", OVERLAP_KINDS)
def test_overlap_meets_the_throughput_target_at_4_lanes(kind):
    """Steady state of 1024-value channels at 8 bits, 4 lanes: >= 0.9 x lanes / passes for every kind
    (the formula the testbench's back_to_back measurement is compared with in tests/test_sim.py)."""
    for max_count in (1024, 4096):
        cfg = NormConfig(kind=kind, lanes=4, max_count=max_count, overlap=True)
        assert 1024 / channel_cycles(cfg, 1024) >= 0.9 * 4 / cfg.passes
        assert channel_cycles(cfg, 1024) < channel_cycles(cfg, 1024, overlap=False)
        # no kind waits for its arithmetic: it runs under the normalize pass of the channel before and the
        # next channel's first pass (semidev's 330 cycles too)
        assert overlap_math_excess(cfg, 1024) == 0
        # a one-value channel waits for all of it
        assert overlap_math_excess(cfg, 1) > 0


def test_overlap_leaves_the_latencies_of_the_generator():
    off, on = NormConfig(kind="l1", lanes=4), NormConfig(kind="l1", lanes=4, overlap=True)
    assert NormDatapath.scale_latency_for(on) == NormDatapath.scale_latency_for(off)
    assert NormDatapath.pass_gap_for(on) == NormDatapath.pass_gap_for(off)
    t = timing(on)
    assert t["overlap"] is True and "count 0" in t["overlap_note"]
    assert "overlap" not in timing(off)


def test_cli_overlap_core_has_the_protocol_in_its_datasheet_and_header(tmp_path):
    assert main(["verilog", "--name", "ov_norm", "--kind", "range", "--lanes", "4", "--max-count", "1024",
                 "--overlap", "-o", str(tmp_path)]) == 0
    ds = json.loads((tmp_path / "ov_norm.json").read_text())
    assert ds["config"]["overlap"] is True and ds["timing"]["overlap"] is True
    cfg = NormConfig(kind="range", lanes=4, max_count=1024, overlap=True)
    assert ds["timing"]["channel_cycles"] == channel_cycles(cfg, 1024)
    assert "Channel overlap is on" in (tmp_path / "ov_norm.md").read_text()
    assert "#define OV_NORM_OVERLAP 1" in (tmp_path / "ov_norm.h").read_text()
    assert main(["verilog", "--name", "plain", "-o", str(tmp_path)]) == 0
    assert "OVERLAP" not in (tmp_path / "plain.h").read_text()
    assert "overlap" not in json.loads((tmp_path / "plain.json").read_text())["config"]
