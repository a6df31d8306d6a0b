"""The cocotb regression in Verilator, one pytest case per regression configuration."""
import pytest

from hwnorm.hdl import RangeNorm
from sim.runner import regression_configs, run

CONFIGS = regression_configs(full=False)


@pytest.mark.parametrize("key", sorted(CONFIGS))
def test_cocotb_regression_is_bit_exact(key):
    cfg = CONFIGS[key]
    r = run(cfg, seed=11)
    logs = [rec["log"] for rec in r.records if "log" in rec]
    assert r.tests == 6, logs
    assert r.failed == 0, f"cocotb tests failed, see {logs}"
    assert r.mismatches == 0
    assert r.values > 1000 and r.stats > 20
    latencies = {rec["latency"] for rec in r.records if rec.get("latency") is not None}
    assert latencies == {RangeNorm.scale_latency_for(cfg)}
