"""SessionReport: what to_hardware routed, per layer, as a table that prints well and as a dict for programs."""
from __future__ import annotations

COLUMNS = (("layer", "layer", "s"), ("kind", "kind", "s"), ("backend", "backend", "s"), ("format", "format", "s"),
           ("calls", "calls", "d"), ("values", "values", "d"), ("saturated_in", "sat in", "d"),
           ("saturated_out", "sat out", "d"), ("clamped", "gamma/beta clamped", "d"), ("seconds", "seconds", ".3f"),
           ("backward_calls", "bwd calls", "d"), ("backward_values", "bwd values", "d"), ("saturated_dy", "sat dy", "d"),
           ("saturated_dx", "sat dx", "d"),           # the backward's columns: only in a backward=True session's rows
           ("variant", "variant", "s"), ("host_steps", "host steps", "d"))   # only with a batch-norm variant routed


class SessionReport:
    """Rows of {layer, kind, backend, format, calls, values, saturated_in, saturated_out, clamped, seconds}:
    saturated_in counts input values clipped, saturated_out outputs clamped, clamped the gamma/beta/tau entries
    clipped to their formats (per call); a backward=True session adds backward_calls, backward_values, saturated_dy
    (dL/dy codes clipped to grad_fmt) and saturated_dx (dL/dx codes clamped to dx_fmt); a session with a batch-norm
    variant routed adds variant (dsbn, mbn, cbn, bkn, mixture, proxy, iebn: the row is its base layer; "-" otherwise)
    and host_steps (its host steps: a domain picked, a memory pooled or compensated, a Kalman update, a mixture fit and
    weighted sum, a proxy or a per-instance gate)."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def as_dict(self) -> dict:
        """{layer name: {every other column}}."""
        return {r["layer"]: {k: v for k, v in r.items() if k != "layer"} for r in self.rows}

    def __getitem__(self, layer: str) -> dict:
        return self.as_dict()[layer]

    def items(self):
        return self.as_dict().items()

    def __len__(self):
        return len(self.rows)

    def __str__(self) -> str:
        cols = [c for c in COLUMNS if not self.rows or c[0] in self.rows[0]]
        cells = [[h for _, h, _ in cols]] + [[format(r[k], f) if f != "s" else str(r[k]) or "(model)"
                                              for k, _, f in cols] for r in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
        lines = ["  ".join(c.ljust(w) if f == "s" else c.rjust(w) for c, w, (_, _, f) in zip(row, widths, cols))
                 for row in cells]
        return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])

    __repr__ = __str__
