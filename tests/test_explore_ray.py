"""`hwnorm explore` on Ray: an unreachable address fails within seconds, a local Ray gives the sequential engine's
results, and a two-node cluster on this machine (`ray start --head` + `ray start --address`, torn down by the
fixture) runs a small numerics sweep on both nodes with results identical to a sequential run, and `hwnorm sim`'s
regression on both nodes (issue 22 item 5)."""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hwnorm.cli import main
from hwnorm.explore.cache import Cache
from hwnorm.explore.driver import run
from hwnorm.explore.engine import EngineError, RayEngine, SequentialEngine
from hwnorm.explore.spec import parse

ray = pytest.importorskip("ray")
RAY = str(Path(sys.executable).parent / "ray")
SPEC = {"name": "two_nodes", "axes": {"kind": ["range", "l1", "linf", "topk", "l2"], "formats": ["s6", "s8"],
                                      "max_count": [64, 256], "lanes": [1, 4]},
        "measure": {"numerics": {"trials": 16}}}          # 20 tasks of about 0.1 s (40 points: lanes share them)


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "nodes"} for r in rows]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_address_is_a_clear_error_within_seconds(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text('[axes]\nkind = ["range"]\n[measure.numerics]\n')
    port = _free_port()                                   # closed: nothing listens on it
    t0 = time.monotonic()
    assert main(["explore", str(spec), "--address", f"127.0.0.1:{port}", "--connect-timeout", "2"]) == 2
    assert time.monotonic() - t0 < 10
    err = capsys.readouterr().err
    assert f"Ray cluster at 127.0.0.1:{port} is unreachable" in err and "ray start --head" in err
    with pytest.raises(EngineError, match="unreachable"):
        RayEngine(address=f"127.0.0.1:{port}", connect_timeout=1)


def test_local_ray_gives_the_sequential_results(tmp_path):
    spec = parse(SPEC)
    seq = run(spec, SequentialEngine(), Cache(tmp_path / "seq"), out=tmp_path / "a", quiet=True)
    eng = RayEngine(num_cpus=2)
    try:
        got = run(spec, eng, Cache(tmp_path / "ray"), out=tmp_path / "b", quiet=True)
    finally:
        eng.close()
    assert got["ran"] == seq["ran"] == 20 and got["failed_tasks"] == 0
    assert _strip(got["rows"]) == _strip(seq["rows"])
    assert "ray" in got["engine"] and "sequential" in seq["engine"]


def _ours(tag: str) -> list[int]:
    """Pids of the processes whose command line names this test's Ray temp dir (only what the fixture started)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if tag.encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


@pytest.fixture(scope="module")
def two_nodes():
    """A head (1 CPU) and a second node (1 CPU) on this machine, shared by this module's tests (xdist keeps a module's
    tests on one worker when they ask for it); torn down by process group and temp dir."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield from _two_nodes(monkeypatch)


def _two_nodes(monkeypatch):
    port = _free_port()
    tmp = tempfile.mkdtemp(prefix="hwray", dir="/tmp")        # short: Ray's socket paths must stay < 108 chars
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    common = ["--block", "--num-cpus", "1", "--temp-dir", tmp, "--disable-usage-stats"]
    procs = []
    t0 = time.monotonic()
    try:
        procs.append(subprocess.Popen([RAY, "start", "--head", "--port", str(port), "--include-dashboard=false", *common],
                                      env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline and procs[0].poll() is None, "the Ray head did not start within 60 s"
                time.sleep(0.2)
        procs.append(subprocess.Popen([RAY, "start", "--address", f"127.0.0.1:{port}", *common],
                                      env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield f"127.0.0.1:{port}", t0
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)
        for pid in _ours(tmp):                                # workers in sessions of their own
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["rm", "-rf", tmp], timeout=60)
        current = Path("/tmp/ray/ray_current_cluster")            # `ray start --head` points local drivers at it
        if current.exists() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


@pytest.mark.xdist_group("two_nodes")
def test_two_nodes_on_one_machine(two_nodes, tmp_path):
    address, t0 = two_nodes
    spec = parse(SPEC)
    eng = RayEngine(address=address, connect_timeout=10, spread=True)
    try:
        deadline = time.monotonic() + 60
        while len([n for n in ray.nodes() if n["Alive"]]) < 2 or ray.cluster_resources().get("CPU", 0) < 2:
            assert time.monotonic() < deadline, "the second Ray node did not join within 60 s"
            time.sleep(0.2)
        up = time.monotonic() - t0

        @ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
        def warm():                                        # one worker up on each node before the sweep
            time.sleep(0.5)
            return ray.get_runtime_context().get_node_id()
        assert len(set(ray.get([warm.remote() for _ in range(4)]))) == 2
        got = run(spec, eng, Cache(tmp_path / "ray"), out=tmp_path / "r", quiet=True)
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    finally:
        eng.close()
    seq = run(spec, SequentialEngine(), Cache(tmp_path / "seq"), out=tmp_path / "s", quiet=True)
    assert got["failed_tasks"] == 0 and _strip(got["rows"]) == _strip(seq["rows"])
    used = {n for r in got["rows"] for n in r["nodes"].split()}
    print(f"\ntwo nodes up in {up:.1f} s; sweep of {got['points']} points ({got['ran']} tasks) in {got['wall_s']:.1f} s "
          f"on {got['engine']}; tasks per node: "
          + ", ".join(f"{n[:8]}: {sum(n in r['nodes'] for r in got['rows'])} points" for n in sorted(used)))
    assert used == nodes and len(used) == 2


@pytest.mark.xdist_group("two_nodes")
def test_hwnorm_sim_runs_the_regression_on_two_nodes(two_nodes, capsys):
    """`hwnorm sim --engine ray --address` (issue 22 item 5): one task per configuration, each on a node of its own
    (1 CPU each), the same counts as the default thread pool; configurations of make test's tier, so their builds are
    usually cached already."""
    address, _ = two_nodes
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        deadline = time.monotonic() + 60
        while len([n for n in ray.nodes() if n["Alive"]]) < 2 or ray.cluster_resources().get("CPU", 0) < 2:
            assert time.monotonic() < deadline, "the second Ray node did not join within 60 s"
            time.sleep(0.2)
    finally:
        ray.shutdown()
    argv = ["sim", "--config", "range_s8_p1", "--config", "range_plain_even_u_p2", "--test", "count_zero", "--quiet"]
    assert main([*argv, "--engine", "ray", "--address", address]) == 0
    on_ray = capsys.readouterr().out
    assert main(argv) == 0
    here = capsys.readouterr().out
    summary = lambda out: next(ln for ln in out.splitlines() if ln.startswith("hwnorm sim: 2 tests")).split(" in ")[0]  # noqa: E731
    assert summary(on_ray) == summary(here) and "0 mismatches" in summary(here)
    assert "on 2 Ray node(s)" in on_ray and f"cluster at {address}" in on_ray
