"""The sweep driver: plan the tasks, take what the cache has, run the rest on an engine, write each result to the
cache as it arrives (driver only, atomically), then the table (CSV/JSON) and the plots."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .cache import BUILD_ROOT, Cache
from .measure import plan
from .plots import write_plots
from .table import rows, write

ORDER = {"synth": 0, "accuracy": 1, "numerics": 2}      # longest first: better packing on the workers


def out_dir_of(spec, out: str | Path | None) -> Path:
    return Path(out) if out else BUILD_ROOT / "explore" / spec.name


def run(spec, engine, cache: Cache | None = None, out: str | Path | None = None, force: bool = False,
        quiet: bool = False, plots: bool = True) -> dict:
    """Run a sweep; returns the summary (counts, wall time, engine, paths) that the results JSON also holds."""
    from tqdm import tqdm
    cache = cache or Cache()
    tasks, needs = plan(spec)
    outcomes, todo = {}, []
    for key, t in tasks.items():
        hit = None if force else cache.get(t.measurement, key)
        if hit:
            outcomes[key] = {**hit, "cached": True}
        else:
            todo.append(t)
    todo.sort(key=lambda t: ORDER[t.measurement])
    state = {"done": 0, "failed": 0, "running": 0}
    bar = tqdm(total=len(todo), desc=f"explore {spec.name}", unit="task", disable=True if quiet else None)

    def show():
        text = f"done {state['done']}, running {state['running']}, failed {state['failed']}"
        if text != state.get("shown"):                  # redraw on change only (quiet in a log file)
            state["shown"] = text
            bar.set_postfix_str(text)

    def on_progress(running: int, label: str | None = None):
        state["running"] = running
        show()

    def on_result(task, outcome):
        outcome["cached"] = False
        outcomes[task.key] = outcome
        cache.put(outcome)
        state["done" if outcome.get("ok") else "failed"] += 1
        state["running"] = max(0, state["running"] - 1)
        bar.update(1)
        show()

    t0 = time.perf_counter()
    try:
        engine.run(todo, on_result, on_progress)
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    table = rows(spec, tasks, needs, outcomes)
    out_dir = out_dir_of(spec, out)
    area, error = spec.output.get("area", "ecp5_luts"), spec.output.get("error", "train_max_unrounded")
    summary = {"spec": spec.name, "engine": engine.describe(), "points": len(spec.points), "tasks": len(tasks),
               "ran": len(todo), "cached": len(tasks) - len(todo), "failed_tasks": state["failed"],
               "failed_points": sum(r["status"] == "failed" for r in table), "wall_s": round(wall, 3),
               "task_s": round(sum(o.get("seconds", 0) for o in outcomes.values() if not o.get("cached")), 3)}
    summary.update(target(table, area, spec.output.get("target_pp")))
    csv_path, json_path = write(table, summary, out_dir)
    images = write_plots(table, out_dir, area, error) if plots else []
    summary.update(csv=str(csv_path), json=str(json_path), plots=[str(p) for p in images], rows=table)
    return summary


def target(table: list[dict], area: str, pp) -> dict:
    """With output.target_pp: mark each row within the target (accuracy at most pp below float) and name the smallest."""
    if pp is None:
        return {}
    for r in table:
        d = r.get("accuracy_delta_pp")
        r["within_target"] = None if d is None else d >= -pp
    ok = [r for r in table if r["within_target"] and r.get(area) is not None]
    best = min(ok, key=lambda r: r[area]) if ok else None
    return {"target_pp": pp, "smallest_within_target": best["point"] if best else None,
            "smallest_area": best[area] if best else None}


def scaling(spec, workers=(1, 2), quiet: bool = True) -> list[dict]:
    """Points per minute of the whole sweep, uncached, on a local Ray with each worker count (and sequentially),
    all in one run; Ray's start-up is timed apart from the sweep."""
    from .engine import RayEngine, SequentialEngine
    import ray
    out = []
    for w in ["sequential", *workers]:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            eng = SequentialEngine() if w == "sequential" else RayEngine(num_cpus=w)
            start = time.perf_counter() - t0
            try:
                s = run(spec, eng, Cache(Path(tmp) / "cache"), out=Path(tmp) / "out", quiet=quiet, plots=False)
                noop = None if w == "sequential" else noop_overhead(ray)
            finally:
                eng.close()
            if w != "sequential":
                ray.shutdown()
        out.append({"workers": w, "points": s["points"], "tasks": s["ran"], "wall_s": s["wall_s"], "start_s": round(start, 2),
                    "task_s": s["task_s"], "points_per_min": round(60 * s["points"] / s["wall_s"], 1),
                    "failed": s["failed_tasks"], "noop_ms_per_task": noop})
    return out


def noop_overhead(ray, n: int = 300) -> float:
    """Ray's cost per task in ms of driver wall time: n empty tasks submitted at once, after one warm-up round."""
    f = ray.remote(num_cpus=1)(lambda: None)
    ray.get([f.remote() for _ in range(10)])
    t0 = time.perf_counter()
    ray.get([f.remote() for _ in range(n)])
    return round(1000 * (time.perf_counter() - t0) / n, 2)
