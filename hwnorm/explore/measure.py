"""The measurements of one point as self-contained tasks (picklable, run in a Ray worker or in-process):
synthesis/P&R (hwnorm.reports.synth), numeric error (hwnorm.numerics), accuracy runs (hwnorm.torch.accuracy)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from ..cache import source_hash
from ..config import NormConfig
from .engine import Task
from .spec import Point, Spec, accuracy_bits

PACKAGE = Path(__file__).resolve().parents[1]
VERSION = 1                      # bump when a measurement's meaning changes: invalidates every cached point
SOURCES = {"numerics": ("golden/bitexact.py", "golden/reference.py", "constants.py", "config.py", "fixed.py", "numerics.py"),
           "synth": ("reports/synth.py", "emit.py", "config.py", "constants.py"),
           "accuracy": ("golden/bitexact.py", "constants.py", "config.py", "fixed.py", "torch/hook.py", "torch/accuracy.py",
                        "torch/nn.py", "backends/base.py")}
DIRS = {"synth": ("hdl",)}


def fingerprint(measurement: str) -> str:
    """A hash of the sources that define a measurement's numbers, so a cached point is redone after they change."""
    return source_hash(SOURCES[measurement], DIRS.get(measurement, ()), salt=f"{VERSION}")


def _key(measurement: str, what: dict) -> str:
    text = json.dumps({"m": measurement, "fp": fingerprint(measurement), **what}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tasks_of(point: Point, measurement: str, params: dict) -> list[Task]:
    """The tasks one point needs for one measurement (shared between points where the result cannot differ)."""
    cfg, cpus = point.config, params.get("cpus", 1)
    if measurement == "synth":
        what = {"config": cfg.to_json(), "pnr": params["pnr"]}
        return [Task("synth", _key("synth", what), {**what, "label": point.label}, cpus, RUNNERS["synth"])]
    if measurement == "numerics":                       # the golden model does not depend on lanes
        what = {"config": replace(cfg, lanes=1).to_json(), "seed": params["seed"], "trials": params["trials"]}
        return [Task("numerics", _key("numerics", what), {**what, "label": point.label}, cpus, RUNNERS["numerics"])]
    out = []
    for seed in params["seeds"]:
        for backend in ("golden", "float"):
            what = {"dataset": params["dataset"], "kind": cfg.kind, "backend": backend, "seed": seed,
                    "bits": accuracy_bits(point.get("formats", "s8")) if backend == "golden" else None,
                    "epochs": params["epochs"], "train_limit": params["train_limit"]}
            label = f"{what['dataset']} {cfg.kind} {backend} {what['bits'] or ''} seed {seed}".replace("  ", " ")
            out.append(Task("accuracy", _key("accuracy", what), {**what, "label": label}, cpus, RUNNERS["accuracy"]))
    return out


def plan(spec: Spec) -> tuple[dict, dict]:
    """(tasks by key, task keys by (point index, measurement)): every task once, however many points share it."""
    tasks, needs = {}, {}
    for i, p in enumerate(spec.points):
        for m, params in spec.measure.items():
            ts = tasks_of(p, m, params)
            needs[i, m] = [t.key for t in ts]
            for t in ts:
                tasks.setdefault(t.key, t)
    return tasks, needs


# ---- running one task (in a worker) ----

def _synth(p: dict) -> dict:
    from ..reports import synth as S
    cfg = NormConfig.from_json(p["config"])
    row = S.synth(cfg, pnr=p["pnr"])
    keep = ("gates", "gate_ffs", "transistors", "ecp5_luts", "ecp5_ccu2c", "ecp5_ffs", "ecp5_mult18", "ecp5_brams",
            "ecp5_luts_nodsp", "ecp5_ccu2c_nodsp", "ice40_luts", "ice40_luts_nodsp", "ice40_dsps", "fmax_ecp5")
    out = {k: row.get(k) for k in keep}
    out["tool_s"] = round(sum(row.get("seconds", {}).values()), 1)
    return out


def _numerics(p: dict) -> dict:
    from ..numerics import measure, measure_infer
    cfg = NormConfig.from_json(p["config"])
    out = {}
    for mode, fn in (("train", measure), ("infer", measure_infer)):
        e = fn(cfg, seed=p["seed"], trials=p["trials"])
        out.update({f"{mode}_max_err": e.max_err, f"{mode}_mean_err": e.mean_err, f"{mode}_max_unrounded": e.max_unrounded})
    return out


def _accuracy(p: dict) -> dict:
    from ..torch.accuracy import Job, run_job
    job = Job(p["dataset"], p["kind"], p["backend"], p["bits"], None, p["seed"])
    row = run_job(job, epochs=p["epochs"], train_limit=p["train_limit"])
    return {"accuracy": row["accuracy"], "diverged": row["diverged"], "train_s": round(row["wall_s"], 2)}


RUNNERS = {"synth": _synth, "numerics": _numerics, "accuracy": _accuracy}
