"""`hwnorm bench` measures every path on the same data (a small run; the numbers go in the docs)."""
import pytest

from hwnorm.bench import KINDS, format_report, run
from hwnorm.cli import main


def test_bench_reports_every_rate_and_ratio():
    # range_s8_p1 of make test's cocotb tier (count = max_count = 4096): its Verilator build is shared
    r = run(kind="range", channels=1, count=4096, quiet=True)
    for key in ("golden_values_per_s", "torch_bn_values_per_s", "torch_bn_threads_values_per_s", "golden_exact_values_per_s",
                "rtl_values_per_s", "raw_values_per_s", "raw_cycles_per_s", "cocotb_values_per_s", "rtl_vs_raw",
                "rtl_vs_cocotb", "golden_vs_torch_bn"):
        assert r[key] > 0, key
    assert r["values"] == 4096
    assert r["golden_vs_torch_bn"] == pytest.approx(r["golden_values_per_s"] / r["torch_bn_values_per_s"])
    text = format_report(r)
    assert "raw / rtl backend" in text and "rtl backend / cocotb" in text and "golden / torch BN" in text


def test_golden_only_bench_has_every_kind_and_no_rtl():
    r = run(kind="topk", fmt="s16", channels=3, count=100, quiet=True, rtl=False)
    assert sorted(r["golden_kind_values_per_s"]) == sorted(KINDS)
    assert all(v > 0 for v in r["golden_kind_values_per_s"].values())
    assert "rtl_values_per_s" not in r and "cocotb_values_per_s" not in r and r["values"] == 300
    text = format_report(r)
    assert "torch nn.BatchNorm2d" in text and "topk" in text and "rtl backend" not in text


def test_report_of_an_older_bench_json_without_the_new_rates():
    old = {"config": "range", "channels": 8, "count": 4096, "golden_values_per_s": 4e6, "rtl_values_per_s": 3e6,
           "raw_values_per_s": 3e6, "raw_cycles_per_s": 6e6, "rtl_vs_raw": 1.0}
    text = format_report(old)
    assert "golden model" in text and "torch" not in text


@pytest.mark.parametrize("kw, words", [
    (dict(kind="l3"), ["kind='l3'", "range, l1"]),
    (dict(fmt="s12"), ["fmt='s12'", "s8, s16"]),
    (dict(channels=0), ["channels=0", "[1, 4096]"]),
    (dict(count=1 << 21), ["count=2097152", "[1, 1048576]"]),
    (dict(seed=-1), ["seed=-1", "[0, "]),
    (dict(lanes=3), ["lanes=3", "1, 2, 4, 8"]),
    (dict(cocotb="no"), ["cocotb='no'", "True or False"]),
])
def test_bad_bench_parameters_name_the_parameter_its_value_and_the_range(kw, words):
    with pytest.raises(ValueError) as e:
        run(quiet=True, rtl=False, **kw)
    for w in words:
        assert w in str(e.value)


def test_cli_bench_refuses_a_bad_kind(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--kind", "l3", "--no-rtl", "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--kind" in err and "'l3'" in err and "'range'" in err
