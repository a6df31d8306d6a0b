"""Pareto fronts: the points no other point beats on both objectives."""
from __future__ import annotations


def front(points: list[tuple[float, float]], minimize=(True, True)) -> list[int]:
    """Indices of the non-dominated points (each objective minimized or maximized as `minimize` says), by x."""
    sx, sy = (1 if m else -1 for m in minimize)
    keyed = sorted(range(len(points)), key=lambda i: (sx * points[i][0], sy * points[i][1]))
    out, best = [], None
    for i in keyed:
        y = sy * points[i][1]
        if best is None or y < best:
            out.append(i)
            best = y
    return out
