"""golden/*.npz were frozen from the float references and the bit-exact models; both must still reproduce them."""
import numpy as np
import pytest

from hwnorm.config import NormConfig
from hwnorm.golden import infer, norm_infer, norm_train, train
from hwnorm.vectors import GOLDEN_DIR, vector_cases

NAMES = sorted(vector_cases())


def test_every_case_is_frozen():
    assert sorted(p.stem for p in GOLDEN_DIR.glob("*.npz")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_models_reproduce_frozen_vectors(name):
    with np.load(GOLDEN_DIR / f"{name}.npz") as z:
        v = {k: z[k] for k in z.files}
    cfg = NormConfig.from_json(str(v["config"]))
    assert cfg == vector_cases()[name][0]
    fi = cfg.in_fmt
    xf, gf, bf = v["x"] * fi.lsb, v["gamma"] * cfg.gamma_fmt.lsb, v["beta"] * cfg.beta_fmt.lsb
    if "scale_m" in v:
        stat = (v["mean"], v["scale_m"], v["scale_exp"])
        y_ref = norm_infer(xf, gf, bf, v["mean"] * 2.0 ** -(fi.frac + cfg.stat_frac_bits),
                           v["scale_m"] * np.exp2(v["scale_exp"].astype(float)))
        res = infer(cfg, v["x"], v["gamma"], v["beta"], *stat)
    else:
        tau = v.get("tau")              # FRN kinds: the TLU threshold per channel (output codes)
        y_ref, mean_ref, sigma_ref = norm_train(xf, gf, bf, cfg.kind, chunks=cfg.chunks, k=cfg.k, eps=cfg.eps,
                                                alpha=cfg.alpha, tau=None if tau is None else tau * cfg.out_fmt.lsb)
        np.testing.assert_allclose(mean_ref, v["mean_ref"], rtol=1e-12)
        np.testing.assert_allclose(sigma_ref, v["sigma_ref"], rtol=1e-12)
        res = train(cfg, v["x"], v["gamma"], v["beta"], tau=tau)
    np.testing.assert_allclose(y_ref, v["y_ref"], rtol=1e-12, atol=1e-12)
    assert np.array_equal(res.y, v["y"])
    assert np.array_equal(res.stats.sum, v["stat_sum"])
    assert [int(s) for s in res.stats.den] == [int(s) for s in v["stat_den"]]
    assert np.array_equal(res.stats.sat, v["stat_sat"])
