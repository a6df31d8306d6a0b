"""The results table: one row per point (axis values, configuration hash, each measurement's figures, status,
errors, nodes), written as CSV and JSON by the driver, atomically."""
from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

from .cache import write_atomic


def _merge(outcomes: list[dict], measurement: str) -> dict:
    """One point's figures from its task outcomes (accuracy: mean over seeds, float baseline, delta in pp)."""
    if measurement != "accuracy":
        return dict(sorted(outcomes[0]["result"].items()))
    hw = [o["result"]["accuracy"] for o in outcomes if o["result_backend"] == "golden"]
    fl = [o["result"]["accuracy"] for o in outcomes if o["result_backend"] == "float"]
    if any(a is None for a in hw):
        acc = None
    else:
        acc = statistics.fmean(hw)
    base = statistics.fmean(fl) if fl and all(a is not None for a in fl) else None
    return {"accuracy": acc, "accuracy_float": base, "accuracy_seeds": len(hw),
            "accuracy_delta_pp": None if acc is None or base is None else round(100 * (acc - base), 3)}


def rows(spec, tasks: dict, needs: dict, outcomes: dict) -> list[dict]:
    """The table's rows; a point with any failed task has status 'failed' and its errors, not its figures."""
    out = []
    for i, p in enumerate(spec.points):
        row = {"point": p.label, "config_hash": p.config.hash, **dict(p.values)}
        errors, nodes = [], set()
        for m in spec.measure:
            got = []
            for key in needs[i, m]:
                o = outcomes.get(key)
                if o is None:
                    errors.append(f"{m}: not run")
                elif not o.get("ok"):
                    errors.append(f"{m} ({tasks[key].label}): {o['error']}")
                else:
                    got.append({**o, "result_backend": tasks[key].payload.get("backend")})
                    nodes.add(o.get("node"))
            if len(got) == len(needs[i, m]):
                row.update(_merge(got, m))
        row["status"] = "failed" if errors else "ok"
        row["error"] = "; ".join(errors) or None
        row["nodes"] = " ".join(sorted(n for n in nodes if n)) or None
        out.append(row)
    return out


def columns(table: list[dict]) -> list[str]:
    cols = []
    for r in table:
        for k in r:
            if k not in cols:
                cols.append(k)
    return cols


def write(table: list[dict], meta: dict, out_dir: Path) -> tuple[Path, Path]:
    """results.csv and results.json (rows plus the sweep's metadata) in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns(table), lineterminator="\n")
    w.writeheader()
    w.writerows(table)
    csv_path, json_path = out_dir / "results.csv", out_dir / "results.json"
    write_atomic(csv_path, buf.getvalue())
    write_atomic(json_path, json.dumps({**meta, "rows": table}, indent=1, sort_keys=True, default=str) + "\n")
    return csv_path, json_path
