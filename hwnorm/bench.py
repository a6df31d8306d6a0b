"""`hwnorm bench`: values per second through the golden model (beside torch's own nn.BatchNorm2d), the rtl
backend, the cocotb path of `make sim` and the raw Verilated model (C++ only), on the same data in one run,
with their ratios."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from .config import KINDS, NAMED_FORMATS, NormConfig

FMTS = NAMED_FORMATS


def _best_rate(fn, values: int, repeat: int, min_s: float = 0.0) -> float:
    """values / the fastest of at least `repeat` calls (more until min_s seconds have passed): the machine is shared."""
    best, spent, calls = float("inf"), 0.0, 0
    while calls < repeat or spent < min_s:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent, calls = min(best, dt), spent + dt, calls + 1
    return values / best


def check_args(kind, fmt, lanes, channels, count, seed, rtl=True, cocotb=True):
    """Refuse bad bench parameters naming the parameter, its value and what is allowed."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not supported: allowed {', '.join(KINDS)}")
    if fmt not in FMTS:
        raise ValueError(f"fmt={fmt!r} is not supported: allowed {', '.join(FMTS)}")
    for name, v, lo, hi in (("channels", channels, 1, 4096), ("count", count, 1, 1 << 20), ("seed", seed, 0, 2 ** 32 - 1)):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"{name}={v!r} is out of range: allowed an integer in [{lo}, {hi}]")
    NormConfig(kind=kind, lanes=lanes, max_count=count, **FMTS[fmt])       # lanes: NormConfig names what is allowed
    for name, v in (("rtl", rtl), ("cocotb", cocotb)):
        if not isinstance(v, bool):
            raise ValueError(f"{name}={v!r} is not a bool: allowed True or False")


def bench_data(cfg: NormConfig, channels: int, count: int, seed: int):
    """Random input codes (channels, count) over the whole input format, gamma > 0 and small beta codes."""
    rng = np.random.default_rng(seed)
    fi = cfg.in_fmt
    x = rng.integers(fi.min_int, fi.max_int + 1, size=(channels, count))
    g = rng.integers(1, cfg.gamma_fmt.max_int + 1, size=channels)
    b = rng.integers(cfg.beta_fmt.min_int, cfg.beta_fmt.max_int + 1, size=channels) // 4
    return x, g, b


def torch_bn_rate(cfg: NormConfig, x: np.ndarray) -> dict:
    """torch's own nn.BatchNorm2d in training mode (batch statistics, running-statistics update, no autograd) on
    the same values as float32, one (1, C, count, 1) tensor: on one thread like the golden model (the ratio's
    base), and on torch's default threads (on a loaded machine waking a second thread can cost a time slice)."""
    import torch
    t = torch.from_numpy((x * cfg.in_fmt.lsb).astype(np.float32)).reshape(1, x.shape[0], x.shape[1], 1)
    bn = torch.nn.BatchNorm2d(x.shape[0]).train()
    threads = torch.get_num_threads()
    out = {"torch_threads": threads}
    try:
        for key, n in (("torch_bn_values_per_s", 1), ("torch_bn_threads_values_per_s", threads)):
            torch.set_num_threads(n)
            with torch.no_grad():
                out[key] = _best_rate(lambda: bn(t), x.size, 5, min_s=0.3)
    finally:
        torch.set_num_threads(threads)
    return out


def golden_rates(fmt: str, lanes: int, x, seed: int) -> dict:
    """The golden model's training-mode values/s per kind (fast path) on channels like x, and the exact path's for range."""
    from .backends.base import GoldenBackend
    fast, exact, out = GoldenBackend(), GoldenBackend(exact=True), {}
    for kind in KINDS:
        cfg = NormConfig(kind=kind, lanes=lanes, max_count=x.shape[1], **FMTS[fmt])
        xk, g, b = bench_data(cfg, x.shape[0], x.shape[1], seed)
        out[kind] = _best_rate(lambda: fast.train_codes(cfg, xk, g, b), xk.size, 5, min_s=0.3)
    cfg = NormConfig(kind="range", lanes=lanes, max_count=x.shape[1], **FMTS[fmt])
    xk, g, b = bench_data(cfg, x.shape[0], x.shape[1], seed)
    return {"golden_kind_values_per_s": out,
            "golden_exact_values_per_s": _best_rate(lambda: exact.train_codes(cfg, xk, g, b), xk.size, 2)}


def run(kind: str = "range", fmt: str = "s8", lanes: int = 1, channels: int = 8, count: int = 4096,
        seed: int = 0, cocotb: bool = True, quiet: bool = False, rtl: bool = True) -> dict:
    """Every rate on the same data in one run (golden model per kind, torch's BN, rtl, raw Verilator, cocotb)."""
    from tqdm import tqdm

    from .backends.base import GoldenBackend
    check_args(kind, fmt, lanes, channels, count, seed, rtl, cocotb)
    cfg = NormConfig(kind=kind, lanes=lanes, max_count=count, **FMTS[fmt])
    x, g, b = bench_data(cfg, channels, count, seed)
    values = x.size
    out = {"config": cfg.describe(), "kind": kind, "fmt": fmt, "channels": channels, "count": count, "values": values}
    steps = 3 + (2 if rtl else 0) + (1 if rtl and cocotb else 0)
    with tqdm(total=steps, desc="bench", disable=True if quiet else None, leave=False) as bar:
        out.update(torch_bn_rate(cfg, x))            # first: torch loaded changes how fast NumPy gets fresh memory
        bar.update(1)
        golden = GoldenBackend()
        out["golden_values_per_s"] = _best_rate(lambda: golden.train_codes(cfg, x, g, b), values, 5, min_s=0.5)
        out["golden_vs_torch_bn"] = out["golden_values_per_s"] / out["torch_bn_values_per_s"]
        bar.update(1)
        out.update(golden_rates(fmt, lanes, x, seed))
        bar.update(1)
        if rtl:
            out.update(_rtl_rates(cfg, x, g, b, golden, bar))
            if cocotb:
                out.update(_cocotb_rate(cfg, x, g, b))
                out["rtl_vs_cocotb"] = out["rtl_values_per_s"] / out["cocotb_values_per_s"]
                bar.update(1)
    return out


def _rtl_rates(cfg, x, g, b, golden, bar) -> dict:
    """The in-process rtl backend (checked bit for bit against the golden model first) and the raw Verilated model."""
    from .backends.base import RtlBackend
    rtl = RtlBackend()
    rtl.model(cfg)                                       # build and load outside the timing
    ref = golden.train_codes(cfg, x, g, b)[0]
    assert np.array_equal(rtl.train_codes(cfg, x, g, b)[0], ref), "rtl and golden differ"
    out = {"rtl_values_per_s": _best_rate(lambda: rtl.train_codes(cfg, x, g, b), x.size, 5)}
    bar.update(1)
    model = rtl.model(cfg)                               # the same Verilated instance, driven from C++ alone
    out["raw_values_per_s"], out["raw_cycles_per_s"] = max(model.bench(x.shape[1], x.shape[0]) for _ in range(5))
    out["rtl_vs_raw"] = out["raw_values_per_s"] / out["rtl_values_per_s"]
    bar.update(1)
    return out


def _cocotb_rate(cfg, x, g, b) -> dict:
    from .verify.runner import run as sim_run
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.npz"
        np.savez(path, x=x, gamma=g, beta=b)
        r = sim_run(cfg, module="bench_norm", env={"HWNORM_BENCH_DATA": str(path)})
    if r.failed or r.mismatches or not r.records:
        raise RuntimeError(f"the cocotb benchmark failed: {r.records}")
    rec = r.records[0]
    return {"cocotb_values_per_s": rec["values_per_s"], "cocotb_cycles_per_s": rec["cycles_per_s"]}


def _golden_lines(r: dict) -> list[str]:
    """The golden model's lines; torch's BN and the per-kind rates only if measured (older bench.json files lack them)."""
    lines = [f"  golden model (NumPy int64) {r['golden_values_per_s']:14,.0f} values/s"]
    if "torch_bn_values_per_s" in r:
        lines += [f"  torch nn.BatchNorm2d       {r['torch_bn_values_per_s']:14,.0f} values/s  "
                  f"(training mode, float32, same values, 1 thread like the golden model; "
                  f"{r['torch_bn_threads_values_per_s']:,.0f} values/s on {r['torch_threads']} threads)",
                  f"  golden / torch BN (1 thread) = {r['golden_vs_torch_bn']:.2f}x"]
    if "golden_kind_values_per_s" in r:
        rates = r["golden_kind_values_per_s"]
        lines += [f"  golden model per kind ({r['fmt']}, training): " +
                  ", ".join(f"{k} {rates[k] / 1e6:.1f}M" for k in KINDS if k in rates) + " values/s",
                  f"  golden model, exact path (Python integers, range): {r['golden_exact_values_per_s']:,.0f} values/s"]
    return lines


def format_report(r: dict) -> str:
    lines = [f"hwnorm bench: {r['config']}, {r['channels']} channels x {r['count']} values (training mode)"]
    lines += _golden_lines(r)
    if "rtl_values_per_s" in r:
        lines += [f"  rtl backend (in-process)   {r['rtl_values_per_s']:14,.0f} values/s",
                  f"  raw Verilator (C++ only)   {r['raw_values_per_s']:14,.0f} values/s  "
                  f"({r['raw_cycles_per_s']:,.0f} cycles/s)"]
    if "cocotb_values_per_s" in r:
        lines.append(f"  cocotb path (make sim)     {r['cocotb_values_per_s']:14,.0f} values/s  "
                     f"({r['cocotb_cycles_per_s']:,.0f} cycles/s)")
    if "rtl_vs_raw" in r:
        lines.append(f"  raw / rtl backend = {r['rtl_vs_raw']:.2f}x (target <= 2)")
    if "rtl_vs_cocotb" in r:
        lines.append(f"  rtl backend / cocotb = {r['rtl_vs_cocotb']:.0f}x (target >= 50)")
    return "\n".join(lines)
