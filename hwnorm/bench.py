"""`hwnorm bench`: values per second through the golden model, the rtl backend, the cocotb path of
`make sim` and the raw Verilated model (C++ only), on the same data in one run, with their ratios."""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .config import NAMED_FORMATS, NormConfig

REPO = Path(__file__).resolve().parent.parent


def _best_rate(fn, values: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return values / best


def run(kind: str = "range", fmt: str = "s8", lanes: int = 1, channels: int = 8, count: int = 4096,
        seed: int = 0, cocotb: bool = True, quiet: bool = False) -> dict:
    from tqdm import tqdm

    from .backends.base import GoldenBackend, RtlBackend
    fmts = NAMED_FORMATS[fmt]
    cfg = NormConfig(kind=kind, lanes=lanes, max_count=count, **fmts)
    rng = np.random.default_rng(seed)
    fi = cfg.in_fmt
    x = rng.integers(fi.min_int, fi.max_int + 1, size=(channels, count))
    g = rng.integers(1, cfg.gamma_fmt.max_int + 1, size=channels)
    b = rng.integers(cfg.beta_fmt.min_int, cfg.beta_fmt.max_int + 1, size=channels) // 4
    values = x.size
    out = {"config": cfg.describe(), "channels": channels, "count": count, "values": values}
    steps = 4 if cocotb else 3
    with tqdm(total=steps, desc="bench", disable=True if quiet else None, leave=False) as bar:
        golden = GoldenBackend()
        out["golden_values_per_s"] = _best_rate(lambda: golden.train_codes(cfg, x, g, b), values, 2)
        bar.update(1)
        rtl = RtlBackend()
        rtl.model(cfg)                                   # build and load outside the timing
        ref = golden.train_codes(cfg, x, g, b)[0]
        assert np.array_equal(rtl.train_codes(cfg, x, g, b)[0], ref), "rtl and golden differ"
        out["rtl_values_per_s"] = _best_rate(lambda: rtl.train_codes(cfg, x, g, b), values, 5)
        bar.update(1)
        model = rtl.model(cfg)                           # the same Verilated instance, driven from C++ alone
        out["raw_values_per_s"], out["raw_cycles_per_s"] = max(model.bench(count, channels) for _ in range(5))
        bar.update(1)
        if cocotb:
            out.update(_cocotb_rate(cfg, x, g, b))
            bar.update(1)
    out["rtl_vs_raw"] = out["raw_values_per_s"] / out["rtl_values_per_s"]
    if cocotb:
        out["rtl_vs_cocotb"] = out["rtl_values_per_s"] / out["cocotb_values_per_s"]
    return out


def _cocotb_rate(cfg, x, g, b) -> dict:
    if not (REPO / "sim" / "runner.py").exists():
        raise RuntimeError("the cocotb rate needs a source checkout (sim/ beside hwnorm/); pass --no-cocotb")
    sys.path.insert(0, str(REPO))
    from sim.runner import run as sim_run
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.npz"
        np.savez(path, x=x, gamma=g, beta=b)
        r = sim_run(cfg, module="bench_norm", env={"HWNORM_BENCH_DATA": str(path)})
    if r.failed or r.mismatches or not r.records:
        raise RuntimeError(f"the cocotb benchmark failed: {r.records}")
    rec = r.records[0]
    return {"cocotb_values_per_s": rec["values_per_s"], "cocotb_cycles_per_s": rec["cycles_per_s"]}


def format_report(r: dict) -> str:
    lines = [f"hwnorm bench: {r['config']}, {r['channels']} channels x {r['count']} values (training mode)",
             f"  golden model (NumPy)       {r['golden_values_per_s']:14,.0f} values/s",
             f"  rtl backend (in-process)   {r['rtl_values_per_s']:14,.0f} values/s",
             f"  raw Verilator (C++ only)   {r['raw_values_per_s']:14,.0f} values/s  "
             f"({r['raw_cycles_per_s']:,.0f} cycles/s)"]
    if "cocotb_values_per_s" in r:
        lines.append(f"  cocotb path (make sim)     {r['cocotb_values_per_s']:14,.0f} values/s  "
                     f"({r['cocotb_cycles_per_s']:,.0f} cycles/s)")
    lines.append(f"  raw / rtl backend = {r['rtl_vs_raw']:.2f}x (target <= 2)")
    if "rtl_vs_cocotb" in r:
        lines.append(f"  rtl backend / cocotb = {r['rtl_vs_cocotb']:.0f}x (target >= 50)")
    return "\n".join(lines)
