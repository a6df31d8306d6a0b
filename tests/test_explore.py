"""`hwnorm explore` without Ray: spec validation (bad input names key, value and what is allowed), caching and
resume, failed points, the table, the Pareto front and the plots. Ray and multi-node: tests/test_explore_ray.py."""
import json
import re
from pathlib import Path

import pytest

from hwnorm.cli import main
from hwnorm.explore import measure
from hwnorm.explore.cache import Cache
from hwnorm.explore.driver import run
from hwnorm.explore.engine import EngineError, SequentialEngine, check_reachable, execute, make_engine
from hwnorm.explore.pareto import front
from hwnorm.explore.plots import write_plots
from hwnorm.explore.spec import SpecError, formats_of, load, parse

REPO = Path(__file__).resolve().parent.parent
TINY = {"name": "tiny", "axes": {"kind": ["range", "l1"], "formats": ["s4.1:s4.2"], "lanes": [1, 2], "max_count": [8]},
        "measure": {"numerics": {"trials": 1}}}


def tiny(**axes):
    return parse({**TINY, "axes": {**TINY["axes"], **axes}})


@pytest.mark.parametrize("data, words", [
    ({"axes": {"kinds": ["range"]}, "measure": {"numerics": {}}}, ["axes", "'kinds'", "kind, formats, lanes"]),
    ({"axes": {"kind": ["range", "rms"]}, "measure": {"numerics": {}}}, ["axes.kind", "'rms'", "range, l1, linf, topk, l2"]),
    ({"axes": {"lanes": [3]}, "measure": {"numerics": {}}}, ["axes.lanes", "3", "1, 2, 4, 8"]),
    ({"axes": {"formats": ["q8"]}, "measure": {"numerics": {}}}, ["axes.formats", "'q8'", "'s<bits>'"]),
    ({"axes": {"chunks": [0]}, "measure": {"numerics": {}}}, ["axes.chunks", "0", "[1, 64]"]),
    ({"axes": {"rounding": ["up"]}, "measure": {"numerics": {}}}, ["axes.rounding", "'up'", "half_even"]),
    ({"axes": {"kind": "range"}, "measure": {"numerics": {}}}, ["axes.kind", "'range'", "non-empty list"]),
    ({"axes": {"kind": ["range"]}}, ["measure", "synth, numerics, accuracy"]),
    ({"axes": {"kind": ["range"]}, "measure": {"area": {}}}, ["measure", "'area'", "synth, numerics, accuracy"]),
    ({"axes": {"kind": ["range"]}, "measure": {"synth": {"pnr": "yes"}}}, ["measure.synth.pnr", "'yes'", "bool"]),
    ({"axes": {"kind": ["range"]}, "measure": {"numerics": {"trails": 2}}}, ["measure.numerics", "'trails'", "seed, trials"]),
    ({"axes": {"kind": ["range"]}, "measure": {"accuracy": {"dataset": "cifar"}}}, ["dataset", "'cifar'", "digits, mnist1d"]),
    ({"axes": {"kind": ["range"]}, "measure": {"numerics": {}}, "sweep": 1}, ["spec", "'sweep'", "axes, measure"]),
    ({"axes": {"kind": ["range"], "formats": ["s2"]}, "measure": {"numerics": {}}}, ["axes.formats", "'s2'", "frac=-1"]),
    ({"axes": {"kind": ["range"]}, "measure": {"numerics": {}}, "output": {"target_pp": "x"}}, ["output.target_pp", "int or float"]),
])
def test_a_bad_spec_names_the_key_the_value_and_what_is_allowed(data, words):
    with pytest.raises(SpecError) as e:
        parse(data)
    for w in words:
        assert w in str(e.value)


def test_cli_refuses_a_bad_spec_before_any_work(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text('[axes]\nkind = ["range", "rms"]\n[measure.numerics]\n')
    assert main(["explore", str(spec), "--engine", "sequential", "--cache", str(tmp_path / "c")]) == 2
    assert "axes.kind: value 'rms' is not allowed: allowed range, l1" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    spec.write_text("[axes\n")
    assert main(["explore", str(spec)]) == 2 and "not valid TOML" in capsys.readouterr().err


def test_points_cross_the_axes_and_chunks_or_k_apply_to_their_kind_only():
    s = tiny(kind=["range", "l1", "topk"], chunks=[1, 4], k=[2])
    labels = [p.label for p in s.points]
    assert len(s.points) == 2 * 2 + 2 + 2         # range x chunks x lanes; l1 and topk x lanes (chunks collapse)
    assert "range s4.1:s4.2 lanes=1 max_count=8 chunks=4" in labels
    assert {p.config.k for p in s.points if p.config.kind == "topk"} == {2}


def test_formats_match_the_accuracy_runs():
    from hwnorm.torch.accuracy import formats
    for b in (4, 6, 8, 16):
        assert formats_of(f"s{b}") == formats(b)
    assert formats_of("s6.2:s6.3") == formats("s6.2:s6.3")


def test_second_run_does_no_work_and_an_interrupted_sweep_resumes(tmp_path):
    spec, cache = tiny(), Cache(tmp_path / "cache")
    first = run(spec, SequentialEngine(), cache, out=tmp_path / "a", quiet=True)
    assert first["tasks"] == 2 and first["ran"] == 2 and first["failed_points"] == 0 and first["points"] == 4
    again = run(spec, SequentialEngine(), cache, out=tmp_path / "b", quiet=True)
    assert again["ran"] == 0 and again["cached"] == 2
    strip = lambda rows: [{k: v for k, v in r.items() if k != "nodes"} for r in rows]  # noqa: E731
    assert strip(again["rows"]) == strip(first["rows"])

    class Interrupted(SequentialEngine):           # a sweep cut off after its first result
        def run(self, tasks, on_result, on_progress=None):
            on_result(tasks[0], execute(tasks[0]))
            raise KeyboardInterrupt
    bigger = tiny(kind=["range", "l1", "linf"])
    with pytest.raises(KeyboardInterrupt):
        run(bigger, Interrupted(), cache, out=tmp_path / "c", quiet=True)
    resumed = run(bigger, SequentialEngine(), cache, out=tmp_path / "c", quiet=True)
    assert resumed["tasks"] == 3 and resumed["ran"] == 0 and resumed["cached"] == 3   # range, l1 before; linf at the cut


def test_a_failed_point_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    real = measure.RUNNERS["numerics"]

    def flaky(p):
        if '"kind": "l1"' in p["config"]:
            raise ArithmeticError("boom in l1")
        return real(p)
    monkeypatch.setitem(measure.RUNNERS, "numerics", flaky)
    s = run(tiny(), SequentialEngine(), Cache(tmp_path / "cache"), out=tmp_path / "o", quiet=True)
    by = {r["point"]: r for r in s["rows"]}
    assert s["failed_tasks"] == 1 and s["failed_points"] == 2
    bad = by["l1 s4.1:s4.2 lanes=1 max_count=8"]
    assert bad["status"] == "failed" and "ArithmeticError: boom in l1" in bad["error"] and "train_max_err" not in bad
    assert by["range s4.1:s4.2 lanes=2 max_count=8"]["status"] == "ok"
    saved = json.loads((tmp_path / "o" / "results.json").read_text())
    assert [r["status"] for r in saved["rows"]].count("failed") == 2
    assert "boom in l1" in (tmp_path / "o" / "results.csv").read_text()
    monkeypatch.setitem(measure.RUNNERS, "numerics", real)       # failures are not cached: the next run retries
    again = run(tiny(), SequentialEngine(), Cache(tmp_path / "cache"), out=tmp_path / "o", quiet=True)
    assert again["ran"] == 1 and again["failed_points"] == 0


def test_pareto_front_and_plots(tmp_path):
    assert front([(1, 5), (2, 3), (3, 4), (4, 1), (2, 6)]) == [0, 1, 3]
    assert front([(1, 0.9), (2, 0.95), (3, 0.94)], (True, False)) == [0, 1]
    rows = [{"point": f"p{i}", "ecp5_luts": a, "train_max_unrounded": e, "accuracy": acc, "fmax_ecp5": f}
            for i, (a, e, acc, f) in enumerate([(100, 0.3, 0.9, 80), (200, 0.1, 0.95, 90), (300, 0.2, 0.93, 70)])]
    paths = write_plots(rows, tmp_path, "ecp5_luts", "train_max_unrounded")
    assert sorted(p.name for p in paths) == ["area_vs_accuracy.png", "area_vs_error.png", "area_vs_fmax.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert write_plots([{"point": "x", "train_max_unrounded": 0.1}], tmp_path / "none", "ecp5_luts", "e") == []


def test_accuracy_tasks_are_shared_across_lanes_and_include_the_float_baseline():
    s = parse({"axes": {"kind": ["l1"], "formats": ["s6"], "lanes": [1, 4]},
               "measure": {"accuracy": {"seeds": [0, 1], "epochs": 1, "train_limit": 64}}})
    tasks, needs = measure.plan(s)
    assert len(tasks) == 4 and needs[0, "accuracy"] == needs[1, "accuracy"]
    assert sorted(t.payload["backend"] for t in tasks.values()) == ["float", "float", "golden", "golden"]
    assert {t.payload["bits"] for t in tasks.values() if t.payload["backend"] == "golden"} == {6}


def test_engine_choice_and_unreachable_address(monkeypatch):
    eng, note = make_engine("sequential")
    assert eng.name == "sequential" and "sequential" in note
    with pytest.raises(EngineError, match="not supported: allowed auto, ray, sequential"):
        make_engine("dask")
    monkeypatch.setattr("hwnorm.explore.engine.ray_available", lambda: False)
    eng, note = make_engine("auto")
    assert eng.name == "sequential" and "ray is not installed" in note
    with pytest.raises(EngineError, match="ray is not installed"):
        make_engine("ray")
    with pytest.raises(EngineError, match="unreachable"):
        check_reachable("127.0.0.1:1", timeout=1)
    with pytest.raises(EngineError, match="not host:port"):
        check_reachable("nowhere", timeout=1)


@pytest.mark.parametrize("name", ["results_sweep.toml", "smallest_core.toml", "smallest_core_small.toml", "numerics_small.toml"])
def test_example_specs_are_valid(name):
    s = load(REPO / "examples" / name)
    assert s.points and s.measure


def test_synth_sweep_runs_on_the_explore_engine(monkeypatch, capsys):
    import hwnorm.reports.synth as S
    from hwnorm import NormConfig
    cfgs = {"a": NormConfig(lanes=1), "b": NormConfig(lanes=2)}
    monkeypatch.setattr(S, "_one", lambda cfg, pnr, ice40: {"gates": cfg.lanes, "pnr": pnr})
    assert S.sweep(cfgs, jobs=1, engine="sequential") == ({"a": {"gates": 1, "pnr": True}, "b": {"gates": 2, "pnr": True}}, {})
    assert "hwnorm synth: sequential" in capsys.readouterr().err

    def fail(cfg, pnr, ice40):
        raise S.SynthError(f"yosys generic failed for lanes={cfg.lanes}")
    monkeypatch.setattr(S, "_one", fail)
    assert S.sweep(cfgs, jobs=1, engine="sequential") == ({}, {"a": "yosys generic failed for lanes=1",
                                                               "b": "yosys generic failed for lanes=2"})


def test_a_task_whose_worker_died_fails_alone(tmp_path, monkeypatch):
    """RayEngine's driver loop with a stand-in for ray: ray.get of one task raises as for a dead worker."""
    from hwnorm.explore import engine as E

    class Ref:
        def __init__(self, task):
            self.task = task

    class FakeRay:
        def cluster_resources(self):
            return {"CPU": 2}

        def wait(self, pending, num_returns, timeout):
            return pending[:1], pending[1:]

        def get(self, ref):
            if '"kind": "l1"' in ref.task.payload["config"]:
                raise RuntimeError("WorkerCrashedError: the worker died unexpectedly")
            return execute(ref.task)

    class Remote:
        def options(self, **kw):
            return self

        def remote(self, task):
            return Ref(task)
    monkeypatch.setattr(E, "_remote_execute", lambda: Remote())
    eng = E.RayEngine.__new__(E.RayEngine)
    eng.ray, eng.strategy, eng.address = FakeRay(), "DEFAULT", None
    eng.describe = lambda: "fake ray"
    s = run(tiny(kind=["range", "l1", "linf"]), eng, Cache(tmp_path / "c"), out=tmp_path / "o", quiet=True)
    assert s["failed_tasks"] == 1 and s["ran"] == 3
    bad = [r for r in s["rows"] if r["status"] == "failed"]
    assert {r["kind"] for r in bad} == {"l1"} and "worker died" in bad[0]["error"]
    assert len(list((tmp_path / "c" / "numerics").glob("*.json"))) == 2      # the finished points are kept


def test_make_install_installs_the_explore_extra():
    import tomllib
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["explore"]
    assert any(d.startswith("ray") for d in extra)
    install = re.search(r"pip install .*-e '\.\[([a-z,]+)\]'", (REPO / "Makefile").read_text())
    assert install and "explore" in install.group(1).split(","), "make install names the explore extra"


def test_accuracy_sweep_runs_on_the_explore_engine(tmp_path, capsys):
    from hwnorm.torch import accuracy as A
    kw = dict(datasets=("digits",), kinds=("l1",), bits=(6,), epochs=1, train_limit=64, quiet=True)
    here = A.run(cache_dir=tmp_path / "a", **kw)
    eng = A.run(cache_dir=tmp_path / "b", engine="sequential", **kw)
    assert "hwnorm accuracy: sequential" in capsys.readouterr().err
    pick = lambda res: [(r["backend"], r["bits"], r["accuracy"]) for r in res["runs"]]  # noqa: E731
    assert pick(eng) == pick(here) and len(pick(here)) == 2
