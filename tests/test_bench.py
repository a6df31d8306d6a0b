"""`hwnorm bench` measures every path on the same data (a small run; the numbers go in the docs)."""
from hwnorm.bench import format_report, run


def test_bench_reports_every_rate_and_ratio():
    r = run(kind="l1", channels=2, count=256, quiet=True)
    for key in ("golden_values_per_s", "rtl_values_per_s", "raw_values_per_s", "raw_cycles_per_s",
                "cocotb_values_per_s", "rtl_vs_raw", "rtl_vs_cocotb"):
        assert r[key] > 0, key
    assert r["values"] == 512
    text = format_report(r)
    assert "raw / rtl backend" in text and "rtl backend / cocotb" in text
