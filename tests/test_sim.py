"""The cocotb regression in Verilator, one pytest case per configuration of the `make sim` matrix."""
import pytest

from hwnorm.config import FRN_KINDS
from hwnorm.hdl import NormDatapath
from hwnorm.reports.tables import channel_cycles
from hwnorm.verify.funcov import summarize
from hwnorm.verify.runner import BACKWARD_TEST_MODULE, axi_configs, backward_configs, cocotb_tests, regression_configs, run

# make test (the fast tier, <= 6 min on a fresh clone): one cocotb build per distinct block and stage, each kind's
# whole 8/16-bit x 1/4-lane matrix in make sim (the main job; test_make_sim_matrix_* check it is there)
MAKE_TEST = {
    "range_s8_p1": "the smallest core: the Range statistics, ChannelMath's reciprocal, 8 bits x 1 lane",
    "l2_s16_p4": "16 bits x 4 lanes and the square root (L2)",
    "topk_s8_p4": "the top-k sorted registers and their merge",
    "cvar_s8_p1": "the GBN kinds' sorted top sum (cvar)",
    "l1_s8_overlap_p4": "channel overlap with a mean pass (three passes)",
    "range_s8_overlap_p4": "channel overlap with two passes (and the refused-descriptor test)",
    "range_plain_even_u_p2": "half_even, unsigned output, 2 lanes (and the refused-descriptor test)",
    "range_s8_infer_only_p4": "an inference-only build",
    "range_drop_even_p4": "the dropout stage",
    "frn_s8_small_p1": "FRN + TLU",
    "l1_ew_floor_small_p2": "the per-element affine with floor rounding",
}
CONFIGS = {k: c for k, c in regression_configs(full=False).items() if k in MAKE_TEST}
COCOTB_TESTS = 13


def test_cocotb_tests_are_listed():
    assert len(cocotb_tests()) == COCOTB_TESTS and "reset_every_state" in cocotb_tests()


def test_matrix_covers_every_kind_width_and_lanes():
    """make sim: every kind x 8/16 bits x lanes 1/4; make test: each of its configurations exists, and it has both
    widths, both lane counts and every optional stage at least once."""
    full = regression_configs(full=False)
    for kind in ("range", "l1", "linf", "topk", "l2", "mad", "semidev", "cvar"):
        for bits in (8, 16):
            for lanes in (1, 4):
                assert (kind, bits, lanes) in {(c.kind, c.in_fmt.bits, c.lanes) for c in full.values()}
    assert set(MAKE_TEST) <= set(full) and len(CONFIGS) == len(MAKE_TEST)
    picked = CONFIGS.values()
    assert {c.in_fmt.bits for c in picked} >= {8, 16} and {c.lanes for c in picked} >= {1, 2, 4}
    for stage in ("overlap", "dropout", "frn", "elementwise", "inference_only"):
        assert any(getattr(c, stage) for c in picked), stage


def test_make_sim_matrix_has_every_frn_kind_and_make_test_one():
    seen = {(c.kind, c.in_fmt.bits, c.lanes) for c in regression_configs(full=False).values()}
    for kind in FRN_KINDS:
        for bits in (8, 16):
            for lanes in (1, 4):
                assert (kind, bits, lanes) in seen
    assert [k for k, c in CONFIGS.items() if c.frn] == ["frn_s8_small_p1"] and CONFIGS["frn_s8_small_p1"].lanes == 1


def test_make_sim_matrix_has_elementwise_builds_at_8_and_16_bits_and_make_test_one():
    ew = {k: c for k, c in regression_configs(full=False).items() if c.elementwise}
    assert {(c.in_fmt.bits, c.lanes) for c in ew.values()} >= {(8, 4), (16, 1)}
    assert {c.rounding for c in ew.values()} == {"half_up", "half_even", "floor"}
    assert [k for k, c in CONFIGS.items() if c.elementwise] == ["l1_ew_floor_small_p2"]


@pytest.mark.parametrize("key", sorted(CONFIGS))
def test_cocotb_regression_is_bit_exact(key):
    cfg = CONFIGS[key]
    r = run(cfg, seed=11)
    logs = [rec["log"] for rec in r.records if "log" in rec]
    assert r.tests == COCOTB_TESTS, logs
    assert r.failed == 0, f"cocotb tests failed, see {logs}"
    assert r.mismatches == 0
    assert r.values > 3000 and r.stats > 40
    hit, total, _, missed = summarize(r.coverage)       # every applicable coverage bin of this configuration
    assert total >= (20 if cfg.inference_only else 30) and not missed, missed
    latencies = {rec["latency"] for rec in r.records if rec.get("latency") is not None}
    # overlap: no fixed gap before a normalize pass (it follows the next channel's statistics passes)
    assert latencies == (set() if cfg.inference_only or cfg.overlap else {NormDatapath.scale_latency_for(cfg)})
    whole = [rec for rec in r.records if rec.get("channel_cycles") is not None]
    assert len(whole) == 1
    if not cfg.inference_only:      # the measured whole channel (overlap: the steady-state period) is the formula
        assert whole[0]["channel_cycles"] == channel_cycles(cfg, whole[0]["channel_values"])
    if cfg.overlap and cfg.lanes == 4 and whole[0]["channel_values"] >= 1024:       # issue 8 item 8
        assert whole[0]["overlap_rate"] >= 0.9 * cfg.lanes / cfg.passes
    gaps = {rec["pass_gap"] for rec in r.records if rec.get("pass_gap") is not None}
    assert gaps == ({NormDatapath.pass_gap_for(cfg)} if cfg.passes == 3 and not cfg.overlap else set())


AXI_IN_MAKE_TEST = ["axi_range_s8_p4"]     # make sim runs axi_l1_s12_p2 too


def test_make_sim_has_the_axi_wrapper_at_two_configurations():
    assert set(AXI_IN_MAKE_TEST) < set(axi_configs()) and len(axi_configs()) == 2


@pytest.mark.parametrize("key", AXI_IN_MAKE_TEST)
def test_axi_stream_wrapper_is_bit_exact(key):
    """cocotbext-axi sources and sinks with random pauses on the AXI4-Stream wrapper, the golden scoreboard."""
    r = run(axi_configs()[key], seed=11, axi=True)
    logs = [rec["log"] for rec in r.records if "log" in rec]
    assert r.tests == 4 and r.failed == 0, f"cocotb tests failed, see {logs}"
    assert r.mismatches == 0 and r.values > 500 and r.stats > 15


@pytest.mark.parametrize("key", ["range_plain_even_u_p2", "range_s8_overlap_p4"])
def test_refused_descriptors_get_an_error_word_and_the_next_channels_are_exact(key):
    """Issue 19 item 6: count 0 (the user's hang) and every other refused descriptor value, in Verilator: one error
    word each, no beat taken or given, the channels around them bit-exact; every refused-descriptor bin hit."""
    cfg = regression_configs(full=False)[key]
    r = run(cfg, testcase=["refused_descriptors", "count_zero"], seed=5)
    logs = [rec["log"] for rec in r.records if "log" in rec]
    assert r.tests == 2 and r.failed == 0 and r.mismatches == 0, logs
    refused = next(iter(r.coverage.values()))["refused"]
    assert len(refused) >= 4 and all(h > 0 for h in refused.values()), refused


def test_a_cold_regression_says_what_its_builds_cost_before_the_first_one(monkeypatch, capsys):
    import argparse

    from hwnorm.verify import regression
    from hwnorm.verify.runner import RunResult
    monkeypatch.setattr(regression, "is_built", lambda cfg, axi=False: cfg.kind == "range")   # range_s8_p1 cached
    order = []

    def fake_run(cfg, test, seed, full, axi=False):
        order.append(capsys.readouterr().out)       # what was printed before this configuration ran
        return RunResult(config=cfg.name, tests=1)

    monkeypatch.setattr(regression, "run", fake_run)
    args = argparse.Namespace(soak=None, soak_seed=None, full=False, config=["range_s8_p1", "l1_s8_p1", "l2_s16_p4"],
                              test="count_zero", list=False, soak_configs=None, soak_cocotb=None,
                              soak_cocotb_configs=None, seed=1, jobs=2, quiet=True)
    regression.run_args(args, error=lambda m: pytest.fail(m))
    assert "hwnorm sim: 2 of 3 configurations need a Verilator build first" in order[0]
    assert "at --jobs 2 roughly 10 s of builds" in order[0]


# the backward datapath (hwnorm/verify/cocotb_tests/test_backward.py): make test runs one; make sim every bwd_* one
BACKWARD_MAKE_TEST = {"bwd_range_s8_p1": "the backward datapath: range, 8 bits x 1 lane, both passes"}


def test_the_backward_testbench_has_its_tests():
    assert cocotb_tests(BACKWARD_TEST_MODULE) == ["random_counts", "zero_gradients", "ties_at_extremes", "saturating_dx",
                                                  "extremes", "back_to_back", "reset_every_state", "refused_descriptors"]
    assert set(BACKWARD_MAKE_TEST) <= set(backward_configs())


@pytest.mark.parametrize("key", sorted(BACKWARD_MAKE_TEST))
def test_backward_cocotb_regression_is_bit_exact(key):
    """Every cocotb test of the backward on one configuration: dx, dgamma, dbeta and the saturation count bit for bit
    against the golden backward, with gaps and back-pressure in both passes; every bwd_* coverage bin hit."""
    r = run(backward_configs()[key], seed=11)
    logs = [rec["log"] for rec in r.records if "log" in rec]
    assert r.tests == len(cocotb_tests(BACKWARD_TEST_MODULE)) and r.failed == 0, f"cocotb tests failed, see {logs}"
    assert r.mismatches == 0 and r.values > 3000 and r.stats > 40
    hit, total, _, missed = summarize(r.coverage)
    assert total >= 20 and not missed, missed


def test_the_backward_scoreboard_sees_a_wrong_dx(monkeypatch):
    """The testbench's golden side told another dx format than the hardware's (one fraction bit fewer): the
    scoreboard reports mismatches and the test fails (it is not blind)."""
    from hwnorm.backends.rtl_backward import grad_json
    monkeypatch.delenv("PYTEST_CURRENT_TEST")       # else cocotb's runner raises on the failure instead of counting it
    sim = backward_configs()["bwd_range_s8_p1"]
    wrong = grad_json(type(sim.gcfg)(grad_fmt=sim.gcfg.grad_fmt, dx_fmt="s8.4", rounding=sim.gcfg.rounding))
    r = run(sim, "random_counts", seed=3, env={"HWNORM_GRAD": wrong})
    assert r.tests == 1 and r.failed == 1 and r.mismatches > 0


def test_only_the_tops_ports_are_public_to_the_testbench():
    """The cocotb builds make only the top's ports VPI-visible (ports.vlt): every port of the forward, AXI and
    backward tops is listed, no internal signal is, and a Verilog without the top is refused by name."""
    from hwnorm.verify.runner import _verilog, port_names, public_ports_config, top_name
    cfg = regression_configs()["range_s8_p1"]
    ports = port_names(_verilog(cfg, False), top_name(cfg))
    assert {"clk", "rst", "i__valid", "i__ready", "i__payload", "o__valid", "o__ready", "o__payload"} <= set(ports)
    assert not [p for p in ports if "math" in p or "stats" == p]
    for c, axi in ((axi_configs()["axi_range_s8_p4"], True), (backward_configs()["bwd_range_s8_p1"], False)):
        text = _verilog(c, axi)
        vlt = public_ports_config(text, top_name(c, axi))
        assert vlt.startswith("`verilator_config\n") and f'-module "{top_name(c, axi)}" -var "clk"' in vlt
    with pytest.raises(ValueError, match="module 'nope' is not in the Verilog"):
        port_names("module other(a);\n  input a;\nendmodule\n", "nope")
