"""The soak (hwnorm/verify/soak.py): its random configurations are valid and varied, its stimulus reproducible,
and a small soak through the rtl backend is bit-exact and reports a mismatch with the command that
reproduces it."""
import io

import numpy as np
import pytest

import hwnorm.golden
from hwnorm import NormConfig
from hwnorm.config import KINDS
from hwnorm.verify import soak
from hwnorm.verify.funcov import bins, chunk_start_labels, count_labels, last_beat_labels

SEEDS = range(1000, 1200)


def test_random_configurations_are_valid_and_cover_the_space():
    cfgs = [soak.draw_config(s) for s in SEEDS]
    assert all(isinstance(c, NormConfig) for c in cfgs)
    assert {c.kind for c in cfgs} == set(KINDS)
    assert {c.lanes for c in cfgs} == {1, 2, 4, 8}
    assert {c.rounding for c in cfgs} == {"half_up", "half_even", "floor"}
    fmts = [f for c in cfgs for f in (c.in_fmt, c.out_fmt, c.gamma_fmt, c.beta_fmt)]
    assert {f.bits for f in fmts} == set(range(4, 13)) and {f.signed for f in fmts} == {True, False}
    assert {c.in_fmt.signed for c in cfgs} == {True, False}
    assert min(c.max_count for c in cfgs) == 1 and max(c.max_count for c in cfgs) > 2000
    assert len({c.chunks for c in cfgs if c.kind in ("range", "frn_range")}) > 5 and len({c.k for c in cfgs if c.kind == "topk"}) > 5
    assert soak.draw_config(1234) == soak.draw_config(1234)
    drop = [c for c in cfgs if c.dropout_active]
    assert 20 < len(drop) < 80 and len({c.kind for c in drop}) > 4       # about a quarter: dropout builds
    ew = [c for c in cfgs if c.elementwise]
    assert 15 < len(ew) < 50 and len({c.kind for c in ew}) > 4 and {c.lanes for c in ew} == {1, 2, 4, 8}
    assert not any(c.frn or c.dropout_active for c in ew)


def test_an_elementwise_build_gets_gamma_and_beta_per_value():
    cfg = next(c for c in map(soak.draw_config, SEEDS) if c.elementwise)
    for bt in soak.batches(cfg, 3, 20_000):
        assert bt.gamma.shape == bt.beta.shape == bt.x.shape
        assert bt.gamma.min() >= cfg.gamma_fmt.min_int and bt.gamma.max() <= cfg.gamma_fmt.max_int
        assert bt.beta.min() >= cfg.beta_fmt.min_int and bt.beta.max() <= cfg.beta_fmt.max_int
        if bt.x.size > 64:
            assert len(np.unique(bt.gamma)) > 1 and len(np.unique(bt.beta)) > 1      # not one value per channel


def test_batches_are_reproducible_valid_and_varied():
    cfg = soak.draw_config(1001)             # a seed whose batches hold both modes and every distribution
    a = list(soak.batches(cfg, 7, 50_000))
    b = list(soak.batches(cfg, 7, 50_000))
    assert [x.x.tolist() for x in a] == [x.x.tolist() for x in b]
    assert sum(x.x.size for x in a) >= 50_000
    fi = cfg.in_fmt
    for bt in a:
        assert 1 <= bt.n <= cfg.max_count and bt.x.min() >= fi.min_int and bt.x.max() <= fi.max_int
    assert {bt.infer for bt in a} == {True, False}
    assert set(d for bt in a for d in bt.dists) == set(soak.DISTRIBUTIONS)


SCRIPT = """
import hashlib, sys
from hwnorm.verify import soak
h = hashlib.sha256()
cfg = soak.draw_config(1015)
for b in soak.batches(cfg, 1015, 30000):
    h.update(b.x.tobytes()); h.update(b.gamma.tobytes()); h.update(str(b.inference).encode())
print(cfg.to_json(), h.hexdigest())
"""


def test_a_seed_reproduces_in_another_process():
    """The printed seed must reproduce the configuration and its data whatever the hash seed."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parent.parent
    outs = {subprocess.run([sys.executable, "-c", SCRIPT], cwd=repo, capture_output=True, text=True, check=True,
                           env=dict(os.environ, PYTHONHASHSEED=str(h), PYTHONPATH=str(repo))).stdout
            for h in (1, 2, 3)}
    assert len(outs) == 1, outs


def test_special_counts_hit_the_coverage_count_bins():
    for s in SEEDS:
        cfg = soak.draw_config(s)
        hit = set()
        for n in soak.special_counts(cfg):
            assert 1 <= n <= cfg.max_count
            hit |= count_labels(cfg, n) | last_beat_labels(cfg, n) | chunk_start_labels(cfg, n)
        want = set(bins(cfg)["count"])
        assert want <= hit, (cfg.describe(), want - hit)


def test_small_soak_is_bit_exact_and_a_mismatch_prints_its_repro(monkeypatch):
    out = io.StringIO()
    assert soak.main(30_000, only_seed=1003, cocotb_configs=0, jobs=1, out=out) == 0, out.getvalue()
    text = out.getvalue()
    assert "0 mismatches" in text and "seed   1003" in text and "hwnorm sim --soak 30000 --soak-seed 1003" in text
    real = hwnorm.golden.train

    def broken(cfg, x, *a, **k):          # the golden model off by one LSB on one value: the soak must see it
        r = real(cfg, x, *a, **k)
        r.y[0, 0] += 1 if r.y[0, 0] < cfg.out_fmt.max_int else -1
        return r
    monkeypatch.setattr(hwnorm.golden, "train", broken)
    out = io.StringIO()
    assert soak.main(5_000, only_seed=1003, cocotb_configs=0, jobs=1, out=out) == 1
    text = out.getvalue()
    assert "FAILED, reproduce with: hwnorm sim --soak 5000 --soak-seed 1003" in text
    assert "outputs differ" in text and "saved to" in text


def test_bad_soak_arguments():
    with pytest.raises(ValueError, match="--soak=0 is out of range: allowed an integer >= 1"):
        soak.main(0)
    with pytest.raises(ValueError, match=r"--soak-configs=0 is out of range: allowed \[1, 10000\]"):
        soak.main(10, configs=0)


def test_inference_draws_are_accepted():
    cfg = soak.draw_config(1001)
    exps = soak.scale_exponents(cfg)
    assert exps == sorted(exps) and len(exps) > 5
    p = soak.draw_inference(np.random.default_rng(0), cfg, 200, exps)
    assert len(set(p["scale_exp"].tolist())) > 5


def test_backward_configurations_are_valid_varied_and_soak_bit_exact(monkeypatch):
    """The backward soak (seeds from BWD_SEED_BASE): configurations the backward datapath builds, varied; one soaked
    through the Verilated backward datapath bit for bit, and a golden off by one LSB seen with its repro command."""
    from hwnorm.backends import rtl_backward
    from hwnorm.hdl.backward import check_backward
    drawn = [soak.draw_backward(soak.BWD_SEED_BASE + s) for s in range(1000, 1030)]
    for cfg, gcfg in drawn:
        check_backward(cfg, gcfg)
    assert len({c.kind for c, _ in drawn}) >= 5 and {g.rounding for _, g in drawn} == {"half_up", "stochastic"}
    assert {c.lanes for c, _ in drawn} >= {1, 2, 4} and any(not c.in_fmt.signed for c, _ in drawn)
    seed = soak.BWD_SEED_BASE + 1003                    # linf, 4 lanes, max_count 44, stochastic rounding
    out = io.StringIO()
    assert soak.main(3_000, only_seed=seed, cocotb_configs=0, jobs=1, out=out) == 0, out.getvalue()
    text = out.getvalue()
    assert "0 mismatches" in text and "backward of linf" in text and f"hwnorm sim --soak 3000 --soak-seed {seed}" in text
    real = rtl_backward.expected

    def broken(*a, **k):
        dx, stats = real(*a, **k)
        dx[0, 0] += 1
        return dx, stats
    monkeypatch.setattr(rtl_backward, "expected", broken)
    out = io.StringIO()
    assert soak.main(1_000, only_seed=seed, cocotb_configs=0, jobs=1, out=out) == 1
    assert f"FAILED, reproduce with: hwnorm sim --soak 1000 --soak-seed {seed}" in out.getvalue()
    assert "dx differs at [0]" in out.getvalue()
