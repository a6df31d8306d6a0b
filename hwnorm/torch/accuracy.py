"""End-to-end accuracy: a small CNN on scikit-learn's bundled digits, trained with the float modules
for every norm kind, then evaluated with its normalization on the float, golden and rtl backends.

The digits data ships inside scikit-learn (load_digits): nothing is downloaded.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn

from .hook import to_hardware
from .nn import L1BatchNorm2d, RangeBatchNorm2d, TopkBatchNorm2d

NORMS = {
    "l2": nn.BatchNorm2d,
    "range": RangeBatchNorm2d,
    "l1": L1BatchNorm2d,
    "linf": lambda c: TopkBatchNorm2d(c, k=1),
    "topk": lambda c: TopkBatchNorm2d(c, k=10),
}


def load_digits_split(seed: int, test_fraction: float = 0.2):
    """(x_train, y_train, x_test, y_test): 8x8 images scaled to [0, 1], a seeded stratified split."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target, dtype=torch.long)
    rng = np.random.default_rng(seed)
    test = []
    for cls in range(10):
        idx = np.flatnonzero(d.target == cls)
        test.extend(rng.choice(idx, size=int(round(len(idx) * test_fraction)), replace=False))
    mask = np.zeros(len(y), dtype=bool)
    mask[test] = True
    return x[~mask], y[~mask], x[mask], y[mask]


def make_model(kind: str) -> nn.Module:
    """conv -> norm -> ReLU, twice, then max-pool and a linear classifier."""
    norm = NORMS[kind]
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), norm(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), norm(32), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, 10))


def train_model(kind, x, y, epochs: int, seed: int, batch: int = 64, progress=None) -> nn.Module:
    torch.manual_seed(seed)
    model = make_model(kind)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y) - batch + 1, batch):     # full batches: n = batch * H * W per channel
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            if progress is not None:
                progress.update(1)
    return model.eval()


@torch.no_grad()
def predict(model, x, batch: int = 120, progress=None):
    out = []
    for i in range(0, len(x), batch):
        out.append(model(x[i:i + batch]).argmax(dim=1))
        if progress is not None:
            progress.update(1)
    return torch.cat(out)


def evaluate(model, x_cal, x, y, backend: str, fmt: str, float_pred, progress=None) -> dict:
    """Accuracy of `model` with its normalization layers on `backend` at `fmt`."""
    m = copy.deepcopy(model).eval()
    with to_hardware(m, backend=backend, fmt=fmt) as hw:
        hw.prepare()                          # Verilator builds (cached) stay out of the timing
        hw.calibrate([x_cal])
        t0 = time.perf_counter()
        pred = predict(m, x, progress=progress)
        wall = time.perf_counter() - t0
        cycles = getattr(hw.backend, "cycles", 0)
        return dict(backend=backend, fmt=fmt, accuracy=float((pred == y).float().mean()),
                    agreement=float((pred == float_pred).float().mean()), saturated=hw.saturated,
                    values=hw.values, wall_s=wall, values_per_s=hw.values / wall if wall else 0.0, cycles=int(cycles))


def run(kinds=("l2", "range", "l1", "linf", "topk"), backends=("float", "golden", "rtl"), fmts=("s8", "s16"),
        epochs: int = 12, seed: int = 0, quiet: bool = False) -> dict:
    """Train every kind, evaluate it on every backend and format. Deterministic for a given seed."""
    from tqdm import tqdm

    from ..backends.base import BACKENDS
    from .hook import FORMATS
    for name, values, allowed in (("kinds", kinds, NORMS), ("backends", backends, BACKENDS), ("fmts", fmts, FORMATS)):
        bad = [v for v in values if v not in allowed]
        if bad:
            raise ValueError(f"{name}={bad} not supported: allowed {', '.join(allowed)}")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x_tr, y_tr, x_te, y_te = load_digits_split(seed)
    steps = epochs * (len(y_tr) // 64)
    t_start = time.perf_counter()
    results = {"seed": seed, "epochs": epochs, "train_size": len(y_tr), "test_size": len(y_te), "kinds": {}}
    for kind in kinds:
        with tqdm(total=steps, desc=f"train {kind}", disable=quiet, leave=False) as bar:
            model = train_model(kind, x_tr, y_tr, epochs, seed, progress=bar)
        float_pred = predict(model, x_te)
        row = {"float_accuracy": float((float_pred == y_te).float().mean()), "evals": []}
        combos = [(b, f) for b in backends for f in (fmts if b != "float" else ("-",))]
        for backend, fmt in combos:
            with tqdm(total=-(-len(y_te) // 120), desc=f"{kind} on {backend} {fmt}", disable=quiet, leave=False) as bar:
                row["evals"].append(evaluate(model, x_tr[:256], x_te, y_te, backend, fmt if fmt != "-" else "s8",
                                             float_pred, progress=bar) | ({"fmt": "-"} if fmt == "-" else {}))
        results["kinds"][kind] = row
    results["wall_s"] = time.perf_counter() - t_start
    return results


def format_table(results: dict) -> str:
    lines = [f"digits: {results['train_size']} train / {results['test_size']} test images, "
             f"{results['epochs']} epochs, seed {results['seed']}",
             f"{'kind':6s} {'backend':7s} {'fmt':4s} {'accuracy':>8s} {'vs float':>9s} {'agree':>6s} "
             f"{'saturated':>9s} {'values':>8s} {'wall s':>7s} {'values/s':>10s}"]
    for kind, row in results["kinds"].items():
        fa = row["float_accuracy"]
        for e in row["evals"]:
            lines.append(f"{kind:6s} {e['backend']:7s} {e['fmt']:4s} {100 * e['accuracy']:7.2f}% "
                         f"{100 * (e['accuracy'] - fa):+8.2f}pp {100 * e['agreement']:5.1f}% {e['saturated']:9d} "
                         f"{e['values']:8d} {e['wall_s']:7.2f} {e['values_per_s']:10.0f}")
    lines.append(f"total wall time {results['wall_s']:.1f} s")
    return "\n".join(lines)
