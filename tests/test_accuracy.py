"""`hwnorm accuracy` end to end on a short run: structure, hardware agreement, determinism."""
import json
import subprocess
import sys

from hwnorm.torch.accuracy import format_table, load_digits_split, run


def test_digits_split_is_seeded_and_stratified():
    a = load_digits_split(0)
    b = load_digits_split(0)
    assert all((u == v).all() for u, v in zip(a, b))
    assert len(a[1]) + len(a[3]) == 1797 and 350 <= len(a[3]) <= 370
    assert set(a[3].tolist()) == set(range(10))


def test_short_run_agrees_and_is_deterministic():
    kw = dict(kinds=("range",), backends=("float", "golden", "rtl"), fmts=("s8",), epochs=1, seed=3, quiet=True)
    r1, r2 = run(**kw), run(**kw)
    row = r1["kinds"]["range"]
    evals = {(e["backend"], e["fmt"]): e for e in row["evals"]}
    assert set(evals) == {("float", "-"), ("golden", "s8"), ("rtl", "s8")}
    assert evals[("golden", "s8")]["accuracy"] == evals[("rtl", "s8")]["accuracy"]
    assert evals[("golden", "s8")]["values"] == evals[("rtl", "s8")]["values"] > 0
    assert evals[("float", "-")]["agreement"] == 1.0
    drop = lambda r: [{k: v for k, v in e.items() if k not in ("wall_s", "values_per_s")} for e in r["kinds"]["range"]["evals"]]  # noqa: E731
    assert drop(r1) == drop(r2) and r1["kinds"]["range"]["float_accuracy"] == r2["kinds"]["range"]["float_accuracy"]
    assert "range  rtl     s8" in format_table(r1)


def test_cli_json_output():
    r = subprocess.run([sys.executable, "-m", "hwnorm.cli", "accuracy", "--kinds", "linf", "--backends", "float",
                        "--epochs", "1", "--quiet", "--json", "-"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["kinds"]["linf"]["evals"][0]["backend"] == "float"
    assert 0.5 < data["kinds"]["linf"]["float_accuracy"] <= 1.0


def test_bad_arguments_fail_before_training():
    for args, words in ((["--kinds", "l3"], "kinds=['l3']"), (["--backends", "fpga"], "backends=['fpga']"),
                        (["--fmts", "s4"], "fmts=['s4']")):
        r = subprocess.run([sys.executable, "-m", "hwnorm.cli", "accuracy", "--quiet", *args], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2 and words in r.stderr and "allowed" in r.stderr
