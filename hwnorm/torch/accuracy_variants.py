"""The batch-norm variants' experiment (issue 23 item 4, `hwnorm accuracy --variants`): micro-batches on the golden
model at 8 bits, each variant against its base normalization.

Every run trains accuracy.py's conv net (digits: conv2d x 2; MNIST-1D: conv1d x 3; the same widths) from scratch with
every normalization layer routed to the golden model at `bits` (to_hardware, each training batch scaled by its own
largest |x|, the straight-through float gradient), Adam (lr 1e-3) for `steps` micro-batches of `batch` samples, and
evaluates the test set through the inference path (the input range calibrated on 512 training samples). Rows:
- bn: the batch-norm of the kind (the baseline of cbn, mbn, bkn, iebn, mixture);
- cbn (window 4, the layer before bound), mbn (memory 4; no double forward: it is one more forward per step),
  bkn (the chain of the net's BKN layers bound in order), iebn, mixture (K = 3; kinds l2 and l1 only);
- ln: the grouped norm of the kind over (C, L) per sample (GroupNorm with one group), then ReLU: the base of
- proxy: the same grouped norm followed by Proxy Normalization (its activation included);
- two-domain split (`domains=True`): the training and test sets doubled by a second domain (digits: 1 - x, the inverted
  image; MNIST-1D: 0.5 - 2 x, scaled and shifted), every micro-batch of one domain (alternating); bn_2dom trains one
  batch-norm on both, dsbn one per domain (the domain named per batch); the test accuracy over both domains.
Results cached per run under build/accuracy_variants/ (atomic JSON), so an interrupted sweep resumes.
"""
from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import nn as A_hnn
from ..cache import BUILD_ROOT, source_hash
from . import accuracy as A
from .hook import HardwareWarning, to_hardware
from .variants import BASES, make_base
from .variants_extra import MIXTURE_KINDS, PROXY_KINDS, bind_chain

VARIANT_ROWS = ("bn", "cbn", "mbn", "bkn", "iebn", "mixture", "ln", "proxy", "bn_2dom", "dsbn")
DOMAIN_ROWS = ("bn_2dom", "dsbn")
BATCHES = (2, 4)
SEEDS = (0, 1, 2)
DATASETS = ("digits", "mnist1d")
KINDS = tuple(BASES)                        # every batch-norm kind (the mixture: l2, l1; ln / proxy: the grouped kinds)
DEFAULT_KINDS = ("l2",)
RECIPE = dict(lr=1e-3, steps=2000, cal=A.CAL_SAMPLES, cbn_window=4, mbn_memory=4, mixture_components=3, version=1)
SOURCES = ("torch/variants.py", "torch/variants_extra.py", "torch/variant_hook.py", "torch/statistics.py",
           "torch/accuracy_variants.py")
KIND_KW = {"range": dict(chunks=2)}         # micro-batches: n = 2 x 40 values per channel at least; 2 chunks


def _norm_factory(variant: str, kind: str, ndim: int):
    """make(channels, prev_channels) -> (the normalization module, whether an activation follows it)."""
    two_d = ndim == 2
    kw = KIND_KW.get(kind, {})

    def make(c, prev):
        if variant in ("bn", "bn_2dom"):
            return make_base(kind, two_d, c, **kw), True
        if variant == "cbn":
            cls = A_hnn.CrossIterationBatchNorm2d if two_d else A_hnn.CrossIterationBatchNorm1d
            return cls(c, kind=kind, window=RECIPE["cbn_window"], **kw), True
        if variant == "mbn":
            cls = A_hnn.MemorizedBatchNorm2d if two_d else A_hnn.MemorizedBatchNorm1d
            return cls(c, kind=kind, memory=RECIPE["mbn_memory"], **kw), True
        if variant == "bkn":
            cls = A_hnn.BatchKalmanNorm2d if two_d else A_hnn.BatchKalmanNorm1d
            return cls(c, prev_features=prev, kind=kind, **kw), True
        if variant == "iebn":
            cls = A_hnn.InstanceEnhancementBatchNorm2d if two_d else A_hnn.InstanceEnhancementBatchNorm1d
            return cls(c, kind=kind, **kw), True
        if variant == "mixture":
            cls = A_hnn.MixtureNorm2d if two_d else A_hnn.MixtureNorm1d
            return cls(c, kind=kind, components=RECIPE["mixture_components"]), True
        if variant == "ln":
            from .group_nn import CLASSES, KIND_PREFIX
            return CLASSES[KIND_PREFIX[kind] + "GroupNorm"](1, c, **kw), True
        if variant == "proxy":
            cls = A_hnn.ProxyNorm2d if two_d else A_hnn.ProxyNorm1d
            return cls(c, kind=kind, groups=1, **kw), False
        if variant == "dsbn":
            cls = A_hnn.DomainSpecificBatchNorm2d if two_d else A_hnn.DomainSpecificBatchNorm1d
            return cls(c, num_domains=2, kind=kind, **kw), True
        raise ValueError(f"variant={variant!r} is not supported: allowed {', '.join(VARIANT_ROWS)}")
    return make



def make_model(variant: str, kind: str, dataset: str) -> nn.Module:
    """accuracy.make_model's conv net with `variant` layers of `kind` (proxy: no ReLU after it; cbn bound to the conv
    before; bkn chained)."""
    ndim = 2 if dataset == "digits" else 1
    make = _norm_factory(variant, kind, ndim)
    w = A.RECIPES[dataset]["widths"]
    conv = nn.Conv2d if ndim == 2 else nn.Conv1d
    layers, prev = [], None
    chans = [1] + list(w)
    for i, c in enumerate(w):
        k = 3 if (ndim == 2 or i > 0) else 5
        cv = conv(chans[i], c, k, padding=k // 2)
        norm, act = make(c, prev)
        if variant == "cbn":
            norm.bind(cv)
        layers += [cv, norm] + ([nn.ReLU()] if act else [])
        if ndim == 1 and i < 2:
            layers.append(nn.MaxPool1d(2))
        prev = c
    if ndim == 2:
        layers += [nn.MaxPool2d(2), nn.Flatten(), nn.Linear(w[-1] * 4 * 4, 10)]
    else:
        layers += [nn.Flatten(), nn.Linear(w[-1] * 10, 10)]
    model = nn.Sequential(*layers)
    return bind_chain(model) if variant == "bkn" else model


def second_domain(x: torch.Tensor, dataset: str) -> torch.Tensor:
    """The two-domain split's second domain: digits inverted (1 - x), MNIST-1D scaled and shifted (0.5 - 2 x)."""
    return 1.0 - x if dataset == "digits" else 0.5 - 2.0 * x


@dataclass(frozen=True)
class VariantJob:
    dataset: str
    variant: str
    kind: str
    batch: int
    seed: int
    bits: int = 8
    backend: str = "golden"

    @property
    def label(self) -> str:
        return f"{self.dataset} {self.variant} {self.kind} batch {self.batch} {self.backend} {self.bits}b seed {self.seed}"

    def recipe(self, steps: int | None = None) -> dict:
        r = dict(RECIPE, widths=A.RECIPES[self.dataset]["widths"], kind_kw=KIND_KW.get(self.kind, {}),
                 fmt={k: str(v) for k, v in A.formats(self.bits).items()},
                 numerics=A.numerics_fingerprint(self.backend) if self.backend != "float" else None,
                 sources=source_hash(SOURCES))
        if steps is not None:
            r["steps"] = steps
        return r

    def cache_path(self, cache_dir: Path, recipe: dict) -> Path:
        h = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]
        name = f"{self.variant}-{self.kind}-b{self.batch}-{self.backend}-{self.bits}-seed{self.seed}-{h}.json"
        return cache_dir / self.dataset / name


def _check_job(job: VariantJob):
    if job.variant not in VARIANT_ROWS:
        raise ValueError(f"variant={job.variant!r} is not supported: allowed {', '.join(VARIANT_ROWS)}")
    if job.variant == "mixture" and job.kind not in MIXTURE_KINDS:
        raise ValueError(f"kind={job.kind!r} has no mixture row: allowed {', '.join(MIXTURE_KINDS)}")
    if job.variant in ("ln", "proxy") and job.kind not in PROXY_KINDS:
        raise ValueError(f"kind={job.kind!r} has no {job.variant} row (no grouped module): allowed {', '.join(PROXY_KINDS)}")


def run_job(job: VariantJob, *, steps: int | None = None, cache_dir: Path | None = None) -> dict:
    """Train `steps` micro-batches and evaluate one configuration; a JSON-able row. The HardwareWarnings of the run
    (saturation, widened ranges, ...) are counted in the row (`warnings`, the distinct first lines), not printed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", HardwareWarning)
        row = _run_job(job, steps=steps)
    msgs = [str(w.message) for w in caught if issubclass(w.category, HardwareWarning)]
    row["warnings"] = len(msgs)
    row["warning_kinds"] = sorted({m.split(":")[0] + ": " + m.split(":")[1][:60] for m in msgs if ":" in m})[:20]
    for w in caught:
        if not issubclass(w.category, HardwareWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return row


def _run_job(job: VariantJob, *, steps: int | None = None) -> dict:
    _check_job(job)
    torch.set_num_threads(1)
    rec = job.recipe(steps)
    x_tr, y_tr, x_te, y_te = A.load_dataset(job.dataset, job.seed)
    two = job.variant in DOMAIN_ROWS
    torch.manual_seed(job.seed)
    model = make_model(job.variant, job.kind, job.dataset)
    t0 = time.perf_counter()
    row = dict(asdict(job), steps=rec["steps"], lr=rec["lr"], train_size=len(y_tr) * (2 if two else 1),
               test_size=len(y_te) * (2 if two else 1))
    dsbn = [m for m in model.modules() if isinstance(m, (A_hnn.DomainSpecificBatchNorm1d, A_hnn.DomainSpecificBatchNorm2d))]

    def set_domain(d):
        for m in dsbn:
            m.set_domain(d)
    session = to_hardware(model, backend=job.backend, fmt=A.formats(job.bits), max_count=A.MAX_COUNT, in_range="batch")
    opt = torch.optim.Adam(model.parameters(), lr=rec["lr"])
    gen = torch.Generator().manual_seed(job.seed)
    losses, diverged, reason = [], False, None
    try:
        model.train()
        perm, pos = torch.randperm(len(y_tr), generator=gen), 0
        for step in range(rec["steps"]):
            if pos + job.batch > len(perm):
                perm, pos = torch.randperm(len(y_tr), generator=gen), 0
            idx = perm[pos:pos + job.batch]
            pos += job.batch
            xb = x_tr[idx]
            if two and step % 2:
                xb = second_domain(xb, job.dataset)
            set_domain(step % 2 if two else 0)
            opt.zero_grad()
            try:
                loss = nn.functional.cross_entropy(model(xb), y_tr[idx])
            except ValueError as e:
                if "NaN or Inf" not in str(e):
                    raise
                diverged, reason = True, str(e)
                break
            if not torch.isfinite(loss):
                diverged, reason = True, f"loss {float(loss)}"
                break
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        row["train_s"] = time.perf_counter() - t0
        row["host_steps"] = int(sum(s.host_steps for s in session.layers.values()))
        row["train_saturated_out"] = sum(s.saturated_out for s in session.layers.values())
        row["train_values"] = session.values
        if diverged:
            row["accuracy"] = None
        else:
            model.eval()
            accs = []
            for d in ((0, 1) if two else (0,)):
                set_domain(d)
                xs = x_tr[:RECIPE["cal"]]
                session.calibrate([second_domain(xs, job.dataset) if d else xs])
                xt = second_domain(x_te, job.dataset) if d else x_te
                accs.append(float((A.predict(model, xt) == y_te).float().mean()))
            row["accuracy"] = float(np.mean(accs))
            if two:
                row["accuracy_domains"] = accs
    finally:
        session.restore()
    row.update(diverged=diverged, reason=reason, loss_last100=float(np.mean(losses[-100:])) if losses else None,
               wall_s=time.perf_counter() - t0)
    return row


def cached_run(job: VariantJob, *, steps=None, cache_dir: Path) -> dict:
    path = job.cache_path(cache_dir, job.recipe(steps))
    if path.exists():
        row = json.loads(path.read_text())
        row["cached"] = True
        return row
    row = run_job(job, steps=steps, cache_dir=cache_dir)
    A._write_atomic(path, row)
    row["cached"] = False
    return row


def plan(datasets=DATASETS, kinds=DEFAULT_KINDS, batches=BATCHES, seeds=SEEDS, variants=VARIANT_ROWS) -> list:
    A._check_names("dataset", datasets, DATASETS)
    A._check_names("kind", kinds, KINDS)
    A._check_names("variant", variants, VARIANT_ROWS)
    for b in batches:
        if isinstance(b, bool) or not isinstance(b, int) or b < 2:
            raise ValueError(f"batch={b!r} is out of range: allowed an integer >= 2")
    return [VariantJob(d, v, k, b, s) for d in datasets for k in kinds for b in batches for v in variants
            if not (v == "mixture" and k not in MIXTURE_KINDS) and not (v in ("ln", "proxy") and k not in PROXY_KINDS)
            for s in seeds]


def summarize(runs: list) -> list:
    """Per (dataset, kind, batch, variant): mean and spread of the test accuracy over seeds, and the difference to the
    row's base (bn for cbn, mbn, bkn, iebn, mixture; ln for proxy; bn_2dom for dsbn) with its seed spread."""
    base_of = {"cbn": "bn", "mbn": "bn", "bkn": "bn", "iebn": "bn", "mixture": "bn", "proxy": "ln", "dsbn": "bn_2dom"}
    groups = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["kind"], r["batch"], r["variant"]), []).append(r)
    out = []
    for (d, k, b, v), rs in groups.items():
        accs = [r["accuracy"] for r in rs if r["accuracy"] is not None]
        row = dict(dataset=d, kind=k, batch=b, variant=v, seeds=len(rs), diverged=sum(r["accuracy"] is None for r in rs),
                   mean=float(np.mean(accs)) if accs else None, std=float(np.std(accs)) if accs else None,
                   min=min(accs) if accs else None, max=max(accs) if accs else None,
                   wall_s=float(sum(r["wall_s"] for r in rs)), host_steps=int(np.mean([r["host_steps"] for r in rs])))
        base = groups.get((d, k, b, base_of.get(v)))
        if base is not None and accs:
            paired = {r["seed"]: r["accuracy"] for r in base if r["accuracy"] is not None}
            diffs = [r["accuracy"] - paired[r["seed"]] for r in rs if r["accuracy"] is not None and r["seed"] in paired]
            if diffs:
                row.update(base=base_of[v], delta=float(np.mean(diffs)), delta_min=min(diffs), delta_max=max(diffs))
        out.append(row)
    order = {v: i for i, v in enumerate(VARIANT_ROWS)}
    return sorted(out, key=lambda r: (r["dataset"], r["kind"], r["batch"], order[r["variant"]]))


def run(datasets=DATASETS, kinds=DEFAULT_KINDS, batches=BATCHES, seeds=SEEDS, variants=VARIANT_ROWS,
        steps: int | None = None, cache_dir: Path | str | None = None, quiet: bool = False) -> dict:
    """Plan, run (cached, one process) and summarize the variants' sweep."""
    cache_dir = Path(cache_dir) if cache_dir else BUILD_ROOT / "accuracy_variants"
    todo = plan(datasets, kinds, batches, seeds, variants)
    if "mnist1d" in datasets:
        A.load_mnist1d(BUILD_ROOT / "accuracy")
    t0 = time.perf_counter()
    runs = []
    for i, j in enumerate(todo):
        r = cached_run(j, steps=steps, cache_dir=cache_dir)
        runs.append(r)
        if not quiet:
            acc = "diverged" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
            print(f"[{i + 1}/{len(todo)}] {j.label}: {acc} ({r['wall_s']:.1f} s{', cached' if r['cached'] else ''})",
                  flush=True)
    return {"version": 1, "recipe": dict(RECIPE, **({"steps": steps} if steps else {})), "datasets": list(datasets),
            "kinds": list(kinds), "batches": list(batches), "seeds": list(seeds), "variants": list(variants),
            "bits": 8, "backend": "golden", "runs": runs, "summary": summarize(runs),
            "wall_s": time.perf_counter() - t0, "trained": sum(not r["cached"] for r in runs),
            "compute_s": float(sum(r["wall_s"] for r in runs))}


def merge(old: dict, new: dict) -> dict:
    """The union of two results' runs (new rows replace the same (dataset, variant, kind, batch, seed)), summarized."""
    key = lambda r: (r["dataset"], r["variant"], r["kind"], r["batch"], r["seed"])  # noqa: E731
    runs = {key(r): r for r in old.get("runs", [])}
    runs.update({key(r): r for r in new["runs"]})
    out = dict(new, runs=list(runs.values()), summary=summarize(list(runs.values())))
    for f in ("datasets", "kinds", "batches", "seeds", "variants"):
        out[f] = list(dict.fromkeys(list(old.get(f, [])) + list(new[f])))
    out["compute_s"] = float(sum(r["wall_s"] for r in out["runs"]))
    out["invocations"] = old.get("invocations", []) + [dict(command=new.get("command"), wall_s=new["wall_s"],
                                                             trained=new["trained"])]
    return out


def _pct(v):
    return "-" if v is None else f"{100 * v:.1f}"


def format_table(res: dict) -> str:
    """The summary as a Markdown table: per dataset, kind, batch and variant, the test accuracy (mean +- std over
    seeds, min-max) and the paired difference to its base."""
    lines = ["| dataset | kind | batch | variant | accuracy % (mean ± std) | min-max | vs base (mean, min..max) | "
             "diverged | host steps / run | wall s (seeds) |", "|" + "---|" * 10]
    for r in res["summary"]:
        acc = "-" if r["mean"] is None else f"{_pct(r['mean'])} ± {_pct(r['std'])}"
        mm = "-" if r["mean"] is None else f"{_pct(r['min'])}-{_pct(r['max'])}"
        d = (f"{r['delta'] * 100:+.1f} vs {r['base']} ({r['delta_min'] * 100:+.1f}..{r['delta_max'] * 100:+.1f})"
             if "delta" in r else "")
        lines.append(f"| {r['dataset']} | {r['kind']} | {r['batch']} | {r['variant']} | {acc} | {mm} | {d} | "
                     f"{r['diverged']}/{r['seeds']} | {r['host_steps']} | {r['wall_s']:.0f} |")
    return "\n".join(lines)
