"""Verilator builds are cached per configuration and safe when several processes build at once."""
import json
import os
import subprocess
import sys
from pathlib import Path

from hwnorm.cache import BUILD_ROOT
from hwnorm.config import FixedFormat, NormConfig

REPO = Path(__file__).resolve().parent.parent
SMALL = NormConfig(in_fmt=FixedFormat(5, 2), out_fmt=FixedFormat(5, 3), gamma_fmt=FixedFormat(5, 3),
                   beta_fmt=FixedFormat(5, 3), max_count=12, chunks=2)

SCRIPT = """
import json, sys
from hwnorm.config import NormConfig
from hwnorm.verify.runner import build
d = build(NormConfig.from_json(sys.argv[1]))
print(json.dumps({"dir": str(d), "stamp": (d / ".built").read_text()}))
"""


def _spawn(build_root):
    # a build root of its own, the suite's compiler cache (ccache: the Verilator runtime is not compiled again)
    env = dict(os.environ, HWNORM_BUILD_DIR=str(build_root), PYTHONPATH=str(REPO),
               CCACHE_DIR=os.environ.get("CCACHE_DIR", str(BUILD_ROOT / "ccache")))
    return subprocess.Popen([sys.executable, "-c", SCRIPT, SMALL.to_json()], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_parallel_builds_share_one_cache_entry(tmp_path):
    procs = [_spawn(tmp_path), _spawn(tmp_path)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert outs[0]["dir"] == outs[1]["dir"]
    build_dir = Path(outs[0]["dir"])
    assert (build_dir / SMALL.name).exists()              # the simulator executable
    assert [p.name for p in (tmp_path / "sim").iterdir() if p.is_dir()] == [build_dir.name]
    mtime = (build_dir / ".built").stat().st_mtime_ns
    # a third build is a cache hit: nothing is rebuilt
    p = _spawn(tmp_path)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    assert (build_dir / ".built").stat().st_mtime_ns == mtime


def test_half_finished_build_is_redone(tmp_path):
    p = _spawn(tmp_path)
    out, _ = p.communicate(timeout=600)
    build_dir = Path(json.loads(out.strip().splitlines()[-1])["dir"])
    (build_dir / ".built").unlink()
    (build_dir / SMALL.name).unlink()
    p = _spawn(tmp_path)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    assert (build_dir / SMALL.name).exists() and (build_dir / ".built").exists()
