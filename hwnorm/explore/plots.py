"""The sweep's plots (matplotlib, Agg): area against error, area against accuracy and area against Fmax, each
point labelled and the Pareto front highlighted; a plot whose figures the sweep did not measure is skipped."""
from __future__ import annotations

from pathlib import Path

from .pareto import front

PLOTS = (("error", "area_vs_error.png", True), ("accuracy", "area_vs_accuracy.png", False),
         ("fmax_ecp5", "area_vs_fmax.png", False))


def _scatter(rows, x, y, y_min: bool, path: Path, title: str, ylabel: str) -> Path | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts = [(r[x], r[y], r["point"]) for r in rows if r.get(x) is not None and r.get(y) is not None]
    if not pts:
        return None
    fr = front([(a, b) for a, b, _ in pts], (True, y_min))
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], c="0.6", s=22, label="points")
    fp = [pts[i] for i in fr]
    ax.plot([p[0] for p in fp], [p[1] for p in fp], "-o", c="tab:red", ms=6, label="Pareto front")
    for i, (a, b, label) in enumerate(pts):
        ax.annotate(label, (a, b), fontsize=6, xytext=(3, 3), textcoords="offset points",
                    color="tab:red" if i in fr else "0.35")
    ax.set_xlabel(f"area: {x}")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_plots(rows: list[dict], out_dir: Path, area: str, error: str) -> list[Path]:
    """The plots whose figures are present; area and error name the table's columns to use."""
    out = []
    for what, name, y_min in PLOTS:
        col = error if what == "error" else what
        label = {"error": f"{error} (output LSBs, lower is better)", "accuracy": "test accuracy (higher is better)",
                 "fmax_ecp5": "ECP5 Fmax, MHz (higher is better)"}[what]
        p = _scatter(rows, area, col, y_min, out_dir / name, f"{col} against {area} (Pareto front in red)", label)
        if p:
            out.append(p)
    return out
