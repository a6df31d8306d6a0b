import subprocess
import sys

import pytest

from hwnorm.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "hwnorm.cli", *args], capture_output=True, text=True)


def test_help_lists_subcommands():
    r = run("--help")
    assert r.returncode == 0
    for sub in ("verilog", "sim", "numerics", "tables", "golden"):
        assert sub in r.stdout


def test_sim_help_goes_to_the_runner():
    r = run("sim", "--help")
    assert r.returncode == 0 and "--full" in r.stdout and "--soak" in r.stdout


def test_version():
    from hwnorm import __version__
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"hwnorm {__version__}"


def test_sim_lists_the_regression_and_the_axi_configurations():
    from hwnorm.cli import build_parser
    r = run("sim", "--list", "--quiet")
    assert r.returncode == 0 and "axi_range_s8_p4" in r.stdout and "frn_s8_small_p1" in r.stdout
    sim = build_parser()._subparsers._group_actions[0].choices["sim"]
    assert "--soak-cocotb-configs" in sim.format_help()


def test_sim_without_the_test_extra_says_what_to_install():
    code = "import sys; sys.modules['cocotb_coverage'] = None; from hwnorm.cli import main; sys.exit(main(['sim', '--list']))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2 and "hwnorm sim: error: the testbench needs cocotb_coverage" in r.stderr \
        and "pip install 'hwnorm[test]'" in r.stderr and "Traceback" not in r.stderr


def test_verilog_custom_config(tmp_path):
    assert main(["verilog", "--custom", "--kind", "topk", "-k", "4", "--lanes", "2", "--in-fmt", "s6.2",
                 "--max-count", "32", "-o", str(tmp_path)]) == 0
    (out,) = tmp_path.glob("hwnorm_topk_*.v")
    text = out.read_text()
    assert "module hwnorm_topk_" in text and "input [11:0] i__payload" in text


@pytest.mark.parametrize("args, words", [
    (["verilog", "--custom", "--chunks", "0"], ["chunks=0", "[1, 64]"]),
    (["verilog", "--custom", "--rounding", "up"], ["--rounding", "'up'", "half_up"]),
    (["verilog", "--custom", "--in-fmt", "s40.2"], ["--in-fmt", "bits=40", "[2, 32]"]),
    (["numerics", "--custom", "--max-count", "0"], ["max_count=0"]),
    (["verilog", "--custom", "--kind", "l1", "--chunks", "4"], ["chunks=4", "kind='range' only"]),
    (["verilog", "--custom", "--kind", "topk", "--topk", "99"], ["k=99", "[1, 32]"]),
    (["verilog", "--custom", "--lanes", "3"], ["lanes=3", "1, 2, 4, 8"]),
    (["verilog", "--custom", "--kind", "cvar", "--alpha", "1.5"], ["alpha=1.5", "allowed a number in (0, 1)"]),
    (["verilog", "--custom", "--kind", "cvar", "--alpha", "0.5"], ["alpha=0.5", "max_count=4096", "allowed alpha >="]),
])
def test_bad_configuration_is_a_clear_error(args, words):
    r = run(*args)
    assert r.returncode == 2
    for w in words:
        assert w in r.stderr


def test_numerics_prints_bound(capsys):
    assert main(["numerics", "--custom", "--max-count", "64", "--trials", "1"]) == 0
    out = capsys.readouterr().out
    assert "max err" in out and "training" in out and "inference" in out
